#pragma once
// An entropy source that needs no weights: a byte n-gram context model built
// on the device from a training text (or the input itself), for demos and
// for patching without BLT's entropy model. Orders 1..K back off to each
// other (a Dirichlet-smoothed chain):
//
//   p_1(v) = (c_1(v) + alpha) / (C_1 + 256 alpha)
//   p_k(v) = (c_k(v) + beta p_{k-1}(v)) / (C_k + beta),   k = 2..K
//
// c_k counts the byte after the order-k context (orders >= 2 hashed, with the
// order in the hash, into one table of `buckets` rows). H[i] is the entropy of
// p_K for byte i + 1 given the bytes ending at i, as for BLT's model. When the
// scored text is the training text, its own occurrence is left out of every
// count (leave-one-out), so each entropy measures how predictable the byte is
// from the rest of the text.
#include <tokenless/core/launch.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/warp.cuh>
#include <tokenless/core/workspace.hpp>

#include <cmath>
#include <cstdint>

namespace tokenless::patcher {

struct NGramModelConfig {
  int order = 4;                   // K: the longest context, in bytes (1..8)
  std::int64_t buckets = 1 << 16;  // rows of the hashed table of orders >= 2
  float alpha = 0.5f;              // order-1 smoothing
  float beta = 2.0f;               // back-off strength
};

inline constexpr int kMaxNGramOrder = 8;

namespace detail {

// FNV-1a over the order and the `order` bytes ending at `end` (missing bytes read as 0).
TL_HOST_DEVICE inline std::uint32_t context_hash(const std::uint8_t* bytes, std::int64_t end, int order, std::int64_t buckets) {
  std::uint32_t h = (2166136261u ^ static_cast<std::uint32_t>(order)) * 16777619u;
  for (int j = order - 1; j >= 0; --j) {
    const std::int64_t i = end - j;
    h = (h ^ (i >= 0 ? bytes[i] : 0u)) * 16777619u;
  }
  return static_cast<std::uint32_t>(h % static_cast<std::uint64_t>(buckets));
}

template <int = 0>
__global__ void ngram_count_kernel(const std::uint8_t* text, std::int64_t n, int order, std::int64_t buckets,
                                   std::uint32_t* ck, std::uint32_t* c1) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i + 1 < n; i += stride) {
    const unsigned next = text[i + 1];
    atomicAdd(&c1[static_cast<std::int64_t>(text[i]) * 256 + next], 1u);
    for (int k = 2; k <= order; ++k) {
      atomicAdd(&ck[static_cast<std::int64_t>(context_hash(text, i, k, buckets)) * 256 + next], 1u);
    }
  }
}

// A warp per position; lanes cover the 256 byte values, 8 each.
template <int = 0>
__global__ void ngram_entropy_kernel(const std::uint8_t* text, std::int64_t n, NGramModelConfig cfg,
                                     const std::uint32_t* ck, const std::uint32_t* c1, bool leave_one_out, float* out) {
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const int warps = static_cast<int>(blockDim.x >> 5);
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * warps;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * warps + (threadIdx.x >> 5); i < n; i += stride) {
    const int own = leave_one_out && i + 1 < n ? text[i + 1] : -1;  // this occurrence was counted
    float c[8], p[8];
    float total = 0;
    const std::uint32_t* r1 = c1 + static_cast<std::int64_t>(text[i]) * 256;
    TL_UNROLL
    for (int e = 0; e < 8; ++e) {
      const int v = e * 32 + lane;
      c[e] = static_cast<float>(r1[v]) - (v == own ? 1.0f : 0.0f);
      total += c[e];
    }
    total = warp::reduce(total, Sum{});
    TL_UNROLL
    for (int e = 0; e < 8; ++e) p[e] = (c[e] + cfg.alpha) / (total + 256.0f * cfg.alpha);
    for (int k = 2; k <= cfg.order; ++k) {
      const std::uint32_t* rk = ck + static_cast<std::int64_t>(context_hash(text, i, k, cfg.buckets)) * 256;
      total = 0;
      TL_UNROLL
      for (int e = 0; e < 8; ++e) {
        const int v = e * 32 + lane;
        c[e] = static_cast<float>(rk[v]) - (v == own ? 1.0f : 0.0f);
        total += c[e];
      }
      total = warp::reduce(total, Sum{});
      TL_UNROLL
      for (int e = 0; e < 8; ++e) p[e] = (c[e] + cfg.beta * p[e]) / (total + cfg.beta);
    }
    float h = 0;
    TL_UNROLL
    for (int e = 0; e < 8; ++e) h -= p[e] * __logf(p[e]);
    h = warp::reduce(h, Sum{});
    if (lane == 0) out[i] = h;
  }
}

}  // namespace detail

