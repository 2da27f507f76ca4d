#pragma once
// CoCoMix's sparse concepts, the schedule: the SAE's normalisation (a warp a
// row), a row's top k (a block a row, a radix select over order-preserving
// keys: four passes of eight bits, then the ties by index), sparse decode
// (a warp a row gathering k dictionary rows), its backward (per-row dots,
// then the dictionary's gradient by runs of a sort by index: no atomics),
// the concept loss (a block a row: log-sum-exp and its gradient in one
// kernel), mixing, and column sums. fp32 arithmetic throughout.
#include <tokenless/attention/kernel.cuh>  // the tile loaders and mma.sync products the SAE encode shares
#include <tokenless/bottleneck/kernel.cuh>
#include <tokenless/bottleneck/policy.hpp>
#include <tokenless/core/async_copy.cuh>
#include <tokenless/core/block.cuh>
#include <tokenless/core/config.hpp>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/warp.cuh>

#include <cmath>
#include <cstdint>

namespace tokenless::bottleneck::detail {

inline constexpr int kMaxTopK = 128;
inline constexpr int kCheckIndex = kFirstOperationCheck + 4;  // an index or label outside the dictionary

// Sparse codes: k (index, value) pairs a row, `stride` apart (>= k).
struct SparseRows {
  const std::int32_t* idx;
  const float* val;
  std::int64_t stride;
  int k;
};

// ------------------------------------------------------------------ the SAE's normalisation
// x̂ = (x - mean) / (std + eps) - pre_bias with the unbiased std; mean and
// std saved per row (the de-normalisation and the backward read them).
template <class T>
struct NormalizeKernel {
  struct Params {
    const T* x;
    std::int64_t x_stride;
    std::int64_t rows;
    int d;
    const float* pre_bias;  // optional
    T* out;
    std::int64_t out_stride;
    float* mean;
    float* std;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.rows, [&](std::int64_t r, int lane) {
      const T* x = p.x + r * p.x_stride;
      float s = 0.0f;
      for (int c = lane; c < p.d; c += 32) s += to_float(x[c]);
      const float mu = warp::reduce(s, Sum{}) / static_cast<float>(p.d);
      float q = 0.0f;
      for (int c = lane; c < p.d; c += 32) {
        const float v = to_float(x[c]) - mu;
        q = fmaf(v, v, q);
      }
      const float sd = sqrtf(warp::reduce(q, Sum{}) / static_cast<float>(p.d - 1));
      const float inv = 1.0f / (sd + kSaeEps);
      for (int c = lane; c < p.d; c += 32) {
        const float v = (to_float(x[c]) - mu) * inv - (p.pre_bias ? p.pre_bias[c] : 0.0f);
        p.out[r * p.out_stride + c] = from_float<T>(v);
      }
      if (lane == 0) {
        p.mean[r] = mu;
        p.std[r] = sd;
      }
    });
  }
};

// dL/dx from dL/dx̂ (and, optionally, the de-normalisation's dL/dmean and
// dL/dstd): with c = x - mean and s = std,
//   dx = (g - mean(g)) / (s + eps) + K c / ((d - 1) s) + dmean / d,
//   K = dstd - <g, c> / (s + eps)^2.
template <class T>
struct NormalizeBackwardKernel {
  struct Params {
    const T* x;
    std::int64_t x_stride;
    const T* grad_out;
    std::int64_t grad_out_stride;
    const float* mean;
    const float* std;
    const float* grad_mean;  // optional
    const float* grad_std;   // optional
    std::int64_t rows;
    int d;
    T* grad_x;
    std::int64_t grad_x_stride;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.rows, [&](std::int64_t r, int lane) {
      const T* x = p.x + r * p.x_stride;
      const T* g = p.grad_out + r * p.grad_out_stride;
      const float mu = p.mean[r], sd = p.std[r];
      float gs = 0.0f, gc = 0.0f;
      for (int c = lane; c < p.d; c += 32) {
        const float gv = to_float(g[c]);
        gs += gv;
        gc = fmaf(gv, to_float(x[c]) - mu, gc);
      }
      gs = warp::reduce(gs, Sum{});
      gc = warp::reduce(gc, Sum{});
      const float inv = 1.0f / (sd + kSaeEps);
      const float gmean = gs / static_cast<float>(p.d);
      const float kk = (p.grad_std ? p.grad_std[r] : 0.0f) - gc * inv * inv;
      const float kc = kk / (static_cast<float>(p.d - 1) * sd);
      const float dm = p.grad_mean ? p.grad_mean[r] / static_cast<float>(p.d) : 0.0f;
      for (int c = lane; c < p.d; c += 32) {
        const float v = (to_float(g[c]) - gmean) * inv + kc * (to_float(x[c]) - mu) + dm;
        p.grad_x[r * p.grad_x_stride + c] = from_float<T>(v);
      }
    });
  }
};

