/* The residual merge of a ResNet block in float32: y = max(a + b, 0), and its
 * gradient g = gy * (y > 0); one pass each.
 *
 * Built with direct_conv.c into one library by _native.py and driven by
 * add_relu.py, which splits the arrays along the batch across the threads.
 * NumPy needs two passes forward (the sum, then the ReLU in place) and two
 * backward (a boolean mask, then the product). The results are bitwise
 * NumPy's (Chainer's): one rounding of the sum; NaN passes the ReLU, as
 * numpy.maximum(s, 0); and the gradient is a product with the mask, not a
 * select, so a NaN or inf gy where y <= 0 gives NaN, as gy * (y > 0) does.
 */
#include <stdint.h>

int cc_conv_supported(void);  /* direct_conv.c: AVX2 + FMA on this CPU */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define TARGET __attribute__((target("avx2,fma")))

TARGET static void add_relu(const float *a, const float *b, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float s = a[i] + b[i];
        y[i] = s < 0.f ? 0.f : s;  /* NaN passes, as numpy.maximum */
    }
}

TARGET static void masked_grad(const float *gy, const float *y, float *g, int64_t n)
{
    /* Written with intrinsics: GCC keeps the scalar select in a branch (control flow) and does not
     * vectorize it. */
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 m = _mm256_and_ps(_mm256_cmp_ps(_mm256_loadu_ps(y + i), zero, _CMP_GT_OQ), one);
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_loadu_ps(gy + i), m));
    }
    for (; i < n; i++)
        g[i] = gy[i] * (y[i] > 0.f ? 1.f : 0.f);
}

int cc_add_relu_f32(const float *a, const float *b, float *y, int64_t n)
{
    if (!cc_conv_supported()) return -1;
    add_relu(a, b, y, n);
    return 0;
}

int cc_masked_grad_f32(const float *gy, const float *y, float *g, int64_t n)
{
    if (!cc_conv_supported()) return -1;
    masked_grad(gy, y, g, n);
    return 0;
}
#else
int cc_add_relu_f32(void) { return -1; }
int cc_masked_grad_f32(void) { return -1; }
#endif
