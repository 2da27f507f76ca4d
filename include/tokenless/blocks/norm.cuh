#pragma once
// RMSNorm and LayerNorm fused with the residual add before them (policy.hpp
// has the formulas), forward and backward, fp32/fp16/bf16 storage with fp32
// arithmetic.
//
//   RmsNorm<P, T>            x (+ residual) -> y, and h (the new residual) and
//                            the fp32 inverse rms for the backward
//   RmsNormBackward<P, T>    dy (+ dL/dh from the residual path) -> dL/dh (the
//                            gradient of x and of the residual alike), and the
//                            weight's gradient in fp32, written or accumulated
//   LayerNorm<T>             the same with the mean taken out and a bias
//                            (GPT-2's), saving the fp32 mean and inverse std
//   LayerNormBackward<T>     dL/dh, and dL/dw and dL/db in fp32
//
// No device-side checks (the rows are dense): nothing to read back.
#include <tokenless/blocks/kernel.cuh>
#include <tokenless/blocks/policy.hpp>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/workspace.hpp>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <type_traits>

namespace tokenless::blocks {

namespace detail {

inline std::int64_t or_packed(std::int64_t stride, int d) { return stride ? stride : d; }
// A [rows, d] argument: not null, rows `stride` apart (0: packed) that do not overlap.
inline Status check_row(const char* name, const void* p, std::int64_t stride, int d) {
  TL_RETURN_IF_ERROR(check::not_null(name, p));
  if (or_packed(stride, d) < d) {
    return Status::argument(StatusCode::invalid_argument, name, "a row stride >= d (rows must not overlap)", "%lld",
                            static_cast<long long>(stride));
  }
  return Status::ok();
}
// 16-byte vectors when every row allows them (null rows do not count).
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
inline dim3 row_grid(std::int64_t rows) {
  const Tuning t = tuning_for(compute_capability());
  return grid_for(rows, t.block_threads / 32, t.blocks_per_sm);
}
inline Status check_dims(std::int64_t rows, int d) {
  TL_RETURN_IF_ERROR(check::positive("rows", rows));
  return check::positive("d", d);
}

}  // namespace detail

template <NormPolicy P, StorageFloat T>
struct RmsNorm {
  static constexpr const char* kName = "blocks::RmsNorm";
  struct Arguments {
    const T* x = nullptr;         // [rows, d]: the sublayer's output (or the embeddings)
    const T* residual = nullptr;  // [rows, d], optional: h = residual + x
    const T* weight = nullptr;    // [d]
    std::int64_t rows = 0;
    int d = 0;
    float eps = 1e-5f;            // config.rms_norm_eps (Llama 3: 1e-5, Phi-3: 1e-5, Mistral: 1e-5)
    std::int64_t x_stride = 0, residual_stride = 0, out_stride = 0, residual_out_stride = 0;  // 0: packed
    T* out = nullptr;             // [rows, d]: the normalised rows
    T* residual_out = nullptr;    // [rows, d], optional: h (may alias residual: updated in place)
    float* inv_rms = nullptr;     // [rows], optional: for the backward
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_dims(a.rows, a.d));
    TL_RETURN_IF_ERROR(detail::check_row("x", a.x, a.x_stride, a.d));
    TL_RETURN_IF_ERROR(detail::check_row("out", a.out, a.out_stride, a.d));
    TL_RETURN_IF_ERROR(check::not_null("weight", a.weight));
    if (a.residual) TL_RETURN_IF_ERROR(detail::check_row("residual", a.residual, a.residual_stride, a.d));
    if (a.residual_out) {
      TL_RETURN_IF_ERROR(detail::check_row("residual_out", a.residual_out, a.residual_out_stride, a.d));
    }
    if (!(a.eps >= 0.0f) || !std::isfinite(a.eps)) {
      return Status::argument(StatusCode::invalid_argument, "eps", "a finite eps >= 0", "%g", static_cast<double>(a.eps));
    }
    return Status::ok();
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    using detail::or_packed;
    const std::int64_t xs = or_packed(a.x_stride, a.d), rs = or_packed(a.residual_stride, a.d),
                       os = or_packed(a.out_stride, a.d), hs = or_packed(a.residual_out_stride, a.d);
    const bool vec = detail::vectorizable<T>(
        a.d, {{a.x, xs}, {a.residual, rs}, {a.weight, a.d}, {a.out, os}, {a.residual_out, hs}});
    return detail::dispatch_width<T>(vec, [&](auto w) {
      using K = detail::NormKernel<false, P, T, decltype(w)::value>;
      return launch<K>({a.x, xs, a.residual, rs, a.weight, nullptr, a.rows, a.d, a.eps, a.out, os, a.residual_out, hs,
                        a.inv_rms, nullptr},
                       detail::row_grid(a.rows), stream);
    });
  }
};

