#include "common/tasks/verify.h"

#include <math.h>
#include <pthread.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_alnum(char c)
{
    return is_digit(c) || is_alpha(c);
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* ASCII punctuation, as ispunct in the C locale. */
static bool is_punct(char c)
{
    return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') ||
           (c >= '{' && c <= '~');
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* Whether s[0..n) starts with lit. */
static bool starts(const char *s, size_t n, const char *lit)
{
    size_t k = strlen(lit);
    return n >= k && memcmp(s, lit, k) == 0;
}

/* The offset of the last occurrence of lit in s[0..n), or SIZE_MAX. */
static size_t rfind(const char *s, size_t n, const char *lit)
{
    size_t k = strlen(lit);
    if (k == 0 || n < k) return SIZE_MAX;
    for (size_t i = n - k + 1; i-- > 0;)
        if (memcmp(s + i, lit, k) == 0) return i;
    return SIZE_MAX;
}

/* How many times lit occurs in s[0..n) (non-overlapping). */
static int count(const char *s, size_t n, const char *lit)
{
    size_t k = strlen(lit);
    int    c = 0;
    for (size_t i = 0; i + k <= n;) {
        if (memcmp(s + i, lit, k) == 0) {
            c++;
            i += k;
        } else {
            i++;
        }
    }
    return c;
}

static bool is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_space(s[i])) return false;
    return true;
}

static void trim(const char **s, size_t *n)
{
    while (*n > 0 && is_space((*s)[0])) (*s)++, (*n)--;
    while (*n > 0 && is_space((*s)[*n - 1])) (*n)--;
}

/* ---- Normalisation ------------------------------------------------------ */

/* Walks the normalised form of a text one byte at a time. */
typedef struct {
    const char *s;
    size_t      n, i;
    bool        is_started; /* a byte was produced: a space may follow */
    bool        has_space;  /* whitespace seen since the last byte produced */
} NormIter;

/* Whether the punctuation byte at i survives normalisation. */
static bool punct_kept(const char *s, size_t n, size_t i)
{
    bool next_digit = i + 1 < n && is_digit(s[i + 1]);
    if (s[i] == '.') return next_digit && i > 0 && is_digit(s[i - 1]);
    if (s[i] == '-') return next_digit && (i == 0 || !is_alnum(s[i - 1]));
    return false;
}

/* The next byte of the normalised text, or -1 at its end. */
static int norm_next(NormIter *it)
{
    while (it->i < it->n) {
        char c = it->s[it->i];
        if (is_space(c)) {
            it->has_space = it->is_started;
            it->i++;
            continue;
        }
        if (is_punct(c) && !punct_kept(it->s, it->n, it->i)) {
            it->i++;
            continue;
        }
        if (it->has_space) {
            /* The space goes out first; the byte is produced on the next call. */
            it->has_space = false;
            return ' ';
        }
        it->is_started = true;
        it->i++;
        return (unsigned char)lower(c);
    }
    return -1;
}

size_t verify_normalize(const char *s, size_t n, char *out, size_t cap)
{
    CHECK(out && cap > 0);
    NormIter it = {.s = s, .n = n};
    size_t   len = 0;
    for (int c; (c = norm_next(&it)) >= 0; len++)
        if (len + 1 < cap) out[len] = (char)c;
    out[len < cap ? len : cap - 1] = '\0';
    return len;
}

bool verify_norm_equal(const char *a, size_t na, const char *b, size_t nb)
{
    NormIter x = {.s = a, .n = na}, y = {.s = b, .n = nb};
    for (;;) {
        int ca = norm_next(&x), cb = norm_next(&y);
        if (ca != cb) return false;
        if (ca < 0) return true;
    }
}

void verify_answer_span(const char *s, size_t n, size_t *start, size_t *len)
{
    *start = 0;
    *len = n;
    size_t close = rfind(s, n, "</answer>");
    if (close == SIZE_MAX) return;
    size_t open = rfind(s, close, "<answer>");
    if (open == SIZE_MAX) return;
    *start = open + strlen("<answer>");
    *len = close - *start;
}

/* ---- Numbers ------------------------------------------------------------ */

/* Parses an unsigned number at s[i] (a digit, or a '.' before a digit):
 * digits with thousands groups, a decimal part, an exponent. Sets *v and
 * returns the offset after it. A number of more than 120 bytes reads as
 * infinity (it matches nothing). */
