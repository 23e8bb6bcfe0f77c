/* Max pooling of float32 NCHW planes with AVX2, its gradient and the gradient's adjoint.
 *
 * Built with direct_conv.c into one library by _native.py and driven by
 * pooling.py, which splits the batch across the threads. NumPy's separable
 * passes (a running maximum along the rows, then down the columns, each
 * with an int8 argmax updated by integer passes) read and write the plane
 * about a dozen times; here each output vector of 8 is the maximum over the
 * window's taps kept in a register, with its argmax beside it.
 *
 * A strided window reads every sx-th column, so each input row is first
 * split into its sx column phases (row[r::sx], with -inf where the window
 * hangs over the edge): tap (i, j) of 8 neighbouring outputs is then 8
 * consecutive floats of phase j % sx. Rows outside the input are skipped,
 * which is the same as Chainer's -inf padding: the taps are visited in
 * row-major window order from a running maximum of -inf at index 0, and a
 * tap replaces it only when strictly greater, so the index is the first
 * maximum in row-major order, as Chainer's argmax (NaN inputs aside).
 *
 * With relu the input rows are clamped at 0 as they are split into phases,
 * so the output and the argmax are those of pooling the ReLU's output
 * (a window wholly in the padding stays -inf, as in Chainer), and windows
 * whose maximum is not positive get index -1: no gradient, as the ReLU's
 * gradient is 0 there. The index is the flat tap i * kw + j (so
 * kh * kw <= 127).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

int cc_conv_supported(void);  /* direct_conv.c: AVX2 + FMA on this CPU */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define TARGET __attribute__((target("avx2,fma")))

/* Output rows [0, Ho) of one plane; buf holds nph * H rows of L floats, toff[j] is
 * tap column j's offset in it ((j % sx) * H * L + j / sx, hoisted out of the loop:
 * 64-bit divisions in the inner loop made it slower than NumPy). */
TARGET static void pool_plane(const float *x, int64_t H, int64_t W, int64_t kh, int64_t kw,
                              int64_t sy, int64_t sx, int64_t ph, int64_t pw, int64_t Ho, int64_t Wo,
                              float *buf, int64_t L, int64_t nph, const int64_t *toff,
                              float *y, int8_t *idx, int relu)
{
    for (int64_t r = 0; r < nph; r++) {
        /* Phase entries [q0, q1) are the input columns q * sx + r - pw. */
        int64_t q0 = pw > r ? (pw - r + sx - 1) / sx : 0;
        int64_t q1 = (W + pw - r + sx - 1) / sx;
        if (q1 > L) q1 = L;
        if (q0 > q1) q0 = q1;
        for (int64_t h = 0; h < H; h++) {
            float *b = buf + (r * H + h) * L;
            const float *xr = x + h * W + r - pw;
            for (int64_t q = 0; q < q0; q++) b[q] = -INFINITY;
            if (relu)
                for (int64_t q = q0; q < q1; q++) { float v = xr[q * sx]; b[q] = v > 0.f ? v : 0.f; }
            else
                for (int64_t q = q0; q < q1; q++) b[q] = xr[q * sx];
            for (int64_t q = q1; q < L; q++) b[q] = -INFINITY;
        }
    }
    const __m256 ninf = _mm256_set1_ps(-INFINITY), zero = _mm256_setzero_ps();
    const __m256i none = _mm256_set1_epi32(-1);
    for (int64_t oy = 0; oy < Ho; oy++) {
        for (int64_t ox = 0; ox < Wo; ox += 8) {
            __m256 m = ninf;
            __m256 k = _mm256_setzero_ps();  /* int32 lanes, blended as floats */
            for (int64_t i = 0; i < kh; i++) {
                int64_t h = oy * sy - ph + i;
                if (h < 0 || h >= H) continue;
                const float *row = buf + h * L + ox;
                for (int64_t j = 0; j < kw; j++) {
                    __m256 v = _mm256_loadu_ps(row + toff[j]);
                    __m256 gt = _mm256_cmp_ps(v, m, _CMP_GT_OQ);
                    m = _mm256_blendv_ps(m, v, gt);
                    k = _mm256_blendv_ps(k, _mm256_castsi256_ps(_mm256_set1_epi32((int)(i * kw + j))), gt);
                }
            }
            if (relu)  /* no positive value in the window: the ReLU passes no gradient */
                k = _mm256_blendv_ps(_mm256_castsi256_ps(none), k, _mm256_cmp_ps(m, zero, _CMP_GT_OQ));
            int64_t n = Wo - ox < 8 ? Wo - ox : 8;
            float *yo = y + oy * Wo + ox;
            if (n == 8) {
                _mm256_storeu_ps(yo, m);
            } else {
                float ys[8];
                _mm256_storeu_ps(ys, m);
                for (int64_t t = 0; t < n; t++) yo[t] = ys[t];
            }
            if (idx) {
                int32_t ks[8];
                _mm256_storeu_si256((__m256i *)ks, _mm256_castps_si256(k));
                int8_t *io = idx + oy * Wo + ox;
                for (int64_t t = 0; t < n; t++) io[t] = (int8_t)ks[t];
            }
        }
    }
}

