/* rlhf-actor: the rollout actor daemon. Fetches the learner's weights,
 * asks it for leases, samples G completions per prompt and pushes the
 * groups to the reward servers, following weight updates, until SIGINT or
 * SIGTERM. The logic lives in actor/actor.c. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "actor/actor.h"
#include "common/base/err.h"
#include "common/base/flags.h"
#include "common/base/log.h"

static atomic_int g_stop;

static void on_signal(int sig)
{
    /* The first signal asks for a clean stop; a second one means now. */
    if (atomic_exchange(&g_stop, 1)) _exit(128 + sig);
}

static void usage(FILE *f, const char *prog)
{
    const ActorConfig d = ACTOR_DEFAULTS;
    fprintf(f,
            "usage: %s [flags]\n"
            "Rollout actor: fetches the learner's weights, asks it for leases, samples G\n"
            "completions per prompt and pushes them to the reward servers.\n"
            "  --lease EP            learner lease ROUTER to connect to (default %s)\n"
            "  --weights EP          learner weight announcements (PUB) (default %s)\n"
            "  --snapshot EP         learner snapshot ROUTER (default %s)\n"
            "  --reward EP[,EP...]   reward server(s) to push groups to; may be repeated\n"
            "                        (default %s)\n"
            "  --id NAME             actor id (default actor-<pid>)\n"
            "  --batch N             sequences generated together at most (default %d)\n"
            "  --seed S              sampling seed, 0 = derived from the id (default %llu)\n"
            "  --status-every S      seconds between status lines, 0 = none (default %g)\n"
            "  --reply-timeout-ms N  re-send an unanswered lease request after N ms\n"
            "                        (default %d)\n"
            "  --snapshot-timeout-ms N  ask for the snapshot again when no chunk came for\n"
            "                        N ms (default %d)\n"
            "  --log-level L         error, warn, info or debug (default info, or $RLHF_LOG)\n"
            "  --help                this text\n",
            prog, d.lease_ep, d.weights_ep, d.snapshot_ep, d.reward_eps[0], d.batch,
            (unsigned long long)d.seed, d.status_every_s, d.reply_timeout_ms,
            d.snapshot_timeout_ms);
}

/* Appends the comma-separated endpoints of one --reward flag. The strings
 * point into argv, which outlives the actor. */
static int add_rewards(ActorConfig *c, char *list, bool *is_default)
{
    if (*is_default) {
        c->n_reward = 0;
        *is_default = false;
    }
    for (char *save = NULL, *ep = strtok_r(list, ",", &save); ep; ep = strtok_r(NULL, ",", &save)) {
        if (c->n_reward == ACTOR_MAX_REWARD) {
            fprintf(stderr, "rlhf-actor: --reward: more than %d endpoints\n", ACTOR_MAX_REWARD);
            return ERR_ARG;
        }
        c->reward_eps[c->n_reward++] = ep;
    }
    if (c->n_reward == 0) {
        fprintf(stderr, "rlhf-actor: --reward: no endpoint given\n");
        return ERR_ARG;
    }
    return 0;
}

/* Returns 0 to run, 1 after --help, ERR_ARG for a bad command line. */
static int parse_args(int argc, char **argv, ActorConfig *c, int *level)
{
    static const struct option opts[] = {
        {"lease", required_argument, 0, 'l'},
        {"weights", required_argument, 0, 'w'},
        {"snapshot", required_argument, 0, 's'},
        {"reward", required_argument, 0, 'r'},
        {"id", required_argument, 0, 'i'},
        {"batch", required_argument, 0, 'b'},
        {"seed", required_argument, 0, 'S'},
        {"status-every", required_argument, 0, 'e'},
        {"reply-timeout-ms", required_argument, 0, 't'},
        {"snapshot-timeout-ms", required_argument, 0, 'T'},
        {"log-level", required_argument, 0, 'L'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    bool is_default_reward = true;
    int  ch, idx;
    while ((ch = getopt_long(argc, argv, "", opts, &idx)) != -1) {
        long v = 0;
        int  rc = 0;
        switch (ch) {
        case 'l':
            c->lease_ep = optarg;
            break;
        case 'w':
            c->weights_ep = optarg;
            break;
        case 's':
            c->snapshot_ep = optarg;
            break;
        case 'r':
            rc = add_rewards(c, optarg, &is_default_reward);
            break;
        case 'i':
            if (strlen(optarg) == 0 || strlen(optarg) >= ACTOR_MAX_ID) {
                fprintf(stderr, "rlhf-actor: --id '%s': expected 1..%d characters\n", optarg,
                        ACTOR_MAX_ID - 1);
                rc = ERR_ARG;
            }
            c->id = optarg;
            break;
        case 'b':
            rc = flags_long("batch", optarg, 1, 4096, &v);
            c->batch = (int)v;
            break;
        case 'S': {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(optarg, &end, 10);
            if (*optarg == '\0' || *optarg == '-' || *end || errno) {
                fprintf(stderr, "rlhf-actor: --seed '%s': expected an integer in 0..2^64-1\n",
                        optarg);
                rc = ERR_ARG;
            }
            c->seed = (uint64_t)s;
            break;
        }
        case 'e': {
            char *end;
            errno = 0;
            double s = strtod(optarg, &end);
            if (*optarg == '\0' || *end || errno || !(s >= 0 && s <= 86400)) {
                fprintf(stderr, "rlhf-actor: --status-every '%s': expected seconds in 0..86400\n",
                        optarg);
                rc = ERR_ARG;
            }
            c->status_every_s = s;
            break;
        }
        case 't':
            rc = flags_long("reply-timeout-ms", optarg, 10, 3600000, &v);
            c->reply_timeout_ms = (int)v;
            break;
        case 'T':
            rc = flags_long("snapshot-timeout-ms", optarg, 10, 3600000, &v);
            c->snapshot_timeout_ms = (int)v;
            break;
        case 'L':
            rc = flags_log_level("log-level", optarg, level);
            break;
        case 'h':
            usage(stdout, argv[0]);
            return 1;
        default:
            usage(stderr, argv[0]);
            return ERR_ARG; /* getopt named the flag */
        }
        if (rc) return rc;
    }
    if (optind < argc) {
        fprintf(stderr, "rlhf-actor: unexpected argument '%s'\n", argv[optind]);
        return ERR_ARG;
    }
    return 0;
}

int main(int argc, char **argv)
{
    ActorConfig cfg = ACTOR_DEFAULTS;
    int         level = -1;
    flags_set_prog("rlhf-actor");
    int rc = parse_args(argc, argv, &cfg, &level);
    if (rc == 1) return 0;
    if (rc) return 2;
    log_init("actor", level);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) || sigaction(SIGTERM, &sa, NULL)) {
        log_error("rlhf-actor: sigaction: %s", strerror(errno));
        return 1;
    }
    /* A vanished peer must show up as a send error, not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    Actor *a = actor_new(&cfg);
    if (!a) return 1;
    rc = actor_run(a, &g_stop);
    actor_free(&a);
    return rc == 0 ? 0 : 1;
}
