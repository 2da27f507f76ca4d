#pragma once
// BLT assembled on the host (tokenless-run's `--device cpu` for model_type
// "blt"): transformers' BltForCausalLM, fp32, with every projection a matrix
// product (core/host_blas.hpp: OpenBLAS, or threaded loops) and attention
// split over the machine's threads.
//
//   entropies = EntropyModel(ids)                 (model.patcher: a byte transformer)
//   patches   = {0}, {1, ...} cut where H[p − 1] > θ, split at max_patch_length
//   x         = embed(ids) + Σ hash n-gram rows   (function-major fused table)
//   x         = LocalEncoder layers(x)            (causal, window W)
//   slots     = k rows a patch: W_p · amax_patch(x); slots = 2 slots + CrossAttn(slots → its bytes)
//   g         = Global layers(proj(slots as [P, k D_e]))   (causal over patches)
//   y         = x; before layer 0 (or every layer): y = 2 y + CrossAttn(y → the slots of the
//               last patch that ended at or before the byte); LocalDecoder layers(y)
//   logits    = lm_head(norm(y))                  [n, 260]
//
// Bytes enter as BLT ids (BOS 1, then byte + 4). The trailing patch
// transformers may keep empty is dropped (it reaches no logit: the global
// model is causal and no byte reads it). Each step runs the whole sequence
// (no cache); `generate` continues it greedily.
#include <tokenless/core/host_blas.hpp>
#include <tokenless/encoder/policy.hpp>
#include <tokenless/io/blt_weights.hpp>
#include <tokenless/models/host_attention.hpp>
#include <tokenless/reference/patcher.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace tokenless::models {

namespace blt_host_detail {

// RMSNorm of rows (transformers' BltRMSNorm in fp32): w · x / sqrt(mean(x²) + eps).
inline void rms_norm(const float* x, std::int64_t rows, int D, const std::vector<float>& w, float eps, float* y) {
  host::pool().parallel_for(rows, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t t = lo; t < hi; ++t) {
      const float* xr = x + t * D;
      float ss = 0;
      for (int i = 0; i < D; ++i) ss += xr[i] * xr[i];
      const float inv = 1.0f / std::sqrt(ss / static_cast<float>(D) + eps);
      float* yr = y + t * D;
      for (int i = 0; i < D; ++i) yr[i] = w[i] * (xr[i] * inv);
    }
  });
}

// One of BLT's transformer stacks with its KV cache: pre-norm layers of
// self-attention (interleaved RoPE over the whole head, causal, a window of
// W keys) and SwiGLU. forward() runs n new rows at positions len..len + n − 1.
class Stack {
 public:
  Stack(const io::BltStackConfig& c, const std::vector<io::BltLayerWeights<float>>& w)
      : c_(c), w_(w), inv_freq_(static_cast<std::size_t>(c.head_dim / 2)), k_(w.size()), v_(w.size()) {
    (void)blocks::rope_inv_freq(c.rope, c.head_dim, inv_freq_.data());  // validated on load
  }
  void reset() {
    for (auto& k : k_) k.clear();
    for (auto& v : v_) v.clear();
    len_ = 0;
  }
  std::int64_t length() const { return len_; }
  // Drops the cache past `len` positions (a rollback).
  void truncate(std::int64_t len) {
    if (len >= len_) return;
    for (auto& k : k_) k.resize(static_cast<std::size_t>(len * c_.kv_dim()));
    for (auto& v : v_) v.resize(static_cast<std::size_t>(len * c_.kv_dim()));
    len_ = len;
  }

  // x [n, D] in place.
  void forward(float* x, std::int64_t n) {
    for (std::size_t l = 0; l < w_.size(); ++l) layer(l, x, n);
    advance(n);
  }
  // Layer by layer (the decoder puts cross-attention between them): every
  // layer at positions len..len + n − 1, then advance(n).
  void advance(std::int64_t n) { len_ += n; }
  void layer(std::size_t l, float* x, std::int64_t n) { layer_all({this}, l, x, {n}); }

