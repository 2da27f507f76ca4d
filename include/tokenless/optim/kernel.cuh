#pragma once
// The optimizer's kernels, over a multi-tensor plan (a block a chunk of
// kChunk elements, grid-stride over the chunks; a thread takes elements
// tid, tid + 256, ...: coalesced):
//   SquaresKernel   Σ g² of each chunk, in fp32, in a fixed order: partial[c]
//   PrepareKernel   one block: ‖g‖₂ from the partials (a fixed order: the
//                   norm is bit-identical on a rerun), clip_grad_norm_'s
//                   coefficient, the skip decision, t and the step's scalars
//                   (double, rounded to float, as Python computes them)
//   AdamWKernel     the update of every element (separately rounded
//                   multiplies and adds, as PyTorch's CPU step: no FMA)
//   ResetKernel     m = v = 0, master = the parameters
// No atomics anywhere: a step is deterministic.
#include <tokenless/core/block.cuh>
#include <tokenless/core/config.hpp>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/functional.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/optim/multi_tensor.hpp>
#include <tokenless/optim/policy.hpp>

#include <cstdint>

namespace tokenless::optim::detail {

inline constexpr int kThreads = 256;
inline constexpr int kPerThread = kChunk / kThreads;  // 16
static_assert(kChunk % kThreads == 0, "a chunk is whole strides of the block");

// Rounded as written: nvcc would contract a * b + c into one FMA.
TL_DEVICE TL_FORCEINLINE float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
TL_DEVICE TL_FORCEINLINE float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
TL_DEVICE TL_FORCEINLINE float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
TL_DEVICE TL_FORCEINLINE float sqrt_rn(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return sqrtf(a);
#endif
}

// torch.lerp's rule for a float weight w: a + w (b − a) when |w| < 0.5,
// else b − (b − a)(1 − w).
TL_DEVICE TL_FORCEINLINE float lerp_torch(float a, float b, float w, float one_minus_w) {
  const float d = add_rn(b, -a);
  return w < 0.5f && w > -0.5f ? add_rn(a, mul_rn(w, d)) : add_rn(b, -mul_rn(d, one_minus_w));
}

template <class G>
struct SquaresKernel {
  struct Params {
    PlanView plan;
    float* partial;  // [num_chunks]
  };
  struct SharedStorage {
    typename block::Reduce<float, kThreads>::TempStorage reduce;
  };
  static constexpr int kThreads = detail::kThreads;
  TL_DEVICE void operator()(const Params& p, SharedStorage& sh) const {
    work::block_items(p.plan.num_chunks, [&](std::int64_t c) {
      const ChunkEntry ch = p.plan.chunks[c];
      const TensorEntry t = p.plan.tensors[ch.tensor];
      const G* g = static_cast<const G*>(t.grad);
      const std::int64_t end = t.numel - ch.start < kChunk ? t.numel : ch.start + kChunk;
      float s = 0.0f;
      for (std::int64_t i = ch.start + threadIdx.x; i < end; i += kThreads) {
        const float x = to_float(g[i]);
        s = add_rn(s, mul_rn(x, x));
      }
      s = block::Reduce<float, kThreads>::reduce(s, Sum{}, sh.reduce);
      if (threadIdx.x == 0) p.partial[c] = s;
    });
  }
};

struct PrepareKernel {
  struct Params {
    const float* partial;
    std::int64_t num_chunks;
    double lr, beta1, beta2, weight_decay, max_norm;
    State* state;
    float* norm_out;  // optional: this step's norm (a trainer's log on the device)
  };
  struct SharedStorage {
    typename block::Reduce<float, kThreads>::TempStorage reduce;
  };
  static constexpr int kThreads = detail::kThreads;
  TL_DEVICE void operator()(const Params& p, SharedStorage& sh) const {
    if (blockIdx.x != 0) return;
    float s = 0.0f;
    for (std::int64_t c = threadIdx.x; c < p.num_chunks; c += kThreads) s = add_rn(s, p.partial[c]);
    s = block::Reduce<float, kThreads>::reduce(s, Sum{}, sh.reduce);
    if (threadIdx.x != 0) return;
    State& st = *p.state;
    const float norm = sqrt_rn(s);
    st.grad_norm = norm;
    if (p.norm_out) *p.norm_out = norm;
    if (!(norm - norm == 0.0f)) {  // NaN or infinite: skip the step
      st.skip = 1;
      st.skipped += 1;
      st.clip = 1.0f;
      return;
    }
    st.skip = 0;
    // clip_grad_norm_: max_norm / (n + 1e-6), at most 1 (float arithmetic, as torch's tensors).
    st.clip = p.max_norm > 0 ? fminf(div_rn(static_cast<float>(p.max_norm), add_rn(norm, 1e-6f)), 1.0f) : 1.0f;
    st.step += 1;
    const double t = static_cast<double>(st.step);
    st.decay = static_cast<float>(1.0 - p.lr * p.weight_decay);
    st.step_size = static_cast<float>(p.lr / (1.0 - pow(p.beta1, t)));
    st.bc2_sqrt = static_cast<float>(sqrt(1.0 - pow(p.beta2, t)));
  }
};

// T: the parameters' storage; G: the gradients'. For T other than float the
// update runs on the fp32 master copy and rounds into the parameter.
template <class T, class G>
struct AdamWKernel {
  struct Params {
    PlanView plan;
    float* m;       // [total]
    float* v;       // [total]
    float* master;  // [total]: T != float
    const State* state;
    float w1, one_minus_w1, beta2, w2, eps;  // 1 − β1 (and β1), β2, 1 − β2, ε as float
    bool clipping;
  };
  static constexpr int kThreads = detail::kThreads;
  TL_DEVICE void operator()(const Params& p) const {
    const State& st = *p.state;
    if (st.skip) return;
    const float clip = st.clip, decay = st.decay, step = -st.step_size, bc2 = st.bc2_sqrt;
    work::block_items(p.plan.num_chunks, [&](std::int64_t c) {
      const ChunkEntry ch = p.plan.chunks[c];
      const TensorEntry t = p.plan.tensors[ch.tensor];
      T* param = static_cast<T*>(t.param);
      const G* grad = static_cast<const G*>(t.grad);
      const std::int64_t end = t.numel - ch.start < kChunk ? t.numel : ch.start + kChunk;
      for (std::int64_t i = ch.start + threadIdx.x; i < end; i += kThreads) {
        const std::int64_t k = t.offset + i;
        float g = to_float(grad[i]);
        if (p.clipping) g = mul_rn(g, clip);
        float w = p.master ? p.master[k] : to_float(param[i]);
        if (t.decay != 0.0f) w = mul_rn(w, decay);
        const float m = lerp_torch(p.m[k], g, p.w1, p.one_minus_w1);
        const float v = add_rn(mul_rn(p.v[k], p.beta2), mul_rn(mul_rn(p.w2, g), g));
        const float denom = add_rn(div_rn(sqrt_rn(v), bc2), p.eps);
        w = add_rn(w, mul_rn(step, div_rn(m, denom)));
        p.m[k] = m;
        p.v[k] = v;
        if (p.master) p.master[k] = w;
        param[i] = from_float<T>(w);
      }
    });
  }
};

template <class T>
struct ResetKernel {
  struct Params {
    PlanView plan;
    float* m;
    float* v;
    float* master;  // optional
    State* state;
  };
  static constexpr int kThreads = detail::kThreads;
  TL_DEVICE void operator()(const Params& p) const {
    if (blockIdx.x == 0 && threadIdx.x == 0) *p.state = State{0, 0, 0.0f, 1.0f, 1.0f, 0.0f, 1.0f, 1};
    work::block_items(p.plan.num_chunks, [&](std::int64_t c) {
      const ChunkEntry ch = p.plan.chunks[c];
      const TensorEntry t = p.plan.tensors[ch.tensor];
      const T* param = static_cast<const T*>(t.param);
      const std::int64_t end = t.numel - ch.start < kChunk ? t.numel : ch.start + kChunk;
      for (std::int64_t i = ch.start + threadIdx.x; i < end; i += kThreads) {
        const std::int64_t k = t.offset + i;
        p.m[k] = 0.0f;
        p.v[k] = 0.0f;
        if (p.master) p.master[k] = to_float(param[i]);
      }
    });
  }
};

}  // namespace tokenless::optim::detail
