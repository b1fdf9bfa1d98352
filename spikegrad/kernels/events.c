/* Event-driven synapses and a fused IF + spiking max-pool layer for CPU tensors (float32, float64).
 *
 * Built into the same library as lif.c (spikegrad/kernels/build.py) and called through ctypes
 * on the data pointers of contiguous tensors; each call handles the rows [r0, r1) of its input,
 * split among nthreads threads of the OpenMP runtime already loaded (as in lif.c; without
 * OpenMP the caller splits the rows itself).
 *
 * Synapses (Linear, Conv2d) skip the zeros of their input: each output element starts at its bias
 * and adds x * w for every non-zero input x that reaches it (just w for binary input, where the
 * product is exact), in a fixed order: for Linear the inputs in increasing index; for Conv2d the
 * kernel positions (ky, kx) in row-major order, then the input channels in increasing order. The
 * weights come as one row per input element, zero-padded to Np outputs, a multiple of UNIT bytes:
 * [C, KH, KW, Np] for Conv2d; for Linear in blocks of BW outputs, [Np / BW, K, BW], so that the
 * weights of one block of outputs are one contiguous piece. The caller sizes the blocks, the
 * groups of Linear rows and the bands of the fused layer to the CPU's caches
 * (spikegrad/kernels/events.py); they change the order of the work, not of the additions. The
 * synapse kernels are compiled for each vector width (on x86-64 Linux: AVX-512, AVX2 and SSE2) and
 * run the widest the CPU has. The file is compiled without fused multiply-adds (-ffp-contract=off),
 * so a slow loop in the same order gives the same bits.
 *
 * The fused layer runs integrate-and-fire neurons (threshold th; u = v + x; spike iff u - th > 0;
 * then v = u - th, v_reset or u for the reset modes subtract, zero, none; as lif.c with decays
 * 1 and 0) and their count-gated spiking max-pool (spikegrad.conversion.spike_max_pool2d: in each
 * window, the input with the most spikes before this step passes its spike, ties going to an input
 * that spikes now) over K steps, image by image (or band of rows by band of rows), so the
 * membranes and counts stay in cache and the layer's spikes are never written out.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "kernels.h"
int spikegrad_thread_num(void);  /* lif.c: this thread's number and its team's size */
int spikegrad_num_threads(void);

/* The public entries: the part below for each thread's share [lo, hi) of the rows [r0, r1). */
#define SPLIT(PART, ...)                                                                             \
    _Pragma("omp parallel num_threads(nthreads) if(nthreads > 1)")                                   \
    {                                                                                                \
        const int64_t k_ = spikegrad_thread_num(), n_ = spikegrad_num_threads();                     \
        const int64_t lo = r0 + (r1 - r0) * k_ / n_, hi = r0 + (r1 - r0) * (k_ + 1) / n_;            \
        if (hi > lo) PART(lo, hi, __VA_ARGS__);                                                      \
    }

#define UNIT 64   /* bytes: weight rows are padded to a multiple of it; a Linear block is 1-4 of them */


/* The synapse kernels hold NA vectors of outputs in registers (a0..a7), of the CPU's own width VB
 * (64 bytes with AVX-512, 32 with AVX2, 16 else: a vector wider than the registers would live in
 * memory): NA_FOR(VB) = 4 of the 32 registers of AVX-512, 8 of the 16 of AVX2 or SSE, so that a
 * pass covers 4 UNIT = 256 bytes of outputs with AVX-512 and AVX2; a block of up to 4 UNIT bytes
 * takes 4 UNIT / (NA VB) passes over its events. */
