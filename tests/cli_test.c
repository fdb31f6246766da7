/* cli_test: end-to-end tests of the programs, run as child processes.
 *
 * The programs are looked up in the build directory named by the
 * RLHF_BUILD_DIR environment variable (set by `make test`), else in the
 * directory holding the running test binary. Sources (the Makefile's program
 * registrations and each program's option table) are read from RLHF_SRC_DIR,
 * default the current directory. Each test makes its own temp directory
 * under $TMPDIR (default /tmp) and removes it. Failures are reported on
 * stderr with the child's command line and output. */
#include "tests/test_list.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "tests/support/expect.h"
#include "tests/support/proc.h"
#include "tests/support/testfs.h"

/* A child that runs longer than this is killed and counts as a failure, so
 * a hung program cannot hang `make test`. */
#define CLI_TIMEOUT_S 120.0
/* Captured output beyond this is an error in itself. */
#define CLI_OUTPUT_MAX (16u << 20)
#define CLI_MAX_LINES 256

static char g_build[PATH_MAX]; /* where the programs are */
static char g_src[PATH_MAX];   /* the source tree (Makefile, *_main.c) */
static char g_tmp[PATH_MAX];   /* this test's temp directory */
static bool g_verbose;

/* Runs build/argv[0] with argv (NULL-terminated), stdin from /dev/null and
 * stdout/stderr captured. A child that cannot be started, is killed or
 * times out has status -1 and fails a check. */
static ProcResult run(const char *const *argv)
{
    char       path[PATH_MAX];
    ProcResult r;
    testfs_path(path, sizeof path, "%s/%s", g_build, argv[0]);
    int rc = proc_run(path, argv, NULL, CLI_TIMEOUT_S, &r);
    EXPECT_RUN(rc == 0 && r.signal == 0, &r, "'%s' %s", r.cmd,
               rc == ERR_TIMEOUT ? "ran longer than the timeout and was killed"
               : rc              ? "could not be run or its output not read"
                                 : "died of a signal");
    if (g_verbose) printf("  cli: exit %d in %.2fs: %s\n", r.status, r.seconds, r.cmd);
    return r;
}

/* True if text mentions --name as a whole flag (not a prefix of a longer one). */
static bool has_flag(const char *text, const char *name)
{
    char   want[96];
    size_t n = (size_t)snprintf(want, sizeof want, "--%s", name);
    for (const char *p = strstr(text, want); p; p = strstr(p + 1, want)) {
        char next = p[n];
        bool is_word = (next >= 'a' && next <= 'z') || (next >= '0' && next <= '9') ||
                       next == '-' || next == '_';
        if (!is_word) return true;
    }
    return false;
}

/* Splits text into lines in place; returns the count (at most max). */
static int split_lines(char *text, char **lines, int max)
{
    int n = 0;
    for (char *p = text; *p && n < max;) {
        lines[n++] = p;
        char *nl = strchr(p, '\n');
        if (!nl) break;
        *nl = '\0';
        p = nl + 1;
    }
    return n;
}

static char *read_text(const char *path)
{
    return testfs_read(path, CLI_OUTPUT_MAX);
}

/* The programs registered in the Makefile, as lines of the exact form
 * "$(BUILD)/rlhf[-NAME]: $(BUILD)/SOURCE.o": names[i] and sources[i] (.c). */
#define CLI_MAX_PROGS 32
typedef struct {
    char name[64];
    char source[256];
} CliProg;

static int find_programs(CliProg *progs, int max)
{
    char mk[PATH_MAX];
    testfs_path(mk, sizeof mk, "%s/Makefile", g_src);
    char *text = read_text(mk);
    if (!text) {
        EXPECT(false, "cannot read '%s' to list the programs (set RLHF_SRC_DIR?)", mk);
        return 0;
    }
    char *lines[1024];
    int   nl = split_lines(text, lines, 1024), n = 0;
    for (int i = 0; i < nl && n < max; i++) {
        const char *pre = "$(BUILD)/rlhf"; /* rlhf itself and rlhf-NAME */
        if (strncmp(lines[i], pre, strlen(pre))) continue;
        char name[64], src[256], rest[8];
        int  k =
            sscanf(lines[i], "$(BUILD)/%63[a-z0-9_-]: $(BUILD)/%255[^ \t] %7s", name, src, rest);
        size_t sl = k >= 2 ? strlen(src) : 0;
        /* One object and nothing else: the rlhf-test rule lists more. */
        if (k != 2 || sl < 3 || strcmp(src + sl - 2, ".o")) continue;
        src[sl - 1] = 'c';
        snprintf(progs[n].name, sizeof progs[n].name, "%s", name);
        testfs_path(progs[n].source, sizeof progs[n].source, "%s/%s", g_src, src);
        n++;
    }
    free(text);
    return n;
}

