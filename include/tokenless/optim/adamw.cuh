#pragma once
// Fused AdamW over every tensor of a model (optim/policy.hpp has the
// semantics: torch.optim.AdamW with clip_grad_norm_ and the skip of a
// non-finite norm), a multi-tensor plan (optim/multi_tensor.hpp), three
// launches a step whatever the tensor count, no host synchronisation:
//
//   AdamW<T, G>::reset(a, ws, stream)  m = v = 0, master = params, the State zeroed
//   AdamW<T, G>::run(a, ws, stream)    one step: the norm, the clip, the update
//
// T is the parameters' storage (float, half, bf16: for the latter two an
// fp32 master copy is kept and rounded into them), G the gradients'. The
// norm and the update are deterministic (no atomics: the same bits on a
// rerun). The State (device) counts the updates and the skipped steps and
// holds the last norm; a trainer reads it when it logs.
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/workspace.hpp>
#include <tokenless/optim/kernel.cuh>
#include <tokenless/optim/multi_tensor.hpp>
#include <tokenless/optim/policy.hpp>

#include <cstdint>
#include <type_traits>

namespace tokenless::optim {

template <StorageFloat T, StorageFloat G = T>
struct AdamW {
  static constexpr const char* kName = "optim::AdamW";
  static constexpr bool kMaster = !std::is_same_v<T, float>;

  struct Arguments {
    PlanView plan;         // the tensors (device table), their total elements
    float* m = nullptr;    // [plan.total], fp32
    float* v = nullptr;    // [plan.total], fp32
    float* master = nullptr;  // [plan.total], fp32: for T other than float
    State* state = nullptr;   // device
    AdamWHyper hyper{};       // this step's lr and the rest
    float* norm_out = nullptr;  // optional, device: this step's gradient norm
  };

  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check_adamw(a.hyper));
    if (!a.plan.tensors || !a.plan.chunks) {
      return Status::argument(StatusCode::null_pointer, "plan", "a plan's view of its device table", "a null table");
    }
    TL_RETURN_IF_ERROR(check::positive("plan.num_chunks", a.plan.num_chunks));
    TL_RETURN_IF_ERROR(check::not_null({{"m", a.m}, {"v", a.v}, {"state", a.state}}));
    if (kMaster) TL_RETURN_IF_ERROR(check::not_null("master", a.master));
    if (!kMaster && a.master) {
      return Status::argument(StatusCode::invalid_argument, "master", "none for fp32 parameters", "a buffer");
    }
    TL_RETURN_IF_ERROR(check::aligned("m", a.m, alignof(float)));
    TL_RETURN_IF_ERROR(check::aligned("v", a.v, alignof(float)));
    return a.master ? check::aligned("master", a.master, alignof(float)) : Status::ok();
  }
  static std::size_t workspace_size(const Arguments& a) {
    WorkspaceLayout w;
    w.add(kStatusBytes);
    w.add_array<float>(a.plan.num_chunks);
    return w.bytes();
  }

  // m = v = 0, master = the parameters, the State zeroed (a run's start).
  static Status reset(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<AdamW>(a, ws));
    return launch<detail::ResetKernel<T>>({a.plan, a.m, a.v, a.master, a.state}, grid(a), stream);
  }

  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<AdamW>(a, ws));
    WorkspaceLayout w;
    w.add(kStatusBytes);
    float* partial = ws.at<float>(w.add_array<float>(a.plan.num_chunks));
    const AdamWHyper& h = a.hyper;
    TL_RETURN_IF_ERROR(launch<detail::SquaresKernel<G>>({a.plan, partial}, grid(a), stream));
    TL_RETURN_IF_ERROR(launch<detail::PrepareKernel>(
        {partial, a.plan.num_chunks, h.lr, h.beta1, h.beta2, h.weight_decay, h.max_norm, a.state, a.norm_out}, dim3(1),
        stream));
    // The weights as torch casts its Python scalars: 1 − β1 and 1 − β2 in double, then float.
    const auto w1 = static_cast<float>(1.0 - h.beta1), w2 = static_cast<float>(1.0 - h.beta2);
    return launch<detail::AdamWKernel<T, G>>({a.plan, a.m, a.v, kMaster ? a.master : nullptr, a.state, w1, 1.0f - w1,
                                               static_cast<float>(h.beta2), w2, static_cast<float>(h.eps),
                                               h.max_norm > 0},
                                              grid(a), stream);
  }

 private:
  static dim3 grid(const Arguments& a) {
    return grid_for(a.plan.num_chunks, 1, tuning_for(compute_capability()).blocks_per_sm);
  }
};

}  // namespace tokenless::optim