static size_t parse_unsigned(const char *s, size_t n, size_t i, double *v)
{
    char   buf[128];
    size_t k = 0;
    bool   is_long = false;
#define PUT(c) (k < sizeof buf - 8 ? (void)(buf[k++] = (c)) : (void)(is_long = true))
    while (i < n && is_digit(s[i])) {
        PUT(s[i]);
        i++;
        /* ",ddd" not followed by another digit continues the number as a
         * thousands group; "1,2,3" stays a list of three numbers. */
        if (i + 3 < n && s[i] == ',' && is_digit(s[i + 1]) && is_digit(s[i + 2]) &&
            is_digit(s[i + 3]) && (i + 4 >= n || !is_digit(s[i + 4])))
            i++;
    }
    if (i + 1 < n && s[i] == '.' && is_digit(s[i + 1])) {
        PUT('.');
        for (i++; i < n && is_digit(s[i]); i++) PUT(s[i]);
    }
    if (i + 1 < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t j = i + 1;
        if (j < n && (s[j] == '+' || s[j] == '-')) j++;
        if (j < n && is_digit(s[j])) {
            PUT('e');
            if (s[i + 1] == '-') PUT('-');
            for (i = j; i < n && is_digit(s[i]); i++) PUT(s[i]);
        }
    }
#undef PUT
    buf[k] = '\0';
    *v = is_long ? INFINITY : strtod(buf, NULL);
    return i;
}

/* A number at s[i] with an optional fraction "/d": returns the offset after
 * it. */
static size_t parse_ratio(const char *s, size_t n, size_t i, double *v)
{
    i = parse_unsigned(s, n, i, v);
    if (i + 1 < n && s[i] == '/' && is_digit(s[i + 1])) {
        double d;
        i = parse_unsigned(s, n, i + 1, &d);
        *v = d != 0 ? *v / d : NAN;
    }
    return i;
}

static bool number_starts(const char *s, size_t n, size_t i)
{
    if (is_digit(s[i])) return true;
    /* ".5", but not the '.' of "3.5" (which the 3 took). */
    return s[i] == '.' && i + 1 < n && is_digit(s[i + 1]) && (i == 0 || !is_digit(s[i - 1]));
}

bool verify_last_number(const char *s, size_t n, double *value)
{
    bool   found = false;
    double last = 0;
    for (size_t i = 0; i < n;) {
        if (!number_starts(s, n, i)) {
            i++;
            continue;
        }
        size_t start = i;
        double v;
        i = parse_ratio(s, n, i, &v);
        /* A '-' right before the digits is a sign unless it joins two words
         * or numbers ("45-33", "x-1" are not negative numbers). */
        if (start > 0 && s[start - 1] == '-' && (start < 2 || !is_alnum(s[start - 2]))) v = -v;
        last = v;
        found = true;
    }
    if (found) *value = last;
    return found;
}

/* "\frac{a}{b}" (or \dfrac, \tfrac) at the start of s, with a and b
 * numbers: sets *v and returns true when it is all of s. */
static bool parse_latex_frac(const char *s, size_t n, double *v)
{
    size_t i;
    if (starts(s, n, "\\frac{"))
        i = 6;
    else if (starts(s, n, "\\dfrac{") || starts(s, n, "\\tfrac{"))
        i = 7;
    else
        return false;
    double a, b;
    if (i >= n || !number_starts(s, n, i)) return false;
    i = parse_unsigned(s, n, i, &a);
    if (!starts(s + i, n - i, "}{")) return false;
    i += 2;
    if (i >= n || !number_starts(s, n, i)) return false;
    i = parse_unsigned(s, n, i, &b);
    if (i + 1 != n || s[i] != '}' || b == 0) return false;
    *v = a / b;
    return true;
}

