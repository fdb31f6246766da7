/* cluster_cmd: the command lines of a cluster on one machine, written once
 * for `rlhf run` and the cluster benchmark (tests/bench/bench_cluster.c).
 *
 * The cluster uses the port layout of common/net/endpoints.h from a first
 * port: the learner binds lease, weights, results and snapshot; a reward
 * server binds its samples port and connects to results; an actor connects
 * to lease, weights, snapshot and the reward servers' samples ports. The
 * functions here only build argument vectors; starting the programs is the
 * caller's (deploy/launch.h, or tests/support/proc.h in a test).
 *
 * Ownership: a ClusterCmd owns its strings (copies of what it was given);
 * cluster_cmd_free releases them. Threading: none. Errors: none (an
 * allocation failure aborts, as xmalloc does). */
#ifndef RLHF_CLUSTER_CMD_H
#define RLHF_CLUSTER_CMD_H

/* The loopback endpoints of a cluster, "tcp://127.0.0.1:PORT". */
typedef struct {
    char lease[48];
    char weights[48];
    char samples[48]; /* the default layout's one reward server */
    char results[48];
    char snapshot[48];
} ClusterEndpoints;

/* The default layout (common/net/endpoints.h) moved to start at port_base. */
void cluster_endpoints(ClusterEndpoints *e, int port_base);

/* One command line. Zero-initialise ({0}) before the first use. */
typedef struct {
    char **argv; /* argc entries and a NULL; argv[0] is the program's path */
    int    argc;
    int    cap;
} ClusterCmd;

/* Appends one printf-formatted argument. */
void cluster_cmd_add(ClusterCmd *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends flag, then its printf-formatted value (two arguments). */
void cluster_cmd_flag(ClusterCmd *c, const char *flag, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Releases the strings and the vector and zeroes c. No-op on an empty c. */
void cluster_cmd_free(ClusterCmd *c);

/* What a learner run writes and how long it is. */
typedef struct {
    const char *init;     /* warm-start checkpoint directory; or */
    const char *model;    /* a pretrained GGUF model (--model), NULL = none: --init */
    const char *ckpt_dir; /* its checkpoints */
    const char *metrics;  /* its per-step metrics (JSON lines) */
    const char *summary;  /* its summary (JSON) */
    int         steps;    /* optimizer steps */
    int         seed;
    int         eval_n; /* held-out problems evaluated before and after */
} ClusterLearnerRun;

/* c := bin_dir/rlhf-learner binding the endpoints of e, with run's flags
 * (--model when run names one, else --init). The caller may add more flags
 * with cluster_cmd_flag. */
void cluster_cmd_learner(ClusterCmd *c, const char *bin_dir, const ClusterEndpoints *e,
                         const ClusterLearnerRun *run);
/* c := bin_dir/rlhf-reward binding samples, pushing to results, with the
 * id "reward-INDEX". */
void cluster_cmd_reward(ClusterCmd *c, const char *bin_dir, const char *samples,
                        const char *results, int index);
/* c := bin_dir/rlhf-actor on the learner endpoints of e and the reward
 * servers' samples endpoints (comma-separated), with the id "actor-INDEX"
 * and the seed seed * 100 + index, so each actor of a seeded cluster
 * samples its own stream. */
void cluster_cmd_actor(ClusterCmd *c, const char *bin_dir, const ClusterEndpoints *e,
                       const char *samples, int index, int seed);

#endif
