/* flags_test: the single-value parsers, and a table's parsing, range
 * errors, --help and config line. */
#include "tests/test_list.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/flags.h"
#include "common/base/log.h"
#include "tests/support/expect.h"

static void test_values(void)
{
    int      i = 0;
    long     l = 0;
    uint64_t u = 0;
    float    f = 0;
    double   d = 0;
    /* Refusals print to stderr; that is the behaviour under test. */
    EXPECT(flags_int("n", "42", 0, 100, &i) == 0 && i == 42, "flags_int '42' gave %d", i);
    EXPECT_REFUSED(flags_int("n", "101", 0, 100, &i), ERR_ARG, "--n '101'", "101 in 0..100");
    EXPECT_REFUSED(flags_int("n", "4x", 0, 100, &i), ERR_ARG, "--n '4x'", "'4x'");
    EXPECT_REFUSED(flags_int("n", "", 0, 100, &i), ERR_ARG, "--n ''", "''");
    EXPECT(flags_long("n", "-5", -10, 10, &l) == 0 && l == -5, "flags_long '-5' gave %ld", l);
    EXPECT_REFUSED(flags_long("n", "99999999999999999999", 0, 10, &l), ERR_ARG, "0..10",
                   "a long out of range");
    EXPECT(flags_u64("s", "18446744073709551615", &u) == 0 && u == UINT64_MAX,
           "flags_u64 of 2^64-1 gave %llu", (unsigned long long)u);
    EXPECT_REFUSED(flags_u64("s", "-1", &u), ERR_ARG, "--s '-1'", "a negative u64");
    EXPECT(flags_float("x", "0.25", 0, 1, &f) == 0 && f == 0.25f, "flags_float '0.25' gave %g",
           (double)f);
    EXPECT_REFUSED(flags_float("x", "nan", 0, 1, &f), ERR_ARG, "--x 'nan'", "nan");
    EXPECT_REFUSED(flags_double("x", "inf", 0, INFINITY, &d), ERR_ARG, "--x 'inf'", "inf");
    EXPECT_REFUSED(flags_double("x", "1e400", 0, INFINITY, &d), ERR_ARG, "--x '1e400'", "1e400");
    EXPECT(flags_log_level("log-level", "debug", &i) == 0 && i == LOG_DEBUG,
           "log level 'debug' gave %d", i);
    EXPECT_REFUSED(flags_log_level("log-level", "loud", &i), ERR_ARG,
                   "expected error, warn, info or debug", "log level 'loud'");
}

typedef struct {
    int         steps;
    uint64_t    seed;
    float       lr;
    double      every;
    bool        is_on;
    const char *id;
    const char *path;
    int         algo;
    int         level;
    int         small_seed_field;
    const char *out;
} Cfg;

static const char *const k_algos[] = {"grpo", "ppo", NULL};

static int check_cfg(const FlagsSpec *spec, void *ctx)
{
    (void)spec;
    const Cfg *c = ctx;
    if (c->steps == 13) {
        fprintf(stderr, "test: --steps 13 is unlucky\n");
        return ERR_ARG;
    }
    return 0;
}

/* Parses argv (NULL-terminated) into *c from its defaults. */
static int parse(Cfg *c, const char **argv_in, char *help, size_t help_cap)
{
    static const Cfg defaults = {.steps = 60,
                                 .seed = 1,
                                 .lr = 3e-5f,
                                 .every = 5.0,
                                 .id = "w-0",
                                 .path = "runs/x",
                                 .algo = 0,
                                 .level = -1,
                                 .out = "out.json"};
    *c = defaults;
    uint64_t small = 7;
    Flag     flags[] = {
            FLAG_SECTION("Run:"),
            FLAG_INT("steps", &c->steps, 0, 1000, "N", "optimizer steps"),
            FLAG_U64("seed", &c->seed, "S", "seed"),
            FLAG_U64("small-seed", &small, "S", "a seed in a range", .hi = 99),
            FLAG_FLOAT("lr", &c->lr, 0, 1, "X", "learning rate"),
            FLAG_DOUBLE("every", &c->every, 0, 86400, "S", "seconds\nbetween lines"),
            FLAG_BOOL("on", &c->is_on, "switch it on"),
            FLAG_STRING("id", &c->id, "NAME", "worker id", .lo = 1, .hi = 8),
            FLAG_PATH("path", &c->path, "DIR", "a directory, '' = none"),
            FLAG_CHOICE("algo", &c->algo, k_algos, "A", "grpo or ppo"),
            FLAG_LOG_LEVEL(&c->level),
            FLAGS_END,
    };
    const char *args[1] = {NULL};
    FlagsSpec   spec = {.prog = "flags-test",
                        .synopsis = "[OUT] [flags]",
                        .about = "A test table.\n",
                        .flags = flags,
                        .args = args,
                        .n_args_max = 1,
                        .check = check_cfg,
                        .check_ctx = c};
    if (help) {
        FILE *f = fmemopen(help, help_cap, "w");
        CHECK(f);
        flags_usage(&spec, f);
        fclose(f);
        return 0;
    }
    char *argv[32];
    int   argc = 0;
    argv[argc++] = "flags-test";
    for (int i = 0; argv_in[i]; i++) argv[argc++] = (char *)argv_in[i];
    argv[argc] = NULL;
    int rc = flags_parse(&spec, argc, argv);
    if (args[0]) c->out = args[0];
    c->small_seed_field = (int)small;
    /* Which flag came first, as the order of first use. */
    if (rc == FLAGS_RUN && flags_at(&spec, "on") && flags_at(&spec, "steps"))
        EXPECT(flags_at(&spec, "on") != flags_at(&spec, "steps"), "two flags share an order");
    if (rc == FLAGS_RUN) {
        char cfg[1024];
        flags_format_config(&spec, cfg, sizeof cfg);
        char want[64];
        snprintf(want, sizeof want, "steps=%d ", c->steps);
        EXPECT(strstr(cfg, want) && strstr(cfg, "log-level="), "config line '%s' lacks '%s'", cfg,
               want);
    }
    return rc;
}

