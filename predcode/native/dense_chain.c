/* predcode's native dense-chain step (see chain.py for the algorithm and its reference).
 *
 * Plain C with no PyTorch headers, so that it compiles in well under a second on first
 * use; the matrix products go to the BLAS that PyTorch itself links (its gemm is passed
 * in as a function pointer).  float uses vectorisable exp-based forms of the activations
 * (exp accurate to about 1 ulp, erf to about 1e-7); double uses the C library's functions,
 * so the double kernel reproduces the reference to rounding.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MAX_LAYERS 64
/* Element-wise passes over at least this many numbers run on PyTorch's OpenMP threads (the
 * same pool its BLAS uses); smaller ones stay on the calling thread. */
#define PARALLEL_MIN 8192
#define PARALLEL_CHUNK 2048

enum {
    ACT_IDENTITY = 0,
    ACT_RELU = 1,
    ACT_TANH = 2,
    ACT_SIGMOID = 3,
    ACT_GELU_TANH = 4,
    ACT_GELU_ERF = 5,
    ACT_SILU = 6,
    ACT_LEAKY_RELU = 7,
};

int predcode_native_abi(void) { return 1; }

/* -- float: exp by Cody-Waite range reduction and a degree-5 polynomial (Cephes expf) -- */
static inline float exp_f32(float x) {
    float c = x > 88.0f ? 88.0f : x;
    c = c < -87.0f ? -87.0f : c;
    float n = floorf(c * 1.44269504088896341f + 0.5f);
    float r = c - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float z = r * r;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * z + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float out = y * scale;
    return x != x ? x : out; /* NaN stays NaN */
}

static inline float sigmoid_f32(float a) { return 1.0f / (1.0f + exp_f32(-a)); }

/* Phi(a) = (1 + erf(a / sqrt 2)) / 2 from erfc's Chebyshev fit (fractional error < 1.2e-7) */
static inline float normal_cdf_f32(float a) {
    float z = a * 0.70710678118654752f;
    float az = fabsf(z);
    float t = 1.0f / (1.0f + 0.5f * az);
    float poly = -1.26551223f + t * (1.00002368f + t * (0.37409196f + t * (0.09678418f +
                 t * (-0.18628806f + t * (0.27886807f + t * (-1.13520398f + t * (1.48851587f +
                 t * (-0.82215223f + t * 0.17087277f))))))));
    float erfc_az = t * exp_f32(-az * az + poly);
    return z >= 0 ? 1.0f - 0.5f * erfc_az : 0.5f * erfc_az;
}

#define K_BETA_F32 0.79788456080286536f /* sqrt(2 / pi) */
#define K_KAPPA_F32 0.044715f
#define INV_SQRT_2PI_F32 0.39894228040143268f

#define ACT_CASES_F32(code, slope, n, IN, OUT, DER)                                            \
    switch (code) {                                                                            \
    case ACT_RELU:                                                                             \
        _Pragma("omp simd") for (size_t k = 0; k < (size_t)(n); ++k) {                        \
            float a = IN[k];                                                                   \
            OUT[k] = a > 0 || a != a ? a : 0.0f; /* NaN stays */                                                       \
            DER[k] = a > 0 ? 1.0f : 0.0f;                                                      \
        }                                                                                      \
        break;                                                                                 \
    case ACT_LEAKY_RELU:                                                                       \
        _Pragma("omp simd") for (size_t k = 0; k < (size_t)(n); ++k) {                        \
            float a = IN[k];                                                                   \
            OUT[k] = a > 0 ? a : (slope) * a;                                                  \
            DER[k] = a > 0 ? 1.0f : (slope);                                                   \
        }                                                                                      \
        break;                                                                                 \
    case ACT_TANH: /* Cephes' odd polynomial near 0 (no cancellation), 2 sigmoid(2a) - 1 beyond */ \
        _Pragma("omp simd") for (size_t k = 0; k < (size_t)(n); ++k) {                        \
            float a = IN[k];                                                                   \
            float s2 = a * a;                                                                  \
            float near = ((((-5.70498872745e-3f * s2 + 2.06390887954e-2f) * s2 -               \
                            5.37397155531e-2f) * s2 + 1.33314422036e-1f) * s2 -                \
                          3.33332819422e-1f) * s2 * a + a;                                     \
            float far = 2.0f * sigmoid_f32(2.0f * a) - 1.0f;                                   \
            float y = fabsf(a) < 0.625f ? near : far;                                          \
            OUT[k] = y;                                                                        \
            DER[k] = 1.0f - y * y;                                                             \
        }                                                                                      \
        break;                                                                                 \
    case ACT_SIGMOID:                                                                          \
        _Pragma("omp simd") for (size_t k = 0; k < (size_t)(n); ++k) {                        \
            float y = sigmoid_f32(IN[k]);                                                      \
            OUT[k] = y;                                                                        \
            DER[k] = y * (1.0f - y);                                                           \
        }                                                                                      \
        break;                                                                                 \
    case ACT_GELU_TANH:                                                                        \
        _Pragma("omp simd") for (size_t k = 0; k < (size_t)(n); ++k) {                        \
            float a = IN[k];                                                                   \
            float a2 = a * a;                                                                  \
            float s = sigmoid_f32(2.0f * K_BETA_F32 * (a + K_KAPPA_F32 * a2 * a));             \
            OUT[k] = a * s;                                                                    \
            DER[k] = s + a * 2.0f * s * (1.0f - s) * K_BETA_F32 * (1.0f + 3.0f * K_KAPPA_F32 * a2); \
        }                                                                                      \
        break;                                                                                 \
    case ACT_GELU_ERF:                                                                         \
        _Pragma("omp simd") for (size_t k = 0; k < (size_t)(n); ++k) {                        \
            float a = IN[k];                                                                   \
            float p = normal_cdf_f32(a);                                                       \
            OUT[k] = a * p;                                                                    \
            DER[k] = p + a * INV_SQRT_2PI_F32 * exp_f32(-0.5f * a * a);                        \
        }                                                                                      \
        break;                                                                                 \
    case ACT_SILU:                                                                             \
        _Pragma("omp simd") for (size_t k = 0; k < (size_t)(n); ++k) {                        \
            float a = IN[k];                                                                   \
            float s = sigmoid_f32(a);                                                          \
            OUT[k] = a * s;                                                                    \
            DER[k] = s * (1.0f + a * (1.0f - s));                                              \
        }                                                                                      \
        break;                                                                                 \
    default:                                                                                   \
        _Pragma("omp simd") for (size_t k = 0; k < (size_t)(n); ++k) {                        \
            OUT[k] = IN[k];                                                                    \
            DER[k] = 1.0f;                                                                     \
        }                                                                                      \
    }