/* The long option names of a program's flag table in source (rows of the
 * form FLAG_TYPE("name", ... from common/base/flags.h; FLAG_SECTION rows
 * are headings), and "help", which every program has. */
static int option_names(const char *source, char names[][48], int max)
{
    char *text = read_text(source);
    if (!text) {
        EXPECT(false, "cannot read '%s'", source);
        return 0;
    }
    int n = 0;
    for (char *p = strstr(text, "FLAG_"); p && n < max; p = strstr(p + 1, "FLAG_")) {
        char kind[32], name[48];
        if (p > text && (p[-1] == '_' || (p[-1] >= 'A' && p[-1] <= 'Z'))) continue;
        if (sscanf(p, "FLAG_%31[A-Z0-9_]( \"%47[a-z0-9-]\"", kind, name) != 2) continue;
        if (!strcmp(kind, "SECTION")) continue;
        snprintf(names[n++], 48, "%s", name);
    }
    if (n > 0 && n < max) snprintf(names[n++], 48, "help");
    free(text);
    return n;
}

static void test_help_and_bad_flags(void)
{
    CliProg progs[CLI_MAX_PROGS];
    int     np = find_programs(progs, CLI_MAX_PROGS);
    bool    seen_sft = false, seen_gen = false;
    for (int i = 0; i < np; i++) {
        seen_sft |= !strcmp(progs[i].name, "rlhf-sft");
        seen_gen |= !strcmp(progs[i].name, "rlhf-gen");
        char names[64][48];
        int  nn = option_names(progs[i].source, names, 64);
        EXPECT(nn > 0, "%s: no flag table rows found in '%s'", progs[i].name, progs[i].source);
        const char *help[] = {progs[i].name, "--help", NULL};
        ProcResult  r = run(help);
        EXPECT_RUN(r.status == 0, &r, "%s --help: exit %d, expected 0", progs[i].name, r.status);
        for (int k = 0; k < nn; k++)
            EXPECT_RUN(has_flag(r.out, names[k]), &r, "%s --help does not mention --%s",
                       progs[i].name, names[k]);
        proc_result_free(&r);
        const char *bad[] = {progs[i].name, "--no-such-flag-xyz", NULL};
        r = run(bad);
        EXPECT_RUN(r.status == 2, &r, "%s with a bad flag: exit %d, expected 2", progs[i].name,
                   r.status);
        EXPECT_RUN(strstr(r.err, "no-such-flag-xyz"), &r, "%s: the bad flag is not named on stderr",
                   progs[i].name);
        proc_result_free(&r);
        if (g_verbose) printf("  cli: %s: --help lists all %d flags\n", progs[i].name, nn);
    }
    EXPECT(seen_sft && seen_gen, "the Makefile registers %d programs, rlhf-sft %s, rlhf-gen %s", np,
           seen_sft ? "found" : "missing", seen_gen ? "found" : "missing");
}

/* One "completion I "TEXT" sum_logp X n_tokens K finish F" line. */
typedef struct {
    int    index;
    char   text[256];
    double sum_logp;
    int    n_tokens;
    char   finish[16];
} Completion;

static bool parse_completion(const char *line, Completion *c)
{
    int at = 0;
    if (sscanf(line, "completion %d \"%n", &c->index, &at) != 1 || at == 0) return false;
    const char *p = line + at;
    size_t      n = 0;
    for (; *p && *p != '"'; p++) {
        if (*p == '\\' && p[1]) p++;
        if (n + 1 >= sizeof c->text) return false;
        c->text[n++] = *p;
    }
    c->text[n] = '\0';
    if (*p != '"') return false;
    return sscanf(p + 1, " sum_logp %lf n_tokens %d finish %15s", &c->sum_logp, &c->n_tokens,
                  c->finish) == 3 &&
           (!strcmp(c->finish, "stop") || !strcmp(c->finish, "length"));
}

/* Checks generation output: n completion lines, each possibly followed by
 * its token lines (verbose); fills comps. With is_greedy, logp_sampled is 0. */
