/* Fused recurrent LIF and ALIF layers for CPU tensors, float32 and float64 (the C engine of
 * spikegrad/kernels/recurrent.py; built into the same library as lif.c).
 *
 * Layout: sequences [T, B, N] (element (t, b, n) at t * B * N + b * N + n), states [B, N],
 * neuron constants [N], wt = w_rec^T [N_pre, N_post] (row j: what a spike of neuron j adds).
 *
 * Forward, the whole time loop in one call. Batch rows are independent, so each thread runs its
 * rows through every step with no barrier. Per row and step the recurrent input is the sum of the
 * rows of wt of the neurons that spiked at the previous step (in increasing order of j, from a list
 * of their indices), then the update of spikegrad.functional.recurrent_lif_step / recurrent_alif_step
 * with the operations and roundings of the fused PyTorch loop (compiled with -ffp-contract=off):
 *
 *     c = sum_j wt[j] + x          (r0 + x at step 0 when the caller gives the product r0)
 *     i = ds * i + c               u = dm * v + i          (u: the pre-reset membrane)
 *     th = beta * a + v_th (ALIF)  s = u > th              v = s ? reset(u, th) : u
 *     a = da * a + s * (1 - da) (ALIF)
 *
 * Backward, one reverse step per call: the caller runs the step's one dense product
 * R = gI_{t+1} @ W (BLAS) between calls. Per element, with sg the surrogate derivative at u - th
 * and gv = dm gu_{t+1} + (gradient arriving at v_t):
 *
 *     gu_t = sg (dL/ds_t + R) + B1 gv  [+ sg (1 - da) ga_t]     B1 = dv/du + dv/ds sg (not detached)
 *     ga_{t-1} = da ga_t - beta gu_t + AR beta gv (+ arriving)  AR = dv/du + dv/dth: 1 - s, or 1
 *     gI_t = gu_t + ds gI_{t+1} (+ arriving at i_t)             (= dL/dx_t)
 *
 * and the weight gradient gW^T [N_pre, N_post] gets, for every spike (b, j) of step t, the row
 * gI_{t+1}[b] added to its row j (in the call of step t, which reads s_t anyway: the spikes as bits,
 * then per column j the list of its rows b; the columns split among the threads in words of 64, so
 * that no two threads write one row).
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "kernels.h"

/* Unaligned stores of 64-byte vectors (one AVX-512 register, two AVX2 or four SSE ones; VLOAD loads them) */
#define VSTORE(V, p, v) (*(V *)(p) = (v))
/* The loop after it has no dependence between iterations: its outputs overlap none of its inputs
 * (more arrays than the compiler checks for overlap at run time) */
#if defined(__GNUC__) && !defined(__clang__)
#define IVDEP _Pragma("GCC ivdep")
#else
#define IVDEP
#endif

/* The slots of rec_backward_at's descriptor (int64 each; pointers as integers, 0 for NULL): sizes,
 * settings, then the sequences (RB_U, RB_A: arrays of the pointers of blocks of blk steps), the
 * arriving gradients (each advancing its *_STEP elements per step: 0 for one held over time; RB_GV,
 * RB_GI at the last step only unless the states are recorded; RB_GA: at the recorded a), the
 * buffers, the constants and gW^T.
 * Its order is recurrent.py's _DESCRIPTOR. */
enum { RB_B, RB_N, RB_T, RB_THREADS, RB_SUR, RB_RESET, RB_DETACH, RB_REC, RB_BLK, RB_U, RB_S, RB_A, RB_A0,
       RB_GS, RB_GS_STEP, RB_GV, RB_GV_STEP, RB_GI, RB_GI_STEP, RB_GA, RB_GA_STEP, RB_R, RB_GU, RB_GU_ROWS, RB_GX, RB_GAB, RB_GA_ROWS,
       RB_DM, RB_DS, RB_DA, RB_BETA, RB_TH, RB_VR, RB_GWT, RB_SLOTS };
#define DPTR(T_, v) ((T_ *)(intptr_t)(v))
#define BLOCKS(v) ((const int64_t *)(intptr_t)(v))

