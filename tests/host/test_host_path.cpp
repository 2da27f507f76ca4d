// The fast host path (core/host_blas.hpp, core/thread_pool.hpp,
// models/llama_host.hpp) against the plain references. Built twice: with
// OpenBLAS (tokenless::host, host.core) and without (the threaded fallback
// loops, host.portable).
#include "require_ok.hpp"

#include <tokenless/core/dtype.hpp>
#include <tokenless/core/host_blas.hpp>
#include <tokenless/io/model_weights.hpp>
#include <tokenless/models/llama_host.hpp>
#include <tokenless/reference/transformer.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace host = tokenless::host;
namespace io = tokenless::io;

namespace {

std::vector<float> random_matrix(std::int64_t rows, std::int64_t cols, std::uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> v(static_cast<std::size_t>(rows * cols));
  for (auto& e : v) e = d(g);
  return v;
}

const std::string kFixtures = std::string(TOKENLESS_SOURCE_DIR) + "/tests/fixtures/models/";

std::int32_t argmax_row(const std::vector<float>& v, std::size_t first, int n) {
  return static_cast<std::int32_t>(std::max_element(v.begin() + first, v.begin() + first + n) - (v.begin() + first));
}

}  // namespace

TEST_CASE("host path: the thread pool covers every index once, for any size and grain") {
  host::ThreadPool pool(3);
  for (std::int64_t n : {0, 1, 2, 3, 7, 100, 1001}) {
    for (std::int64_t grain : {1, 4, 1000}) {
      std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
      pool.parallel_for(
          n,
          [&](std::int64_t lo, std::int64_t hi) {
            for (std::int64_t i = lo; i < hi; ++i) hits[static_cast<std::size_t>(i)]++;
          },
          grain);
      for (std::int64_t i = 0; i < n; ++i) CHECK(hits[static_cast<std::size_t>(i)] == 1);
    }
  }
  host::ThreadPool one(1);
  int calls = 0;
  one.parallel_for(10, [&](std::int64_t lo, std::int64_t hi) { calls += static_cast<int>(hi - lo); });
  CHECK(calls == 10);
}

TEST_CASE("host path: gemm_nt and gemm_nn equal the double-precision product within fp32's error") {
  INFO("BLAS: " << host::have_blas());
  for (auto [m, n, k] : {std::array<std::int64_t, 3>{1, 37, 19}, {5, 64, 33}, {17, 3, 128}, {64, 96, 200}}) {
    CAPTURE(m);
    CAPTURE(n);
    CAPTURE(k);
    const std::int64_t lda = k + 3, ldb = k + 1, ldc = n + 2;
    const auto A = random_matrix(m, lda, 1), B = random_matrix(n, ldb, 2), Bn = random_matrix(k, n + 5, 3);
    std::vector<float> C(static_cast<std::size_t>(m * ldc), 7.0f), Cn(C.size(), 7.0f), Ca(C.size(), 1.0f);
    host::gemm_nt(m, n, k, A.data(), lda, B.data(), ldb, C.data(), ldc);
    host::gemm_nn(m, n, k, A.data(), lda, Bn.data(), n + 5, Cn.data(), ldc);
    host::gemm_nt(m, n, k, A.data(), lda, B.data(), ldb, Ca.data(), ldc, /*accumulate=*/true);
    // A naive fp32 dot product of k terms errs by at most about k·u·Σ|a·b|.
    const double tol = 2.0 * static_cast<double>(k) * 5.96e-8 * static_cast<double>(k);
    for (std::int64_t i = 0; i < m; ++i) {
      for (std::int64_t j = 0; j < n; ++j) {
        double nt = 0, nn = 0;
        for (std::int64_t e = 0; e < k; ++e) {
          nt += double(A[i * lda + e]) * B[j * ldb + e];
          nn += double(A[i * lda + e]) * Bn[e * (n + 5) + j];
        }
        CHECK(std::fabs(C[i * ldc + j] - nt) <= tol);
        CHECK(std::fabs(Cn[i * ldc + j] - nn) <= tol);
        CHECK(std::fabs(Ca[i * ldc + j] - (nt + 1.0)) <= tol + 1e-6);
      }
      for (std::int64_t j = n; j < ldc; ++j) CHECK(C[i * ldc + j] == 7.0f);  // the padding untouched
    }
  }
}

