#pragma once
// The concept bottleneck's schedule: a warp per segment, its lanes across
// the features in W-element vectors (16 bytes when the rows allow it), fp32
// accumulation. Pooling reads each row once and writes the segment's vector;
// replication reads the vector once and writes each row; their backwards do
// the reverse. Memory-bound: no shared memory, no atomics (deterministic).
#include <tokenless/bottleneck/policy.hpp>
#include <tokenless/core/config.hpp>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/segments.hpp>
#include <tokenless/core/varlen.hpp>
#include <tokenless/core/vec.hpp>

#include <cstdint>

namespace tokenless::bottleneck::detail {

// Device-side check ids (kCheckBatch is the positions' batch).
inline constexpr int kCheckOffsets = kFirstOperationCheck;      // CSR offsets: index b
inline constexpr int kCheckSegment = kFirstOperationCheck + 1;  // a CSR segment's start or length: index p
inline constexpr int kCheckIds = kFirstOperationCheck + 2;      // ids: index position
inline constexpr int kCheckCapacity = kFirstOperationCheck + 3; // more segments than the rows given

// What every bottleneck kernel reads: the positions' batch, its segments,
// the rows the segment-side tensors hold, and the feature count.
struct Layout {
  VarlenBatch batch;
  Segments segs;
  std::int64_t capacity;  // rows of the segment-side tensor
  int d;
};

template <class T, int W>
TL_DEVICE TL_FORCEINLINE void load(const T* p, float (&v)[W]) {
  const Vec<T, W> x = *reinterpret_cast<const Vec<T, W>*>(p);
TL_UNROLL
  for (int i = 0; i < W; ++i) v[i] = to_float(x.v[i]);
}
template <class T, int W>
TL_DEVICE TL_FORCEINLINE void store(T* p, const float (&v)[W]) {
  Vec<T, W> x;
TL_UNROLL
  for (int i = 0; i < W; ++i) x.v[i] = from_float<T>(v[i]);
  *reinterpret_cast<Vec<T, W>*>(p) = x;
}
template <int W>
TL_DEVICE TL_FORCEINLINE void fill(float (&v)[W], float x) {
TL_UNROLL
  for (int i = 0; i < W; ++i) v[i] = x;
}

// f(p, lo, hi, lane) for every segment of the batch (its count stays on the
// device; warps past it do nothing).
template <class F>
TL_DEVICE TL_FORCEINLINE void for_each_segment(const Layout& l, F&& f) {
  const std::int64_t n = l.segs.total(l.batch);
  work::warp_items(l.capacity, [&](std::int64_t p, int lane) {
    if (p >= n) return;
    std::int64_t lo, hi;
    l.segs.positions(l.batch, p, lo, hi);
    f(p, lo, hi, lane);
  });
}

// The reduction of a segment's column chunk at c.
template <class P, class T, int W>
TL_DEVICE TL_FORCEINLINE void reduce_rows(const T* x, std::int64_t stride, std::int64_t lo, std::int64_t hi, int c,
                                          float (&acc)[W]) {
  fill(acc, P::init());
  for (std::int64_t r = lo; r < hi; ++r) {
    float v[W];
    load<T, W>(x + r * stride + c, v);
TL_UNROLL
    for (int i = 0; i < W; ++i) acc[i] = P::combine(acc[i], v[i]);
  }
TL_UNROLL
  for (int i = 0; i < W; ++i) acc[i] = P::finish(acc[i], static_cast<int>(hi - lo));
}

// One tensor in, one out (pooling: positions to segments; replication and
// its backward: the other way), a shift for replication.
template <class T>
struct InOutParams {
  Layout l;
  const T* in;
  std::int64_t in_stride;
  T* out;
  std::int64_t out_stride;
  int shift;
  DeviceStatus* status;
};

// ------------------------------------------------------------------ pooling
template <class P, class T, int W>
struct PoolKernel {
  using Params = InOutParams<T>;  // in: x [positions, d]; out: [segments, d]
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    for_each_segment(p.l, [&](std::int64_t s, std::int64_t lo, std::int64_t hi, int lane) {
      for (int c = lane * W; c < p.l.d; c += 32 * W) {
        float v[W];
        if constexpr (P::kReduces) {
          reduce_rows<P, T, W>(p.in, p.in_stride, lo, hi, c, v);
        } else if (hi > lo) {
          load<T, W>(p.in + P::pick(lo, hi) * p.in_stride + c, v);
        } else {
          fill(v, 0.0f);
        }
        store<T, W>(p.out + s * p.out_stride + c, v);
      }
    });
  }
};

