/* rlhf-reward: the reward server. Binds a PULL for SampledGroups from actors,
 * scores each completion (built-in "arith" scorer by default) on worker
 * threads and pushes ScoredGroups to the learner's results endpoint. Several
 * servers may run; each binds its own samples endpoint and actors connect
 * to all of them. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/flags.h"
#include "common/base/log.h"
#include "reward_server/reward.h"

typedef struct {
    RewardConfig reward;
    const char  *log_level;
} RewardArgs;

static const RewardArgs k_defaults = {
    .reward = {.samples = "tcp://127.0.0.1:5557",
               .results = "tcp://127.0.0.1:5558",
               .threads = 2,
               .id = "reward-0",
               .format_bonus = 0.0f,
               .status_every_s = 5.0},
    .log_level = "info",
};

static volatile sig_atomic_t g_stop = 0;

static void on_signal(int sig)
{
    (void)sig;
    if (g_stop) _exit(130); /* a second signal forces an immediate exit */
    g_stop = 1;
}

static void usage(FILE *f, const char *prog)
{
    const RewardConfig *d = &k_defaults.reward;
    fprintf(f,
            "usage: %s [flags]\n"
            "Reward server: scores SampledGroups from actors, sends ScoredGroups to the learner.\n"
            "  --samples EP        endpoint to bind for actors' samples (default %s)\n"
            "  --results EP        learner's results endpoint to connect (default %s)\n"
            "  --threads N         scoring threads, 1..%d (default %d)\n"
            "  --id NAME           this server's name in logs (default %s)\n"
            "  --format-bonus X    arith: reward added for an integer answer, 0..1 (default %g)\n"
            "  --model PATH.gguf   decode with this model's BPE tokenizer (the chat task)\n"
            "                      instead of the char tokenizer\n"
            "  --status-every S    seconds between status lines, 0 = off (default %g)\n"
            "  --log-level L       error, warn, info or debug (default %s)\n"
            "  --help              this text\n",
            prog, d->samples, d->results, REWARD_MAX_THREADS, d->threads, d->id, d->format_bonus,
            d->status_every_s, k_defaults.log_level);
}

static int parse_args(int argc, char **argv, RewardArgs *a, int *level)
{
    static const struct option opts[] = {{"samples", required_argument, 0, 's'},
                                         {"results", required_argument, 0, 'r'},
                                         {"threads", required_argument, 0, 't'},
                                         {"id", required_argument, 0, 'i'},
                                         {"format-bonus", required_argument, 0, 'f'},
                                         {"model", required_argument, 0, 'm'},
                                         {"status-every", required_argument, 0, 'S'},
                                         {"log-level", required_argument, 0, 'l'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    *a = k_defaults;
    int    c;
    double v;
    if (flags_log_level("log-level", a->log_level, level)) return ERR_ARG;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int rc = 0;
        switch (c) {
        case 's':
            a->reward.samples = optarg;
            break;
        case 'r':
            a->reward.results = optarg;
            break;
        case 't':
            if (!(rc = flags_double("threads", optarg, 1, REWARD_MAX_THREADS, &v))) {
                a->reward.threads = (int)v;
                if (v != (double)a->reward.threads) {
                    fprintf(stderr, "rlhf-reward: --threads '%s': expected an integer\n", optarg);
                    rc = ERR_ARG;
                }
            }
            break;
        case 'i':
            a->reward.id = optarg;
            break;
        case 'f':
            if (!(rc = flags_double("format-bonus", optarg, 0, 1, &v)))
                a->reward.format_bonus = (float)v;
            break;
        case 'm':
            a->reward.model_path = optarg;
            break;
        case 'S':
            rc = flags_double("status-every", optarg, 0, 86400, &a->reward.status_every_s);
            break;
        case 'l':
            a->log_level = optarg;
            rc = flags_log_level("log-level", optarg, level);
            break;
        case 'h':
            usage(stdout, argv[0]);
            exit(0);
        default:
            usage(stderr, argv[0]);
            return ERR_ARG;
        }
        if (rc) {
            usage(stderr, argv[0]);
            return rc;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "rlhf-reward: unexpected argument '%s'\n", argv[optind]);
        usage(stderr, argv[0]);
        return ERR_ARG;
    }
    return 0;
}

int main(int argc, char **argv)
{
    RewardArgs a;
    int        level = LOG_INFO;
    flags_set_prog("rlhf-reward");
    if (parse_args(argc, argv, &a, &level)) return 2;
    log_init("reward", level);
    const RewardConfig *c = &a.reward;
    log_info("config: samples=%s results=%s threads=%d id=%s format-bonus=%g model=%s "
             "status-every=%g log-level=%s",
             c->samples, c->results, c->threads, c->id, c->format_bonus,
             c->model_path ? c->model_path : "-", c->status_every_s, a.log_level);

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    Reward *r = reward_new(c);
    if (!r) return 1;
    int rc = reward_run(r, &g_stop);
    reward_free(&r);
    log_info("shut down");
    return rc ? 1 : 0;
}
