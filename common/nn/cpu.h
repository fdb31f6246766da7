/* cpu: run-time selection of the vector kernels in the portable build.
 *
 * The default build compiles for this machine (-march=native) and RLHF_HOT is
 * empty. The portable build (make PORTABLE=1: -march=x86-64-v2, which every
 * x86-64 server of the last decade runs, and -DRLHF_PORTABLE) marks the hot
 * vectorisable loops RLHF_HOT: GCC compiles each of them three times, for
 * x86-64-v4 (AVX-512), x86-64-v3 (AVX2, FMA) and the baseline, and the
 * dynamic loader picks one per function when the program starts (an ifunc),
 * from the CPU it runs on. One definition per kernel; the clones differ only
 * in the instructions the compiler may use. BLAS selects its own kernels at
 * run time (gemm.c corrects its choice on CPUs it does not know).
 *
 * Put RLHF_HOT on the function that holds the loop (a par_for range function
 * or a static helper), not on a caller: inlined callees take the clone's
 * target with them, calls out of it do not. */
#ifndef RLHF_CPU_H
#define RLHF_CPU_H

#if defined(RLHF_PORTABLE) && defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RLHF_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RLHF_HOT
#endif

/* A generic vector of VEC_F floats (GCC's vector extension, also clang's):
 * each clone of RLHF_HOT code lowers it to its own registers (one zmm, two
 * ymm, four xmm). Alignment 4, so loads and stores through it may be
 * unaligned. */
#define VEC_F 16
typedef float VecF __attribute__((vector_size(VEC_F * sizeof(float)), aligned(4)));

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <stdbool.h>

/* CPU features the kernels test that not every compiler's
 * __builtin_cpu_supports names (clang 14, the fuzz build's, lacks f16c and
 * avx512bf16): read from CPUID directly. */
static inline bool cpu_has_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}

static inline bool cpu_has_avx512bf16(void)
{
    unsigned a, b, c, d;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5));
}
#endif

#endif