/* -- double: the C library's functions, ATen's formulas -- */
#define K_BETA_F64 0.79788456080286536 /* sqrt(2) * (2 / sqrt(pi)) / 2 */
#define K_KAPPA_F64 0.044715
#define INV_SQRT_2PI_F64 0.39894228040143268

#define ACT_CASES_F64(code, slope, n, IN, OUT, DER)                                            \
    switch (code) {                                                                            \
    case ACT_RELU:                                                                             \
        for (size_t k = 0; k < (size_t)(n); ++k) {                                            \
            double a = IN[k];                                                                  \
            OUT[k] = a > 0 || a != a ? a : 0.0; /* NaN stays */                                                       \
            DER[k] = a > 0 ? 1.0 : 0.0;                                                        \
        }                                                                                      \
        break;                                                                                 \
    case ACT_LEAKY_RELU:                                                                       \
        for (size_t k = 0; k < (size_t)(n); ++k) {                                            \
            double a = IN[k];                                                                  \
            OUT[k] = a > 0 ? a : (slope) * a;                                                  \
            DER[k] = a > 0 ? 1.0 : (slope);                                                    \
        }                                                                                      \
        break;                                                                                 \
    case ACT_TANH:                                                                             \
        for (size_t k = 0; k < (size_t)(n); ++k) {                                            \
            double y = tanh(IN[k]);                                                            \
            OUT[k] = y;                                                                        \
            DER[k] = 1.0 - y * y;                                                              \
        }                                                                                      \
        break;                                                                                 \
    case ACT_SIGMOID:                                                                          \
        for (size_t k = 0; k < (size_t)(n); ++k) {                                            \
            double y = 1.0 / (1.0 + exp(-IN[k]));                                              \
            OUT[k] = y;                                                                        \
            DER[k] = y * (1.0 - y);                                                            \
        }                                                                                      \
        break;                                                                                 \
    case ACT_GELU_TANH:                                                                        \
        for (size_t k = 0; k < (size_t)(n); ++k) {                                            \
            double a = IN[k];                                                                  \
            double t = tanh(K_BETA_F64 * (a + K_KAPPA_F64 * a * a * a));                       \
            OUT[k] = 0.5 * a * (1.0 + t);                                                      \
            DER[k] = 0.5 * (1.0 + t) +                                                         \
                     0.5 * a * (1.0 - t * t) * K_BETA_F64 * (1.0 + 3.0 * K_KAPPA_F64 * a * a);   \
        }                                                                                      \
        break;                                                                                 \
    case ACT_GELU_ERF:                                                                         \
        for (size_t k = 0; k < (size_t)(n); ++k) {                                            \
            double a = IN[k];                                                                  \
            double p = 0.5 * (1.0 + erf(a * 0.70710678118654752));                             \
            OUT[k] = a * p;                                                                    \
            DER[k] = p + a * INV_SQRT_2PI_F64 * exp(-0.5 * a * a);                             \
        }                                                                                      \
        break;                                                                                 \
    case ACT_SILU:                                                                             \
        for (size_t k = 0; k < (size_t)(n); ++k) {                                            \
            double a = IN[k];                                                                  \
            double s = 1.0 / (1.0 + exp(-a));                                                  \
            OUT[k] = a * s;                                                                    \
            DER[k] = s * (1.0 + a * (1.0 - s));                                                \
        }                                                                                      \
        break;                                                                                 \
    default:                                                                                   \
        for (size_t k = 0; k < (size_t)(n); ++k) {                                            \
            OUT[k] = IN[k];                                                                    \
            DER[k] = 1.0;                                                                      \
        }                                                                                      \
    }

#define REAL float
#define SUFFIX f32
#define ACT_LOOP ACT_CASES_F32
#define EXP exp_f32
#define LOG logf
#include "dense_chain.h"
#undef REAL
#undef SUFFIX
#undef ACT_LOOP
#undef EXP
#undef LOG

#define REAL double
#define SUFFIX f64
#define ACT_LOOP ACT_CASES_F64
#define EXP exp
#define LOG log
#include "dense_chain.h"
