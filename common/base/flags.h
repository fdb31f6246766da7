/* flags: a program's command line, declared once as a table.
 *
 * Each row names a long flag, the config field it writes, its range or
 * choices and one line of help; the field's value before parsing is the
 * default --help shows. From the table come the parsing (--name value and
 * --name=value, through getopt_long), the range checks, --help and the
 * "config:" line a program logs at startup:
 *
 *     Flag flags[] = {
 *         FLAG_INT("steps", &cfg.steps, 0, 100000000, "N", "optimizer steps"),
 *         FLAG_BOOL("decoupled", &cfg.decoupled, "decoupled objective"),
 *         FLAGS_END,
 *     };
 *
 * A bad value prints "<prog>: --<flag> '<text>': expected ..." to stderr
 * and the caller exits with status 2 (common/base/prog.h does). Strings are
 * borrowed from argv. The table is the caller's and is written by
 * flags_parse (which rows were given); everything here runs on the main
 * thread only. */
#ifndef RLHF_FLAGS_H
#define RLHF_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    FLAG_T_END = 0,   /* ends a table */
    FLAG_T_SECTION,   /* not a flag: a heading in --help */
    FLAG_T_INT,       /* int in [lo, hi] */
    FLAG_T_LONG,      /* long in [lo, hi] */
    FLAG_T_U64,       /* uint64_t; [lo, hi] when hi > 0, else 0..2^64-1 */
    FLAG_T_FLOAT,     /* finite float in [lo, hi] */
    FLAG_T_DOUBLE,    /* finite double in [lo, hi] */
    FLAG_T_BOOL,      /* takes no value; sets the bool */
    FLAG_T_STRING,    /* const char *; lo..hi characters when hi > 0 */
    FLAG_T_PATH,      /* const char *; '' sets NULL (disabled) */
    FLAG_T_CHOICE,    /* int: the index of the value in choices */
    FLAG_T_LOG_LEVEL, /* int: error, warn, info, debug -> LOG_ERROR..LOG_DEBUG */
    FLAG_T_FUNC,      /* parse(text, ptr) does it; returns 0 or ERR_ARG after printing why */
} FlagType;

typedef struct {
    const char        *name; /* long flag without the dashes; the heading of a section */
    FlagType           type;
    void              *ptr;                    /* the field written */
    double             lo, hi;                 /* range of numbers, length of strings */
    const char *const *choices;                /* FLAG_T_CHOICE: names, NULL-terminated */
    int (*parse)(const char *text, void *ptr); /* FLAG_T_FUNC */
    /* FLAG_T_FUNC: writes the value as --help and the config line show it. */
    void (*show)(const void *ptr, char *out, size_t cap);
    const char *arg;  /* the value in --help ("N", "EP"); NULL for FLAG_T_BOOL */
    const char *help; /* one line; '\n' starts an indented continuation */
    const char *def;  /* default as --help shows it; NULL = the field's value.
                         Text in parentheses replaces "(default ...)" */
    int at;           /* set by flags_parse: argv index of its first use, 0 = unused */
} Flag;

/* Rows. ptr is type-checked against the field type the row writes; extra
 * arguments are designated initializers (.def = "...", .hi = ...). */
#define FLAG_PTR_(p, T) ((void *)(1 ? (p) : (T *)0))
#define FLAG_SECTION(heading)                                                                      \
    {                                                                                              \
        .name = (heading), .type = FLAG_T_SECTION                                                  \
    }
/* The numeric rows: a field of type T written as type t, in [lo_, hi_]. */
#define FLAG_NUM_(t, T, n, p, lo_, hi_, arg_, help_, ...)                                          \
    {                                                                                              \
        .name = (n), .type = (t), .ptr = FLAG_PTR_(p, T), .lo = (lo_), .hi = (hi_), .arg = (arg_), \
        .help = (help_), __VA_ARGS__                                                               \
    }
#define FLAG_INT(n, p, lo_, hi_, arg_, help_, ...)                                                 \
    FLAG_NUM_(FLAG_T_INT, int, n, p, lo_, hi_, arg_, help_, __VA_ARGS__)
#define FLAG_LONG(n, p, lo_, hi_, arg_, help_, ...)                                                \
    FLAG_NUM_(FLAG_T_LONG, long, n, p, lo_, hi_, arg_, help_, __VA_ARGS__)
#define FLAG_U64(n, p, arg_, help_, ...)                                                           \
    {                                                                                              \
        .name = (n), .type = FLAG_T_U64, .ptr = FLAG_PTR_(p, uint64_t), .arg = (arg_),             \
        .help = (help_), __VA_ARGS__                                                               \
    }
#define FLAG_FLOAT(n, p, lo_, hi_, arg_, help_, ...)                                               \
    FLAG_NUM_(FLAG_T_FLOAT, float, n, p, lo_, hi_, arg_, help_, __VA_ARGS__)
#define FLAG_DOUBLE(n, p, lo_, hi_, arg_, help_, ...)                                              \
    FLAG_NUM_(FLAG_T_DOUBLE, double, n, p, lo_, hi_, arg_, help_, __VA_ARGS__)
