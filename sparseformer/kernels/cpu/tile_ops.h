// Element-wise tile kernels, exp and GEMM of the native CPU kernel (core.h). No torch
// dependency, so a stand-alone micro-benchmark can include it too. Include it in exactly one
// translation unit per binary: it defines the target_clones functions.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

// ------------------------------------------------------------------------------------------------
// Portability macros
// ------------------------------------------------------------------------------------------------

#if defined(__GNUC__) || defined(__clang__)
#define SF_INLINE inline __attribute__((always_inline))
#define SF_RESTRICT __restrict__
#else
#define SF_INLINE inline
#define SF_RESTRICT
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    (__GNUC__ >= 12) && !defined(SF_NO_CLONES)
#define SF_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#define SF_HAS_CLONES 1
#else
#define SF_CLONES
#define SF_HAS_CLONES 0
#endif

// BLAS (Fortran interface, LP64) as exported by libtorch_cpu. Weak: null if nobody defines them.
#if (defined(__GNUC__) || defined(__clang__)) && !defined(_WIN32) && !defined(SF_NO_BLAS)
#define SF_WEAK_BLAS 1
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
            const double* beta, double* c, const int* ldc) __attribute__((weak));
}
#else
#define SF_WEAK_BLAS 0
#endif

namespace sparseformer_cpu {

// ------------------------------------------------------------------------------------------------
// Scratch memory: 64-byte aligned, per thread, owned by the work loop.
// ------------------------------------------------------------------------------------------------

template <typename T>
struct Buffer {
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<void, Free> mem;
  T* ptr = nullptr;
  explicit Buffer(int64_t n) {
    size_t bytes = static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(T);
    bytes = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, bytes);
    if (p == nullptr) throw std::bad_alloc();
    mem.reset(p);
    ptr = static_cast<T*>(p);
  }
  T* get() const { return ptr; }
};

// ------------------------------------------------------------------------------------------------
// GEMM, row-major: C[m x n] = alpha * op(A)[m x k] @ op(B)[k x n] + beta * C
// ------------------------------------------------------------------------------------------------

inline std::atomic<bool> g_use_blas{true};

// Portable kernel, row-major, no transposes (callers pack). Register-blocked MR x NR.
template <typename T, int MR, int NR>
SF_INLINE void gemm_nn_block(int m, int n, int k, T alpha, const T* SF_RESTRICT a, int lda,
                             const T* SF_RESTRICT b, int ldb, T* SF_RESTRICT c, int ldc) {
  int i = 0;
  for (; i + MR <= m; i += MR) {
    int j = 0;
    for (; j + NR <= n; j += NR) {
      T acc[MR][NR];
      for (int r = 0; r < MR; ++r)
        for (int t = 0; t < NR; ++t) acc[r][t] = T(0);
      for (int p = 0; p < k; ++p) {
        const T* brow = b + static_cast<int64_t>(p) * ldb + j;
        for (int r = 0; r < MR; ++r) {
          const T ar = a[static_cast<int64_t>(i + r) * lda + p];
          for (int t = 0; t < NR; ++t) acc[r][t] += ar * brow[t];
        }
      }
      for (int r = 0; r < MR; ++r) {
        T* crow = c + static_cast<int64_t>(i + r) * ldc + j;
        for (int t = 0; t < NR; ++t) crow[t] += alpha * acc[r][t];
      }
    }
    // column tail
    for (int r = 0; r < MR; ++r) {
      const T* arow = a + static_cast<int64_t>(i + r) * lda;
      T* crow = c + static_cast<int64_t>(i + r) * ldc;
      for (int jj = j; jj < n; ++jj) {
        T s = T(0);
        for (int p = 0; p < k; ++p) s += arow[p] * b[static_cast<int64_t>(p) * ldb + jj];
        crow[jj] += alpha * s;
      }
    }
  }
  // row tail: one row at a time, axpy form (vectorises over j)
  for (; i < m; ++i) {
    const T* arow = a + static_cast<int64_t>(i) * lda;
    T* crow = c + static_cast<int64_t>(i) * ldc;
    for (int p = 0; p < k; ++p) {
      const T ar = alpha * arow[p];
      const T* brow = b + static_cast<int64_t>(p) * ldb;
      for (int jj = 0; jj < n; ++jj) crow[jj] += ar * brow[jj];
    }
  }
}