int spikegrad_thread_num(void);  /* lif.c: this thread's number and its team's size */
int spikegrad_num_threads(void);

/* rec_backward_step's call of the rows for surrogate S, ALIF or LIF (literals at each call) */
#define REC_BWD_ROWS(SFX, S, A)                                                                      \
    rec_bwd_rows_##SFX(b0, b1, N, S, slope, reset, detach, A, u, s, ap, gs, gvin, gaa, gi, R, gun, gxn, \
                       ga, ga_out, gu_out, gx_out, dm, ds, da, beta, th, vr, z0)
#define REC_BWD_KINDS(SFX, S)                                                                        \
    do {                                                                                             \
        if (adaptive) REC_BWD_ROWS(SFX, S, 1);                                                       \
        else REC_BWD_ROWS(SFX, S, 0);                                                                \
    } while (0)

#define DEFINE_RECURRENT(T_, SFX)                                                                    \
typedef T_ rvec_##SFX __attribute__((vector_size(64), aligned(sizeof(T_)), may_alias));              \
                                                                                                     \
                                                                                                     \
/* out[n] = ((init[n] + rows[idx[0]][n]) + rows[idx[1]][n] + ...) (+ tail[n] when TAIL, a literal at \
 * each call), the m rows of rows [.., N] added in order; out may be init. Four vectors of out at a  \
 * time stay in registers while every row is added to them. */                                       \
