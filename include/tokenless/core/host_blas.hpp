#pragma once
// The host path's matrix products (models/*_host.hpp): C = A · Bᵀ (+ C), row
// major, fp32, as the models' weights are stored ([out, in], so a projection
// is x · Wᵀ). With a CBLAS (TOKENLESS_HAVE_CBLAS: the CMake target
// tokenless::host links OpenBLAS) they go to sgemm and sgemv; without one,
// to a blocked loop, so that a build without the library is slow but right.
//
// One set of threads: the pool's. A product is cut into blocks of C's rows
// (or columns, when it has few rows), one a thread, each a single-threaded
// sgemm (OpenBLAS is set to one thread on first use). OpenBLAS's own threads
// spin between calls, and beside the pool's element-wise passes that spin
// took a quarter of a training step's CPU on two cores (measured: 2,300
// tokens/s on one core or two, docs/performance.md). Inside a pool body (a
// loop over heads, say) a product runs on its caller's thread.
//
//   host::gemm_nt(m, n, k, A, lda, B, ldb, C, ldc)    C[m, n] = A[m, k] · B[n, k]ᵀ
//   host::gemm_nn(m, n, k, A, lda, B, ldb, C, ldc)    C[m, n] = A[m, k] · B[k, n]
//   host::gemm_tn(m, n, k, A, lda, B, ldb, C, ldc)    C[m, n] = A[k, m]ᵀ · B[k, n]
//                                                     (a weight's gradient, dW += dYᵀ X)
#include <tokenless/core/thread_pool.hpp>

#include <cstdint>

#if defined(TOKENLESS_HAVE_CBLAS)
#include <cblas.h>
#endif

namespace tokenless::host {

// The pool the products and the models' element-wise passes use.
inline ThreadPool& pool() {
  static ThreadPool p;
  return p;
}

namespace detail {
#if defined(TOKENLESS_HAVE_CBLAS)
inline void blas_one_thread() {
  static const bool once = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)once;
}
#endif
// Splits a product of m × n outputs over k over the pool: rows of C when
// there are many of them (64 a thread; or more rows than columns), else
// columns, so that each thread reads its share of the weight B once rather
// than all of it (a 64-token prefill: 0.86 → 1.0× transformers,
// docs/performance.md); body(r0, r1, c0, c1) computes that block. Small products (under 2²⁰ multiply-adds) stay on one thread; a
// matrix-vector product (a decode step's) splits from 2¹⁶ weights: it is
// bound by reading the weight, which two threads read faster than one
// (decode of a 125M Llama: 46 → 60 tokens/s on two cores, docs/performance.md).
template <class F>
void split(std::int64_t m, std::int64_t n, std::int64_t k, F&& body) {
  const int threads = pool().size();
  const bool small = m == 1 ? n * k < (std::int64_t{1} << 16) : m * n * k < (std::int64_t{1} << 20);
  if (threads == 1 || small) {
    body(0, m, 0, n);
    return;
  }
  if (m >= 64 * threads || m >= n) {
    pool().parallel_for(m, [&](std::int64_t lo, std::int64_t hi) { body(lo, hi, 0, n); }, 8);
  } else {
    pool().parallel_for(n, [&](std::int64_t lo, std::int64_t hi) { body(0, m, lo, hi); }, 16);
  }
}
#if !defined(TOKENLESS_HAVE_CBLAS)
// The fallback of C (+)= op(A) · B (B [k, n] row major): rows of C split over
// the pool, each streaming B's k rows once; a(i, e) reads op(A)'s element.
template <class ReadA>
void rows_times_b(std::int64_t m, std::int64_t n, std::int64_t k, ReadA a, const float* B, std::int64_t ldb, float* C,
                  std::int64_t ldc, bool accumulate) {
  pool().parallel_for(
      m,
      [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) {
          float* c = C + i * ldc;
          if (!accumulate) for (std::int64_t j = 0; j < n; ++j) c[j] = 0;
          for (std::int64_t e = 0; e < k; ++e) {
            const float x = a(i, e);
            const float* b = B + e * ldb;
            for (std::int64_t j = 0; j < n; ++j) c[j] += x * b[j];
          }
        }
      },
      1);
}
#endif
}  // namespace detail

