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

}  // namespace tokenless::reference::multi_token
