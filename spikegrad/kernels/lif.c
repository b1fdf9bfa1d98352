/* Fused LIF / LI time loops for CPU tensors, forward and backward, in float32 and float64.
 *
 * Built on first use by spikegrad/kernels/build.py (any C99 compiler; with OpenMP when the
 * compiler has it) and called through ctypes on the data pointers of contiguous tensors. Each call
 * handles the neurons [a, b) of flat [T, M] sequences (row t at offset t * M). The neurons are
 * processed in blocks of NB: a block's state stays in L1 cache (registers, mostly) over the whole
 * time loop, so per neuron-step only the sequences themselves move through memory. With OpenMP
 * the blocks are split among nthreads threads of the OpenMP runtime already loaded in the process
 * (PyTorch's, whose threads are then idle); without it the caller splits [a, b) itself. Every
 * inner loop is branch-free (selects only), so the compiler vectorizes it.
 *
 * Forward, per neuron and step (the operations and roundings of spikegrad.functional.lif_step; the
 * file is compiled with -ffp-contract=off so that no multiply-add is fused):
 *
 *     i = ds * i + x          u = dm * v + i          (u = v while refractory)
 *     z = u - th              s = z > 0               (s = 0 while refractory)
 *     v = s ? reset(u) : u    r = s ? n : max(r - 1, 0)
 *
 * z is stored for backward when the caller asks (z != NULL), with -inf on refractory steps (the
 * surrogate derivative is 0 there). Backward runs the adjoint recurrence in reverse time, given
 * the surrogate derivative sg = grad(z) of any registered surrogate (computed by the caller, or
 * by the kernel for the rational built-in ones):
 *
 *     gv_t += g_vseq_t                              (the recorded v_t, if any)
 *     gu    = g_s * sg + A * gv_t                   A = dv/du (+ dv/ds * sg if not detached)
 *     gI_t  = act * gu + g_iseq_t + ds * gI_{t+1}   (the gradient of the final i starts gI)
 *     gx_t  = gI_t                gv_{t-1} = act ? dm * gu : gu
 *
 * Backward reads z either from memory (as the forward stored it) or recomputes it: given the input
 * x and the initial state instead of z, it reruns each block's forward loop into a buffer of
 * T x NB values in cache, bit for bit the forward's z, then runs the reverse loop from there.
 * That moves fewer bytes than storing z (forward skips a [T, M] write, backward reads x instead
 * of z).
 *
 * Without spiking (spikes == NULL forward, spiking == 0 backward) the neuron does not spike: that
 * is the leaky integrator LI, whose output is the recorded membrane v.
 */

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "kernels.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* This thread's number in its OpenMP team and the team's size (0 and 1 without OpenMP); events.c
 * uses them too. */
int spikegrad_thread_num(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

int spikegrad_num_threads(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

#define NB 64 /* neurons per block */
/* Backward's loops fetch the rows they will need this many steps ahead into cache: their rows lie
 * a whole [M] row apart, which the hardware prefetchers do not follow (measured: 20% faster). */
#define AHEAD 8
#define PG_FLUSH 16 /* steps summed in the input's dtype before a constant's gradient is added in double */

/* The first neuron of thread k's share of [a, b) among n threads: whole blocks each. */
static int64_t share(int64_t a, int64_t b, int64_t k, int64_t n)
{
    const int64_t blocks = (b - a + NB - 1) / NB, j = a + blocks * k / n * NB;
    return j < b ? j : b;
}

/* Outputs of at least this many bytes are written with non-temporal stores (they would not stay in
 * cache for the next operation anyway); smaller ones through the cache. */
#define STREAM_MIN ((size_t)16 << 20)

/* Writes `bytes` from src (16-byte aligned) to dst. With nt, on x86, dst 16-byte aligned:
 * non-temporal stores, which do not read the destination's cache lines first (a third of the
 * forward's memory traffic); stream_done() must follow before other threads read dst. */
static inline void stream_out(void *dst, const void *src, size_t bytes, int nt)
{
#if defined(__SSE__)
    typedef float v4 __attribute__((vector_size(16), may_alias));
    if (nt && ((uintptr_t)dst & 15) == 0 && (bytes & 15) == 0) {
        for (size_t k = 0; k < bytes; k += 16)
            __builtin_ia32_movntps((float *)((char *)dst + k), *(const v4 *)((const char *)src + k));
        return;
    }
#endif
    memcpy(dst, src, bytes);
}

static inline void stream_done(void)
{
#if defined(__SSE__)
    __builtin_ia32_sfence();
#endif
}

int spikegrad_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* The common case (one value of each constant, no refractory period, nothing recorded, a built-in
 * surrogate) has its own plain loops below, fast_fwd and fast_bwd, with the reset mode, the detach
 * flag and the surrogate as literals at each call: these macros expand the calls for every value. */
#define FAST_FWD_STORES(SFX, N, R)                                                                   \
    do {                                                                                             \
        if (s && z) fast_fwd_##SFX(T, M, N, x, x_step, v, i, dm, ds, th, vr, R, s, z, z_step, 1, 1); \
        else if (s) fast_fwd_##SFX(T, M, N, x, x_step, v, i, dm, ds, th, vr, R, s, NULL, 0, 1, 0);   \
        else fast_fwd_##SFX(T, M, N, x, x_step, v, i, dm, ds, th, vr, R, NULL, z, z_step, 0, 1);     \
    } while (0)
#define FAST_FWD_RESETS(SFX, N)                                                                      \
    do {                                                                                             \
        if (reset == RESET_SUBTRACT) FAST_FWD_STORES(SFX, N, RESET_SUBTRACT);                        \
        else if (reset == RESET_ZERO) FAST_FWD_STORES(SFX, N, RESET_ZERO);                           \
        else FAST_FWD_STORES(SFX, N, RESET_NONE);                                                    \
    } while (0)
#define FAST_BWD_CALL(SFX, S, R, D)                                                                  \
    fast_bwd_##SFX(M, NB, T, z, z_step, S, slope, gs, s_step, dm, ds, th, vr, R, D, gv, gi, gx)
#define FAST_BWD_RESETS(SFX, S)                                                                      \
    do {                                                                                             \
        if (reset == RESET_SUBTRACT && detach) FAST_BWD_CALL(SFX, S, RESET_SUBTRACT, 1);             \
        else if (reset == RESET_SUBTRACT) FAST_BWD_CALL(SFX, S, RESET_SUBTRACT, 0);                  \
        else if (reset == RESET_ZERO && detach) FAST_BWD_CALL(SFX, S, RESET_ZERO, 1);                \
        else if (reset == RESET_ZERO) FAST_BWD_CALL(SFX, S, RESET_ZERO, 0);                          \
        else FAST_BWD_CALL(SFX, S, RESET_NONE, 1);                                                   \
    } while (0)

/* bwd_block's step for surrogate S (a literal) with the caller's derivatives SG (SUR_GIVEN) */
#define ROW_BWD(SFX, S, SG)                                                                          \
    lif_row_bwd_##SFX(n, zr, SG, S, slope, gsr, gvs, gis, dm, ds, th, vr, reset, detach, last, gvb, \
                      gib, gx + o)

#define PG_BLOCK(SFX, N)                                                                             \
    pg_block_##SFX(M, N, T, spiking, x + j0, x_step, v0 ? v0 + j0 : NULL, i0 ? i0 + j0 : NULL, buf, sur, \
                   slope, g_s ? g_s + j0 : NULL, s_step, g_vseq ? g_vseq + j0 : NULL, v_step,          \
                   g_iseq ? g_iseq + j0 : NULL, i_step, dm + pj, ds + pj, th ? th + pj : NULL,         \
                   vr ? vr + pj : NULL, reset, detach, gv + j0, gi + j0, gx + j0, pg + j0)