  // Several streams' stacks (the same weights) at once: stack s's n[s] rows
  // follow the ones before it in x. The matrix products run over all the
  // rows (a batch reads each weight once), RoPE, the cache and attention a
  // stack each.
  static void forward_all(const std::vector<Stack*>& st, float* x, const std::vector<std::int64_t>& n) {
    if (st.empty()) return;
    for (std::size_t l = 0; l < st[0]->w_.size(); ++l) layer_all(st, l, x, n);
    for (std::size_t s = 0; s < st.size(); ++s) st[s]->advance(n[s]);
  }
  static void layer_all(const std::vector<Stack*>& st, std::size_t l, float* x, const std::vector<std::int64_t>& n) {
    Stack& s0 = *st[0];  // its scratch serves the batch
    const io::BltStackConfig& c = s0.c_;
    const int D = c.hidden, hd = c.head_dim, H = c.heads, KV = c.kv_heads;
    const int qd = c.q_dim(), kvd = c.kv_dim(), qkvd = c.qkv_dim(), F = c.intermediate;
    const auto& w = s0.w_[l];
    std::vector<std::int64_t> first(st.size() + 1, 0), pos;  // each stack's first row; each row's position
    for (std::size_t s = 0; s < st.size(); ++s) {
      first[s + 1] = first[s] + n[s];
      for (std::int64_t t = 0; t < n[s]; ++t) pos.push_back(st[s]->len_ + t);
    }
    const std::int64_t R = first.back();
    if (R == 0) return;
    auto& h = s0.h_;
    auto& qkv = s0.qkv_;
    h.resize(static_cast<std::size_t>(R * D));
    rms_norm(x, R, D, w.attn_norm, c.rms_eps, h.data());
    qkv.resize(static_cast<std::size_t>(R * qkvd));
    host::gemm_nt(R, qkvd, D, h.data(), D, w.wqkv.data(), D, qkv.data(), qkvd);
    // Interleaved RoPE on q and k: pairs (2i, 2i + 1), the fp32 angle.
    const std::vector<float>& inv_freq = s0.inv_freq_;
    host::pool().parallel_for(R, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t t = lo; t < hi; ++t) {
        const auto p = static_cast<float>(pos[static_cast<std::size_t>(t)]);
        for (int i = 0; i < hd / 2; ++i) {
          const float angle = p * inv_freq[i];
          const float cs = std::cos(angle), sn = std::sin(angle);
          for (int h2 = 0; h2 < H + KV; ++h2) {
            float* q = qkv.data() + t * qkvd + h2 * hd + 2 * i;
            const float a = q[0], b = q[1];
            q[0] = a * cs - b * sn;
            q[1] = b * cs + a * sn;
          }
        }
      }
    });
    auto& attn = s0.attn_;
    attn.resize(static_cast<std::size_t>(R * qd));
    for (std::size_t s = 0; s < st.size(); ++s) {
      Stack& k = *st[s];
      if (n[s] == 0) continue;
      auto& kc = k.k_[l];
      auto& vc = k.v_[l];
      const std::int64_t base = k.len_, total = base + n[s], window = c.window;
      kc.resize(static_cast<std::size_t>(total * kvd));
      vc.resize(kc.size());
      const float* rows = qkv.data() + first[s] * qkvd;
      for (std::int64_t t = 0; t < n[s]; ++t) {
        std::copy_n(rows + t * qkvd + qd, kvd, kc.data() + (base + t) * kvd);
        std::copy_n(rows + t * qkvd + qd + kvd, kvd, vc.data() + (base + t) * kvd);
      }
      host_attend(rows, qkvd, kc.data(), vc.data(), kvd, n[s], total, H, KV, hd,
                  [&](std::int64_t t) {
                    const std::int64_t i = base + t;
                    return std::pair<std::int64_t, std::int64_t>{window > 0 ? std::max<std::int64_t>(0, i - window + 1) : 0,
                                                                 i + 1};
                  },
                  attn.data() + first[s] * qd, qd);
    }
    host::gemm_nt(R, D, qd, attn.data(), qd, w.wo.data(), qd, h.data(), D);
    for (std::int64_t i = 0; i < R * D; ++i) x[i] += h[i];
    rms_norm(x, R, D, w.mlp_norm, c.rms_eps, h.data());
    auto& gu = s0.gu_;
    auto& act = s0.act_;
    gu.resize(static_cast<std::size_t>(R * 2 * F));
    host::gemm_nt(R, 2 * F, D, h.data(), D, w.w_gate_up.data(), D, gu.data(), 2 * F);
    act.resize(static_cast<std::size_t>(R * F));
    host::pool().parallel_for(R, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t t = lo; t < hi; ++t) {
        const float* g = gu.data() + t * 2 * F;
        for (int i = 0; i < F; ++i) act[t * F + i] = g[i] / (1.0f + std::exp(-g[i])) * g[F + i];
      }
    });
    host::gemm_nt(R, D, F, act.data(), F, w.w_down.data(), F, h.data(), D);
    for (std::int64_t i = 0; i < R * D; ++i) x[i] += h[i];
  }

 private:
  const io::BltStackConfig& c_;
  const std::vector<io::BltLayerWeights<float>>& w_;
  std::vector<float> inv_freq_;
  std::vector<std::vector<float>> k_, v_;
  std::int64_t len_ = 0;
  std::vector<float> h_, qkv_, attn_, gu_, act_;
};

// BLT's cross-attention keys and values: [nk, 2 KV hd], k and v of
// kv_norm(kv) side by side in a row (a decoder caches them a patch at a time).
inline void cross_kv(const io::BltStackConfig& c, const io::BltCrossWeights<float>& w, const float* kv, std::int64_t nk,
                     float* out) {
  const int D = c.hidden, kvd = c.kv_dim();
  std::vector<float> h(static_cast<std::size_t>(nk * D));
  rms_norm(kv, nk, D, w.kv_norm, c.rms_eps, h.data());
  host::gemm_nt(nk, 2 * kvd, D, h.data(), D, w.wkv.data(), D, out, 2 * kvd);
}

// BLT's cross-attention over cross_kv's rows, returning the caller's update:
// x ← 2 x + o(attn), the module's own residual and its caller's; q =
// q_norm(x) W_q; attend(q, o) fills o [nq, q_dim] (a batch's streams each
// attend to their own keys).
template <class Attend>
void cross_query_with(const io::BltStackConfig& c, const io::BltCrossWeights<float>& w, float* x, std::int64_t nq,
                      Attend attend) {
  const int D = c.hidden, qd = c.q_dim();
  std::vector<float> h(static_cast<std::size_t>(nq * D)), q(static_cast<std::size_t>(nq * qd)), o(q.size());
  rms_norm(x, nq, D, w.q_norm, c.rms_eps, h.data());
  host::gemm_nt(nq, qd, D, h.data(), D, w.wq.data(), D, q.data(), qd);
  attend(q.data(), o.data());
  host::gemm_nt(nq, D, qd, o.data(), qd, w.wo.data(), qd, h.data(), D);
  for (std::int64_t i = 0; i < nq * D; ++i) x[i] = 2 * x[i] + h[i];
}
// Query i sees keys range(i).
template <class Range>
void cross_query(const io::BltStackConfig& c, const io::BltCrossWeights<float>& w, float* x, std::int64_t nq,
                 const float* kvp, std::int64_t nk, Range range) {
  const int qd = c.q_dim(), kvd = c.kv_dim();
  cross_query_with(c, w, x, nq, [&](const float* q, float* o) {
    host_attend(q, qd, kvp, kvp + kvd, 2 * kvd, nq, nk, c.heads, c.kv_heads, c.head_dim, range, o, qd);
  });
}

