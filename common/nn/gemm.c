/* gemm: the one matrix product (tensor_gemm), its threads and a word on
 * OpenBLAS's kernels. Contracts in tensor.h.
 *
 * Kernels. OpenBLAS picks its kernels for the CPU once, when the library
 * is loaded, or takes them from $OPENBLAS_CORETYPE. The variable is the
 * user's to set, and kept; but a machine that forces AVX2 kernels
 * ("Haswell") on an AVX-512 CPU halves the sgemm rate (the development
 * machine's environment does: 235 against 410-439 GFLOP/s on 2 cores,
 * 2048^3), so the first product logs which kernels run and what the CPU
 * could run.
 *
 * A CPU newer than the library can also be mistaken for an old one:
 * Debian 12's OpenBLAS (0.3.21) runs its generic Prescott (SSE3) kernels on
 * an Emerald Rapids Xeon, sgemm 67 against 335 GFLOP/s with the Cooperlake
 * kernels the CPU can run, a training step 2.8x slower. That is no choice
 * of the user's, so when the variable is unset and the library picked
 * pre-AVX2 kernels on an AVX-512 CPU, the program sets it and executes
 * itself again before main (same pid, arguments and descriptors; the
 * kernels are chosen when the library loads, so nothing less will do).
 * RLHF_BLAS_REEXEC=0 turns this off. */
#include "common/nn/tensor.h"

#include <cblas.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/par.h"
#include "common/nn/cpu.h"

const char *tensor_blas_kernels(void)
{
    return openblas_get_corename();
}

const char *tensor_blas_better_kernels(const char *corename)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    /* The AVX-512 subsets OpenBLAS's SkylakeX kernels use. */
    bool skx = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512cd");
    if (!corename || !skx) return NULL;
    static const char *const avx2[] = {"haswell", "zen", "sandybridge", "nehalem", "prescott"};
    for (size_t i = 0; i < sizeof avx2 / sizeof avx2[0]; i++)
        if (!strcasecmp(corename, avx2[i])) return cpu_has_avx512bf16() ? "COOPERLAKE" : "SKYLAKEX";
#else
    (void)corename;
#endif
    return NULL;
}

bool tensor_blas_kernels_generic(const char *corename)
{
    static const char *const old[] = {"prescott", "core2",  "penryn",     "dunnington", "nehalem",
                                      "atom",     "katmai", "coppermine", "northwood",  "banias"};
    for (size_t i = 0; corename && i < sizeof old / sizeof old[0]; i++)
        if (!strcasecmp(corename, old[i])) return true;
    return false;
}

/* Before main (see the top): re-executes the program with
 * OPENBLAS_CORETYPE set when the library mistook the CPU for an old one.
 * Any failure leaves the program running as it is (and blas_single says
 * which kernels run). */
__attribute__((constructor)) static void blas_fix_misdetected_kernels(void)
{
    const char *off = getenv("RLHF_BLAS_REEXEC");
    if (getenv("OPENBLAS_CORETYPE") || (off && !strcmp(off, "0"))) return;
    const char *core = tensor_blas_kernels(), *better = tensor_blas_better_kernels(core);
    if (!better || !tensor_blas_kernels_generic(core)) return;
    /* The arguments as the kernel keeps them: NUL-separated. */
    static char buf[1 << 16];
    int         fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    size_t  len = 0;
    ssize_t n;
    while (len < sizeof buf - 1 && (n = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    if (len == 0 || len >= sizeof buf - 1) return;
    static char *argv[1024];
    int          argc = 0;
    for (size_t i = 0; i < len && argc < 1023; i += strlen(buf + i) + 1) argv[argc++] = buf + i;
    if (argc == 1023) return;
    argv[argc] = NULL;
    if (setenv("OPENBLAS_CORETYPE", better, 1) != 0) return;
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_CORETYPE"); /* exec failed: run on as we are */
}

typedef struct {
    bool         ta, tb, by_rows;
    int          M, N, K, lda, ldb, ldc;
    float        alpha, beta;
    const float *A, *B;
    float       *C;
} GemmCtx;

static void gemm_range(void *p, size_t i0, size_t i1)
{
    const GemmCtx *g = p;
    int            n = (int)(i1 - i0);
    const float   *A = g->A, *B = g->B;
    float         *C = g->C;
    int            M = g->M, N = g->N;
    if (g->by_rows) {
        A += g->ta ? i0 : i0 * (size_t)g->lda;
        C += i0 * (size_t)g->ldc;
        M = n;
    } else {
        B += g->tb ? i0 * (size_t)g->ldb : i0;
        C += i0;
        N = n;
    }
    cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans, g->tb ? CblasTrans : CblasNoTrans,
                M, N, g->K, g->alpha, A, g->lda, B, g->ldb, g->beta, C, g->ldc);
}

/* Threads. OpenBLAS runs single-threaded in every thread that calls it; the
 * pool splits a product instead (see tensor.h). g_serial:
 * tensor_set_blas_threads(1). */
static pthread_once_t g_blas_once = PTHREAD_ONCE_INIT;
static atomic_bool    g_serial;

static void blas_single(void)
{
    openblas_set_num_threads(1);
    const char *core = tensor_blas_kernels(), *better = tensor_blas_better_kernels(core);
    const char *forced = getenv("OPENBLAS_CORETYPE");
    if (better)
        log_info("blas: OpenBLAS runs its %s kernels%s%s%s on a CPU with AVX-512: "
                 "OPENBLAS_CORETYPE=%s (or unset, where OpenBLAS knows the CPU) runs "
                 "sgemm about 1.8x faster",
                 core, forced ? " (OPENBLAS_CORETYPE=" : "", forced ? forced : "",
                 forced ? ")" : "", better);
    else
        log_debug("blas: OpenBLAS kernels %s", core);
}

/* Below this many multiply-adds a wake-up of the pool costs more than half
 * the product saves. */
#define GEMM_SPLIT_MIN_MACS (1 << 18)

void tensor_gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
                 int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    CHECK(M >= 0 && N >= 0 && K >= 0);
    if (M == 0 || N == 0) return;
    pthread_once(&g_blas_once, blas_single);
    if (!atomic_load_explicit(&g_serial, memory_order_relaxed) &&
        (double)M * N * K >= GEMM_SPLIT_MIN_MACS) {
        /* Rows of C when it has more rows than columns, else columns: each
         * part is one sgemm over the whole K, so parts never share a C element. */
        GemmCtx g = {.ta = trans_a,
                     .tb = trans_b,
                     .by_rows = M >= N,
                     .M = M,
                     .N = N,
                     .K = K,
                     .lda = lda,
                     .ldb = ldb,
                     .ldc = ldc,
                     .alpha = alpha,
                     .beta = beta,
                     .A = A,
                     .B = B,
                     .C = C};
        par_for((size_t)(M >= N ? M : N), 32, gemm_range, &g);
        return;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void tensor_set_blas_threads(int n)
{
    CHECK(n >= 1);
    pthread_once(&g_blas_once, blas_single);
    atomic_store(&g_serial, n == 1);
}

int tensor_blas_threads(void)
{
    return atomic_load(&g_serial) ? 1 : par_threads();
}

void tensor_gemm_naive(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
                       int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double acc = 0.0;
            for (int p = 0; p < K; p++) {
                float a = trans_a ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];
                float b = trans_b ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j];
                acc += (double)a * b;
            }
            float *c = &C[(size_t)i * ldc + j];
            /* beta == 0 must ignore C, which may hold garbage, as BLAS does. */
            *c = (float)(alpha * acc + (beta == 0.0f ? 0.0 : (double)beta * *c));
        }
    }
}
