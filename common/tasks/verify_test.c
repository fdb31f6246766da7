/* verify's self-test: a table of edge cases for each checker (normalised
 * exact match, the last number and its tolerance, the multiple-choice
 * letter, \boxed{}, regular expressions, the two format checks), each row
 * the input and the expected verdict. */
#include "common/tasks/verify.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/base/err.h"
#include "tests/support/expect.h"
#include "tests/test_list.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static void test_normalize(bool verbose)
{
    struct {
        const char *in, *want;
    } ex[] = {
        {"Paris", "paris"},
        {"  The  Answer:\t3.5!\n", "the answer 3.5"},
        {"1,000", "1000"},
        {"-2", "-2"},
        {"x-1", "x1"},
        {"(-5)", "-5"},
        {"New-York", "newyork"},
        {"a , b", "a b"},
        {"3.", "3"},
        {"...", ""},
        {"", ""},
        {"Ünïcode OK", "Ünïcode ok"},
        {"e.g. dots", "eg dots"},
    };
    for (size_t i = 0; i < N_OF(ex); i++) {
        char   out[64];
        size_t n = verify_normalize(ex[i].in, strlen(ex[i].in), out, sizeof out);
        bool   ok = !strcmp(out, ex[i].want) && n == strlen(ex[i].want) &&
                  verify_norm_equal(ex[i].in, strlen(ex[i].in), ex[i].want, strlen(ex[i].want));
        if (verbose) printf("  normalize %-24s -> '%s' %s\n", ex[i].in, out, ok ? "ok" : "WRONG");
        EXPECT(ok, "verify_normalize('%s') = '%s' (%zu), expected '%s'", ex[i].in, out, n,
               ex[i].want);
    }
    /* A small buffer: truncated but the full length returned. */
    char   small[4];
    size_t n = verify_normalize("Hello World", 11, small, sizeof small);
    EXPECT(n == 11 && !strcmp(small, "hel"), "verify_normalize into 4 bytes: '%s' %zu", small, n);

    struct {
        const char *a, *b;
        bool        equal;
    } eq[] = {
        {"Paris.", "paris", true},  {"PARIS", "Paris ", true},
        {"Par is", "Paris", false}, {"3.5", "35", false},
        {"3,5", "35", true},        {"-3", "3", false},
        {"a\tb", "a b", true},      {"", "", true},
        {"", "a", false},           {"The end", "end", false},
        {"don't", "dont", true},    {"1 000", "1000", false},
    };
    for (size_t i = 0; i < N_OF(eq); i++) {
        bool got = verify_norm_equal(eq[i].a, strlen(eq[i].a), eq[i].b, strlen(eq[i].b));
        EXPECT(got == eq[i].equal, "verify_norm_equal('%s', '%s') = %d, expected %d", eq[i].a,
               eq[i].b, got, eq[i].equal);
    }
}

static void test_answer_span(bool verbose)
{
    struct {
        const char *in, *want;
    } ex[] = {
        {"42", "42"},
        {"so <answer>42</answer>", "42"},
        {"<answer>1</answer> then <answer>2</answer>", "2"},
        {"<answer>unclosed", "<answer>unclosed"},
        {"</answer> x <answer>", "</answer> x <answer>"},
        {"<answer></answer>", ""},
        {"<answer> a </answer> tail", " a "},
        {"<answer>1</answer><answer>2", "1"},
        {"", ""},
        {"<ANSWER>x</ANSWER>", "<ANSWER>x</ANSWER>"},
    };
    for (size_t i = 0; i < N_OF(ex); i++) {
        size_t st, len;
        verify_answer_span(ex[i].in, strlen(ex[i].in), &st, &len);
        bool ok = len == strlen(ex[i].want) && !memcmp(ex[i].in + st, ex[i].want, len);
        if (verbose)
            printf("  answer span %-40s -> '%.*s' %s\n", ex[i].in, (int)len, ex[i].in + st,
                   ok ? "ok" : "WRONG");
        EXPECT(ok, "verify_answer_span('%s') = '%.*s', expected '%s'", ex[i].in, (int)len,
               ex[i].in + st, ex[i].want);
    }
}

