#pragma once
// Softmax attention on the host for the models' host paths (blt_host.hpp,
// llama_host.hpp), as matrix products: for a block of query rows and one
// head, S = Q Kᵀ over the keys the block can see (host::gemm_nt: OpenBLAS's
// sgemm, or sgemv for one query), the masked softmax a row per thread, then
// O = P V (host::gemm_nn). Rows of q [nq, H hd] (row stride ldq), keys and
// values [nk, KV hd] (row stride ldkv; GQA: head h reads kv head h / (H / KV));
// query i sees keys [lo(i), hi(i)). An empty range reads every key
// uniformly, as transformers' additive finfo.min mask does (no model here
// builds one). fp32; the scale is head_dim**-0.5 rounded to fp32.
#include <tokenless/core/host_blas.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace tokenless::models {

template <class Range>
void host_attend(const float* q, std::int64_t ldq, const float* k, const float* v, std::int64_t ldkv, std::int64_t nq,
                 std::int64_t nk, int H, int KV, int hd, Range range, float* o, std::int64_t ldo) {
  constexpr std::int64_t kBlock = 128;  // query rows a block: bounds S to kBlock × (the block's keys)
  const int group = H / KV;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  std::vector<float> s;
  std::vector<std::pair<std::int64_t, std::int64_t>> r;
  for (std::int64_t i0 = 0; i0 < nq; i0 += kBlock) {
    const std::int64_t rows = std::min(kBlock, nq - i0);
    r.resize(static_cast<std::size_t>(rows));
    std::int64_t klo = nk, khi = 0;
    for (std::int64_t i = 0; i < rows; ++i) {
      r[i] = range(i0 + i);
      if (r[i].first >= r[i].second) r[i] = {0, nk};  // empty: uniform over every key
      klo = std::min(klo, r[i].first);
      khi = std::max(khi, r[i].second);
    }
    const std::int64_t width = khi - klo;
    s.resize(static_cast<std::size_t>(rows * width));
    for (int h = 0; h < H; ++h) {
      const int kvh = h / group;
      host::gemm_nt(rows, width, hd, q + i0 * ldq + h * hd, ldq, k + klo * ldkv + kvh * hd, ldkv, s.data(), width);
      host::pool().parallel_for(
          rows,
          [&](std::int64_t lo, std::int64_t hi) {
            for (std::int64_t i = lo; i < hi; ++i) {
              float* row = s.data() + i * width;
              const std::int64_t a = r[i].first - klo, b = r[i].second - klo;
              const bool uniform = range(i0 + i).first >= range(i0 + i).second;
              float mx = -INFINITY;
              for (std::int64_t j = a; j < b; ++j) mx = std::max(mx, row[j] = uniform ? 0.0f : row[j] * scale);
              float sum = 0;
              for (std::int64_t j = a; j < b; ++j) sum += row[j] = std::exp(row[j] - mx);
              const float inv = 1.0f / sum;
              for (std::int64_t j = 0; j < width; ++j) row[j] = j >= a && j < b ? row[j] * inv : 0.0f;
            }
          },
          16);
      host::gemm_nn(rows, hd, width, s.data(), width, v + klo * ldkv + kvh * hd, ldkv, o + i0 * ldo + h * hd, ldo);
    }
  }
}

}  // namespace tokenless::models