// Both, for keys used once.
template <class Range>
void cross_attend(const io::BltStackConfig& c, const io::BltCrossWeights<float>& w, float* x, std::int64_t nq,
                  const float* kv, std::int64_t nk, Range range) {
  std::vector<float> kvp(static_cast<std::size_t>(nk * 2 * c.kv_dim()));
  cross_kv(c, w, kv, nk, kvp.data());
  cross_query(c, w, x, nq, kvp.data(), nk, range);
}

// Rows first..n − 1 of the encoder's input: embed_tokens(id) + Σ_{f, g}
// hash_table[(f G + g) V + bucket_{f, g}(i)], in that order (transformers').
inline void embed(const io::BltWeights<float>& w, const std::vector<std::int32_t>& ids, std::int64_t first, float* x) {
  const io::BltConfig& c = w.config;
  const int D = c.encoder.hidden, G = static_cast<int>(c.ngrams.size());
  const auto n = static_cast<std::int64_t>(ids.size());
  host::pool().parallel_for(n - first, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t t = first + lo; t < first + hi; ++t) {
      float* r = x + (t - first) * D;
      std::copy_n(w.byte_embed.data() + static_cast<std::int64_t>(ids[t]) * D, D, r);
      for (int f = 0; f < c.hash_functions; ++f) {
        for (int g = 0; g < G; ++g) {
          const std::int64_t b = encoder::blt_ngram_bucket(ids.data(), t, 0, c.ngrams[g], f, c.hash_vocab);
          const float* e = w.hash_embed.data() + ((f * G + g) * c.hash_vocab + b) * D;
          for (int i = 0; i < D; ++i) r[i] += e[i];
        }
      }
    }
  });
}

}  // namespace blt_host_detail

class BltHost {
 public:
  explicit BltHost(const io::BltWeights<float>& w) : w_(w), c_(w.config) {}

  // Whether the model can run: the local models' widths must agree (the
  // decoder reads the encoder's states).
  static Status check(const io::BltConfig& c) {
    if (c.encoder.hidden != c.decoder.hidden) {
      return Status::error(StatusCode::unsupported,
                           "BLT: encoder_config.hidden_size %d differs from decoder_config.hidden_size %d (transformers "
                           "feeds the encoder's states to the decoder)",
                           c.encoder.hidden, c.decoder.hidden);
    }
    return Status::ok();
  }

  // The entropy model's entropies (nats) at every position of ids.
  std::vector<float> entropies(const std::vector<std::int32_t>& ids) const {
    const io::BltStackConfig& c = c_.patcher;
    const int D = c.hidden, V = c_.vocab;
    const auto n = static_cast<std::int64_t>(ids.size());
    std::vector<float> x(static_cast<std::size_t>(n * D)), h(x.size()), logits(static_cast<std::size_t>(n * V));
    for (std::int64_t t = 0; t < n; ++t) std::copy_n(w_.patcher_embed.data() + ids[t] * D, D, x.data() + t * D);
    blt_host_detail::Stack stack(c, w_.patcher_layers);
    stack.forward(x.data(), n);
    blt_host_detail::rms_norm(x.data(), n, D, w_.patcher_norm, c.rms_eps, h.data());
    host::gemm_nt(n, V, D, h.data(), D, w_.patcher_head.data(), D, logits.data(), V);
    return reference::entropies_from_logits<float>(logits.data(), n, V);
  }

  // Patch lengths of ids (summing to ids.size()), and whether the last one
  // is complete: transformers keeps an empty patch after it when the next
  // byte would start a new one (byte patching; entropy patching without
  // max_patch_length, whose split drops empty patches, when H[n − 1] > θ),
  // and only then does the last byte read the last patch.
  std::vector<std::int64_t> patch_lengths(const std::vector<std::int32_t>& ids, bool* last_complete = nullptr) const {
    const auto n = static_cast<std::int64_t>(ids.size());
    if (c_.patching == io::BltPatching::kByte) {
      if (last_complete) *last_complete = true;
      return std::vector<std::int64_t>(static_cast<std::size_t>(n), 1);
    }
    const std::vector<float> h = entropies(ids);
    reference::BltEntropyOptions o;
    o.threshold = c_.threshold;
    o.max_patch_length = c_.max_patch_length;
    if (last_complete) *last_complete = c_.max_patch_length == 0 && (n == 1 || h[n - 1] > c_.threshold);
    return reference::blt_entropy_patch_lengths(h, o);
  }

