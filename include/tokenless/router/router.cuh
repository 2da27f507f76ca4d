#pragma once
// H-Net / DLCM learned boundaries: the cosine router (forward, backward, the
// generation step) and the ratio loss (router/policy.hpp has the formulas).
//
// q = W_q h and k = W_k h come from the caller (one GEMM each; H-Net
// initialises both projections to the identity). Storage fp32/fp16/bf16,
// fp32 math. NaN in q or k gives NaN p (and no boundary), as in PyTorch.
//
// The batch's offsets are checked on the device, as every operation does: a
// bad cu_seqlens writes nothing, and read_status() names the entry.
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/varlen.hpp>
#include <tokenless/core/workspace.hpp>
#include <tokenless/router/kernel.cuh>
#include <tokenless/router/policy.hpp>

#include <cmath>
#include <cstdint>

namespace tokenless::router {

namespace detail {

// A warp per row, at most Tuning::blocks_per_sm blocks per SM: the kernels
// stride over the rest.
static_assert(kTuningSm80.block_threads == kRouterWarps * 32 && kTuningSm90.block_threads == kRouterWarps * 32,
              "the router's kernels are instantiated for 256-thread blocks");
inline dim3 warp_grid(std::int64_t rows) {
  return grid_for(rows, kRouterWarps, tuning_for(compute_capability()).blocks_per_sm);
}
inline int ratio_blocks_per_sm() { return tuning_for(compute_capability()).ratio_blocks_per_sm; }

// The checks forward and backward share.
template <class T>
inline Status check_router(const T* q, const T* k, const VarlenBatch& batch, int d) {
  TL_RETURN_IF_ERROR(check::not_null({{"q", q}, {"k", k}}));
  TL_RETURN_IF_ERROR(check::batch("batch", batch));
  TL_RETURN_IF_ERROR(check::positive("d", d));
  return check::product_fits_int32("batch.total * d", batch.total, d);
}

// The forward and the backward: kernel K, a warp per position of the
// batch, whose offsets are the one device-side check; the workspace is the
// status record. Op gives kName, can_implement and params(arguments).
template <class Op, class K, class A>
struct OverPositions {
  using Arguments = A;
  static std::size_t workspace_size(const Arguments&) { return kStatusBytes; }
  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<Op>(a, ws));
    typename K::Params p = Op::params(a);
    p.status = status_of(ws);
    TL_RETURN_IF_ERROR(begin_checks(p.status, a.batch, stream));
    return launch<K>(p, warp_grid(a.batch.total), stream);
  }
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    return read_batch_status(Op::kName, a.batch, ws, stream);
  }
};

template <class T>
struct ForwardArguments {
  const T* q = nullptr;   // [batch.total, d]: W_q h
  const T* k = nullptr;   // [batch.total, d]: W_k h
  VarlenBatch batch;
  int d = 0;
  float* prob = nullptr;             // [batch.total]
  std::uint8_t* boundary = nullptr;  // [batch.total], optional
};

template <class T>
struct BackwardArguments {
  const T* q = nullptr;
  const T* k = nullptr;
  const float* grad_prob = nullptr;  // [batch.total]
  VarlenBatch batch;
  int d = 0;
  float* grad_q = nullptr;  // [batch.total, d], written
  float* grad_k = nullptr;  // [batch.total, d], written
};

}  // namespace detail

template <StorageFloat T>
struct CosineRouterForward
    : detail::OverPositions<CosineRouterForward<T>, detail::ForwardKernel<T>, detail::ForwardArguments<T>> {
  static constexpr const char* kName = "router::CosineRouterForward";
  using Arguments = detail::ForwardArguments<T>;  // q, k, batch, d, prob, boundary (optional)
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_router(a.q, a.k, a.batch, a.d));
    return check::not_null("prob", a.prob);
  }
  static typename detail::ForwardKernel<T>::Params params(const Arguments& a) {
    return {a.q, a.k, a.batch, a.d, a.prob, a.boundary, nullptr};
  }
};

template <StorageFloat T>
struct CosineRouterBackward
    : detail::OverPositions<CosineRouterBackward<T>, detail::BackwardKernel<T>, detail::BackwardArguments<T>> {
  static constexpr const char* kName = "router::CosineRouterBackward";
  using Arguments = detail::BackwardArguments<T>;  // q, k, grad_prob, batch, d, grad_q, grad_k
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_router(a.q, a.k, a.batch, a.d));
    return check::not_null({{"grad_prob", a.grad_prob}, {"grad_q", a.grad_q}, {"grad_k", a.grad_k}});
  }
  static typename detail::BackwardKernel<T>::Params params(const Arguments& a) {
    return {a.q, a.k, a.grad_prob, a.batch, a.d, a.grad_q, a.grad_k, nullptr};
  }
};