#define NA_FOR(VB) ((VB) >= 64 ? 4 : 8)
#define EACH_ACC(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)
#define ACC_LOAD_(k) if ((k) > 0 && (k) < NA && nv > (k)) a##k = VLOAD(V_, bias + o + (k) * L);
#define ACC_ADD_(k) if ((k) < NA && ((k) == 0 || nv_ > (k))) a##k += VLOAD(V_, q_ + (k) * L);
#define ACC_MULADD_(k) if ((k) < NA && ((k) == 0 || nv_ > (k))) a##k += x_ * VLOAD(V_, q_ + (k) * L);
#define ACC_STORE_(k) if ((k) < NA) memcpy(tmp_ + (k) * L, &a##k, sizeof(V_));

/* One block of up to MAXV (<= NA) vectors of outputs out[o : o + MAXV L] (of n), inside a kernel
 * with `out`, `o`, `n`, `bias`, `binary`, the element type E_, the vector type V_ and the enum
 * constant L (elements per vector) in scope: start at the bias, add events, store. */
#define BLOCK_BEGIN(MAXV)                                                                            \
    const int64_t rem_ = (n - o + L - 1) / L;                                                        \
    const int nv = rem_ >= (MAXV) ? (int)(MAXV) : (int)rem_;                                         \
    V_ a0 = VLOAD(V_, bias + o), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;      \
    EACH_ACC(ACC_LOAD_)

/* a += x * w[q : q + nv_ L] (just w when binary: the product with 1 is exact); nv_: the block's nv, as
 * an enum constant where the block is whole (EVENTS_NV), so that the checks of nv_ fold away and
 * the accumulators stay in registers */
#define ADD_EVENT(q, xv)                                                                             \
    do {                                                                                             \
        const E_ *q_ = (q);                                                                          \
        if (binary) {                                                                                \
            EACH_ACC(ACC_ADD_)                                                                       \
        } else {                                                                                     \
            const V_ x_ = (V_){0} + (xv);                                                            \
            EACH_ACC(ACC_MULADD_)                                                                    \
        }                                                                                            \
    } while (0)

/* EVENTS (a macro of the caller's event loop) with nv_ the number of vectors in use: a constant NA
 * when the block is whole (the common case), else nv */
#define EVENTS_NV(EVENTS)                                                                            \
    do {                                                                                             \
        if (nv == NA) { enum { nv_ = NA }; EVENTS; }                                                 \
        else { const int nv_ = nv; EVENTS; }                                                         \
    } while (0)

#define BLOCK_END()                                                                                  \
    do {                                                                                             \
        E_ tmp_[NA * L];                                                                             \
        EACH_ACC(ACC_STORE_)                                                                         \
        memcpy(out + o, tmp_, (size_t)((n - o < nv * L ? n - o : nv * L) * (int64_t)sizeof(E_)));   \
    } while (0)

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(SPIKEGRAD_NO_CLONES)
#define VARIANTS 1   /* CLONES (kernels.h) makes copies per vector width */
/* The widest vectors of this CPU, bytes: the synapse kernels' variant to run. */
static int vector_bytes(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? 64 : (__builtin_cpu_supports("avx2") ? 32 : 16);
}
#define PICK(PART, ...)                                                                              \
    do {                                                                                             \
        const int vb_ = vector_bytes();                                                              \
        if (vb_ == 64) PART##_w(__VA_ARGS__);                                                        \
        else if (vb_ == 32) PART##_m(__VA_ARGS__);                                                   \
        else PART##_n(__VA_ARGS__);                                                                  \
    } while (0)
#else
#define VARIANTS 0
#define PICK(PART, ...) PART##_n(__VA_ARGS__)
#endif
#if defined(__AVX512F__)   /* the compiler's own target: the one variant without VARIANTS */
#define NATIVE_VB 64
#elif defined(__AVX__)
#define NATIVE_VB 32
#else
#define NATIVE_VB 16
#endif

