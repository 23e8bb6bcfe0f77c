/* Train-mode batch normalization (+ ReLU) of float32 (N, C, R) arrays, one pass a step.
 *
 * Built with direct_conv.c into one library by _native.py and driven by
 * batch_norm.py, which deals groups of images to the thread pool and adds
 * the groups' float64 sums in group order.
 *
 * Why: NumPy needs a pass over memory per operation: the forward took five
 * (shift, sums, centre, scale, shift + ReLU) and the backward five more, each
 * a separate call with its own temporaries. Here the forward is two passes
 * (sums; centre + scale + shift + ReLU) and the backward two (sums of the
 * masked gradient; the input gradient, re-applying the mask instead of
 * storing it). The backward centres x again (x - mean, the same rounding as
 * the forward's) instead of reading a stored copy.
 *
 * NaN and inf go through as in Chainer's formulas: the ReLU is "v < 0 ? 0 : v"
 * (NaN passes, as numpy.maximum(v, 0)), and its gradient multiplies by the
 * mask (gy * (y > 0): a NaN or inf gy where y <= 0 gives NaN, as in Chainer),
 * instead of selecting.
 *
 * Sums: each row of R values is summed in two 8-lane float32 accumulators
 * (as NumPy's pairwise/BLAS sums are float32), then added to the channel's
 * float64 total in row order: the result depends only on the group, not on
 * the thread that ran it.
 */
#include <stdint.h>

int cc_conv_supported(void);  /* direct_conv.c: AVX2 + FMA on this CPU */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define TARGET __attribute__((target("avx2,fma")))

TARGET static inline double hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return (double)_mm_cvtss_f32(s);
}

/* The mask of lanes i < n (0 <= n < 8) for the tail of a row. */
TARGET static inline __m256i tail_mask(int64_t n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* s1[c] += sum (x - k[c]), s2[c] += sum (x - k[c])^2 over the rows of images n0..n1-1. */
TARGET static void bn_stats(const float *x, int64_t n0, int64_t n1, int64_t C, int64_t R,
                            const float *k, double *s1, double *s2)
{
    const int64_t body = R - R % 8;
    const __m256i tm = tail_mask(R % 8);
    for (int64_t n = n0; n < n1; n++)
        for (int64_t c = 0; c < C; c++) {
            const float *row = x + (n * C + c) * R;
            const __m256 kv = _mm256_set1_ps(k[c]);
            __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
            for (int64_t i = 0; i < body; i += 8) {
                __m256 d = _mm256_sub_ps(_mm256_loadu_ps(row + i), kv);
                a = _mm256_add_ps(a, d);
                b = _mm256_fmadd_ps(d, d, b);
            }
            if (body < R) {
                __m256 d = _mm256_and_ps(_mm256_sub_ps(_mm256_maskload_ps(row + body, tm), kv),
                                         _mm256_castsi256_ps(tm));
                a = _mm256_add_ps(a, d);
                b = _mm256_fmadd_ps(d, d, b);
            }
            s1[c] += hsum8(a);
            s2[c] += hsum8(b);
        }
}

int cc_bn_stats_f32(const float *x, int64_t n0, int64_t n1, int64_t C, int64_t R,
                    const float *k, double *s1, double *s2)
{
    if (!cc_conv_supported()) return -1;
    bn_stats(x, n0, n1, C, R, k, s1, s2);
    return 0;
}

/* y = relu?((x - mean[c]) * scale[c] + shift[c]) for images n0..n1-1 (and xc = x - mean[c] unless
 * xc is NULL). */
TARGET static void bn_forward(const float *x, int64_t n0, int64_t n1, int64_t C, int64_t R,
                              const float *mean, const float *scale, const float *shift,
                              float *xc, float *y, int relu)
{
    for (int64_t n = n0; n < n1; n++)
        for (int64_t c = 0; c < C; c++) {
            const int64_t o = (n * C + c) * R;
            const float m = mean[c], s = scale[c], t = shift[c];
            if (xc)
                for (int64_t i = 0; i < R; i++) {
                    float d = x[o + i] - m, v = d * s + t;
                    xc[o + i] = d;
                    y[o + i] = relu && v < 0.f ? 0.f : v;
                }
            else if (relu)
                for (int64_t i = 0; i < R; i++) {
                    float v = (x[o + i] - m) * s + t;
                    y[o + i] = v < 0.f ? 0.f : v;
                }
            else
                for (int64_t i = 0; i < R; i++)
                    y[o + i] = (x[o + i] - m) * s + t;
        }
}

int cc_bn_forward_f32(const float *x, int64_t n0, int64_t n1, int64_t C, int64_t R,
                      const float *mean, const float *scale, const float *shift,
                      float *xc, float *y, int relu)
{
    if (!cc_conv_supported()) return -1;
    bn_forward(x, n0, n1, C, R, mean, scale, shift, xc, y, relu);
    return 0;
}

/* sg[c] += sum g, sgx[c] += sum g * (x - mean[c]) over images n0..n1-1, where g = gy,
 * or gy * (y > 0) when y is given (the fused ReLU's gradient). */
TARGET static void bn_grad_sums(const float *gy, const float *y, const float *x, const float *mean,
                                int64_t n0, int64_t n1, int64_t C, int64_t R, double *sg, double *sgx)
{
    const int64_t body = R - R % 8;
    const __m256i tm = tail_mask(R % 8);
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.f);
    for (int64_t n = n0; n < n1; n++)
        for (int64_t c = 0; c < C; c++) {
            const int64_t o = (n * C + c) * R;
            const __m256 mv = _mm256_set1_ps(mean[c]);
            __m256 a = zero, b = zero;
            for (int64_t i = 0; i < body; i += 8) {
                __m256 g = _mm256_loadu_ps(gy + o + i);
                if (y) g = _mm256_mul_ps(g, _mm256_and_ps(_mm256_cmp_ps(_mm256_loadu_ps(y + o + i), zero,
                                                                        _CMP_GT_OQ), one));
                a = _mm256_add_ps(a, g);
                b = _mm256_fmadd_ps(g, _mm256_sub_ps(_mm256_loadu_ps(x + o + i), mv), b);
            }
            if (body < R) {  /* the lanes past the row: g = 0 and x - mean = 0 */
                __m256 g = _mm256_maskload_ps(gy + o + body, tm);
                if (y) g = _mm256_mul_ps(g, _mm256_and_ps(_mm256_cmp_ps(_mm256_maskload_ps(y + o + body, tm),
                                                                        zero, _CMP_GT_OQ), one));
                __m256 d = _mm256_and_ps(_mm256_sub_ps(_mm256_maskload_ps(x + o + body, tm), mv),
                                         _mm256_castsi256_ps(tm));
                a = _mm256_add_ps(a, g);
                b = _mm256_fmadd_ps(g, d, b);
            }
            sg[c] += hsum8(a);
            sgx[c] += hsum8(b);
        }
}

