/* rlhf-keygen: makes CURVE key pairs in ZeroMQ's certificate format (the
 * files CZMQ's zcert reads and writes) for a deployment's keys directory
 * (common/net/auth.h has the layout, README "Keys" the recipe):
 *
 *   rlhf-keygen --dir keys                 learner, reward and actor key pairs
 *   rlhf-keygen --dir keys --name actor-7  one more key pair
 *
 * Each NAME gets DIR/NAME.key (both keys, mode 0600) and DIR/NAME.pub, and
 * unless --no-authorize a copy of the public certificate in
 * DIR/authorized/NAME.pub, the allow-list the servers read (the clients
 * reward and actor of the set; the learner is no one's client). Existing files
 * are never overwritten. Prints the paths written. Exit status: 0 done,
 * 1 failed, 2 bad flags. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/prog.h"
#include "common/net/auth.h"
#include "common/net/curve.h"

typedef struct {
    const char *dir;             /* keys directory, required */
    const char *name;            /* one key pair; NULL = the standard set */
    bool        is_no_authorize; /* do not add the public key to DIR/authorized */
    int         log_level;
} KeygenArgs;

static int check(const FlagsSpec *spec, void *ctx)
{
    (void)spec;
    const KeygenArgs *a = ctx;
    if (!a->dir) {
        fprintf(stderr, "rlhf-keygen: --dir is required (see --help)\n");
        return ERR_ARG;
    }
    return 0;
}

static int make_dir(const char *path, mode_t mode)
{
    if (mkdir(path, mode) == 0 || errno == EEXIST) return 0;
    log_error("rlhf-keygen: mkdir %s: %s", path, strerror(errno));
    return ERR_IO;
}

static int make_one(const KeygenArgs *a, const char *name, bool is_authorized)
{
    CurveCert c;
    int       rc = curve_keypair(&c);
    if (!rc) rc = curve_cert_save(&c, a->dir, name);
    if (rc) return rc;
    printf("%s/%s.key\n%s/%s.pub\n", a->dir, name, a->dir, name);
    if (!is_authorized) return 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/authorized/%s.pub", a->dir, name);
    rc = curve_cert_save_public(&c, name, path);
    if (!rc) printf("%s\n", path);
    return rc;
}

int main(int argc, char **argv)
{
    KeygenArgs a = {.dir = NULL, .name = NULL, .is_no_authorize = false, .log_level = LOG_INFO};
    Flag       flags[] = {
              FLAG_PATH("dir", &a.dir, "DIR", "keys directory (created, mode 0700)", .def = "required"),
              FLAG_STRING("name", &a.name, "NAME", "make one key pair DIR/NAME.key, DIR/NAME.pub",
                          .lo = 1, .hi = CURVE_MAX_NAME - 1,
                          .def = "the set: " AUTH_LEARNER ", " AUTH_REWARD ", actor"),
              FLAG_BOOL("no-authorize", &a.is_no_authorize,
                        "do not copy NAME.pub into DIR/authorized (the servers' allow-list)"),
              FLAG_LOG_LEVEL(&a.log_level),
              FLAGS_END,
    };
    FlagsSpec spec = {
        .prog = "rlhf-keygen",
        .about = "Makes CURVE key pairs (ZeroMQ certificate files) for the daemons' --keys DIR.\n",
        .epilog =
            "A daemon started with --keys DIR uses DIR/<role>.key (learner, reward, actor;\n"
            "--key-name NAME for another), the servers' DIR/learner.pub and DIR/reward.pub,\n"
            "and lets in only clients whose key is in DIR/authorized. Keep DIR/*.key secret.\n",
        .flags = flags,
        .check = check,
        .check_ctx = &a,
    };
    int rc = prog_start(&spec, argc, argv, "keygen", &a.log_level);
    if (rc != PROG_RUN) return rc;
    if (!curve_is_available()) {
        log_error("rlhf-keygen: this libzmq has no CURVE (zmq_has(\"curve\") is false)");
        return PROG_EXIT_FAIL;
    }
    char auth_dir[4200];
    snprintf(auth_dir, sizeof auth_dir, "%s/authorized", a.dir);
    if (make_dir(a.dir, 0700) || make_dir(auth_dir, 0755)) return PROG_EXIT_FAIL;
    const char *set[] = {AUTH_LEARNER, AUTH_REWARD, "actor"};
    if (a.name) return make_one(&a, a.name, !a.is_no_authorize) ? PROG_EXIT_FAIL : PROG_EXIT_OK;
    for (int i = 0; i < 3; i++)
        /* The learner is no one's client: its key needs no allow-list entry. */
        if (make_one(&a, set[i], !a.is_no_authorize && i > 0)) return PROG_EXIT_FAIL;
    return PROG_EXIT_OK;
}
