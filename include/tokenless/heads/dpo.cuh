#pragma once
// DPO's loss on top of the linear cross-entropy's log-probs (Rafailov et
// al.): for pairs (chosen c, rejected r) of sequences,
//   L = mean_pairs −log σ(β ((π_c − ref_c) − (π_r − ref_r)))
// where π_s is sequence s's log-prob under the policy (the sum of its
// tokens' log-probs: LinearCrossEntropy's `logprob`, 0 at ignored tokens,
// so the prompt's tokens are left out by labelling them ignore_index) and
// ref_s the reference model's, given.
//
// Outputs: the loss, each sequence's π, the pairs' rewards β(π − ref), and
// grad_token_loss, dL/d(each token's loss): the loss of a token is −its
// log-prob when the cross-entropy runs without smoothing, z-loss or weights,
// so LinearCrossEntropyBackward with reduction none and grad_loss =
// grad_token_loss carries DPO's gradient into dH and dW.
//
// Device-side checks: the sequences' cu_seqlens; each pair's two sequences
// in [0, S) and different (read_status() names the pair; nothing written).
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/varlen.hpp>
#include <tokenless/core/workspace.hpp>
#include <tokenless/heads/kernel.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>

namespace tokenless::heads {

struct DpoLoss {
  static constexpr const char* kName = "heads::DpoLoss";
  struct Arguments {
    const float* logprob = nullptr;       // [seqs.total]: per-token log-probs
    VarlenBatch seqs;                     // the sequences over those tokens
    const float* ref_logprob = nullptr;   // [S]: the reference model's sequence log-probs
    const std::int32_t* chosen = nullptr;    // [pairs], device
    const std::int32_t* rejected = nullptr;  // [pairs], device
    std::int64_t pairs = 0;
    float beta = 0.1f;
    float* loss = nullptr;                // [1]
    float* seq_logprob = nullptr;         // [S], optional
    float* chosen_reward = nullptr;       // [pairs], optional
    float* rejected_reward = nullptr;     // [pairs], optional
    float* grad_token_loss = nullptr;     // [seqs.total], optional: for LinearCrossEntropyBackward
  };
  struct Layout {
    std::size_t seq, pair_loss, dx, bytes;
  };
  static Layout layout(const Arguments& a) {
    WorkspaceLayout w;
    Layout l{};
    w.add(kStatusBytes);
    l.seq = w.add_array<float>(a.seq_logprob ? 0 : std::max<std::int64_t>(a.seqs.num_seqs, 0));
    l.pair_loss = w.add_array<float>(std::max<std::int64_t>(a.pairs, 0));
    l.dx = w.add_array<float>(std::max<std::int64_t>(a.pairs, 0));
    l.bytes = w.bytes();
    return l;
  }
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::batch("seqs", a.seqs));
    TL_RETURN_IF_ERROR(check::positive("pairs", a.pairs));
    TL_RETURN_IF_ERROR(check::fits_int32("pairs", a.pairs));
    TL_RETURN_IF_ERROR(check::not_null({{"logprob", a.logprob},
                                        {"ref_logprob", a.ref_logprob},
                                        {"chosen", a.chosen},
                                        {"rejected", a.rejected},
                                        {"loss", a.loss}}));
    if (!(a.beta > 0.0f) || !std::isfinite(a.beta)) {
      return Status::argument(StatusCode::invalid_argument, "beta", "a finite beta > 0", "%g",
                              static_cast<double>(a.beta));
    }
    return Status::ok();
  }
  static std::size_t workspace_size(const Arguments& a) { return layout(a).bytes; }
  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<DpoLoss>(a, ws));
    const Layout l = layout(a);
    DeviceStatus* status = status_of(ws);
    TL_RETURN_IF_ERROR(begin_checks(status, a.seqs, stream));
    TL_RETURN_IF_ERROR(launch<detail::CheckPairsKernel>({a.chosen, a.rejected, a.pairs, a.seqs.num_seqs, status},
                                                        grid_for(a.pairs, detail::CheckPairsKernel::kThreads, 4),
                                                        stream));
    float* seq = a.seq_logprob ? a.seq_logprob : ws.at<float>(l.seq);
    float* pair_loss = ws.at<float>(l.pair_loss);
    float* dx = ws.at<float>(l.dx);
    TL_RETURN_IF_ERROR(launch<detail::SeqSumKernel>({a.logprob, a.seqs, seq, status},
                                                    grid_for(a.seqs.num_seqs, detail::SeqSumKernel::kThreads / 32, 8),
                                                    stream));
    TL_RETURN_IF_ERROR(launch<detail::PairKernel>({seq, a.ref_logprob, a.chosen, a.rejected, a.pairs, a.beta,
                                                   pair_loss, dx, a.chosen_reward, a.rejected_reward, status},
                                                  grid_for(a.pairs, detail::PairKernel::kThreads, 4), stream));
    TL_RETURN_IF_ERROR(launch<detail::MeanKernel>({pair_loss, a.pairs, a.loss, status}, dim3(1), stream));
    if (!a.grad_token_loss) return Status::ok();
    return launch<detail::DpoGradKernel>({a.chosen, a.rejected, dx, a.pairs, a.beta, a.seqs, a.grad_token_loss, status},
                                         grid_for(a.seqs.num_seqs, detail::DpoGradKernel::kThreads / 32, 8), stream);
  }
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    DeviceFailure f;
    TL_RETURN_IF_ERROR(read_device_status(status_of(ws), f, stream));
    if (f.check == 0) return Status::ok();
    if (f.check == kCheckBatch) return batch_failure(kName, a.seqs, f.index, stream, "seqs.cu_seqlens");
    if (f.check != detail::kCheckPairs) return Status::error(StatusCode::internal, "%s: unknown device check %d", kName, f.check);
    std::int32_t c = 0, r = 0;
    TL_CUDA_TRY(cudaMemcpyAsync(&c, a.chosen + f.index, sizeof c, cudaMemcpyDeviceToHost, stream));
    TL_CUDA_TRY(cudaMemcpyAsync(&r, a.rejected + f.index, sizeof r, cudaMemcpyDeviceToHost, stream));
    TL_CUDA_TRY(cudaStreamSynchronize(stream));
    char expected[96];
    std::snprintf(expected, sizeof expected, "two different sequences in [0, %lld) (nothing was written)",
                  static_cast<long long>(a.seqs.num_seqs));
    return device_failure(kName, StatusCode::invalid_argument, "chosen, rejected", expected,
                          "pair %lld: chosen %d, rejected %d", static_cast<long long>(f.index), c, r);
  }
};

}  // namespace tokenless::heads
