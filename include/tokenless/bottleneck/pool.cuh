#pragma once
// Segment pooling and replication, forward and backward, over the patcher's
// segments as they come (core/segments.hpp), fp32/fp16/bf16 storage with
// fp32 accumulation.
//
//   SegmentPool<P, T>          x [positions, d] -> out [segments, d]
//   SegmentPoolBackward<P, T>  grad_out [segments, d] -> grad_x [positions, d]
//   Replicate<T>               src [segments, d] -> out [positions, d], each
//                              position its segment's vector (shift 1: the
//                              previous segment's, zeros for a sequence's first)
//   ReplicateBackward<T>       grad_out [positions, d] -> grad_src [segments, d]
//
// The segments must tile every sequence exactly (CSR: the first starts at 0,
// each where the previous ended, the last at the sequence's end; empty
// segments allowed; ids: 0, 1, ... with a new segment at each sequence
// start). The segment count stays on the device: `capacity` is the rows the
// segment-side tensor holds, and rows past the count are left alone. The
// checks that only the device can make run first, and a failure writes
// nothing (read_status() names the entry). Gradients are written, not
// accumulated; no atomics, so every run gives the same bits.
#include <tokenless/bottleneck/kernel.cuh>
#include <tokenless/bottleneck/policy.hpp>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/segments.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/varlen.hpp>
#include <tokenless/core/workspace.hpp>

#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <utility>

namespace tokenless::bottleneck {

namespace detail {

inline Status check_layout(const VarlenBatch& batch, const Segments& s, std::int64_t capacity, int d) {
  TL_RETURN_IF_ERROR(check::batch("batch", batch));
  TL_RETURN_IF_ERROR(check::positive("d", d));
  TL_RETURN_IF_ERROR(check::positive("capacity", capacity));
  TL_RETURN_IF_ERROR(check::fits_int32("capacity", capacity));
  if (s.starts || s.lengths || s.offsets) {
    return check::not_null(
        {{"segments.offsets", s.offsets}, {"segments.starts", s.starts}, {"segments.lengths", s.lengths}});
  }
  if (!s.ids) {
    return Status::argument(StatusCode::null_pointer, "segments", "offsets, starts and lengths, or ids", "none of them");
  }
  return Status::ok();
}

// Rows of d elements `stride` apart (0: packed).
inline std::int64_t or_packed(std::int64_t stride, int d) { return stride ? stride : d; }
inline Status check_rows(const char* name, const void* p, std::int64_t stride, int d) {
  TL_RETURN_IF_ERROR(check::not_null(name, p));
  if (stride < d) {
    return Status::error(StatusCode::invalid_argument,
                         "argument '%s': expected a row stride >= d (%d; rows must not overlap), got %lld", name, d,
                         static_cast<long long>(stride));
  }
  return Status::ok();
}

// Several row arguments at once: {name, pointer, stride (0: packed)}.
struct Rows {
  const char* name;
  const void* p;
  std::int64_t stride;
};
inline Status check_rows(int d, std::initializer_list<Rows> rows) {
  for (const Rows& r : rows) TL_RETURN_IF_ERROR(check_rows(r.name, r.p, or_packed(r.stride, d), d));
  return Status::ok();
}

// 16-byte vectors when every row allows them, else one element a lane.
template <class T>
inline bool vectorizable(int d, std::initializer_list<std::pair<const void*, std::int64_t>> rows) {
  constexpr int W = kVec16<T>;
  if (d % W != 0) return false;
  for (const auto& [p, stride] : rows) {
    if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0 || stride % W != 0) return false;
  }
  return true;
}
template <class T, class F>
inline Status dispatch_width(bool vector, F&& f) {
  if (vector) return f(std::integral_constant<int, kVec16<T>>{});
  return f(std::integral_constant<int, 1>{});
}

inline dim3 segment_grid(std::int64_t items) {
  const Tuning t = tuning_for(compute_capability());
  return grid_for(items, t.block_threads / 32, t.blocks_per_sm);
}

// run()'s start: the batch, then the segments, checked on the device.
inline Status check_on_device(const Layout& l, DeviceStatus* status, cudaStream_t stream) {
  TL_RETURN_IF_ERROR(begin_checks(status, l.batch, stream));
  if (l.segs.csr()) {
    return launch<CheckSegmentsKernel>({l, status},
                                       grid_for(l.batch.num_seqs + l.capacity + 1, CheckSegmentsKernel::kThreads, 8),
                                       stream);
  }
  return launch<CheckIdsKernel>({l, status}, grid_for(l.batch.total, CheckIdsKernel::kThreads, 8), stream);
}

inline Status read_layout_status(const char* op, const Layout& l, Workspace ws, cudaStream_t stream) {
  DeviceFailure f;
  TL_RETURN_IF_ERROR(read_device_status(status_of(ws), f, stream));
  const auto at = [&](const std::int32_t* a, std::int64_t i) {
    std::int32_t v = 0;
    (void)cudaMemcpyAsync(&v, a + i, sizeof v, cudaMemcpyDeviceToHost, stream);
    (void)cudaStreamSynchronize(stream);
    return v;
  };
  const long long i = static_cast<long long>(f.index);
  switch (f.check) {
    case 0: return Status::ok();
    case kCheckBatch: return batch_failure(op, l.batch, f.index, stream);
    case kCheckOffsets:
      return device_failure(op, StatusCode::invalid_argument, "segments.offsets",
                            "0 = off[0] <= off[1] <= ..., a segment at least for a non-empty sequence (nothing was "
                            "written)",
                            "off[%lld] = %d%s", i, at(l.segs.offsets, f.index),
                            f.index > 0 ? " (see the previous entry)" : "");
    case kCheckSegment:
      return device_failure(op, StatusCode::invalid_argument, "segments.starts",
                            "segments that tile each sequence: the first at 0, each where the previous ended, the "
                            "last at the sequence's end (nothing was written)",
                            "segment %lld: start %d, length %d", i, at(l.segs.starts, f.index),
                            at(l.segs.lengths, f.index));
    case kCheckIds:
      return device_failure(op, StatusCode::invalid_argument, "segments.ids",
                            "ids from 0 in steps of 0 or 1, a step of 1 at each sequence start (nothing was written)",
                            "ids[%lld] = %d", i, at(l.segs.ids, f.index));
    case kCheckCapacity:
      return device_failure(op, StatusCode::capacity_too_small, "capacity",
                            "at least the batch's segments (nothing was written)", "%lld rows for %lld segments",
                            static_cast<long long>(l.capacity),
                            static_cast<long long>(l.segs.csr() ? at(l.segs.offsets, f.index)
                                                                : std::int64_t{at(l.segs.ids, f.index)} + 1));
    default: return Status::error(StatusCode::internal, "%s: unknown device check %d", op, f.check);
  }
}

// The protocol's shared half: Op gives kName, can_implement and
// launch_kernel(a, layout, workspace, stream) (the status record first in it).
template <class Op, class A>
struct OverSegments {
  using Arguments = A;
  static Layout layout(const Arguments& a) { return {a.batch, a.segments, a.capacity, a.d}; }
  static std::size_t workspace_size(const Arguments&) { return kStatusBytes; }
  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<Op>(a, ws));
    const Layout l = layout(a);
    TL_RETURN_IF_ERROR(check_on_device(l, status_of(ws), stream));
    return Op::launch_kernel(a, l, ws, stream);
  }
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    return read_layout_status(Op::kName, layout(a), ws, stream);
  }
};