/* event_linear_part's events of row q for the block at o */
#define LINEAR_EVENTS for (int64_t j = first[q]; j < first[q + 1]; ++j) ADD_EVENT(wb + (o - o0) + off[j], val[j])
/* event_conv2d_part's events for the output pixel (oy, ox) and the block at o */
#define CONV_EVENTS                                                                                  \
    for (int64_t ky = 0; ky < KH; ++ky) {                                                            \
        const int64_t iy = oy * sh - ph + ky * dh;                                                   \
        if (iy < 0 || iy >= H) continue;                                                             \
        for (int64_t kx = 0; kx < KW; ++kx) {                                                        \
            const int64_t ix = ox * sw - pw + kx * dw;                                               \
            if (ix < 0 || ix >= W) continue;                                                         \
            const int64_t p = iy * W + ix;                                                           \
            const E_ *wk = w + (ky * KW + kx) * Np + o;                                              \
            for (int64_t q = 0; q < NW; ++q)                                                         \
                for (uint64_t m = bits[p * NW + q]; m; m &= m - 1) {                                 \
                    const int64_t c = 64 * q + CTZ64(m);                                             \
                    ADD_EVENT(wk + c * cstep, xr[p * C + c]);                                        \
                }                                                                                    \
        }                                                                                            \
    }

#define DEFINE_SYNAPSES(T_, SFX, V, VB, TGT)                                                         \
                                                                                                     \
/* a vector of VB bytes of T_ that may sit at any T_ address and alias T_ arrays: a plain load or store */ \
typedef T_ vec_##SFX##_##V __attribute__((vector_size(VB), aligned(sizeof(T_)), may_alias));         \
                                                                                                     \
/* y[r] = bias + x[r] @ w for the rows r0 <= r < r1 of x [R, K], the weights w [K, N] stored as      \
 * wt [Np / BW, K, BW] (BW: a multiple of UNIT / sizeof(T_), at most 4 UNIT / sizeof(T_); Np: N      \
 * padded to a multiple of BW), bias [Np], y [R, N]. Rows go in groups of `group`: each block of BW  \
 * outputs is summed for the whole group before the next, so that block's K x BW weights stay in     \
 * cache; off/val hold the group's events. A block takes BW / (NA L) passes over a row's events. */  \
TGT static void event_linear_part_##SFX##_##V(int64_t r0, int64_t r1, int64_t K, int64_t N, int64_t BW, \
                               int64_t group, const T_ *x, const T_ *wt, const T_ *bias, T_ *y, int binary) \
{                                                                                                    \
    typedef T_ E_;                                                                                   \
    typedef vec_##SFX##_##V V_;                                                                      \
    enum { L = VB / sizeof(T_), NA = NA_FOR(VB) };                                                     \
    const int64_t cap = group * (K > 0 ? K : 1);                                                     \
    int64_t *off = malloc((size_t)cap * sizeof(int64_t)), *first = malloc((size_t)(group + 1) * sizeof(int64_t)); \
    T_ *val = malloc((size_t)cap * sizeof(T_));                                                      \
    if (!off || !first || !val) { free(off); free(first); free(val); return; }                       \
    for (int64_t g = r0; g < r1; g += group) {                                                       \
        const int64_t rows = r1 - g < group ? r1 - g : group;                                        \
        int64_t n_ev = 0;                                                                            \
        for (int64_t q = 0; q < rows; ++q) {          /* the non-zero inputs of every row */         \
            const T_ *xr = x + (g + q) * K;                                                          \
            first[q] = n_ev;                                                                         \
            for (int64_t k0 = 0; k0 < K; k0 += 64)                                                   \
                for (uint64_t m = nonzero_bits_##SFX(xr + k0, K - k0 < 64 ? K - k0 : 64); m; m &= m - 1) { \
                    const int64_t k = k0 + CTZ64(m);                                                 \
                    off[n_ev] = k * BW;                                                              \
                    val[n_ev++] = xr[k];                                                             \
                }                                                                                    \
        }                                                                                            \
        first[rows] = n_ev;                                                                          \
        const int64_t n = N;                                                                         \
        for (int64_t o0 = 0; o0 < n; o0 += BW) {                                                     \
            const T_ *wb = wt + o0 * K;               /* this block's weights, [K, BW] */            \
            for (int64_t q = 0; q < rows; ++q) {                                                     \
                T_ *out = y + (g + q) * N;                                                           \
                for (int64_t o = o0; o < n && o < o0 + BW; o += NA * L) {                            \
                    const int64_t left = (o0 + BW - o) / L;                                          \
                    BLOCK_BEGIN(left < NA ? left : NA);                                              \
                    EVENTS_NV(LINEAR_EVENTS);                                                        \
                    BLOCK_END();                                                                     \
                }                                                                                    \
            }                                                                                        \
        }                                                                                            \
    }                                                                                                \
    free(off); free(first); free(val);                                                               \
}                                                                                                    \
                                                                                                     \
