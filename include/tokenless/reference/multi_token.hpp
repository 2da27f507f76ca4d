#pragma once
// Host reference of heads::MultiTokenHeads (Meta's parallel multi-token
// heads) in double, composed from the decoder layer's, the norms' and the
// linear cross-entropy's references. `round` is where the kernels store in
// their type (identity: the truth).
#include <tokenless/reference/blocks.hpp>
#include <tokenless/reference/decoder.hpp>
#include <tokenless/reference/heads.hpp>

#include <cstdint>
#include <vector>

namespace tokenless::reference::multi_token {

using decoder::Round;
using decoder::Vec;

struct Result {
  double loss = 0;
  std::vector<double> head_loss;
  Vec grad_z, grad_norm, grad_lm_head;
  std::vector<decoder::Grads> head_grads;
};

// Head `ahead`'s targets: the token `ahead` on within the sequence, else ignore.
inline std::vector<std::int32_t> shifted_labels(const std::vector<std::int32_t>& tokens,
                                                const std::vector<std::int32_t>& cu, int ahead, std::int32_t ignore) {
  std::vector<std::int32_t> y(tokens.size(), ignore);
  for (std::size_t s = 0; s + 1 < cu.size(); ++s) {
    for (std::int32_t t = cu[s]; t + ahead < cu[s + 1]; ++t) y[t] = tokens[t + ahead];
  }
  return y;
}

// L = (1/n) Σ_i CE_i(lm_head(norm(block_i(z))), tokens shifted by i + 1) and its gradients.
inline Result multi_token_heads(const decoder::Shape& s, const std::vector<decoder::Weights>& heads,
                                const std::vector<float>& inv_freq, const Vec& z, const std::vector<std::int32_t>& tokens,
                                const Vec& norm, const Vec& lm_head, std::int64_t vocab,
                                const tokenless::heads::CrossEntropyOptions& o, const Round& round) {
  const std::int64_t n = s.tokens();
  const int d = s.hidden;
  const auto nh = static_cast<int>(heads.size());
  Result r;
  r.grad_z.assign(static_cast<std::size_t>(n * d), 0.0);
  r.grad_norm.assign(static_cast<std::size_t>(d), 0.0);
  r.grad_lm_head.assign(static_cast<std::size_t>(vocab * d), 0.0);
  const std::function<double(double)> rf = round;
  for (int i = 0; i < nh; ++i) {
    const auto& w = heads[static_cast<std::size_t>(i)];
    const auto f = decoder::forward(s, w, inv_freq, z, {}, round);
    const auto fin = blocks::rms_norm<double>(f.delta, f.mid, norm, n, d, s.eps, true, rf);
    const Vec y = decoder::detail::rounded(fin.y, round);
    const auto labels = shifted_labels(tokens, s.cu, i + 1, o.ignore_index);
    const auto ce = heads::linear_cross_entropy<double>(y, lm_head, {}, labels, {}, n, vocab, d, o);
    r.head_loss.push_back(ce.loss);
    r.loss += ce.loss / nh;
    const auto g = heads::linear_cross_entropy_backward<double>(y, lm_head, {}, labels, {}, n, vocab, d, o,
                                                               {1.0 / nh}, round);
    for (std::size_t k = 0; k < g.dw.size(); ++k) r.grad_lm_head[k] += g.dw[k];
    const Vec dy = decoder::detail::rounded(g.dh, round);
    const auto nb = blocks::rms_norm_backward<double>(fin.h, norm, dy, {}, n, d, s.eps, true, rf);
    for (int c = 0; c < d; ++c) r.grad_norm[c] += nb.second[c];
    const Vec d_stream = decoder::detail::rounded(nb.first, round);
    auto lg = decoder::backward(s, w, inv_freq, f, d_stream, round);
    for (std::size_t k = 0; k < lg.grad_in.size(); ++k) r.grad_z[k] += lg.grad_in[k];
    r.head_grads.push_back(std::move(lg));
  }
  r.grad_z = decoder::detail::rounded(r.grad_z, round);
  return r;
}

// DeepSeek-V3's D sequential modules (heads::MtpModules).
struct Module {
  Vec enorm, hnorm, eh_proj, shared_norm;
  decoder::Weights block;
};
struct ModuleGrads {
  Vec enorm, hnorm, eh_proj, shared_norm;
  decoder::Grads block;
};
struct ModulesResult {
  double loss = 0;
  std::vector<double> module_loss;
  Vec grad_hidden, grad_embed, grad_lm_head;
  std::vector<ModuleGrads> grads;
};

inline ModulesResult mtp_modules(const decoder::Shape& s, const std::vector<Module>& mods,
                                 const std::vector<float>& inv_freq, const Vec& h0,
                                 const std::vector<std::int32_t>& tokens, const Vec& embed, const Vec& lm_head,
                                 std::int64_t vocab, const tokenless::heads::CrossEntropyOptions& o, const Round& round) {
  using decoder::detail::rounded;
  const std::int64_t n = s.tokens();
  const int d = s.hidden;
  const auto D = static_cast<int>(mods.size());
  const std::function<double(double)> rf = round;
  struct Saved {
    Vec e, c, hin, x, stream, y;
    decoder::Forward f;
    std::vector<std::int32_t> ids, labels;
    std::vector<char> masked;
  };
  std::vector<Saved> sv(static_cast<std::size_t>(D));
  ModulesResult r;
  Vec h = h0;
  for (int k = 0; k < D; ++k) {
    const Module& m = mods[static_cast<std::size_t>(k)];
    Saved& v = sv[static_cast<std::size_t>(k)];
    v.ids.assign(static_cast<std::size_t>(n), 0);
    v.labels.assign(static_cast<std::size_t>(n), o.ignore_index);
    v.masked.assign(static_cast<std::size_t>(n), 1);
    for (std::size_t q = 0; q + 1 < s.cu.size(); ++q) {
      for (std::int32_t t = s.cu[q]; t < s.cu[q + 1]; ++t) {
        if (t + k + 1 < s.cu[q + 1]) {
          v.ids[t] = tokens[t + k + 1];
          v.masked[t] = t == s.cu[q];  // position 0
        }
        if (t + k + 2 < s.cu[q + 1]) v.labels[t] = tokens[t + k + 2];
      }
    }
    v.e.assign(static_cast<std::size_t>(n * d), 0.0);
    for (std::int64_t t = 0; t < n; ++t) {
      if (v.masked[t]) continue;
      for (int c = 0; c < d; ++c) v.e[t * d + c] = embed[static_cast<std::size_t>(v.ids[t]) * d + c];
    }
    v.hin = h;
    const Vec ye = rounded(blocks::rms_norm<double>(v.e, {}, m.enorm, n, d, s.eps, true, rf).y, round);
    const Vec yh = rounded(blocks::rms_norm<double>(h, {}, m.hnorm, n, d, s.eps, true, rf).y, round);
    v.c.assign(static_cast<std::size_t>(n * 2 * d), 0.0);
    for (std::int64_t t = 0; t < n; ++t) {
      for (int c = 0; c < d; ++c) {
        v.c[t * 2 * d + c] = ye[t * d + c];
        v.c[t * 2 * d + d + c] = yh[t * d + c];
      }
    }
    v.x = decoder::detail::linear(v.c, m.eh_proj, n, d, 2 * d, round);
    v.f = decoder::forward(s, m.block, inv_freq, v.x, {}, round);
    const auto fin = blocks::rms_norm<double>(v.f.delta, v.f.mid, m.shared_norm, n, d, s.eps, true, rf);
    v.stream = fin.h;
    v.y = rounded(fin.y, round);
    const auto ce = heads::linear_cross_entropy<double>(v.y, lm_head, {}, v.labels, {}, n, vocab, d, o);
    r.module_loss.push_back(ce.loss);
    r.loss += ce.loss / D;
    h = v.stream;
  }
  r.grad_embed.assign(embed.size(), 0.0);
  r.grad_lm_head.assign(lm_head.size(), 0.0);
  r.grads.resize(static_cast<std::size_t>(D));
  Vec g_above;  // dL/dh^k from depth k + 1
  for (int k = D - 1; k >= 0; --k) {
    const Module& m = mods[static_cast<std::size_t>(k)];
    const Saved& v = sv[static_cast<std::size_t>(k)];
    ModuleGrads& g = r.grads[static_cast<std::size_t>(k)];
    const auto cg = heads::linear_cross_entropy_backward<double>(v.y, lm_head, {}, v.labels, {}, n, vocab, d, o,
                                                                {1.0 / D}, round);
    for (std::size_t i = 0; i < cg.dw.size(); ++i) r.grad_lm_head[i] += cg.dw[i];
    const auto nb = blocks::rms_norm_backward<double>(v.stream, m.shared_norm, rounded(cg.dh, round), g_above, n, d,
                                                      s.eps, true, rf);
    g.shared_norm = nb.second;
    g.block = decoder::backward(s, m.block, inv_freq, v.f, rounded(nb.first, round), round);
    const Vec& dx = g.block.grad_in;
    g.eh_proj = decoder::detail::linear_dw(dx, v.c, n, d, 2 * d);
    const Vec dc = decoder::detail::linear_dx(dx, m.eh_proj, n, d, 2 * d, round);
    Vec dce(static_cast<std::size_t>(n * d)), dch(static_cast<std::size_t>(n * d));
    for (std::int64_t t = 0; t < n; ++t) {
      for (int c = 0; c < d; ++c) {
        dce[t * d + c] = dc[t * 2 * d + c];
        dch[t * d + c] = dc[t * 2 * d + d + c];
      }
    }
    const auto hb = blocks::rms_norm_backward<double>(v.hin, m.hnorm, dch, {}, n, d, s.eps, true, rf);
    g.hnorm = hb.second;
    g_above = rounded(hb.first, round);
    const auto eb = blocks::rms_norm_backward<double>(v.e, m.enorm, dce, {}, n, d, s.eps, true, rf);
    g.enorm = eb.second;
    const Vec de = rounded(eb.first, round);
    for (std::int64_t t = 0; t < n; ++t) {
      if (v.masked[t]) continue;
      for (int c = 0; c < d; ++c) r.grad_embed[static_cast<std::size_t>(v.ids[t]) * d + c] += de[t * d + c];
    }
  }
  r.grad_hidden = g_above;
  return r;
}

}  // namespace tokenless::reference::multi_token
