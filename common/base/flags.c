#include "common/base/flags.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/log.h"

/* getopt_long returns 'h' for --help (and -h when asked) and FLAG_OPT_BASE
 * + i for row i of the table. */
#define FLAG_OPT_BASE 1000
#define FLAGS_MAX 128

static const char *g_prog = "rlhf";

void flags_set_prog(const char *prog)
{
    g_prog = prog;
}

int flags_long(const char *flag, const char *text, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || errno || v < lo || v > hi) {
        fprintf(stderr, "%s: --%s '%s': expected an integer in %ld..%ld\n", g_prog, flag, text, lo,
                hi);
        return ERR_ARG;
    }
    *out = v;
    return 0;
}

int flags_int(const char *flag, const char *text, long lo, long hi, int *out)
{
    CHECK(lo >= -2147483647L - 1 && hi <= 2147483647L);
    long v;
    int  rc = flags_long(flag, text, lo, hi, &v);
    if (rc == 0) *out = (int)v;
    return rc;
}

int flags_u64(const char *flag, const char *text, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    /* strtoull accepts a sign and wraps negatives; refuse them. */
    if (*text == '\0' || strchr(text, '-') || *end != '\0' || errno) {
        fprintf(stderr, "%s: --%s '%s': expected an integer in 0..2^64-1\n", g_prog, flag, text);
        return ERR_ARG;
    }
    *out = (uint64_t)v;
    return 0;
}

int flags_double(const char *flag, const char *text, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (*text == '\0' || *end != '\0' || errno || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "%s: --%s '%s': expected a number in [%g, %g]\n", g_prog, flag, text, lo,
                hi);
        return ERR_ARG;
    }
    *out = v;
    return 0;
}

int flags_float(const char *flag, const char *text, double lo, double hi, float *out)
{
    double v;
    int    rc = flags_double(flag, text, lo, hi, &v);
    if (rc == 0) *out = (float)v;
    return rc;
}

static const char *const k_level_names[] = {"error", "warn", "info", "debug", NULL};

/* "a, b or c" of a NULL-terminated list. */
static void join_or(const char *const *names, char *out, size_t cap)
{
    size_t at = 0;
    out[0] = '\0';
    for (int i = 0; names[i] && at < cap; i++) {
        const char *sep = i == 0 ? "" : names[i + 1] ? ", " : " or ";
        int         n = snprintf(out + at, cap - at, "%s%s", sep, names[i]);
        if (n < 0) break;
        at += (size_t)n;
    }
}

/* The index of text in names, or -1 after naming the flag and the choices. */
static int find_choice(const char *flag, const char *text, const char *const *names)
{
    for (int i = 0; names[i]; i++)
        if (!strcmp(text, names[i])) return i;
    char list[256];
    join_or(names, list, sizeof list);
    fprintf(stderr, "%s: --%s '%s': expected %s\n", g_prog, flag, text, list);
    return -1;
}

int flags_log_level(const char *flag, const char *text, int *out)
{
    static const int levels[] = {LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG};
    int              i = find_choice(flag, text, k_level_names);
    if (i < 0) return ERR_ARG;
    *out = levels[i];
    return 0;
}

