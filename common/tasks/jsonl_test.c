/* jsonl's self-test through a reader of its own (records need an integer
 * "n" >= 0): the common problems and the reader's counted apart and named
 * with the reader's names at file:line, blank lines, CRLF and a byte-order
 * mark, records read back by index with their lines, the mostly-bad rule,
 * and a record edited in place refused on reading. (dataset_test covers the
 * same machinery under the prompt datasets: long lines, a 40 MB file.) */
#include "common/tasks/jsonl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/fileio.h"
#include "common/base/log.h"
#include "tests/support/expect.h"
#include "tests/support/testfs.h"
#include "tests/test_list.h"

enum { BAD_N = JSONL_N_COMMON, N_PROBLEMS };
static const char *const k_names[N_PROBLEMS] = {"ok", "not JSON", "not a JSON object",
                                                "line too long", "bad n"};

typedef struct {
    int calls;
} Ctx;

static int check_n(void *ctx, const json_t *obj, char *why, size_t wl)
{
    ((Ctx *)ctx)->calls++;
    const json_t *n = json_object_get(obj, "n");
    if (!json_is_integer(n) || json_integer_value(n) < 0) {
        snprintf(why, wl, "\"n\" is %s, expected an integer >= 0",
                 n ? jsonl_type_name(n) : "missing");
        return BAD_N;
    }
    return 0;
}

int jsonl_selftest(bool verbose)
{
    char dir[256];
    if (!EXPECT(testfs_tmpdir_new("jsonl", dir, sizeof dir) == 0, "no temp directory"))
        return expect_end();
    int level = log_level(); /* the warnings naming bad records are what is checked */
    log_init("jsonl", level > LOG_WARN ? level : LOG_WARN);
    char path[512];
    testfs_path(path, sizeof path, "%s/n.jsonl", dir);
    const char *text = "\xEF\xBB\xBF{\"n\": 1}\r\n" /* 1: good, BOM and CRLF */
                       "\n"                         /* 2: blank */
                       "{\"n\": \"x\"}\n"           /* 3: bad n */
                       "[1]\n"                      /* 4: not an object */
                       "{\"n\": 2\n"                /* 5: not JSON */
                       "  \t\n"                     /* 6: blank */
                       "{\"n\": 3, \"m\": {}}";     /* 7: good, no newline */
    testfs_write(path, text, strlen(text));
    Ctx       ctx = {0};
    JsonlOpts o = {.what = "nreader",
                   .problem_names = k_names,
                   .n_problems = N_PROBLEMS,
                   .too_many = BAD_N,
                   .max_bad_percent = 60,
                   .check = check_n,
                   .check_ctx = &ctx};
    Jsonl    *j = NULL;
    fileio_capture_begin();
    int   rc = jsonl_open(path, &o, &j);
    char *log = fileio_capture_end(verbose);
    if (!EXPECT(rc == 0 && j, "jsonl_open: %s, log '%s'", err_str(rc), log)) {
        free(log);
        testfs_tmpdir_remove(dir);
        log_init("jsonl", level);
        return expect_end();
    }
    JsonlStats st;
    jsonl_stats(j, &st);
    EXPECT(st.lines == 7 && st.blank == 2 && st.good == 2 && st.bad == 3 && ctx.calls == 3 &&
               st.bad_by[BAD_N] == 1 && st.bad_by[JSONL_BAD_OBJECT] == 1 &&
               st.bad_by[JSONL_BAD_JSON] == 1 && st.bytes == strlen(text),
           "stats: %" PRIu64 " lines, %" PRIu64 " blank, %" PRIu64 " good, %" PRIu64
           " bad, %d checks",
           st.lines, st.blank, st.good, st.bad, ctx.calls);
    char        want[600];
    const char *lines[] = {":3: bad n: \"n\" is a string",
                           ":4: not a JSON object: the line is an "
                           "array",
                           ":5: not JSON:"};
    for (int i = 0; i < 3; i++) {
        snprintf(want, sizeof want, "%s%s", path, lines[i]);
        EXPECT(strstr(log, want), "no log line '%s' in '%s'", want, log);
    }
    EXPECT(strstr(log, "nreader: '") && strstr(log, "3 of 5 records skipped as bad (not JSON 1, "
                                                    "not a JSON object 1, bad n 1)"),
           "no summary by problem in '%s'", log);
    free(log);
    char sum[200];
    jsonl_problems_summary(j, sum, sizeof sum);
    EXPECT(!strcmp(sum, "not JSON 1, not a JSON object 1, bad n 1"), "summary '%s'", sum);
    json_t *obj = NULL;
    rc = jsonl_read(j, 1, &obj);
    EXPECT(rc == 0 && json_integer_value(json_object_get(obj, "n")) == 3 && jsonl_line(j, 0) == 1 &&
               jsonl_line(j, 1) == 7,
           "record 1: rc %d, lines %" PRIu64 " and %" PRIu64, rc, jsonl_line(j, 0),
           jsonl_line(j, 1));
    json_decref(obj);
    rc = jsonl_read(j, 0, &obj);
    EXPECT(rc == 0 && json_integer_value(json_object_get(obj, "n")) == 1, "record 0 (BOM): rc %d",
           rc);
    json_decref(obj);
    /* Edited in place: the first record's bytes are no longer JSON. */
    FILE *f = fopen(path, "r+");
    if (f) {
        fseek(f, 3, SEEK_SET);
        fputs("}}}", f);
        fclose(f);
    }
    fileio_capture_begin();
    rc = jsonl_read(j, 0, &obj);
    log = fileio_capture_end(verbose);
    snprintf(want, sizeof want, "nreader: %s:1: not JSON", path);
    EXPECT(rc == ERR_FORMAT && !obj && strstr(log, want) && strstr(log, "changed since"),
           "edited record: %s, log '%s'", err_str(rc), log);
    free(log);
    jsonl_free(&j);
    EXPECT(!j, "jsonl_free left the pointer");
    /* 3 bad of 5 is 60%: refused at 59. */
    testfs_write(path, text, strlen(text));
    o.max_bad_percent = 59;
    fileio_capture_begin();
    rc = jsonl_open(path, &o, &j);
    log = fileio_capture_end(verbose);
    EXPECT(rc == ERR_FORMAT && !j && strstr(log, "refusing the file"),
           "60%% bad at a limit of 59%%: %s, log '%s'", err_str(rc), log);
    free(log);
    testfs_tmpdir_remove(dir);
    log_init("jsonl", level);
    return expect_end();
}
