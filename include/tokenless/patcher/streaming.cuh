#pragma once
// The streaming patcher on the device: one step decides, for each of a batch
// of generation streams, whether its new position starts a patch
// (patcher/policy.hpp, stream_push). The state is a few bytes per stream and
// stays on the device; a step is one small kernel, no host synchronisation.
#include <tokenless/core/kernel.cuh>
#include <tokenless/patcher/kernel.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/workspace.hpp>
#include <tokenless/patcher/policy.hpp>

#include <algorithm>
#include <cstdint>

namespace tokenless::patcher {


template <BoundaryPolicy Rule>
struct StreamStep {
  static constexpr const char* kName = "patcher::StreamStep";
  struct Arguments {
    Rule rule{};
    StreamState* states = nullptr;             // [streams]; zero-initialise to start
    const float* prev_entropies = nullptr;     // [streams]: entropy of each stream's last byte (entropy rules)
    const std::int32_t* prev_tokens = nullptr; // [streams]: id of each stream's last byte (token rules)
    std::int64_t streams = 0;
    int max_patch_length = 0;
    std::uint8_t* starts = nullptr;            // [streams]: 1 if the new position starts a patch
  };

  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check_rule(a.rule));  // the patcher's checks, the same function
    TL_RETURN_IF_ERROR(check::not_null({{"states", a.states}, {"starts", a.starts}}));
    TL_RETURN_IF_ERROR(check::positive("streams", a.streams));
    if constexpr (Rule::needs_entropies) TL_RETURN_IF_ERROR(check::not_null("prev_entropies", a.prev_entropies));
    if constexpr (Rule::needs_tokens) TL_RETURN_IF_ERROR(check::not_null("prev_tokens", a.prev_tokens));
    if (a.max_patch_length < 0) {
      return Status::argument(StatusCode::invalid_argument, "max_patch_length", ">= 0", "%d", a.max_patch_length);
    }
    return Status::ok();
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    return launch<detail::StreamStepKernel<Rule>>(
        {a.rule, a.states, a.prev_entropies, a.prev_tokens, a.streams, a.max_patch_length, a.starts},
        grid_for(a.streams, 256, tuning_for(compute_capability()).sequence_blocks_per_sm), stream);
  }
};

}  // namespace tokenless::patcher
