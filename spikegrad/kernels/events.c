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
 * weights come as one row per input element ([K, Np] for Linear; [C, KH, KW, Np] for Conv2d),
 * zero-padded to Np outputs, a multiple of the vector width. The file is compiled without fused
 * multiply-adds (-ffp-contract=off), so a slow loop in the same order gives the same bits.
 *
 * The fused layer runs integrate-and-fire neurons (threshold th; u = v + x; spike iff u - th > 0;
 * then v = u - th, v_reset or u for the reset modes subtract, zero, none; as lif.c with decays
 * 1 and 0) and their count-gated spiking max-pool (spikegrad.conversion.spike_max_pool2d: in each
 * window, the input with the most spikes before this step passes its spike, ties going to an input
 * that spikes now) over K steps, image by image, so the membranes and counts of one image stay in
 * cache and the layer's spikes are never written out.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
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

#define RESET_SUBTRACT 0
#define RESET_ZERO 1
#define VBYTES 64 /* bytes per vector: one AVX-512 register, two AVX2 or four SSE registers */
#define GROUP 32  /* rows of a Linear input per pass over the weights */

#define VLOAD(SFX, p) (*(const vec_##SFX *)(p))

#if defined(__GNUC__)
#define CTZ64(m) __builtin_ctzll(m)
#else
static inline int CTZ64(uint64_t m) { int k = 0; while (!(m & 1)) { m >>= 1; ++k; } return k; }
#endif

/* One block of up to four vectors of outputs out[o : o + 4L] (of n), inside a kernel with `out`,
 * `o`, `n`, `bias` and `binary` in scope: start at the bias, add events, store. */
#define BLOCK_BEGIN(SFX)                                                                             \
    const int64_t rem_ = (n - o + L - 1) / L;                                                        \
    const int nv = rem_ >= 4 ? 4 : (int)rem_;                                                        \
    vec_##SFX a0 = VLOAD(SFX, bias + o), a1 = a0, a2 = a0, a3 = a0;                                  \
    if (nv > 1) a1 = VLOAD(SFX, bias + o + L);                                                       \
    if (nv > 2) a2 = VLOAD(SFX, bias + o + 2 * L);                                                   \
    if (nv > 3) a3 = VLOAD(SFX, bias + o + 3 * L)

/* a += x * w[q : q + nv L] (just w when binary: the product with 1 is exact) */
#define ADD_EVENT(T_, SFX, q, xv)                                                                    \
    do {                                                                                             \
        const T_ *q_ = (q);                                                                          \
        if (binary) {                                                                                \
            a0 += VLOAD(SFX, q_);                                                                    \
            if (nv > 1) a1 += VLOAD(SFX, q_ + L);                                                    \
            if (nv > 2) a2 += VLOAD(SFX, q_ + 2 * L);                                                \
            if (nv > 3) a3 += VLOAD(SFX, q_ + 3 * L);                                                \
        } else {                                                                                     \
            const vec_##SFX x_ = (vec_##SFX){0} + (xv);                                              \
            a0 += x_ * VLOAD(SFX, q_);                                                               \
            if (nv > 1) a1 += x_ * VLOAD(SFX, q_ + L);                                               \
            if (nv > 2) a2 += x_ * VLOAD(SFX, q_ + 2 * L);                                           \
            if (nv > 3) a3 += x_ * VLOAD(SFX, q_ + 3 * L);                                           \
        }                                                                                            \
    } while (0)

#define BLOCK_END(T_, SFX)                                                                           \
    do {                                                                                             \
        T_ tmp_[4 * L];                                                                              \
        memcpy(tmp_, &a0, VBYTES); memcpy(tmp_ + L, &a1, VBYTES);                                    \
        memcpy(tmp_ + 2 * L, &a2, VBYTES); memcpy(tmp_ + 3 * L, &a3, VBYTES);                        \
        memcpy(out + o, tmp_, (size_t)((n - o < 4 * L ? n - o : 4 * L) * (int64_t)sizeof(bias[0]))); \
    } while (0)

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(SPIKEGRAD_NO_CLONES)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

