/* Definitions shared by lif.c, events.c and recurrent.c: reset modes, surrogate numbers and
 * formulas, the per-vector-width copies of the entry points, vector loads, the lowest set bit and the
 * bit mask of the non-zeros of 64 values. */
#ifndef SPIKEGRAD_KERNELS_H
#define SPIKEGRAD_KERNELS_H

#define RESET_SUBTRACT 0
#define RESET_ZERO 1
#define RESET_NONE 2
/* Surrogate numbers: those of spikegrad.kernels._common.SURROGATE_CODES (one numbering of the
 * built-in surrogates for every kernel), of which these kernels compute the four below. */
#define SUR_GIVEN 0 /* surrogate derivatives computed by the caller */
#define SUR_FAST_SIGMOID 1
#define SUR_ATAN 3
#define SUR_TRIANGLE 4
#define SUR_BOXCAR 7
#define ABS(x) ((x) < 0 ? -(x) : (x))
#define INLINE static inline __attribute__((always_inline))
/* an unaligned load of the vector type V from p */
#define VLOAD(V, p) (*(const V *)(p))
/* the index of the lowest set bit of m (m != 0) */
#if defined(__GNUC__)
#define CTZ64(m) __builtin_ctzll(m)
#else
static inline int CTZ64(uint64_t m) { int k = 0; while (!(m & 1)) { m >>= 1; ++k; } return k; }
#endif

/* One copy of each entry point per vector width, picked when the library loads (GCC and Clang
 * on x86-64 Linux); elsewhere the compiler's baseline. */
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(SPIKEGRAD_NO_CLONES)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

/* surrogate_SFX(sur, z, slope, given): the surrogate derivative number sur at z (grad(x, slope) of
 * spikegrad.surrogates' rational surrogates); given: the caller's value for SUR_GIVEN. */
#define DEFINE_SURROGATE(T_, SFX)                                                                    \
INLINE T_ surrogate_##SFX(int sur, T_ zz, T_ slope, T_ given)                                        \
{                                                                                                    \
    switch (sur) {                                                                                   \
    case SUR_FAST_SIGMOID: { /* (1 + slope |x|)^-2 */                                                \
        const T_ d = 1 + slope * ABS(zz);                                                            \
        return 1 / (d * d);                                                                          \
    }                                                                                                \
    case SUR_ATAN: { /* (slope / 2) / (1 + (pi / 2 slope x)^2) */                                    \
        const T_ q = ((T_)1.5707963267948966 * slope) * zz;                                          \
        return (slope / 2) / (1 + q * q);                                                            \
    }                                                                                                \
    case SUR_TRIANGLE: { /* slope max(1 - slope |x|, 0) */                                           \
        const T_ q = 1 - slope * ABS(zz);                                                            \
        return slope * (q > 0 ? q : 0);                                                              \
    }                                                                                                \
    case SUR_BOXCAR: /* slope where |x| < 0.5 / slope */                                             \
        return ABS(zz) < (T_)0.5 / slope ? slope : 0;                                                \
    default:                                                                                         \
        return given;                                                                                \
    }                                                                                                \
}

DEFINE_SURROGATE(float, f32)
DEFINE_SURROGATE(double, f64)

/* nonzero_bits_SFX(x, n): the bits of the non-zeros among x[0:n] (n <= 64), bit k for x[k];
 * branch-free, after a vectorized test for none (inputs and spikes are sparse). */
#define DEFINE_BITS(T_, SFX)                                                                         \
INLINE uint64_t nonzero_bits_##SFX(const T_ *restrict x, int64_t n)                                  \
{                                                                                                    \
    int any = 0;                                                                                     \
    for (int64_t k = 0; k < n; ++k) any |= x[k] != 0;                                                \
    if (!any) return 0;                                                                              \
    uint64_t m = 0;                                                                                  \
    for (int64_t k = 0; k < n; ++k) m |= (uint64_t)(x[k] != 0) << k;                                 \
    return m;                                                                                        \
}

DEFINE_BITS(float, f32)
DEFINE_BITS(double, f64)

#endif