bool verify_parse_number(const char *s, size_t n, double *value)
{
    trim(&s, &n);
    if (n > 0 && s[0] == '$') s++, n--;
    if (n > 1 && s[n - 2] == '\\' && s[n - 1] == '%')
        n -= 2; /* "50\%" */
    else if (n > 0 && s[n - 1] == '%')
        n--;
    trim(&s, &n);
    double sign = 1;
    if (n > 0 && (s[0] == '-' || s[0] == '+')) {
        sign = s[0] == '-' ? -1 : 1;
        s++, n--;
    }
    double v;
    if (parse_latex_frac(s, n, &v)) {
        *value = sign * v;
        return true;
    }
    if (n == 0 || !number_starts(s, n, 0) || parse_ratio(s, n, 0, &v) != n || isnan(v))
        return false;
    *value = sign * v;
    return true;
}

bool verify_number_close(double got, double want, double rel_tol, double abs_tol)
{
    if (!isfinite(got) || !isfinite(want)) return false;
    return fabs(got - want) <= abs_tol + rel_tol * fabs(want);
}

/* ---- Multiple choice ---------------------------------------------------- */

static bool is_choice(char c)
{
    return c >= 'A' && c <= 'E';
}

static char upper(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

/* The letter after an "answer" that ends at s[i]: "is", ':', '=', '-', '*',
 * whitespace, then '(' or '[' optionally, then the letter (lower case only
 * inside brackets: "the answer is a number" chooses nothing), then no
 * letter or digit. */
static char letter_after_answer(const char *s, size_t n, size_t i)
{
    for (;;) {
        while (i < n &&
               (is_space(s[i]) || s[i] == ':' || s[i] == '=' || s[i] == '-' || s[i] == '*'))
            i++;
        if (i + 2 <= n && lower(s[i]) == 'i' && lower(s[i + 1]) == 's' &&
            (i + 2 == n || !is_alnum(s[i + 2]))) {
            i += 2;
            continue;
        }
        break;
    }
    bool bracket = i < n && (s[i] == '(' || s[i] == '[');
    if (bracket) i++;
    if (i >= n) return 0;
    char c = bracket ? upper(s[i]) : s[i];
    if (!is_choice(c) || (i + 1 < n && is_alnum(s[i + 1]))) return 0;
    return c;
}

/* A completion that is only the letter: "B", "b", "(B)", "B.", "B)", "**B**". */
static char bare_letter(const char *s, size_t n)
{
    while (n > 0 && (is_space(s[0]) || s[0] == '*')) s++, n--;
    while (n > 0 && (is_space(s[n - 1]) || s[n - 1] == '*')) n--;
    if (n > 0 && (s[n - 1] == '.' || s[n - 1] == ')')) n--;
    if (n > 0 && s[0] == '(') s++, n--;
    return n == 1 && is_choice(upper(s[0])) ? upper(s[0]) : 0;
}

char verify_choice(const char *s, size_t n)
{
    /* 1. The last "answer" phrase that names a letter. */
    for (size_t i = n; i-- > 0;) {
        if (i + 6 > n || lower(s[i]) != 'a') continue;
        bool match = true;
        for (int k = 0; k < 6 && match; k++) match = lower(s[i + k]) == "answer"[k];
        if (!match) continue;
        char c = letter_after_answer(s, n, i + 6);
        if (c) return c;
    }
    /* 2. Just the letter. */
    char c = bare_letter(s, n);
    if (c) return c;
    /* 3. Opens with "X)", "(X)", "X." or "X:" and a space. */
    const char *t = s;
    size_t      m = n;
    while (m > 0 && (is_space(t[0]) || t[0] == '*')) t++, m--;
    size_t j = m > 0 && t[0] == '(' ? 1 : 0;
    if (j < m && is_choice(t[j]) && j + 1 < m &&
        (t[j + 1] == ')' || (!j && (t[j + 1] == '.' || t[j + 1] == ':'))) &&
        (j + 2 == m || is_space(t[j + 2])))
        return t[j];
    /* 4. The last "(X)". */
    for (size_t i = n; i-- > 2;)
        if (s[i] == ')' && is_choice(s[i - 1]) && s[i - 2] == '(') return s[i - 1];
    return 0;
}

char verify_choice_answer(const char *s, size_t n)
{
    trim(&s, &n);
    if (n > 0 && (s[n - 1] == '.' || s[n - 1] == ')')) n--;
    if (n > 0 && s[0] == '(') s++, n--;
    return n == 1 && is_choice(upper(s[0])) ? upper(s[0]) : 0;
}

/* ---- \boxed{} ----------------------------------------------------------- */

bool verify_boxed(const char *s, size_t n, size_t *start, size_t *len)
{
    /* The last "\boxed" followed by a brace. */
    size_t at = n;
    for (;;) {
        at = rfind(s, at, "\\boxed");
        if (at == SIZE_MAX) return false;
        size_t j = at + 6;
        while (j < n && is_space(s[j])) j++;
        if (j < n && s[j] == '{') {
            at = j + 1;
            break;
        }
    }
    int depth = 1;
    for (size_t j = at; j < n; j++) {
        if (s[j] == '\\' && j + 1 < n && (s[j + 1] == '{' || s[j + 1] == '}')) {
            j++;
            continue;
        }
        if (s[j] == '{') depth++;
        if (s[j] == '}' && --depth == 0) {
            *start = at;
            *len = j - at;
            return true;
        }
    }
    return false;
}

#define BOXED_MAX 1024 /* bytes of a boxed answer compared; a longer one matches nothing */

/* The comparable form of a boxed answer (see verify_boxed_match) into out
 * (BOXED_MAX bytes); returns its length, or SIZE_MAX when it does not fit. */
static size_t boxed_norm(const char *s, size_t n, char *out)
{
    static const char *const k_drop[] = {"\\left", "\\right", "\\!",       "\\,",    "\\;",
                                         "\\ ",    "\\%",     "^{\\circ}", "^\\circ"};
    size_t                   len = 0;
    int                      depth = 0;
    uint64_t drop_close = 0; /* bit d: the '}' closing depth d ends a \text{ and is dropped */
    for (size_t i = 0; i < n;) {
        bool dropped = false;
        for (size_t k = 0; k < sizeof k_drop / sizeof k_drop[0] && !dropped; k++) {
            if (starts(s + i, n - i, k_drop[k])) {
                i += strlen(k_drop[k]);
                dropped = true;
            }
        }
        if (dropped) continue;
        if (starts(s + i, n - i, "\\text{") || starts(s + i, n - i, "\\mbox{")) {
            i += 6;
            if (++depth < 64) drop_close |= (uint64_t)1 << depth;
            continue;
        }
        const char *emit = NULL;
        size_t      skip = 1;
        char        one[2] = {s[i], '\0'};
        if (starts(s + i, n - i, "\\dfrac") || starts(s + i, n - i, "\\tfrac")) {
            emit = "\\frac";
            skip = 6;
        } else if (is_space(s[i]) || s[i] == '$' || s[i] == '%') {
            emit = "";
        } else if (s[i] == '{') {
            depth++;
            if (depth < 64) drop_close &= ~((uint64_t)1 << depth);
            emit = one;
        } else if (s[i] == '}') {
            bool drop = depth > 0 && depth < 64 && (drop_close >> depth & 1);
            if (depth > 0) depth--;
            emit = drop ? "" : one;
        } else {
            emit = one;
        }
        size_t k = strlen(emit);
        if (len + k >= BOXED_MAX) return SIZE_MAX;
        memcpy(out + len, emit, k);
        len += k;
        i += skip;
    }
    while (len > 0 && out[len - 1] == '.') len--;
    out[len] = '\0';
    return len;
}

bool verify_boxed_match(const char *got, size_t ngot, const char *want, size_t nwant)
{
    size_t      st, ln;
    const char *w = want;
    size_t      nw = nwant;
    trim(&w, &nw);
    if (starts(w, nw, "\\boxed") && verify_boxed(w, nw, &st, &ln)) {
        w += st;
        nw = ln;
    }
    char   a[BOXED_MAX], b[BOXED_MAX];
    size_t la = boxed_norm(got, ngot, a), lb = boxed_norm(w, nw, b);
    if (la == SIZE_MAX || lb == SIZE_MAX || lb == 0) return false;
    if (la == lb && memcmp(a, b, la) == 0) return true;
    double x, y;
    return verify_parse_number(a, la, &x) && verify_parse_number(b, lb, &y) &&
           verify_number_close(x, y, 1e-9, 1e-12);
}

/* ---- Regular expressions ------------------------------------------------ */

typedef struct {
    char    pattern[VERIFY_REGEX_MAX_PATTERN + 1];
    regex_t re;
    bool    is_compiled;
} RegexCache;

static pthread_key_t  g_regex_key;
static pthread_once_t g_regex_once = PTHREAD_ONCE_INIT;

static void regex_cache_free(void *p)
{
    RegexCache *c = p;
    if (c->is_compiled) regfree(&c->re);
    free(c);
}

static void regex_key_init(void)
{
    CHECK(pthread_key_create(&g_regex_key, regex_cache_free) == 0);
}

/* Reads a bound "{m}", "{m,}" or "{m,n}" at p[*i] ('{'); returns its
 * largest count (m + 1 for "{m,}"), or -1 if it is not a bound (regcomp
 * then judges the pattern). */
static double bound_count(const char *p, size_t n, size_t *i)
{
    size_t j = *i + 1;
    double m = 0, hi = -1;
    bool   has_m = false, has_comma = false;
    for (; j < n && p[j] >= '0' && p[j] <= '9'; j++, has_m = true) m = m * 10 + (p[j] - '0');
    if (j < n && p[j] == ',') {
        has_comma = true;
        for (j++; j < n && p[j] >= '0' && p[j] <= '9'; j++)
            hi = (hi < 0 ? 0 : hi * 10) + (p[j] - '0');
    }
    if (!has_m || j >= n || p[j] != '}') return -1;
    *i = j;
    if (!has_comma) return m;
    return hi < 0 ? m + 1 : (hi > m ? hi : m);
}

/* An upper estimate of the atoms of pattern once regcomp has unrolled its
 * repeats: an atom counts 1, a group the sum of its branches, a bound
 * multiplies what it repeats by its largest count, and '+' doubles it (glibc
 * compiles x+ as x x*, a copy of x; so "a" and twenty '+' are a million
 * atoms). '*' and '?' add a node. Malformed syntax is counted loosely
 * (regcomp refuses it after). */
static double pattern_nodes(const char *p, size_t n)
{
    enum { DEPTH = 64 };
    double sum[DEPTH + 1] = {0}, last[DEPTH + 1] = {0};
    int    d = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '(' && d < DEPTH) {
            d++;
            sum[d] = last[d] = 0;
        } else if (ch == ')' && d > 0) {
            double g = sum[d] + 1;
            d--;
            sum[d] += g;
            last[d] = g;
        } else if (ch == '|') {
            last[d] = 0; /* branches add up in sum */
        } else if (ch == '{') {
            double k = bound_count(p, n, &i);
            if (k < 0) { /* a literal brace */
                sum[d] += 1;
                last[d] = 1;
                continue;
            }
            double rep = last[d] * k;
            sum[d] += rep - last[d];
            last[d] = rep;
        } else if (ch == '+') {
            double rep = 2 * last[d] + 1;
            sum[d] += rep - last[d];
            last[d] = rep;
        } else if (ch == '*' || ch == '?') {
            sum[d] += 1;
            last[d] += 1;
        } else {
            if (ch == '\\' && i + 1 < n) {
                i++;
            } else if (ch == '[') { /* a bracket expression is one atom */
                size_t j = i + 1;
                if (j < n && p[j] == '^') j++;
                if (j < n && p[j] == ']') j++;
                for (; j < n && p[j] != ']'; j++)
                    if (p[j] == '[' && j + 1 < n &&
                        (p[j + 1] == ':' || p[j + 1] == '.' || p[j + 1] == '=')) {
                        const char *end = strstr(p + j + 2, p[j + 1] == ':'   ? ":]"
                                                            : p[j + 1] == '.' ? ".]"
                                                                              : "=]");
                        if (!end) break;
                        j = (size_t)(end - p) + 1;
                    }
                i = j < n ? j : n - 1;
            }
            sum[d] += 1;
            last[d] = 1;
        }
    }
    double total = 0;
    for (int k = 0; k <= d; k++) total += sum[k];
    return total;
}