static void test_numbers(bool verbose)
{
    struct {
        const char *in;
        bool        found;
        double      want;
    } ex[] = {
        {"82", true, 82},
        {"The answer is 82.", true, 82},
        {"45-33", true, 33},
        {"x-1", true, 1},
        {"it is -7", true, -7},
        {"(-7)", true, -7},
        {"1,234", true, 1234},
        {"1,234,567 apples", true, 1234567},
        {"1,2,3", true, 3},
        {"12,34", true, 34},
        {"82.0", true, 82},
        {"3.25 m", true, 3.25},
        {"costs .5", true, 0.5},
        {"2e5", true, 2e5},
        {"1.5E-3", true, 1.5e-3},
        {"5 eggs", true, 5},
        {"3/4", true, 0.75},
        {"no digits", false, 0},
        {"", false, 0},
        {"+4", true, 4},
        {"37 + 45 = 82, so 82", true, 82},
        {"v1.2.3", true, 3}, /* "1.2", then "3": a '.' after a digit starts nothing */
        {"$1,234.50", true, 1234.5},
        {"9999999999999999999999", true, 1e22},
    };
    for (size_t i = 0; i < N_OF(ex); i++) {
        double v = NAN;
        bool   found = verify_last_number(ex[i].in, strlen(ex[i].in), &v);
        bool   ok = found == ex[i].found && (!found || fabs(v - ex[i].want) <= 1e-9 * fabs(v));
        if (verbose)
            printf("  last number %-26s -> %s %g %s\n", ex[i].in, found ? "found" : "none", v,
                   ok ? "ok" : "WRONG");
        EXPECT(ok, "verify_last_number('%s') = %d %g, expected %d %g", ex[i].in, found, v,
               ex[i].found, ex[i].want);
    }

    struct {
        const char *in;
        bool        ok;
        double      want;
    } ans[] = {
        {"82", true, 82},
        {" -3 ", true, -3},
        {"+3", true, 3},
        {"1,000", true, 1000},
        {"$5", true, 5},
        {"50%", true, 50},
        {"50\\%", true, 50},
        {"3/4", true, 0.75},
        {"\\frac{1}{2}", true, 0.5},
        {"-\\dfrac{3}{4}", true, -0.75},
        {"0.5", true, 0.5},
        {".5", true, 0.5},
        {"1e3", true, 1000},
        {"82 apples", false, 0},
        {"", false, 0},
        {"x", false, 0},
        {"1/0", false, 0},
        {"\\frac{1}{0}", false, 0},
        {"12,34", false, 0},
        {"--3", false, 0},
    };
    for (size_t i = 0; i < N_OF(ans); i++) {
        double v = NAN;
        bool   ok = verify_parse_number(ans[i].in, strlen(ans[i].in), &v);
        EXPECT(ok == ans[i].ok && (!ok || fabs(v - ans[i].want) < 1e-12),
               "verify_parse_number('%s') = %d %g, expected %d %g", ans[i].in, ok, v, ans[i].ok,
               ans[i].want);
    }

    struct {
        double got, want, rel, abs_tol;
        bool   close;
    } tol[] = {
        {82, 82, 0, 0, true},
        {82.0000001, 82, 1e-6, 0, true},
        {82.001, 82, 1e-6, 0, false},
        {0.333, 1.0 / 3, 0, 1e-3, true},
        {0.33, 1.0 / 3, 0, 1e-3, false},
        {-5, 5, 1, 0, false},
        {0, 0, 0, 0, true},
        {1e-10, 0, 1e-6, 1e-9, true},
        {NAN, 1, 1, 1, false},
        {INFINITY, INFINITY, 1, 1, false},
        {105, 100, 0.05, 0, true},
        {106, 100, 0.05, 0, false},
    };
    for (size_t i = 0; i < N_OF(tol); i++) {
        bool c = verify_number_close(tol[i].got, tol[i].want, tol[i].rel, tol[i].abs_tol);
        EXPECT(c == tol[i].close, "verify_number_close(%g, %g, rel %g, abs %g) = %d, expected %d",
               tol[i].got, tol[i].want, tol[i].rel, tol[i].abs_tol, c, tol[i].close);
    }
}