template <NormPolicy P, StorageFloat T>
struct RmsNormBackward {
  static constexpr const char* kName = "blocks::RmsNormBackward";
  struct Arguments {
    const T* h = nullptr;            // the forward's normalised input: residual_out, or x without a residual
    const float* inv_rms = nullptr;  // the forward's
    const T* weight = nullptr;
    const T* grad_out = nullptr;       // dL/dy
    const T* grad_residual = nullptr;  // optional: dL/dh from the residual path (the next block's)
    std::int64_t rows = 0;
    int d = 0;
    std::int64_t h_stride = 0, grad_out_stride = 0, grad_residual_stride = 0, grad_h_stride = 0;
    T* grad_h = nullptr;            // [rows, d]: dL/dx = dL/dresidual (may alias grad_residual)
    float* grad_weight = nullptr;   // [d] fp32, optional
    bool accumulate_weight = false;  // add into grad_weight instead of writing it
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_dims(a.rows, a.d));
    TL_RETURN_IF_ERROR(detail::check_row("h", a.h, a.h_stride, a.d));
    TL_RETURN_IF_ERROR(detail::check_row("grad_out", a.grad_out, a.grad_out_stride, a.d));
    TL_RETURN_IF_ERROR(detail::check_row("grad_h", a.grad_h, a.grad_h_stride, a.d));
    TL_RETURN_IF_ERROR(check::not_null({{"inv_rms", a.inv_rms}, {"weight", a.weight}}));
    if (a.grad_residual) {
      TL_RETURN_IF_ERROR(detail::check_row("grad_residual", a.grad_residual, a.grad_residual_stride, a.d));
    }
    return Status::ok();
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    using detail::or_packed;
    const std::int64_t hs = or_packed(a.h_stride, a.d), gs = or_packed(a.grad_out_stride, a.d),
                       grs = or_packed(a.grad_residual_stride, a.d), dhs = or_packed(a.grad_h_stride, a.d);
    // The weight's gradient first: grad_h may alias nothing it reads, but h
    // and grad_out stay as they are until both kernels have read them.
    if (a.grad_weight) {
      TL_RETURN_IF_ERROR(launch<detail::NormWeightGradKernel<false, P, T>>(
          {a.h, hs, a.inv_rms, nullptr, a.grad_out, gs, a.rows, a.d, a.accumulate_weight, a.grad_weight, nullptr},
          dim3(static_cast<unsigned>((a.d + 31) / 32)), stream));
    }
    const bool vec = detail::vectorizable<T>(
        a.d, {{a.h, hs}, {a.grad_out, gs}, {a.weight, a.d}, {a.grad_residual, grs}, {a.grad_h, dhs}});
    return detail::dispatch_width<T>(vec, [&](auto w) {
      using K = detail::NormBackwardKernel<false, P, T, decltype(w)::value>;
      return launch<K>({a.h, hs, a.inv_rms, nullptr, a.weight, a.grad_out, gs, a.grad_residual, grs, a.rows, a.d,
                        a.grad_h, dhs},
                       detail::row_grid(a.rows), stream);
    });
  }
};