/* Parses text into the field of row f. */
static int parse_value(const Flag *f, const char *text)
{
    switch (f->type) {
    case FLAG_T_INT:
        return flags_int(f->name, text, (long)f->lo, (long)f->hi, f->ptr);
    case FLAG_T_LONG:
        return flags_long(f->name, text, (long)f->lo, (long)f->hi, f->ptr);
    case FLAG_T_U64: {
        if (f->hi <= 0) return flags_u64(f->name, text, f->ptr);
        long v;
        int  rc = flags_long(f->name, text, (long)f->lo, (long)f->hi, &v);
        if (rc == 0) *(uint64_t *)f->ptr = (uint64_t)v;
        return rc;
    }
    case FLAG_T_FLOAT:
        return flags_float(f->name, text, f->lo, f->hi, f->ptr);
    case FLAG_T_DOUBLE:
        return flags_double(f->name, text, f->lo, f->hi, f->ptr);
    case FLAG_T_STRING: {
        size_t n = strlen(text);
        if (f->hi > 0 && (n < (size_t)f->lo || n > (size_t)f->hi)) {
            fprintf(stderr, "%s: --%s '%s': expected %ld..%ld characters\n", g_prog, f->name, text,
                    (long)f->lo, (long)f->hi);
            return ERR_ARG;
        }
        *(const char **)f->ptr = text;
        return 0;
    }
    case FLAG_T_PATH:
        *(const char **)f->ptr = *text ? text : NULL;
        return 0;
    case FLAG_T_CHOICE: {
        int i = find_choice(f->name, text, f->choices);
        if (i < 0) return ERR_ARG;
        *(int *)f->ptr = i;
        return 0;
    }
    case FLAG_T_LOG_LEVEL:
        return flags_log_level(f->name, text, f->ptr);
    case FLAG_T_FUNC:
        return f->parse(text, f->ptr);
    case FLAG_T_BOOL:
        *(bool *)f->ptr = true;
        return 0;
    default:
        CHECK(!"flag row of an unknown type");
        return ERR_ARG;
    }
}

/* The field's value as --help and the config line show it. */
static void show_value(const Flag *f, char *out, size_t cap)
{
    const void *p = f->ptr;
    int         i;
    switch (f->type) {
    case FLAG_T_INT:
        snprintf(out, cap, "%d", *(const int *)p);
        break;
    case FLAG_T_LONG:
        snprintf(out, cap, "%ld", *(const long *)p);
        break;
    case FLAG_T_U64:
        snprintf(out, cap, "%llu", (unsigned long long)*(const uint64_t *)p);
        break;
    case FLAG_T_FLOAT:
        snprintf(out, cap, "%g", (double)*(const float *)p);
        break;
    case FLAG_T_DOUBLE:
        snprintf(out, cap, "%g", *(const double *)p);
        break;
    case FLAG_T_BOOL:
        snprintf(out, cap, "%s", *(const bool *)p ? "on" : "off");
        break;
    case FLAG_T_STRING:
    case FLAG_T_PATH:
        snprintf(out, cap, "%s", *(const char *const *)p ? *(const char *const *)p : "none");
        break;
    case FLAG_T_CHOICE:
        i = *(const int *)p;
        for (int k = 0; k <= i; k++)
            if (!f->choices[k]) i = -1;
        snprintf(out, cap, "%s", i >= 0 ? f->choices[i] : "none");
        break;
    case FLAG_T_LOG_LEVEL:
        i = *(const int *)p;
        snprintf(out, cap, "%s", i >= LOG_ERROR && i <= LOG_DEBUG ? k_level_names[i] : "$RLHF_LOG");
        break;
    case FLAG_T_FUNC:
        if (f->show)
            f->show(p, out, cap);
        else
            snprintf(out, cap, "?");
        break;
    default:
        snprintf(out, cap, "?");
    }
}

static bool is_flag(const Flag *f)
{
    return f->type != FLAG_T_SECTION;
}

