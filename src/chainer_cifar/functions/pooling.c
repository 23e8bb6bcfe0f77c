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
 * maximum in row-major order, as Chainer's argmax.
 *
 * NaN: NumPy's max (Chainer's) of a window holding a NaN is NaN, and its
 * argmax the first NaN. The vector loop never lets a NaN in (a comparison
 * with NaN is false), so the split into phases notes whether the plane holds
 * a NaN, and such a plane is computed again by a scalar loop with exactly
 * those rules (planes without NaN pay one comparison per element).
 *
 * With relu the input rows are clamped at 0 as they are split into phases
 * (NaN passes, as numpy.maximum(x, 0)), so the output and the argmax are
 * those of pooling the ReLU's output (a window wholly in the padding stays
 * -inf, as in Chainer). Chainer's gradient of that composition multiplies
 * the pooled gradient by relu(x) > 0 at the argmax, which is y > 0 of the
 * window: windows whose maximum is not positive (or NaN) store their index
 * t as ~t (negative), and their gradient is gy * 0 at tap t (0, or NaN for a
 * non-finite gy, as Chainer's). The index is the flat tap i * kw + j (so
 * kh * kw <= 127).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

int cc_conv_supported(void);  /* direct_conv.c: AVX2 + FMA on this CPU */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define TARGET __attribute__((target("avx2,fma")))

/* The outputs of a plane holding a NaN, from its phase rows in buf (see pool_plane), one tap at a
 * time with NumPy's rules: the maximum is the first NaN if there is one, else the first largest. */
static void pool_plane_nan(const float *buf, int64_t H, int64_t L, int64_t kh, int64_t kw, int64_t sy,
                           int64_t ph, int64_t Ho, int64_t Wo, const int64_t *toff, float *y, int8_t *idx,
                           int relu)
{
    for (int64_t oy = 0; oy < Ho; oy++)
        for (int64_t ox = 0; ox < Wo; ox++) {
            float m = -INFINITY;
            int k = 0;
            for (int64_t i = 0; i < kh && m == m; i++) {
                int64_t h = oy * sy - ph + i;
                if (h < 0 || h >= H) continue;
                const float *row = buf + h * L + ox;
                for (int64_t j = 0; j < kw; j++) {
                    float v = row[toff[j]];
                    if (v != v) { m = v; k = (int)(i * kw + j); break; }
                    if (v > m) { m = v; k = (int)(i * kw + j); }
                }
            }
            if (relu && !(m > 0.f)) k = ~k;
            y[oy * Wo + ox] = m;
            if (idx) idx[oy * Wo + ox] = (int8_t)k;
        }
}

/* Whether x[0..n) holds a NaN: one vector compare and or per 8 floats of a plane that is in the
 * cache (a flag set in the scalar copy into phases cost 10-30 %). */
TARGET static int has_nan(const float *x, int64_t n)
{
    __m256 any = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        any = _mm256_or_ps(any, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    int nan = _mm256_movemask_ps(any) != 0;
    for (; i < n; i++) nan |= x[i] != x[i];
    return nan;
}

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
                for (int64_t q = q0; q < q1; q++) { float v = xr[q * sx]; b[q] = v < 0.f ? 0.f : v; }
            else
                for (int64_t q = q0; q < q1; q++) b[q] = xr[q * sx];
            for (int64_t q = q1; q < L; q++) b[q] = -INFINITY;
        }
    }
    const __m256 ninf = _mm256_set1_ps(-INFINITY), zero = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi32(-1);
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
            if (relu)  /* no positive value in the window: ~t, the ReLU's gradient is gy * 0 */
                k = _mm256_blendv_ps(_mm256_xor_ps(k, _mm256_castsi256_ps(ones)), k,
                                     _mm256_cmp_ps(m, zero, _CMP_GT_OQ));
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
    if (has_nan(x, H * W))  /* the vector loop never takes a NaN: this plane again, by the rules */
        pool_plane_nan(buf, H, L, kh, kw, sy, ph, Ho, Wo, toff, y, idx, relu);
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

/* Row and column of each flat tap k = i * kw + j in its window (no divisions per output). */
struct taps { int32_t i[128], j[128]; };

static void tap_table(struct taps *t, int64_t kw)
{
    for (int k = 0; k < 128; k++) { t->i[k] = (int32_t)(k / kw); t->j[k] = (int32_t)(k % kw); }
}

/* Where tap k of output (oy, ox) lies in its H x W plane, or -1 (in the padding); a negative k is
 * tap ~k with a gradient of gy * 0 (the fused ReLU's mask). */
static inline int64_t tap_offset(const struct taps *t, int k, int64_t oy, int64_t ox, int64_t H, int64_t W,
                                 int64_t sy, int64_t sx, int64_t ph, int64_t pw)
{
    if (k < 0) k = ~k;
    int64_t h = oy * sy - ph + t->i[k], c = ox * sx - pw + t->j[k];
    return (h >= 0 && h < H && c >= 0 && c < W) ? h * W + c : -1;
}

/* gx = gy added at each output's argmax (gy * 0 for a negative index; gx is overwritten). */
int cc_maxpool_grad_f32(const float *gy, const int8_t *idx, int64_t planes, int64_t H, int64_t W,
                        int64_t kw, int64_t sy, int64_t sx, int64_t ph, int64_t pw, int64_t Ho,
                        int64_t Wo, float *gx)
{
    struct taps t;
    tap_table(&t, kw);
    for (int64_t p = 0; p < planes; p++) {
        float *g = gx + p * H * W;
        const float *go = gy + p * Ho * Wo;
        const int8_t *io = idx + p * Ho * Wo;
        for (int64_t q = 0; q < H * W; q++) g[q] = 0.f;
        for (int64_t oy = 0; oy < Ho; oy++)
            for (int64_t ox = 0; ox < Wo; ox++) {
                int k = io[oy * Wo + ox];
                int64_t o = tap_offset(&t, k, oy, ox, H, W, sy, sx, ph, pw);
                if (o >= 0) g[o] += k < 0 ? go[oy * Wo + ox] * 0.f : go[oy * Wo + ox];
            }
    }
    return 0;
}

/* The adjoint of the gradient: each output takes ggx at its argmax (ggx * 0 for a negative index),
 * or -inf where the argmax lies in the padding: Chainer's MaxPoolingNDWithIndexes gathers from ggx
 * padded with -inf. */
int cc_maxpool_gather_f32(const float *ggx, const int8_t *idx, int64_t planes, int64_t H, int64_t W,
                          int64_t kw, int64_t sy, int64_t sx, int64_t ph, int64_t pw, int64_t Ho,
                          int64_t Wo, float *out)
{
    struct taps t;
    tap_table(&t, kw);
    for (int64_t p = 0; p < planes; p++) {
        const float *g = ggx + p * H * W;
        const int8_t *io = idx + p * Ho * Wo;
        float *oo = out + p * Ho * Wo;
        for (int64_t oy = 0; oy < Ho; oy++)
            for (int64_t ox = 0; ox < Wo; ox++) {
                int k = io[oy * Wo + ox];
                int64_t o = tap_offset(&t, k, oy, ox, H, W, sy, sx, ph, pw);
                oo[oy * Wo + ox] = o < 0 ? -INFINITY : (k < 0 ? g[o] * 0.f : g[o]);
            }
    }
    return 0;
}
