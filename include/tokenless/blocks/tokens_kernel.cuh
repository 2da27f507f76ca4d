#pragma once
// Token ids in and out: the embedding's gather (a warp a token, 16-byte
// vectors), its gradient (the tokens sorted by id, a warp a run of equal
// ids, rows added in token order: no atomics), and a row's argmax (a block
// a row, torch.argmax's rule: the first of equal maxima, NaN largest).
#include <tokenless/blocks/kernel.cuh>
#include <tokenless/core/block.cuh>
#include <tokenless/core/config.hpp>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/functional.hpp>
#include <tokenless/core/kernel.cuh>

#include <cstdint>

namespace tokenless::blocks::detail {

inline constexpr int kCheckTokenId = kFirstOperationCheck;  // an id outside [0, vocab)

struct CheckIdsKernel {
  struct Params {
    const std::int32_t* ids;
    std::int64_t n;
    std::int64_t vocab;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  static constexpr bool kReportsStatus = true;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.n, [&](std::int64_t i) {
      const std::int32_t id = p.ids[i];
      if (id < 0 || id >= p.vocab) device_fail(p.status, kCheckTokenId, i);
    });
  }
};

// The sort's input: keys (the ids) and values (the tokens).
struct SortInputKernel {
  struct Params {
    const std::int32_t* ids;
    std::int64_t n;
    std::uint32_t* keys;
    std::int32_t* tokens;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.n, [&](std::int64_t i) {
      p.keys[i] = static_cast<std::uint32_t>(p.ids[i]);
      p.tokens[i] = static_cast<std::int32_t>(i);
    });
  }
};

template <class T, int W>
struct EmbedKernel {
  struct Params {
    const T* table;  // [vocab, d]
    const std::int32_t* ids;
    std::int64_t n;
    int d;
    T* out;  // [n, d], rows out_stride apart
    std::int64_t out_stride;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.n, [&](std::int64_t t, int lane) {
      const T* row = p.table + static_cast<std::int64_t>(p.ids[t]) * p.d;
      for (int c = lane * W; c < p.d; c += 32 * W) {
        *reinterpret_cast<Vec<T, W>*>(p.out + t * p.out_stride + c) = *reinterpret_cast<const Vec<T, W>*>(row + c);
      }
    });
  }
};

// After the sort by id: a warp a run of equal ids (it starts where the id
// changes), grad_table[id] (+)= Σ grad_out[t] over the run's tokens in
// their order, in fp32.
template <class T>
struct EmbedGradKernel {
  struct Params {
    const std::int32_t* ids;     // [n] sorted
    const std::int32_t* tokens;  // [n] the tokens in sorted order
    std::int64_t n;
    int d;
    const T* grad_out;
    std::int64_t grad_out_stride;
    bool accumulate;
    float* grad_table;  // [vocab, d]
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.n, [&](std::int64_t i, int lane) {
      if (i > 0 && p.ids[i - 1] == p.ids[i]) return;  // not a run's start
      std::int64_t end = i + 1;
      while (end < p.n && p.ids[end] == p.ids[i]) ++end;
      float* row = p.grad_table + static_cast<std::int64_t>(p.ids[i]) * p.d;
      for (int c = lane; c < p.d; c += 32) {
        float acc = p.accumulate ? row[c] : 0.0f;
        for (std::int64_t j = i; j < end; ++j) acc += to_float(p.grad_out[p.tokens[j] * p.grad_out_stride + c]);
        row[c] = acc;
      }
    });
  }
};

// ids[r · ids_stride] = argmax of row r (the first of equal maxima, NaN largest).
template <class T>
struct ArgmaxKernel {
  struct Params {
    const T* x;
    std::int64_t stride;
    std::int64_t rows;
    int cols;
    std::int32_t* out;
    std::int64_t out_stride;
  };
  static constexpr int kThreads = 256;
  using Reduce = block::ArgMaxReduce<float, kThreads>;
  struct SharedStorage {
    typename Reduce::TempStorage reduce;
  };
  TL_DEVICE void operator()(const Params& p, SharedStorage& s) const {
    work::block_items(p.rows, [&](std::int64_t r) {
      ValueIndex<float> best = ArgMax::identity<ValueIndex<float>>();
      for (int c = static_cast<int>(threadIdx.x); c < p.cols; c += kThreads) {
        best = ArgMax{}(best, ValueIndex<float>{to_float(p.x[r * p.stride + c]), c});
      }
      best = Reduce::reduce(best, s.reduce);
      if (threadIdx.x == 0) p.out[r * p.out_stride] = best.index;  // reduce() may be called back to back
    });
  }
};

}  // namespace tokenless::blocks::detail
