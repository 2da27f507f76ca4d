#pragma once
// The Llama family on the host, fast: tokenless-run's `--device cpu` (and
// `auto` without a GPU). The same arithmetic as the plain reference decoder
// (reference/transformer.hpp: transformers' order of operations, a bf16 run
// rounding wherever transformers stores a tensor), but every projection is a
// matrix product over all the step's tokens (host_blas.hpp: OpenBLAS's sgemm,
// or sgemv for one token) and attention, norms and RoPE are split over the
// machine's threads (attention too: models/host_attention.hpp). fp32 arithmetic; results differ from the reference only
// by summation order.
//
//   models::LlamaHost m(weights, /*bf16=*/false);
//   std::vector<float> logits = m.forward(prompt);     // [n, vocab]; the cache grows
//   logits = m.forward({next}, /*last_only=*/true);    // a decode step, [1, vocab]
#include <tokenless/blocks/policy.hpp>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/host_blas.hpp>
#include <tokenless/io/model_weights.hpp>
#include <tokenless/models/host_attention.hpp>
#include <tokenless/reference/blocks.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace tokenless::models {

class LlamaHost {
 public:
  // bf16: round as a bf16 run of transformers stores (the weights must be
  // bf16-rounded already, as the runner does).
  LlamaHost(const io::ModelWeights<float>& w, bool bf16)
      : w_(w), c_(w.config), bf16_(bf16), k_(static_cast<std::size_t>(c_.layers)), v_(k_.size()) {
    std::vector<float> inv(static_cast<std::size_t>(c_.rot_dim / 2));
    (void)blocks::rope_inv_freq(c_.rope, c_.rot_dim, inv.data());  // the config was validated on load
    inv_freq_ = std::move(inv);
  }

  void reset() {
    for (auto& k : k_) k.clear();
    for (auto& v : v_) v.clear();
    length_ = 0;
  }
  std::int64_t length() const { return length_; }

  // The logits of `ids` (which continue the cache): [n, vocab], or only the
  // last row's [1, vocab] with last_only.
  std::vector<float> forward(const std::vector<std::int32_t>& ids, bool last_only = false) {
    const int D = c_.hidden;
    const auto n = static_cast<std::int64_t>(ids.size());
    x_.resize(static_cast<std::size_t>(n * D));
    for (std::int64_t t = 0; t < n; ++t) {
      std::copy_n(w_.embed.begin() + static_cast<std::ptrdiff_t>(ids[t]) * D, D, x_.begin() + t * D);
    }
    for (int l = 0; l < c_.layers; ++l) layer(l, n);
    const std::int64_t first = last_only ? n - 1 : 0, rows = n - first;
    norm_rows(x_.data() + first * D, rows, w_.norm, h_);
    std::vector<float> logits(static_cast<std::size_t>(rows * c_.vocab));
    host::gemm_nt(rows, c_.vocab, D, h_.data(), D, w_.lm_head.data(), D, logits.data(), c_.vocab);
    length_ += n;
    return logits;
  }

 private:
  float rnd(float v) const { return bf16_ ? round_trip<__nv_bfloat16>(v) : v; }
  void rnd(std::vector<float>& v) const {
    if (bf16_) for (auto& e : v) e = round_trip<__nv_bfloat16>(e);
  }
  static host::ThreadPool& pool() { return host::pool(); }