template <class P, class T, int W>
struct PoolBackwardKernel {
  struct Params {
    Layout l;
    const T* x;  // the forward's input (max and min find their rows again)
    std::int64_t x_stride;
    const T* grad_out;
    std::int64_t grad_out_stride;
    T* grad_x;
    std::int64_t grad_x_stride;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    for_each_segment(p.l, [&](std::int64_t s, std::int64_t lo, std::int64_t hi, int lane) {
      const float inv_n = hi > lo ? 1.0f / static_cast<float>(hi - lo) : 0.0f;
      for (int c = lane * W; c < p.l.d; c += 32 * W) {
        float g[W];
        load<T, W>(p.grad_out + s * p.grad_out_stride + c, g);
        float result[W], ties[W];
        if constexpr (routes_to_arg<P>()) {
          reduce_rows<P, T, W>(p.x, p.x_stride, lo, hi, c, result);
          fill(ties, 0.0f);
          for (std::int64_t r = lo; r < hi; ++r) {
            float v[W];
            load<T, W>(p.x + r * p.x_stride + c, v);
TL_UNROLL
            for (int i = 0; i < W; ++i) ties[i] += v[i] == result[i] ? 1.0f : 0.0f;
          }
        }
        for (std::int64_t r = lo; r < hi; ++r) {
          float dx[W];
          if constexpr (routes_to_arg<P>()) {
            float v[W];
            load<T, W>(p.x + r * p.x_stride + c, v);
TL_UNROLL
            for (int i = 0; i < W; ++i) dx[i] = v[i] == result[i] ? g[i] / ties[i] : 0.0f;
          } else if constexpr (P::kReduces) {
TL_UNROLL
            for (int i = 0; i < W; ++i) dx[i] = divides_by_length<P>() ? g[i] * inv_n : g[i];
          } else {
            const bool picked = r == P::pick(lo, hi);
TL_UNROLL
            for (int i = 0; i < W; ++i) dx[i] = picked ? g[i] : 0.0f;
          }
          store<T, W>(p.grad_x + r * p.grad_x_stride + c, dx);
        }
      }
    });
  }
};

// ------------------------------------------------------------------ replication
// Every position of segment s receives vector s - shift of its sequence
// (shift 1: BLT's decoder reads the previous patch; the first segment of a
// sequence then receives zeros). `first` says whether s opens its sequence.
TL_DEVICE TL_FORCEINLINE bool opens_sequence(const Layout& l, std::int64_t s, std::int64_t lo) {
  if (l.segs.csr()) return s == l.segs.offsets[l.segs.sequence_of(l.batch.num_seqs, s)];
  return l.batch.is_start(lo);
}
TL_DEVICE TL_FORCEINLINE bool closes_sequence(const Layout& l, std::int64_t s, std::int64_t hi) {
  if (l.segs.csr()) return s + 1 == l.segs.offsets[l.segs.sequence_of(l.batch.num_seqs, s) + 1];
  return hi == l.batch.total || l.batch.is_start(hi);
}

template <class T, int W>
struct ReplicateKernel {
  using Params = InOutParams<T>;  // in: src [segments, d]; out: [positions, d]
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    for_each_segment(p.l, [&](std::int64_t s, std::int64_t lo, std::int64_t hi, int lane) {
      const bool zero = p.shift && opens_sequence(p.l, s, lo);
      for (int c = lane * W; c < p.l.d; c += 32 * W) {
        float v[W];
        if (zero) fill(v, 0.0f);
        else load<T, W>(p.in + (s - p.shift) * p.in_stride + c, v);
        for (std::int64_t r = lo; r < hi; ++r) store<T, W>(p.out + r * p.out_stride + c, v);
      }
    });
  }
};

// dL/d src[s - shift] = the sum of the gradient over segment s's rows; with
// a shift, the last segment of each sequence feeds no one and gets zeros.
template <class T, int W>
struct ReplicateBackwardKernel {
  using Params = InOutParams<T>;  // in: grad_out [positions, d]; out: grad_src [segments, d]
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    for_each_segment(p.l, [&](std::int64_t s, std::int64_t lo, std::int64_t hi, int lane) {
      const bool feeds = !(p.shift && opens_sequence(p.l, s, lo));
      const bool orphan = p.shift && closes_sequence(p.l, s, hi);
      for (int c = lane * W; c < p.l.d; c += 32 * W) {
        if (feeds) {
          float acc[W];
          reduce_rows<PoolSum, T, W>(p.in, p.in_stride, lo, hi, c, acc);
          store<T, W>(p.out + (s - p.shift) * p.out_stride + c, acc);
        }
        if (orphan) {
          float z[W];
          fill(z, 0.0f);
          store<T, W>(p.out + s * p.out_stride + c, z);
        }
      }
    });
  }
};