inline constexpr bool have_blas() {
#if defined(TOKENLESS_HAVE_CBLAS)
  return true;
#else
  return false;
#endif
}

// C = A · Bᵀ, or C += A · Bᵀ with accumulate.
inline void gemm_nt(std::int64_t m, std::int64_t n, std::int64_t k, const float* A, std::int64_t lda, const float* B,
                    std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate = false) {
  if (m <= 0 || n <= 0) return;
#if defined(TOKENLESS_HAVE_CBLAS)
  detail::blas_one_thread();
  const float beta = accumulate ? 1.0f : 0.0f;
  detail::split(m, n, k, [&](std::int64_t r0, std::int64_t r1, std::int64_t c0, std::int64_t c1) {
    if (r1 - r0 == 1) {  // a decode step: gemv reads the weight once, at the memory's speed
      cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(c1 - c0), static_cast<int>(k), 1.0f, B + c0 * ldb,
                  static_cast<int>(ldb), A + r0 * lda, 1, beta, C + r0 * ldc + c0, 1);
      return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(r1 - r0), static_cast<int>(c1 - c0),
                static_cast<int>(k), 1.0f, A + r0 * lda, static_cast<int>(lda), B + c0 * ldb, static_cast<int>(ldb),
                beta, C + r0 * ldc + c0, static_cast<int>(ldc));
  });
#else
  // Columns of C split over the pool: each thread streams its rows of B once
  // for a block of A's rows.
  constexpr std::int64_t kRows = 4;
  pool().parallel_for(
      n,
      [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i0 = 0; i0 < m; i0 += kRows) {
          const std::int64_t i1 = i0 + kRows < m ? i0 + kRows : m;
          for (std::int64_t j = lo; j < hi; ++j) {
            const float* b = B + j * ldb;
            for (std::int64_t i = i0; i < i1; ++i) {
              const float* a = A + i * lda;
              float acc = 0;
              for (std::int64_t e = 0; e < k; ++e) acc += a[e] * b[e];
              C[i * ldc + j] = accumulate ? C[i * ldc + j] + acc : acc;
            }
          }
        }
      },
      16);
#endif
}

// C = A · B (B [k, n] row major), or C += A · B.
inline void gemm_nn(std::int64_t m, std::int64_t n, std::int64_t k, const float* A, std::int64_t lda, const float* B,
                    std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate = false) {
  if (m <= 0 || n <= 0) return;
#if defined(TOKENLESS_HAVE_CBLAS)
  detail::blas_one_thread();
  detail::split(m, n, k, [&](std::int64_t r0, std::int64_t r1, std::int64_t c0, std::int64_t c1) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(r1 - r0), static_cast<int>(c1 - c0),
                static_cast<int>(k), 1.0f, A + r0 * lda, static_cast<int>(lda), B + c0, static_cast<int>(ldb),
                accumulate ? 1.0f : 0.0f, C + r0 * ldc + c0, static_cast<int>(ldc));
  });
#else
  detail::rows_times_b(m, n, k, [&](std::int64_t i, std::int64_t e) { return A[i * lda + e]; }, B, ldb, C, ldc, accumulate);
#endif
}

// C = Aᵀ · B (A [k, m], B [k, n], both row major), or C += Aᵀ · B.
inline void gemm_tn(std::int64_t m, std::int64_t n, std::int64_t k, const float* A, std::int64_t lda, const float* B,
                    std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate = false) {
  if (m <= 0 || n <= 0) return;
#if defined(TOKENLESS_HAVE_CBLAS)
  detail::blas_one_thread();
  detail::split(m, n, k, [&](std::int64_t r0, std::int64_t r1, std::int64_t c0, std::int64_t c1) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(r1 - r0), static_cast<int>(c1 - c0),
                static_cast<int>(k), 1.0f, A + r0, static_cast<int>(lda), B + c0, static_cast<int>(ldb),
                accumulate ? 1.0f : 0.0f, C + r0 * ldc + c0, static_cast<int>(ldc));
  });
#else
  detail::rows_times_b(m, n, k, [&](std::int64_t i, std::int64_t e) { return A[e * lda + i]; }, B, ldb, C, ldc, accumulate);
#endif
}

}  // namespace tokenless::host