/* pg_block's reverse step for surrogate S, reset R, detach flag D and spiking SP (literals at each call) */
#define PGB_ROW(SFX, S, R, D, SP) pg_row_bwd_##SFX(n, S, R, D, SP, slope, ur, ir, gsr, gvs, gis, dm, f, th, vr, \
                                                  gv, gi, gum, gb, pm, ps, pt)
/* pg_block's forward steps for reset R (a literal; -1: the leaky integrator), each in its own loop */
#define PGF_STEPS(T_, SFX, R)                                                                         \
    do { for (int64_t t = 0; t < T; ++t) {                                                          \
        const T_ *xr = x + t * x_step;                                                              \
        if (x_step && t + AHEAD < T)     /* rows far apart in memory: fetch the block's next rows */ \
            for (int q = 0; q < NB; q += 64 / (int)sizeof(T_)) __builtin_prefetch(xr + AHEAD * x_step + q, 0, 0); \
        if (R < 0) li_row_##SFX(n, xr, vb, ib, dm, ds, urec + t * NB, irec + t * NB, 1);             \
        else pg_row_fwd_##SFX(n, R, xr, vb, ib, dm, ds, th, vr, urec + t * NB, irec + t * NB);      \
    } } while (0)
#define PGB_RESETS(SFX, S)                                                                          \
    do {                                                                                            \
        if (reset == RESET_SUBTRACT && detach) PGB_ROW(SFX, S, RESET_SUBTRACT, 1, 1);               \
        else if (reset == RESET_SUBTRACT) PGB_ROW(SFX, S, RESET_SUBTRACT, 0, 1);                    \
        else if (reset == RESET_ZERO && detach) PGB_ROW(SFX, S, RESET_ZERO, 1, 1);                  \
        else if (reset == RESET_ZERO) PGB_ROW(SFX, S, RESET_ZERO, 0, 1);                            \
        else PGB_ROW(SFX, S, RESET_NONE, 1, 1);                                                     \
    } while (0)

#define DEFINE_LIF(T_, SFX)                                                                          \
                                                                                                     \
/* a * b + c in two roundings (as PyTorch's mul then add: the file forbids fused multiply-adds) */   \
INLINE T_ leak_##SFX(T_ a, T_ b, T_ c) { return a * b + c; }                                         \
                                                                                                     \
/* One step of n neurons; ws, wz, wr: whether the spikes, z and the recorded v and i are written    \
 * (literal constants at every call, so each call site compiles to its own loop). */                \
