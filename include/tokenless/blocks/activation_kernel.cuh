#pragma once
// The MLP activations' schedule: a warp a row, its lanes across the columns
// in 16-byte vectors (scalar when the rows do not allow them). Elementwise:
// each element is read and written by one lane, so outputs may alias inputs.
// The bias's gradient: column sums in warp order (kernel.cuh).
#include <tokenless/blocks/kernel.cuh>
#include <tokenless/blocks/policy.hpp>
#include <tokenless/core/config.hpp>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/kernel.cuh>

#include <cstdint>

namespace tokenless::blocks::detail {

// out = A(gate) · up.
template <class A, class T, int W>
struct GatedKernel {
  struct Params {
    const T* gate;
    std::int64_t gate_stride;
    const T* up;
    std::int64_t up_stride;
    std::int64_t rows;
    int cols;
    T* out;
    std::int64_t out_stride;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.rows, [&](std::int64_t r, int lane) {
      for (int c = lane * W; c < p.cols; c += 32 * W) {
        float g[W], u[W];
        load<T, W>(p.gate + r * p.gate_stride + c, g);
        load<T, W>(p.up + r * p.up_stride + c, u);
TL_UNROLL
        for (int i = 0; i < W; ++i) g[i] = A::value(g[i]) * u[i];
        store<T, W>(p.out + r * p.out_stride + c, g);
      }
    });
  }
};

// dL/dgate = dy · up · A'(gate), dL/dup = dy · A(gate).
template <class A, class T, int W>
struct GatedBackwardKernel {
  struct Params {
    const T* gate;
    std::int64_t gate_stride;
    const T* up;
    std::int64_t up_stride;
    const T* grad_out;
    std::int64_t grad_out_stride;
    std::int64_t rows;
    int cols;
    T* grad_gate;
    std::int64_t grad_gate_stride;
    T* grad_up;
    std::int64_t grad_up_stride;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.rows, [&](std::int64_t r, int lane) {
      for (int c = lane * W; c < p.cols; c += 32 * W) {
        float g[W], u[W], dy[W], dg[W];
        load<T, W>(p.gate + r * p.gate_stride + c, g);
        load<T, W>(p.up + r * p.up_stride + c, u);
        load<T, W>(p.grad_out + r * p.grad_out_stride + c, dy);
TL_UNROLL
        for (int i = 0; i < W; ++i) {
          dg[i] = dy[i] * u[i] * A::derivative(g[i]);
          u[i] = dy[i] * A::value(g[i]);
        }
        store<T, W>(p.grad_gate + r * p.grad_gate_stride + c, dg);
        store<T, W>(p.grad_up + r * p.grad_up_stride + c, u);
      }
    });
  }
};

// out = A(x + bias); backward: dL/dx = dy · A'(x + bias) (the bias-add's
// input gradient as well).
template <class A, class T, int W, bool kBackward>
struct PlainKernel {
  struct Params {
    const T* x;
    std::int64_t x_stride;
    const T* bias;  // optional
    const T* grad_out;  // backward
    std::int64_t grad_out_stride;
    std::int64_t rows;
    int cols;
    T* out;  // forward: A(x + b); backward: dL/dx
    std::int64_t out_stride;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.rows, [&](std::int64_t r, int lane) {
      for (int c = lane * W; c < p.cols; c += 32 * W) {
        float x[W], b[W] = {}, dy[W];
        load<T, W>(p.x + r * p.x_stride + c, x);
        if (p.bias) load<T, W>(p.bias + c, b);
        if constexpr (kBackward) load<T, W>(p.grad_out + r * p.grad_out_stride + c, dy);
TL_UNROLL
        for (int i = 0; i < W; ++i) {
          // x + b in fp32, as a fused bias epilogue adds it (unrounded).
          x[i] = kBackward ? dy[i] * A::derivative(x[i] + b[i]) : A::value(x[i] + b[i]);
        }
        store<T, W>(p.out + r * p.out_stride + c, x);
      }
    });
  }
};

// dL/dbias[c] (+)= Σ_r dy[r, c] · A'(x[r, c] + b[c]), in fp32.
template <class A, class T>
struct PlainBiasGradKernel {
  struct Params {
    const T* x;
    std::int64_t x_stride;
    const T* bias;
    const T* grad_out;
    std::int64_t grad_out_stride;
    std::int64_t rows;
    int cols;
    bool accumulate;
    float* grad_bias;
  };
  static constexpr int kThreads = 256;
  static constexpr int kWarps = kThreads / 32;
  struct SharedStorage {
    float part[2][kWarps][32];
  };
  TL_DEVICE void operator()(const Params& p, SharedStorage& s) const {
    column_sums<kWarps>(
        p.rows, p.cols, s.part,
        [&](std::int64_t r, int c, float& db, float&) {
          const float b = p.bias ? to_float(p.bias[c]) : 0.0f;
          db = fmaf(to_float(p.grad_out[r * p.grad_out_stride + c]),
                    A::derivative(to_float(p.x[r * p.x_stride + c]) + b), db);
        },
        [&](int c, float db, float) { p.grad_bias[c] = p.accumulate ? p.grad_bias[c] + db : db; });
  }
};

}  // namespace tokenless::blocks::detail