  // The logits [n, 260] of ids; the patch lengths used, when asked. With
  // `given`, those patches (and whether the last is complete) instead of the
  // entropy model's: the tests run the kernels' patches through the host.
  struct Patches {
    std::vector<std::int64_t> lengths;
    bool last_complete = false;
  };
  std::vector<float> forward(const std::vector<std::int32_t>& ids, std::vector<std::int64_t>* lengths_out = nullptr,
                             const Patches* given = nullptr) const {
    const auto n = static_cast<std::int64_t>(ids.size());
    bool last_complete = false;
    const std::vector<std::int64_t> lengths = given ? given->lengths : patch_lengths(ids, &last_complete);
    if (given) last_complete = given->last_complete;
    const auto P = static_cast<std::int64_t>(lengths.size());
    std::vector<std::int64_t> start(static_cast<std::size_t>(P + 1), 0);
    for (std::int64_t p = 0; p < P; ++p) start[p + 1] = start[p] + lengths[p];
    const int De = c_.encoder.hidden, Dg = c_.global.hidden, Dd = c_.decoder.hidden, k = c_.k, V = c_.vocab;
    // The encoder: byte and hash n-gram embeddings, then its layers.
    std::vector<float> x(static_cast<std::size_t>(n * De));
    blt_host_detail::embed(w_, ids, 0, x.data());
    blt_host_detail::Stack encoder(c_.encoder, w_.encoder_layers);
    encoder.forward(x.data(), n);
    // Slots: amax over each patch's bytes, projected to k rows, then the
    // cross-attention from the slots to their patch's bytes.
    std::vector<float> pooled(static_cast<std::size_t>(P * De), 0.0f), slots(static_cast<std::size_t>(P * k * De));
    for (std::int64_t p = 0; p < P; ++p) {
      float* r = pooled.data() + p * De;
      std::copy_n(x.data() + start[p] * De, De, r);
      for (std::int64_t t = start[p] + 1; t < start[p + 1]; ++t)
        for (int i = 0; i < De; ++i) r[i] = std::max(r[i], x[t * De + i]);  // NaN: as amax, kept where first
    }
    host::gemm_nt(P, k * De, De, pooled.data(), De, w_.encoder_projection.data(), De, slots.data(), k * De);
    const auto& enc_cross = w_.encoder_cross.back();  // with cross_attn_all_layers, only the last layer's reaches the output
    blt_host_detail::cross_attend(c_.encoder, enc_cross, slots.data(), P * k, x.data(), n, [&](std::int64_t s) {
      const std::int64_t p = s / k;
      return std::pair<std::int64_t, std::int64_t>{start[p], start[p + 1]};
    });
    // The global transformer over patches.
    std::vector<float> g(static_cast<std::size_t>(P * Dg));
    if (c_.global_projection) {
      host::gemm_nt(P, Dg, k * De, slots.data(), k * De, w_.global_projection.data(), k * De, g.data(), Dg);
    } else {
      g = slots;
    }
    blt_host_detail::Stack global(c_.global, w_.global_layers);
    global.forward(g.data(), P);
    // The decoder: the global output as k slots a patch; byte t reads the
    // slots of the last complete patch that ended at or before it.
    std::vector<float> dslots(static_cast<std::size_t>(P * k * Dd));
    host::gemm_nt(P, k * Dd, Dg, g.data(), Dg, w_.decoder_projection.data(), Dg, dslots.data(), k * Dd);
    std::vector<std::int64_t> dpatch(static_cast<std::size_t>(n));
    for (std::int64_t t = 0, p = 0; t < n; ++t) {
      // patch p + 1 ends at start[p + 2] − 1; the last patch counts when complete
      while (p + 1 < P && start[p + 2] - 1 <= t && (p + 2 < P || last_complete)) ++p;
      dpatch[t] = p;
    }
    decode(x, n, dslots, P, dpatch);
    std::vector<float> h(x.size()), logits(static_cast<std::size_t>(n * V));
    blt_host_detail::rms_norm(x.data(), n, Dd, w_.decoder_norm, c_.decoder.rms_eps, h.data());
    host::gemm_nt(n, V, Dd, h.data(), Dd, w_.lm_head.data(), Dd, logits.data(), V);
    if (lengths_out) *lengths_out = lengths;
    return logits;
  }

  // Greedy continuation: `count` new ids (stopping after EOS unless ignore_eos).
  std::vector<std::int32_t> generate(std::vector<std::int32_t> ids, int count, bool ignore_eos,
                                     std::vector<float>* prompt_logits = nullptr) const {
    std::vector<std::int32_t> out;
    for (int i = 0; i < count; ++i) {
      const std::vector<float> logits = forward(ids);
      if (i == 0 && prompt_logits) *prompt_logits = logits;
      const float* last = logits.data() + (ids.size() - 1) * static_cast<std::size_t>(c_.vocab);
      const auto next = static_cast<std::int32_t>(std::max_element(last, last + c_.vocab) - last);
      out.push_back(next);
      ids.push_back(next);
      if (!ignore_eos && next == c_.eos) break;
    }
    return out;
  }

 private:
  // The decoder's cross-attentions and layers over y = x, in place.
  void decode(std::vector<float>& y, std::int64_t n, const std::vector<float>& dslots, std::int64_t P,
              const std::vector<std::int64_t>& dpatch) const {
    const int k = c_.k;
    (void)P;
    auto range = [&](std::int64_t t) {
      return std::pair<std::int64_t, std::int64_t>{dpatch[t] * k, (dpatch[t] + 1) * k};
    };
    blt_host_detail::Stack decoder(c_.decoder, w_.decoder_layers);
    // One layer at a time, each preceded by its cross-attention where there is one.
    for (int l = 0; l < c_.decoder.layers; ++l) {
      if (l == 0 || c_.decoder_cross_all) {
        blt_host_detail::cross_attend(c_.decoder, w_.decoder_cross[static_cast<std::size_t>(l)], y.data(), n,
                                      dslots.data(), P * k, range);
      }
      decoder.layer(static_cast<std::size_t>(l), y.data(), n);
    }
    decoder.advance(n);
  }

  const io::BltWeights<float>& w_;
  const io::BltConfig& c_;
};


// BLT's incremental generation on the host, with every cache: the entropy
// model's and the local encoder's KV caches (and the encoder's states), the
// global transformer run once per completed patch with its KV cache, and
// the local decoder's self-attention cache with the slots it
// cross-attends to. A byte costs the local models' step, and at a patch
// boundary one global step. The logits equal BltHost::forward's rerun of the
// whole sequence (up to the order of sums); transformers' cached BLT does
// not guarantee that.
//
// A patch is complete once a later patch starts, or, for the last patch, by
// transformers' rule for the last byte (BltHost::patch_lengths). Where
// max_patch_length makes the last byte's patch complete only once the next
// byte arrives, that byte's decoder rows are rolled back and rerun.
//
//   BltStream s(weights);
//   auto logits = s.append(prompt_ids);     // [1, 260]: the last byte's
//   logits = s.append({next});              // a step
class BltStream {
 public:
  explicit BltStream(const io::BltWeights<float>& w)
      : w_(w), c_(w.config), patcher_(c_.patcher, w.patcher_layers), encoder_(c_.encoder, w.encoder_layers),
        global_(c_.global, w.global_layers), decoder_(c_.decoder, w.decoder_layers) {}