INLINE void lif_row_##SFX(int64_t n, const T_ *restrict x, T_ *restrict v, T_ *restrict i,           \
                          const T_ *restrict dm, const T_ *restrict ds, const T_ *restrict th,       \
                          const T_ *restrict vr, int reset, T_ *restrict s, T_ *restrict z,          \
                          T_ *restrict vo, T_ *restrict io, const int ws, const int wz, const int wr)  \
{                                                                                                    \
    for (int64_t j = 0; j < n; ++j) {                                                                \
        const T_ ii = leak_##SFX(ds[j], i[j], x[j]);  /* i = ds * i + x */                           \
        T_ u = leak_##SFX(dm[j], v[j], ii);           /* u = dm * v + i */                           \
        const T_ zz = u - th[j], vrj = vr[j]; /* loads outside selects: the loop vectorizes */       \
        const T_ after = reset == RESET_SUBTRACT ? zz : (reset == RESET_ZERO ? vrj : u);             \
        const T_ vn = zz > 0 ? after : u;                                                            \
        i[j] = ii;                                                                                   \
        v[j] = vn;                                                                                   \
        if (ws) s[j] = zz > 0 ? (T_)1 : (T_)0;                                                       \
        if (wz) z[j] = zz;                                                                           \
        if (wr) { vo[j] = vn; io[j] = ii; }                                                          \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
INLINE void lif_row_refr_##SFX(int64_t n, const T_ *restrict x, T_ *restrict v, T_ *restrict i,      \
                               T_ *restrict r, const T_ *restrict dm, const T_ *restrict ds,         \
                               const T_ *restrict th, const T_ *restrict vr, int reset, T_ period,   \
                               T_ *restrict s, T_ *restrict z, T_ *restrict vo, T_ *restrict io,     \
                               T_ *restrict ro)                                        \
{                                                                                                    \
    const T_ neg_inf = (T_)(-INFINITY);                                                              \
    for (int64_t j = 0; j < n; ++j) {                                                                \
        const T_ ii = leak_##SFX(ds[j], i[j], x[j]);  /* i = ds * i + x */                           \
        T_ u = leak_##SFX(dm[j], v[j], ii);           /* u = dm * v + i */                           \
        const T_ vj = v[j], rj = r[j], thj = th[j], vrj = vr[j];                                     \
        u = rj <= 0 ? u : vj;                            /* held: the membrane keeps v */            \
        const T_ zz = u - thj;                                                                       \
        const T_ spike = rj <= 0 && zz > 0 ? (T_)1 : (T_)0;                                          \
        const T_ after = reset == RESET_SUBTRACT ? zz : (reset == RESET_ZERO ? vrj : u);             \
        const T_ vn = spike > 0 ? after : u;                                                         \
        T_ rr = rj - 1;                                                                              \
        rr = rr > 0 ? rr : 0;                                                                        \
        rr = spike > 0 ? period : rr;                                                                \
        i[j] = ii;                                                                                   \
        v[j] = vn;                                                                                   \
        r[j] = rr;                                                                                   \
        s[j] = spike;                                                                                \
        z[j] = rj <= 0 ? zz : neg_inf;                                                               \
        vo[j] = vn;                                                                                  \
        io[j] = ii;                                                                                  \
        ro[j] = rr;                                                                                  \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
INLINE void li_row_##SFX(int64_t n, const T_ *restrict x, T_ *restrict v, T_ *restrict i,            \
                         const T_ *restrict dm, const T_ *restrict ds, T_ *restrict vo,              \
                         T_ *restrict io, const int wi)                                              \
{                                                                                                    \
    for (int64_t j = 0; j < n; ++j) {                                                                \
        const T_ ii = leak_##SFX(ds[j], i[j], x[j]);  /* i = ds * i + x */                           \
        T_ u = leak_##SFX(dm[j], v[j], ii);           /* u = dm * v + i */                           \
        i[j] = ii;                                                                                   \
        v[j] = u;                                                                                    \
        vo[j] = u;                                                                                   \
        if (wi) io[j] = ii;                                                                          \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
/* Steps 0..T-1 of one block of n <= NB neurons. x: the block's row 0, advancing x_step per step;   \
 * v, i, r [n]: states, updated in place; spikes, v_rec, i_rec, r_rec: row 0 of the block's         \
 * outputs (step M; NULL: not written); z: row 0 of z, advancing z_step (NULL: not written). */     \
INLINE void fwd_block_##SFX(int64_t T, int64_t M, int64_t n, int spiking, const T_ *x,              \
                            int64_t x_step, T_ *v, T_ *i, T_ *r, const T_ *dm, const T_ *ds,         \
                            const T_ *th, const T_ *vr, int reset, int64_t refractory, T_ *spikes,   \
                            T_ *z, int64_t z_step, T_ *v_rec, T_ *i_rec, T_ *r_rec)     \
{                                                                                                    \
    T_ vb[NB], ib[NB], rb[NB], sink[5][NB]; /* rows not written out */                                                          \
    for (int64_t j = 0; j < n; ++j) { vb[j] = v[j]; ib[j] = i[j]; rb[j] = r ? r[j] : 0; }           \
    const int rec = v_rec != NULL;                                                                   \
    for (int64_t t = 0; t < T; ++t) {                                                                \
        const T_ *xr = x + t * x_step;                                                               \
        const int64_t o = t * M;                                                                     \
        T_ *zr = z ? z + t * z_step : sink[1];                                                       \
        if (!spiking)                                                                                \
            li_row_##SFX(n, xr, vb, ib, dm, ds, v_rec + o, i_rec ? i_rec + o : sink[0], i_rec != NULL); \
        else if (refractory > 0)                                                                     \
            lif_row_refr_##SFX(n, xr, vb, ib, rb, dm, ds, th, vr, reset, (T_)refractory,            \
                               spikes ? spikes + o : sink[0], zr, rec ? v_rec + o : sink[2],         \
                               rec ? i_rec + o : sink[3], r_rec ? r_rec + o : sink[4]);              \
        else if (rec)                                                                                \
            lif_row_##SFX(n, xr, vb, ib, dm, ds, th, vr, reset, spikes ? spikes + o : sink[0], zr,   \
                          v_rec + o, i_rec + o, 1, 1, 1);                                            \
        else if (spikes == NULL) /* backward's recomputation: z only */                             \
            lif_row_##SFX(n, xr, vb, ib, dm, ds, th, vr, reset, NULL, zr, NULL, NULL, 0, 1, 0);     \
        else if (z != NULL)                                                                          \
            lif_row_##SFX(n, xr, vb, ib, dm, ds, th, vr, reset, spikes + o, zr, NULL, NULL, 1, 1, 0); \
        else                                                                                         \
            lif_row_##SFX(n, xr, vb, ib, dm, ds, th, vr, reset, spikes + o, NULL, NULL, NULL, 1, 0, 0); \
    }                                                                                                \
    for (int64_t j = 0; j < n; ++j) { v[j] = vb[j]; i[j] = ib[j]; if (r) r[j] = rb[j]; }            \
}                                                                                                    \
                                                                                                     \
INLINE void fast_fwd_##SFX(int64_t T, int64_t M, int64_t n, const T_ *restrict x, int64_t x_step,    \
                           T_ *restrict v, T_ *restrict i, T_ dm, T_ ds, T_ th, T_ vr, const int reset, \
                           T_ *restrict s, T_ *restrict z, int64_t z_step, const int ws, const int wz) \
{                                                                                                    \
    /* fwd_block's steps for scalar constants; s (step M) and z (step z_step) written if ws, wz */   \
    T_ vb[NB], ib[NB], sb[NB] __attribute__((aligned(64)));                                          \
    const int nt = (size_t)T * (size_t)M * sizeof(T_) >= STREAM_MIN;                                 \
    for (int64_t j = 0; j < n; ++j) { vb[j] = v[j]; ib[j] = i[j]; }                                  \
    for (int64_t t = 0; t < T; ++t) {                                                                \
        const T_ *restrict xr = x + t * x_step;                                                      \
        T_ *restrict sr = ws ? s + t * M : NULL, *restrict zr = wz ? z + t * z_step : NULL;          \
        if (!ws && t + AHEAD < T)   /* backward's recomputation (the forward's own pass: no gain) */ \
            for (int q = 0; q < NB; q += 64 / (int)sizeof(T_)) __builtin_prefetch(xr + AHEAD * x_step + q, 0, 0); \
        for (int64_t j = 0; j < n; ++j) {                                                            \
            const T_ ii = leak_##SFX(ds, ib[j], xr[j]);  /* i = ds * i + x */                        \
            const T_ u = leak_##SFX(dm, vb[j], ii);      /* u = dm * v + i */                        \
            const T_ zz = u - th;                                                                    \
            const T_ after = reset == RESET_SUBTRACT ? zz : (reset == RESET_ZERO ? vr : u);          \
            ib[j] = ii;                                                                              \
            vb[j] = zz > 0 ? after : u;                                                              \
            if (ws) sb[j] = zz > 0 ? (T_)1 : (T_)0;                                                  \
            if (wz) zr[j] = zz;                                                                      \
        }                                                                                            \
        if (ws) stream_out(sr, sb, sizeof(T_) * (size_t)n, nt);                                      \
    }                                                                                                \
    for (int64_t j = 0; j < n; ++j) { v[j] = vb[j]; i[j] = ib[j]; }                                  \
}                                                                                                    \
                                                                                                     \