static void check_completions(ProcResult *r, int n, int max_new, bool is_verbose, bool is_greedy,
                              Completion *comps)
{
    char *copy = xstrdup(r->out);
    char *lines[CLI_MAX_LINES];
    int   nl = split_lines(copy, lines, CLI_MAX_LINES), got = 0;
    for (int i = 0; i < nl; i++) {
        Completion c;
        if (!EXPECT_RUN(parse_completion(lines[i], &c), r, "line %d is not a completion: '%s'", i,
                        lines[i]))
            break;
        EXPECT_RUN(c.index == got, r, "completion %d numbered %d", got, c.index);
        EXPECT_RUN(isfinite(c.sum_logp) && c.sum_logp <= 1e-6, r, "completion %d: sum_logp %g > 0",
                   got, c.sum_logp);
        EXPECT_RUN(c.n_tokens >= 1 && c.n_tokens <= max_new, r,
                   "completion %d: n_tokens %d, expected "
                   "1..%d",
                   got, c.n_tokens, max_new);
        EXPECT_RUN(!strcmp(c.finish, "stop") || c.n_tokens == max_new, r,
                   "completion %d: finish length after %d of %d tokens", got, c.n_tokens, max_new);
        if (is_verbose) {
            double sum = 0.0;
            int    k = 0;
            for (; k < c.n_tokens && i + 1 < nl; k++) {
                const char *tl = lines[++i], *id = strstr(tl, " id ");
                int         pos = -1, tid;
                float       lpf, lps;
                if (!EXPECT_RUN(sscanf(tl, "  token %d", &pos) == 1 && pos == k && id &&
                                    sscanf(id, " id %d logp_full %f logp_sampled %f", &tid, &lpf,
                                           &lps) == 3,
                                r, "completion %d: token line %d is '%s'", got, k, tl))
                    break;
                EXPECT_RUN(lpf <= 1e-6f && isfinite(lpf), r, "token %d: logp_full %g", k, lpf);
                /* Truncation renormalises, so the sampled distribution gives
                 * the drawn token at least its full probability. */
                if (is_greedy)
                    EXPECT_RUN(lps == 0.0f, r, "greedy token %d: logp_sampled %g, expected 0", k,
                               lps);
                else
                    EXPECT_RUN(lps <= 1e-6f && lps >= lpf - 1e-5f, r,
                               "token %d: logp_sampled %g, expected in [logp_full %g, 0]", k, lps,
                               lpf);
                sum += lpf;
            }
            EXPECT_RUN(k == c.n_tokens, r, "completion %d: %d token lines, expected %d", got, k,
                       c.n_tokens);
            EXPECT_RUN(fabs(sum - c.sum_logp) <= 1e-5 * c.n_tokens + 1e-5, r,
                       "completion %d: token logp_full add to %.6f, sum_logp is %.6f", got, sum,
                       c.sum_logp);
        }
        if (got < n) comps[got] = c;
        got++;
    }
    EXPECT_RUN(got == n, r, "%d completions, expected %d", got, n);
    free(copy);
}

/* One scored token line: "POS TOKEN LOGP ENTROPY". */
typedef struct {
    int    pos;
    char   tok[16];
    double logp, entropy;
} ScoreLine;

typedef struct {
    ScoreLine lines[64];
    int       n;
    double    total, mean;
    int       n_tokens;
} Score;

static bool parse_score_line(const char *line, ScoreLine *s)
{
    char *end;
    long  pos = strtol(line, &end, 10);
    if (end == line) return false;
    const char *p = end;
    while (*p == ' ') p++;
    size_t tl = p[0] == '\'' ? 3 : strcspn(p, " ");
    if (tl == 0 || tl >= sizeof s->tok || strlen(p) < tl) return false;
    memcpy(s->tok, p, tl);
    s->tok[tl] = '\0';
    p += tl;
    s->pos = (int)pos;
    s->logp = strtod(p, &end);
    if (end == p) return false;
    p = end;
    s->entropy = strtod(p, &end);
    if (end == p) return false;
    while (*end == ' ') end++;
    return *end == '\0';
}

/* Parses --score output and checks its shape: a header, one line per scored
 * token at positions first..first+n-1 whose text matches want (EOS as
 * <eos>), log-probs <= 0, entropies in [0, log V], and a total line that
 * agrees with the lines. */