INLINE void rec_sum_rows_##SFX(int64_t N, const T_ *init, const T_ *rows, const int64_t *idx,        \
                               int64_t m, const int TAIL, const T_ *tail, T_ *out)                   \
{                                                                                                    \
    typedef rvec_##SFX V_;                                                                           \
    const int64_t L = (int64_t)(sizeof(V_) / sizeof(T_));                                            \
    int64_t n = 0;                                                                                   \
    for (; n + 4 * L <= N; n += 4 * L) {                                                             \
        V_ a0 = VLOAD(V_, init + n), a1 = VLOAD(V_, init + n + L), a2 = VLOAD(V_, init + n + 2 * L), \
           a3 = VLOAD(V_, init + n + 3 * L);                                                         \
        for (int64_t k = 0; k < m; ++k) {                                                            \
            const T_ *rk = rows + idx[k] * N + n;                                                    \
            a0 += VLOAD(V_, rk);                                                                     \
            a1 += VLOAD(V_, rk + L);                                                                 \
            a2 += VLOAD(V_, rk + 2 * L);                                                             \
            a3 += VLOAD(V_, rk + 3 * L);                                                             \
        }                                                                                            \
        if (TAIL) {                                                                                  \
            a0 += VLOAD(V_, tail + n);                                                               \
            a1 += VLOAD(V_, tail + n + L);                                                           \
            a2 += VLOAD(V_, tail + n + 2 * L);                                                       \
            a3 += VLOAD(V_, tail + n + 3 * L);                                                       \
        }                                                                                            \
        VSTORE(V_, out + n, a0);                                                                     \
        VSTORE(V_, out + n + L, a1);                                                                 \
        VSTORE(V_, out + n + 2 * L, a2);                                                             \
        VSTORE(V_, out + n + 3 * L, a3);                                                             \
    }                                                                                                \
    for (; n + L <= N; n += L) {                                                                     \
        V_ a0 = VLOAD(V_, init + n);                                                                 \
        for (int64_t k = 0; k < m; ++k) a0 += VLOAD(V_, rows + idx[k] * N + n);                      \
        if (TAIL) a0 += VLOAD(V_, tail + n);                                                         \
        VSTORE(V_, out + n, a0);                                                                     \
    }                                                                                                \
    for (; n < N; ++n) {                                                                             \
        T_ a0 = init[n];                                                                             \
        for (int64_t k = 0; k < m; ++k) a0 += rows[idx[k] * N + n];                                  \
        out[n] = TAIL ? a0 + tail[n] : a0;                                                           \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
/* The indices of the nonzero values of s [N] into idx, in order; returns their number (a bit mask \
 * per 64 values, then its set bits) */                                                              \
INLINE int64_t rec_active_##SFX(int64_t N, const T_ *restrict s, int64_t *restrict idx)              \
{                                                                                                    \
    int64_t m = 0;                                                                                   \
    for (int64_t n0 = 0; n0 < N; n0 += 64) {                                                         \
        uint64_t bits = nonzero_bits_##SFX(s + n0, N - n0 < 64 ? N - n0 : 64);                       \
        for (; bits != 0; bits &= bits - 1) idx[m++] = n0 + CTZ64(bits);                            \
    }                                                                                                \
    return m;                                                                                        \
}                                                                                                    \
                                                                                                     \
/* One step of one batch row from the input c; outputs s, u, i, v, a (rows, possibly scratch) */    \
INLINE void rec_row_##SFX(int64_t N, const T_ *restrict c, T_ *restrict v, T_ *restrict i,           \
                          T_ *restrict a, const T_ *restrict dm, const T_ *restrict ds,              \
                          const T_ *restrict da, const T_ *restrict beta, const T_ *restrict th,     \
                          const T_ *restrict vr, const int reset, const int adaptive,                \
                          T_ *restrict s, T_ *restrict uo, T_ *restrict io, T_ *restrict vo,         \
                          T_ *restrict ao)                                                           \
{                                                                                                    \
    for (int64_t n = 0; n < N; ++n) {                                                                \
        const T_ ii = ds[n] * i[n] + c[n];                                                           \
        const T_ u = dm[n] * v[n] + ii;                                                              \
        const T_ an = adaptive ? a[n] : (T_)0;                                                       \
        const T_ thv = adaptive ? beta[n] * an + th[n] : th[n];                                      \
        const T_ sp = u > thv ? (T_)1 : (T_)0;                                                       \
        const T_ vrn = vr[n];                                                                        \
        const T_ after = reset == RESET_SUBTRACT ? u - thv : (reset == RESET_ZERO ? vrn : u);        \
        const T_ vn = sp > 0 ? after : u;                                                            \
        i[n] = ii;                                                                                   \
        v[n] = vn;                                                                                   \
        s[n] = sp;                                                                                   \
        uo[n] = u;                                                                                   \
        io[n] = ii;                                                                                  \
        vo[n] = vn;                                                                                  \
        if (adaptive) {                                                                              \
            const T_ dan = da[n], anew = dan * an + sp * ((T_)1 - dan);                              \
            a[n] = anew;                                                                             \
            ao[n] = anew;                                                                            \
        }                                                                                            \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
/* Steps 0..T-1 of the batch rows; x advances x_step per step (B * N, or 0 for an input held over   \
 * time). wt NULL: no recurrence (feed-forward ALIF). r0 [B, N]: the recurrent product of step 0    \
 * (any values); else zprev [B, N]: the spikes before step 0 (0 or not), else none. v, i, a [B, N]: \
 * states, updated in place (a NULL: LIF). spikes: written; u_out, i_out, v_out, a_out: written     \
 * where not NULL. Returns the number of spikes, or -1 if out of memory. */                          \
CLONES int64_t rec_forward_##SFX(int64_t T, int64_t B, int64_t N, int nthreads, const T_ *x,         \
                                 int64_t x_step, const T_ *wt, const T_ *r0, const T_ *zprev, T_ *v, \
                                 T_ *i, T_ *a, const T_ *dm, const T_ *ds, const T_ *da,             \
                                 const T_ *beta, const T_ *th, const T_ *vr, int reset, T_ *spikes,  \
                                 T_ *u_out, T_ *i_out, T_ *v_out, T_ *a_out)                          \
{                                                                                                    \
    const int64_t BN = B * N;                                                                        \
    const int adaptive = a != NULL;                                                                  \
    int64_t total = 0;                                                                               \
    int failed = 0;                                                                                  \
    _Pragma("omp parallel num_threads(nthreads) if(nthreads > 1) reduction(+:total)")                \
    {                                                                                                \
        const int64_t k = spikegrad_thread_num(), nt = spikegrad_num_threads();                      \
        const int64_t b0 = B * k / nt, b1 = B * (k + 1) / nt;                                        \
        T_ *buf = malloc(sizeof(T_) * 5 * (size_t)N);   /* the input c, then sinks for u, i, v, a */ \
        int64_t *idx = malloc(sizeof(int64_t) * (size_t)N);                                          \
        if (buf == NULL || idx == NULL) {                                                            \
            _Pragma("omp atomic write")                                                              \
            failed = 1;                                                                              \
        } else {                                                                                     \
            T_ *c = buf, *sink = buf + N;                                                            \
            for (int64_t b = b0; b < b1; ++b) {                                                      \
                const int64_t rb = b * N;                                                            \
                int64_t nact = 0;                                                                    \
                if (wt != NULL && r0 == NULL && zprev != NULL)                                       \
                    nact = rec_active_##SFX(N, zprev + rb, idx);                                     \
                for (int64_t t = 0; t < T; ++t) {                                                    \
                    const T_ *xr = x + t * x_step + rb;                                              \
                    const T_ *cr = xr;                                                               \
                    if (t == 0 && wt != NULL && r0 != NULL) {                                        \
                        for (int64_t n = 0; n < N; ++n) c[n] = r0[rb + n] + xr[n];                   \
                        cr = c;                                                                      \
                    } else if (nact > 0) {                                                           \
                        rec_sum_rows_##SFX(N, wt + idx[0] * N, wt, idx + 1, nact - 1, 1, xr, c);     \
                        cr = c;                                                                      \
                    }                                                                                \
                    const int64_t o = t * BN + rb;                                                   \
                    T_ *sr = spikes + o;                                                             \
                    T_ *uo = u_out ? u_out + o : sink, *io = i_out ? i_out + o : sink + N;           \
                    T_ *vo = v_out ? v_out + o : sink + 2 * N, *ao = a_out ? a_out + o : sink + 3 * N; \
                    if (adaptive)                                                                    \
                        rec_row_##SFX(N, cr, v + rb, i + rb, a + rb, dm, ds, da, beta, th, vr, reset, \
                                      1, sr, uo, io, vo, ao);                                        \
                    else                                                                             \
                        rec_row_##SFX(N, cr, v + rb, i + rb, NULL, dm, ds, da, beta, th, vr, reset,  \
                                      0, sr, uo, io, vo, ao);                                        \
                    nact = rec_active_##SFX(N, sr, idx);                                             \
                    total += nact;                                                                   \
                    if (wt == NULL) nact = 0;    /* no recurrence: the input alone */                \
                }                                                                                    \
            }                                                                                        \
        }                                                                                            \
        free(buf);                                                                                   \
        free(idx);                                                                                   \
    }                                                                                                \
    return failed ? -1 : total;                                                                      \
}                                                                                                    \
                                                                                                     \