static void test_choice(bool verbose)
{
    struct {
        const char *in;
        char        want;
    } ex[] = {
        {"B", 'B'},
        {"b", 'B'},
        {"(B)", 'B'},
        {"B.", 'B'},
        {"**C**", 'C'},
        {"Answer: B", 'B'},
        {"The answer is (c).", 'C'},
        {"answer - **D**", 'D'},
        {"The correct answer is E because", 'E'},
        {"the answer is a number", 0},
        {"B) 42 because it is even", 'B'},
        {"(A) since the rest fail", 'A'},
        {"I pick (D), not (B)... final (C)", 'C'},
        {"Answer: A. Wait, the answer is B", 'B'},
        {"A cat sat", 0},
        {"F", 0},
        {"", 0},
        {"Answer: F", 0},
        {"answers: B", 0},
        {"The answer is B2", 0},
        {"ANSWER IS: [B]", 'B'},
    };
    for (size_t i = 0; i < N_OF(ex); i++) {
        char got = verify_choice(ex[i].in, strlen(ex[i].in));
        if (verbose)
            printf("  choice %-34s -> %c %s\n", ex[i].in, got ? got : '-',
                   got == ex[i].want ? "ok" : "WRONG");
        EXPECT(got == ex[i].want, "verify_choice('%s') = '%c', expected '%c'", ex[i].in,
               got ? got : '-', ex[i].want ? ex[i].want : '-');
    }
    struct {
        const char *in;
        char        want;
    } ans[] = {{"B", 'B'}, {"b", 'B'}, {"(C)", 'C'}, {"D)", 'D'}, {" E. ", 'E'},
               {"F", 0},   {"AB", 0},  {"", 0},      {"1", 0},    {"(A", 'A'}};
    for (size_t i = 0; i < N_OF(ans); i++) {
        char got = verify_choice_answer(ans[i].in, strlen(ans[i].in));
        EXPECT(got == ans[i].want, "verify_choice_answer('%s') = '%c', expected '%c'", ans[i].in,
               got ? got : '-', ans[i].want ? ans[i].want : '-');
    }
}

static void test_boxed(bool verbose)
{
    struct {
        const char *in, *want; /* want NULL: no boxed answer */
    } ex[] = {
        {"so \\boxed{42}", "42"},
        {"\\boxed{1} then \\boxed{2}", "2"},
        {"\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"},
        {"\\boxed{{a}{b}}", "{a}{b}"},
        {"\\boxed{\\{1,2\\}}", "\\{1,2\\}"},
        {"\\boxed {7}", "7"},
        {"\\boxed{3", NULL},
        {"\\boxed{1} and \\boxed{2", NULL},
        {"no box", NULL},
        {"\\boxed 5", NULL},
        {"\\boxed{}", ""},
        {"$\\boxed{x^{2}}$.", "x^{2}"},
    };
    for (size_t i = 0; i < N_OF(ex); i++) {
        size_t st = 0, len = 0;
        bool   found = verify_boxed(ex[i].in, strlen(ex[i].in), &st, &len);
        bool   ok = ex[i].want ? found && len == strlen(ex[i].want) &&
                                   !memcmp(ex[i].in + st, ex[i].want, len)
                               : !found;
        if (verbose)
            printf("  boxed %-30s -> %s'%.*s' %s\n", ex[i].in, found ? "" : "none ",
                   (int)(found ? len : 0), ex[i].in + st, ok ? "ok" : "WRONG");
        EXPECT(ok, "verify_boxed('%s') = %d '%.*s', expected %s", ex[i].in, found,
               (int)(found ? len : 0), ex[i].in + st, ex[i].want ? ex[i].want : "none");
    }
    struct {
        const char *got, *want;
        bool        match;
    } m[] = {
        {"42", "42", true},
        {" 42 ", "42", true},
        {"42.", "42", true},
        {"42.0", "42", true},
        {"\\frac{1}{2}", "0.5", true},
        {"\\dfrac{1}{2}", "\\frac{1}{2}", true},
        {"\\left( 1, 2 \\right)", "(1,2)", true},
        {"5\\text{ cm}", "5cm", true},
        {"90^\\circ", "90", true},
        {"x^2", "x^{2}", false},
        {"43", "42", false},
        {"42", "\\boxed{42}", true},
        {"", "42", false},
        {"50\\%", "50", true},
        {"\\$5", "5", false},
    };
    for (size_t i = 0; i < N_OF(m); i++) {
        bool got = verify_boxed_match(m[i].got, strlen(m[i].got), m[i].want, strlen(m[i].want));
        EXPECT(got == m[i].match, "verify_boxed_match('%s', '%s') = %d, expected %d", m[i].got,
               m[i].want, got, m[i].match);
    }
}