  std::int64_t length() const { return static_cast<std::int64_t>(ids_.size()); }
  const std::vector<std::int32_t>& ids() const { return ids_; }
  const std::vector<float>& entropies() const { return h_; }
  // The patch lengths so far (the last one possibly still growing).
  std::vector<std::int64_t> patch_lengths() const {
    std::vector<std::int64_t> l;
    for (std::size_t p = 0; p < starts_.size(); ++p) {
      l.push_back((p + 1 < starts_.size() ? starts_[p + 1] : length()) - starts_[p]);
    }
    return l;
  }
  std::int64_t global_steps() const { return global_.length(); }  // completed patches run
  std::int64_t rollbacks() const { return rollbacks_; }

  // Appends ids; returns the logits of the new rows ([count, 260]) or, with
  // last_only, of the last one.
  std::vector<float> append(const std::vector<std::int32_t>& more, bool last_only = true) {
    return append_from(more, last_only ? -1 : length());
  }

  // Self-speculative greedy decoding: `first` is the byte the last logits
  // chose (certain). It and the D − 1 drafts after it are appended reading
  // the last global output, the global transformer waiting (a drafted row's
  // decoder reads the last patch run through it, not one its bytes
  // completed); then the D-th draft is appended for real, which runs the
  // global transformer once over every patch the drafts completed and reruns
  // in one pass the decoder rows that read a stale patch: their logits verify
  // the drafts. The longest agreeing prefix is kept and the caches roll back
  // the rest. Returns a, the drafts accepted (0..D); `out` gets first and
  // those a bytes (the greedy ones: the same as appending a byte at a time),
  // `logits` the last kept row's (the next byte's). Where max_patch_length
  // makes a row's own prefix read another patch than the verifying pass did,
  // acceptance stops there.
  int speculate(std::int32_t first, int D, std::vector<std::int32_t>& out, std::vector<float>& logits) {
    const std::int64_t L = length();
    out.assign(1, first);
    if (D <= 0) {
      logits = append({first});
      return 0;
    }
    std::vector<std::int32_t> drafts;  // e_1 .. e_D: the greedy byte after each appended one
    drafting_ = true;
    std::vector<float> l = append({first});
    drafts.push_back(argmax(l.data()));
    for (int i = 1; i < D; ++i) {
      l = append({drafts.back()});
      drafts.push_back(argmax(l.data()));
    }
    drafting_ = false;
    // Verify: rows L .. L + D (first, e_1 .. e_D) as the whole sequence's forward computes them.
    const std::vector<float> rows = append_from({drafts.back()}, L);
    const std::int64_t V = c_.vocab;
    int a = 0;
    while (a < D) {
      const std::int64_t j = L + a;  // row j's logits verify draft e_{a+1}
      if (decoder_patch_at(j, j + 1) != assigned_[static_cast<std::size_t>(j)]) break;  // its prefix reads another patch
      if (argmax(rows.data() + (j - L) * V) != drafts[static_cast<std::size_t>(a)]) break;
      out.push_back(drafts[static_cast<std::size_t>(a)]);
      ++a;
    }
    truncate(L + a + 1);
    logits = append({});  // the last kept row, rerun where its patch is not the verifying pass's
    return a;
  }