// LayerNorm: the forward's arguments are RmsNorm's, plus an optional bias
// and the saved mean. The weight and bias apply in fp32 and the result is
// cast once (torch's LayerNorm).
template <StorageFloat T>
struct LayerNorm {
  static constexpr const char* kName = "blocks::LayerNorm";
  struct Arguments {
    const T* x = nullptr;         // [rows, d]
    const T* residual = nullptr;  // [rows, d], optional: h = residual + x
    const T* weight = nullptr;    // [d]
    const T* bias = nullptr;      // [d], optional
    std::int64_t rows = 0;
    int d = 0;
    float eps = 1e-5f;            // GPT-2's layer_norm_epsilon
    std::int64_t x_stride = 0, residual_stride = 0, out_stride = 0, residual_out_stride = 0;  // 0: packed
    T* out = nullptr;
    T* residual_out = nullptr;    // optional: h (may alias residual)
    float* mean = nullptr;        // [rows], optional: for the backward
    float* inv_std = nullptr;     // [rows], optional: for the backward
  };
  static Status can_implement(const Arguments& a) {
    using Rms = RmsNorm<ScaleInFp32, T>;
    TL_RETURN_IF_ERROR(Rms::can_implement({a.x, a.residual, a.weight, a.rows, a.d, a.eps, a.x_stride,
                                           a.residual_stride, a.out_stride, a.residual_out_stride, a.out,
                                           a.residual_out, a.inv_std}));
    return Status::ok();
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    using detail::or_packed;
    const std::int64_t xs = or_packed(a.x_stride, a.d), rs = or_packed(a.residual_stride, a.d),
                       os = or_packed(a.out_stride, a.d), hs = or_packed(a.residual_out_stride, a.d);
    const bool vec = detail::vectorizable<T>(
        a.d, {{a.x, xs}, {a.residual, rs}, {a.weight, a.d}, {a.bias, a.d}, {a.out, os}, {a.residual_out, hs}});
    return detail::dispatch_width<T>(vec, [&](auto w) {
      using K = detail::NormKernel<true, ScaleInFp32, T, decltype(w)::value>;
      return launch<K>({a.x, xs, a.residual, rs, a.weight, a.bias, a.rows, a.d, a.eps, a.out, os, a.residual_out, hs,
                        a.inv_std, a.mean},
                       detail::row_grid(a.rows), stream);
    });
  }
};

template <StorageFloat T>
struct LayerNormBackward {
  static constexpr const char* kName = "blocks::LayerNormBackward";
  struct Arguments {
    const T* h = nullptr;            // the forward's normalised input: residual_out, or x without a residual
    const float* mean = nullptr;     // the forward's
    const float* inv_std = nullptr;  // the forward's
    const T* weight = nullptr;
    const T* grad_out = nullptr;       // dL/dy
    const T* grad_residual = nullptr;  // optional: dL/dh from the residual path
    std::int64_t rows = 0;
    int d = 0;
    std::int64_t h_stride = 0, grad_out_stride = 0, grad_residual_stride = 0, grad_h_stride = 0;
    T* grad_h = nullptr;             // [rows, d] (may alias grad_residual)
    float* grad_weight = nullptr;    // [d] fp32, optional
    float* grad_bias = nullptr;      // [d] fp32, optional
    bool accumulate_weight = false;  // add into grad_weight and grad_bias instead of writing them
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::not_null("mean", a.mean));
    using Rms = RmsNormBackward<ScaleInFp32, T>;
    return Rms::can_implement({a.h, a.inv_std, a.weight, a.grad_out, a.grad_residual, a.rows, a.d, a.h_stride,
                               a.grad_out_stride, a.grad_residual_stride, a.grad_h_stride, a.grad_h, a.grad_weight,
                               a.accumulate_weight});
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    using detail::or_packed;
    const std::int64_t hs = or_packed(a.h_stride, a.d), gs = or_packed(a.grad_out_stride, a.d),
                       grs = or_packed(a.grad_residual_stride, a.d), dhs = or_packed(a.grad_h_stride, a.d);
    if (a.grad_weight || a.grad_bias) {
      TL_RETURN_IF_ERROR(launch<detail::NormWeightGradKernel<true, ScaleInFp32, T>>(
          {a.h, hs, a.inv_std, a.mean, a.grad_out, gs, a.rows, a.d, a.accumulate_weight, a.grad_weight, a.grad_bias},
          dim3(static_cast<unsigned>((a.d + 31) / 32)), stream));
    }
    const bool vec = detail::vectorizable<T>(
        a.d, {{a.h, hs}, {a.grad_out, gs}, {a.weight, a.d}, {a.grad_residual, grs}, {a.grad_h, dhs}});
    return detail::dispatch_width<T>(vec, [&](auto w) {
      using K = detail::NormBackwardKernel<true, ScaleInFp32, T, decltype(w)::value>;
      return launch<K>({a.h, hs, a.inv_std, a.mean, a.weight, a.grad_out, gs, a.grad_residual, grs, a.rows, a.d,
                        a.grad_h, dhs},
                       detail::row_grid(a.rows), stream);
    });
  }
};

}  // namespace tokenless::blocks