/* Conv2d (groups 1) of channels-last x [R, H, W, C] into y [R, OH, OW, N] for rows r0 <= r < r1;    \
 * w [C, KH, KW, Np], bias [Np]; stride (sh, sw), zero padding (ph, pw), dilation (dh, dw). */       \
TGT static void event_conv2d_part_##SFX##_##V(int64_t r0, int64_t r1, int64_t H, int64_t W, int64_t C, int64_t KH, \
                               int64_t KW, int64_t N, int64_t Np, int64_t OH, int64_t OW, int64_t sh, \
                               int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,           \
                               const T_ *x, const T_ *w, const T_ *bias, T_ *y, int binary)          \
{                                                                                                    \
    typedef T_ E_;                                                                                   \
    typedef vec_##SFX##_##V V_;                                                                      \
    enum { L = VB / sizeof(T_), NA = NA_FOR(VB) };                                                     \
    const int64_t P = H * W, NW = (C + 63) / 64, cstep = KH * KW * Np;                               \
    uint64_t *bits = malloc((size_t)(P * NW > 0 ? P * NW : 1) * sizeof(uint64_t));                   \
    if (!bits) return;                                                                               \
    for (int64_t r = r0; r < r1; ++r) {                                                              \
        const T_ *xr = x + r * P * C;                                                                \
        for (int64_t p = 0; p < P; ++p)                 /* the non-zero channels of every pixel */   \
            for (int64_t q = 0; q < NW; ++q)                                                         \
                bits[p * NW + q] = nonzero_bits_##SFX(xr + p * C + 64 * q, C - 64 * q < 64 ? C - 64 * q : 64); \
        for (int64_t oy = 0; oy < OH; ++oy)                                                          \
            for (int64_t ox = 0; ox < OW; ++ox) {                                                    \
                T_ *out = y + ((r * OH + oy) * OW + ox) * N;                                         \
                const int64_t n = N;                                                                 \
                for (int64_t o = 0; o < n; o += NA * L) {                                            \
                    BLOCK_BEGIN(NA);                                                                 \
                    EVENTS_NV(CONV_EVENTS);                                                          \
                    BLOCK_END();                                                                     \
                }                                                                                    \
            }                                                                                        \
    }                                                                                                \
    free(bits);                                                                                      \
}                                                                                                    \

#define DEFINE_EVENTS(T_, SFX)                                                                       \
                                                                                                     \
/* The synapse kernels of the widest vectors this CPU has. */                                        \
static void event_linear_part_##SFX(int64_t r0, int64_t r1, int64_t K, int64_t N, int64_t BW, int64_t group, \
                                    const T_ *x, const T_ *wt, const T_ *bias, T_ *y, int binary)    \
{                                                                                                    \
    PICK(event_linear_part_##SFX, r0, r1, K, N, BW, group, x, wt, bias, y, binary);                  \
}                                                                                                    \
                                                                                                     \
static void event_conv2d_part_##SFX(int64_t r0, int64_t r1, int64_t H, int64_t W, int64_t C, int64_t KH, \
                                    int64_t KW, int64_t N, int64_t Np, int64_t OH, int64_t OW, int64_t sh, \
                                    int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,      \
                                    const T_ *x, const T_ *w, const T_ *bias, T_ *y, int binary)     \
{                                                                                                    \
    PICK(event_conv2d_part_##SFX, r0, r1, H, W, C, KH, KW, N, Np, OH, OW, sh, sw, ph, pw, dh, dw, x, w, bias, \
         y, binary);                                                                                 \
}                                                                                                    \
                                                                                                     \
                                                                                                     \