static bool check_score(ProcResult *r, int first, const char *want, bool is_eos, Score *s)
{
    int   fails0 = expect_fails();
    char *copy = xstrdup(r->out);
    char *lines[CLI_MAX_LINES];
    int   nl = split_lines(copy, lines, CLI_MAX_LINES);
    int   n_want = (int)strlen(want) + is_eos;
    memset(s, 0, sizeof *s);
    EXPECT_RUN(nl >= 2 && strstr(lines[0], "pos") && strstr(lines[0], "logp") &&
                   strstr(lines[0], "entropy"),
               r, "--score output lacks its header line");
    double sum = 0.0;
    for (int i = 1; i < nl - 1 && s->n < 64; i++) {
        ScoreLine *l = &s->lines[s->n];
        if (!EXPECT_RUN(parse_score_line(lines[i], l), r,
                        "--score line %d is not 'pos token logp entropy': '%s'", i, lines[i]))
            break;
        char expect[16];
        if (s->n < (int)strlen(want))
            snprintf(expect, sizeof expect, "'%c'", want[s->n]);
        else
            snprintf(expect, sizeof expect, "<eos>");
        EXPECT_RUN(l->pos == first + s->n, r, "scored token %d at position %d, expected %d", s->n,
                   l->pos, first + s->n);
        EXPECT_RUN(!strcmp(l->tok, expect), r, "scored token %d is %s, expected %s", s->n, l->tok,
                   expect);
        EXPECT_RUN(isfinite(l->logp) && l->logp <= 1e-6, r, "position %d: logp %g > 0", l->pos,
                   l->logp);
        /* The charset has at most 95 characters plus 3 special ids. */
        EXPECT_RUN(l->entropy >= -1e-5 && l->entropy <= log(98.0) + 1e-3, r,
                   "position %d: entropy %g outside [0, log V]", l->pos, l->entropy);
        sum += l->logp;
        s->n++;
    }
    EXPECT_RUN(s->n == n_want, r, "%d scored tokens, expected %d", s->n, n_want);
    EXPECT_RUN(nl >= 1 && sscanf(lines[nl - 1], "total_logp %lf mean_logp %lf n_tokens %d",
                                 &s->total, &s->mean, &s->n_tokens) == 3,
               r, "--score output lacks the total line");
    EXPECT_RUN(s->n_tokens == n_want, r, "total line counts %d tokens, expected %d", s->n_tokens,
               n_want);
    /* Each line is printed to 1e-6. */
    EXPECT_RUN(fabs(s->total - sum) <= 1e-6 * (s->n + 1), r, "total_logp %.6f, lines add to %.6f",
               s->total, sum);
    EXPECT_RUN(n_want > 0 && fabs(s->mean - s->total / n_want) <= 1e-5, r,
               "mean_logp %.6f, expected %.6f", s->mean, s->total / (n_want ? n_want : 1));
    free(copy);
    return expect_fails() == fails0;
}

/* Runs argv and expects exit status want with every string of needles on stderr. */
static void expect_error(const char *const *argv, int want, const char *what,
                         const char *const *needles)
{
    ProcResult r = run(argv);
    EXPECT_RUN(r.status == want, &r, "%s: exit %d, expected %d", what, r.status, want);
    for (int i = 0; needles && needles[i]; i++)
        EXPECT_RUN(strstr(r.err, needles[i]), &r, "%s: stderr does not mention \"%s\"", what,
                   needles[i]);
    if (g_verbose && r.status == want) {
        const char *nl = strrchr(r.err, '\n');
        size_t      len = strlen(r.err);
        /* The last line is the one that explains. */
        if (nl && (size_t)(nl - r.err) + 1 == len) {
            const char *prev = r.err;
            for (const char *q = r.err; q < nl; q++)
                if (*q == '\n') prev = q + 1;
            printf("  cli: %s -> %d: %.*s\n", what, r.status, (int)(nl - prev), prev);
        }
    }
    proc_result_free(&r);
}

/* Scores prompt + c's text (+ EOS if it stopped) with --score and expects
 * the total to equal the sum_logp generation reported: logp_full at
 * temperature 1 (and greedy's, defined at temperature 1) is what the
 * training forward recomputes. Returns 1 if compared, 0 if c's text lacks
 * generated ids (special ids are not rendered) or the comparison failed. */