/* The length, back-reference and size checks of a pattern. */
static int pattern_ok(const char *pattern, char *why, size_t why_len)
{
    size_t n = pattern ? strnlen(pattern, VERIFY_REGEX_MAX_PATTERN + 1) : 0;
    if (n == 0 || n > VERIFY_REGEX_MAX_PATTERN) {
        snprintf(why, why_len, "regex: pattern of %s bytes, expected 1..%d", n ? "too many" : "0",
                 VERIFY_REGEX_MAX_PATTERN);
        return ERR_ARG;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        if (pattern[i] == '\\' && pattern[i + 1] >= '1' && pattern[i + 1] <= '9') {
            snprintf(why, why_len, "regex: pattern '%.60s' uses a back-reference (\\%c)", pattern,
                     pattern[i + 1]);
            return ERR_ARG;
        }
        if (pattern[i] == '\\') i++; /* "\\1" is a backslash then a 1 */
    }
    double nodes = pattern_nodes(pattern, n);
    if (nodes > VERIFY_REGEX_MAX_NODES) {
        snprintf(why, why_len,
                 "regex: pattern '%.60s' unrolls its repeats to about %.3g atoms, "
                 "expected at most %d",
                 pattern, nodes, VERIFY_REGEX_MAX_NODES);
        return ERR_ARG;
    }
    return 0;
}