template <class T>
struct PoolArguments {
  const T* x = nullptr;  // [batch.total, d]
  VarlenBatch batch;     // the positions
  Segments segments;     // the patcher's outputs over the positions
  std::int64_t capacity = 0;  // rows of out
  int d = 0;
  std::int64_t x_stride = 0, out_stride = 0;  // 0: packed
  T* out = nullptr;  // [capacity, d]: rows [0, segments) written
};

template <class T>
struct PoolBackwardArguments {
  const T* x = nullptr;         // the forward's input
  const T* grad_out = nullptr;  // [capacity, d]
  VarlenBatch batch;
  Segments segments;
  std::int64_t capacity = 0;
  int d = 0;
  std::int64_t x_stride = 0, grad_out_stride = 0, grad_x_stride = 0;
  T* grad_x = nullptr;  // [batch.total, d], written
};

template <class T>
struct ReplicateArguments {
  const T* src = nullptr;  // [capacity, d]
  VarlenBatch batch;
  Segments segments;
  std::int64_t capacity = 0;
  int d = 0;
  int shift = 0;  // 0: its own segment's vector; 1: the previous segment's (zeros for a sequence's first)
  std::int64_t src_stride = 0, out_stride = 0;
  T* out = nullptr;  // [batch.total, d], written
};

template <class T>
struct ReplicateBackwardArguments {
  const T* grad_out = nullptr;  // [batch.total, d]
  VarlenBatch batch;
  Segments segments;
  std::int64_t capacity = 0;
  int d = 0;
  int shift = 0;
  std::int64_t grad_out_stride = 0, grad_src_stride = 0;
  T* grad_src = nullptr;  // [capacity, d]: rows [0, segments) written
};

inline Status check_shift(int shift) {
  if (shift == 0 || shift == 1) return Status::ok();
  return Status::argument(StatusCode::invalid_argument, "shift", "0 or 1", "%d", shift);
}

}  // namespace detail

