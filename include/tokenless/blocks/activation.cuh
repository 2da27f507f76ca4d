#pragma once
// The MLP activations (policy.hpp: Silu, GeluTanh), forward and backward,
// fp32/fp16/bf16 storage with fp32 arithmetic, each result rounded once.
//
//   Gated<A, T>            out = A(gate) · up: SwiGLU with A = Silu (Llama,
//                          Mistral, Mixtral's experts, Phi-3, OpenELM). gate
//                          and up are two projections' outputs, or the halves
//                          of one fused gate_up row (Phi-3: gate first):
//                          gate = gu, up = gu + cols, both strides 2·cols.
//   GatedBackward<A, T>    dL/dgate and dL/dup (into the fused row too)
//   Activation<A, T>       out = A(x + bias): GPT-2's MLP with A = GeluTanh
//                          (the bias optional: c_fc's, when the GEMM did not add it)
//   ActivationBackward<A, T> dL/dx, and the bias's gradient in fp32
//
// Outputs may alias inputs (in place): each element is read, then written,
// by one thread. NaN and Inf propagate as in PyTorch.
#include <tokenless/blocks/activation_kernel.cuh>
#include <tokenless/blocks/norm.cuh>
#include <tokenless/blocks/policy.hpp>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/workspace.hpp>

#include <cstdint>

namespace tokenless::blocks {

template <ActivationPolicy A, StorageFloat T>
struct Gated {
  static constexpr const char* kName = "blocks::Gated";
  struct Arguments {
    const T* gate = nullptr;  // [rows, cols]
    const T* up = nullptr;    // [rows, cols]
    std::int64_t rows = 0;
    int cols = 0;             // the intermediate size
    std::int64_t gate_stride = 0, up_stride = 0, out_stride = 0;  // 0: packed
    T* out = nullptr;         // [rows, cols] (may alias gate or up)
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_dims(a.rows, a.cols));
    TL_RETURN_IF_ERROR(detail::check_row("gate", a.gate, a.gate_stride, a.cols));
    TL_RETURN_IF_ERROR(detail::check_row("up", a.up, a.up_stride, a.cols));
    return detail::check_row("out", a.out, a.out_stride, a.cols);
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    using detail::or_packed;
    const std::int64_t gs = or_packed(a.gate_stride, a.cols), us = or_packed(a.up_stride, a.cols),
                       os = or_packed(a.out_stride, a.cols);
    const bool vec = detail::vectorizable<T>(a.cols, {{a.gate, gs}, {a.up, us}, {a.out, os}});
    return detail::dispatch_width<T>(vec, [&](auto w) {
      using K = detail::GatedKernel<A, T, decltype(w)::value>;
      return launch<K>({a.gate, gs, a.up, us, a.rows, a.cols, a.out, os}, detail::row_grid(a.rows), stream);
    });
  }
};

template <ActivationPolicy A, StorageFloat T>
struct GatedBackward {
  static constexpr const char* kName = "blocks::GatedBackward";
  struct Arguments {
    const T* gate = nullptr;      // the forward's inputs
    const T* up = nullptr;
    const T* grad_out = nullptr;  // dL/dout
    std::int64_t rows = 0;
    int cols = 0;
    std::int64_t gate_stride = 0, up_stride = 0, grad_out_stride = 0, grad_gate_stride = 0, grad_up_stride = 0;
    T* grad_gate = nullptr;  // may alias gate (the fused row's gradient in place of the row)
    T* grad_up = nullptr;    // may alias up
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_dims(a.rows, a.cols));
    TL_RETURN_IF_ERROR(detail::check_row("gate", a.gate, a.gate_stride, a.cols));
    TL_RETURN_IF_ERROR(detail::check_row("up", a.up, a.up_stride, a.cols));
    TL_RETURN_IF_ERROR(detail::check_row("grad_out", a.grad_out, a.grad_out_stride, a.cols));
    TL_RETURN_IF_ERROR(detail::check_row("grad_gate", a.grad_gate, a.grad_gate_stride, a.cols));
    return detail::check_row("grad_up", a.grad_up, a.grad_up_stride, a.cols);
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    using detail::or_packed;
    const std::int64_t gs = or_packed(a.gate_stride, a.cols), us = or_packed(a.up_stride, a.cols),
                       ds = or_packed(a.grad_out_stride, a.cols), dgs = or_packed(a.grad_gate_stride, a.cols),
                       dus = or_packed(a.grad_up_stride, a.cols);
    const bool vec = detail::vectorizable<T>(
        a.cols, {{a.gate, gs}, {a.up, us}, {a.grad_out, ds}, {a.grad_gate, dgs}, {a.grad_up, dus}});
    return detail::dispatch_width<T>(vec, [&](auto w) {
      using K = detail::GatedBackwardKernel<A, T, decltype(w)::value>;
      return launch<K>({a.gate, gs, a.up, us, a.grad_out, ds, a.rows, a.cols, a.grad_gate, dgs, a.grad_up, dus},
                       detail::row_grid(a.rows), stream);
    });
  }
};