// ------------------------------------------------------------------ a row's top k
// Order-preserving keys: larger floats give larger keys, -0 is +0, every
// NaN is the largest key.
TL_DEVICE TL_FORCEINLINE std::uint32_t topk_key(float x) {
  if (x != x) return 0xffffffffu;
  const std::uint32_t b = x == 0.0f ? 0u : __float_as_uint(x);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

template <class A, class T>
struct RowTopKKernel {
  struct Params {
    const T* x;
    std::int64_t x_stride;
    std::int64_t rows;
    std::int64_t cols;
    int k;
    std::int32_t* idx;
    float* val;
    std::int64_t out_stride;
  };
  static constexpr int kThreads = 256;
  using Scan = block::Scan<int, kThreads>;
  struct SharedStorage {
    typename Scan::TempStorage scan;
    std::uint32_t hist[256];
    std::uint32_t keys[kMaxTopK];
    std::int32_t ids[kMaxTopK];
    float vals[kMaxTopK];
    std::uint32_t prefix;
    int remaining;
  };
  TL_DEVICE void operator()(const Params& p, SharedStorage& s) const {
    const int tid = static_cast<int>(threadIdx.x);
    work::block_items(p.rows, [&](std::int64_t r) {
      const T* x = p.x + r * p.x_stride;
      // The k-th largest key, eight bits a pass; `remaining` is its rank
      // among the keys that share the prefix decided so far.
      std::uint32_t prefix = 0, mask = 0;
      int remaining = p.k;
      for (int shift = 24; shift >= 0; shift -= 8) {
        s.hist[tid] = 0;
        __syncthreads();
        for (std::int64_t i = tid; i < p.cols; i += kThreads) {
          const std::uint32_t key = topk_key(to_float(x[i]));
          if ((key & mask) == prefix) atomicAdd(&s.hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (tid == 0) {
          std::uint32_t above = 0;
          for (int dg = 255; dg >= 0; --dg) {
            if (above + s.hist[dg] >= static_cast<std::uint32_t>(remaining)) {
              s.prefix = prefix | (static_cast<std::uint32_t>(dg) << shift);
              s.remaining = remaining - static_cast<int>(above);
              break;
            }
            above += s.hist[dg];
          }
        }
        __syncthreads();
        prefix = s.prefix;
        remaining = s.remaining;
        mask |= 255u << shift;
        __syncthreads();  // hist and prefix are reused
      }
      // Keys above the k-th, and the first `remaining` equal to it in index order.
      int taken = 0, ties = 0;
      for (std::int64_t base = 0; base < p.cols; base += kThreads) {
        const std::int64_t i = base + tid;
        const float v = i < p.cols ? to_float(x[i]) : 0.0f;
        const std::uint32_t key = i < p.cols ? topk_key(v) : 0u;
        const int tie = i < p.cols && key == prefix;
        int tie_total, sel_total;
        const int tie_rank = Scan::exclusive(tie, Sum{}, 0, tie_total, s.scan);
        const int sel = i < p.cols && (key > prefix || (tie && ties + tie_rank < remaining));
        __syncthreads();
        const int at = taken + Scan::exclusive(sel, Sum{}, 0, sel_total, s.scan);
        if (sel) {
          s.keys[at] = key;
          s.ids[at] = static_cast<std::int32_t>(i);
          s.vals[at] = v;
        }
        taken += sel_total;
        ties += tie_total;
        __syncthreads();
      }
      // Sorted: by key, then by index.
      for (int j = tid; j < p.k; j += kThreads) {
        int rank = 0;
        for (int m = 0; m < p.k; ++m) {
          rank += s.keys[m] > s.keys[j] || (s.keys[m] == s.keys[j] && s.ids[m] < s.ids[j]);
        }
        p.idx[r * p.out_stride + rank] = s.ids[j];
        p.val[r * p.out_stride + rank] = A::apply(s.vals[j]);
      }
      __syncthreads();  // smem is the next row's
    });
  }
};

TL_DEVICE TL_FORCEINLINE float from_topk_key(std::uint32_t k) {
  if (k == 0xffffffffu) return __uint_as_float(0x7fc00000u);  // NaN
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// ------------------------------------------------------------------ the SAE encode, fused
// pre = x̂ W_enc^T + latent_bias, its top k a row, never written densely: a
// block of 4 warps owns 64 rows and walks the dictionary 64 latents at a
// time, a GEMM main loop over d in steps of 64 on mma.sync (the attention
// core's tile loaders), and an epilogue that offers each tile's values to
// the rows' running top k in shared memory. A value enters a row's buffer
// only above the row's current k-th largest key (the dictionary is walked in
// index order, so an equal value loses its tie); when a buffer holds more
// than k, its warp ranks it (key, then index) and keeps k. The result is
// exactly TopK's: the same keys, order and ties.
inline constexpr int kEncodeRows = 64, kEncodeCols = 64, kEncodeDepth = 64;
inline constexpr int kEncodeSlack = kEncodeCols;  // a chunk adds at most 64 to a row
inline constexpr int encode_capacity(int k) { return k + kEncodeSlack; }
inline constexpr std::size_t encode_smem_bytes(int k) {
  return 2 * std::size_t{kEncodeRows} * attention::detail::Traits<kEncodeDepth>::kStride * 2 +
         std::size_t{kEncodeRows} * encode_capacity(k) * 8 + std::size_t{kEncodeRows} * 8;
}

template <class A, class T>
struct SaeEncodeKernel {
  using Tr = attention::detail::Traits<kEncodeDepth>;
  static_assert(Tr::kThreads == 128 && kEncodeRows == 16 * (Tr::kThreads / 32), "a warp owns 16 rows");
  struct Params {
    const T* x;  // [rows, d]: x̂
    std::int64_t x_stride;
    std::int64_t rows;
    int d;
    const T* w;  // [dictionary, d]: W_enc
    std::int64_t w_stride;
    std::int64_t dictionary;
    const float* latent_bias;  // optional
    int k;
    std::int32_t* idx;
    float* val;
    std::int64_t out_stride;
  };
  static constexpr int kThreads = Tr::kThreads;
  static constexpr int kPerLane = (kMaxTopK + kEncodeSlack + 31) / 32;  // a buffer's entries a lane ranks

  // The warp ranks row r's buffer (key, then index) and keeps the first
  // `keep` in place, or writes them out.
  TL_DEVICE static void rank_row(std::uint32_t* keys, std::int32_t* ids, int* count, std::uint32_t* tau, int keep,
                                 const Params* out, std::int64_t out_row, int lane) {
    const int n = *count;
    std::uint32_t kk[kPerLane];
    std::int32_t ii[kPerLane];
    int rank[kPerLane];
TL_UNROLL
    for (int q = 0; q < kPerLane; ++q) {
      const int e = lane + 32 * q;
      kk[q] = e < n ? keys[e] : 0u;
      ii[q] = e < n ? ids[e] : 0;
      rank[q] = 0;
      if (e < n) {
        for (int m = 0; m < n; ++m) rank[q] += keys[m] > kk[q] || (keys[m] == kk[q] && ids[m] < ii[q]);
      }
    }
    __syncwarp();
TL_UNROLL
    for (int q = 0; q < kPerLane; ++q) {
      if (lane + 32 * q < n && rank[q] < keep) {
        if (out) {
          out->idx[out_row * out->out_stride + rank[q]] = ii[q];
          out->val[out_row * out->out_stride + rank[q]] = A::apply(from_topk_key(kk[q]));
        } else {
          keys[rank[q]] = kk[q];
          ids[rank[q]] = ii[q];
        }
      }
    }
    __syncwarp();
    if (lane == 0 && !out) {
      *count = keep;
      *tau = keys[keep - 1];
    }
    __syncwarp();
  }

  TL_DEVICE void operator()(const Params& p) const {
    constexpr int kS = Tr::kStride;
    T* sa = dynamic_smem<T>();
    T* sb = sa + kEncodeRows * kS;
    const int cap = encode_capacity(p.k);
    auto* keys = reinterpret_cast<std::uint32_t*>(sb + kEncodeRows * kS);
    auto* ids = reinterpret_cast<std::int32_t*>(keys + kEncodeRows * cap);
    int* count = reinterpret_cast<int*>(ids + kEncodeRows * cap);
    auto* tau = reinterpret_cast<std::uint32_t*>(count + kEncodeRows);
    const int tid = static_cast<int>(threadIdx.x), lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    work::block_items((p.rows + kEncodeRows - 1) / kEncodeRows, [&](std::int64_t blk) {
      const std::int64_t r0 = blk * kEncodeRows;
      const int valid = static_cast<int>(p.rows - r0 < kEncodeRows ? p.rows - r0 : kEncodeRows);
      if (tid < kEncodeRows) {
        count[tid] = 0;
        tau[tid] = 0u;  // below every key: the first k values all enter
      }
      __syncthreads();
      for (std::int64_t n0 = 0; n0 < p.dictionary; n0 += kEncodeCols) {
        const int nvalid = static_cast<int>(p.dictionary - n0 < kEncodeCols ? p.dictionary - n0 : kEncodeCols);
        mma::FragC acc[kEncodeCols / 8];
TL_UNROLL
        for (int j = 0; j < kEncodeCols / 8; ++j) acc[j] = {};
        for (int k0 = 0; k0 < p.d; k0 += kEncodeDepth) {
          attention::detail::load_rows<kEncodeDepth, kEncodeRows>(sa, p.x + k0, p.x_stride, r0, valid);
          attention::detail::load_rows<kEncodeDepth, kEncodeCols>(sb, p.w + k0, p.w_stride, n0, nvalid);
          async::commit();
          async::wait<0>();
          __syncthreads();
          attention::detail::gemm_nk<kEncodeDepth, kEncodeCols, kEncodeDepth, T>(acc, sa, warp * 16, sb);
          __syncthreads();
        }
        // Offer the tile's values to the rows' buffers.
TL_UNROLL
        for (int j = 0; j < kEncodeCols / 8; ++j) {
TL_UNROLL
          for (int i = 0; i < 4; ++i) {
            const int row = warp * 16 + g + (i >= 2 ? 8 : 0), col = j * 8 + 2 * t + (i & 1);
            if (row >= valid || col >= nvalid) continue;
            const float v = acc[j].x[i] + (p.latent_bias ? p.latent_bias[n0 + col] : 0.0f);
            const std::uint32_t key = topk_key(v);
            if (key > tau[row]) {
              const int slot = atomicAdd(&count[row], 1);
              keys[row * cap + slot] = key;
              ids[row * cap + slot] = static_cast<std::int32_t>(n0 + col);
            }
          }
        }
        __syncwarp();
        for (int rr = 0; rr < 16; ++rr) {
          const int row = warp * 16 + rr;
          if (count[row] > p.k) rank_row(keys + row * cap, ids + row * cap, &count[row], &tau[row], p.k, nullptr, 0, lane);
        }
      }
      for (int rr = 0; rr < 16; ++rr) {
        const int row = warp * 16 + rr;
        if (row < valid) rank_row(keys + row * cap, ids + row * cap, &count[row], &tau[row], p.k, &p, r0 + row, lane);
      }
      __syncthreads();  // the next block of rows resets the buffers
    });
  }
};

// ------------------------------------------------------------------ attribution labels
// CoCoMix's labels: the top K_attr of (g · W_dec) ⊙ latents over the whole
// dictionary, where the latents are the SAE's codes (zero elsewhere). A warp
// a row: the k active attributions (a dot over d each), then the first
// K_attr inactive latents (value 0, lowest indices: they are the only zeros
// that can rank), ranked by value then index (NaN first), as TopK orders.
inline constexpr int kMaxAttrLabels = 16;

template <class T, int W>
struct AttributionKernel {
  struct Params {
    SparseRows codes;  // distinct indices a row
    std::int64_t rows;
    const T* grad;  // [rows, d]: dL/dh at the SAE's input
    std::int64_t grad_stride;
    const T* dict;  // [dictionary, d]: W_dec^T
    std::int64_t dict_stride;
    std::int64_t dictionary;
    int d;
    int num_labels;
    std::int32_t* labels;  // [rows, label_stride]
    std::int64_t label_stride;
    float* scores;  // optional: the labels' attributions
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  static constexpr int kCand = kMaxTopK + kMaxAttrLabels;
  struct SharedStorage {
    std::uint32_t key[kThreads / 32][kCand];
    std::int32_t id[kThreads / 32][kCand];
    float score[kThreads / 32][kCand];
    int n[kThreads / 32];
  };
  TL_DEVICE void operator()(const Params& p, SharedStorage& s) const {
    const int w = static_cast<int>(threadIdx.x) >> 5;
    work::warp_items(p.rows, [&](std::int64_t r, int lane) {
      const std::int64_t e0 = r * p.codes.stride;
      const T* g = p.grad + r * p.grad_stride;
      for (int j = 0; j < p.codes.k; ++j) {
        const std::int32_t i = p.codes.idx[e0 + j];
        float dot = 0.0f;
        for (int c = lane * W; c < p.d; c += 32 * W) {
          float gv[W], wv[W];
          load<T, W>(g + c, gv);
          load<T, W>(p.dict + i * p.dict_stride + c, wv);
TL_UNROLL
          for (int q = 0; q < W; ++q) dot = fmaf(gv[q], wv[q], dot);
        }
        dot = warp::reduce(dot, Sum{});
        if (lane == 0) {
          const float a = dot * p.codes.val[e0 + j];
          s.key[w][j] = topk_key(a);
          s.id[w][j] = i;
          s.score[w][j] = a;
        }
      }
      if (lane == 0) {  // the first inactive latents, as zeros
        int added = 0;
        for (std::int32_t i = 0; added < p.num_labels && i < p.dictionary; ++i) {
          bool active = false;
          for (int j = 0; j < p.codes.k; ++j) active |= p.codes.idx[e0 + j] == i;
          if (!active) {
            s.key[w][p.codes.k + added] = topk_key(0.0f);
            s.id[w][p.codes.k + added] = i;
            s.score[w][p.codes.k + added] = 0.0f;
            ++added;
          }
        }
        s.n[w] = p.codes.k + added;
      }
      __syncwarp();
      const int n = s.n[w];
      for (int e = lane; e < n; e += 32) {
        int rank = 0;
        for (int m = 0; m < n; ++m) {
          rank += s.key[w][m] > s.key[w][e] || (s.key[w][m] == s.key[w][e] && s.id[w][m] < s.id[w][e]);
        }
        if (rank < p.num_labels) {
          p.labels[r * p.label_stride + rank] = s.id[w][e];
          if (p.scores) p.scores[r * p.label_stride + rank] = s.score[w][e];
        }
      }
      __syncwarp();
    });
  }
};

// dL/dx from dL/d(kept values): added where the row's codes point
// (`accumulate`), or a dense row of zeros with them.
template <class A, class T>
struct RowTopKBackwardKernel {
  struct Params {
    SparseRows codes;
    const float* grad_val;  // [rows, codes.stride]
    std::int64_t rows;
    std::int64_t cols;
    bool accumulate;
    T* grad_x;
    std::int64_t grad_x_stride;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    const int tid = static_cast<int>(threadIdx.x);
    work::block_items(p.rows, [&](std::int64_t r) {
      T* gx = p.grad_x + r * p.grad_x_stride;
      if (!p.accumulate) {
        for (std::int64_t i = tid; i < p.cols; i += kThreads) gx[i] = from_float<T>(0.0f);
        __syncthreads();
      }
      for (int j = tid; j < p.codes.k; j += kThreads) {
        const std::int64_t e = r * p.codes.stride + j;
        const std::int32_t i = p.codes.idx[e];
        gx[i] = from_float<T>(to_float(gx[i]) + A::grad(p.codes.val[e], p.grad_val[e]));
      }
      __syncthreads();
    });
  }
};

// ------------------------------------------------------------------ sparse decode
// Every code's index (or label) within [0, dictionary) (a thread an entry).
struct CheckIndexKernel {
  struct Params {
    const std::int32_t* idx;
    std::int64_t rows, stride;
    int k;
    std::int64_t limit;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  static constexpr bool kReportsStatus = true;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.rows * p.k, [&](std::int64_t e) {
      const std::int64_t r = e / p.k, at = r * p.stride + (e - r * p.k);
      const std::int32_t i = p.idx[at];
      if (i < 0 || i >= p.limit) device_fail(p.status, kCheckIndex, e);
    });
  }
};

// out = (Σ_j val_j W[idx_j] + bias + pre_bias) · std + mean, a warp a row,
// W's rows [dictionary, d] gathered in W-element vectors.
template <class T, int W>
struct SparseDecodeKernel {
  struct Params {
    SparseRows codes;
    std::int64_t rows;
    const T* dict;
    std::int64_t dict_stride;
    int d;
    const float* bias;      // optional
    const float* pre_bias;  // optional
    const float* mean;      // optional (with std): de-normalise
    const float* std;
    T* out;
    std::int64_t out_stride;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.rows, [&](std::int64_t r, int lane) {
      const std::int64_t e0 = r * p.codes.stride;
      for (int c = lane * W; c < p.d; c += 32 * W) {
        float acc[W];
        fill(acc, 0.0f);
        for (int j = 0; j < p.codes.k; ++j) {
          const float v = p.codes.val[e0 + j];
          float w[W];
          load<T, W>(p.dict + p.codes.idx[e0 + j] * p.dict_stride + c, w);
TL_UNROLL
          for (int i = 0; i < W; ++i) acc[i] = fmaf(v, w[i], acc[i]);
        }
TL_UNROLL
        for (int i = 0; i < W; ++i) {
          if (p.bias) acc[i] += p.bias[c + i];
          if (p.pre_bias) acc[i] += p.pre_bias[c + i];
          if (p.std) acc[i] = fmaf(acc[i], p.std[r], p.mean[r]);
        }
        store<T, W>(p.out + r * p.out_stride + c, acc);
      }
    });
  }
};

// Per row: dL/dval_j = std · <g, W[idx_j]>, and with the de-normalisation
// dL/dstd = <g, y> (y = the sum before it) and dL/dmean = Σ g.
template <class T, int W>
struct SparseDecodeGradKernel {
  struct Params {
    SparseRows codes;
    std::int64_t rows;
    const T* dict;
    std::int64_t dict_stride;
    int d;
    const float* bias;
    const float* pre_bias;
    const float* std;  // optional
    const T* grad_out;
    std::int64_t grad_out_stride;
    float* grad_val;  // [rows, codes.stride]
    float* grad_mean;  // with std
    float* grad_std;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.rows, [&](std::int64_t r, int lane) {
      const std::int64_t e0 = r * p.codes.stride;
      const T* g = p.grad_out + r * p.grad_out_stride;
      const float sd = p.std ? p.std[r] : 1.0f;
      float dstd = 0.0f;
      for (int j = 0; j < p.codes.k; ++j) {
        const T* w = p.dict + p.codes.idx[e0 + j] * p.dict_stride;
        float dot = 0.0f;
        for (int c = lane * W; c < p.d; c += 32 * W) {
          float gv[W], wv[W];
          load<T, W>(g + c, gv);
          load<T, W>(w + c, wv);
TL_UNROLL
          for (int i = 0; i < W; ++i) dot = fmaf(gv[i], wv[i], dot);
        }
        dot = warp::reduce(dot, Sum{});
        if (lane == 0) p.grad_val[e0 + j] = sd * dot;
        dstd = fmaf(p.codes.val[e0 + j], dot, dstd);
      }
      if (!p.std) return;
      float gs = 0.0f, gb = 0.0f;
      for (int c = lane; c < p.d; c += 32) {
        const float gv = to_float(g[c]);
        gs += gv;
        gb = fmaf(gv, (p.bias ? p.bias[c] : 0.0f) + (p.pre_bias ? p.pre_bias[c] : 0.0f), gb);
      }
      gs = warp::reduce(gs, Sum{});
      gb = warp::reduce(gb, Sum{});
      if (lane == 0) {
        p.grad_mean[r] = gs;
        p.grad_std[r] = dstd + gb;
      }
    });
  }
};

// The sort's input: every code's index as a key, its entry r · k + j as the value.
struct GatherCodesKernel {
  struct Params {
    const std::int32_t* idx;
    std::int64_t rows, stride;
    int k;
    std::uint32_t* keys;
    std::int32_t* entries;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.rows * p.k, [&](std::int64_t e) {
      const std::int64_t r = e / p.k;
      p.keys[e] = static_cast<std::uint32_t>(p.idx[r * p.stride + (e - r * p.k)]);
      p.entries[e] = static_cast<std::int32_t>(e);
    });
  }
};

// Zeroes rows [0, rows) of d columns (the dictionary's gradient before its
// runs add), behind the status like every writer.
struct ZeroRowsKernel {
  struct Params {
    float* p;
    std::int64_t rows, stride;
    int d;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.rows * p.d, [&](std::int64_t e) {
      const std::int64_t r = e / p.d;
      p.p[r * p.stride + (e - r * p.d)] = 0.0f;
    });
  }
};

