#pragma once
// Pooling into a projection, forward and backward: BLT's patch slots and
// DLCM's concept formation.
//
//   PoolProject<P, T>          x [positions, d] -> pool(P) -> · W^T (+ bias)
//                              -> out [capacity, out_features]
//   PoolProjectBackward<P, T>  grad_out -> grad_x, grad_weight, grad_bias
//
// BLT: PoolMax, W = the encoder's patch projection D -> k·D (no bias); the
// output [P, k·D] is the slots [P·k, D] as they are (slot s = p·k + j takes
// features j·D ... (j+1)·D - 1): the queries of the attention core's
// PatchesToBytes variant, with no copy. DLCM: PoolMean, W up to the concept
// width.
//
// The projection is blas::Gemm (cuBLASLt on the GPU) over all `capacity`
// rows, because the segment count stays on the device. So that a segment
// array the device refuses still writes nothing, the GEMMs take their
// {alpha, beta} from device memory, set after the checks: {0, 1} and a
// zeroed A operand when they failed (so W must be finite). Rows of out past
// the count are written with zeros; rows of grad_out past the count are
// ignored, but must be finite (the forward's zeros are): the weight's
// gradient multiplies them by the pooling's zero rows.
#include <tokenless/bottleneck/concepts_kernel.cuh>  // ColumnSumKernel
#include <tokenless/bottleneck/kernel.cuh>
#include <tokenless/bottleneck/pool.cuh>
#include <tokenless/core/cublaslt.hpp>

#include <cstdint>