/* A feed-forward MLP of LIF layers and a leaky-integrator readout (spikegrad.models.SpikingMLP) on  \
 * the images b0 <= b < b1, one image at a time, every step's values in cache. Layer k (k < L) maps  \
 * sizes[k] inputs to sizes[k+1] outputs with the weight rows w[k] [sizes[k], np[k+1]] (zero-padded) \
 * and bias[k] (NULL: none). Per step and layer the current is 0 plus the weights of the non-zero    \
 * inputs (times their values) in increasing input order, then the bias (as sparse_linear); layers   \
 * k < L-1 are LIF neurons (c[4k..4k+3]: decay_mem, decay_syn, threshold, reset potential, one per   \
 * neuron; reset[k]), the last an LI readout (c[4k], c[4k+1]): the operations of lif.c. x: [T, B,    \
 * sizes[0]]; v[k], i[k]: states [B, sizes[k+1]], updated in place; spikes[k]: [T, B, sizes[k+1]] or \
 * NULL; readout: [T, B, sizes[L]]. */                                                               \
CLONES static void mlp_forward_part_##SFX(int64_t b0, int64_t b1, int64_t T, int64_t B, int64_t L,   \
                              const int64_t *sizes, const int64_t *np, const T_ *x,                  \
                              const T_ *times,                                                       \
                              const T_ *const *w, const T_ *const *bias, const T_ *const *c,         \
                              const int *reset, T_ *const *v, T_ *const *i, T_ *const *spikes,       \
                              T_ *readout)                                                           \
{                                                                                                    \
    enum { L_ = UNIT / sizeof(T_) };  /* elements per cache line */                                  \
    int64_t widest = 1, pwidest = 1;                                                                 \
    for (int64_t k = 0; k <= L; ++k) {                                                               \
        widest = sizes[k] > widest ? sizes[k] : widest;                                              \
        pwidest = np[k] > pwidest ? np[k] : pwidest;                                                 \
    }                                                                                                \
    int64_t *idx = malloc((size_t)widest * sizeof(int64_t));                                         \
    int64_t *first = malloc((size_t)(T + 2) * sizeof(int64_t)), *order = malloc((size_t)sizes[0] * sizeof(int64_t)); \
    T_ *val = malloc((size_t)widest * sizeof(T_)), *cur = malloc((size_t)pwidest * sizeof(T_));      \
    if (!idx || !first || !order || !val || !cur) goto done_mlp_##SFX;                               \
    for (int64_t b = b0; b < b1; ++b) {                                                              \
        if (b + 1 < b1)   /* the next image's rows lie a whole batch apart, one per step: fetch them now */ \
            for (int64_t t = 0; t < T; ++t) {                                                        \
                const int64_t r = t * B + b + 1;                                                     \
                if (!times)                                                                          \
                    for (int64_t q = 0; q < sizes[0]; q += L_) __builtin_prefetch(x + r * sizes[0] + q, 0, 0); \
                for (int64_t k = 0; k + 1 < L; ++k)                                                  \
                    if (spikes[k])                                                                   \
                        for (int64_t q = 0; q < sizes[k + 1]; q += L_)                               \
                            __builtin_prefetch(spikes[k] + r * sizes[k + 1] + q, 1, 0);              \
                __builtin_prefetch(readout + r * sizes[L], 1, 0);                                    \
            }                                                                                        \
        if (times) {                 /* the inputs of each step, in increasing order (counting sort) */ \
            const T_ *tb = times + b * sizes[0];                                                     \
            for (int64_t t = 0; t <= T + 1; ++t) first[t] = 0;                                       \
            for (int64_t q = 0; q < sizes[0]; ++q)                                                   \
                if (tb[q] >= 0 && tb[q] < T) ++first[(int64_t)tb[q] + 2];                            \
            for (int64_t t = 2; t <= T + 1; ++t) first[t] += first[t - 1];                           \
            for (int64_t q = 0; q < sizes[0]; ++q)                                                   \
                if (tb[q] >= 0 && tb[q] < T) order[first[(int64_t)tb[q] + 1]++] = q;                 \
        }                                           /* now step t's inputs: first[t] .. first[t+1] */ \
        for (int64_t t = 0; t < T; ++t) {                                                            \
            int64_t n_ev = 0;                                                                        \
            if (times)                                                                               \
                for (int64_t e = first[t]; e < first[t + 1]; ++e) { idx[n_ev] = order[e]; val[n_ev++] = 1; } \
            else {                                                                                   \
                const T_ *xr = x + (t * B + b) * sizes[0];                                           \
                for (int64_t k0 = 0; k0 < sizes[0]; k0 += 64)                                        \
                    for (uint64_t m = nonzero_bits_##SFX(xr + k0, sizes[0] - k0 < 64 ? sizes[0] - k0 : 64); m; \
                         m &= m - 1) {                                                               \
                        const int64_t q = k0 + CTZ64(m);                                             \
                        idx[n_ev] = q; val[n_ev++] = xr[q];                                          \
                    }                                                                                \
            }                                                                                        \
            for (int64_t k = 0; k < L; ++k) {                                                        \
                const int64_t n_out = sizes[k + 1], p = np[k + 1];                                   \
                for (int64_t o = 0; o < p; ++o) cur[o] = 0;                                          \
                for (int64_t e = 0; e < n_ev; ++e) {                                                 \
                    const T_ *wr = w[k] + idx[e] * p, xv = val[e];                                   \
                    if (xv == 1) for (int64_t o = 0; o < p; ++o) cur[o] += wr[o];                    \
                    else for (int64_t o = 0; o < p; ++o) cur[o] += xv * wr[o];                       \
                }                                                                                    \
                if (bias[k]) for (int64_t o = 0; o < n_out; ++o) cur[o] += bias[k][o];               \
                const T_ *dm = c[4 * k], *ds = c[4 * k + 1];                                         \
                T_ *vb = v[k] + b * n_out, *ib = i[k] + b * n_out;                                   \
                if (k == L - 1) {                                   /* the leaky-integrator readout */ \
                    T_ *out = readout + (t * B + b) * n_out;                                         \
                    for (int64_t o = 0; o < n_out; ++o) {                                            \
                        const T_ ii = ds[o] * ib[o] + cur[o];                                        \
                        const T_ vv = dm[o] * vb[o] + ii;                                            \
                        ib[o] = ii; vb[o] = vv; out[o] = vv;                                         \
                    }                                                                                \
                    break;                                                                           \
                }                                                                                    \
                const T_ *th = c[4 * k + 2], *vr = c[4 * k + 3];                                     \
                const int rs = reset[k];                                                             \
                for (int64_t o = 0; o < n_out; ++o) {     /* LIF, as lif.c's lif_row */              \
                    const T_ ii = ds[o] * ib[o] + cur[o];                                            \
                    const T_ u = dm[o] * vb[o] + ii, z = u - th[o], vro = vr[o];                     \
                    const T_ after = rs == RESET_SUBTRACT ? z : (rs == RESET_ZERO ? vro : u);        \
                    ib[o] = ii;                                                                      \
                    vb[o] = z > 0 ? after : u;                                                       \
                    cur[o] = z > 0 ? (T_)1 : (T_)0;                                                  \
                }                                                                                    \
                if (spikes[k]) memcpy(spikes[k] + (t * B + b) * n_out, cur, (size_t)n_out * sizeof(T_)); \
                n_ev = 0;                                 /* this layer's spikes feed the next */    \
                for (int64_t k0 = 0; k0 < n_out; k0 += 64)                                           \
                    for (uint64_t m = nonzero_bits_##SFX(cur + k0, n_out - k0 < 64 ? n_out - k0 : 64); m; m &= m - 1) { \
                        idx[n_ev] = k0 + CTZ64(m); val[n_ev++] = 1;                                  \
                    }                                                                                \
            }                                                                                        \
        }                                                                                            \
    }                                                                                                \
done_mlp_##SFX:                                                                                      \
    free(idx); free(first); free(order); free(val); free(cur);                                       \
}                                                                                                    \
                                                                                                     \