  // A batch's decode step: streams[b] appends ids[b] (one byte each, the
  // streams distinct), as append({ids[b]}) would, with every matrix product
  // over the batch's rows at once (each weight read once a step, not once a
  // stream); attention, patches and caches stay each stream's. Returns each
  // stream's logits for its next byte.
  static std::vector<std::vector<float>> step_all(const std::vector<BltStream*>& streams,
                                                  const std::vector<std::int32_t>& ids) {
    using blt_host_detail::Stack;
    const std::size_t B = streams.size();
    if (B == 0) return {};
    const io::BltWeights<float>& w = streams[0]->w_;
    const io::BltConfig& c = w.config;
    const std::vector<std::int64_t> one(B, 1);
    auto stacks = [&](Stack BltStream::*m) {
      std::vector<Stack*> st;
      for (BltStream* s : streams) st.push_back(&(s->*m));
      return st;
    };
    std::vector<std::int64_t> a(B);
    for (std::size_t b = 0; b < B; ++b) {
      a[b] = streams[b]->length();
      streams[b]->ids_.push_back(ids[b]);
    }
    // The entropy model's rows.
    if (c.patching == io::BltPatching::kEntropy) {
      const int D = c.patcher.hidden, V = c.vocab;
      std::vector<float> x(B * static_cast<std::size_t>(D)), hn(x.size()), logits(B * static_cast<std::size_t>(V));
      for (std::size_t b = 0; b < B; ++b) std::copy_n(w.patcher_embed.data() + ids[b] * D, D, x.data() + b * D);
      Stack::forward_all(stacks(&BltStream::patcher_), x.data(), one);
      blt_host_detail::rms_norm(x.data(), static_cast<std::int64_t>(B), D, w.patcher_norm, c.patcher.rms_eps, hn.data());
      host::gemm_nt(static_cast<std::int64_t>(B), V, D, hn.data(), D, w.patcher_head.data(), D, logits.data(), V);
      const std::vector<float> h = reference::entropies_from_logits<float>(logits.data(), static_cast<std::int64_t>(B), V);
      for (std::size_t b = 0; b < B; ++b) streams[b]->h_.push_back(h[b]);
    }
    for (std::size_t b = 0; b < B; ++b) streams[b]->cut(a[b]);
    // The encoder's rows.
    {
      const int D = c.encoder.hidden;
      std::vector<float> x(B * static_cast<std::size_t>(D));
      for (std::size_t b = 0; b < B; ++b) blt_host_detail::embed(w, streams[b]->ids_, a[b], x.data() + b * D);
      Stack::forward_all(stacks(&BltStream::encoder_), x.data(), one);
      for (std::size_t b = 0; b < B; ++b) {
        auto& xs = streams[b]->x_;
        xs.resize(static_cast<std::size_t>(a[b] * D));
        xs.insert(xs.end(), x.begin() + b * D, x.begin() + (b + 1) * D);
      }
    }
    global_all(streams);
    // The decoder: each stream from its first row whose patch changed.
    const int D = c.decoder.hidden, k = c.k, qd = c.decoder.q_dim(), kvd = c.decoder.kv_dim();
    std::vector<std::int64_t> from(B), rows(B), first(B + 1, 0);
    for (std::size_t b = 0; b < B; ++b) {
      BltStream& s = *streams[b];
      std::int64_t f = a[b];
      while (f > 0 && s.assigned_[f - 1] != s.row_patch(f - 1)) --f;
      if (f < a[b]) ++s.rollbacks_;
      s.decoder_.truncate(f);
      s.assigned_.resize(static_cast<std::size_t>(f));
      const std::int64_t n = s.length();
      for (std::int64_t t = f; t < n; ++t) s.assigned_.push_back(s.row_patch(t));
      from[b] = f;
      rows[b] = n - f;
      first[b + 1] = first[b] + rows[b];
    }
    std::vector<float> y(static_cast<std::size_t>(first[B] * D));
    for (std::size_t b = 0; b < B; ++b) {
      const auto& x = streams[b]->x_;
      std::copy(x.begin() + from[b] * D, x.begin() + (from[b] + rows[b]) * D, y.begin() + first[b] * D);
    }
    for (int l = 0; l < c.decoder.layers; ++l) {
      const auto L = static_cast<std::size_t>(l);
      if (l == 0 || c.decoder_cross_all) {
        blt_host_detail::cross_query_with(c.decoder, w.decoder_cross[L], y.data(), first[B], [&](const float* q, float* o) {
          for (std::size_t b = 0; b < B; ++b) {
            const BltStream& s = *streams[b];
            const std::int64_t f = from[b];
            host_attend(q + first[b] * qd, qd, s.dkv_[L].data(), s.dkv_[L].data() + kvd, 2 * kvd, rows[b], s.slots_,
                        c.decoder.heads, c.decoder.kv_heads, c.decoder.head_dim,
                        [&](std::int64_t r) {
                          const std::int64_t d = s.assigned_[static_cast<std::size_t>(f + r)];
                          return std::pair<std::int64_t, std::int64_t>{d * k, (d + 1) * k};
                        },
                        o + first[b] * qd, qd);
          }
        });
      }
      Stack::layer_all(stacks(&BltStream::decoder_), L, y.data(), rows);
    }
    std::vector<float> last(B * static_cast<std::size_t>(D)), h(last.size());
    for (std::size_t b = 0; b < B; ++b) {
      BltStream& s = *streams[b];
      s.decoder_.advance(rows[b]);
      s.y_.resize(static_cast<std::size_t>(from[b] * D));
      s.y_.insert(s.y_.end(), y.begin() + first[b] * D, y.begin() + first[b + 1] * D);
      std::copy_n(y.begin() + (first[b + 1] - 1) * D, D, last.begin() + b * D);
    }
    const int V = c.vocab;
    std::vector<float> logits(B * static_cast<std::size_t>(V));
    blt_host_detail::rms_norm(last.data(), static_cast<std::int64_t>(B), D, w.decoder_norm, c.decoder.rms_eps, h.data());
    host::gemm_nt(static_cast<std::int64_t>(B), V, D, h.data(), D, w.lm_head.data(), D, logits.data(), V);
    std::vector<std::vector<float>> out(B);
    for (std::size_t b = 0; b < B; ++b) out[b].assign(logits.begin() + b * V, logits.begin() + (b + 1) * V);
    return out;
  }

 private:
  std::int32_t argmax(const float* row) const {
    return static_cast<std::int32_t>(std::max_element(row, row + c_.vocab) - row);
  }

  // Whether position p starts a patch (0 and 1 always, then H[p − 1] > θ,
  // then max_patch_length's split of an entropy patch); records it.
  void cut(std::int64_t p) {
    if (p <= 1 || (c_.patching == io::BltPatching::kEntropy ? h_[p - 1] > c_.threshold : true)) {
      starts_.push_back(p);
      entropy_start_ = p;
    } else if (c_.max_patch_length > 0 && (p - entropy_start_) % c_.max_patch_length == 0) {
      starts_.push_back(p);  // max_patch_length's split
    }
  }

  // Appends ids; the logits of rows [first_row, n), or of the last row (first_row < 0).
  std::vector<float> append_from(const std::vector<std::int32_t>& more, std::int64_t first_row) {
    const std::int64_t a = length();
    ids_.insert(ids_.end(), more.begin(), more.end());
    const std::int64_t n = length();
    if (n > a) {
      entropy_rows(a, n);
      for (std::int64_t p = a; p < n; ++p) cut(p);
      encoder_rows(a, n);
    }
    if (!drafting_) global_rows();
    // The decoder from the first row whose patch differs from the one it was run with.
    std::int64_t from = a;
    while (from > 0 && assigned_[from - 1] != row_patch(from - 1)) --from;
    if (from < a && !drafting_ && n > a) ++rollbacks_;
    decoder_.truncate(from);
    assigned_.resize(static_cast<std::size_t>(from));
    y_.resize(static_cast<std::size_t>(from * c_.decoder.hidden));
    decoder_rows(from, n);
    const std::int64_t first = first_row < 0 ? n - 1 : first_row, rows = n - first;
    const int D = c_.decoder.hidden, V = c_.vocab;
    std::vector<float> h(static_cast<std::size_t>(rows * D)), logits(static_cast<std::size_t>(rows * V));
    blt_host_detail::rms_norm(y_.data() + first * D, rows, D, w_.decoder_norm, c_.decoder.rms_eps, h.data());
    host::gemm_nt(rows, V, D, h.data(), D, w_.lm_head.data(), D, logits.data(), V);
    return logits;
  }