  // transformers' LlamaRMSNorm, a row a thread: fp32 statistics, the
  // normalised row cast to the dtype, then the weight.
  void norm_rows(const float* x, std::int64_t rows, const std::vector<float>& weight, std::vector<float>& y) const {
    const int D = c_.hidden;
    y.resize(static_cast<std::size_t>(rows * D));
    pool().parallel_for(rows, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t t = lo; t < hi; ++t) {
        const float* xr = x + t * D;
        float ss = 0;
        for (int i = 0; i < D; ++i) ss += xr[i] * xr[i];
        const float inv = 1.0f / std::sqrt(ss / static_cast<float>(D) + c_.rms_eps);
        float* yr = y.data() + t * D;
        for (int i = 0; i < D; ++i) yr[i] = rnd(weight[i] * rnd(xr[i] * inv));
      }
    });
  }

  void layer(int l, std::int64_t n) {
    const int D = c_.hidden, hd = c_.head_dim, H = c_.heads, KV = c_.kv_heads;
    const int qd = c_.q_dim(), kvd = c_.kv_dim(), qkvd = c_.qkv_dim();
    const auto& w = w_.layers[static_cast<std::size_t>(l)];
    auto& kc = k_[static_cast<std::size_t>(l)];
    auto& vc = v_[static_cast<std::size_t>(l)];
    norm_rows(x_.data(), n, w.attn_norm, h_);
    qkv_.resize(static_cast<std::size_t>(n * qkvd));
    host::gemm_nt(n, qkvd, D, h_.data(), D, w.wqkv.data(), D, qkv_.data(), qkvd);
    rnd(qkv_);
    // RoPE on q and k (transformers' half layout, the fp32 angle), then the
    // cache extended by the new keys and values.
    const int half = c_.rot_dim / 2;
    pool().parallel_for(n, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t t = lo; t < hi; ++t) {
        const auto pos = static_cast<float>(length_ + t);
        for (int i = 0; i < half; ++i) {
          const float angle = pos * inv_freq_[i];
          const float cs = std::cos(angle), sn = std::sin(angle);
          for (int h2 = 0; h2 < H + KV; ++h2) {
            float* head = qkv_.data() + t * qkvd + h2 * hd;
            const float a = head[i], b = head[i + half];
            head[i] = rnd(a * cs - b * sn);
            head[i + half] = rnd(a * sn + b * cs);
          }
        }
      }
    });
    const std::int64_t len = length_ + n;
    kc.resize(static_cast<std::size_t>(len * kvd));
    vc.resize(kc.size());
    for (std::int64_t t = 0; t < n; ++t) {
      const float* row = qkv_.data() + t * qkvd;
      std::copy_n(row + qd, kvd, kc.begin() + (length_ + t) * kvd);
      std::copy_n(row + qd + kvd, kvd, vc.begin() + (length_ + t) * kvd);
    }
    // Causal attention over the cache (a sliding window: keys j > i - window),
    // as matrix products (host_attention.hpp), the output rounded as stored.
    attn_.resize(static_cast<std::size_t>(n * qd));
    const std::int64_t base = length_, window = c_.sliding_window;
    host_attend(qkv_.data(), qkvd, kc.data(), vc.data(), kvd, n, len, H, KV, hd,
                [&](std::int64_t t) {
                  const std::int64_t i = base + t;
                  return std::pair<std::int64_t, std::int64_t>{window > 0 ? std::max<std::int64_t>(0, i - window + 1) : 0,
                                                               i + 1};
                },
                attn_.data(), qd);
    rnd(attn_);
    // The output projection and the residual, then the MLP.
    tmp_.resize(static_cast<std::size_t>(n * D));
    host::gemm_nt(n, D, qd, attn_.data(), qd, w.wo.data(), qd, tmp_.data(), D);
    for (std::size_t i = 0; i < tmp_.size(); ++i) x_[i] = rnd(x_[i] + rnd(tmp_[i]));
    norm_rows(x_.data(), n, w.mlp_norm, h_);
    if (c_.experts) {
      moe(w, n);
    } else {
      mlp(w, h_.data(), n, 0, 0, tmp_.data());
    }
    for (std::size_t i = 0; i < tmp_.size(); ++i) x_[i] = rnd(x_[i] + tmp_[i]);
  }

  // y[rows, D] = down(silu(gate(h)) · up(h)), rounded as stored.
  void mlp(const io::LayerWeights<float>& w, const float* h, std::int64_t rows, std::size_t gu_offset,
           std::size_t down_offset, float* y) {
    const int D = c_.hidden, F = c_.intermediate;
    gu_.resize(static_cast<std::size_t>(rows * 2 * F));
    act_.resize(static_cast<std::size_t>(rows * F));
    host::gemm_nt(rows, 2 * F, D, h, D, w.w_gate_up.data() + gu_offset, D, gu_.data(), 2 * F);
    pool().parallel_for(rows, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t t = lo; t < hi; ++t) {
        const float* g = gu_.data() + t * 2 * F;
        float* a = act_.data() + t * F;
        for (int i = 0; i < F; ++i) a[i] = rnd(rnd(reference::blocks::silu(rnd(g[i]))) * rnd(g[F + i]));
      }
    });
    host::gemm_nt(rows, D, F, act_.data(), F, w.w_down.data() + down_offset, F, y, D);
    if (bf16_) for (std::int64_t i = 0; i < rows * D; ++i) y[i] = rnd(y[i]);
  }

  // Mixtral: the router's logits in the dtype, softmax in fp32, the top k
  // renormalised; each expert runs once over the tokens routed to it, and
  // every token's outputs are combined in its slot order, as the reference.
  void moe(const io::LayerWeights<float>& w, std::int64_t n) {
    const int D = c_.hidden, F = c_.intermediate, E = c_.experts, K = c_.top_k;
    std::vector<float> logits(static_cast<std::size_t>(n * E));
    host::gemm_nt(n, E, D, h_.data(), D, w.router.data(), D, logits.data(), E);
    rnd(logits);
    std::vector<int> expert;
    std::vector<float> weight;
    reference::blocks::moe_route<float>(logits, n, E, K, true, expert, weight);
    std::vector<float> slot_out(static_cast<std::size_t>(n * K * D));
    std::vector<float> xs, ys;
    std::vector<std::int64_t> rows;
    for (int e = 0; e < E; ++e) {
      rows.clear();
      for (std::int64_t r = 0; r < n * K; ++r) {
        if (expert[static_cast<std::size_t>(r)] == e) rows.push_back(r);
      }
      if (rows.empty()) continue;
      const auto m = static_cast<std::int64_t>(rows.size());
      xs.resize(static_cast<std::size_t>(m * D));
      ys.resize(xs.size());
      for (std::int64_t i = 0; i < m; ++i) std::copy_n(h_.data() + (rows[i] / K) * D, D, xs.data() + i * D);
      mlp(w, xs.data(), m, static_cast<std::size_t>(e) * 2 * F * D, static_cast<std::size_t>(e) * D * F, ys.data());
      for (std::int64_t i = 0; i < m; ++i) std::copy_n(ys.data() + i * D, D, slot_out.data() + rows[i] * D);
    }
    tmp_.assign(static_cast<std::size_t>(n * D), 0.0f);
    for (std::int64_t t = 0; t < n; ++t) {
      for (int s = 0; s < K; ++s) {
        const float wt = weight[static_cast<std::size_t>(t * K + s)];
        const float* y = slot_out.data() + (t * K + s) * D;
        for (int i = 0; i < D; ++i) tmp_[t * D + i] += rnd(wt * y[i]);
      }
      for (int i = 0; i < D; ++i) tmp_[t * D + i] = rnd(tmp_[t * D + i]);
    }
  }

  const io::ModelWeights<float>& w_;
  const io::ModelConfig& c_;
  bool bf16_;
  std::vector<float> inv_freq_;
  std::vector<std::vector<float>> k_, v_;  // per layer [positions, kv_dim]
  std::int64_t length_ = 0;
  std::vector<float> x_, h_, qkv_, attn_, tmp_, gu_, act_;  // scratch, reused across steps
};

}  // namespace tokenless::models