TEST_CASE("host path: the fast Llama-family model equals the plain decoder on every family's fixture") {
  for (const char* family : {"llama", "mistral", "mixtral", "phi3"}) {
    CAPTURE(family);
    io::ModelWeights<float> w;
    REQUIRE_OK(io::load_weights(kFixtures + family, &w));
    const int V = w.config.vocab;
    const std::vector<std::int32_t> prompt = {1, 17, 99, 4, 250, 31, 8, 77, 12, 5, 60};
    tokenless::reference::HostDecoderT<double> truth_d(w, [](double v) { return v; });
    const std::vector<double> truth = truth_d.forward(prompt);
    double scale = 0;
    for (double v : truth) scale = std::max(scale, std::fabs(v));
    tokenless::reference::HostDecoder plain(w, [](float v) { return v; });
    tokenless::models::LlamaHost fast(w, /*bf16=*/false);
    const auto a = plain.forward(prompt), b = fast.forward(prompt);
    REQUIRE(a.size() == b.size());
    double ea = 0, eb = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      ea = std::max(ea, std::fabs(a[i] - truth[i]));
      eb = std::max(eb, std::fabs(b[i] - truth[i]));
    }
    INFO("plain " << ea << ", fast " << eb << ", scale " << scale);
    CHECK(eb <= 4 * ea + 4 * 5.96e-8 * scale);  // the naive loop's error, give or take the order of the sums
    // Decode steps continue the cache as the plain decoder's do; last_only is the last row.
    for (std::int32_t id : {3, 200, 45}) {
      const auto pa = plain.forward({id}), pb = fast.forward({id}, /*last_only=*/true);
      REQUIRE(pb.size() == static_cast<std::size_t>(V));
      CHECK(argmax_row(pa, 0, V) == argmax_row(pb, 0, V));
      for (int v = 0; v < V; ++v) CHECK(std::fabs(pa[v] - pb[v]) <= 1e-4 * (1 + scale));
    }
    CHECK(fast.length() == static_cast<std::int64_t>(prompt.size() + 3));
    // A bf16 run rounds where the plain one does: the same greedy id from every row.
    auto w16 = w;
    auto round = [](std::vector<float>& t) { for (auto& v : t) v = tokenless::round_trip<__nv_bfloat16>(v); };
    for (auto* t : {&w16.embed, &w16.norm, &w16.lm_head}) round(*t);
    for (auto& l : w16.layers)
      for (auto* t : {&l.attn_norm, &l.wqkv, &l.wo, &l.mlp_norm, &l.w_gate_up, &l.w_down, &l.router}) round(*t);
    tokenless::reference::HostDecoder plain16(w16, [](float v) { return tokenless::round_trip<__nv_bfloat16>(v); });
    tokenless::models::LlamaHost fast16(w16, /*bf16=*/true);
    const auto a16 = plain16.forward(prompt), b16 = fast16.forward(prompt);
    double e16 = 0;
    for (std::size_t i = 0; i < a16.size(); ++i) e16 = std::max(e16, std::fabs(double(a16[i]) - b16[i]));
    INFO("bf16: plain vs fast " << e16);
    CHECK(e16 <= 8 * 3.9e-3 * scale);  // a few bf16 roundings flipped by the order of the sums
    fast.reset();
    CHECK(fast.length() == 0);
    const auto again = fast.forward(prompt);
    CHECK(again == b);  // a reset cache gives the same bits
  }
}