  // Every cache back to the first `len` bytes (a speculation's rejected drafts).
  void truncate(std::int64_t len) {
    ids_.resize(static_cast<std::size_t>(len));
    if (c_.patching == io::BltPatching::kEntropy) h_.resize(static_cast<std::size_t>(len));
    patcher_.truncate(len);
    while (!starts_.empty() && starts_.back() >= len) starts_.pop_back();
    entropy_start_ = 0;  // the last start the entropy rule made
    for (auto it = starts_.rbegin(); it != starts_.rend(); ++it) {
      if (*it <= 1 || c_.patching != io::BltPatching::kEntropy || h_[*it - 1] > c_.threshold) {
        entropy_start_ = *it;
        break;
      }
    }
    encoder_.truncate(len);
    x_.resize(static_cast<std::size_t>(len * c_.encoder.hidden));
    // The global transformer keeps the patches still complete (theirs are the same bytes).
    std::size_t done = 0;
    while (done < starts_.size() && static_cast<std::int64_t>(done) < global_.length() && complete(done)) ++done;
    global_.truncate(static_cast<std::int64_t>(done));
    const std::size_t row = static_cast<std::size_t>(2 * c_.decoder.kv_dim());
    for (auto& kv : dkv_) kv.resize(std::min(kv.size(), done * static_cast<std::size_t>(c_.k) * row));
    slots_ = std::min<std::int64_t>(slots_, static_cast<std::int64_t>(done) * c_.k);
    decoder_.truncate(len);
    y_.resize(static_cast<std::size_t>(len * c_.decoder.hidden));
    assigned_.resize(static_cast<std::size_t>(len));
  }

  // The entropy model's entropies at positions a..n − 1 (its cache grows).
  void entropy_rows(std::int64_t a, std::int64_t n) {
    if (c_.patching != io::BltPatching::kEntropy) return;
    const int D = c_.patcher.hidden, V = c_.vocab;
    std::vector<float> x(static_cast<std::size_t>((n - a) * D)), hn(x.size()), logits(static_cast<std::size_t>((n - a) * V));
    for (std::int64_t t = a; t < n; ++t) std::copy_n(w_.patcher_embed.data() + ids_[t] * D, D, x.data() + (t - a) * D);
    patcher_.forward(x.data(), n - a);
    blt_host_detail::rms_norm(x.data(), n - a, D, w_.patcher_norm, c_.patcher.rms_eps, hn.data());
    host::gemm_nt(n - a, V, D, hn.data(), D, w_.patcher_head.data(), D, logits.data(), V);
    const std::vector<float> h = reference::entropies_from_logits<float>(logits.data(), n - a, V);
    h_.insert(h_.end(), h.begin(), h.end());
  }

  void encoder_rows(std::int64_t a, std::int64_t n) {
    const int D = c_.encoder.hidden;
    x_.resize(static_cast<std::size_t>(n * D));
    blt_host_detail::embed(w_, ids_, a, x_.data() + a * D);
    encoder_.forward(x_.data() + a * D, n - a);
  }

  // Whether the patch p is complete in the sequence so far. The first patch
  // is BOS alone whatever follows (1 always starts a patch), and the
  // decoder reads it even before byte 1 exists, as transformers does.
  bool complete(std::size_t p) const {
    if (p == 0 || p + 1 < starts_.size()) return true;
    const std::int64_t n = length();
    if (c_.patching == io::BltPatching::kByte) return true;
    return c_.max_patch_length == 0 && (n == 1 || h_[n - 1] > c_.threshold);
  }