template <ActivationPolicy A, StorageFloat T>
struct Activation {
  static constexpr const char* kName = "blocks::Activation";
  struct Arguments {
    const T* x = nullptr;     // [rows, cols]
    const T* bias = nullptr;  // [cols], optional
    std::int64_t rows = 0;
    int cols = 0;
    std::int64_t x_stride = 0, out_stride = 0;
    T* out = nullptr;  // may alias x
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_dims(a.rows, a.cols));
    TL_RETURN_IF_ERROR(detail::check_row("x", a.x, a.x_stride, a.cols));
    return detail::check_row("out", a.out, a.out_stride, a.cols);
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    using detail::or_packed;
    const std::int64_t xs = or_packed(a.x_stride, a.cols), os = or_packed(a.out_stride, a.cols);
    const bool vec = detail::vectorizable<T>(a.cols, {{a.x, xs}, {a.bias, a.cols}, {a.out, os}});
    return detail::dispatch_width<T>(vec, [&](auto w) {
      using K = detail::PlainKernel<A, T, decltype(w)::value, false>;
      return launch<K>({a.x, xs, a.bias, nullptr, 0, a.rows, a.cols, a.out, os}, detail::row_grid(a.rows), stream);
    });
  }
};

template <ActivationPolicy A, StorageFloat T>
struct ActivationBackward {
  static constexpr const char* kName = "blocks::ActivationBackward";
  struct Arguments {
    const T* x = nullptr;     // the forward's input (before the bias)
    const T* bias = nullptr;  // the forward's, optional
    const T* grad_out = nullptr;
    std::int64_t rows = 0;
    int cols = 0;
    std::int64_t x_stride = 0, grad_out_stride = 0, grad_x_stride = 0;
    T* grad_x = nullptr;            // dL/dx (may alias grad_out; not x when grad_bias is wanted)
    float* grad_bias = nullptr;     // [cols] fp32, optional
    bool accumulate_bias = false;   // add into grad_bias instead of writing it
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_dims(a.rows, a.cols));
    TL_RETURN_IF_ERROR(detail::check_row("x", a.x, a.x_stride, a.cols));
    TL_RETURN_IF_ERROR(detail::check_row("grad_out", a.grad_out, a.grad_out_stride, a.cols));
    return detail::check_row("grad_x", a.grad_x, a.grad_x_stride, a.cols);
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    using detail::or_packed;
    const std::int64_t xs = or_packed(a.x_stride, a.cols), gs = or_packed(a.grad_out_stride, a.cols),
                       dxs = or_packed(a.grad_x_stride, a.cols);
    // The bias's gradient first: it reads x and dy, which grad_x may overwrite.
    if (a.grad_bias) {
      TL_RETURN_IF_ERROR(launch<detail::PlainBiasGradKernel<A, T>>(
          {a.x, xs, a.bias, a.grad_out, gs, a.rows, a.cols, a.accumulate_bias, a.grad_bias},
          dim3(static_cast<unsigned>((a.cols + 31) / 32)), stream));
    }
    const bool vec = detail::vectorizable<T>(a.cols, {{a.x, xs}, {a.bias, a.cols}, {a.grad_out, gs}, {a.grad_x, dxs}});
    return detail::dispatch_width<T>(vec, [&](auto w) {
      using K = detail::PlainKernel<A, T, decltype(w)::value, true>;
      return launch<K>({a.x, xs, a.bias, a.grad_out, gs, a.rows, a.cols, a.grad_x, dxs}, detail::row_grid(a.rows),
                       stream);
    });
  }
};

}  // namespace tokenless::blocks