// dL/dW[i] += Σ over the codes pointing at i of val · std_r · g_r: the codes
// sorted by index (a stable sort keeps each run in row order), a warp a run.
template <class T, int W>
struct DictGradKernel {
  struct Params {
    const std::uint32_t* sorted_idx;  // [entries]
    const std::int32_t* entry;       // [entries]: r · k + j of each sorted code
    std::int64_t entries;
    SparseRows codes;
    const float* std;  // optional
    const T* grad_out;
    std::int64_t grad_out_stride;
    int d;
    float* grad_dict;  // [dictionary, d], fp32
    std::int64_t grad_dict_stride;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.entries, [&](std::int64_t s, int lane) {
      const std::uint32_t i = p.sorted_idx[s];
      if (s > 0 && p.sorted_idx[s - 1] == i) return;  // not a run's start
      std::int64_t end = s + 1;
      while (end < p.entries && p.sorted_idx[end] == i) ++end;
      for (int c = lane * W; c < p.d; c += 32 * W) {
        float acc[W];
        fill(acc, 0.0f);
        for (std::int64_t t = s; t < end; ++t) {
          // 32-bit: run() checks rows · k fits (a 64-bit division is a call ptxas counts as spills).
          const unsigned e = static_cast<unsigned>(p.entry[t]), r = e / static_cast<unsigned>(p.codes.k);
          const float v = p.codes.val[std::int64_t{r} * p.codes.stride + (e - r * static_cast<unsigned>(p.codes.k))] *
                          (p.std ? p.std[r] : 1.0f);
          float gv[W];
          load<T, W>(p.grad_out + std::int64_t{r} * p.grad_out_stride + c, gv);
TL_UNROLL
          for (int q = 0; q < W; ++q) acc[q] = fmaf(v, gv[q], acc[q]);
        }
        float* o = p.grad_dict + std::int64_t{i} * p.grad_dict_stride + c;
TL_UNROLL
        for (int q = 0; q < W; ++q) o[q] += acc[q];
      }
    });
  }
};