static void test_table(void)
{
    Cfg c;
    int rc = parse(&c, (const char *[]){NULL}, NULL, 0);
    EXPECT(rc == FLAGS_RUN && c.steps == 60 && c.lr == 3e-5f && !c.is_on && c.algo == 0,
           "no flags: rc %d steps %d lr %g on %d algo %d, expected the defaults", rc, c.steps,
           (double)c.lr, c.is_on, c.algo);
    rc = parse(&c,
               (const char *[]){"--steps", "7", "--seed=18446744073709551615", "--lr", "0.5",
                                "--on", "--id=abc", "--path", "", "--algo", "ppo", "--log-level",
                                "warn", "--every=0.25", "--small-seed", "99", "res.json", NULL},
               NULL, 0);
    EXPECT(rc == FLAGS_RUN, "a good command line: rc %d", rc);
    EXPECT(c.steps == 7 && c.seed == UINT64_MAX && c.lr == 0.5f && c.is_on && c.every == 0.25,
           "steps %d seed %llu lr %g on %d every %g, expected 7, 2^64-1, 0.5, 1, 0.25", c.steps,
           (unsigned long long)c.seed, (double)c.lr, c.is_on, c.every);
    EXPECT(!strcmp(c.id, "abc") && c.path == NULL && c.algo == 1 && c.level == LOG_WARN,
           "id '%s' path %s algo %d level %d, expected abc, NULL, 1, %d", c.id,
           c.path ? c.path : "NULL", c.algo, c.level, LOG_WARN);
    EXPECT(c.small_seed_field == 99 && !strcmp(c.out, "res.json"),
           "small-seed %d out '%s', expected 99 and res.json", c.small_seed_field, c.out);

    struct {
        const char *argv[6];
        const char *text; /* what stderr must say */
    } bad[] = {
        {{"--steps", "1001", NULL}, "flags-test: --steps '1001': expected an integer in 0..1000"},
        {{"--steps=x", NULL}, "--steps 'x'"},
        {{"--seed", "-1", NULL}, "--seed '-1': expected an integer in 0..2^64-1"},
        {{"--small-seed", "100", NULL}, "--small-seed '100': expected an integer in 0..99"},
        {{"--lr", "2", NULL}, "--lr '2': expected a number in [0, 1]"},
        {{"--id", "", NULL}, "--id '': expected 1..8 characters"},
        {{"--id", "123456789", NULL}, "expected 1..8 characters"},
        {{"--algo", "dpo", NULL}, "--algo 'dpo': expected grpo or ppo"},
        {{"--log-level", "loud", NULL}, "expected error, warn, info or debug"},
        {{"--no-such-flag", NULL}, "no-such-flag"},
        {{"--steps", NULL}, "steps"},
        {{"a.json", "b.json", NULL}, "unexpected argument 'b.json'"},
        {{"--steps", "13", NULL}, "unlucky"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char what[80];
        snprintf(what, sizeof what, "bad command line %zu (%s)", i, bad[i].argv[0]);
        EXPECT_REFUSED(parse(&c, bad[i].argv, NULL, 0), ERR_ARG, bad[i].text, what);
    }
    EXPECT(parse(&c, (const char *[]){"--help", NULL}, NULL, 0) == FLAGS_HELP,
           "--help did not return FLAGS_HELP");

    char help[4096];
    parse(&c, NULL, help, sizeof help);
    const char *want[] = {"usage: flags-test [OUT] [flags]",
                          "A test table.",
                          "Run:",
                          "--steps N",
                          "optimizer steps (default 60)",
                          "--seed S",
                          "(default 1)",
                          "(default 3e-05)",
                          "seconds\n",
                          "between lines (default 5)",
                          "switch it on (default off)",
                          "(default w-0)",
                          "(default runs/x)",
                          "(default grpo)",
                          "(default $RLHF_LOG)",
                          "--help",
                          NULL};
    for (int i = 0; want[i]; i++)
        EXPECT(strstr(help, want[i]), "--help lacks '%s':\n%s", want[i], help);
}

int flags_selftest(bool verbose)
{
    test_values();
    test_table();
    if (verbose) printf("  flags: %d checks\n", expect_checks());
    return expect_end();
}