static int agree(const char *ck, const char *prompt, const Completion *c)
{
    bool is_stop = !strcmp(c->finish, "stop");
    if ((int)strlen(c->text) != c->n_tokens - is_stop) {
        if (g_verbose) printf("  cli: \"%s\" holds special ids; not compared\n", c->text);
        return 0;
    }
    const char *sc[] = {"rlhf-gen", "--ckpt",  ck,      "--prompt",
                        prompt,     "--score", c->text, is_stop ? "--score-eos" : NULL,
                        NULL};
    Score       s;
    ProcResult  r = run(sc);
    int         compared = 0;
    EXPECT_RUN(r.status == 0, &r, "rlhf-gen --score of a completion: exit %d", r.status);
    if (r.status == 0 && check_score(&r, 1 + (int)strlen(prompt), c->text, is_stop, &s)) {
        double tol = 1e-4 * (1.0 + fabs(s.total));
        EXPECT_RUN(fabs(s.total - c->sum_logp) <= tol, &r,
                   "scoring completion \"%s\" gives %.6f, generation reported %.6f", c->text,
                   s.total, c->sum_logp);
        if (g_verbose)
            printf("  cli: \"%s\" (%s): generation sum_logp %.6f, --score total %.6f (|diff| "
                   "%.2g, tol %.2g)\n",
                   c->text, c->finish, c->sum_logp, s.total, fabs(s.total - c->sum_logp), tol);
        compared = 1;
    }
    proc_result_free(&r);
    return compared;
}

