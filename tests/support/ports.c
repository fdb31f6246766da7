#include "tests/support/ports.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/base/rng.h"

bool ports_is_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static bool overlaps(int lo, int hi, int a, int b)
{
    return lo < b && a < hi;
}

int ports_pick(int n, int lo, int hi)
{
    if (n <= 0 || hi - lo < n) return -1;
    uint64_t seed;
    if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed)
        seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 40);
    Rng r;
    rng_seed(&r, seed);
    /* Only the picks depend on it: any seed will do. */
    uint32_t n_bases = (uint32_t)((hi - lo) / 10);
    for (int tries = 0; tries < 500; tries++) {
        int base = lo + 10 * (int)rng_below(&r, n_bases ? n_bases : 1);
        if (base + n > hi || overlaps(base, base + n, 27000, 28100) ||
            overlaps(base, base + n, 5550, 5610))
            continue;
        bool ok = true;
        for (int i = 0; i < n && ok; i++) ok = ports_is_free(base + i);
        if (ok) return base;
    }
    return -1;
}
