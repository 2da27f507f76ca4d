#pragma once
// blas::Gemm against the host reference, for every dtype, transpose and
// epilogue: cuBLASLt on the gpu tier, the executor's host loop on the emu
// tier (tests/gpu/test_cublaslt.cu, tests/emu/test_cublaslt.cpp).
#include "../support/testbed.hpp"

#include <tokenless/tokenless.cuh>

#include <tokenless/reference/gemm.hpp>

namespace tlt::gemm_tests {

using namespace tokenless;

template <class T>
void gemm_case(std::int64_t m, std::int64_t n, std::int64_t k, bool ta, bool tb, blas::Epilogue epi) {
  CAPTURE(m);
  CAPTURE(n);
  CAPTURE(k);
  CAPTURE(ta);
  CAPTURE(tb);
  CAPTURE(static_cast<int>(epi));
  const std::int64_t lda = ta ? m : k, ldb = tb ? k : n;
  auto ha = tlt::random_values<T>(static_cast<std::size_t>(m * k), 1);
  auto hb = tlt::random_values<T>(static_cast<std::size_t>(k * n), 2);
  auto hbias = tlt::random_values<T>(static_cast<std::size_t>(n), 3);
  const bool with_bias = epi == blas::Epilogue::bias || epi == blas::Epilogue::bias_gelu;
  const bool gelu = epi == blas::Epilogue::gelu || epi == blas::Epilogue::bias_gelu;
  tlt::DeviceBuffer<T> a(ha), b(hb), bias(hbias), d(static_cast<std::size_t>(m * n));
  blas::LtHandle h;
  REQUIRE_OK(blas::LtHandle::create(h));
  blas::Gemm::Arguments g;
  g.handle = &h;
  g.dtype = dtype_traits<T>::id;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a = a.get();
  g.lda = lda;
  g.trans_a = ta;
  g.b = b.get();
  g.ldb = ldb;
  g.trans_b = tb;
  g.d = d.get();
  g.ldd = n;
  g.bias = with_bias ? bias.get() : nullptr;
  g.epilogue = epi;
  tlt::Testbed<blas::Gemm>().run_ok(g);
  auto got_t = d.download();
  std::vector<float> got(got_t.size());
  for (std::size_t i = 0; i < got.size(); ++i) got[i] = to_float(got_t[i]);
  auto truth = reference::gemm(ha.data(), lda, ta, hb.data(), ldb, tb, static_cast<const T*>(nullptr), n,
                               with_bias ? hbias.data() : nullptr, gelu, m, n, k, 1.0, 0.0);
  auto naive = reference::gemm_naive(ha.data(), lda, ta, hb.data(), ldb, tb, with_bias ? hbias.data() : nullptr, gelu,
                                     m, n, k);
  // Output rounding to T dominates both errors; tensor-core accumulation order
  // differs from the naive loop, hence the factor 2.
  tlt::check_accuracy(got, naive, truth, 2.0, dtype_traits<T>::unit_roundoff);
}

// D in fp32 with 16-bit A and B, accumulated (beta = 1): a weight gradient
// over chunks, Aᵀ·B as dW = dYᵀ·X reads it. The products are exact in fp32,
// so the error is fp32 accumulation's: within 4 k u32 of Σ|a b| + |D|.
template <class T>
void gemm_fp32_out_case(std::int64_t m, std::int64_t n, std::int64_t k) {
  CAPTURE(m);
  CAPTURE(n);
  CAPTURE(k);
  auto ha = tlt::random_values<T>(static_cast<std::size_t>(k * m), 4);  // stored [k, m]: trans_a
  auto hb = tlt::random_values<T>(static_cast<std::size_t>(k * n), 5);
  auto hd = tlt::random_values<float>(static_cast<std::size_t>(m * n), 6);
  tlt::DeviceBuffer<T> a(ha), b(hb);
  tlt::DeviceBuffer<float> d(hd);
  blas::LtHandle h;
  REQUIRE_OK(blas::LtHandle::create(h));
  blas::Gemm::Arguments g;
  g.handle = &h;
  g.dtype = dtype_traits<T>::id;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a = a.get();
  g.lda = m;
  g.trans_a = true;
  g.b = b.get();
  g.ldb = n;
  g.d = d.get();
  g.ldd = n;
  g.beta = 1.0f;
  g.d_fp32 = true;
  tlt::Testbed<blas::Gemm> tb;
  tb.run_ok(g);
  const auto got = d.download();
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double want = hd[i * n + j], mag = std::fabs(want);
      for (std::int64_t p = 0; p < k; ++p) {
        const double x = to_float(ha[p * m + i]) * static_cast<double>(to_float(hb[p * n + j]));
        want += x;
        mag += std::fabs(x);
      }
      CHECK(std::fabs(got[i * n + j] - want) <= 4.0 * static_cast<double>(k) * 5.96e-8 * mag);
    }
  }
  // A bias or GELU epilogue is refused with an fp32 D.
  tb.reject(g, {{"an epilogue with d_fp32", [](blas::Gemm::Arguments& x) { x.epilogue = blas::Epilogue::gelu; },
                 StatusCode::unsupported, "epilogue"}});
}

}  // namespace tlt::gemm_tests

TEST_CASE_TEMPLATE("blas::Gemm (cuBLASLt, or the executor's loop) matches the reference", T, float, __half, __nv_bfloat16) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) tlt::gemm_tests::gemm_case<T>(64, 48, 80, ta, tb, tokenless::blas::Epilogue::none);
  tlt::gemm_tests::gemm_case<T>(33, 17, 129, false, true, tokenless::blas::Epilogue::bias);
  tlt::gemm_tests::gemm_case<T>(128, 256, 64, false, true, tokenless::blas::Epilogue::gelu);
  tlt::gemm_tests::gemm_case<T>(128, 256, 64, false, true, tokenless::blas::Epilogue::bias_gelu);
}

TEST_CASE_TEMPLATE("blas::Gemm with an fp32 D accumulates 16-bit products in fp32", T, __half, __nv_bfloat16) {
  tlt::gemm_tests::gemm_fp32_out_case<T>(64, 48, 80);
  tlt::gemm_tests::gemm_fp32_out_case<T>(33, 17, 200);
}