#define DEFINE_EVENTS(T_, SFX)                                                                       \
                                                                                                     \
/* a vector of T_ that may sit at any T_ address and alias T_ arrays: a plain load or store */       \
typedef T_ vec_##SFX __attribute__((vector_size(VBYTES), aligned(sizeof(T_)), may_alias));           \
/* The bits of the non-zeros among x[0:n] (n <= 64), bit k for x[k]: branch-free. */                 \
static inline __attribute__((always_inline)) uint64_t nonzero_bits_##SFX(const T_ *restrict x, int64_t n) \
{                                                                                                    \
    int any = 0;                                    /* a vectorized test first: inputs are sparse */ \
    for (int64_t k = 0; k < n; ++k) any |= x[k] != 0;                                                \
    if (!any) return 0;                                                                              \
    uint64_t m = 0;                                                                                  \
    for (int64_t k = 0; k < n; ++k) m |= (uint64_t)(x[k] != 0) << k;                                 \
    return m;                                                                                        \
}                                                                                                    \
                                                                                                     \
/* y[r] = bias + x[r] @ wt for the rows r0 <= r < r1 of x [R, K]; wt [K, Np], bias [Np], y [R, N].   \
 * Rows go in groups of GROUP: each block of outputs is summed for the whole group before the next,  \
 * so that block's weights stay in cache. */                                                         \
CLONES static void event_linear_part_##SFX(int64_t r0, int64_t r1, int64_t K, int64_t N, int64_t Np,             \
                               const T_ *x, const T_ *wt, const T_ *bias, T_ *y, int binary)         \
{                                                                                                    \
    enum { L = VBYTES / sizeof(T_) };                                                                \
    const int64_t cap = GROUP * (K > 0 ? K : 1);                                                     \
    int64_t *off = malloc((size_t)cap * sizeof(int64_t)), first[GROUP + 1];                          \
    T_ *val = malloc((size_t)cap * sizeof(T_));                                                      \
    if (!off || !val) { free(off); free(val); return; }                                              \
    for (int64_t g = r0; g < r1; g += GROUP) {                                                       \
        const int64_t rows = r1 - g < GROUP ? r1 - g : GROUP;                                        \
        int64_t n_ev = 0;                                                                            \
        for (int64_t q = 0; q < rows; ++q) {          /* the non-zero inputs of every row */         \
            const T_ *xr = x + (g + q) * K;                                                          \
            first[q] = n_ev;                                                                         \
            for (int64_t k0 = 0; k0 < K; k0 += 64)                                                   \
                for (uint64_t m = nonzero_bits_##SFX(xr + k0, K - k0 < 64 ? K - k0 : 64); m; m &= m - 1) { \
                    const int64_t k = k0 + CTZ64(m);                                                 \
                    off[n_ev] = k * Np;                                                              \
                    val[n_ev++] = xr[k];                                                             \
                }                                                                                    \
        }                                                                                            \
        first[rows] = n_ev;                                                                          \
        const int64_t n = N;                                                                         \
        for (int64_t o = 0; o < n; o += 4 * L)                                                       \
            for (int64_t q = 0; q < rows; ++q) {                                                     \
                T_ *out = y + (g + q) * N;                                                           \
                BLOCK_BEGIN(SFX);                                                                    \
                for (int64_t j = first[q]; j < first[q + 1]; ++j) ADD_EVENT(T_, SFX, wt + off[j] + o, val[j]); \
                BLOCK_END(T_, SFX);                                                                  \
            }                                                                                        \
    }                                                                                                \
    free(off); free(val);                                                                            \
}                                                                                                    \
                                                                                                     \
/* Conv2d (groups 1) of channels-last x [R, H, W, C] into y [R, OH, OW, N] for rows r0 <= r < r1;    \
 * w [C, KH, KW, Np], bias [Np]; stride (sh, sw), zero padding (ph, pw), dilation (dh, dw). */       \
