#include "deploy/cluster_cmd.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/net/endpoints.h"

void cluster_endpoints(ClusterEndpoints *e, int port_base)
{
    int P = port_base;
    snprintf(e->lease, sizeof e->lease, ENDPOINT_LOOPBACK_FMT,
             P + ENDPOINT_OFF(ENDPOINT_PORT_LEASE));
    snprintf(e->weights, sizeof e->weights, ENDPOINT_LOOPBACK_FMT,
             P + ENDPOINT_OFF(ENDPOINT_PORT_WEIGHTS));
    snprintf(e->samples, sizeof e->samples, ENDPOINT_LOOPBACK_FMT,
             P + ENDPOINT_OFF(ENDPOINT_PORT_SAMPLES));
    snprintf(e->results, sizeof e->results, ENDPOINT_LOOPBACK_FMT,
             P + ENDPOINT_OFF(ENDPOINT_PORT_RESULTS));
    snprintf(e->snapshot, sizeof e->snapshot, ENDPOINT_LOOPBACK_FMT,
             P + ENDPOINT_OFF(ENDPOINT_PORT_SNAPSHOT));
}

static void add_v(ClusterCmd *c, const char *fmt, va_list ap)
{
    char buf[PATH_MAX + 64];
    int  n = vsnprintf(buf, sizeof buf, fmt, ap);
    CHECK(n >= 0 && (size_t)n < sizeof buf);
    if (c->argc + 2 > c->cap) {
        c->cap = c->cap ? 2 * c->cap : 32;
        c->argv = xrealloc(c->argv, (size_t)c->cap * sizeof *c->argv);
    }
    c->argv[c->argc++] = xstrdup(buf);
    c->argv[c->argc] = NULL;
}

void cluster_cmd_add(ClusterCmd *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_v(c, fmt, ap);
    va_end(ap);
}

void cluster_cmd_flag(ClusterCmd *c, const char *flag, const char *fmt, ...)
{
    cluster_cmd_add(c, "%s", flag);
    va_list ap;
    va_start(ap, fmt);
    add_v(c, fmt, ap);
    va_end(ap);
}

void cluster_cmd_free(ClusterCmd *c)
{
    for (int i = 0; i < c->argc; i++) free(c->argv[i]);
    free(c->argv);
    memset(c, 0, sizeof *c);
}

void cluster_cmd_learner(ClusterCmd *c, const char *bin_dir, const ClusterEndpoints *e,
                         const ClusterLearnerRun *run)
{
    cluster_cmd_add(c, "%s/rlhf-learner", bin_dir);
    cluster_cmd_flag(c, "--lease", "%s", e->lease);
    cluster_cmd_flag(c, "--weights", "%s", e->weights);
    cluster_cmd_flag(c, "--results", "%s", e->results);
    cluster_cmd_flag(c, "--snapshot", "%s", e->snapshot);
    if (run->model)
        cluster_cmd_flag(c, "--model", "%s", run->model);
    else
        cluster_cmd_flag(c, "--init", "%s", run->init);
    cluster_cmd_flag(c, "--ckpt-dir", "%s", run->ckpt_dir);
    cluster_cmd_flag(c, "--metrics", "%s", run->metrics);
    cluster_cmd_flag(c, "--summary", "%s", run->summary);
    cluster_cmd_flag(c, "--steps", "%d", run->steps);
    cluster_cmd_flag(c, "--seed", "%d", run->seed);
    cluster_cmd_flag(c, "--eval-n", "%d", run->eval_n);
}

void cluster_cmd_reward(ClusterCmd *c, const char *bin_dir, const char *samples,
                        const char *results, int index)
{
    cluster_cmd_add(c, "%s/rlhf-reward", bin_dir);
    cluster_cmd_flag(c, "--samples", "%s", samples);
    cluster_cmd_flag(c, "--results", "%s", results);
    cluster_cmd_flag(c, "--id", "reward-%d", index);
}

void cluster_cmd_actor(ClusterCmd *c, const char *bin_dir, const ClusterEndpoints *e,
                       const char *samples, int index, int seed)
{
    cluster_cmd_add(c, "%s/rlhf-actor", bin_dir);
    cluster_cmd_flag(c, "--lease", "%s", e->lease);
    cluster_cmd_flag(c, "--weights", "%s", e->weights);
    cluster_cmd_flag(c, "--snapshot", "%s", e->snapshot);
    cluster_cmd_flag(c, "--reward", "%s", samples);
    cluster_cmd_flag(c, "--id", "actor-%d", index);
    cluster_cmd_flag(c, "--seed", "%d", seed * 100 + index);
}