  // Every newly completed patch: its slots (amax, projection, cross-attention
  // to its bytes), one global step, its decoder slots.
  void global_rows() { global_all({this}); }
  // The same for a batch's streams, every product over all their new patches.
  static void global_all(const std::vector<BltStream*>& streams) {
    const io::BltWeights<float>& w = streams[0]->w_;
    const io::BltConfig& c = w.config;
    const int De = c.encoder.hidden, Dg = c.global.hidden, Dd = c.decoder.hidden, k = c.k;
    // The new patches, a stream's after the one's before; their bytes' rows stacked.
    std::vector<std::int64_t> count(streams.size(), 0), lo, hi;  // lo, hi: a patch's rows in the stack
    std::vector<float> bytes;
    for (std::size_t b = 0; b < streams.size(); ++b) {
      BltStream& s = *streams[b];
      for (auto p = static_cast<std::size_t>(s.global_.length()); p < s.starts_.size() && s.complete(p); ++p) {
        const std::int64_t l0 = s.starts_[p], l1 = p + 1 < s.starts_.size() ? s.starts_[p + 1] : s.length();
        lo.push_back(static_cast<std::int64_t>(bytes.size()) / De);
        bytes.insert(bytes.end(), s.x_.begin() + l0 * De, s.x_.begin() + l1 * De);
        hi.push_back(static_cast<std::int64_t>(bytes.size()) / De);
        ++count[b];
      }
    }
    const auto P = static_cast<std::int64_t>(lo.size());
    if (P == 0) return;
    std::vector<float> pooled(static_cast<std::size_t>(P * De)), slots(static_cast<std::size_t>(P * k * De));
    for (std::int64_t q = 0; q < P; ++q) {
      float* r = pooled.data() + q * De;
      std::copy_n(bytes.data() + lo[q] * De, De, r);
      for (std::int64_t t = lo[q] + 1; t < hi[q]; ++t)
        for (int i = 0; i < De; ++i) r[i] = std::max(r[i], bytes[t * De + i]);
    }
    host::gemm_nt(P, k * De, De, pooled.data(), De, w.encoder_projection.data(), De, slots.data(), k * De);
    // Each patch's slots see only its bytes.
    blt_host_detail::cross_attend(c.encoder, w.encoder_cross.back(), slots.data(), P * k, bytes.data(), hi[P - 1],
                                  [&](std::int64_t s) {
                                    return std::pair<std::int64_t, std::int64_t>{lo[s / k], hi[s / k]};
                                  });
    std::vector<float> g(static_cast<std::size_t>(P * Dg));
    if (c.global_projection) {
      host::gemm_nt(P, Dg, k * De, slots.data(), k * De, w.global_projection.data(), k * De, g.data(), Dg);
    } else {
      g = slots;
    }
    std::vector<blt_host_detail::Stack*> globals;
    for (BltStream* s : streams) globals.push_back(&s->global_);
    blt_host_detail::Stack::forward_all(globals, g.data(), count);
    // The decoder's slots, and each cross-attention's keys and values of them, cached.
    std::vector<float> dslots(static_cast<std::size_t>(P * k * Dd));
    host::gemm_nt(P, k * Dd, Dg, g.data(), Dg, w.decoder_projection.data(), Dg, dslots.data(), k * Dd);
    const std::size_t row = static_cast<std::size_t>(2 * c.decoder.kv_dim());
    std::vector<float> kv(static_cast<std::size_t>(P * k) * row);
    for (std::size_t l = 0; l < w.decoder_cross.size(); ++l) {
      blt_host_detail::cross_kv(c.decoder, w.decoder_cross[l], dslots.data(), P * k, kv.data());
      std::size_t at = 0;
      for (std::size_t b = 0; b < streams.size(); ++b) {
        BltStream& s = *streams[b];
        s.dkv_.resize(w.decoder_cross.size());
        const std::size_t n = static_cast<std::size_t>(count[b] * k) * row;
        s.dkv_[l].insert(s.dkv_[l].end(), kv.begin() + static_cast<std::ptrdiff_t>(at), kv.begin() + static_cast<std::ptrdiff_t>(at + n));
        at += n;
      }
    }
    for (std::size_t b = 0; b < streams.size(); ++b) streams[b]->slots_ += count[b] * k;
  }

  // The decoder patch of byte t: the last complete patch that ended at or before it.
  std::int64_t decoder_patch(std::int64_t t) const { return decoder_patch_at(t, length()); }
  // The same when the sequence had only its first `len` bytes (starts are
  // causal: those below len are the same); patch p ends at starts_[p + 1] − 1.
  std::int64_t decoder_patch_at(std::int64_t t, std::int64_t len) const {
    const auto end = std::lower_bound(starts_.begin(), starts_.end(), len);  // the first len bytes' starts
    const auto it = std::upper_bound(starts_.begin(), end, t + 1);          // the first start past t + 1
    auto p = static_cast<std::int64_t>(it - starts_.begin()) - 2;           // the patch ending at or before t
    const auto count = static_cast<std::int64_t>(end - starts_.begin());
    if (t == len - 1 && p + 1 == count - 1) {  // the last patch ends at the last byte: it counts when complete
      const bool done = p + 1 == 0 || c_.patching == io::BltPatching::kByte ||
                        (c_.max_patch_length == 0 && (len == 1 || h_[len - 1] > c_.threshold));
      if (done) ++p;
    }
    return std::max<std::int64_t>(p, 0);
  }
  // The patch a row is run with: while drafting, never one the global
  // transformer has not run yet.
  std::int64_t row_patch(std::int64_t t) const {
    const std::int64_t p = decoder_patch(t);
    return drafting_ ? std::min<std::int64_t>(p, global_.length() - 1) : p;
  }

  void decoder_rows(std::int64_t from, std::int64_t n) {
    const int D = c_.decoder.hidden, k = c_.k;
    if (from >= n) return;
    y_.resize(static_cast<std::size_t>(n * D));
    std::copy(x_.begin() + from * D, x_.begin() + n * D, y_.begin() + from * D);
    for (std::int64_t t = from; t < n; ++t) assigned_.push_back(row_patch(t));
    auto range = [&](std::int64_t r) {
      const std::int64_t d = assigned_[from + r];
      return std::pair<std::int64_t, std::int64_t>{d * k, (d + 1) * k};
    };
    for (int l = 0; l < c_.decoder.layers; ++l) {
      if (l == 0 || c_.decoder_cross_all) {
        blt_host_detail::cross_query(c_.decoder, w_.decoder_cross[static_cast<std::size_t>(l)], y_.data() + from * D,
                                     n - from, dkv_[static_cast<std::size_t>(l)].data(), slots_, range);
      }
      decoder_.layer(static_cast<std::size_t>(l), y_.data() + from * D, n - from);
    }
    decoder_.advance(n - from);
  }

  const io::BltWeights<float>& w_;
  const io::BltConfig& c_;
  blt_host_detail::Stack patcher_, encoder_, global_, decoder_;
  std::vector<std::int32_t> ids_;
  std::vector<float> h_;                 // entropies
  std::vector<std::int64_t> starts_;     // patch starts
  std::int64_t entropy_start_ = 0;       // the start of the current entropy patch (max_patch_length's split)
  std::vector<float> x_, y_;             // encoder states, decoder states
  std::vector<std::vector<float>> dkv_;  // per decoder cross-attention: k, v of the slots [patches · k, 2 KV hd]
  std::int64_t slots_ = 0;
  std::vector<std::int64_t> assigned_;   // the decoder patch each cached decoder row was run with
  std::int64_t rollbacks_ = 0;
  bool drafting_ = false;                // speculate()'s drafts: the global transformer waits
};

}  // namespace tokenless::models