/* K steps of IF neurons [B, H, W, C] (channels-last) and their count-gated max-pool (kernel         \
 * (kh, kw), stride (sh, sw), no padding) for the images b0 <= b < b1. x: input current of step t    \
 * and image b at x + t * x_step + b * H*W*C (x_step = 0: the same current every step). v, count:    \
 * state, updated in place; s: the last step's spikes; pooled: [K, B, OH, OW, C]. With sh >= kh no   \
 * window reaches past its rows, so each image runs in bands of `band` output rows (their input rows \
 * and, in the last band, the rows below), all K steps per band; else the whole image at once. */    \
CLONES static void if_maxpool_part_##SFX(int64_t b0, int64_t b1, int64_t K, int64_t B, int64_t H, int64_t W, \
                             int64_t C, const T_ *x, int64_t x_step, T_ *v, T_ *count, T_ *s,        \
                             T_ th, T_ v_reset, int reset, int64_t kh, int64_t kw,                   \
                             int64_t sh, int64_t sw, int64_t OH, int64_t OW, int64_t band, T_ *pooled) \
{                                                                                                    \
    const int64_t M = H * W * C, RW = W * C;                                                         \
    if (sh < kh || band < 1 || band > OH) band = OH;                                                 \
    const int64_t n_bands = OH > 0 ? (OH + band - 1) / band : 1;                                     \
    for (int64_t b = b0; b < b1; ++b)                                                                \
        for (int64_t bi = 0; bi < n_bands; ++bi) {                                                   \
            const int64_t oy0 = bi * band, oy1 = oy0 + band < OH ? oy0 + band : OH;                  \
            const int64_t j0 = n_bands > 1 ? oy0 * sh * RW : 0, j1 = bi + 1 < n_bands ? oy1 * sh * RW : M; \
            T_ *restrict vb = v + b * M, *restrict cb = count + b * M, *restrict sb = s + b * M;     \
            for (int64_t t = 0; t < K; ++t) {                                                        \
                const T_ *restrict xb = x + t * x_step + b * M;                                      \
                for (int64_t j = j0; j < j1; ++j) {                                                  \
                    const T_ u = vb[j] + xb[j], z = u - th;                                          \
                    const T_ after = reset == RESET_SUBTRACT ? z : (reset == RESET_ZERO ? v_reset : u); \
                    const T_ sp = z > 0 ? (T_)1 : (T_)0;                                             \
                    vb[j] = z > 0 ? after : u;                                                       \
                    cb[j] += sp;                                                                     \
                    sb[j] = sp;                                                                      \
                }                                                                                    \
                T_ *restrict out = pooled + (t * B + b) * OH * OW * C;                               \
                for (int64_t oy = oy0; oy < oy1; ++oy)                                               \
                    for (int64_t ox = 0; ox < OW; ++ox) {                                            \
                        T_ *restrict o = out + (oy * OW + ox) * C;                                   \
                        for (int64_t c = 0; c < C; ++c) o[c] = -1;                                   \
                        for (int64_t ky = 0; ky < kh; ++ky)                                          \
                            for (int64_t kx = 0; kx < kw; ++kx) {                                    \
                                const int64_t q = ((oy * sh + ky) * W + ox * sw + kx) * C;           \
                                for (int64_t c = 0; c < C; ++c) {  /* 2 x (count before) + spike */  \
                                    const T_ key = 2 * cb[q + c] - sb[q + c];                        \
                                    o[c] = key > o[c] ? key : o[c];                                  \
                                }                                                                    \
                            }                                                                        \
                        for (int64_t c = 0; c < C; ++c)         /* odd: the leader spikes now */     \
                            o[c] = (T_)((int32_t)o[c] & 1);                                          \
                    }                                                                                \
            }                                                                                        \
        }                                                                                            \
}                                                                                                    \
                                                                                                     \