/* Compiles pattern into re; on failure fills why. */
static int compile(const char *pattern, regex_t *re, char *why, size_t why_len)
{
    int rc = regcomp(re, pattern, REG_EXTENDED | REG_NOSUB);
    if (rc == 0) return 0;
    char msg[128];
    regerror(rc, re, msg, sizeof msg);
    snprintf(why, why_len, "regex: pattern '%.60s' does not compile: %s", pattern, msg);
    return ERR_ARG;
}

int verify_regex_check(const char *pattern, char *why, size_t why_len)
{
    int rc = pattern_ok(pattern, why, why_len);
    if (rc) return rc;
    regex_t re;
    if ((rc = compile(pattern, &re, why, why_len))) return rc;
    regfree(&re);
    return 0;
}

int verify_regex(const char *pattern, const char *text, bool *match, char *why, size_t why_len)
{
    *match = false;
    int rc = pattern_ok(pattern, why, why_len);
    if (rc) return rc;
    pthread_once(&g_regex_once, regex_key_init);
    RegexCache *c = pthread_getspecific(g_regex_key);
    if (!c) {
        c = xcalloc(1, sizeof *c);
        CHECK(pthread_setspecific(g_regex_key, c) == 0);
    }
    if (!c->is_compiled || strcmp(c->pattern, pattern) != 0) {
        if (c->is_compiled) regfree(&c->re);
        c->is_compiled = false;
        if ((rc = compile(pattern, &c->re, why, why_len))) return rc;
        snprintf(c->pattern, sizeof c->pattern, "%s", pattern);
        c->is_compiled = true;
    }
    if (strnlen(text, VERIFY_REGEX_MAX_INPUT + 1) > VERIFY_REGEX_MAX_INPUT) return 0;
    *match = regexec(&c->re, text, 0, NULL, 0) == 0;
    return 0;
}

