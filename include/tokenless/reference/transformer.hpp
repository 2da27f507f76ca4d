#pragma once
// The plain C++ decoder of the runner's `--device cpu`: a Llama-style
// pre-norm transformer (RMSNorm, RoPE in transformers' half layout, causal
// GQA attention with an optional sliding window, SwiGLU or Mixtral's MoE)
// over io::ModelWeights, with a KV cache. Arithmetic in R (float: the
// runner; double: the tests' truth); `round` is applied wherever
// transformers stores a tensor in the model's dtype (identity for fp32, bf16
// rounding for a bf16 run), so that a bf16 run rounds where the original does.
//
//   HostDecoder d(weights, round);        // HostDecoderT<float>
//   auto logits = d.forward(prompt);      // [n, vocab], appends to the cache
//   auto next = d.forward({id});          // one decode step
//   d.reset();                            // an empty cache
#include <tokenless/blocks/policy.hpp>
#include <tokenless/io/model_weights.hpp>
#include <tokenless/reference/blocks.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

namespace tokenless::reference {

template <class R>
class HostDecoderT {
 public:
  HostDecoderT(const io::ModelWeights<float>& w, std::function<R(R)> round)
      : w_(w), c_(w.config), round_(std::move(round)), inv_freq_(static_cast<std::size_t>(c_.rot_dim / 2)),
        k_cache_(static_cast<std::size_t>(c_.layers)), v_cache_(static_cast<std::size_t>(c_.layers)) {
    (void)tokenless::blocks::rope_inv_freq(c_.rope, c_.rot_dim, inv_freq_.data());  // the config was validated on load
  }

  void reset() {
    for (auto& k : k_cache_) k.clear();
    for (auto& v : v_cache_) v.clear();
    length_ = 0;
  }
  std::int64_t length() const { return length_; }
  // Keeps every layer's router logits (Mixtral), [layers · tokens, experts]
  // in layer order, for the load-balancing loss.
  void record_router_logits(bool on) { record_ = on; }
  const std::vector<R>& router_logits() const { return router_logits_; }

  // The logits [ids.size(), vocab] of `ids`, which continue the cache.
  std::vector<R> forward(const std::vector<std::int32_t>& ids) {
    const int D = c_.hidden;
    const auto n = static_cast<std::int64_t>(ids.size());
    std::vector<R> x(static_cast<std::size_t>(n * D));
    for (std::int64_t t = 0; t < n; ++t) {
      std::copy_n(w_.embed.begin() + static_cast<std::ptrdiff_t>(ids[t]) * D, D, x.begin() + t * D);
    }
    router_logits_.clear();
    for (int l = 0; l < c_.layers; ++l) layer(l, x, n);
    std::vector<R> logits(static_cast<std::size_t>(n * c_.vocab));
    for (std::int64_t t = 0; t < n; ++t) {
      const std::vector<R> h = norm(x.data() + t * D, w_.norm);
      matvec(w_.lm_head, h.data(), c_.vocab, D, logits.data() + t * c_.vocab, /*round=*/false);
    }
    length_ += n;
    return logits;
  }

 private:
  // y = W x, W [rows, cols]; rounded as a stored projection when asked.
  void matvec(const std::vector<float>& W, const R* x, int rows, int cols, R* y, bool round = true,
              std::size_t offset = 0) const {
    for (int r = 0; r < rows; ++r) {
      R acc = 0;
      const float* wr = W.data() + offset + static_cast<std::size_t>(r) * cols;
      for (int i = 0; i < cols; ++i) acc += wr[i] * x[i];
      y[r] = round ? round_(acc) : acc;
    }
  }
  // transformers' LlamaRMSNorm: fp32 statistics, the normalised row cast to
  // the dtype, then the weight.
  std::vector<R> norm(const R* x, const std::vector<float>& weight) const {
    const int D = c_.hidden;
    R ss = 0;
    for (int i = 0; i < D; ++i) ss += x[i] * x[i];
    const R inv = R(1) / std::sqrt(ss / static_cast<R>(D) + static_cast<R>(c_.rms_eps));
    std::vector<R> y(static_cast<std::size_t>(D));
    for (int i = 0; i < D; ++i) y[i] = round_(weight[i] * round_(x[i] * inv));
    return y;
  }
  void rope(R* head, std::int64_t pos) const {
    const int half = c_.rot_dim / 2;
    for (int i = 0; i < half; ++i) {
      const float angle = static_cast<float>(pos) * inv_freq_[i];  // the fp32 angle, as transformers'
      const R cs = std::cos(static_cast<R>(angle)), sn = std::sin(static_cast<R>(angle));
      const R a = head[i], b = head[i + half];
      head[i] = round_(a * cs - b * sn);
      head[i + half] = round_(a * sn + b * cs);
    }
  }