// One generation step for a batch of streams: the caller carries each
// stream's previous q (W_q h_{t-1}).
template <StorageFloat T>
struct CosineRouterStep {
  static constexpr const char* kName = "router::CosineRouterStep";
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
    TL_RETURN_IF_ERROR(check::not_null({{"q_prev", a.q_prev}, {"k_new", a.k_new}, {"prob", a.prob}}));
    TL_RETURN_IF_ERROR(check::positive("streams", a.streams));
    TL_RETURN_IF_ERROR(check::positive("d", a.d));
    return check::product_fits_int32("streams * d", a.streams, a.d);
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    return launch<detail::StepKernel<T>>({a.q_prev, a.k_new, a.first, a.streams, a.d, a.prob, a.boundary},
                                         detail::warp_grid(a.streams), stream);
  }
};

// The ratio (load-balancing) loss and dL/dp, forward and backward in one run.
struct RatioLoss {
  static constexpr const char* kName = "router::RatioLoss";
  struct Arguments {
    const float* prob = nullptr;             // [batch.total]
    const std::uint8_t* boundary = nullptr;  // [batch.total]
    VarlenBatch batch;                       // per sequence: its sequences are the groups
    RatioScope scope = RatioScope::per_batch;
    // Global scope: {sum of boundaries, sum of p, position count} over the
    // global batch, all-reduced by the caller; gradients flow to the local p only.
    const float* global_sums = nullptr;
    float target_ratio = 4.0f;   // R: bytes per boundary wanted (R > 1)
    float grad_scale = 1.0f;     // dL/dloss, usually the loss weight
    float* loss = nullptr;       // [1]
    float* grad_prob = nullptr;  // [batch.total], written
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(
        check::not_null({{"prob", a.prob}, {"boundary", a.boundary}, {"loss", a.loss}, {"grad_prob", a.grad_prob}}));
    TL_RETURN_IF_ERROR(check::batch("batch", a.batch));
    if (!(a.target_ratio > 1.0f) || !std::isfinite(a.target_ratio)) {
      return Status::argument(StatusCode::invalid_argument, "target_ratio", "a finite R > 1", "%g",
                              static_cast<double>(a.target_ratio));
    }
    TL_RETURN_IF_ERROR(check::finite("grad_scale", a.grad_scale));
    if (a.scope == RatioScope::global) TL_RETURN_IF_ERROR(check::not_null("global_sums", a.global_sums));
    return Status::ok();
  }
  static std::int64_t groups(const Arguments& a) { return a.scope == RatioScope::per_sequence ? a.batch.num_seqs : 1; }
  // Workspace: the status record, the count of non-empty groups, the groups' sums.
  static constexpr std::size_t kUsedAt = kStatusBytes, kSumsAt = kStatusBytes + kWorkspaceAlignment;
  static std::size_t workspace_size(const Arguments& a) {
    return kSumsAt + align_up(static_cast<std::size_t>(groups(a)) * 3 * sizeof(float), kWorkspaceAlignment);
  }
  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<RatioLoss>(a, ws));
    DeviceStatus* status = status_of(ws);
    auto* used = ws.at<float>(kUsedAt);
    const bool per_sequence = a.scope == RatioScope::per_sequence;
    TL_RETURN_IF_ERROR(begin_checks(status, a.batch, stream));
    const float* sums = a.global_sums;
    if (a.scope != RatioScope::global) {
      float* local = ws.at<float>(kSumsAt);
      TL_RETURN_IF_ERROR(launch<detail::RatioSumsKernel>({a.prob, a.boundary, a.batch, per_sequence, local, status},
                                                         grid_for(groups(a), 1, detail::ratio_blocks_per_sm()), stream));
      sums = local;
    }
    TL_RETURN_IF_ERROR(launch<detail::RatioLossKernel>(
        {sums, a.scope == RatioScope::global ? 1 : groups(a), a.target_ratio, a.loss, used, status}, dim3(1), stream));
    return launch<detail::RatioGradKernel>(
        {sums, a.batch, per_sequence, a.target_ratio, a.grad_scale, used, a.grad_prob, status},
        grid_for(a.batch.total, detail::kRatioThreads, detail::ratio_blocks_per_sm()), stream);
  }
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    return read_batch_status(kName, a.batch, ws, stream);
  }
};

}  // namespace tokenless::router
