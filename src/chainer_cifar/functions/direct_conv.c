/* Direct 2-D convolution in float32 with AVX2 + FMA: no im2col.
 *
 * Built and loaded at run time by _native.py (cc -O3 -shared -fPIC); the
 * Python side falls back to im2col + GEMM where this cannot be built or the
 * CPU lacks AVX2/FMA (cc_conv_supported() says which).
 *
 * Why: for the few channels of CIFAR ResNets (16-64), im2col + GEMM moves far
 * more memory than it computes. The 9x column matrix is written once by the
 * im2col copy and read again by OpenBLAS's packing, for only O multiply-adds
 * per element. Here each output vector is accumulated in a register straight
 * from the padded input; the input of one image (74 KiB at 16x34x34) stays in
 * the L2 cache.
 *
 * Blocking: 2 output channels x 4 vectors of 8 outputs = 8 accumulators. Per
 * tap that is 4 loads, 2 broadcasts and 8 FMAs, and all 16 ymm registers fit
 * without spills (3 channels spill and run at half the speed). The 4 vectors
 * walk the output plane row by row, so an 8-wide layer gets 4 rows per block
 * and a 32-wide one gets 1 row. Each output is a sum over the taps in
 * (c, i, j) order, the same for any split of the batch over threads.
 */
#include <stdint.h>

