#pragma once
// H-Net / DLCM learned boundaries: the cosine router and the ratio loss.
//
//   p_t = clamp((1 - cos(q_{t-1}, k_t)) / 2, 0, 1),  p = 1 at every sequence start
//   boundary_t = p_t > 0.5      (H-Net's argmax of (1 - p, p): p = 0.5 is not one)
//
// q = W_q h and k = W_k h come from the caller (one GEMM each; H-Net
// initialises both projections to the identity). cos uses F.normalize's
// convention: x / max(||x||, 1e-12). Storage fp32/fp16/bf16, fp32 math.
//
//   ratio loss = R/(R-1) * ((R-1) F G + (1-F)(1-G))
//
// with F the fraction of boundaries (no gradient) and G the mean of p, over
// each sequence (averaged), over the batch (H-Net), or over a global batch
// whose sums the caller all-reduced (DLCM's global parser).
#include <tokenless/core/block.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/launch.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/warp.cuh>
#include <tokenless/core/workspace.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace tokenless::patcher {

namespace detail {

inline constexpr float kNormalizeEps = 1e-12f;
inline constexpr int kRouterWarps = 8;

TL_DEVICE TL_FORCEINLINE bool is_sequence_start(const std::int32_t* cu, std::int64_t num_seqs, std::int64_t t) {
  std::int64_t lo = 0, hi = num_seqs;
  while (hi - lo > 1) {
    const std::int64_t mid = (lo + hi) / 2;
    if (cu[mid] <= t) lo = mid;
    else hi = mid;
  }
  // With empty sequences several offsets equal t; any of them makes t a start.
  return cu[lo] == t;
}

struct CosTerms {
  float dot, nq, nk;
};

template <class T>
TL_DEVICE TL_FORCEINLINE CosTerms cos_terms(const T* q, const T* k, int d, int lane) {
  float dot = 0, qq = 0, kk = 0;
  for (int c = lane; c < d; c += 32) {
    const float a = to_float(q[c]), b = to_float(k[c]);
    dot += a * b;
    qq += a * a;
    kk += b * b;
  }
  return {warp::reduce(dot, Sum{}), sqrtf(warp::reduce(qq, Sum{})), sqrtf(warp::reduce(kk, Sum{}))};
}

TL_HOST_DEVICE inline float prob_from_cos(float cos) {
  const float p = 0.5f * (1.0f - cos);
  return p < 0.0f ? 0.0f : (p > 1.0f ? 1.0f : p);  // NaN passes through, as torch.clamp does
}

template <class T>
__global__ void __launch_bounds__(kRouterWarps * 32)
    router_forward_kernel(const T* q, const T* k, std::int64_t n, int d, const std::int32_t* cu, std::int64_t num_seqs,
                          float* prob, std::uint8_t* boundary) {
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kRouterWarps;
  for (std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * kRouterWarps + (threadIdx.x >> 5); t < n; t += stride) {
    float p = 1.0f;
    if (!is_sequence_start(cu, num_seqs, t)) {
      const CosTerms c = cos_terms(q + (t - 1) * d, k + t * d, d, lane);
      p = prob_from_cos(c.dot / (fmaxf(c.nq, kNormalizeEps) * fmaxf(c.nk, kNormalizeEps)));
    }
    if (lane == 0) {
      prob[t] = p;
      if (boundary) boundary[t] = p > 0.5f;
    }
  }
}

// dp/dq_{t-1} and dp/dk_t through normalize and the clamp (whose gradient is
// 1 inside [0, 1], bounds included, as torch.clamp's). Every q and k row gets
// exactly one writer, so no atomics: q rows of sequence ends and k rows of
// sequence starts get zeros.
template <class T>
__global__ void __launch_bounds__(kRouterWarps * 32)
    router_backward_kernel(const T* q, const T* k, const float* grad_prob, std::int64_t n, int d,
                           const std::int32_t* cu, std::int64_t num_seqs, float* grad_q, float* grad_k) {
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kRouterWarps;
  for (std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * kRouterWarps + (threadIdx.x >> 5); t < n; t += stride) {
    float* gk = grad_k + t * d;
    if (t == n - 1)
      for (int c = lane; c < d; c += 32) grad_q[t * d + c] = 0.0f;
    if (is_sequence_start(cu, num_seqs, t)) {
      for (int c = lane; c < d; c += 32) {
        gk[c] = 0.0f;
        if (t > 0) grad_q[(t - 1) * d + c] = 0.0f;
      }
      continue;
    }
    const T* qr = q + (t - 1) * d;
    const T* kr = k + t * d;
    const CosTerms s = cos_terms(qr, kr, d, lane);
    const float mq = fmaxf(s.nq, kNormalizeEps), mk = fmaxf(s.nk, kNormalizeEps);
    const float cos = s.dot / (mq * mk);
    const float raw = 0.5f * (1.0f - cos);
    const float g = (raw >= 0.0f && raw <= 1.0f) ? -0.5f * grad_prob[t] : 0.0f;  // dL/dcos
    float* gq = grad_q + (t - 1) * d;
    for (int c = lane; c < d; c += 32) {
      const float qh = to_float(qr[c]) / mq, kh = to_float(kr[c]) / mk;
      // d cos / d q = (k^ - cos q^) / ||q|| when ||q|| > eps; k^ / eps otherwise (normalize is then q / eps).
      gq[c] = g * (s.nq > kNormalizeEps ? (kh - cos * qh) / s.nq : kh / kNormalizeEps);
      gk[c] = g * (s.nk > kNormalizeEps ? (qh - cos * kh) / s.nk : qh / kNormalizeEps);
    }
  }
}

// Generation: p for each stream's new position from its previous q.
template <class T>
__global__ void __launch_bounds__(kRouterWarps * 32)
    router_step_kernel(const T* q_prev, const T* k_new, const std::uint8_t* first, std::int64_t streams, int d,
                       float* prob, std::uint8_t* boundary) {
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kRouterWarps;
  for (std::int64_t b = static_cast<std::int64_t>(blockIdx.x) * kRouterWarps + (threadIdx.x >> 5); b < streams; b += stride) {
    float p = 1.0f;
    if (!(first && first[b])) {
      const CosTerms c = cos_terms(q_prev + b * d, k_new + b * d, d, lane);
      p = prob_from_cos(c.dot / (fmaxf(c.nq, kNormalizeEps) * fmaxf(c.nk, kNormalizeEps)));
    }
    if (lane == 0) {
      prob[b] = p;
      if (boundary) boundary[b] = p > 0.5f;
    }
  }
}

// One block per group (a sequence, or the whole batch): sums of boundaries and p, in a fixed order.
template <int = 0>
__global__ void __launch_bounds__(256) ratio_sums_kernel(const float* prob, const std::uint8_t* boundary,
                                                         const std::int32_t* cu, std::int64_t n, float* sums) {
  using R = block::Reduce<float, 256>;
  __shared__ typename R::TempStorage smem;
  const std::int64_t g = blockIdx.x;
  const std::int64_t begin = cu ? cu[g] : 0, end = cu ? cu[g + 1] : n;
  float f = 0, p = 0;
  for (std::int64_t t = begin + threadIdx.x; t < end; t += 256) {
    f += boundary[t] ? 1.0f : 0.0f;
    p += prob[t];
  }
  f = R::reduce(f, Sum{}, smem);
  p = R::reduce(p, Sum{}, smem);
  if (threadIdx.x == 0) {
    sums[g * 3 + 0] = f;
    sums[g * 3 + 1] = p;
    sums[g * 3 + 2] = static_cast<float>(end - begin);
  }
}

// Loss (one thread, fixed order) and dL/dp per token.
template <int = 0>
__global__ void ratio_loss_kernel(const float* sums, std::int64_t groups, float R, float* loss) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  float total = 0;
  for (std::int64_t g = 0; g < groups; ++g) {
    const float F = sums[g * 3] / sums[g * 3 + 2], G = sums[g * 3 + 1] / sums[g * 3 + 2];
    total += R / (R - 1.0f) * ((R - 1.0f) * F * G + (1.0f - F) * (1.0f - G));
  }
  *loss = total / static_cast<float>(groups);
}