template <typename T>
SF_INLINE void gemm_portable_body(bool ta, bool tb, int m, int n, int k, T alpha, const T* A, int lda,
                                  const T* B, int ldb, T beta, T* C, int ldc) {
  thread_local std::vector<T> pack_a, pack_b;
  const T* a = A;
  int la = lda;
  if (ta) {  // A is stored k x m (row-major, ld lda); pack op(A) = A^T as m x k
    pack_a.resize(static_cast<size_t>(m) * k);
    for (int p = 0; p < k; ++p)
      for (int i = 0; i < m; ++i) pack_a[static_cast<size_t>(i) * k + p] = A[static_cast<int64_t>(p) * lda + i];
    a = pack_a.data();
    la = k;
  }
  const T* b = B;
  int lb = ldb;
  if (tb) {  // B is stored n x k; pack op(B) = B^T as k x n
    pack_b.resize(static_cast<size_t>(k) * n);
    for (int j = 0; j < n; ++j)
      for (int p = 0; p < k; ++p) pack_b[static_cast<size_t>(p) * n + j] = B[static_cast<int64_t>(j) * ldb + p];
    b = pack_b.data();
    lb = n;
  }
  for (int i = 0; i < m; ++i) {
    T* crow = C + static_cast<int64_t>(i) * ldc;
    if (beta == T(0)) {
      for (int j = 0; j < n; ++j) crow[j] = T(0);
    } else if (beta != T(1)) {
      for (int j = 0; j < n; ++j) crow[j] *= beta;
    }
  }
  if (k == 0) return;
  constexpr int NR = std::is_same<T, float>::value ? 32 : 16;
  gemm_nn_block<T, 4, NR>(m, n, k, alpha, a, la, b, lb, C, ldc);
}