namespace tokenless::bottleneck {

namespace detail {

inline DType dtype_of(const float*) { return DType::f32; }
inline DType dtype_of(const __half*) { return DType::f16; }
inline DType dtype_of(const __nv_bfloat16*) { return DType::bf16; }

template <class T>
struct PoolProjectArguments {
  const blas::LtHandle* handle = nullptr;
  const T* x = nullptr;  // [batch.total, d]
  VarlenBatch batch;
  Segments segments;
  std::int64_t capacity = 0;  // rows of out (and pooled)
  int d = 0;
  const T* weight = nullptr;  // [out_features, d]: nn.Linear's weight
  std::int64_t out_features = 0;
  const T* bias = nullptr;  // [out_features], optional
  std::int64_t x_stride = 0, out_stride = 0;
  T* out = nullptr;  // [capacity, out_features]
};

template <class T>
struct PoolProjectBackwardArguments {
  const blas::LtHandle* handle = nullptr;
  const T* x = nullptr;         // the forward's input
  const T* grad_out = nullptr;  // [capacity, out_features]
  VarlenBatch batch;
  Segments segments;
  std::int64_t capacity = 0;
  int d = 0;
  const T* weight = nullptr;
  std::int64_t out_features = 0;
  std::int64_t x_stride = 0, grad_out_stride = 0, grad_x_stride = 0;
  T* grad_x = nullptr;        // [batch.total, d], written
  T* grad_weight = nullptr;   // [out_features, d], optional
  bool accumulate_weight = false;  // add into grad_weight instead of writing it
  float* grad_bias = nullptr;      // [out_features] fp32, optional: Σ over rows of grad_out
  bool accumulate_bias = false;
};

template <class A>
inline Status check_project(const A& a) {
  TL_RETURN_IF_ERROR(check_layout(a.batch, a.segments, a.capacity, a.d));
  if (!a.handle || !*a.handle) return Status::argument(StatusCode::null_pointer, "handle", "a created LtHandle", "none");
  TL_RETURN_IF_ERROR(check::not_null("weight", a.weight));
  TL_RETURN_IF_ERROR(check::positive("out_features", a.out_features));
  return check::fits_int32("out_features", a.out_features);
}

// Workspace: the status record, the GEMMs' scalars, the pooled rows (the
// backward pools again: a read of x), the backward's dL/dpooled, and
// cuBLASLt's own.
struct ProjectWorkspace {
  std::size_t scalars, pooled, grad_pooled, gemm, bytes;
};
inline ProjectWorkspace project_workspace(std::int64_t capacity, int d, std::size_t elem, bool backward) {
  WorkspaceLayout w;
  ProjectWorkspace s{};
  w.add(kStatusBytes);
  s.scalars = w.add(4 * sizeof(float));
  s.pooled = w.add(static_cast<std::size_t>(capacity) * d * elem);
  if (backward) s.grad_pooled = w.add(static_cast<std::size_t>(capacity) * d * elem);
  s.gemm = w.add(blas::tuning_for(compute_capability()).workspace_bytes);
  s.bytes = w.bytes();
  return s;
}

// Pools x into `pooled` and gates the GEMMs (GateKernel).
template <class P, class T>
inline Status pool_and_gate(const Layout& l, const T* x, std::int64_t xs, T* pooled, float* scalars, bool accumulate,
                            DeviceStatus* status, cudaStream_t stream) {
  const std::int64_t ps = l.d;
  TL_RETURN_IF_ERROR(dispatch_width<T>(vectorizable<T>(l.d, {{x, xs}, {pooled, ps}}), [&](auto w) {
    using K = PoolKernel<P, T, decltype(w)::value>;
    return launch<K>({l, x, xs, pooled, ps, 0, status}, segment_grid(l.capacity), stream);
  }));
  return launch<GateKernel<T>>({l, pooled, ps, scalars, accumulate, status}, grid_for(l.capacity * l.d, 256, 8), stream);
}

}  // namespace detail

template <PoolPolicy P, StorageFloat T>
struct PoolProject : detail::OverSegments<PoolProject<P, T>, detail::PoolProjectArguments<T>> {
  static constexpr const char* kName = "bottleneck::PoolProject";
  using Arguments = detail::PoolProjectArguments<T>;
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_project(a));
    TL_RETURN_IF_ERROR(detail::check_rows(a.d, {{"x", a.x, a.x_stride}}));
    TL_RETURN_IF_ERROR(check::not_null("out", a.out));
    const std::int64_t os = a.out_stride ? a.out_stride : a.out_features;
    if (os < a.out_features) {
      return Status::argument(StatusCode::invalid_argument, "out_stride", "at least out_features", "%lld",
                              static_cast<long long>(os));
    }
    return Status::ok();
  }
  static std::size_t workspace_size(const Arguments& a) {
    return detail::project_workspace(a.capacity, a.d, sizeof(T), false).bytes;
  }
  static Status launch_kernel(const Arguments& a, const detail::Layout& l, Workspace ws, cudaStream_t stream) {
    const detail::ProjectWorkspace w = detail::project_workspace(a.capacity, a.d, sizeof(T), false);
    DeviceStatus* status = status_of(ws);
    float* scalars = ws.at<float>(w.scalars);
    T* pooled = ws.at<T>(w.pooled);
    const std::int64_t os = a.out_stride ? a.out_stride : a.out_features;
    TL_RETURN_IF_ERROR(detail::pool_and_gate<P, T>(l, a.x, detail::or_packed(a.x_stride, a.d), pooled, scalars, false,
                                                   status, stream));
    const blas::Gemm::Arguments g{.handle = a.handle, .dtype = detail::dtype_of(a.x), .m = a.capacity,
                                  .n = a.out_features, .k = a.d, .a = pooled, .lda = a.d, .b = a.weight, .ldb = a.d,
                                  .trans_b = true, .d = a.out, .ldd = os, .device_scalars = scalars};
    TL_RETURN_IF_ERROR(blas::Gemm::run(g, {ws.at<void>(w.gemm), ws.bytes - w.gemm}, stream));
    if (!a.bias) return Status::ok();
    const detail::Layout lo{l.batch, l.segs, l.capacity, static_cast<int>(a.out_features)};
    return launch<detail::RowBiasKernel<T>>({lo, a.bias, a.out, os, status}, grid_for(a.capacity * a.out_features, 256, 8),
                                            stream);
  }
};

