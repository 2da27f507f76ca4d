#pragma once
// Self-speculative decoding's acceptance (policy.hpp's greedy rule):
//
//   SpeculativeAccept   drafts d_1..d_k (from the multi-token heads) and the
//                       verifier's greedy ids v_0..v_k (its next id after the
//                       last accepted token, then after each draft, from one
//                       forward of k + 1 tokens through the few-query decode)
//                       give, per sequence, a = the longest prefix with
//                       d_j = v_(j-1); the new tokens d_1..d_a, v_a (a + 1 of
//                       them, every one the greedy choice: the output equals
//                       plain greedy decoding); k - a positions for
//                       attention::KvCacheRollback to drop (the verify step
//                       appended the last token and the k drafts); and a
//                       histogram of a, the acceptance statistics.
//
// Everything stays on the device: the next step reads the new tokens and
// counts where this one wrote them. No device-side checks (the ids come
// from the heads' and the verifier's argmax).
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/workspace.hpp>
#include <tokenless/heads/kernel.cuh>

#include <cstdint>

namespace tokenless::heads {

// The few-query decode verifies at most 16 tokens a sequence: k + 1 <= 16.
inline constexpr int kMaxDraft = 15;

struct SpeculativeAccept {
  static constexpr const char* kName = "heads::SpeculativeAccept";
  struct Arguments {
    const std::int32_t* draft = nullptr;     // [batch, k]
    const std::int32_t* verified = nullptr;  // [batch, k + 1]
    std::int64_t batch = 0;
    int k = 0;
    std::int64_t draft_stride = 0, verified_stride = 0, out_stride = 0;  // 0: packed (k, k + 1, k + 1)
    std::int32_t* out = nullptr;            // [batch, k + 1]: the accepted drafts and the bonus token (a + 1 written)
    std::int32_t* accepted = nullptr;       // [batch], optional: a
    std::int32_t* drop = nullptr;           // [batch], optional: k - a, KvCacheRollback's drop
    unsigned long long* histogram = nullptr;  // [k + 1], optional: counts of a, added to (zero it to start)
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::positive("batch", a.batch));
    TL_RETURN_IF_ERROR(check::fits_int32("batch", a.batch));
    if (a.k <= 0) return Status::argument(StatusCode::invalid_argument, "k", "at least one draft", "%d", a.k);
    if (a.k > kMaxDraft) {
      return Status::argument(StatusCode::unsupported, "k", "at most 15 drafts (the few-query decode verifies 16 tokens)",
                              "%d", a.k);
    }
    TL_RETURN_IF_ERROR(check::not_null({{"draft", a.draft}, {"verified", a.verified}, {"out", a.out}}));
    if ((a.draft_stride && a.draft_stride < a.k) || (a.verified_stride && a.verified_stride < a.k + 1) ||
        (a.out_stride && a.out_stride < a.k + 1)) {
      return Status::argument(StatusCode::shape_mismatch, "draft_stride, verified_stride, out_stride",
                              "0 or at least k, k + 1, k + 1", "%lld, %lld, %lld", static_cast<long long>(a.draft_stride),
                              static_cast<long long>(a.verified_stride), static_cast<long long>(a.out_stride));
    }
    return Status::ok();
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    return launch<detail::AcceptKernel>(
        {a.draft, a.draft_stride ? a.draft_stride : a.k, a.verified, a.verified_stride ? a.verified_stride : a.k + 1,
         a.batch, a.k, a.accepted, a.out, a.out_stride ? a.out_stride : a.k + 1, a.drop, a.histogram},
        grid_for(a.batch, detail::AcceptKernel::kThreads, 4), stream);
  }
  static Status read_status(const Arguments&, Workspace = {}, cudaStream_t = nullptr) { return Status::ok(); }
};

}  // namespace tokenless::heads