/* fast_fwd for any reset mode and outputs (s, z: NULL if not written), one whole block (NB) */     \
CLONES static void fast_fwd_any_##SFX(int64_t T, int64_t M, const T_ *x, int64_t x_step, T_ *v,      \
                               T_ *i, T_ dm, T_ ds, T_ th, T_ vr, int reset, T_ *s, T_ *z,           \
                               int64_t z_step)                                                       \
{                                                                                                    \
    FAST_FWD_RESETS(SFX, NB);   /* a literal length: the loop unrolls, the state stays in registers */ \
}                                                                                                    \
                                                                                                     \
CLONES void lif_forward_##SFX(int64_t T, int64_t M, int64_t a, int64_t b, int nthreads, const T_ *x, \
                       T_ *v, T_ *i, T_ *r, const T_ *dm, const T_ *ds, const T_ *th, const T_ *vr,  \
                       int64_t pstep, int reset, int64_t refractory, T_ *spikes, T_ *z, T_ *v_rec,   \
                       T_ *i_rec, T_ *r_rec, int64_t x_step)                                         \
{                                                                                                    \
    /* x advances by x_step elements per step (M, or 0 for an input held constant over time);      \
     * constants dm, ds, th, vr: [M] (pstep 1) or one value repeated NB times (pstep 0) */          \
    _Pragma("omp parallel num_threads(nthreads) if(nthreads > 1)")                                   \
    {                                                                                                \
        const int64_t k = spikegrad_thread_num(), nt = spikegrad_num_threads();                      \
        const int64_t lo = share(a, b, k, nt), hi = share(a, b, k + 1, nt);                          \
        const int fast = spikes != NULL && refractory == 0 && v_rec == NULL && pstep == 0;           \
        for (int64_t j0 = lo; j0 < hi; j0 += NB) {                                                   \
            const int64_t n = j0 + NB < hi ? NB : hi - j0, pj = pstep ? j0 : 0;                      \
            if (fast && n == NB) {                                                                   \
                fast_fwd_any_##SFX(T, M, x + j0, x_step, v + j0, i + j0, dm[0], ds[0], th[0],     \
                                   vr[0], reset, spikes + j0, z ? z + j0 : NULL, M);                 \
                continue;                                                                            \
            }                                                                                        \
            fwd_block_##SFX(T, M, n, spikes != NULL, x + j0, x_step, v + j0, i + j0, \
                    r ? r + j0 : NULL, dm + pj, ds + pj, th ? th + pj : NULL, vr ? vr + pj : NULL,   \
                    reset, refractory, spikes ? spikes + j0 : NULL, z ? z + j0 : NULL, M,            \
                    v_rec ? v_rec + j0 : NULL, i_rec ? i_rec + j0 : NULL, r_rec ? r_rec + j0 : NULL); \
        }                                                                                            \
        stream_done();                                                                               \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
INLINE void fast_bwd_##SFX(int64_t M, int64_t n, int64_t T, const T_ *restrict z, int64_t z_step,     \
                           const int sur, T_ slope, const T_ *restrict gs, int64_t s_step, T_ dm,    \
                           T_ ds, T_ th, T_ vr, const int reset, const int detach, T_ *restrict gv,  \
                           T_ *restrict gi, T_ *restrict gx)                                         \
{                                                                                                    \
    /* bwd_block's steps T-1..0 for fast_fwd's case (no refractory steps: z > -inf; no gradients    \
     * of recorded states); same operations and roundings as lif_row_bwd there */                    \
    T_ gvb[NB], gib[NB], gb[NB] __attribute__((aligned(64)));                                        \
    const int nt = (size_t)T * (size_t)M * sizeof(T_) >= STREAM_MIN;                                 \
    for (int64_t j = 0; j < n; ++j) { gvb[j] = gv[j]; gib[j] = gi[j]; }                              \
    for (int64_t t = T - 1; t >= 0; --t) {                                                           \
        const T_ *restrict zr = z + t * z_step, *restrict gsr = gs + t * s_step;                     \
        T_ *restrict gxr = gx + t * M;                                                               \
        const T_ f = t == T - 1 ? (T_)1 : ds;   /* the gradient of the final i enters undecayed */   \
        for (int64_t j = 0; j < n; ++j) {                                                            \
            const T_ zz = zr[j];                                                                     \
            const T_ sg = surrogate_##SFX(sur, zz, slope, 0);                                        \
            const T_ spike = zz > 0 ? (T_)1 : (T_)0;                                                 \
            T_ A = 1;                                  /* dv/du, plus dv/ds * sg when not detached */ \
            if (reset == RESET_SUBTRACT && !detach) A = 1 - th * sg;                                 \
            if (reset == RESET_ZERO) A = A - spike;                                                  \
            if (reset == RESET_ZERO && !detach) A = A + (vr - (zz + th)) * sg;                       \
            T_ gu = A * gvb[j];                                                                      \
            gu = gu + gsr[j] * sg;                                                                   \
            const T_ gI = gu + f * gib[j];                                                           \
            gib[j] = gI;                                                                             \
            gb[j] = gI;                                                                              \
            gvb[j] = dm * gu;                                                                        \
        }                                                                                            \
        stream_out(gxr, gb, sizeof(T_) * (size_t)n, nt);                                             \
    }                                                                                                \
    for (int64_t j = 0; j < n; ++j) { gv[j] = gvb[j]; gi[j] = gib[j]; }                              \
}                                                                                                    \
                                                                                                     \