int flags_parse(FlagsSpec *spec, int argc, char **argv)
{
    static struct option opts[FLAGS_MAX + 2];
    int                  n = 0, k = 0;
    flags_set_prog(spec->prog);
    optind = 0; /* GNU getopt: start afresh, so a table may be parsed again (tests) */
    for (; spec->flags[n].type != FLAG_T_END; n++) {
        Flag *f = &spec->flags[n];
        f->at = 0;
        if (!is_flag(f)) continue;
        CHECK(k < FLAGS_MAX && f->name && f->help);
        opts[k++] =
            (struct option){f->name, f->type == FLAG_T_BOOL ? no_argument : required_argument, NULL,
                            FLAG_OPT_BASE + n};
    }
    opts[k++] = (struct option){"help", no_argument, NULL, 'h'};
    opts[k] = (struct option){NULL, 0, NULL, 0};
    int c, seq = 0, n_args = 0;
    while ((c = getopt_long(argc, argv, spec->is_h_help ? "h" : "", opts, NULL)) != -1) {
        if (c == 'h') {
            flags_usage(spec, stdout);
            return FLAGS_HELP;
        }
        if (c < FLAG_OPT_BASE || c >= FLAG_OPT_BASE + n) {
            /* getopt_long has named the flag. */
            flags_usage(spec, stderr);
            return ERR_ARG;
        }
        Flag *f = &spec->flags[c - FLAG_OPT_BASE];
        if (!f->at) f->at = ++seq;
        int rc = parse_value(f, optarg ? optarg : "");
        if (rc) return rc;
    }
    for (; optind < argc; optind++) {
        if (!spec->args || n_args == spec->n_args_max) {
            fprintf(stderr, "%s: unexpected argument '%s'\n", spec->prog, argv[optind]);
            return ERR_ARG;
        }
        spec->args[n_args++] = argv[optind];
    }
    if (spec->check && spec->check(spec, spec->check_ctx)) return ERR_ARG;
    return FLAGS_RUN;
}

/* Prints text with every line after the first indented by indent spaces. */
static void print_indented(FILE *f, const char *text, int indent)
{
    for (const char *p = text; *p; p++) {
        fputc(*p, f);
        if (*p == '\n' && p[1]) fprintf(f, "%*s", indent, "");
    }
}

void flags_usage(const FlagsSpec *spec, FILE *f)
{
    const char *syn = spec->synopsis ? spec->synopsis : "[flags]";
    fprintf(f, "usage: %s ", spec->prog);
    for (const char *p = syn; *p; p++) {
        fputc(*p, f);
        if (*p == '\n' && p[1]) fprintf(f, "       %s ", spec->prog);
    }
    fputc('\n', f);
    if (spec->about) fputs(spec->about, f);
    /* The help column: past the longest "--name ARG", within reason. */
    int width = 20;
    for (const Flag *r = spec->flags; r->type != FLAG_T_END; r++) {
        if (!is_flag(r)) continue;
        int w = 2 + 2 + (int)strlen(r->name) + (r->arg ? 1 + (int)strlen(r->arg) : 0) + 2;
        if (w > width && w <= 30) width = w;
    }
    for (const Flag *r = spec->flags; r->type != FLAG_T_END; r++) {
        if (!is_flag(r)) {
            fprintf(f, "%s\n", r->name);
            continue;
        }
        char head[128], def[256];
        snprintf(head, sizeof head, "  --%s%s%s", r->name, r->arg ? " " : "", r->arg ? r->arg : "");
        fprintf(f, "%-*s", width, head);
        if ((int)strlen(head) >= width) fputc(' ', f);
        print_indented(f, r->help, width);
        if (r->def && r->def[0] == '(') {
            fprintf(f, " %s\n", r->def);
            continue;
        }
        if (r->def)
            snprintf(def, sizeof def, "%s", r->def);
        else
            show_value(r, def, sizeof def);
        fprintf(f, " (default ");
        print_indented(f, def, width);
        fprintf(f, ")\n");
    }
    fprintf(f, "%-*s%s\n", width, "  --help", "this text");
    if (spec->epilog) fputs(spec->epilog, f);
}

void flags_format_config(const FlagsSpec *spec, char *out, size_t cap)
{
    size_t at = 0;
    out[0] = '\0';
    for (const Flag *r = spec->flags; r->type != FLAG_T_END && at < cap; r++) {
        if (!is_flag(r)) continue;
        char v[512];
        show_value(r, v, sizeof v);
        int n = snprintf(out + at, cap - at, "%s%s=%s", at ? " " : "", r->name, v);
        if (n < 0) break;
        at += (size_t)n;
    }
}

int flags_at(const FlagsSpec *spec, const char *name)
{
    for (const Flag *r = spec->flags; r->type != FLAG_T_END; r++)
        if (is_flag(r) && !strcmp(r->name, name)) return r->at;
    CHECK(!"flags_at: no such flag in the table");
    return 0;
}