#define FLAG_BOOL(n, p, help_, ...)                                                                \
    {                                                                                              \
        .name = (n), .type = FLAG_T_BOOL, .ptr = FLAG_PTR_(p, bool), .help = (help_), __VA_ARGS__  \
    }
#define FLAG_STRING(n, p, arg_, help_, ...)                                                        \
    {                                                                                              \
        .name = (n), .type = FLAG_T_STRING, .ptr = FLAG_PTR_(p, const char *), .arg = (arg_),      \
        .help = (help_), __VA_ARGS__                                                               \
    }
#define FLAG_PATH(n, p, arg_, help_, ...)                                                          \
    {                                                                                              \
        .name = (n), .type = FLAG_T_PATH, .ptr = FLAG_PTR_(p, const char *), .arg = (arg_),        \
        .help = (help_), __VA_ARGS__                                                               \
    }
#define FLAG_CHOICE(n, p, choices_, arg_, help_, ...)                                              \
    {                                                                                              \
        .name = (n), .type = FLAG_T_CHOICE, .ptr = FLAG_PTR_(p, int), .choices = (choices_),       \
        .arg = (arg_), .help = (help_), __VA_ARGS__                                                \
    }
/* The rows every program spells the same way: --log-level, and a daemon's
 * --status-every (zero_ says what 0 means: "none", "off"). */
#define FLAG_LOG_LEVEL(p, ...)                                                                     \
    {                                                                                              \
        .name = "log-level", .type = FLAG_T_LOG_LEVEL, .ptr = FLAG_PTR_(p, int), .arg = "L",       \
        .help = "error, warn, info or debug", __VA_ARGS__                                          \
    }
#define FLAG_STATUS_EVERY(p, zero_)                                                                \
    FLAG_DOUBLE("status-every", p, 0, 86400, "S", "seconds between status lines, 0 = " zero_)
#define FLAG_FUNC(n, p, parse_, show_, arg_, help_, ...)                                           \
    {                                                                                              \
        .name = (n), .type = FLAG_T_FUNC, .ptr = (p), .parse = (parse_), .show = (show_),          \
        .arg = (arg_), .help = (help_), __VA_ARGS__                                                \
    }
#define FLAGS_END                                                                                  \
    {                                                                                              \
        .type = FLAG_T_END                                                                         \
    }

/* A program's command line: its table and the text --help wraps it in. */
typedef struct FlagsSpec {
    const char  *prog;     /* name in messages, e.g. "rlhf-actor" */
    const char  *synopsis; /* after "usage: <argv[0]> "; each further line is another form */
    const char  *about;    /* text between the usage line(s) and the flags */
    const char  *epilog;   /* text after the flags; NULL = none */
    Flag        *flags;    /* ended by FLAGS_END */
    const char **args;     /* where positional arguments go; NULL = none allowed */
    int          n_args_max;
    bool         is_h_help; /* -h is --help as well */
    /* Checks across flags after parsing (NULL = none), given this spec (for
     * flags_at) and check_ctx: returns 0, or ERR_ARG after printing the
     * reason to stderr. */
    int (*check)(const struct FlagsSpec *spec, void *ctx);
    void *check_ctx;
} FlagsSpec;

enum { FLAGS_RUN = 0, FLAGS_HELP = 1 };

/* Parses argv into the fields of spec->flags. Returns FLAGS_RUN, FLAGS_HELP
 * after printing --help to stdout, or ERR_ARG after naming the bad flag or
 * value on stderr (usage follows an unknown flag). Uses getopt_long's
 * global state, so one parse at a time. */
int flags_parse(FlagsSpec *spec, int argc, char **argv);

/* --help: the usage line(s) (naming spec->prog), about, every flag with its value name, help
 * and default (the field's current value unless the row says), epilog. */
void flags_usage(const FlagsSpec *spec, FILE *f);

/* Writes "name=value ..." of every flag (the effective config) to out,
 * truncated to cap. */
void flags_format_config(const FlagsSpec *spec, char *out, size_t cap);

/* The argv index where flag name was first given, 0 if it was not. CHECKs
 * that the table has the flag. */
int flags_at(const FlagsSpec *spec, const char *name);

/* Name used in the single-value parsers' messages (borrowed; default "rlhf"). */
void flags_set_prog(const char *prog);

/* Single values, for parsing outside a table; on a bad value each prints
 * "<prog>: --<flag> '<text>': expected ..." and returns ERR_ARG. */
int flags_int(const char *flag, const char *text, long lo, long hi, int *out);
int flags_long(const char *flag, const char *text, long lo, long hi, long *out);
/* A decimal integer in [0, 2^64). */
int flags_u64(const char *flag, const char *text, uint64_t *out);
/* A finite number in [lo, hi]. */
int flags_float(const char *flag, const char *text, double lo, double hi, float *out);
int flags_double(const char *flag, const char *text, double lo, double hi, double *out);
/* error, warn, info or debug -> LOG_ERROR..LOG_DEBUG. */
int flags_log_level(const char *flag, const char *text, int *out);

#endif