/* y (and idx unless NULL) of `planes` planes of H x W; returns 0, or -1 / -2 (no AVX2, no memory). */
int cc_maxpool_f32(const float *x, int64_t planes, int64_t H, int64_t W, int64_t kh, int64_t kw,
                   int64_t sy, int64_t sx, int64_t ph, int64_t pw, int64_t Ho, int64_t Wo,
                   float *y, int8_t *idx, int relu)
{
    if (!cc_conv_supported()) return -1;
    int64_t nph = sx < kw ? sx : kw;
    /* Vector reads reach phase entry ceil8(Wo) - 1 + (kw - 1) / sx. */
    int64_t L = (Wo + 7) / 8 * 8 + (kw - 1) / sx;
    float *buf = malloc(sizeof(float) * nph * H * L);
    int64_t *toff = malloc(sizeof(int64_t) * kw);
    if (!buf || !toff) { free(buf); free(toff); return -2; }
    for (int64_t j = 0; j < kw; j++) toff[j] = (j % sx) * H * L + j / sx;
    for (int64_t p = 0; p < planes; p++)
        pool_plane(x + p * H * W, H, W, kh, kw, sy, sx, ph, pw, Ho, Wo, buf, L, nph, toff,
                   y + p * Ho * Wo, idx ? idx + p * Ho * Wo : NULL, relu);
    free(toff);
    free(buf);
    return 0;
}
#else
int cc_maxpool_f32(void) { return -1; }
#endif

/* Where tap k of output (oy, ox) lies in its H x W plane, or -1 (no gradient, or in the padding). */
static inline int64_t tap_offset(int k, int64_t oy, int64_t ox, int64_t H, int64_t W, int64_t kw,
                                 int64_t sy, int64_t sx, int64_t ph, int64_t pw)
{
    if (k < 0) return -1;
    int64_t h = oy * sy - ph + k / kw, c = ox * sx - pw + k % kw;
    return (h >= 0 && h < H && c >= 0 && c < W) ? h * W + c : -1;
}

/* gx = gy added at each output's argmax (gx is overwritten). */
int cc_maxpool_grad_f32(const float *gy, const int8_t *idx, int64_t planes, int64_t H, int64_t W,
                        int64_t kw, int64_t sy, int64_t sx, int64_t ph, int64_t pw, int64_t Ho,
                        int64_t Wo, float *gx)
{
    for (int64_t p = 0; p < planes; p++) {
        float *g = gx + p * H * W;
        const float *go = gy + p * Ho * Wo;
        const int8_t *io = idx + p * Ho * Wo;
        for (int64_t t = 0; t < H * W; t++) g[t] = 0.f;
        for (int64_t oy = 0; oy < Ho; oy++)
            for (int64_t ox = 0; ox < Wo; ox++) {
                int64_t o = tap_offset(io[oy * Wo + ox], oy, ox, H, W, kw, sy, sx, ph, pw);
                if (o >= 0) g[o] += go[oy * Wo + ox];
            }
    }
    return 0;
}

/* The adjoint of the gradient: each output takes ggx at its argmax (0 where it has none). */
int cc_maxpool_gather_f32(const float *ggx, const int8_t *idx, int64_t planes, int64_t H, int64_t W,
                          int64_t kw, int64_t sy, int64_t sx, int64_t ph, int64_t pw, int64_t Ho,
                          int64_t Wo, float *out)
{
    for (int64_t p = 0; p < planes; p++) {
        const float *g = ggx + p * H * W;
        const int8_t *io = idx + p * Ho * Wo;
        float *oo = out + p * Ho * Wo;
        for (int64_t oy = 0; oy < Ho; oy++)
            for (int64_t ox = 0; ox < Wo; ox++) {
                int64_t o = tap_offset(io[oy * Wo + ox], oy, ox, H, W, kw, sy, sx, ph, pw);
                oo[oy * Wo + ox] = o >= 0 ? g[o] : 0.f;
            }
    }
    return 0;
}