static void test_gen(void)
{
    char ck[PATH_MAX];
    testfs_path(ck, sizeof ck, "%s/ck", g_tmp);
    const char *sft[] = {"rlhf-sft", "--out",        ck,   "--steps",    "30", "--eval-n",
                         "20",       "--eval-every", "0",  "--dim",      "32", "--layers",
                         "1",        "--heads",      "2",  "--kv-heads", "1",  "--hidden",
                         "64",       "--batch",      "16", "--seed",     "3",  NULL};
    ProcResult  r = run(sft);
    EXPECT_RUN(r.status == 0, &r, "rlhf-sft: exit %d", r.status);
    proc_result_free(&r);
    char cfg[PATH_MAX + 16];
    testfs_path(cfg, sizeof cfg, "%s/config.json", ck);
    if (!EXPECT(access(cfg, R_OK) == 0, "rlhf-sft wrote no '%s'; skipping the rlhf-gen checks",
                cfg))
        return;

    /* Greedy generation: two identical completions of the right shape. */
    const char *greedy[] = {"rlhf-gen", "--ckpt",        ck,  "--prompt", "12+34=", "--n",
                            "2",        "--temperature", "0", NULL};
    Completion  g2[2] = {0};
    r = run(greedy);
    EXPECT_RUN(r.status == 0, &r, "rlhf-gen greedy: exit %d", r.status);
    check_completions(&r, 2, 32, false, true, g2);
    EXPECT_RUN(!strcmp(g2[0].text, g2[1].text) && g2[0].sum_logp == g2[1].sum_logp, &r,
               "greedy completions differ");
    proc_result_free(&r);
    if (g_verbose)
        printf("  cli: greedy \"12+34=\" -> \"%s\" (%s, %d tokens, sum_logp %.4f)\n", g2[0].text,
               g2[0].finish, g2[0].n_tokens, g2[0].sum_logp);

    /* The same with --verbose-tokens: the token lines add up. */
    const char *greedy_v[] = {"rlhf-gen", "--ckpt",           ck,
                              "--prompt", "12+34=",           "--temperature",
                              "0",        "--verbose-tokens", NULL};
    Completion  gv = {0};
    r = run(greedy_v);
    EXPECT_RUN(r.status == 0, &r, "rlhf-gen --verbose-tokens: exit %d", r.status);
    check_completions(&r, 1, 32, true, true, &gv);
    EXPECT_RUN(!strcmp(gv.text, g2[0].text), &r, "greedy completion changed with --verbose-tokens");
    proc_result_free(&r);

    /* Sampling with truncation: reproducible from the seed, sampled log-probs
     * at least the full ones. */
    const char *samp[] = {
        "rlhf-gen", "--ckpt",           ck,  "--prompt", "7-5=", "--n",    "3",  "--temperature",
        "1.5",      "--top-k",          "5", "--top-p",  "0.9",  "--seed", "11", "--max-new",
        "6",        "--verbose-tokens", NULL};
    Completion s3[3] = {0};
    r = run(samp);
    EXPECT_RUN(r.status == 0, &r, "rlhf-gen sampling: exit %d", r.status);
    check_completions(&r, 3, 6, true, false, s3);
    ProcResult again = run(samp);
    EXPECT_RUN(again.status == 0 && !strcmp(again.out, r.out), &again,
               "the same seed gave different output than:\n%s", r.out);
    proc_result_free(&again);
    proc_result_free(&r);

    /* Scoring what was generated must give back its sum_logp, greedy and
     * sampled at temperature 1 (many tokens, some cut by length). */
    int         n_agree = agree(ck, "12+34=", &g2[0]);
    const char *samp1[] = {
        "rlhf-gen",      "--ckpt", ck,       "--prompt", "3+4=",      "--n", "4",
        "--temperature", "1",      "--seed", "5",        "--max-new", "12",  NULL};
    Completion t1[4] = {0};
    r = run(samp1);
    EXPECT_RUN(r.status == 0, &r, "rlhf-gen at temperature 1: exit %d", r.status);
    check_completions(&r, 4, 12, false, false, t1);
    proc_result_free(&r);
    for (int i = 0; i < 4; i++) n_agree += agree(ck, "3+4=", &t1[i]);
    EXPECT(n_agree >= 3, "only %d of 5 completions could be compared with --score", n_agree);

    /* --score of a whole text, of its continuation given --prompt, and given
     * --prompt-len: one line per token, and a causal model gives the
     * continuation the same log-probs either way. */
    Score       full, cont, cont2;
    const char *sf[] = {"rlhf-gen", "--ckpt", ck, "--score", "12+34=46", NULL};
    r = run(sf);
    EXPECT_RUN(r.status == 0, &r, "rlhf-gen --score: exit %d", r.status);
    bool ok_full = r.status == 0 && check_score(&r, 1, "12+34=46", false, &full);
    proc_result_free(&r);
    const char *sp[] = {"rlhf-gen", "--ckpt", ck, "--prompt", "12+34=", "--score", "46", NULL};
    r = run(sp);
    EXPECT_RUN(r.status == 0, &r, "rlhf-gen --prompt --score: exit %d", r.status);
    bool  ok_cont = r.status == 0 && check_score(&r, 7, "46", false, &cont);
    char *out_prompt = xstrdup(r.out);
    proc_result_free(&r);
    const char *sl[] = {"rlhf-gen", "--ckpt", ck, "--prompt-len", "6", "--score", "12+34=46", NULL};
    r = run(sl);
    EXPECT_RUN(r.status == 0, &r, "rlhf-gen --prompt-len --score: exit %d", r.status);
    if (r.status == 0 && check_score(&r, 7, "46", false, &cont2))
        EXPECT_RUN(!strcmp(r.out, out_prompt), &r, "--prompt-len 6 differs from --prompt:\n%s",
                   out_prompt);
    proc_result_free(&r);
    free(out_prompt);
    if (ok_full && ok_cont) {
        for (int i = 0; i < 2; i++) {
            const ScoreLine *a = &full.lines[6 + i], *b = &cont.lines[i];
            EXPECT(fabs(a->logp - b->logp) <= 1e-4 && fabs(a->entropy - b->entropy) <= 1e-4,
                   "position %d: logp %.6f entropy %.6f alone, %.6f %.6f after --prompt", a->pos,
                   a->logp, a->entropy, b->logp, b->entropy);
        }
    }

    /* Bad input: characters outside the tokenizer, too long a text. */
    const char *bad_prompt[] = {"rlhf-gen", "--ckpt", ck, "--prompt", "1+#", NULL};
    expect_error(bad_prompt, 1, "a prompt with '#'", (const char *[]){"'#'", "--prompt", NULL});
    const char *bad_score[] = {"rlhf-gen", "--ckpt", ck, "--score", "12~", NULL};
    expect_error(bad_score, 1, "a score text with '~'", (const char *[]){"'~'", "--score", NULL});
    char long_text[201];
    memset(long_text, '1', 200);
    long_text[200] = '\0';
    const char *too_long[] = {"rlhf-gen", "--ckpt", ck, "--score", long_text, NULL};
    expect_error(too_long, 1, "a score text longer than the model",
                 (const char *[]){"at most", NULL});
    const char *too_long_p[] = {"rlhf-gen", "--ckpt", ck, "--prompt", long_text, NULL};
    expect_error(too_long_p, 1, "a prompt longer than the model",
                 (const char *[]){"at most", NULL});

    /* Bad flags: exit 2 with the reason. */
    struct {
        const char *argv[12];
        const char *needle;
    } bad[] = {
        {{"rlhf-gen", "--ckpt", ck, "--prompt", "1", "--temperature", "-1", NULL}, "temperature"},
        {{"rlhf-gen", "--ckpt", ck, "--prompt", "1", "--temperature", "nan", NULL}, "temperature"},
        {{"rlhf-gen", "--ckpt", ck, "--prompt", "1", "--temperature", "x", NULL}, "temperature"},
        {{"rlhf-gen", "--ckpt", ck, "--prompt", "1", "--top-k", "-3", NULL}, "top-k"},
        {{"rlhf-gen", "--ckpt", ck, "--prompt", "1", "--top-p", "0", NULL}, "top-p"},
        {{"rlhf-gen", "--ckpt", ck, "--prompt", "1", "--top-p", "1.5", NULL}, "top-p"},
        {{"rlhf-gen", "--ckpt", ck, "--prompt", "1", "--n", "0", NULL}, "--n"},
        {{"rlhf-gen", "--ckpt", ck, "--prompt", "1", "--max-new", "0", NULL}, "max-new"},
        {{"rlhf-gen", "--ckpt", ck, "--prompt", "1", "--seed", "-1", NULL}, "seed"},
        {{"rlhf-gen", "--prompt", "1", NULL}, "--ckpt"},
        {{"rlhf-gen", "--ckpt", ck, NULL}, "--prompt"},
        {{"rlhf-gen", "--ckpt", ck, "--score", "1", "--n", "2", NULL}, "--n"},
        {{"rlhf-gen", "--ckpt", ck, "--prompt", "1", "--prompt-len", "1", NULL}, "prompt-len"},
        {{"rlhf-gen", "--ckpt", ck, "--score", "12", "--prompt-len", "3", NULL}, "prompt-len"},
        {{"rlhf-gen", "--ckpt", ck, "--score", "12", "--prompt", "1", "--prompt-len", "1", NULL},
         "prompt-len"},
        {{"rlhf-gen", "--ckpt", ck, "--score", "", NULL}, "no token"},
        {{"rlhf-gen", "--ckpt", ck, "--prompt", "1", "extra", NULL}, "extra"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "bad command line %zu", i);
        expect_error(bad[i].argv, 2, what, (const char *[]){bad[i].needle, NULL});
    }

    /* Checkpoints that are missing, not directories, empty or corrupt:
     * exit 1 naming the directory or the file and the problem. */
    char path[PATH_MAX + 32], dir[PATH_MAX + 32];
    testfs_path(dir, sizeof dir, "%s/nope", g_tmp);
    const char *missing[] = {"rlhf-gen", "--ckpt", dir, "--prompt", "1", NULL};
    expect_error(missing, 1, "a missing checkpoint", (const char *[]){dir, "No such", NULL});
    const char *not_dir[] = {"rlhf-gen", "--ckpt", cfg, "--prompt", "1", NULL};
    expect_error(not_dir, 1, "a file as checkpoint", (const char *[]){"not a directory", NULL});
    testfs_path(dir, sizeof dir, "%s/empty", g_tmp);
    EXPECT(mkdir(dir, 0755) == 0, "mkdir '%s': %s", dir, strerror(errno));
    const char *empty[] = {"rlhf-gen", "--ckpt", dir, "--prompt", "1", NULL};
    expect_error(empty, 1, "an empty directory", (const char *[]){"config.json", NULL});

    testfs_path(dir, sizeof dir, "%s/bad", g_tmp);
    EXPECT(mkdir(dir, 0755) == 0, "mkdir '%s': %s", dir, strerror(errno));
    static const char *files[] = {"config.json", "model.safetensors"};
    char              *saved[2] = {NULL, NULL};
    size_t             saved_len[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        testfs_path(path, sizeof path, "%s/%s", ck, files[i]);
        if (!EXPECT(fileio_read_all(path, 1u << 28, false, &saved[i], &saved_len[i]) == 0,
                    "cannot read '%s'", path))
            goto out;
        testfs_path(path, sizeof path, "%s/%s", dir, files[i]);
        EXPECT(testfs_write(path, saved[i], saved_len[i]) == 0, "cannot write '%s'", path);
    }
    const char *copy_ok[] = {"rlhf-gen", "--ckpt", dir, "--prompt", "1", NULL};
    r = run(copy_ok);
    EXPECT_RUN(r.status == 0, &r, "a copy of the checkpoint: exit %d", r.status);
    proc_result_free(&r);
    /* Truncated weights: half the file, then not even the header length. */
    testfs_path(path, sizeof path, "%s/model.safetensors", dir);
    const size_t cuts[] = {saved_len[1] / 2, saved_len[1] - 1, 4};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        EXPECT(truncate(path, (off_t)cuts[i]) == 0, "truncate '%s'", path);
        char what[80];
        snprintf(what, sizeof what, "model.safetensors cut to %zu of %zu bytes", cuts[i],
                 saved_len[1]);
        expect_error(copy_ok, 1, what, (const char *[]){"model.safetensors", NULL});
        EXPECT(testfs_write(path, saved[1], saved_len[1]) == 0, "cannot write '%s'", path);
    }
    /* A missing weights file, then a config that is not JSON. */
    EXPECT(unlink(path) == 0, "unlink '%s'", path);
    expect_error(copy_ok, 1, "no model.safetensors", (const char *[]){"model.safetensors", NULL});
    EXPECT(testfs_write(path, saved[1], saved_len[1]) == 0, "cannot write '%s'", path);
    testfs_path(path, sizeof path, "%s/config.json", dir);
    EXPECT(testfs_write(path, "{\"hidden_size\": ", 16) == 0, "cannot write '%s'", path);
    expect_error(copy_ok, 1, "a config.json cut short", (const char *[]){"config.json", NULL});