template <PoolPolicy P, StorageFloat T>
struct PoolProjectBackward : detail::OverSegments<PoolProjectBackward<P, T>, detail::PoolProjectBackwardArguments<T>> {
  static constexpr const char* kName = "bottleneck::PoolProjectBackward";
  using Arguments = detail::PoolProjectBackwardArguments<T>;
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_project(a));
    TL_RETURN_IF_ERROR(detail::check_rows(a.d, {{"x", a.x, a.x_stride}, {"grad_x", a.grad_x, a.grad_x_stride}}));
    TL_RETURN_IF_ERROR(check::not_null("grad_out", a.grad_out));
    const std::int64_t gs = a.grad_out_stride ? a.grad_out_stride : a.out_features;
    if (gs < a.out_features) {
      return Status::argument(StatusCode::invalid_argument, "grad_out_stride", "at least out_features", "%lld",
                              static_cast<long long>(gs));
    }
    return Status::ok();
  }
  static std::size_t workspace_size(const Arguments& a) {
    return detail::project_workspace(a.capacity, a.d, sizeof(T), true).bytes;
  }
  static Status launch_kernel(const Arguments& a, const detail::Layout& l, Workspace ws, cudaStream_t stream) {
    const detail::ProjectWorkspace w = detail::project_workspace(a.capacity, a.d, sizeof(T), true);
    DeviceStatus* status = status_of(ws);
    float* scalars = ws.at<float>(w.scalars);
    const std::int64_t gs = a.grad_out_stride ? a.grad_out_stride : a.out_features;
    const std::int64_t xs = detail::or_packed(a.x_stride, a.d);
    T* pooled = ws.at<T>(w.pooled);
    TL_RETURN_IF_ERROR(detail::pool_and_gate<P, T>(l, a.x, xs, pooled, scalars, a.accumulate_weight, status, stream));
    const blas::Gemm::Arguments base{.handle = a.handle, .dtype = detail::dtype_of(a.x)};
    const Workspace gemm_ws{ws.at<void>(w.gemm), ws.bytes - w.gemm};
    // dL/dpooled = grad_out · W (workspace: ungated), then the pooling's backward.
    T* grad_pooled = ws.at<T>(w.grad_pooled);
    blas::Gemm::Arguments gp = base;
    gp.m = a.capacity, gp.n = a.d, gp.k = a.out_features, gp.a = a.grad_out, gp.lda = gs, gp.b = a.weight,
    gp.ldb = a.d, gp.d = grad_pooled, gp.ldd = a.d;
    TL_RETURN_IF_ERROR(blas::Gemm::run(gp, gemm_ws, stream));
    const std::int64_t dxs = detail::or_packed(a.grad_x_stride, a.d);
    TL_RETURN_IF_ERROR(detail::dispatch_width<T>(
        detail::vectorizable<T>(a.d, {{routes_to_arg<P>() ? a.x : nullptr, xs}, {grad_pooled, a.d}, {a.grad_x, dxs}}),
        [&](auto width) {
          using K = detail::PoolBackwardKernel<P, T, decltype(width)::value>;
          return launch<K>({l, a.x, xs, grad_pooled, a.d, a.grad_x, dxs, status}, detail::segment_grid(a.capacity),
                           stream);
        }));
    // dL/dW (+)= grad_out^T · pooled, gated; the pooled rows past the count are zero.
    if (a.grad_weight) {
      blas::Gemm::Arguments gw = base;
      gw.m = a.out_features, gw.n = a.d, gw.k = a.capacity, gw.a = a.grad_out, gw.lda = gs, gw.trans_a = true,
      gw.b = pooled, gw.ldb = a.d, gw.d = a.grad_weight, gw.ldd = a.d, gw.device_scalars = scalars + 2;
      TL_RETURN_IF_ERROR(blas::Gemm::run(gw, gemm_ws, stream));
    }
    if (!a.grad_bias) return Status::ok();
    // The bias's gradient over the segments' rows only (the count is the device's).
    return launch<detail::ColumnSumKernel<T>>({a.grad_out, gs, a.capacity, static_cast<int>(a.out_features), nullptr,
                                               a.accumulate_bias, a.grad_bias, status, true, l},
                                              dim3(static_cast<unsigned>((a.out_features + 31) / 32)), stream);
  }
};

}  // namespace tokenless::bottleneck