/* ---- Formats ------------------------------------------------------------ */

bool verify_format_answer_tag(const char *s, size_t n)
{
    if (count(s, n, "<answer>") != 1 || count(s, n, "</answer>") != 1) return false;
    size_t open = rfind(s, n, "<answer>"), close = rfind(s, n, "</answer>");
    if (close < open) return false;
    size_t c0 = open + strlen("<answer>"), end = close + strlen("</answer>");
    return !is_blank(s + c0, close - c0) && is_blank(s + end, n - end);
}

/* Expects s[*i..] to be optional whitespace, open, non-blank content, close;
 * moves *i past it. */
static bool block(const char *s, size_t n, size_t *i, const char *open, const char *close)
{
    while (*i < n && is_space(s[*i])) (*i)++;
    if (!starts(s + *i, n - *i, open)) return false;
    size_t      c0 = *i + strlen(open);
    const char *end = memmem(s + c0, n - c0, close, strlen(close));
    if (!end) return false;
    size_t c1 = (size_t)(end - s);
    if (is_blank(s + c0, c1 - c0)) return false;
    *i = c1 + strlen(close);
    return true;
}

bool verify_format_think(const char *s, size_t n)
{
    static const char *const k_tags[] = {"<think>", "</think>", "<answer>", "</answer>"};
    for (int k = 0; k < 4; k++)
        if (count(s, n, k_tags[k]) != 1) return false;
    size_t i = 0;
    return block(s, n, &i, "<think>", "</think>") && block(s, n, &i, "<answer>", "</answer>") &&
           is_blank(s + i, n - i);
}