  void layer(int l, std::vector<R>& x, std::int64_t n) {
    const int D = c_.hidden, hd = c_.head_dim, H = c_.heads, KV = c_.kv_heads, group = H / KV;
    const auto& w = w_.layers[static_cast<std::size_t>(l)];
    auto& kc = k_cache_[static_cast<std::size_t>(l)];
    auto& vc = v_cache_[static_cast<std::size_t>(l)];
    std::vector<R> attn(static_cast<std::size_t>(n * c_.q_dim()));
    std::vector<R> qkv(static_cast<std::size_t>(c_.qkv_dim()));
    std::vector<std::vector<R>> queries(static_cast<std::size_t>(n));
    // Projections and RoPE for every new token, the cache extended.
    for (std::int64_t t = 0; t < n; ++t) {
      const std::vector<R> h = norm(x.data() + t * D, w.attn_norm);
      matvec(w.wqkv, h.data(), c_.qkv_dim(), D, qkv.data());
      const std::int64_t pos = length_ + t;
      for (int h2 = 0; h2 < H + KV; ++h2) rope(qkv.data() + h2 * hd, pos);
      queries[t].assign(qkv.begin(), qkv.begin() + c_.q_dim());
      kc.insert(kc.end(), qkv.begin() + c_.q_dim(), qkv.begin() + c_.q_dim() + c_.kv_dim());
      vc.insert(vc.end(), qkv.begin() + c_.q_dim() + c_.kv_dim(), qkv.end());
    }
    // Causal attention over the cache (a sliding window: keys j > i - window).
    const R scale = static_cast<R>(static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd))));  // head_dim**-0.5 as fp32
    for (std::int64_t t = 0; t < n; ++t) {
      const std::int64_t i = length_ + t;
      const std::int64_t lo = c_.sliding_window > 0 ? std::max<std::int64_t>(0, i - c_.sliding_window + 1) : 0;
      for (int h2 = 0; h2 < H; ++h2) {
        const int kvh = h2 / group;
        const R* q = queries[t].data() + h2 * hd;
        std::vector<R> s(static_cast<std::size_t>(i - lo + 1));
        R mx = -INFINITY;
        for (std::int64_t j = lo; j <= i; ++j) {
          const R* k = kc.data() + (j * KV + kvh) * hd;
          R dot = 0;
          for (int e = 0; e < hd; ++e) dot += q[e] * k[e];
          s[j - lo] = dot * scale;
          mx = std::max(mx, s[j - lo]);
        }
        R sum = 0;
        for (auto& v : s) sum += v = std::exp(v - mx);
        R* o = attn.data() + t * c_.q_dim() + h2 * hd;
        for (int e = 0; e < hd; ++e) {
          R acc = 0;
          for (std::int64_t j = lo; j <= i; ++j) acc += s[j - lo] * vc[(j * KV + kvh) * hd + e];
          o[e] = round_(acc / sum);
        }
      }
    }
    // The output projection and the residual, then the MLP.
    std::vector<R> o(static_cast<std::size_t>(D));
    for (std::int64_t t = 0; t < n; ++t) {
      matvec(w.wo, attn.data() + t * c_.q_dim(), D, c_.q_dim(), o.data());
      for (int i = 0; i < D; ++i) x[t * D + i] = round_(x[t * D + i] + o[i]);
      const std::vector<R> h = norm(x.data() + t * D, w.mlp_norm);
      const std::vector<R> m = c_.experts ? moe(w, h) : mlp(w, h, 0, 0);
      for (int i = 0; i < D; ++i) x[t * D + i] = round_(x[t * D + i] + m[i]);
    }
  }

  std::vector<R> mlp(const io::LayerWeights<float>& w, const std::vector<R>& h, std::size_t gu_offset,
                     std::size_t down_offset) const {
    const int D = c_.hidden, F = c_.intermediate;
    std::vector<R> gu(static_cast<std::size_t>(2 * F)), a(static_cast<std::size_t>(F)), y(static_cast<std::size_t>(D));
    matvec(w.w_gate_up, h.data(), 2 * F, D, gu.data(), true, gu_offset);
    for (int i = 0; i < F; ++i) a[i] = round_(round_(blocks::silu(gu[i])) * gu[F + i]);
    matvec(w.w_down, a.data(), D, F, y.data(), true, down_offset);
    return y;
  }
  // Mixtral: the router's logits in the dtype, softmax in fp32, the top k
  // renormalised, each expert's output weighted and summed.
  std::vector<R> moe(const io::LayerWeights<float>& w, const std::vector<R>& h) {
    const int D = c_.hidden, F = c_.intermediate, E = c_.experts;
    std::vector<R> logits(static_cast<std::size_t>(E));
    matvec(w.router, h.data(), E, D, logits.data());
    if (record_) router_logits_.insert(router_logits_.end(), logits.begin(), logits.end());
    std::vector<int> expert;
    std::vector<R> weight;
    blocks::moe_route<R>(logits, 1, E, c_.top_k, true, expert, weight);
    std::vector<R> out(static_cast<std::size_t>(D), R(0));
    for (int s = 0; s < c_.top_k; ++s) {
      const auto e = static_cast<std::size_t>(expert[s]);
      const std::vector<R> y = mlp(w, h, e * 2 * F * D, e * D * F);
      for (int i = 0; i < D; ++i) out[i] += round_(weight[s] * y[i]);
    }
    for (auto& v : out) v = round_(v);
    return out;
  }

  const io::ModelWeights<float>& w_;
  const io::ModelConfig& c_;
  std::function<R(R)> round_;
  std::vector<float> inv_freq_;
  std::vector<std::vector<R>> k_cache_, v_cache_;
  std::int64_t length_ = 0;
  bool record_ = false;
  std::vector<R> router_logits_;
};

using HostDecoder = HostDecoderT<float>;

}  // namespace tokenless::reference
