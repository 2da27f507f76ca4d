#pragma once
// The trainer's batches, fixed so that anyone can reproduce them
// (docs/training.md): with data ids x[0..n), batch size B, length L and A
// micro-batches a step, row r of step s, micro-batch m, is the L + 1 ids
// starting at ((s·A + m)·B + r)·L, wrapping around the data's end. The model
// reads the first L and predicts the next L.
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

}  // namespace tokenless::models