// Builds the model from `train` and writes the entropies of `text`.
struct NGramEntropy {
  struct Arguments {
    const std::uint8_t* train = nullptr;  // [n_train], may equal text
    std::int64_t n_train = 0;
    const std::uint8_t* text = nullptr;   // [n]
    std::int64_t n = 0;
    NGramModelConfig config;
    float* entropies = nullptr;           // [n]
  };

  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::not_null("train", a.train));
    TL_RETURN_IF_ERROR(check::not_null("text", a.text));
    TL_RETURN_IF_ERROR(check::not_null("entropies", a.entropies));
    TL_RETURN_IF_ERROR(check::positive("n_train", a.n_train));
    TL_RETURN_IF_ERROR(check::positive("n", a.n));
    if (a.config.order < 1 || a.config.order > kMaxNGramOrder) {
      return Status::argument(StatusCode::invalid_argument, "config.order", "1 to 8", "%d", a.config.order);
    }
    TL_RETURN_IF_ERROR(check::positive("config.buckets", a.config.buckets));
    if (!(a.config.alpha > 0.0f) || !(a.config.beta > 0.0f) || !std::isfinite(a.config.alpha) || !std::isfinite(a.config.beta)) {
      return Status::argument(StatusCode::invalid_argument, "config.alpha/beta", "finite values > 0", "%g, %g",
                              static_cast<double>(a.config.alpha), static_cast<double>(a.config.beta));
    }
    return Status::ok();
  }

  static std::size_t workspace_size(const Arguments& a) {
    WorkspaceLayout w;
    w.add_array<std::uint32_t>(a.config.buckets * 256);
    w.add_array<std::uint32_t>(256 * 256);
    return w.bytes();
  }

  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    TL_RETURN_IF_ERROR(check_workspace(ws, workspace_size(a)));
    WorkspaceLayout w;
    auto* ck = ws.at<std::uint32_t>(w.add_array<std::uint32_t>(a.config.buckets * 256));
    auto* c1 = ws.at<std::uint32_t>(w.add_array<std::uint32_t>(256 * 256));
    TL_CUDA_TRY(cudaMemsetAsync(ck, 0, static_cast<std::size_t>(a.config.buckets) * 256 * 4, stream));
    TL_CUDA_TRY(cudaMemsetAsync(c1, 0, 256 * 256 * 4, stream));
    auto grid = [](std::int64_t work) {
      return dim3(static_cast<unsigned>(std::max<std::int64_t>(1, std::min<std::int64_t>(work, 4096))));
    };
    TL_RETURN_IF_ERROR(launch(detail::ngram_count_kernel<>, {grid((a.n_train + 255) / 256), dim3(256), 0, stream},
                              a.train, a.n_train, a.config.order, a.config.buckets, ck, c1));
    const bool loo = a.train == a.text && a.n_train == a.n;
    return launch(detail::ngram_entropy_kernel<>, {grid((a.n + 7) / 8), dim3(256), 0, stream}, a.text, a.n, a.config,
                  static_cast<const std::uint32_t*>(ck), static_cast<const std::uint32_t*>(c1), loo, a.entropies);
  }
};

}  // namespace tokenless::patcher
