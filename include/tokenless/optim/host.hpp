#pragma once
// AdamW on the host path (`--device cpu` training; optim/policy.hpp's
// semantics, the kernels' arithmetic): fp32 parameters and gradients in host
// memory, the moments its own, the work split over the pool's threads by
// chunks of kChunk elements. The norm sums each chunk, then the chunks in
// order, so a step is the same bits whatever the thread count.
//
//   optim::HostAdamW opt;
//   TL_RETURN_IF_ERROR(opt.init({{w.data(), g.data(), n, true}, ...}));
//   TL_RETURN_IF_ERROR(opt.step(hyper));   // after each backward
#include <tokenless/core/status.hpp>
#include <tokenless/core/host_blas.hpp>  // host::pool()
#include <tokenless/optim/policy.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace tokenless::optim {

struct HostTensor {
  float* param = nullptr;
  const float* grad = nullptr;
  std::int64_t numel = 0;
  bool decay = true;
};

class HostAdamW {
 public:
  Status init(const std::vector<HostTensor>& tensors) {
    if (tensors.empty()) return Status::argument(StatusCode::invalid_argument, "tensors", "at least one", "none");
    t_ = tensors;
    chunks_.clear();
    std::int64_t offset = 0;
    offsets_.clear();
    for (std::size_t i = 0; i < t_.size(); ++i) {
      if (!t_[i].param || !t_[i].grad) {
        return Status::error(StatusCode::null_pointer, "optim::HostAdamW: tensor %zu has a null %s", i,
                             t_[i].param ? "grad" : "param");
      }
      if (t_[i].numel <= 0) {
        return Status::error(StatusCode::invalid_argument, "optim::HostAdamW: tensor %zu has %lld elements", i,
                             static_cast<long long>(t_[i].numel));
      }
      offsets_.push_back(offset);
      for (std::int64_t s = 0; s < t_[i].numel; s += kChunk) chunks_.push_back({i, s});
      offset += t_[i].numel;
    }
    m_.assign(static_cast<std::size_t>(offset), 0.0f);
    v_.assign(m_.size(), 0.0f);
    state_ = State{0, 0, 0.0f, 1.0f, 1.0f, 0.0f, 1.0f, 1};
    return Status::ok();
  }

  // One step with the gradients as they are now; the norm (before clipping)
  // in *norm_out. A non-finite norm skips the step (counted in state()).
  Status step(const AdamWHyper& h, float* norm_out = nullptr) {
    TL_RETURN_IF_ERROR(check_adamw(h));
    if (t_.empty()) return Status::argument(StatusCode::invalid_argument, "init", "tensors first", "none");
    const auto C = static_cast<std::int64_t>(chunks_.size());
    partial_.assign(static_cast<std::size_t>(C), 0.0);
    host::pool().parallel_for(C, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t c = lo; c < hi; ++c) {
        const auto [i, s] = chunks_[static_cast<std::size_t>(c)];
        const HostTensor& t = t_[i];
        const std::int64_t end = std::min<std::int64_t>(t.numel, s + kChunk);
        double sq = 0;
        for (std::int64_t e = s; e < end; ++e) sq += double(t.grad[e]) * double(t.grad[e]);
        partial_[static_cast<std::size_t>(c)] = sq;
      }
    });
    double sq = 0;
    for (double p : partial_) sq += p;
    const auto norm = static_cast<float>(std::sqrt(sq));
    if (norm_out) *norm_out = norm;
    state_.grad_norm = norm;
    if (!std::isfinite(norm)) {
      state_.skip = 1;
      ++state_.skipped;
      state_.clip = 1.0f;
      return Status::ok();
    }
    state_.skip = 0;
    state_.clip = h.max_norm > 0 ? std::fmin(static_cast<float>(h.max_norm) / (norm + 1e-6f), 1.0f) : 1.0f;
    ++state_.step;
    const double tt = static_cast<double>(state_.step);
    state_.decay = static_cast<float>(1.0 - h.lr * h.weight_decay);
    state_.step_size = static_cast<float>(h.lr / (1.0 - std::pow(h.beta1, tt)));
    state_.bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(h.beta2, tt)));
    const float clip = state_.clip, decay = state_.decay, step = -state_.step_size, bc2 = state_.bc2_sqrt;
    const auto w1 = static_cast<float>(1.0 - h.beta1), w2 = static_cast<float>(1.0 - h.beta2);
    const auto b2 = static_cast<float>(h.beta2), eps = static_cast<float>(h.eps);
    const bool clipping = h.max_norm > 0;
    host::pool().parallel_for(C, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t c = lo; c < hi; ++c) {
        const auto [i, s] = chunks_[static_cast<std::size_t>(c)];
        const HostTensor& t = t_[i];
        const std::int64_t end = std::min<std::int64_t>(t.numel, s + kChunk), off = offsets_[i];
        for (std::int64_t e = s; e < end; ++e) {
          float g = t.grad[e];
          if (clipping) g = g * clip;
          float p = t.param[e];
          if (t.decay) p = p * decay;
          float& mr = m_[static_cast<std::size_t>(off + e)];
          float& vr = v_[static_cast<std::size_t>(off + e)];
          const float d = g - mr;
          const float m = w1 < 0.5f ? mr + w1 * d : g - d * (1.0f - w1);  // torch.lerp
          const float v = vr * b2 + w2 * g * g;
          p = p + step * (m / (std::sqrt(v) / bc2 + eps));
          mr = m;
          vr = v;
          t.param[e] = p;
        }
      }
    });
    return Status::ok();
  }

  const State& state() const { return state_; }
  // The moments (flat, tensor i's from offset(i)): a checkpoint's optimizer state.
  std::vector<float>& m() { return m_; }
  std::vector<float>& v() { return v_; }
  std::int64_t offset(std::size_t i) const { return offsets_[i]; }
  State& mutable_state() { return state_; }  // --resume

 private:
  std::vector<HostTensor> t_;
  std::vector<std::pair<std::size_t, std::int64_t>> chunks_;
  std::vector<std::int64_t> offsets_;
  std::vector<float> m_, v_;
  std::vector<double> partial_;
  State state_{0, 0, 0.0f, 1.0f, 1.0f, 0.0f, 1.0f, 1};
};

}  // namespace tokenless::optim