// out[c] (+)= Σ_r scale_r · x[r, c] in a fixed order: a block per 32
// columns, its warps over runs of rows, the runs added in warp order.
template <class T>
struct ColumnSumKernel {
  struct Params {
    const T* x;
    std::int64_t x_stride;
    std::int64_t rows;
    int d;
    const float* row_scale;  // optional
    bool accumulate;
    float* out;
    DeviceStatus* status;
    bool count_rows = false;  // only the rows of `segments`' count (the device's)
    Layout segments = {};
  };
  static constexpr int kThreads = 256;
  struct SharedStorage {
    float part[kThreads / 32][32];
  };
  TL_DEVICE void operator()(const Params& p, SharedStorage& s) const {
    const int lane = static_cast<int>(threadIdx.x) & 31, w = static_cast<int>(threadIdx.x) >> 5;
    constexpr int kWarps = kThreads / 32;
    const std::int64_t rows = p.count_rows ? p.segments.segs.total(p.segments.batch) : p.rows;
    const std::int64_t run = (rows + kWarps - 1) / kWarps;
    for (int c0 = static_cast<int>(blockIdx.x) * 32; c0 < p.d; c0 += static_cast<int>(gridDim.x) * 32) {
      const int c = c0 + lane;
      float acc = 0.0f;
      if (c < p.d) {
        const std::int64_t r1 = (w + 1) * run < rows ? (w + 1) * run : rows;
        for (std::int64_t r = w * run; r < r1; ++r) {
          acc = fmaf(p.row_scale ? p.row_scale[r] : 1.0f, to_float(p.x[r * p.x_stride + c]), acc);
        }
      }
      s.part[w][lane] = acc;
      __syncthreads();
      if (w == 0 && c < p.d) {
        float t = 0.0f;
        for (int v = 0; v < kWarps; ++v) t += s.part[v][lane];
        p.out[c] = p.accumulate ? p.out[c] + t : t;
      }
      __syncthreads();
    }
  }
};