template <int = 0>
__global__ void ratio_grad_kernel(const float* sums, const std::int32_t* cu, std::int64_t groups, std::int64_t n,
                                  float R, float grad_loss_scale, float* grad_prob) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < n; t += stride) {
    std::int64_t g = 0;
    if (cu && groups > 1) {
      std::int64_t lo = 0, hi = groups;
      while (hi - lo > 1) {
        const std::int64_t mid = (lo + hi) / 2;
        if (cu[mid] <= t) lo = mid;
        else hi = mid;
      }
      g = lo;
    }
    const float F = sums[g * 3] / sums[g * 3 + 2], N = sums[g * 3 + 2];
    grad_prob[t] = grad_loss_scale * R / (R - 1.0f) * ((R - 1.0f) * F - (1.0f - F)) / (N * static_cast<float>(groups));
  }
}

// A warp per row, at most 8192 blocks (the kernels stride over the rest).
inline LaunchConfig router_config(std::int64_t rows, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(std::min<std::int64_t>((rows + kRouterWarps - 1) / kRouterWarps, 8192)));
  return {grid, dim3(kRouterWarps * 32), 0, stream};
}

// The checks forward and backward share.
template <class T>
inline Status check_router(const T* q, const T* k, const std::int32_t* cu, std::int64_t n, std::int64_t num_seqs, int d) {
  TL_RETURN_IF_ERROR(check::not_null("q", q));
  TL_RETURN_IF_ERROR(check::not_null("k", k));
  TL_RETURN_IF_ERROR(check::not_null("cu_seqlens", cu));
  TL_RETURN_IF_ERROR(check::positive("n_total", n));
  TL_RETURN_IF_ERROR(check::positive("num_seqs", num_seqs));
  TL_RETURN_IF_ERROR(check::positive("d", d));
  return check::product_fits_int32("n_total * d", n, d);
}

}  // namespace detail

