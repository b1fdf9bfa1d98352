/* Fused LIF / LI time loops for CPU tensors, forward and backward, in float32 and float64.
 *
 * Built on first use by spikegrad/kernels/native.py (any C99 compiler) and called through ctypes
 * on the data pointers of contiguous tensors. Each call handles the neurons [a, b) of flat
 * [T, M] sequences (row t at offset t * M), so several threads can share one sequence. Neurons
 * are processed in blocks whose state stays in cache over the whole time loop; every inner loop
 * is branch-free (selects only), so the compiler vectorizes it.
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
 * the surrogate derivative sg = grad(z) that the caller computed from z with any registered
 * surrogate:
 *
 *     gv_t += g_vseq_t                              (the recorded v_t, if any)
 *     gu    = g_s * sg + A * gv_t                   A = dv/du (+ dv/ds * sg if not detached)
 *     gI_t  = act * gu + g_iseq_t + ds * gI_{t+1}   (the gradient of the final i starts gI)
 *     gx_t  = gI_t                gv_{t-1} = act ? dm * gu : gu
 *
 * Without spikes (spikes == NULL forward, z == NULL backward) the neuron does not spike: that is
 * the leaky integrator LI, whose output is the recorded membrane v.
 */

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#define RESET_SUBTRACT 0
#define RESET_ZERO 1
#define SUR_GIVEN 0 /* surrogate derivatives computed by the caller */
#define SUR_FAST_SIGMOID 1
#define SUR_ATAN 2
#define SUR_TRIANGLE 3
#define SUR_BOXCAR 4
#define ABS(x) ((x) < 0 ? -(x) : (x))
#define BLOCK 512 /* neurons per block */

/* One copy of each entry point per vector width, picked when the library loads (GCC and Clang
 * on x86-64 Linux); elsewhere the compiler's baseline. */
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(SPIKEGRAD_NO_CLONES)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

#define DEFINE_LIF(T_, SFX)                                                                          \
                                                                                                     \
/* a * b + c in two roundings (as PyTorch's mul then add: the file forbids fused multiply-adds) */   \
static inline T_ leak_##SFX(T_ a, T_ b, T_ c) { return a * b + c; }                                  \
                                                                                                     \