out:
    free(saved[0]);
    free(saved[1]);
}

/* `make` with no target must be `make all` (issue 8, finding 6: the first
 * rule was a program's, so plain `make` built only rlhf-sft and skipped
 * deps). Compared by what make would do (-n, nothing run) in a fresh build
 * directory: the same commands, installing the dependencies and linking
 * every program registered in the Makefile. */
static void test_default_goal(void)
{
    char build[PATH_MAX], cmd[3 * PATH_MAX];
    char src[PATH_MAX];
    if (!realpath(g_src, src)) snprintf(src, sizeof src, "%s", g_src);
    testfs_path(build, sizeof build, "%s/make-n", g_tmp);
    ProcResult  r[2];
    const char *goals[2] = {"", "all"};
    for (int i = 0; i < 2; i++) {
        /* Without the caller's make variables: `make test` runs this test. */
        testfs_path(cmd, sizeof cmd,
                    "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -n --no-print-directory -C '%s' "
                    "BUILD='%s' %s",
                    src, build, goals[i]);
        const char *const argv[] = {"sh", "-c", cmd, NULL};
        int               rc = proc_run("/bin/sh", argv, NULL, CLI_TIMEOUT_S, &r[i]);
        EXPECT_RUN(rc == 0 && r[i].status == 0, &r[i], "'%s' failed", cmd);
    }
    EXPECT_RUN(!strcmp(r[0].out, r[1].out), &r[0],
               "`make -n` and `make -n all` differ (%zu and %zu bytes of commands): plain make "
               "is not make all",
               strlen(r[0].out), strlen(r[1].out));
    bool    deps = strstr(r[0].out, "install-deps.sh") != NULL;
    CliProg progs[CLI_MAX_PROGS];
    int     n = find_programs(progs, CLI_MAX_PROGS), linked = 0;
    for (int i = 0; i < n; i++) {
        char want[PATH_MAX + 80];
        testfs_path(want, sizeof want, "-o %s/%s ", build, progs[i].name);
        linked += strstr(r[0].out, want) != NULL;
    }
    EXPECT_RUN(deps && n > 0 && linked == n, &r[0],
               "plain `make` runs deps (%s) and links %d of the %d programs", deps ? "yes" : "no",
               linked, n);
    if (g_verbose)
        printf("  cli: plain make = make all: %zu bytes of commands, deps, %d programs linked\n",
               strlen(r[0].out), linked);
    proc_result_free(&r[0]);
    proc_result_free(&r[1]);
}

static void find_dirs(void)
{
    proc_build_dir(g_build, sizeof g_build);
    const char *env = getenv("RLHF_SRC_DIR");
    snprintf(g_src, sizeof g_src, "%s", env && *env ? env : ".");
    /* Run from elsewhere, the build directory's parent is the likely tree. */
    char mk[PATH_MAX];
    if ((!env || !*env) && access("Makefile", R_OK) != 0) {
        testfs_path(mk, sizeof mk, "%s/..", g_build);
        snprintf(g_src, sizeof g_src, "%s", mk);
    }
}

int cli_selftest(bool verbose)
{
    g_verbose = verbose;
    find_dirs();
    if (!EXPECT(testfs_tmpdir_new("cli", g_tmp, sizeof g_tmp) == 0, "temp directory")) return 1;
    if (verbose)
        printf("  cli: programs in '%s', sources in '%s', temp '%s'\n", g_build, g_src, g_tmp);
    test_help_and_bad_flags();
    test_default_goal();
    test_gen();
    EXPECT(testfs_tmpdir_remove(g_tmp) == 0, "cannot remove '%s'", g_tmp);
    return expect_end();
}