SF_CLONES void gemm_portable_f32(bool ta, bool tb, int m, int n, int k, float alpha, const float* A,
                                 int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  gemm_portable_body<float>(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_portable_f64(bool ta, bool tb, int m, int n, int k, double alpha, const double* A, int lda,
                       const double* B, int ldb, double beta, double* C, int ldc) {
  gemm_portable_body<double>(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

inline bool blas_available() {
#if SF_WEAK_BLAS
  return sgemm_ != nullptr && dgemm_ != nullptr;
#else
  return false;
#endif
}

// Row-major C = alpha op(A) op(B) + beta C. ta: A is stored transposed (k x m); tb: B stored n x k.
SF_INLINE void gemm_rm(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda,
                       const float* B, int ldb, float beta, float* C, int ldc) {
  if (m <= 0 || n <= 0) return;
#if SF_WEAK_BLAS
  if (k > 0 && g_use_blas.load(std::memory_order_relaxed) && sgemm_ != nullptr) {
    // row-major C = col-major C^T = op(B)^T op(A)^T
    const char ca = tb ? 'T' : 'N', cb = ta ? 'T' : 'N';
    const int ldb_ = std::max(ldb, 1), lda_ = std::max(lda, 1), ldc_ = std::max(ldc, 1);
    sgemm_(&ca, &cb, &n, &m, &k, &alpha, B, &ldb_, A, &lda_, &beta, C, &ldc_);
    return;
  }
#endif
  gemm_portable_f32(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

SF_INLINE void gemm_rm(bool ta, bool tb, int m, int n, int k, double alpha, const double* A, int lda,
                       const double* B, int ldb, double beta, double* C, int ldc) {
  if (m <= 0 || n <= 0) return;
#if SF_WEAK_BLAS
  if (k > 0 && g_use_blas.load(std::memory_order_relaxed) && dgemm_ != nullptr) {
    const char ca = tb ? 'T' : 'N', cb = ta ? 'T' : 'N';
    const int ldb_ = std::max(ldb, 1), lda_ = std::max(lda, 1), ldc_ = std::max(ldc, 1);
    dgemm_(&ca, &cb, &n, &m, &k, &alpha, B, &ldb_, A, &lda_, &beta, C, &ldc_);
    return;
  }
#endif
  gemm_portable_f64(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

// ------------------------------------------------------------------------------------------------
// Vectorisation hints: OpenMP SIMD (portable, honoured by GCC, Clang and MSVC with -fopenmp or
// -fopenmp-simd); they let the compiler vectorise the max / sum reductions over float rows that
// strict IEEE semantics would otherwise keep scalar. -fopenmp defines _OPENMP; -fopenmp-simd
// defines nothing, so a build with it alone (the ONNX Runtime library) also defines SF_OPENMP_SIMD.
// ------------------------------------------------------------------------------------------------

#define SF_PRAGMA(x) _Pragma(#x)
#if defined(_OPENMP) || defined(SF_OPENMP_SIMD)
#define SF_SIMD SF_PRAGMA(omp simd)
#define SF_SIMD_MAX(v) SF_PRAGMA(omp simd reduction(max : v))
#define SF_SIMD_SUM(v) SF_PRAGMA(omp simd reduction(+ : v))
#else
#define SF_SIMD
#define SF_SIMD_MAX(v)
#define SF_SIMD_SUM(v)
#endif

// ------------------------------------------------------------------------------------------------
// exp
// ------------------------------------------------------------------------------------------------

// exp(s - m) for float in plain C++ that vectorises, computed as 2^t with t = s*log2(e) - m*log2(e)
// (one FMA; the rounding of m*log2(e) is the same for a whole row, so it cancels in the softmax).
// t = n + f with n = round(t) (the "magic number" trick, which leaves n in the low mantissa bits),
// 2^f on [-1/2, 1/2] by its degree-6 Taylor polynomial (relative error < 1.2e-7), 2^n built in the
// exponent bits. t < -126 (including -inf) gives exactly 0; NaN stays NaN. Precondition: t < 127
// (callers subtract the row max or the logsumexp, so t <= 0 up to rounding).
constexpr float kLog2e = 1.44269504088896341f;

SF_INLINE float exp2_f32(float t) {
  constexpr float lo = -126.0f;
  const float tc = t < lo ? lo : t;
  const float shifted = tc + 12582912.0f;  // 1.5 * 2^23: the integer part lands in the low bits
  const float n = shifted - 12582912.0f;
  const float f = tc - n;  // [-1/2, 1/2]
  float p = 1.5403530393381609e-4f;  // ln2^6 / 6!
  p = p * f + 1.3333558146428443e-3f;  // ln2^5 / 5!
  p = p * f + 9.6181291076284772e-3f;  // ln2^4 / 4!
  p = p * f + 5.5504108664821580e-2f;  // ln2^3 / 3!
  p = p * f + 2.4022650695910071e-1f;  // ln2^2 / 2!
  p = p * f + 6.9314718055994531e-1f;  // ln2
  p = p * f + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof(float));
  bits = (bits - 0x4B400000 + 127) << 23;  // (n + 127) << 23
  float pow2n;
  std::memcpy(&pow2n, &bits, sizeof(float));
  const float res = p * pow2n;
  return t < lo ? 0.0f : res;
}

// exp(s - m) where m_log2e = m * log2(e) for float, m for double.
SF_INLINE float exp_shifted(float s, float m_log2e) { return exp2_f32(s * kLog2e - m_log2e); }
SF_INLINE double exp_shifted(double s, double m) { return std::exp(s - m); }
SF_INLINE float shift_arg(float m) { return m * kLog2e; }
SF_INLINE double shift_arg(double m) { return m; }

// ------------------------------------------------------------------------------------------------
// tanh (logit soft-capping)
// ------------------------------------------------------------------------------------------------

// tanh(x) and its derivative 1 - tanh(x)^2.
template <typename T>
struct TanhD {
  T t, d;
};

// float, in plain C++ that vectorises (both branches are computed, then one is selected): for
// |x| < 0.35 the odd Taylor polynomial up to x^11 (truncation < 2e-8 relative); else
// tanh = (1 - e) / (1 + e) and 1 - tanh^2 = 4e / (1 + e)^2 with e = exp(-2|x|) (no cancellation
// near |x| = 1), |x| clamped to 9 (tanh(9) rounds to 1). A few ulp; NaN stays NaN.
SF_INLINE TanhD<float> tanh_d(float x) {
  const float ax = std::fabs(x);
  const float a = ax > 9.0f ? 9.0f : ax;
  const float a2 = a * a;
  float p = -1382.0f / 155925.0f;
  p = p * a2 + 62.0f / 2835.0f;
  p = p * a2 - 17.0f / 315.0f;
  p = p * a2 + 2.0f / 15.0f;
  p = p * a2 - 1.0f / 3.0f;
  const float small = a + a * a2 * p;
  const float e = exp2_f32(-2.0f * kLog2e * a);
  const float inv = 1.0f / (1.0f + e);
  const bool is_small = a < 0.35f;
  const float t = is_small ? small : (1.0f - e) * inv;
  const float d = is_small ? 1.0f - small * small : 4.0f * e * inv * inv;
  return {std::copysign(t, x), d};
}

SF_INLINE TanhD<double> tanh_d(double x) {
  const double t = std::tanh(x);
  return {t, 1.0 - t * t};
}

// ------------------------------------------------------------------------------------------------
// Element-wise work on score blocks
// ------------------------------------------------------------------------------------------------
//
// A score block S is rows x cols (row stride lds). One GEMM fills it for a query block against a
// run of consecutive key tiles (forward, dQ pass) or for a run of consecutive query blocks against
// one key tile (dK/dV pass); bias_mask_block then applies each tile's own terms to its sub-block.

// What modifies the scores of one tile (a sub-block of S).
template <typename T>
struct TileTerms {
  const bool* mask = nullptr;  // [bs, bs] row-major (row stride mask_ld), nullptr for a full tile
  int64_t mask_ld = 0;
  const bool* keep = nullptr;  // key_padding_mask for this tile's keys [n], nullptr if none
  bool has_lw = false;
  T log_weight = T(0);
  T slope = T(0);  // decay: score -= slope * |dist0 + r - c|; 0 = none
  T dist0 = T(0);  // (i0 + q_offset) - j0 of the tile's first row and column
  bool any() const { return mask != nullptr || keep != nullptr || has_lw || slope != T(0); }
};

// Logit soft-capping of S [m x n] (row stride lds) in place: s -> cap * tanh(s / cap). With dcap
// (same shape and stride) also dcap = 1 - tanh(s / cap)^2, the derivative of the capped score.
template <typename T>
SF_INLINE void softcap_body(T* S, int64_t lds, int m, int n, T cap, T* dcap) {
  const T inv = T(1) / cap;
  for (int r = 0; r < m; ++r) {
    T* SF_RESTRICT s = S + r * lds;
    if (dcap == nullptr) {
      SF_SIMD
      for (int c = 0; c < n; ++c) s[c] = cap * tanh_d(s[c] * inv).t;
    } else {
      T* SF_RESTRICT g = dcap + r * lds;
      SF_SIMD
      for (int c = 0; c < n; ++c) {
        const TanhD<T> y = tanh_d(s[c] * inv);
        s[c] = cap * y.t;
        g[c] = y.d;
      }
    }
  }
}

// Adds the tile's bias to S [m x n] (row stride lds) and masks it (masked -> -inf).
template <typename T>
SF_INLINE void bias_mask_body(T* S, int64_t lds, int m, int n, const TileTerms<T>& tt) {
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  for (int r = 0; r < m; ++r) {
    T* SF_RESTRICT s = S + r * lds;
    if (tt.slope != T(0)) {
      const T lw = tt.log_weight;
      const T slope = tt.slope;
      const T d = tt.dist0 + static_cast<T>(r);
      SF_SIMD
      for (int c = 0; c < n; ++c) s[c] = s[c] + (lw - slope * std::abs(d - static_cast<T>(c)));
    } else if (tt.has_lw) {
      const T lw = tt.log_weight;
      SF_SIMD
      for (int c = 0; c < n; ++c) s[c] = s[c] + lw;
    }
    // masks are read as bytes (bool is one byte, 0 or 1): loops over bool do not vectorise in GCC
    if (tt.mask != nullptr) {
      const uint8_t* SF_RESTRICT mrow = reinterpret_cast<const uint8_t*>(tt.mask) + static_cast<int64_t>(r) * tt.mask_ld;
      if (tt.keep != nullptr) {
        const uint8_t* SF_RESTRICT kp = reinterpret_cast<const uint8_t*>(tt.keep);
        SF_SIMD
        for (int c = 0; c < n; ++c) {
          const T x = s[c];
          s[c] = (mrow[c] & kp[c]) != 0 ? x : ninf;
        }
      } else {
        SF_SIMD
        for (int c = 0; c < n; ++c) {
          const T x = s[c];
          s[c] = mrow[c] != 0 ? x : ninf;
        }
      }
    } else if (tt.keep != nullptr) {
      const uint8_t* SF_RESTRICT kp = reinterpret_cast<const uint8_t*>(tt.keep);
      SF_SIMD
      for (int c = 0; c < n; ++c) {
        const T x = s[c];
        s[c] = kp[c] != 0 ? x : ninf;
      }
    }
  }
}

// Forward online-softmax step over S [m x n] (scores of a run of key tiles, terms applied):
// row max / sum update, S -> exp(S - new max) in place, acc rows [m x dv] rescaled.
template <typename T>
SF_INLINE void softmax_update_body(T* S, int64_t lds, int m, int n, T* rmax, T* rsum, T* acc, int64_t ldacc,
                                   int dv) {
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  for (int r = 0; r < m; ++r) {
    T* SF_RESTRICT s = S + r * lds;
    T mx = ninf;
    SF_SIMD_MAX(mx)
    for (int c = 0; c < n; ++c) mx = s[c] > mx ? s[c] : mx;
    const T old = rmax[r];
    const T mnew = mx > old ? mx : old;
    if (mnew == ninf) {  // nothing attends in this row yet
      SF_SIMD
      for (int c = 0; c < n; ++c) s[c] = T(0);
      continue;
    }
    T sum = T(0);
    const T shift = shift_arg(mnew);
    SF_SIMD_SUM(sum)
    for (int c = 0; c < n; ++c) {
      const T y = exp_shifted(s[c], shift);
      s[c] = y;
      sum += y;
    }
    if (old == mnew) {
      rsum[r] += sum;
    } else {
      const T alpha = old == ninf ? T(0) : std::exp(old - mnew);
      rsum[r] = rsum[r] * alpha + sum;
      rmax[r] = mnew;
      T* SF_RESTRICT a = acc + r * ldacc;
      SF_SIMD
      for (int d = 0; d < dv; ++d) a[d] *= alpha;
    }
  }
}

// Backward: S [m x n] (terms applied) -> P = exp(S - lse[r]) in place; 0 where lse is -inf.
template <typename T>
SF_INLINE void probs_body(T* S, int64_t lds, int m, int n, const T* lse) {
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  for (int r = 0; r < m; ++r) {
    T* SF_RESTRICT s = S + r * lds;
    const T l = lse[r];
    if (l == ninf) {
      SF_SIMD
      for (int c = 0; c < n; ++c) s[c] = T(0);
      continue;
    }
    const T shift = shift_arg(l);
    SF_SIMD
    for (int c = 0; c < n; ++c) s[c] = exp_shifted(s[c], shift);
  }
}

// Backward: dS = P * (dP - delta[r]) in place of dP, times dcap (the soft-capping derivative,
// same stride) when not null: the gradient of the raw score.
template <typename T>
SF_INLINE void ds_body(const T* P, T* dP, int64_t lds, int m, int n, const T* delta, const T* dcap) {
  for (int r = 0; r < m; ++r) {
    const T* SF_RESTRICT p = P + r * lds;
    T* SF_RESTRICT g = dP + r * lds;
    const T dl = delta[r];
    if (dcap == nullptr) {
      SF_SIMD
      for (int c = 0; c < n; ++c) g[c] = p[c] * (g[c] - dl);
    } else {
      const T* SF_RESTRICT dc = dcap + r * lds;
      SF_SIMD
      for (int c = 0; c < n; ++c) g[c] = p[c] * (g[c] - dl) * dc[c];
    }
  }
}

// float: multi-versioned (target_clones) entry points; double: baseline.
SF_CLONES void bias_mask_f32(float* S, int64_t lds, int m, int n, const TileTerms<float>& tt) {
  bias_mask_body<float>(S, lds, m, n, tt);
}
SF_CLONES void softmax_update_f32(float* S, int64_t lds, int m, int n, float* rmax, float* rsum, float* acc,
                                  int64_t ldacc, int dv) {
  softmax_update_body<float>(S, lds, m, n, rmax, rsum, acc, ldacc, dv);
}
SF_CLONES void probs_f32(float* S, int64_t lds, int m, int n, const float* lse) { probs_body<float>(S, lds, m, n, lse); }
SF_CLONES void ds_f32(const float* P, float* dP, int64_t lds, int m, int n, const float* delta, const float* dcap) {
  ds_body<float>(P, dP, lds, m, n, delta, dcap);
}
SF_CLONES void softcap_f32(float* S, int64_t lds, int m, int n, float cap, float* dcap) {
  softcap_body<float>(S, lds, m, n, cap, dcap);
}

SF_INLINE void bias_mask(float* S, int64_t lds, int m, int n, const TileTerms<float>& tt) {
  if (tt.any()) bias_mask_f32(S, lds, m, n, tt);
}
SF_INLINE void bias_mask(double* S, int64_t lds, int m, int n, const TileTerms<double>& tt) {
  if (tt.any()) bias_mask_body<double>(S, lds, m, n, tt);
}
SF_INLINE void softmax_update(float* S, int64_t lds, int m, int n, float* rmax, float* rsum, float* acc,
                              int64_t ldacc, int dv) {
  softmax_update_f32(S, lds, m, n, rmax, rsum, acc, ldacc, dv);
}
SF_INLINE void softmax_update(double* S, int64_t lds, int m, int n, double* rmax, double* rsum, double* acc,
                              int64_t ldacc, int dv) {
  softmax_update_body<double>(S, lds, m, n, rmax, rsum, acc, ldacc, dv);
}
SF_INLINE void probs(float* S, int64_t lds, int m, int n, const float* lse) { probs_f32(S, lds, m, n, lse); }
SF_INLINE void probs(double* S, int64_t lds, int m, int n, const double* lse) {
  probs_body<double>(S, lds, m, n, lse);
}
SF_INLINE void ds(const float* P, float* dP, int64_t lds, int m, int n, const float* delta, const float* dcap) {
  ds_f32(P, dP, lds, m, n, delta, dcap);
}
SF_INLINE void ds(const double* P, double* dP, int64_t lds, int m, int n, const double* delta, const double* dcap) {
  ds_body<double>(P, dP, lds, m, n, delta, dcap);
}
SF_INLINE void softcap(float* S, int64_t lds, int m, int n, float cap, float* dcap) {
  softcap_f32(S, lds, m, n, cap, dcap);
}
SF_INLINE void softcap(double* S, int64_t lds, int m, int n, double cap, double* dcap) {
  softcap_body<double>(S, lds, m, n, cap, dcap);
}

}  // namespace sparseformer_cpu