template <PoolPolicy P, StorageFloat T>
struct SegmentPool : detail::OverSegments<SegmentPool<P, T>, detail::PoolArguments<T>> {
  static constexpr const char* kName = "bottleneck::SegmentPool";
  using Arguments = detail::PoolArguments<T>;
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_layout(a.batch, a.segments, a.capacity, a.d));
    return detail::check_rows(a.d, {{"x", a.x, a.x_stride}, {"out", a.out, a.out_stride}});
  }
  static Status launch_kernel(const Arguments& a, const detail::Layout& l, Workspace ws, cudaStream_t stream) {
    DeviceStatus* status = status_of(ws);
    const std::int64_t xs = detail::or_packed(a.x_stride, a.d), os = detail::or_packed(a.out_stride, a.d);
    return detail::dispatch_width<T>(detail::vectorizable<T>(a.d, {{a.x, xs}, {a.out, os}}), [&](auto w) {
      using K = detail::PoolKernel<P, T, decltype(w)::value>;
      return launch<K>({l, a.x, xs, a.out, os, 0, status}, detail::segment_grid(a.capacity), stream);
    });
  }
};

template <PoolPolicy P, StorageFloat T>
struct SegmentPoolBackward : detail::OverSegments<SegmentPoolBackward<P, T>, detail::PoolBackwardArguments<T>> {
  static constexpr const char* kName = "bottleneck::SegmentPoolBackward";
  using Arguments = detail::PoolBackwardArguments<T>;
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_layout(a.batch, a.segments, a.capacity, a.d));
    if (routes_to_arg<P>()) TL_RETURN_IF_ERROR(detail::check_rows(a.d, {{"x", a.x, a.x_stride}}));
    return detail::check_rows(a.d, {{"grad_out", a.grad_out, a.grad_out_stride}, {"grad_x", a.grad_x, a.grad_x_stride}});
  }
  static Status launch_kernel(const Arguments& a, const detail::Layout& l, Workspace ws, cudaStream_t stream) {
    DeviceStatus* status = status_of(ws);
    const std::int64_t xs = detail::or_packed(a.x_stride, a.d), gs = detail::or_packed(a.grad_out_stride, a.d),
                       dxs = detail::or_packed(a.grad_x_stride, a.d);
    const bool vec = detail::vectorizable<T>(a.d, {{routes_to_arg<P>() ? a.x : nullptr, xs}, {a.grad_out, gs},
                                                   {a.grad_x, dxs}});
    return detail::dispatch_width<T>(vec, [&](auto w) {
      using K = detail::PoolBackwardKernel<P, T, decltype(w)::value>;
      return launch<K>({l, a.x, xs, a.grad_out, gs, a.grad_x, dxs, status}, detail::segment_grid(a.capacity), stream);
    });
  }
};

template <StorageFloat T>
struct Replicate : detail::OverSegments<Replicate<T>, detail::ReplicateArguments<T>> {
  static constexpr const char* kName = "bottleneck::Replicate";
  using Arguments = detail::ReplicateArguments<T>;
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_layout(a.batch, a.segments, a.capacity, a.d));
    TL_RETURN_IF_ERROR(detail::check_shift(a.shift));
    return detail::check_rows(a.d, {{"src", a.src, a.src_stride}, {"out", a.out, a.out_stride}});
  }
  static Status launch_kernel(const Arguments& a, const detail::Layout& l, Workspace ws, cudaStream_t stream) {
    DeviceStatus* status = status_of(ws);
    const std::int64_t ss = detail::or_packed(a.src_stride, a.d), os = detail::or_packed(a.out_stride, a.d);
    return detail::dispatch_width<T>(detail::vectorizable<T>(a.d, {{a.src, ss}, {a.out, os}}), [&](auto w) {
      using K = detail::ReplicateKernel<T, decltype(w)::value>;
      return launch<K>({l, a.src, ss, a.out, os, a.shift, status}, detail::segment_grid(a.capacity), stream);
    });
  }
};

template <StorageFloat T>
struct ReplicateBackward : detail::OverSegments<ReplicateBackward<T>, detail::ReplicateBackwardArguments<T>> {
  static constexpr const char* kName = "bottleneck::ReplicateBackward";
  using Arguments = detail::ReplicateBackwardArguments<T>;
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_layout(a.batch, a.segments, a.capacity, a.d));
    TL_RETURN_IF_ERROR(detail::check_shift(a.shift));
    return detail::check_rows(a.d, {{"grad_out", a.grad_out, a.grad_out_stride}, {"grad_src", a.grad_src, a.grad_src_stride}});
  }
  static Status launch_kernel(const Arguments& a, const detail::Layout& l, Workspace ws, cudaStream_t stream) {
    DeviceStatus* status = status_of(ws);
    const std::int64_t gs = detail::or_packed(a.grad_out_stride, a.d), ss = detail::or_packed(a.grad_src_stride, a.d);
    return detail::dispatch_width<T>(detail::vectorizable<T>(a.d, {{a.grad_out, gs}, {a.grad_src, ss}}), [&](auto w) {
      using K = detail::ReplicateBackwardKernel<T, decltype(w)::value>;
      return launch<K>({l, a.grad_out, gs, a.grad_src, ss, a.shift, status}, detail::segment_grid(a.capacity), stream);
    });
  }
};

}  // namespace tokenless::bottleneck