static inline void lif_row_##SFX(int64_t n, const T_ *restrict x, T_ *restrict v, T_ *restrict i,    \
                          const T_ *restrict dm, const T_ *restrict ds, const T_ *restrict th,       \
                          const T_ *restrict vr, int reset, T_ *restrict s, T_ *restrict z,          \
                          T_ *restrict vo, T_ *restrict io)                                          \
{                                                                                                    \
    for (int64_t j = 0; j < n; ++j) {                                                                \
        const T_ ii = leak_##SFX(ds[j], i[j], x[j]);  /* i = ds * i + x */                           \
        T_ u = leak_##SFX(dm[j], v[j], ii);           /* u = dm * v + i */                           \
        const T_ zz = u - th[j], vrj = vr[j]; /* loads outside selects: the loop vectorizes */       \
        const T_ after = reset == RESET_SUBTRACT ? zz : (reset == RESET_ZERO ? vrj : u);             \
        const T_ vn = zz > 0 ? after : u;                                                            \
        i[j] = ii;                                                                                   \
        v[j] = vn;                                                                                   \
        s[j] = zz > 0 ? (T_)1 : (T_)0;                                                               \
        z[j] = zz;                                                                                   \
        vo[j] = vn;                                                                                  \
        io[j] = ii;                                                                                  \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
static inline void lif_row_refr_##SFX(int64_t n, const T_ *restrict x, T_ *restrict v, T_ *restrict i, \
                               T_ *restrict r, const T_ *restrict dm, const T_ *restrict ds,         \
                               const T_ *restrict th, const T_ *restrict vr, int reset, T_ period,   \
                               T_ *restrict s, T_ *restrict z, T_ *restrict vo, T_ *restrict io,     \
                               T_ *restrict ro)                                                      \
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
static inline void li_row_##SFX(int64_t n, const T_ *restrict x, T_ *restrict v, T_ *restrict i,     \
                         const T_ *restrict dm, const T_ *restrict ds, T_ *restrict vo,              \
                         T_ *restrict io)                                                            \
{                                                                                                    \
    for (int64_t j = 0; j < n; ++j) {                                                                \
        const T_ ii = leak_##SFX(ds[j], i[j], x[j]);  /* i = ds * i + x */                           \
        T_ u = leak_##SFX(dm[j], v[j], ii);           /* u = dm * v + i */                           \
        i[j] = ii;                                                                                   \
        v[j] = u;                                                                                    \
        vo[j] = u;                                                                                   \
        io[j] = ii;                                                                                  \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
CLONES void lif_forward_##SFX(int64_t T, int64_t M, int64_t a, int64_t b, const T_ *x, T_ *v, T_ *i, \
                       T_ *r, const T_ *dm, const T_ *ds, const T_ *th, const T_ *vr, int64_t pstep, \
                       int reset, int64_t refractory, T_ *spikes, T_ *z, T_ *v_rec, T_ *i_rec, T_ *r_rec,        \
                       int64_t x_step)                                                               \
{                                                                                                    \
    /* rows of the outputs that were not asked for go to these scratch buffers; x advances by        \
     * x_step elements per step (M, or 0 for an input held constant over time) */                    \
    T_ sink_z[BLOCK], sink_v[BLOCK], sink_i[BLOCK], sink_r[BLOCK];                                   \
    for (int64_t t = 0; t < T; ++t) {      /* whole rows in order: streams the prefetcher follows */ \
        for (int64_t j0 = a; j0 < b; j0 += BLOCK) {                                                  \
            const int64_t n = j0 + BLOCK < b ? BLOCK : b - j0;                                       \
            const int64_t o = t * M + j0, pj = pstep ? j0 : 0; /* constants: per neuron or one BLOCK */ \
            const T_ *xo = x + t * x_step + j0;                                                      \
            T_ *vo = v_rec ? v_rec + o : sink_v, *io = i_rec ? i_rec + o : sink_i;                   \
            if (spikes == NULL) {                                                                    \
                li_row_##SFX(n, xo, v + j0, i + j0, dm + pj, ds + pj, vo, io);                    \
                continue;                                                                            \
            }                                                                                        \
            T_ *zo = z ? z + o : sink_z;                                                             \
            if (refractory > 0)                                                                      \
                lif_row_refr_##SFX(n, xo, v + j0, i + j0, r + j0, dm + pj, ds + pj, th + pj,      \
                                   vr + pj, reset, (T_)refractory, spikes + o, zo, vo, io,           \
                                   r_rec ? r_rec + o : sink_r);                                      \
            else                                                                                     \
                lif_row_##SFX(n, xo, v + j0, i + j0, dm + pj, ds + pj, th + pj, vr + pj, reset,   \
                              spikes + o, zo, vo, io);                                               \
        }                                                                                            \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
static inline void lif_row_bwd_##SFX(int64_t n, const T_ *restrict z, const T_ *restrict sg,         \
                              const T_ *restrict gs, const T_ *restrict gvs, const T_ *restrict gis, \
                              const T_ *restrict dm, const T_ *restrict ds, const T_ *restrict th,   \
                              const T_ *restrict vr, int reset, int detach, int last,                \
                              T_ *restrict gv, T_ *restrict gi, T_ *restrict gx)                     \
{                                                                                                    \
    /* Selects between loaded values and 0/1 factors instead of branches, so the loop vectorizes;    \
     * a factor 0 or 1 times a finite number is exact. On held (refractory) steps z = -inf and       \
     * A = 1, sg = 0, gu = gv_t, and i gets no gradient. */                                          \
    const T_ neg_inf = (T_)(-INFINITY);                                                              \
    const T_ k_sub = reset == RESET_SUBTRACT && !detach, k_zero = reset == RESET_ZERO;               \
    const T_ k_zero_nd = reset == RESET_ZERO && !detach, k_last = last ? 1 : 0;                      \
    for (int64_t j = 0; j < n; ++j) {                                                                \
        const T_ gvt = gv[j] + gvs[j];                                                               \
        const T_ zz = z[j], sgj = sg[j], thj = th[j], vrj = vr[j], dsj = ds[j], dmj = dm[j];         \
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
static inline void li_row_bwd_##SFX(int64_t n, const T_ *restrict gvs, const T_ *restrict gis,       \
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
static inline void surrogate_row_##SFX(int64_t n, const T_ *restrict z, T_ *restrict out, int sur,      \
                                       T_ slope)                                                    \
{                                                                                                    \
    /* the grad(x, slope) of spikegrad.surrogates' rational surrogates, at x = z */                 \
    const T_ half_pi_slope = (T_)1.5707963267948966 * slope, half_slope = slope / 2;                \
    const T_ box = (T_)0.5 / slope;                                                                  \
    switch (sur) {                                                                                   \
    case SUR_FAST_SIGMOID: /* (1 + slope |x|)^-2 */                                                  \
        for (int64_t j = 0; j < n; ++j) {                                                            \
            const T_ d = 1 + slope * ABS(z[j]);                                                      \
            out[j] = 1 / (d * d);                                                                    \
        }                                                                                            \
        break;                                                                                       \
    case SUR_ATAN: /* (slope / 2) / (1 + (pi / 2 slope x)^2) */                                     \
        for (int64_t j = 0; j < n; ++j) {                                                            \
            const T_ q = half_pi_slope * z[j];                                                       \
            out[j] = half_slope / (1 + q * q);                                                       \
        }                                                                                            \
        break;                                                                                       \
    case SUR_TRIANGLE: /* slope max(1 - slope |x|, 0) */                                             \
        for (int64_t j = 0; j < n; ++j) {                                                            \
            const T_ q = 1 - slope * ABS(z[j]);                                                      \
            out[j] = slope * (q > 0 ? q : 0);                                                        \
        }                                                                                            \
        break;                                                                                       \
    default: /* SUR_BOXCAR: slope where |x| < 0.5 / slope */                                         \
        for (int64_t j = 0; j < n; ++j) out[j] = ABS(z[j]) < box ? slope : 0;                        \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
void surrogate_grad_##SFX(int64_t n, const T_ *z, T_ *out, int sur, T_ slope)                     \
{                                                                                                    \
    /* the kernels' surrogate derivative at n points, for checking it against the Python grad */   \
    surrogate_row_##SFX(n, z, out, sur, slope);                                                      \
}                                                                                                    \
                                                                                                     \
CLONES void lif_backward_##SFX(int64_t M, int64_t a, int64_t b, int64_t t0, int64_t t1, int64_t T,   \
                        const T_ *z, const T_ *sg, int sur, T_ slope, const T_ *g_s, int64_t s_step, \
                        const T_ *g_vseq, int64_t v_step, const T_ *g_iseq, int64_t i_step,          \
                        const T_ *dm, const T_ *ds, const T_ *th, const T_ *vr, int64_t pstep,       \
                        int reset,                                                                   \
                        int detach, T_ *gv, T_ *gi, T_ *gx)                                          \
{                                                                                                    \
    /* Steps t1 - 1 down to t0 of the neurons [a, b). z, gx: rows t0..t1-1 ([t1 - t0, M]); sg: the  \
     * same rows of surrogate derivatives when sur == SUR_GIVEN, else unused (computed from z).     \
     * g_s, g_vseq, g_iseq: the same rows, each advancing by its *_step elements per step (0: one    \
     * row for every step). gv, gi [M]: running gradients of v_t and i_t, updated in place (start    \
     * them at the gradients of the final state); T is the whole sequence's length. */               \
    T_ zeros[BLOCK], sg_buf[BLOCK];                                                                  \
    for (int64_t j = 0; j < BLOCK; ++j) zeros[j] = 0;                                                \
    for (int64_t t = t1 - 1; t >= t0; --t) {                                                         \
        const int64_t k = t - t0;                                                                    \
        for (int64_t j0 = a; j0 < b; j0 += BLOCK) {                                                  \
            const int64_t n = j0 + BLOCK < b ? BLOCK : b - j0, o = k * M + j0, pj = pstep ? j0 : 0; \
            const T_ *gvs = g_vseq ? g_vseq + k * v_step + j0 : zeros;                               \
            const T_ *gis = g_iseq ? g_iseq + k * i_step + j0 : zeros;                               \
            if (z == NULL) {                                                                         \
                li_row_bwd_##SFX(n, gvs, gis, dm + pj, ds + pj, t == T - 1, gv + j0, gi + j0, gx + o); \
                continue;                                                                            \
            }                                                                                        \
            const T_ *sgr = sg_buf;                                                                  \
            if (sur == SUR_GIVEN)                                                                    \
                sgr = sg + o;                                                                        \
            else                                                                                     \
                surrogate_row_##SFX(n, z + o, sg_buf, sur, slope);                                   \
            lif_row_bwd_##SFX(n, z + o, sgr, g_s ? g_s + k * s_step + j0 : zeros, gvs, gis, dm + pj,  \
                              ds + pj, th + pj, vr + pj, reset, detach, t == T - 1, gv + j0,         \
                              gi + j0, gx + o);                                                      \
        }                                                                                            \
    }                                                                                                \
}

DEFINE_LIF(float, f32)
DEFINE_LIF(double, f64)

/* Version of this interface; native.py refuses a library whose number differs. */
int spikegrad_lif_abi(void) { return 7; }