void event_linear_##SFX(int64_t r0, int64_t r1, int nthreads, int64_t K, int64_t N, int64_t BW,      \
                        int64_t group, const T_ *x, const T_ *wt, const T_ *bias, T_ *y, int binary) \
{                                                                                                    \
    SPLIT(event_linear_part_##SFX, K, N, BW, group, x, wt, bias, y, binary)                          \
}                                                                                                    \
                                                                                                     \
void event_conv2d_##SFX(int64_t r0, int64_t r1, int nthreads, int64_t H, int64_t W, int64_t C,       \
                        int64_t KH, int64_t KW, int64_t N, int64_t Np, int64_t OH, int64_t OW,       \
                        int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,      \
                        const T_ *x, const T_ *w, const T_ *bias, T_ *y, int binary)                 \
{                                                                                                    \
    SPLIT(event_conv2d_part_##SFX, H, W, C, KH, KW, N, Np, OH, OW, sh, sw, ph, pw, dh, dw, x, w,     \
          bias, y, binary)                                                                           \
}                                                                                                    \
                                                                                                     \
void mlp_forward_##SFX(int64_t r0, int64_t r1, int nthreads, int64_t T, int64_t B, int64_t L,        \
                       const int64_t *sizes, const int64_t *np, const T_ *x, const T_ *times,        \
                       const T_ *const *w, const T_ *const *bias, const T_ *const *c,                \
                       const int *reset, T_ *const *v, T_ *const *i, T_ *const *spikes, T_ *readout) \
{                                                                                                    \
    SPLIT(mlp_forward_part_##SFX, T, B, L, sizes, np, x, times, w, bias, c, reset, v, i, spikes,     \
          readout)                                                                                   \
}                                                                                                    \
                                                                                                     \
