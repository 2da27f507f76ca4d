#pragma once
// The optimizer's semantics (host and device): PyTorch's AdamW, its
// gradient-norm clipping, the learning-rate schedules, and the state a
// training run keeps on the device.
//
// AdamW, as torch.optim.AdamW's single-tensor step (the same formulas in
// the same order; t counts the updates applied, from 1):
//   g  ← g · clip                        (clip_grad_norm_'s coefficient, below)
//   p  ← p · (1 − lr · wd)               (decoupled weight decay; wd 0 for a tensor not decayed)
//   m  ← lerp(m, g, 1 − β1)              (torch.lerp: m + w (g − m) for w < 0.5, else g − (g − m)(1 − w))
//   v  ← v · β2 + (1 − β2) · g · g
//   p  ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
// The scalars (1 − lr · wd, the step size, √(1 − β2ᵗ)) are computed in
// double and rounded to float, as Python computes them for torch. The
// moments are fp32; for bf16 or fp16 parameters an fp32 master copy is
// updated and rounded into the parameter (PyTorch's bf16 AdamW without a
// master copy rounds every operation instead).
//
// clip_grad_norm_(max_norm): n = ‖all gradients‖₂ (fp32), clip =
// min(1, max_norm / (n + 1e-6)); a step whose n is NaN or infinite is
// skipped: no parameter or moment changes, t does not advance, and the
// skip is counted.
//
// Parameter groups: a tensor is decayed or not (TensorRef::decay); the
// default, decayed_by_default(), decays matrices and leaves 1-D tensors
// (norm weights, biases) undecayed, as nanoGPT, BLT and most recipes do
// (torch.optim.AdamW itself decays whatever it is given).
#include <tokenless/core/config.hpp>
#include <tokenless/core/status.hpp>

#include <cmath>
#include <cstdint>

namespace tokenless::optim {

// Double, as Python's floats are: torch computes the bias corrections and
// 1 − β in double and rounds the results to float.
struct AdamWHyper {
  double lr = 1e-3;  // this step's (a schedule's value)
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;  // torch.optim.AdamW's default
  double max_norm = 0.0;       // clip_grad_norm_'s; 0: no clipping (the norm is still computed)
};

inline Status check_adamw(const AdamWHyper& h) {
  if (!(h.lr >= 0.0) || !std::isfinite(h.lr)) {
    return Status::argument(StatusCode::invalid_argument, "lr", "a finite value >= 0", "%g", h.lr);
  }
  if (!(h.beta1 >= 0.0 && h.beta1 < 1.0)) {
    return Status::argument(StatusCode::invalid_argument, "beta1", "a value in [0, 1)", "%g", h.beta1);
  }
  if (!(h.beta2 >= 0.0 && h.beta2 < 1.0)) {
    return Status::argument(StatusCode::invalid_argument, "beta2", "a value in [0, 1)", "%g", h.beta2);
  }
  if (!(h.eps > 0.0) || !std::isfinite(h.eps)) {
    return Status::argument(StatusCode::invalid_argument, "eps", "a finite value > 0", "%g", h.eps);
  }
  if (!(h.weight_decay >= 0.0) || !std::isfinite(h.weight_decay)) {
    return Status::argument(StatusCode::invalid_argument, "weight_decay", "a finite value >= 0", "%g",
                            h.weight_decay);
  }
  if (!(h.max_norm >= 0.0) || !std::isfinite(h.max_norm)) {
    return Status::argument(StatusCode::invalid_argument, "max_norm", "a finite value >= 0 (0: no clipping)", "%g",
                            h.max_norm);
  }
  return Status::ok();
}

inline constexpr bool decayed_by_default(int dims) { return dims >= 2; }

// What a run keeps on the device between steps (zeroed by reset): the
// updates applied (t), the steps skipped on a non-finite norm, and the last
// step's norm (before clipping) and what it did.
struct State {
  std::int64_t step;     // t: updates applied
  std::int64_t skipped;  // steps skipped (a NaN or infinite gradient norm)
  float grad_norm;       // the last step's ‖g‖₂, before clipping
  float clip;            // its clipping coefficient (1: none)
  // The last step's scalars, rounded to float (PrepareKernel's).
  float decay;           // 1 − lr · wd
  float step_size;       // lr / (1 − β1ᵗ)
  float bc2_sqrt;        // √(1 − β2ᵗ)
  int skip;              // 1: this step changes nothing
};

// ------------------------------------------------------------------ schedules
// The learning rate of step s (0-based), as the trainer applies it:
//   constant: lr;
//   cosine:   linear warmup lr · (s + 1) / warmup for s < warmup, then
//             min_lr + (lr − min_lr) · (1 + cos(π · min(1, (s − warmup) / (total − warmup)))) / 2
//             (BLT's schedule: warmup, then a cosine decay to a floor).
struct Schedule {
  enum class Kind { constant, cosine };
  Kind kind = Kind::constant;
  double lr = 1e-3;
  int warmup = 0;
  int total = 1;  // steps of the run (cosine)
  double min_lr = 0.0;

  double at(std::int64_t s) const {
    if (kind == Kind::constant) return lr;
    if (s < warmup) return lr * double(s + 1) / double(warmup);
    const double span = total > warmup ? double(total - warmup) : 1.0;
    const double x = std::fmin(1.0, double(s - warmup) / span);
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + std::cos(3.14159265358979323846 * x));
  }
};

inline Status check_schedule(const Schedule& s) {
  if (!(s.lr >= 0.0) || !std::isfinite(s.lr)) {
    return Status::argument(StatusCode::invalid_argument, "lr", "a finite value >= 0", "%g", s.lr);
  }
  if (s.warmup < 0) return Status::argument(StatusCode::invalid_argument, "warmup", "steps >= 0", "%d", s.warmup);
  if (s.kind == Schedule::Kind::cosine) {
    if (s.total < 1) return Status::argument(StatusCode::invalid_argument, "total", "steps >= 1", "%d", s.total);
    if (!(s.min_lr >= 0.0 && s.min_lr <= s.lr)) {
      return Status::argument(StatusCode::invalid_argument, "min_lr", "a value in [0, lr]", "%g", s.min_lr);
    }
  }
  return Status::ok();
}

// ------------------------------------------------------------------ tuning (values, not semantics)
// The multi-tensor apply (optim/multi_tensor.hpp) cuts every tensor into
// chunks of kChunk elements, one table for all: a step is three launches
// whatever the tensor count. A block takes a chunk at a time (256 threads,
// 16 elements each); the grid is capped at blocks_per_sm blocks an SM.
// kChunk fixes the norm's summation order, so it is a constant, not a
// tuning (apex's and PyTorch's fused Adam use 65,536 elements over 512
// threads; smaller chunks balance a model's many small tensors better).
inline constexpr int kChunk = 4096;
struct Tuning {
  int blocks_per_sm;
  friend constexpr bool operator==(const Tuning&, const Tuning&) = default;
};
inline constexpr Tuning kTuningSm80{8};  // untuned
inline constexpr Tuning kTuningSm90{8};  // untuned
constexpr Tuning tuning_for(int cc) { return cc >= 90 ? kTuningSm90 : kTuningSm80; }

}  // namespace tokenless::optim
