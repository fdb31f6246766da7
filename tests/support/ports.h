/* ports: free loopback TCP ports for tests that start daemons.
 *
 * A port free when picked can still be taken before the daemon binds it:
 * callers start over on other ports when a daemon logs "Address already in
 * use". No ownership; no errors beyond the -1 of ports_pick. Thread-safe. */
#ifndef RLHF_TEST_PORTS_H
#define RLHF_TEST_PORTS_H

#include <stdbool.h>

/* True if a TCP socket can bind 127.0.0.1:port right now. */
bool ports_is_free(int port);
/* A random block of n consecutive ports free right now, starting at lo
 * plus a multiple of 10, ending below hi, and clear of 5550..5609 and
 * 27000..28099, which other runs on this machine use. Returns the first
 * port, or -1 when 500 tries found none. */
int ports_pick(int n, int lo, int hi);

#endif