void if_maxpool_##SFX(int64_t r0, int64_t r1, int nthreads, int64_t K, int64_t B, int64_t H,         \
                      int64_t W, int64_t C, const T_ *x, int64_t x_step, T_ *v, T_ *count, T_ *s,    \
                      T_ th, T_ v_reset, int reset, int64_t kh, int64_t kw, int64_t sh, int64_t sw,  \
                      int64_t OH, int64_t OW, int64_t band, T_ *pooled)                              \
{                                                                                                    \
    SPLIT(if_maxpool_part_##SFX, K, B, H, W, C, x, x_step, v, count, s, th, v_reset, reset, kh, kw,  \
          sh, sw, OH, OW, band, pooled)                                                              \
}                                                                                                    \

#if VARIANTS
DEFINE_SYNAPSES(float, f32, w, 64, __attribute__((target("avx512f"))))
DEFINE_SYNAPSES(float, f32, m, 32, __attribute__((target("avx2"))))
DEFINE_SYNAPSES(float, f32, n, 16, )
DEFINE_SYNAPSES(double, f64, w, 64, __attribute__((target("avx512f"))))
DEFINE_SYNAPSES(double, f64, m, 32, __attribute__((target("avx2"))))
DEFINE_SYNAPSES(double, f64, n, 16, )
#else
DEFINE_SYNAPSES(float, f32, n, NATIVE_VB, )
DEFINE_SYNAPSES(double, f64, n, NATIVE_VB, )
#endif
DEFINE_EVENTS(float, f32)
DEFINE_EVENTS(double, f64)