/* The backward step of the elements of rows [b0, b1) for surrogate S and ALIF or not (A), literals   \
 * at each call; absent inputs (NULL) read the zero row z0 [N] */                                    \
INLINE void rec_bwd_rows_##SFX(int64_t b0, int64_t b1, int64_t N, const int S, T_ slope,             \
                               const int reset, const int detach, const int A, const T_ *u,          \
                               const T_ *s, const T_ *ap, const T_ *gs, const T_ *gvin,              \
                               const T_ *gaa, const T_ *gi, const T_ *R, const T_ *gun,              \
                               const T_ *gxn, const T_ *ga, T_ *ga_out, T_ *gu_out, T_ *gx_out,      \
                               const T_ *restrict dm, const T_ *restrict ds,                         \
                               const T_ *restrict da, const T_ *restrict beta,                       \
                               const T_ *restrict th, const T_ *restrict vr, const T_ *z0)           \
{                                                                                                    \
    /* the reset mode and detach flag as 0/1 factors (exact: a term times 0 adds 0), so that the     \
     * loop has no branch and vectorizes */                                                          \
    const T_ k_sub = reset == RESET_SUBTRACT && !detach, k_zero = reset == RESET_ZERO;               \
    const T_ k_zero_nd = reset == RESET_ZERO && !detach, k_nd = !detach, k_ar = reset != RESET_NONE; \
    for (int64_t b = b0; b < b1; ++b) {                                                              \
        const int64_t rb = b * N;                                                                    \
        const T_ *restrict ur = u + rb, *restrict sr = s + rb, *restrict apr = A ? ap + rb : z0;     \
        const T_ *restrict gsr = gs ? gs + rb : z0, *restrict gvr = gvin ? gvin + rb : z0;           \
        const T_ *restrict gar = gaa ? gaa + rb : z0, *restrict gir = gi ? gi + rb : z0;             \
        const T_ *restrict Rr = R ? R + rb : z0, *restrict gunr = gun ? gun + rb : z0;               \
        const T_ *restrict gxnr = gxn ? gxn + rb : z0, *restrict gat = A ? ga + rb : z0;             \
        T_ *restrict gao = A ? ga_out + rb : NULL, *restrict guo = gu_out + rb, *restrict gxo = gx_out + rb; \
        IVDEP for (int64_t n = 0; n < N; ++n) {                                                      \
            const T_ uu = ur[n], ss = sr[n];                                                         \
            const T_ thc = A ? beta[n] * apr[n] + th[n] : th[n];                                     \
            const T_ sg = surrogate_##SFX(S, uu - thc, slope, 0);                                    \
            const T_ gv = dm[n] * gunr[n] + gvr[n];                                                  \
            /* B1 = dv/du + dv/ds sg: 1 - sg th (subtract), 1 - s + sg (v_reset - u) (zero), 1 */    \
            const T_ b1c = ((1 - k_zero * ss) - k_sub * (sg * thc)) + k_zero_nd * (sg * (vr[n] - uu)); \
            T_ gu = sg * (gsr[n] + Rr[n]) + b1c * gv;                                                \
            if (A) {                                                                                 \
                const T_ g = gat[n], dan = da[n], bn = beta[n];                                      \
                gu = gu + k_nd * (sg * ((T_)1 - dan) * g);                                           \
                const T_ ar = 1 - k_ar * ss;                                                         \
                gao[n] = dan * g - bn * gu + ar * bn * gv + gar[n];                                  \
            }                                                                                        \
            guo[n] = gu;                                                                             \
            gxo[n] = gu + ds[n] * gxnr[n] + gir[n];                                                  \
        }                                                                                            \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
/* The bits of the nonzero values of the rows [b0, b1) of s [B, N]: word w of row b (bit q: column   \
 * 64 w + q) in bits[b * W + w], W = ceil(N / 64) */                                                 \
INLINE void rec_row_bits_##SFX(int64_t b0, int64_t b1, int64_t N, const T_ *restrict s,              \
                               uint64_t *restrict bits)                                              \
{                                                                                                    \
    const int64_t W = (N + 63) / 64;                                                                 \
    for (int64_t b = b0; b < b1; ++b)                                                                \
        for (int64_t w = 0; w < W; ++w)                                                              \
            bits[b * W + w] = nonzero_bits_##SFX(s + b * N + 64 * w, N - 64 * w < 64 ? N - 64 * w : 64); \
}                                                                                                    \
                                                                                                     \
/* gwt [N, N] += for every spike (b, j) in bits (rec_row_bits' layout) the row g[b] [N] added to row \
 * j, for the columns j of the words [w0, w1): per column the list of its rows b (increasing), then  \
 * their sum (rec_sum_rows). Returns 0, or 1 if out of memory. */                                    \
INLINE int rec_weight_rows_##SFX(int64_t B, int64_t N, int64_t w0, int64_t w1, const uint64_t *bits, \
                                 const T_ *g, T_ *gwt)                                               \
{                                                                                                    \
    const int64_t W = (N + 63) / 64, c0 = 64 * w0, c1 = 64 * w1 < N ? 64 * w1 : N;                   \
    if (c1 <= c0) return 0;                                                                          \
    int64_t *off = calloc((size_t)(c1 - c0 + 1), sizeof(int64_t));                                   \
    if (off == NULL) return 1;                                                                       \
    for (int64_t b = 0; b < B; ++b)              /* spikes per column, in off[c - c0 + 1] */          \
        for (int64_t w = w0; w < w1; ++w)                                                            \
            for (uint64_t m = bits[b * W + w]; m != 0; m &= m - 1) ++off[64 * (w - w0) + CTZ64(m) + 1]; \
    for (int64_t c = 0; c < c1 - c0; ++c) off[c + 1] += off[c];                                      \
    int64_t *rows = malloc(sizeof(int64_t) * (size_t)(off[c1 - c0] + 1));                            \
    int64_t *fill = malloc(sizeof(int64_t) * (size_t)(c1 - c0));                                     \
    int failed = rows == NULL || fill == NULL;                                                       \
    if (!failed) {                                                                                   \
        memcpy(fill, off, sizeof(int64_t) * (size_t)(c1 - c0));                                      \
        for (int64_t b = 0; b < B; ++b)                                                              \
            for (int64_t w = w0; w < w1; ++w)                                                        \
                for (uint64_t m = bits[b * W + w]; m != 0; m &= m - 1)                               \
                    rows[fill[64 * (w - w0) + CTZ64(m)]++] = b;                                      \
        for (int64_t j = c0; j < c1; ++j) {                                                          \
            const int64_t m = off[j - c0 + 1] - off[j - c0];                                         \
            if (m > 0) rec_sum_rows_##SFX(N, gwt + j * N, g, rows + off[j - c0], m, 0, NULL, gwt + j * N); \
        }                                                                                            \
    }                                                                                                \
    free(off);                                                                                       \
    free(rows);                                                                                      \
    free(fill);                                                                                      \
    return failed;                                                                                   \
}                                                                                                    \
                                                                                                     \
