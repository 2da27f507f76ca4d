#pragma once
// The trainer's batches, fixed so that anyone can reproduce them
// (docs/training.md): with data ids x[0..n), batch size B, length L and A
// micro-batches a step, row r of step s, micro-batch m, is the L + 1 ids
// starting at ((s·A + m)·B + r)·L, wrapping around the data's end. The model
// reads the first L and predicts the next L.
#include <tokenless/core/status.hpp>
#include <tokenless/io/model_weights.hpp>
#include <tokenless/optim/host.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace tokenless::models {

// One micro-batch's loss (the host path's and the kernels').
struct TrainLoss {
  double cross_entropy = 0;  // mean over the micro-batch's predictions
  double aux = 0;            // the load-balancing loss (before its coefficient); 0 without one
  double total = 0;          // cross_entropy + coefficient × aux
};

// One optimizer step's results.
struct TrainStep {
  double loss = 0;         // the mean of the micro-batches' losses, before the update
  float grad_norm = 0;     // before clipping
  bool skipped = false;    // a non-finite norm: weights and moments untouched
  std::vector<TrainLoss> micro;
};

// rows[B × (L + 1)] of micro-batch m of step s. The data must hold at least
// L + 1 ids (the trainer refuses less, by name, before its first step).
inline void train_rows(const std::vector<std::int32_t>& data, std::int64_t step, int micro, int B, int L, int A,
                       std::vector<std::int32_t>& rows) {
  const auto n = static_cast<std::int64_t>(data.size());
  rows.resize(static_cast<std::size_t>(B) * (L + 1));
  for (int r = 0; r < B; ++r) {
    const std::int64_t start = ((step * A + micro) * B + r) * static_cast<std::int64_t>(L) % n;
    for (int i = 0; i <= L; ++i) rows[static_cast<std::size_t>(r) * (L + 1) + i] = data[(start + i) % n];
  }
}

// The host optimizer's tensors: each view with its gradient's, matrices
// decayed and 1-D tensors not (optim::decayed_by_default).
inline std::vector<optim::HostTensor> host_tensors(const std::vector<io::ParamView>& w,
                                                   const std::vector<io::ParamView>& g) {
  std::vector<optim::HostTensor> t;
  for (std::size_t i = 0; i < w.size(); ++i) {
    t.push_back({w[i].data, g[i].data, w[i].numel(), optim::decayed_by_default(static_cast<int>(w[i].shape.size()))});
  }
  return t;
}

// A host trainer's step s (LlamaHostTraining's and BltHostTraining's): the
// gradients zeroed, the A micro-batches' gradients summed (each scaled by
// 1 / A: micro(rows, scale, &loss) adds its own), then one AdamW step at h.
template <class Micro>
Status host_train_step(const char* who, optim::HostAdamW& opt, const std::vector<io::ParamView>& grads,
                       const std::vector<std::int32_t>& data, std::int64_t s, int B, int L, int A,
                       const optim::AdamWHyper& h, std::vector<std::int32_t>& rows, Micro&& micro, TrainStep* out) {
  if (A <= 0) return Status::error(StatusCode::invalid_argument, "%s: grad_accum %d is not positive", who, A);
  if (static_cast<std::int64_t>(data.size()) < std::int64_t(L) + 1) {
    return Status::error(StatusCode::invalid_argument, "%s: %zu ids, fewer than seq_len + 1 = %d", who, data.size(), L + 1);
  }
  TL_RETURN_IF_ERROR(optim::check_adamw(h));
  for (const auto& v : grads) std::fill(v.data, v.data + v.numel(), 0.0f);
  TrainStep r;
  for (int m = 0; m < A; ++m) {
    train_rows(data, s, m, B, L, A, rows);
    TrainLoss l;
    TL_RETURN_IF_ERROR(micro(rows.data(), 1.0f / static_cast<float>(A), &l));
    r.loss += l.total / A;
    r.micro.push_back(l);
  }
  const std::int64_t skipped = opt.state().skipped;
  TL_RETURN_IF_ERROR(opt.step(h, &r.grad_norm));
  r.skipped = opt.state().skipped != skipped;
  if (out) *out = std::move(r);
  return Status::ok();
}

}  // namespace tokenless::models