template <StorageFloat T>
struct CosineRouterForward {
  struct Arguments {
    const T* q = nullptr;   // [n_total, d]: W_q h
    const T* k = nullptr;   // [n_total, d]: W_k h
    std::int64_t n_total = 0;
    int d = 0;
    const std::int32_t* cu_seqlens = nullptr;  // [num_seqs + 1]
    std::int64_t num_seqs = 0;
    float* prob = nullptr;             // [n_total]
    std::uint8_t* boundary = nullptr;  // [n_total], optional
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_router(a.q, a.k, a.cu_seqlens, a.n_total, a.num_seqs, a.d));
    return check::not_null("prob", a.prob);
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    return launch(detail::router_forward_kernel<T>, detail::router_config(a.n_total, stream), a.q, a.k, a.n_total, a.d,
                  a.cu_seqlens, a.num_seqs, a.prob, a.boundary);
  }
};

template <StorageFloat T>
struct CosineRouterBackward {
  struct Arguments {
    const T* q = nullptr;
    const T* k = nullptr;
    const float* grad_prob = nullptr;  // [n_total]
    std::int64_t n_total = 0;
    int d = 0;
    const std::int32_t* cu_seqlens = nullptr;
    std::int64_t num_seqs = 0;
    float* grad_q = nullptr;  // [n_total, d], written
    float* grad_k = nullptr;  // [n_total, d], written
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_router(a.q, a.k, a.cu_seqlens, a.n_total, a.num_seqs, a.d));
    TL_RETURN_IF_ERROR(check::not_null("grad_prob", a.grad_prob));
    TL_RETURN_IF_ERROR(check::not_null("grad_q", a.grad_q));
    return check::not_null("grad_k", a.grad_k);
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    return launch(detail::router_backward_kernel<T>, detail::router_config(a.n_total, stream), a.q, a.k, a.grad_prob,
                  a.n_total, a.d, a.cu_seqlens, a.num_seqs, a.grad_q, a.grad_k);
  }
};

// One generation step for a batch of streams: the caller carries each
// stream's previous q (W_q h_{t-1}).
template <StorageFloat T>
struct CosineRouterStep {
  struct Arguments {
    const T* q_prev = nullptr;         // [streams, d]
    const T* k_new = nullptr;          // [streams, d]
    const std::uint8_t* first = nullptr;  // [streams]: 1 where the new position starts a sequence (p = 1); optional
    std::int64_t streams = 0;
    int d = 0;
    float* prob = nullptr;
    std::uint8_t* boundary = nullptr;
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::not_null("q_prev", a.q_prev));
    TL_RETURN_IF_ERROR(check::not_null("k_new", a.k_new));
    TL_RETURN_IF_ERROR(check::not_null("prob", a.prob));
    TL_RETURN_IF_ERROR(check::positive("streams", a.streams));
    return check::positive("d", a.d);
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    return launch(detail::router_step_kernel<T>, detail::router_config(a.streams, stream), a.q_prev, a.k_new, a.first,
                  a.streams, a.d, a.prob, a.boundary);
  }
};