/* The reverse step t of the layer (equations above) for the B * N elements. ap: a_{t-1} (ALIF;    \
 * NULL: LIF). Arriving gradients, NULL where none: gs (at s_t), gvin (at v_t), gaa (at a_{t-1}),   \
 * gi (at i_t). R = gI_{t+1} @ W, gun = gu_{t+1}, gxn = gI_{t+1}: NULL at the last step. ga: ga_t   \
 * (ALIF); writes ga_out = ga_{t-1}, gu_out = gu_t, gx_out = gI_t. gwt [N, N]: gW^T, to which the   \
 * rows gI_{t+1}[b] (gxn) of the spikes (b, j) of s (step t) are added; NULL: not accumulated. (The \
 * call of step t adds the term of step t + 1: the spikes s_t are in cache, read by the rows' step.) \
 * Returns 0, or 1 if out of memory. */                                                              \
CLONES static int rec_backward_step_##SFX(int64_t B, int64_t N, int nthreads, int sur, T_ slope, int reset, \
                                    int detach, const T_ *u, const T_ *s, const T_ *ap,               \
                                    const T_ *gs, const T_ *gvin, const T_ *gaa, const T_ *gi,        \
                                    const T_ *R, const T_ *gun, const T_ *gxn, const T_ *ga,          \
                                    T_ *ga_out, T_ *gu_out, T_ *gx_out, const T_ *dm, const T_ *ds,   \
                                    const T_ *da, const T_ *beta, const T_ *th, const T_ *vr,         \
                                    T_ *gwt)                                                          \
{                                                                                                    \
    const int adaptive = ap != NULL;                                                                 \
    const int64_t W = (N + 63) / 64;                                                                 \
    uint64_t *bits = NULL;                                                                           \
    if (gwt != NULL && gxn != NULL) {                                                                \
        bits = malloc(sizeof(uint64_t) * (size_t)(B * W));                                           \
        if (bits == NULL) return 1;                                                                  \
    }                                                                                                \
    int failed = 0;                                                                                  \
    _Pragma("omp parallel num_threads(nthreads) if(nthreads > 1)")                                   \
    {                                                                                                \
        const int64_t k = spikegrad_thread_num(), nt = spikegrad_num_threads();                      \
        const int64_t b0 = B * k / nt, b1 = B * (k + 1) / nt;                                        \
        T_ *z0 = calloc((size_t)N, sizeof(T_));   /* the zero row read for absent inputs */          \
        if (z0 == NULL) {                                                                            \
            _Pragma("omp atomic write")                                                              \
            failed = 1;                                                                              \
        } else switch (sur) {                                                                               \
        case SUR_FAST_SIGMOID: REC_BWD_KINDS(SFX, SUR_FAST_SIGMOID); break;                          \
        case SUR_ATAN: REC_BWD_KINDS(SFX, SUR_ATAN); break;                                          \
        case SUR_TRIANGLE: REC_BWD_KINDS(SFX, SUR_TRIANGLE); break;                                  \
        default: REC_BWD_KINDS(SFX, SUR_BOXCAR);                                                     \
        }                                                                                            \
        free(z0);                                                                                    \
        if (bits != NULL) {                                                                          \
            rec_row_bits_##SFX(b0, b1, N, s, bits);                                                  \
            _Pragma("omp barrier")                                                                   \
            /* the columns of whole words W k / nt .. W (k + 1) / nt: no two threads write one row */ \
            if (!failed && rec_weight_rows_##SFX(B, N, W * k / nt, W * (k + 1) / nt, bits, gxn, gwt)) { \
                _Pragma("omp atomic write")                                                          \
                failed = 1;                                                                          \
            }                                                                                        \
        }                                                                                            \
    }                                                                                                \
    free(bits);                                                                                      \
    return failed;                                                                                   \
}                                                                                                    \
                                                                                                     \