int cc_bn_grad_sums_f32(const float *gy, const float *y, const float *x, const float *mean, int64_t n0,
                        int64_t n1, int64_t C, int64_t R, double *sg, double *sgx)
{
    if (!cc_conv_supported()) return -1;
    bn_grad_sums(gy, y, x, mean, n0, n1, C, R, sg, sgx);
    return 0;
}

/* gx = (g - ((x - mean[c]) * a1[c] + a0[c])) * coef[c] for images n0..n1-1, g as in
 * cc_bn_grad_sums_f32. */
TARGET static void bn_grad_x(const float *gy, const float *y, const float *x, const float *mean,
                             int64_t n0, int64_t n1, int64_t C, int64_t R, const float *a1, const float *a0,
                             const float *coef, float *gx)
{
    for (int64_t n = n0; n < n1; n++)
        for (int64_t c = 0; c < C; c++) {
            const int64_t o = (n * C + c) * R;
            const float p = a1[c], q = a0[c], s = coef[c], m = mean[c];
            if (y) {
                /* intrinsics: GCC keeps the scalar mask in a branch and does not vectorize it */
                const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.f), pv = _mm256_set1_ps(p),
                             qv = _mm256_set1_ps(q), sv = _mm256_set1_ps(s), mv = _mm256_set1_ps(m);
                int64_t i = 0;
                for (; i + 8 <= R; i += 8) {
                    __m256 g = _mm256_mul_ps(_mm256_loadu_ps(gy + o + i),
                                             _mm256_and_ps(_mm256_cmp_ps(_mm256_loadu_ps(y + o + i), zero,
                                                                         _CMP_GT_OQ), one));
                    __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + o + i), mv);
                    __m256 t = _mm256_fmadd_ps(d, pv, qv);
                    _mm256_storeu_ps(gx + o + i, _mm256_mul_ps(_mm256_sub_ps(g, t), sv));
                }
                for (; i < R; i++) {
                    float g = gy[o + i] * (y[o + i] > 0.f ? 1.f : 0.f);
                    gx[o + i] = (g - ((x[o + i] - m) * p + q)) * s;
                }
            } else {
                for (int64_t i = 0; i < R; i++)
                    gx[o + i] = (gy[o + i] - ((x[o + i] - m) * p + q)) * s;
            }
        }
}

int cc_bn_grad_x_f32(const float *gy, const float *y, const float *x, const float *mean, int64_t n0,
                     int64_t n1, int64_t C, int64_t R, const float *a1, const float *a0, const float *coef,
                     float *gx)
{
    if (!cc_conv_supported()) return -1;
    bn_grad_x(gy, y, x, mean, n0, n1, C, R, a1, a0, coef, gx);
    return 0;
}
#else
int cc_bn_stats_f32(void) { return -1; }
int cc_bn_forward_f32(void) { return -1; }
int cc_bn_grad_sums_f32(void) { return -1; }
int cc_bn_grad_x_f32(void) { return -1; }
#endif