// ------------------------------------------------------------------ the concept loss
// Per row: loss_r = lse(z) - mean_j z[label_j]; dL/dz = scale (softmax(z) -
// mean_j onehot(label_j)), scale = λ / rows (CoCoMix: the mean over tokens
// of each label's CE, averaged over the K labels, weighted by λ).
template <class T>
struct ConceptLossKernel {
  struct Params {
    const T* z;
    std::int64_t z_stride;
    std::int64_t rows;
    std::int64_t cols;
    const std::int32_t* labels;  // [rows, label_stride]
    std::int64_t label_stride;
    int num_labels;
    float scale;
    float* row_loss;  // [rows]
    T* grad_z;        // optional
    std::int64_t grad_z_stride;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  using Reduce = block::Reduce<float, kThreads>;
  using SharedStorage = typename Reduce::TempStorage;
  TL_DEVICE void operator()(const Params& p, SharedStorage& smem) const {
    const int tid = static_cast<int>(threadIdx.x);
    work::block_items(p.rows, [&](std::int64_t r) {
      const T* z = p.z + r * p.z_stride;
      float m = -INFINITY;
      for (std::int64_t i = tid; i < p.cols; i += kThreads) m = fmaxf(m, to_float(z[i]));
      m = Reduce::reduce(m, Max{}, smem);
      float e = 0.0f;
      for (std::int64_t i = tid; i < p.cols; i += kThreads) e += expf(to_float(z[i]) - m);
      const float lse = m + logf(Reduce::reduce(e, Sum{}, smem));
      const std::int32_t* lab = p.labels + r * p.label_stride;
      if (tid == 0) {
        float picked = 0.0f;
        for (int j = 0; j < p.num_labels; ++j) picked += to_float(z[lab[j]]);
        p.row_loss[r] = lse - picked / static_cast<float>(p.num_labels);
      }
      if (p.grad_z) {
        const float share = 1.0f / static_cast<float>(p.num_labels);
        for (std::int64_t i = tid; i < p.cols; i += kThreads) {
          float hit = 0.0f;
          for (int j = 0; j < p.num_labels; ++j) hit += lab[j] == i ? share : 0.0f;
          p.grad_z[r * p.grad_z_stride + i] = from_float<T>(p.scale * (expf(to_float(z[i]) - lse) - hit));
        }
      }
      __syncthreads();  // smem is the next row's
    });
  }
};

// The loss: λ / rows · Σ_r loss_r, one block in a fixed order (each thread
// its stride of rows, then the block's tree).
struct LossTotalKernel {
  struct Params {
    const float* row_loss;
    std::int64_t rows;
    float scale;
    float* loss;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  using Reduce = block::Reduce<float, kThreads>;
  using SharedStorage = typename Reduce::TempStorage;
  TL_DEVICE void operator()(const Params& p, SharedStorage& smem) const {
    float t = 0.0f;
    for (std::int64_t r = threadIdx.x; r < p.rows; r += kThreads) t += p.row_loss[r];
    t = Reduce::reduce(t, Sum{}, smem);
    if (threadIdx.x == 0) *p.loss = t * p.scale;
  }
};

// ------------------------------------------------------------------ mixing
// Interleave: out[2t] = h_t, out[2t+1] = c_t. Add: out[t] = h_t + c_t. The
// backward splits (interleave) or copies (add) the gradient.
template <class M, class T, int W>
struct MixKernel {
  struct Params {
    const T* h;
    std::int64_t h_stride;
    const T* c;
    std::int64_t c_stride;
    std::int64_t rows;
    int d;
    T* out;
    std::int64_t out_stride;  // between tokens' first rows (interleave: the slots are out_stride / 2 apart)
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.rows, [&](std::int64_t t, int lane) {
      for (int col = lane * W; col < p.d; col += 32 * W) {
        float hv[W], cv[W];
        load<T, W>(p.h + t * p.h_stride + col, hv);
        load<T, W>(p.c + t * p.c_stride + col, cv);
        if constexpr (M::kRowsPerToken == 2) {
          store<T, W>(p.out + t * p.out_stride + col, hv);
          store<T, W>(p.out + t * p.out_stride + p.out_stride / 2 + col, cv);
        } else {
TL_UNROLL
          for (int i = 0; i < W; ++i) hv[i] += cv[i];
          store<T, W>(p.out + t * p.out_stride + col, hv);
        }
      }
    });
  }
};

template <class M, class T, int W>
struct MixBackwardKernel {
  struct Params {
    const T* grad_out;
    std::int64_t grad_out_stride;
    std::int64_t rows;
    int d;
    T* grad_h;
    std::int64_t grad_h_stride;
    T* grad_c;
    std::int64_t grad_c_stride;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.rows, [&](std::int64_t t, int lane) {
      const T* g = p.grad_out + t * p.grad_out_stride;
      for (int col = lane * W; col < p.d; col += 32 * W) {
        float a[W], b[W];
        load<T, W>(g + col, a);
        if constexpr (M::kRowsPerToken == 2) load<T, W>(g + p.grad_out_stride / 2 + col, b);
        else load<T, W>(g + col, b);
        store<T, W>(p.grad_h + t * p.grad_h_stride + col, a);
        store<T, W>(p.grad_c + t * p.grad_c_stride + col, b);
      }
    });
  }
};

}  // namespace tokenless::bottleneck::detail