/* rec_backward_step for step t, its pointers taken from the descriptor d (slots RB_*) */          \
CLONES int rec_backward_at_##SFX(const int64_t *d, int64_t t, T_ slope)                              \
{                                                                                                    \
    const int64_t B = d[RB_B], N = d[RB_N], T = d[RB_T], BN = B * N, blk = d[RB_BLK];                \
    const int rec = d[RB_REC] != 0, last = t == T - 1;                                               \
    const T_ *u = DPTR(T_, BLOCKS(d[RB_U])[t / blk]) + (t % blk) * BN;                               \
    const T_ *s = DPTR(T_, d[RB_S]) + t * BN, *ap = NULL;                                            \
    if (d[RB_A] != 0)                                                                                \
        ap = t == 0 ? DPTR(T_, d[RB_A0]) : DPTR(T_, BLOCKS(d[RB_A])[(t - 1) / blk]) + ((t - 1) % blk) * BN; \
    const T_ *gs = d[RB_GS] ? DPTR(T_, d[RB_GS]) + t * d[RB_GS_STEP] : NULL;                         \
    const T_ *gv = d[RB_GV] && (rec || last) ? DPTR(T_, d[RB_GV]) + t * d[RB_GV_STEP] : NULL;        \
    const T_ *gi = d[RB_GI] && (rec || last) ? DPTR(T_, d[RB_GI]) + t * d[RB_GI_STEP] : NULL;        \
    const T_ *gaa = rec && d[RB_GA] && t > 0 ? DPTR(T_, d[RB_GA]) + (t - 1) * d[RB_GA_STEP] : NULL;  \
    T_ *gu = DPTR(T_, d[RB_GU]), *gx = DPTR(T_, d[RB_GX]), *gab = DPTR(T_, d[RB_GAB]);               \
    const int64_t ur = d[RB_GU_ROWS], ar = d[RB_GA_ROWS];                                            \
    return rec_backward_step_##SFX(B, N, (int)d[RB_THREADS], (int)d[RB_SUR], slope, (int)d[RB_RESET], \
                                   (int)d[RB_DETACH], u, s, ap, gs, gv, gaa, gi,                     \
                                   last ? NULL : DPTR(T_, d[RB_R]), last ? NULL : gu + (t + 1) % ur * BN, \
                                   last ? NULL : gx + (t + 1) * BN, ap ? gab + (t + 1) % ar * BN : NULL, \
                                   ap ? gab + t % ar * BN : NULL, gu + t % ur * BN, gx + t * BN,     \
                                   DPTR(T_, d[RB_DM]), DPTR(T_, d[RB_DS]), DPTR(T_, d[RB_DA]),       \
                                   DPTR(T_, d[RB_BETA]), DPTR(T_, d[RB_TH]), DPTR(T_, d[RB_VR]),     \
                                   DPTR(T_, d[RB_GWT]));                                             \
}

DEFINE_RECURRENT(float, f32)
DEFINE_RECURRENT(double, f64)