// ------------------------------------------------------------------ pooling into a projection
// After the pooling into `pooled` (workspace): zero its rows past the count
// (the GEMM runs on all `capacity` rows), and gate the GEMMs: scalars
// {1, beta_ok} when the checks passed, {0, 1} when they failed, with the
// whole of `pooled` zeroed so that 0 · (pooled · W) adds nothing, not NaN.
// Reads the status, so it is not guarded.
template <class T>
struct GateKernel {
  struct Params {
    Layout l;
    T* pooled;
    std::int64_t pooled_stride;
    float* scalars;  // {alpha, beta} pairs: [0, 1] for written outputs, [2, 3] for accumulated ones
    bool accumulate;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  static constexpr bool kReportsStatus = true;
  TL_DEVICE void operator()(const Params& p) const {
    const bool ok = device_ok(p.status);
    if (blockIdx.x == 0 && threadIdx.x == 0) {
      p.scalars[0] = ok ? 1.0f : 0.0f;
      p.scalars[1] = ok ? 0.0f : 1.0f;
      p.scalars[2] = ok ? 1.0f : 0.0f;
      p.scalars[3] = ok && !p.accumulate ? 0.0f : 1.0f;
    }
    if (!p.pooled) return;
    const std::int64_t n = ok ? p.l.segs.total(p.l.batch) : 0;
    work::thread_items((p.l.capacity - n) * p.l.d, [&](std::int64_t e) {
      const std::int64_t r = n + e / p.l.d;
      p.pooled[r * p.pooled_stride + (e - (r - n) * p.l.d)] = from_float<T>(0.0f);
    });
  }
};

// out[r] += bias for the segments' rows (rows past the count stay zero).
template <class T>
struct RowBiasKernel {
  struct Params {
    Layout l;  // d: the output's width
    const T* bias;
    T* out;
    std::int64_t out_stride;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    const std::int64_t n = p.l.segs.total(p.l.batch);
    work::thread_items(n * p.l.d, [&](std::int64_t e) {
      const std::int64_t r = e / p.l.d, c = e - r * p.l.d;
      T* o = p.out + r * p.out_stride + c;
      *o = from_float<T>(to_float(*o) + to_float(p.bias[c]));
    });
  }
};

// ------------------------------------------------------------------ device-side checks
// CSR: 0 = off[0] <= off[1] <= ... (a thread a sequence), no more segments
// than the capacity, and each sequence's segments tile it exactly: the first
// starts at 0, each starts where the previous ended, lengths >= 0, the last
// ends at the sequence's length, and a non-empty sequence has one at least.
struct CheckSegmentsKernel {
  struct Params {
    Layout l;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  static constexpr bool kReportsStatus = true;
  TL_DEVICE void operator()(const Params& p) const {
    const Layout& l = p.l;
    const std::int32_t* off = l.segs.offsets;
    const std::int64_t B = l.batch.num_seqs;
    std::int64_t n = off[B];
    if (n < 0 || n > l.capacity) n = l.capacity;
    work::thread_items(B + n + 1, [&](std::int64_t i) {
      if (i <= B) {  // offsets
        const std::int64_t b = i;
        if ((b == 0 && off[0] != 0) || (b > 0 && off[b] < off[b - 1])) device_fail(p.status, kCheckOffsets, b);
        if (b < B && off[b] == off[b + 1] && l.batch.length(b) > 0) device_fail(p.status, kCheckOffsets, b + 1);
        if (b == B && off[B] > l.capacity) device_fail(p.status, kCheckCapacity, B);
        return;
      }
      const std::int64_t s = i - B - 1;  // a segment
      const std::int64_t a = l.segs.sequence_of(B, s);
      const std::int64_t start = l.segs.starts[s], len = l.segs.lengths[s];
      const std::int64_t want = s == off[a] || s == 0 ? 0 : l.segs.starts[s - 1] + l.segs.lengths[s - 1];
      const bool last = s + 1 == off[a + 1];
      if (len < 0 || start != want || (last && start + len != l.batch.length(a))) device_fail(p.status, kCheckSegment, s);
    });
  }
};

// ids: ids[0] = 0, each step 0 or 1, a step of 1 at every sequence start,
// and no more segments than the capacity.
struct CheckIdsKernel {
  struct Params {
    Layout l;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  static constexpr bool kReportsStatus = true;
  TL_DEVICE void operator()(const Params& p) const {
    const std::int32_t* ids = p.l.segs.ids;
    work::thread_items(p.l.batch.total, [&](std::int64_t i) {
      const std::int64_t step = i == 0 ? ids[0] + 1 : std::int64_t{ids[i]} - ids[i - 1];
      const bool opens = i == 0 || p.l.batch.is_start(i);
      if (step < 0 || step > 1 || (opens && step != 1)) device_fail(p.status, kCheckIds, i);
      if (i + 1 == p.l.batch.total && std::int64_t{ids[i]} + 1 > p.l.capacity) device_fail(p.status, kCheckCapacity, i);
    });
  }
};

}  // namespace tokenless::bottleneck::detail