typedef struct {
    const char *pattern, *text;
    int         rc;
    bool        match;
} RegexCase;

static const RegexCase k_regex[] = {
    {"^[0-9]+$", "123", 0, true},
    {"^[0-9]+$", "12a", 0, false},
    {"[0-9]+", "abc 7 def", 0, true},
    {"^(yes|no)$", "no", 0, true},
    {"^(yes|no)$", "maybe", 0, false},
    {"colou?r", "the color red", 0, true},
    {"^a{2,3}$", "aaaa", 0, false},
    {"(a)\\1", "aa", ERR_ARG, false},
    {"[unclosed", "x", ERR_ARG, false},
    {"", "x", ERR_ARG, false},
    {"\\\\1", "\\1", 0, true},
    {"^$", "", 0, true},
    {"(a|aa)*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac", 0, false},
    /* Bounded repeats: fine alone, refused stacked (regcomp would take
     * seconds and gigabytes unrolling them). */
    {"^.{0,500}$", "short", 0, true},
    {"^(ab|cd){2,3}$", "abcdab", 0, true},
    {"^(a{1,100}){1,20}$", "aaa", 0, true},
    {"^[[:digit:]]{3}-[0-9]{4}$", "555-0134", 0, true},
    {"a{,3}", "a{,3}", 0, true},
    {"((a{1,255}){1,255}){1,255}", "a", ERR_ARG, false},
    {"(((a{10}){10}){10}){10}", "a", ERR_ARG, false},
    {"(x|y{1,100}){1,100}", "x", ERR_ARG, false},
    {"[a-z]{5000}", "a", ERR_ARG, false},
    /* regcomp turns x+ into x x*, copying x: every stacked '+' doubles what
     * it repeats (the jsonl fuzz harness's finding: 112 of them in a
     * record's pattern took glibc past 2 GB). */
    {"^a+++++++++$", "aaa", 0, true},
    {"^((ab)+c+)+$", "ababcabc", 0, true},
    {"a++++++++++++++++++++", "a", ERR_ARG, false},
    {"^(yes|Yes)$B+++++++++++++++++++++++++++++++++++++++++++++++++++++ord", "x", ERR_ARG, false},
    {"((a{1,50})+){1,50}", "a", ERR_ARG, false},
};