enum class RatioScope { per_sequence, per_batch, global };

// The ratio (load-balancing) loss and dL/dp, forward and backward in one run.
struct RatioLoss {
  struct Arguments {
    const float* prob = nullptr;             // [n_total]
    const std::uint8_t* boundary = nullptr;  // [n_total]
    std::int64_t n_total = 0;
    const std::int32_t* cu_seqlens = nullptr;  // [num_seqs + 1]; needed per sequence
    std::int64_t num_seqs = 0;
    RatioScope scope = RatioScope::per_batch;
    // Global scope: {sum of boundaries, sum of p, token count} over the global
    // batch, all-reduced by the caller; gradients flow to the local p only.
    const float* global_sums = nullptr;
    float target_ratio = 4.0f;   // R: bytes per boundary wanted (R > 1)
    float grad_scale = 1.0f;     // dL/dloss, usually the loss weight
    float* loss = nullptr;       // [1]
    float* grad_prob = nullptr;  // [n_total], written
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::not_null("prob", a.prob));
    TL_RETURN_IF_ERROR(check::not_null("boundary", a.boundary));
    TL_RETURN_IF_ERROR(check::not_null("loss", a.loss));
    TL_RETURN_IF_ERROR(check::not_null("grad_prob", a.grad_prob));
    TL_RETURN_IF_ERROR(check::positive("n_total", a.n_total));
    if (!(a.target_ratio > 1.0f) || !std::isfinite(a.target_ratio)) {
      return Status::argument(StatusCode::invalid_argument, "target_ratio", "a finite R > 1", "%g",
                              static_cast<double>(a.target_ratio));
    }
    TL_RETURN_IF_ERROR(check::finite("grad_scale", a.grad_scale));
    if (a.scope == RatioScope::per_sequence) {
      TL_RETURN_IF_ERROR(check::not_null("cu_seqlens", a.cu_seqlens));
      TL_RETURN_IF_ERROR(check::positive("num_seqs", a.num_seqs));
    }
    if (a.scope == RatioScope::global) TL_RETURN_IF_ERROR(check::not_null("global_sums", a.global_sums));
    return Status::ok();
  }
  static std::int64_t groups(const Arguments& a) { return a.scope == RatioScope::per_sequence ? a.num_seqs : 1; }
  static std::size_t workspace_size(const Arguments& a) {
    return align_up(static_cast<std::size_t>(groups(a)) * 3 * sizeof(float), kWorkspaceAlignment);
  }
  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    TL_RETURN_IF_ERROR(check_workspace(ws, workspace_size(a)));
    const std::int64_t g = groups(a);
    const float* sums = a.global_sums;
    if (a.scope != RatioScope::global) {
      float* local = ws.at<float>(0);
      const std::int32_t* cu = a.scope == RatioScope::per_sequence ? a.cu_seqlens : nullptr;
      TL_RETURN_IF_ERROR(launch(detail::ratio_sums_kernel<>, {dim3(static_cast<unsigned>(g)), dim3(256), 0, stream},
                                a.prob, a.boundary, cu, a.n_total, local));
      sums = local;
    }
    TL_RETURN_IF_ERROR(launch(detail::ratio_loss_kernel<>, {dim3(1), dim3(32), 0, stream}, sums, g, a.target_ratio, a.loss));
    const std::int32_t* cu = a.scope == RatioScope::per_sequence ? a.cu_seqlens : nullptr;
    const dim3 grid(static_cast<unsigned>(std::min<std::int64_t>((a.n_total + 255) / 256, 4096)));
    return launch(detail::ratio_grad_kernel<>, {grid, dim3(256), 0, stream}, sums, cu, g, a.n_total, a.target_ratio,
                  a.grad_scale, a.grad_prob);
  }
};

}  // namespace tokenless::patcher
