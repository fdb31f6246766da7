/* endpoints: the default loopback ports of a cluster, defined once. The
 * learner binds lease, weights, results and snapshot; a reward server binds
 * samples and connects to results; an actor connects to lease, weights,
 * snapshot and samples. The ports are consecutive, so a launcher given
 * another first port keeps the layout: port - ENDPOINT_PORT_BASE is the
 * offset. Header only: constants. */
#ifndef RLHF_ENDPOINTS_H
#define RLHF_ENDPOINTS_H

#define ENDPOINT_PORT_LEASE 5555    /* learner ROUTER: LeaseRequest/LeaseGrant */
#define ENDPOINT_PORT_WEIGHTS 5556  /* learner PUB: WeightAnnounce */
#define ENDPOINT_PORT_SAMPLES 5557  /* reward server PULL: SampledGroup */
#define ENDPOINT_PORT_RESULTS 5558  /* learner PULL: ScoredGroup */
#define ENDPOINT_PORT_SNAPSHOT 5559 /* learner ROUTER: SnapshotRequest/WeightChunk */
#define ENDPOINT_PORT_BASE ENDPOINT_PORT_LEASE
#define ENDPOINT_N_PORTS 5
/* `rlhf run` gives reward server i its own samples port, base + 10 + i. */
#define ENDPOINT_OFF_REWARD_FIRST 10
/* Offsets from the first port. */
#define ENDPOINT_OFF(port) ((port)-ENDPOINT_PORT_BASE)

/* Loopback endpoints: a string literal for a port known at compile time,
 * a printf format for one that is not. */
#define ENDPOINT_HOST "tcp://127.0.0.1:"
#define ENDPOINT_STR_(x) #x
#define ENDPOINT_STR(x) ENDPOINT_STR_(x)
#define ENDPOINT_LOOPBACK(port) ENDPOINT_HOST ENDPOINT_STR(port)
#define ENDPOINT_LOOPBACK_FMT ENDPOINT_HOST "%d"

#define ENDPOINT_LEASE ENDPOINT_LOOPBACK(ENDPOINT_PORT_LEASE)
#define ENDPOINT_WEIGHTS ENDPOINT_LOOPBACK(ENDPOINT_PORT_WEIGHTS)
#define ENDPOINT_SAMPLES ENDPOINT_LOOPBACK(ENDPOINT_PORT_SAMPLES)
#define ENDPOINT_RESULTS ENDPOINT_LOOPBACK(ENDPOINT_PORT_RESULTS)
#define ENDPOINT_SNAPSHOT ENDPOINT_LOOPBACK(ENDPOINT_PORT_SNAPSHOT)

#endif