CLONES static void event_conv2d_part_##SFX(int64_t r0, int64_t r1, int64_t H, int64_t W, int64_t C, int64_t KH,  \
                               int64_t KW, int64_t N, int64_t Np, int64_t OH, int64_t OW, int64_t sh, \
                               int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,           \
                               const T_ *x, const T_ *w, const T_ *bias, T_ *y, int binary)          \
{                                                                                                    \
    enum { L = VBYTES / sizeof(T_) };                                                                \
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
                for (int64_t o = 0; o < n; o += 4 * L) {                                             \
                    BLOCK_BEGIN(SFX);                                                                \
                    for (int64_t ky = 0; ky < KH; ++ky) {                                            \
                        const int64_t iy = oy * sh - ph + ky * dh;                                   \
                        if (iy < 0 || iy >= H) continue;                                             \
                        for (int64_t kx = 0; kx < KW; ++kx) {                                        \
                            const int64_t ix = ox * sw - pw + kx * dw;                               \
                            if (ix < 0 || ix >= W) continue;                                         \
                            const int64_t p = iy * W + ix;                                           \
                            const T_ *wk = w + (ky * KW + kx) * Np + o;                              \
                            for (int64_t q = 0; q < NW; ++q)                                         \
                                for (uint64_t m = bits[p * NW + q]; m; m &= m - 1) {                 \
                                    const int64_t c = 64 * q + CTZ64(m);                             \
                                    ADD_EVENT(T_, SFX, wk + c * cstep, xr[p * C + c]);               \
                                }                                                                    \
                        }                                                                            \
                    }                                                                                \
                    BLOCK_END(T_, SFX);                                                              \
                }                                                                                    \
            }                                                                                        \
    }                                                                                                \
    free(bits);                                                                                      \
}                                                                                                    \
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
CLONES static void mlp_forward_part_##SFX(int64_t b0, int64_t b1, int64_t T, int64_t B, int64_t L,               \
                              const int64_t *sizes, const int64_t *np, const T_ *x,                  \
                              const T_ *times,                                                       \
                              const T_ *const *w, const T_ *const *bias, const T_ *const *c,         \
                              const int *reset, T_ *const *v, T_ *const *i, T_ *const *spikes,       \
                              T_ *readout)                                                           \
{                                                                                                    \
    enum { L_ = VBYTES / sizeof(T_) };                                                               \
    int64_t widest = 1, pwidest = 1;                                                                 \
    for (int64_t k = 0; k <= L; ++k) {                                                               \
        widest = sizes[k] > widest ? sizes[k] : widest;                                              \
        pwidest = np[k] > pwidest ? np[k] : pwidest;                                                 \
    }                                                                                                \
    int64_t *idx = malloc((size_t)widest * sizeof(int64_t));                                         \
    int64_t *first = malloc((size_t)(T + 2) * sizeof(int64_t)), *order = malloc((size_t)sizes[0] * sizeof(int64_t)); \
    T_ *val = malloc((size_t)widest * sizeof(T_)), *cur = malloc((size_t)pwidest * sizeof(T_));      \
    if (!idx || !first || !order || !val || !cur) goto done_mlp_##SFX;                               \
    for (int64_t b = b0; b < b1; ++b) {                                                             \
        if (b + 1 < b1)   /* the next image's rows lie a whole batch apart, one per step: fetch them now */ \
            for (int64_t t = 0; t < T; ++t) {                                                       \
                const int64_t r = t * B + b + 1;                                                    \
                if (!times)                                                                         \
                    for (int64_t q = 0; q < sizes[0]; q += L_) __builtin_prefetch(x + r * sizes[0] + q, 0, 0); \
                for (int64_t k = 0; k + 1 < L; ++k)                                                 \
                    if (spikes[k])                                                                  \
                        for (int64_t q = 0; q < sizes[k + 1]; q += L_)                              \
                            __builtin_prefetch(spikes[k] + r * sizes[k + 1] + q, 1, 0);             \
                __builtin_prefetch(readout + r * sizes[L], 1, 0);                                   \
            }                                                                                       \
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
 * state, updated in place; s: the last step's spikes; pooled: [K, B, OH, OW, C]. */                \
CLONES static void if_maxpool_part_##SFX(int64_t b0, int64_t b1, int64_t K, int64_t B, int64_t H, int64_t W,     \
                             int64_t C, const T_ *x, int64_t x_step, T_ *v, T_ *count, T_ *s,        \
                             T_ th, T_ v_reset, int reset, int64_t kh, int64_t kw,                   \
                             int64_t sh, int64_t sw, int64_t OH, int64_t OW, T_ *pooled)             \
{                                                                                                    \
    const int64_t M = H * W * C;                                                                     \
    for (int64_t b = b0; b < b1; ++b) {                                                              \
        T_ *restrict vb = v + b * M, *restrict cb = count + b * M, *restrict sb = s + b * M;         \
        for (int64_t t = 0; t < K; ++t) {                                                            \
            const T_ *restrict xb = x + t * x_step + b * M;                                          \
            for (int64_t j = 0; j < M; ++j) {                                                        \
                const T_ u = vb[j] + xb[j], z = u - th;                                              \
                const T_ after = reset == RESET_SUBTRACT ? z : (reset == RESET_ZERO ? v_reset : u);  \
                const T_ sp = z > 0 ? (T_)1 : (T_)0;                                                 \
                vb[j] = z > 0 ? after : u;                                                           \
                cb[j] += sp;                                                                         \
                sb[j] = sp;                                                                          \
            }                                                                                        \
            T_ *restrict out = pooled + (t * B + b) * OH * OW * C;                                   \
            for (int64_t oy = 0; oy < OH; ++oy)                                                      \
                for (int64_t ox = 0; ox < OW; ++ox) {                                                \
                    T_ *restrict o = out + (oy * OW + ox) * C;                                       \
                    for (int64_t c = 0; c < C; ++c) o[c] = -1;                                       \
                    for (int64_t ky = 0; ky < kh; ++ky)                                              \
                        for (int64_t kx = 0; kx < kw; ++kx) {                                        \
                            const int64_t q = ((oy * sh + ky) * W + ox * sw + kx) * C;               \
                            for (int64_t c = 0; c < C; ++c) {  /* 2 x (count before) + spike */      \
                                const T_ key = 2 * cb[q + c] - sb[q + c];                            \
                                o[c] = key > o[c] ? key : o[c];                                      \
                            }                                                                        \
                        }                                                                            \
                    for (int64_t c = 0; c < C; ++c)         /* odd: the leader spikes now */         \
                        o[c] = (T_)((int32_t)o[c] & 1);                                              \
                }                                                                                    \
        }                                                                                            \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
void event_linear_##SFX(int64_t r0, int64_t r1, int nthreads, int64_t K, int64_t N, int64_t Np,      \
                        const T_ *x, const T_ *wt, const T_ *bias, T_ *y, int binary)                \
{                                                                                                    \
    SPLIT(event_linear_part_##SFX, K, N, Np, x, wt, bias, y, binary)                                 \
}                                                                                                    \
                                                                                                     \
void event_conv2d_##SFX(int64_t r0, int64_t r1, int nthreads, int64_t H, int64_t W, int64_t C,       \
                        int64_t KH, int64_t KW, int64_t N, int64_t Np, int64_t OH, int64_t OW,       \
                        int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,      \
                        const T_ *x, const T_ *w, const T_ *bias, T_ *y, int binary)                 \
{                                                                                                    \
    SPLIT(event_conv2d_part_##SFX, H, W, C, KH, KW, N, Np, OH, OW, sh, sw, ph, pw, dh, dw, x, w,    \
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
                      int64_t OH, int64_t OW, T_ *pooled)                                            \
{                                                                                                    \
    SPLIT(if_maxpool_part_##SFX, K, B, H, W, C, x, x_step, v, count, s, th, v_reset, reset, kh, kw,  \
          sh, sw, OH, OW, pooled)                                                                    \
}


DEFINE_EVENTS(float, f32)
DEFINE_EVENTS(double, f64)