/* fast_bwd for any built-in surrogate, reset mode and detach flag (steps T-1..0, one whole block) */ \
CLONES static void fast_bwd_any_##SFX(int64_t M, int64_t T, const T_ *z, int64_t z_step, int sur, \
                               T_ slope, const T_ *gs, int64_t s_step, T_ dm, T_ ds, T_ th, T_ vr,   \
                               int reset, int detach, T_ *gv, T_ *gi, T_ *gx)                        \
{                                                                                                    \
    switch (sur) {                                                                                   \
    case SUR_FAST_SIGMOID: FAST_BWD_RESETS(SFX, SUR_FAST_SIGMOID); break;                            \
    case SUR_ATAN: FAST_BWD_RESETS(SFX, SUR_ATAN); break;                                            \
    case SUR_TRIANGLE: FAST_BWD_RESETS(SFX, SUR_TRIANGLE); break;                                    \
    default: FAST_BWD_RESETS(SFX, SUR_BOXCAR);                                                       \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
INLINE void lif_row_bwd_##SFX(int64_t n, const T_ *restrict z, const T_ *restrict sg, int sur,        \
                              T_ slope, const T_ *restrict gs, const T_ *restrict gvs,               \
                              const T_ *restrict gis, const T_ *restrict dm, const T_ *restrict ds,  \
                              const T_ *restrict th, const T_ *restrict vr, int reset, int detach,   \
                              int last, T_ *restrict gv, T_ *restrict gi, T_ *restrict gx)           \
{                                                                                                    \
    /* Selects between loaded values and 0/1 factors instead of branches, so the loop vectorizes;    \
     * a factor 0 or 1 times a finite number is exact. On held (refractory) steps z = -inf and       \
     * A = 1, sg = 0, gu = gv_t, and i gets no gradient. */                                          \
    const T_ neg_inf = (T_)(-INFINITY);                                                              \
    const T_ k_sub = reset == RESET_SUBTRACT && !detach, k_zero = reset == RESET_ZERO;               \
    const T_ k_zero_nd = reset == RESET_ZERO && !detach, k_last = last ? 1 : 0;                      \
    for (int64_t j = 0; j < n; ++j) {                                                                \
        const T_ gvt = gv[j] + gvs[j];                                                               \
        const T_ zz = z[j], thj = th[j], vrj = vr[j], dsj = ds[j], dmj = dm[j];                      \
        const T_ sgj = surrogate_##SFX(sur, zz, slope, sur == SUR_GIVEN ? sg[j] : (T_)0);            \
        const T_ act = zz > neg_inf ? (T_)1 : (T_)0;                                                 \
        const T_ sgt = zz > neg_inf ? sgj : (T_)0;                                                   \
        const T_ spike = zz > 0 ? (T_)1 : (T_)0;                                                     \
        const T_ u_gap = zz > neg_inf ? vrj - (zz + thj) : (T_)0; /* v_reset - u */                  \
        T_ A = 1 - k_sub * (thj * sgt);    /* dv/du, plus dv/ds * sg when not detached */            \
        A = A - k_zero * spike;                                                                      \
        A = A + k_zero_nd * (u_gap * sgt);                                                           \
        T_ gu = A * gvt;                                                                             \
        gu = gu + gs[j] * sgt;                                                                       \
        T_ gI = act * gu;                                                                            \
        gI = gI + gis[j];                                                                            \
        gI = gI + (k_last + (1 - k_last) * dsj) * gi[j];                                             \
        gi[j] = gI;                                                                                  \
        gx[j] = gI;                                                                                  \
        gv[j] = (zz > neg_inf ? dmj : (T_)1) * gu;                                                   \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
INLINE void li_row_bwd_##SFX(int64_t n, const T_ *restrict gvs, const T_ *restrict gis,              \
                             const T_ *restrict dm, const T_ *restrict ds, int last,                 \
                             T_ *restrict gv, T_ *restrict gi, T_ *restrict gx)                      \
{                                                                                                    \
    const T_ k_last = last ? 1 : 0;                                                                  \
    for (int64_t j = 0; j < n; ++j) {                                                                \
        const T_ gu = gv[j] + gvs[j];                                                                \
        T_ gI = gu + gis[j];                                                                         \
        gI = gI + (k_last + (1 - k_last) * ds[j]) * gi[j];                                           \
        gi[j] = gI;                                                                                  \
        gx[j] = gI;                                                                                  \
        gv[j] = dm[j] * gu;                                                                          \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
void surrogate_grad_##SFX(int64_t n, const T_ *z, T_ *out, int sur, T_ slope)                        \
{                                                                                                    \
    /* the kernels' surrogate derivative at n points, for checking it against the Python grad */   \
    for (int64_t j = 0; j < n; ++j) out[j] = surrogate_##SFX(sur, z[j], slope, 0);                   \
}                                                                                                    \
                                                                                                     \
/* pg_block's forward step: lif_row's update that records the pre-reset membrane u and the current i \
 * (uo, io) instead of z and the spikes; v, i: the state, updated in place. */                       \
INLINE void pg_row_fwd_##SFX(int64_t n, const int R, const T_ *restrict x, T_ *restrict v,           \
                             T_ *restrict i, const T_ *restrict dm, const T_ *restrict ds,           \
                             const T_ *restrict th, const T_ *restrict vr, T_ *restrict uo,          \
                             T_ *restrict io)                                                        \
{                                                                                                    \
    for (int64_t j = 0; j < n; ++j) {                                                                \
        const T_ ii = leak_##SFX(ds[j], i[j], x[j]);  /* i = ds * i + x */                           \
        const T_ u = leak_##SFX(dm[j], v[j], ii);     /* u = dm * v + i */                           \
        const T_ zz = u - th[j], vrj = vr[j];                                                        \
        const T_ after = R == RESET_SUBTRACT ? zz : (R == RESET_ZERO ? vrj : u);                     \
        i[j] = ii;                                                                                   \
        v[j] = zz > 0 ? after : u;                                                                   \
        uo[j] = u;                                                                                   \
        io[j] = ii;                                                                                  \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
/* lif_row_bwd's step t (no refractory period) that also sums, per neuron, the gradients of the     \
 * constants (learnable decays and threshold) into am, as, at (partial sums in T_, flushed into     \
 * double by pg_block every PG_FLUSH steps):                                                        \
 *                                                                                                  \
 *     d dm += gu_{t+1} v_t        d ds += gI_{t+1} i_t        (the terms of step t + 1)            \
 *     d th += -(g_s_t + [not detached] gv_t dv/ds) sg_t + gv_t dv/dth                              \
 *                                                                                                  \
 * dv/ds = -th, dv/dth = -s ("subtract"); dv/ds = v_reset - u, dv/dth = 0 ("zero"); none for "none". \
 * u, ir: the step's pre-reset membrane and current (z = u - th and v_t, after its reset, are       \
 * recomputed from u as the forward computed them; ir zeros at the last step: no step T). gum, gi:  \
 * gu_{t+1} and gI_{t+1} on entry (0 and the final i's gradient at the last step), gu_t and gI_t on \
 * return; f: ds (1 at the last step, where the final i's gradient enters undecayed); pg_block     \
 * adds the terms of step 0. SP == 0: the leaky integrator (li_row_bwd, no th; u = v). */          \
INLINE void pg_row_bwd_##SFX(int64_t n, const int S, const int R, const int D, const int SP, T_ slope, \
                             const T_ *restrict u, const T_ *restrict ir,                           \
                             const T_ *restrict gs, const T_ *restrict gvs, const T_ *restrict gis, \
                             const T_ *restrict dm, const T_ *restrict f, const T_ *restrict th,    \
                             const T_ *restrict vr, T_ *restrict gv, T_ *restrict gi,               \
                             T_ *restrict gum, T_ *restrict gx, T_ *restrict am, T_ *restrict as,   \
                             T_ *restrict at)                                                       \
{                                                                                                   \
    for (int64_t j = 0; j < n; ++j) {                                                               \
        const T_ gvt = gv[j] + gvs[j], uj = u[j];                                                   \
        T_ gu = gvt, vt = uj;                                                                       \
        if (SP) {                                                                                   \
            const T_ thj = th[j], vrj = vr[j], zz = uj - thj;                                       \
            const T_ sg = surrogate_##SFX(S, zz, slope, 0);                                         \
            const T_ spike = zz > 0 ? (T_)1 : (T_)0;                                                \
            const T_ after = R == RESET_SUBTRACT ? zz : (R == RESET_ZERO ? vrj : uj);               \
            vt = zz > 0 ? after : uj;                                                               \
            const T_ u_gap = vrj - uj;                        /* v_reset - u */                     \
            T_ A = 1;                                      /* dv/du, plus dv/ds * sg when not detached */ \
            if (R == RESET_SUBTRACT && !D) A = 1 - thj * sg;                                        \
            if (R == RESET_ZERO) A = A - spike;                                                     \
            if (R == RESET_ZERO && !D) A = A + u_gap * sg;                                          \
            gu = A * gvt;                                                                           \
            gu = gu + gs[j] * sg;                                                                   \
            T_ g = gs[j];                                  /* the spike's gradient */               \
            if (R == RESET_SUBTRACT && !D) g = g - gvt * thj;                                       \
            if (R == RESET_ZERO && !D) g = g + gvt * u_gap;                                         \
            if (R == RESET_SUBTRACT) at[j] -= gvt * spike;    /* dv/dth = -s */                     \
            at[j] -= g * sg;                                                                        \
        }                                                                                           \
        am[j] += gum[j] * vt;                                                                       \
        as[j] += gi[j] * ir[j];                                                                     \
        T_ gI = gu + gis[j];                                                                        \
        gI = gI + f[j] * gi[j];                                                                     \
        gum[j] = gu;                                                                                \
        gi[j] = gI;                                                                                 \
        gx[j] = gI;                                                                                 \
        gv[j] = dm[j] * gu;                                                                         \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* lif_backward for one block of n neurons whose constants want gradients: the forward rerun from x \
 * into buf (u and i of every step: 2 x T x NB values), then the reverse loop of pg_row_bwd. gv,    \
 * gi, gx: the block's columns as in lif_backward; out: its columns of the [3, M] sums (d dm, d ds, \
 * d th). No refractory period; a surrogate the kernels compute. */                                 \
INLINE void pg_block_##SFX(int64_t M, int64_t n, int64_t T, int spiking, const T_ *x, int64_t x_step, \
                           const T_ *v0, const T_ *i0, T_ *buf, int sur, T_ slope, const T_ *g_s,   \
                           int64_t s_step, const T_ *g_vseq, int64_t v_step, const T_ *g_iseq,      \
                           int64_t i_step, const T_ *dm, const T_ *ds, const T_ *th, const T_ *vr,  \
                           int reset, int detach, T_ *gv, T_ *gi, T_ *gx, T_ *out)                  \
{                                                                                                   \
    T_ vb[NB], ib[NB], zeros[NB], ones[NB], gb[NB], gum[NB] __attribute__((aligned(64)));           \
    T_ pm[NB], ps[NB], pt[NB];          /* partial sums of the last steps (at most PG_FLUSH) */     \
    double am[NB], as[NB], at[NB];                                                                  \
    const int nt = (size_t)T * (size_t)M * sizeof(T_) >= STREAM_MIN && n == NB;                     \
    for (int64_t j = 0; j < NB; ++j) { zeros[j] = 0; ones[j] = 1; }                                 \
    for (int64_t j = 0; j < n; ++j) {                                                               \
        vb[j] = v0 ? v0[j] : 0;                                                                     \
        ib[j] = i0 ? i0[j] : 0;                                                                     \
        am[j] = as[j] = at[j] = 0;                                                                  \
        pm[j] = ps[j] = pt[j] = gum[j] = 0;                                                         \
    }                                                                                               \
    T_ *urec = buf, *irec = buf + T * NB;                                                           \
    if (!spiking) PGF_STEPS(T_, SFX, -1);    /* the forward, as fwd_block's, into buf */                \
    else if (reset == RESET_SUBTRACT) PGF_STEPS(T_, SFX, RESET_SUBTRACT);                               \
    else if (reset == RESET_ZERO) PGF_STEPS(T_, SFX, RESET_ZERO);                                       \
    else PGF_STEPS(T_, SFX, RESET_NONE);                                                                \
    for (int64_t t = T - 1; t >= 0; --t) {                                                          \
        const int last = t == T - 1;     /* the final i's gradient enters undecayed, no step T */   \
        const T_ *ur = urec + t * NB, *ir = last ? zeros : irec + t * NB, *f = last ? ones : ds;    \
        const T_ *gsr = g_s ? g_s + t * s_step : zeros, *gvs = g_vseq ? g_vseq + t * v_step : zeros; \
        const T_ *gis = g_iseq ? g_iseq + t * i_step : zeros;                                       \
        if (g_s && s_step && t >= AHEAD)                                                            \
            for (int q = 0; q < NB; q += 64 / (int)sizeof(T_)) __builtin_prefetch(gsr - AHEAD * s_step + q, 0, 0); \
        if (!spiking) PGB_ROW(SFX, SUR_GIVEN, RESET_NONE, 1, 0);                                    \
        else switch (sur) {                                                                         \
        case SUR_FAST_SIGMOID: PGB_RESETS(SFX, SUR_FAST_SIGMOID); break;                            \
        case SUR_ATAN: PGB_RESETS(SFX, SUR_ATAN); break;                                            \
        case SUR_TRIANGLE: PGB_RESETS(SFX, SUR_TRIANGLE); break;                                    \
        default: PGB_RESETS(SFX, SUR_BOXCAR);                                                       \
        }                                                                                           \
        stream_out(gx + t * M, gb, sizeof(T_) * (size_t)n, nt);                                     \
        if (t % PG_FLUSH == 0)                                                                      \
            for (int64_t j = 0; j < n; ++j) {                                                       \
                am[j] += pm[j]; as[j] += ps[j]; at[j] += pt[j];                                     \
                pm[j] = ps[j] = pt[j] = 0;                                                          \
            }                                                                                       \
    }                                                                                               \
    for (int64_t j = 0; j < n; ++j) {    /* the terms of step 0: gu_0 v_init, gI_0 i_init */        \
        out[j] = (T_)(am[j] + (double)gum[j] * (double)(v0 ? v0[j] : 0));                           \
        out[M + j] = (T_)(as[j] + (double)gi[j] * (double)(i0 ? i0[j] : 0));                        \
        out[2 * M + j] = (T_)at[j];                                                                 \
    }                                                                                               \
}                                                                                                   \
/* Steps t1 - 1 down to t0 of one block of n neurons; rows advance by M except zr's (z_step). */    \
INLINE void bwd_block_##SFX(int64_t M, int64_t n, int64_t t0, int64_t t1, int64_t T, int spiking,    \
                            const T_ *z, int64_t z_step, const T_ *sg, int sur, T_ slope,            \
                            const T_ *g_s, int64_t s_step, const T_ *g_vseq, int64_t v_step,         \
                            const T_ *g_iseq, int64_t i_step, const T_ *dm, const T_ *ds,            \
                            const T_ *th, const T_ *vr, int reset, int detach, T_ *gv, T_ *gi,       \
                            T_ *gx)                                                                  \
{                                                                                                    \
    T_ gvb[NB], gib[NB], zeros[NB];                                                                  \
    for (int64_t j = 0; j < n; ++j) { gvb[j] = gv[j]; gib[j] = gi[j]; zeros[j] = 0; }                \
    for (int64_t t = t1 - 1; t >= t0; --t) {                                                         \
        const int64_t k = t - t0, o = k * M;                                                         \
        const T_ *gvs = g_vseq ? g_vseq + k * v_step : zeros;                                        \
        const T_ *gis = g_iseq ? g_iseq + k * i_step : zeros;                                        \
        const int last = t == T - 1;                                                                 \
        if (!spiking) {                                                                              \
            li_row_bwd_##SFX(n, gvs, gis, dm, ds, last, gvb, gib, gx + o);                           \
            continue;                                                                                \
        }                                                                                            \
        const T_ *zr = z + k * z_step, *gsr = g_s ? g_s + k * s_step : zeros;                        \
        switch (sur) { /* a literal surrogate number per call: each compiles to its own loop */      \
        case SUR_FAST_SIGMOID: ROW_BWD(SFX, SUR_FAST_SIGMOID, NULL); break;                          \
        case SUR_ATAN: ROW_BWD(SFX, SUR_ATAN, NULL); break;                                          \
        case SUR_TRIANGLE: ROW_BWD(SFX, SUR_TRIANGLE, NULL); break;                                  \
        case SUR_BOXCAR: ROW_BWD(SFX, SUR_BOXCAR, NULL); break;                                      \
        default: ROW_BWD(SFX, SUR_GIVEN, sg + o);                                                    \
        }                                                                                            \
    }                                                                                                \
    for (int64_t j = 0; j < n; ++j) { gv[j] = gvb[j]; gi[j] = gib[j]; }                              \
}                                                                                                    \
                                                                                                     \
CLONES int lif_backward_##SFX(int64_t M, int64_t a, int64_t b, int nthreads, int64_t t0, int64_t t1, \
                        int64_t T, int spiking, const T_ *z, const T_ *x, int64_t x_step,            \
                        const T_ *v0, const T_ *i0, const T_ *r0, int64_t refractory, const T_ *sg,  \
                        int sur, T_ slope, const T_ *g_s, int64_t s_step, const T_ *g_vseq,          \
                        int64_t v_step, const T_ *g_iseq, int64_t i_step, const T_ *dm,              \
                        const T_ *ds, const T_ *th, const T_ *vr, int64_t pstep, int reset,          \
                        int detach, T_ *gv, T_ *gi, T_ *gx, T_ *pg)                                  \
{                                                                                                    \
    /* Steps t1 - 1 down to t0 of the neurons [a, b). z, sg, gx: rows t0..t1-1 ([t1 - t0, M]); sg   \
     * only when sur == SUR_GIVEN. Spiking with z == NULL: z is recomputed from x (rows 0..T-1,     \
     * advancing x_step) and the initial states v0, i0, r0 ([M]; NULL: zero), and t0 = 0, t1 = T.    \
     * g_s, g_vseq, g_iseq: rows t0..t1-1, each advancing by its *_step elements per step (0: one    \
     * row for every step). gv, gi [M]: running gradients of v_t and i_t, updated in place (start    \
     * them at the gradients of the final state); T is the whole sequence's length. Returns 0, or   \
     * 1 if the recomputation's buffer could not be allocated (nothing is then written). pg: NULL,   \
     * or [3, M] that receives the gradients of dm, ds and th summed over the steps (pg_block: x    \
     * given, t0 = 0, t1 = T, no refractory period, a surrogate the kernels compute; also for LI). */\
    const int recompute = spiking && z == NULL;  /* pg (the constants' gradients): x given, z NULL */                                                      \
    const int fast = spiking && refractory == 0 && g_vseq == NULL && g_iseq == NULL && pstep == 0    \
                     && sur != SUR_GIVEN && t0 == 0 && t1 == T && !pg;                                      \
    int failed = 0;                                                                                  \
    _Pragma("omp parallel num_threads(nthreads) if(nthreads > 1) reduction(|:failed)")               \
    {                                                                                                \
        const int64_t k = spikegrad_thread_num(), nt = spikegrad_num_threads();                      \
        const int64_t lo = share(a, b, k, nt), hi = share(a, b, k + 1, nt);                          \
        T_ *buf = (recompute || pg) && hi > lo ? (T_ *)malloc(sizeof(T_) * (size_t)((pg ? 2 : 1) * T * NB)) : NULL; \
        if ((recompute || pg) && hi > lo && buf == NULL) failed = 1;                                         \
        T_ zeros[NB];                                                                                \
        for (int64_t j = 0; j < NB; ++j) zeros[j] = 0;                                               \
        for (int64_t j0 = lo; j0 < hi && !failed; j0 += NB) {                                        \
            const int64_t n = j0 + NB < hi ? NB : hi - j0, pj = pstep ? j0 : 0;                      \
            if (pg) {    /* whole blocks with a literal length: the loops unroll */                 \
                if (n == NB) PG_BLOCK(SFX, NB);                                                     \
                else PG_BLOCK(SFX, n);                                                              \
                continue;                                                                           \
            }                                                                                       \
            const T_ *zb = z ? z + j0 : NULL;                                                        \
            int64_t z_step = M;                                                                      \
            if (fast && n == NB) {   /* whole blocks; a last partial block takes the general loop */ \
                if (recompute) {                                                                     \
                    T_ vb[NB], ib[NB];                                                               \
                    for (int64_t j = 0; j < n; ++j) {                                                \
                        vb[j] = v0 ? v0[j0 + j] : 0;                                                 \
                        ib[j] = i0 ? i0[j0 + j] : 0;                                                 \
                    }                                                                                \
                    fast_fwd_any_##SFX(T, M, x + j0, x_step, vb, ib, dm[0], ds[0], th[0], vr[0],  \
                                       reset, NULL, buf, NB);                                        \
                    zb = buf;                                                                        \
                    z_step = NB;                                                                     \
                }                                                                                    \
                fast_bwd_any_##SFX(M, T, zb, z_step, sur, slope, g_s ? g_s + j0 : zeros,          \
                                   g_s ? s_step : 0, dm[0], ds[0], th[0], vr[0], reset, detach,      \
                                   gv + j0, gi + j0, gx + j0);                                       \
                continue;                                                                            \
            }                                                                                        \
            if (recompute) {                                                                         \
                T_ vb[NB], ib[NB], rb[NB];                                                           \
                for (int64_t j = 0; j < n; ++j) {                                                    \
                    vb[j] = v0 ? v0[j0 + j] : 0;                                                     \
                    ib[j] = i0 ? i0[j0 + j] : 0;                                                     \
                    rb[j] = r0 ? r0[j0 + j] : 0;                                                     \
                }                                                                                    \
                fwd_block_##SFX(T, M, n, 1, x + j0, x_step, vb, ib, rb, dm + pj,     \
                        ds + pj, th + pj, vr + pj, reset, refractory, NULL, buf, NB, NULL, NULL,     \
                        NULL);                                                                       \
                zb = buf;                                                                            \
                z_step = NB;                                                                         \
            }                                                                                        \
            bwd_block_##SFX(M, n, t0, t1, T, spiking, zb, z_step,                    \
                    sg ? sg + j0 : NULL, sur, slope, g_s ? g_s + j0 : NULL, s_step,                  \
                    g_vseq ? g_vseq + j0 : NULL, v_step, g_iseq ? g_iseq + j0 : NULL, i_step,        \
                    dm + pj, ds + pj, th ? th + pj : NULL, vr ? vr + pj : NULL, reset, detach,       \
                    gv + j0, gi + j0, gx + j0);                                                      \
        }                                                                                            \
        free(buf);                                                                                   \
        stream_done();                                                                               \
    }                                                                                                \
    return failed;                                                                                   \
}                                                                                                    \

DEFINE_LIF(float, f32)
DEFINE_LIF(double, f64)

/* Version of this interface; build.py refuses a library whose number differs. */
int spikegrad_lif_abi(void) { return 13; }