int cc_conv_supported(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define TARGET __attribute__((target("avx2,fma")))
#define OB 2  /* output channels per block */
#define VB 4  /* vectors of 8 outputs per block */

/* Add the residual, apply the ReLU and store one accumulator (the last vector of a row may be partial).
 * The ReLU is max(0, s): _mm256_max_ps returns its second operand when either is NaN, so NaN
 * passes, as numpy.maximum(s, 0). */
TARGET static inline void put(__m256 s, float *yp, const float *rp, int full, __m256i tmask, int relu)
{
    if (full) {
        if (rp) s = _mm256_add_ps(s, _mm256_loadu_ps(rp));
        if (relu) s = _mm256_max_ps(_mm256_setzero_ps(), s);
        _mm256_storeu_ps(yp, s);
    } else {
        if (rp) s = _mm256_add_ps(s, _mm256_maskload_ps(rp, tmask));
        if (relu) s = _mm256_max_ps(_mm256_setzero_ps(), s);
        _mm256_maskstore_ps(yp, tmask, s);
    }
}

/* One image: y[o] = relu?(sum_taps w[o, t] * x[toff[t] + p] + bias[o] + res[o]). */
TARGET static void conv_image(const float *xn, const int64_t *toff, int64_t taps, const float *wpk,
                              int64_t O, const float *bias, const float *res, float *y,
                              int64_t Ho, int64_t Wo, int64_t rstride, int relu)
{
    const int64_t nv = (Wo + 7) / 8, total = Ho * nv, plane = Ho * Wo;
    const int tail = (int)(Wo - 8 * (nv - 1));  /* valid lanes of a row's last vector */
    int32_t lanes[8];
    for (int l = 0; l < 8; l++) lanes[l] = l < tail ? -1 : 0;
    const __m256i tmask = _mm256_loadu_si256((const __m256i *)lanes);
    for (int64_t ob = 0; ob < O; ob += OB) {
        const float *wb0 = wpk + ob * taps;  /* (taps, OB) weights of this channel pair */
        for (int64_t p = 0; p < total; p += VB) {
            int64_t xo[VB], yo[VB];
            int full[VB], valid[VB];
            for (int v = 0; v < VB; v++) {
                /* past the end of the plane: recompute the last vector, store nothing */
                int64_t q = p + v < total ? p + v : total - 1;
                int64_t r = q / nv, xv = q % nv;
                xo[v] = r * rstride + 8 * xv;
                yo[v] = r * Wo + 8 * xv;
                full[v] = xv < nv - 1 || tail == 8;
                valid[v] = p + v < total;
            }
            /* named accumulators: GCC keeps an array of them in memory */
            const int64_t x0 = xo[0], x1 = xo[1], x2 = xo[2], x3 = xo[3];
            __m256 b0 = _mm256_set1_ps(bias ? bias[ob] : 0.f);
            __m256 b1 = _mm256_set1_ps(bias && ob + 1 < O ? bias[ob + 1] : 0.f);
            __m256 a00 = b0, a01 = b0, a02 = b0, a03 = b0;
            __m256 a10 = b1, a11 = b1, a12 = b1, a13 = b1;
            const float *wb = wb0;
            for (int64_t t = 0; t < taps; t++, wb += OB) {
                const float *xt = xn + toff[t];
                __m256 v0 = _mm256_loadu_ps(xt + x0), v1 = _mm256_loadu_ps(xt + x1);
                __m256 v2 = _mm256_loadu_ps(xt + x2), v3 = _mm256_loadu_ps(xt + x3);
                __m256 w = _mm256_broadcast_ss(wb);
                a00 = _mm256_fmadd_ps(w, v0, a00); a01 = _mm256_fmadd_ps(w, v1, a01);
                a02 = _mm256_fmadd_ps(w, v2, a02); a03 = _mm256_fmadd_ps(w, v3, a03);
                w = _mm256_broadcast_ss(wb + 1);
                a10 = _mm256_fmadd_ps(w, v0, a10); a11 = _mm256_fmadd_ps(w, v1, a11);
                a12 = _mm256_fmadd_ps(w, v2, a12); a13 = _mm256_fmadd_ps(w, v3, a13);
            }
            __m256 acc[OB][VB] = {{a00, a01, a02, a03}, {a10, a11, a12, a13}};
            for (int o = 0; o < OB && ob + o < O; o++) {
                float *yp = y + (ob + o) * plane;
                const float *rp = res ? res + (ob + o) * plane : 0;
                for (int v = 0; v < VB; v++)
                    if (valid[v])
                        put(acc[o][v], yp + yo[v], rp ? rp + yo[v] : 0, full[v], tmask, relu);
            }
        }
    }
}

/* Images n0..n1-1 of the zero-padded input xp into y (N, O, Ho, Wo).
 *
 * Output (r, x) of image n reads xp[n*istride + toff[t] + r*rstride + x] for
 * its taps t = (c, i, j). Stride 1: xp is (N, C, Hp, Wp) with
 * toff[t] = c*Hp*Wp + i*Wp + j and rstride = Wp. Stride (sy, sx): each
 * padded row is split into sx phase planes (columns q, q+sx, ...), so the
 * taps of 8 neighbouring outputs are again 8 consecutive floats:
 * toff[t] = ((c*sx + j%sx)*Hp + i)*Wq + j/sx, rstride = sy*Wq (_direct.py).
 * The caller sizes rows and planes so every vector load stays inside the
 * image. wpk is (ceil(O/2), taps, 2): the weights of channels 2b and 2b+1
 * side by side (zeros for a missing last channel). bias (O) and res
 * (N, O, Ho, Wo) may be NULL. Returns 0, or -1 when this CPU cannot run the
 * kernel.
 */
int cc_conv2d_f32(const float *xp, int64_t n0, int64_t n1, int64_t istride, int64_t rstride,
                  const float *wpk, int64_t O, const int64_t *toff, int64_t taps,
                  const float *bias, const float *res, float *y, int64_t Ho, int64_t Wo, int relu)
{
    if (!cc_conv_supported()) return -1;
    for (int64_t n = n0; n < n1; n++)
        conv_image(xp + n * istride, toff, taps, wpk, O, bias,
                   res ? res + n * O * Ho * Wo : 0, y + n * O * Ho * Wo, Ho, Wo, rstride, relu);
    return 0;
}

TARGET static inline float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* gw (O, taps) += the weight gradient of images n0..n1-1 of the padded input
 * xp (laid out as for cc_conv2d_f32) and gy (N, O, Ho, Wo):
 * gw[o, t] += sum_n sum_p gy[n, o, p] * x[n, toff[t] + p]. Blocks of 3
 * channels x 3 taps (9 accumulators, 3 + 3 loads per 9 FMAs) sweep the
 * output planes of all the images, in order, before their 9 sums are
 * stored: an 8x8 plane alone is too short to pay for the horizontal sums.
 * A missing channel or tap of the last block repeats the previous one and
 * is not stored. The last vector of a row reads gy and x through the mask,
 * so its lanes past the row add 0 * 0 (x there may be a real input, even a
 * NaN or an inf, and 0 * NaN is NaN). */
TARGET static void grad_w(const float *xp, int64_t n0, int64_t n1, int64_t xstride, const int64_t *toff,
                          int64_t taps, const float *gy, int64_t O, float *gw, int64_t Ho, int64_t Wo,
                          int64_t rstride)
{
    const int64_t nv = (Wo + 7) / 8, plane = Ho * Wo;
    const int tail = (int)(Wo - 8 * (nv - 1));
    int32_t lanes[8];
    for (int l = 0; l < 8; l++) lanes[l] = l < tail ? -1 : 0;
    const __m256i tmask = _mm256_loadu_si256((const __m256i *)lanes);
    for (int64_t o0 = 0; o0 < O; o0 += 3) {
        const int64_t o1 = o0 + 1 < O ? o0 + 1 : o0, o2 = o0 + 2 < O ? o0 + 2 : o1;
        for (int64_t t0 = 0; t0 < taps; t0 += 3) {
            const int64_t t1 = t0 + 1 < taps ? t0 + 1 : t0, t2 = t0 + 2 < taps ? t0 + 2 : t1;
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00,
                   a20 = a00, a21 = a00, a22 = a00;
            for (int64_t n = n0; n < n1; n++) {
                const float *xn = xp + n * xstride, *gn = gy + n * O * plane;
                const float *g0 = gn + o0 * plane, *g1 = gn + o1 * plane, *g2 = gn + o2 * plane;
                const float *xa = xn + toff[t0], *xb = xn + toff[t1], *xc = xn + toff[t2];
                for (int64_t r = 0; r < Ho; r++) {
                    for (int64_t v = 0; v < nv; v++) {
                        const int64_t yo = r * Wo + 8 * v, xo = r * rstride + 8 * v;
                        __m256 y0, y1, y2, x;
#define GW_LOAD(full, p) ((full) ? _mm256_loadu_ps(p) : _mm256_maskload_ps((p), tmask))
#define GW_STEP(full)                                                                         \
                        y0 = GW_LOAD(full, g0 + yo); y1 = GW_LOAD(full, g1 + yo);             \
                        y2 = GW_LOAD(full, g2 + yo);                                          \
                        x = GW_LOAD(full, xa + xo);                                           \
                        a00 = _mm256_fmadd_ps(y0, x, a00); a10 = _mm256_fmadd_ps(y1, x, a10); \
                        a20 = _mm256_fmadd_ps(y2, x, a20);                                    \
                        x = GW_LOAD(full, xb + xo);                                           \
                        a01 = _mm256_fmadd_ps(y0, x, a01); a11 = _mm256_fmadd_ps(y1, x, a11); \
                        a21 = _mm256_fmadd_ps(y2, x, a21);                                    \
                        x = GW_LOAD(full, xc + xo);                                           \
                        a02 = _mm256_fmadd_ps(y0, x, a02); a12 = _mm256_fmadd_ps(y1, x, a12); \
                        a22 = _mm256_fmadd_ps(y2, x, a22);
                        if (v < nv - 1 || tail == 8) {
                            GW_STEP(1)
                        } else {
                            GW_STEP(0)
                        }
#undef GW_STEP
#undef GW_LOAD
                    }
                }
            }
            const __m256 acc[3][3] = {{a00, a01, a02}, {a10, a11, a12}, {a20, a21, a22}};
            for (int i = 0; i < 3 && o0 + i < O; i++)
                for (int j = 0; j < 3 && t0 + j < taps; j++)
                    gw[(o0 + i) * taps + t0 + j] += hsum(acc[i][j]);
        }
    }
}

/* gwt (taps, O) += the weight gradient from gy in channels-last order, gyt (m, Ho*Wo, O) with O a
 * multiple of 16: gwt[t, o] += sum_n sum_p gyt[n, p, o] * x[n, toff[t] + r*rstride + c], p = r*Wo + c.
 * Blocks of 16 channels (2 vectors) x 6 taps: per output position 2 loads of gy and 6 broadcasts of x
 * feed 12 FMAs into 12 accumulators, which hold whole channel vectors, so no horizontal sums and no
 * masked row tails. On 8x8 and 16x16 planes this ran 1.3-2.4x faster than grad_w (whose 3x3 blocks
 * finish each plane in a few vectors and then pay 9 horizontal sums); on 32x32 planes with 16
 * channels it was 0.9-1.2x, so _direct.py uses it for planes at most 16 wide. A missing tap of the
 * last block repeats the previous one and is not stored. */
TARGET static void grad_w_cl(const float *xp, int64_t m, int64_t xstride, const int64_t *toff, int64_t taps,
                             const float *gyt, int64_t O, float *gwt, int64_t Ho, int64_t Wo, int64_t rstride)
{
    const int64_t P = Ho * Wo;
    for (int64_t o0 = 0; o0 < O; o0 += 16) {
        for (int64_t t0 = 0; t0 < taps; t0 += 6) {
            int64_t tt[6];
            for (int k = 0; k < 6; k++) tt[k] = toff[t0 + k < taps ? t0 + k : taps - 1];
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a04 = a00, a05 = a00,
                   a10 = a00, a11 = a00, a12 = a00, a13 = a00, a14 = a00, a15 = a00;
            for (int64_t n = 0; n < m; n++) {
                const float *xn = xp + n * xstride, *g = gyt + n * P * O + o0;
                const float *x0 = xn + tt[0], *x1 = xn + tt[1], *x2 = xn + tt[2], *x3 = xn + tt[3],
                            *x4 = xn + tt[4], *x5 = xn + tt[5];
                for (int64_t r = 0; r < Ho; r++) {
                    for (int64_t c = r * rstride, end = c + Wo; c < end; c++, g += O) {
                        const __m256 g0 = _mm256_loadu_ps(g), g1 = _mm256_loadu_ps(g + 8);
                        __m256 b = _mm256_broadcast_ss(x0 + c);
                        a00 = _mm256_fmadd_ps(g0, b, a00); a10 = _mm256_fmadd_ps(g1, b, a10);
                        b = _mm256_broadcast_ss(x1 + c);
                        a01 = _mm256_fmadd_ps(g0, b, a01); a11 = _mm256_fmadd_ps(g1, b, a11);
                        b = _mm256_broadcast_ss(x2 + c);
                        a02 = _mm256_fmadd_ps(g0, b, a02); a12 = _mm256_fmadd_ps(g1, b, a12);
                        b = _mm256_broadcast_ss(x3 + c);
                        a03 = _mm256_fmadd_ps(g0, b, a03); a13 = _mm256_fmadd_ps(g1, b, a13);
                        b = _mm256_broadcast_ss(x4 + c);
                        a04 = _mm256_fmadd_ps(g0, b, a04); a14 = _mm256_fmadd_ps(g1, b, a14);
                        b = _mm256_broadcast_ss(x5 + c);
                        a05 = _mm256_fmadd_ps(g0, b, a05); a15 = _mm256_fmadd_ps(g1, b, a15);
                    }
                }
            }
            const __m256 lo[6] = {a00, a01, a02, a03, a04, a05}, hi[6] = {a10, a11, a12, a13, a14, a15};
            for (int k = 0; k < 6 && t0 + k < taps; k++) {
                float *d = gwt + (t0 + k) * O + o0;
                _mm256_storeu_ps(d, _mm256_add_ps(_mm256_loadu_ps(d), lo[k]));
                _mm256_storeu_ps(d + 8, _mm256_add_ps(_mm256_loadu_ps(d + 8), hi[k]));
            }
        }
    }
}

/* gwt (taps, O) += the weight gradient of the m images of xp from gyt (m, Ho*Wo, O) (see grad_w_cl).
 * Returns -1 when this CPU cannot run the kernel, -2 when O is not a multiple of 16. */
int cc_conv2d_grad_w_cl_f32(const float *xp, int64_t m, int64_t istride, int64_t rstride,
                            const int64_t *toff, int64_t taps, const float *gyt, int64_t O,
                            float *gwt, int64_t Ho, int64_t Wo)
{
    if (!cc_conv_supported()) return -1;
    if (O % 16) return -2;
    grad_w_cl(xp, m, istride, toff, taps, gyt, O, gwt, Ho, Wo, rstride);
    return 0;
}

/* gw (O, taps) += the weight gradient of images n0..n1-1 (see grad_w). */
int cc_conv2d_grad_w_f32(const float *xp, int64_t n0, int64_t n1, int64_t istride, int64_t rstride,
                         const int64_t *toff, int64_t taps, const float *gy, int64_t O,
                         float *gw, int64_t Ho, int64_t Wo)
{
    if (!cc_conv_supported()) return -1;
    grad_w(xp, n0, n1, istride, toff, taps, gy, O, gw, Ho, Wo, rstride);
    return 0;
}
#else
int cc_conv2d_f32(void) { return -1; }
int cc_conv2d_grad_w_f32(void) { return -1; }
int cc_conv2d_grad_w_cl_f32(void) { return -1; }
#endif

/* ceil(a / b) for b > 0 and any sign of a. */
static inline int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

/* The kernel's padded input (see _direct._geometry): m images of c channels,
 * each h x w, into (m, c, sx, hp, wq) phase planes; padded row r holds input
 * row r - ph and plane q's column k holds input column k*sx + q - pw, zeros
 * elsewhere (ph, pw < 0 crop). One pass with a copy per row: NumPy's strided
 * slices did the same more slowly (scripts/native_layers.py times both). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("avx2")))
#endif
int cc_pad_f32(const float *restrict x, int64_t m, int64_t c, int64_t h, int64_t w, int64_t sx,
               int64_t hp, int64_t wq, int64_t ph, int64_t pw, float *restrict xp)
{
    for (int64_t p = 0; p < m * c; p++) {
        const float *xi = x + p * h * w;
        for (int64_t q = 0; q < sx; q++) {
            int64_t k0 = ceil_div(pw - q, sx), k1 = ceil_div(w + pw - q, sx);
            k0 = k0 < 0 ? 0 : (k0 > wq ? wq : k0);
            k1 = k1 > wq ? wq : (k1 < k0 ? k0 : k1);
            float *plane = xp + (p * sx + q) * hp * wq;
            for (int64_t r = 0; r < hp; r++) {
                float *restrict row = plane + r * wq;
                int64_t ir = r - ph;
                if (ir < 0 || ir >= h || k1 == k0) {
                    for (int64_t k = 0; k < wq; k++) row[k] = 0.f;
                    continue;
                }
                /* Plain loops, not memset/memcpy: rows are short (8-40 floats), calls cost more. */
                for (int64_t k = 0; k < k0; k++) row[k] = 0.f;
                const float *restrict src = xi + ir * w + k0 * sx + q - pw;
                if (sx == 1)
                    for (int64_t k = k0; k < k1; k++) row[k] = src[k - k0];
                else
                    for (int64_t k = k0; k < k1; k++) row[k] = src[(k - k0) * sx];
                for (int64_t k = k1; k < wq; k++) row[k] = 0.f;
            }
        }
    }
    return 0;
}