static void test_regex(bool verbose)
{
    for (size_t i = 0; i < N_OF(k_regex); i++) {
        const RegexCase *c = &k_regex[i];
        bool             match = !c->match;
        char             why[160] = "";
        int              rc = verify_regex(c->pattern, c->text, &match, why, sizeof why);
        int              crc = verify_regex_check(c->pattern, why, sizeof why);
        bool             ok = rc == c->rc && crc == c->rc && match == c->match;
        if (verbose)
            printf("  regex %-14s on %-16.16s -> rc %d match %d %s%s%s\n", c->pattern, c->text, rc,
                   match, ok ? "ok" : "WRONG", why[0] ? ": " : "", why);
        EXPECT(ok, "verify_regex('%s', '%s') = rc %d/%d match %d (%s), expected rc %d match %d",
               c->pattern, c->text, rc, crc, match, why, c->rc, c->match);
    }
    /* Too long a pattern; too long an input never matches. */
    char long_pat[VERIFY_REGEX_MAX_PATTERN + 2];
    memset(long_pat, 'a', sizeof long_pat - 1);
    long_pat[sizeof long_pat - 1] = '\0';
    bool match = true;
    char why[160] = "";
    EXPECT(verify_regex(long_pat, "a", &match, why, sizeof why) == ERR_ARG && !match &&
               strstr(why, "expected 1.."),
           "a %zu-byte pattern: why '%s'", strlen(long_pat), why);
    static char big[VERIFY_REGEX_MAX_INPUT + 2];
    memset(big, 'x', sizeof big - 1);
    EXPECT(verify_regex("x", big, &match, why, sizeof why) == 0 && !match,
           "a %zu-byte text matched (bound %d)", strlen(big), VERIFY_REGEX_MAX_INPUT);
    big[VERIFY_REGEX_MAX_INPUT] = '\0';
    EXPECT(verify_regex("x", big, &match, why, sizeof why) == 0 && match,
           "a text of exactly %d bytes did not match", VERIFY_REGEX_MAX_INPUT);
}

/* Several threads alternate patterns: each keeps its own compiled one. */
static void *regex_thread(void *arg)
{
    int *fails = arg;
    for (int k = 0; k < 200; k++) {
        const RegexCase *c = &k_regex[k % 7];
        bool             match;
        char             why[128];
        if (verify_regex(c->pattern, c->text, &match, why, sizeof why) != 0 || match != c->match)
            (*fails)++;
    }
    return NULL;
}

static void test_regex_threads(void)
{
    pthread_t t[4];
    int       fails[4] = {0};
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, regex_thread, &fails[i]);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    EXPECT(fails[0] + fails[1] + fails[2] + fails[3] == 0,
           "%d wrong regex verdicts over 4 threads x 200",
           fails[0] + fails[1] + fails[2] + fails[3]);
}

static void test_formats(bool verbose)
{
    struct {
        const char *in;
        bool        tag, think;
    } ex[] = {
        {"<answer>42</answer>", true, false},
        {"reasoning... <answer>42</answer>\n", true, false},
        {"<answer>42</answer> and more", false, false},
        {"<answer>  </answer>", false, false},
        {"<answer>1</answer><answer>2</answer>", false, false},
        {"</answer>42<answer>", false, false},
        {"<answer>42", false, false},
        {"42", false, false},
        {"", false, false},
        {"<think>a+b</think><answer>3</answer>", true, true},
        {"  <think>\nwork\n</think>\n<answer> 3 </answer>\n", true, true},
        {"<think></think><answer>3</answer>", true, false},
        {"<think>x</think> junk <answer>3</answer>", true, false},
        {"<answer>3</answer><think>x</think>", false, false},
        {"pre <think>x</think><answer>3</answer>", true, false},
        {"<think>x<think>y</think><answer>3</answer>", true, false},
        {"<think>x</think><answer>3</answer>tail", false, false},
    };
    for (size_t i = 0; i < N_OF(ex); i++) {
        size_t n = strlen(ex[i].in);
        bool   tag = verify_format_answer_tag(ex[i].in, n);
        bool   think = verify_format_think(ex[i].in, n);
        if (verbose)
            printf("  format %-44.44s -> tag %d think %d %s\n", ex[i].in, tag, think,
                   tag == ex[i].tag && think == ex[i].think ? "ok" : "WRONG");
        EXPECT(tag == ex[i].tag && think == ex[i].think,
               "formats of '%s': answer tag %d think %d, expected %d %d", ex[i].in, tag, think,
               ex[i].tag, ex[i].think);
    }
}

int verify_selftest(bool verbose)
{
    test_normalize(verbose);
    test_answer_span(verbose);
    test_numbers(verbose);
    test_choice(verbose);
    test_boxed(verbose);
    test_regex(verbose);
    test_regex_threads();
    test_formats(verbose);
    return expect_end();
}
