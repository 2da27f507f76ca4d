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

  void layer(std::size_t l, float* x, std::int64_t n) {
    const int D = c_.hidden, hd = c_.head_dim, H = c_.heads, KV = c_.kv_heads;
    const int qd = c_.q_dim(), kvd = c_.kv_dim(), qkvd = c_.qkv_dim(), F = c_.intermediate;
    const auto& w = w_[l];
    h_.resize(static_cast<std::size_t>(n * D));
    rms_norm(x, n, D, w.attn_norm, c_.rms_eps, h_.data());
    qkv_.resize(static_cast<std::size_t>(n * qkvd));
    host::gemm_nt(n, qkvd, D, h_.data(), D, w.wqkv.data(), D, qkv_.data(), qkvd);
    // Interleaved RoPE on q and k: pairs (2i, 2i + 1), the fp32 angle.
    host::pool().parallel_for(n, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t t = lo; t < hi; ++t) {
        const auto pos = static_cast<float>(len_ + t);
        for (int i = 0; i < hd / 2; ++i) {
          const float angle = pos * inv_freq_[i];
          const float cs = std::cos(angle), sn = std::sin(angle);
          for (int h2 = 0; h2 < H + KV; ++h2) {
            float* p = qkv_.data() + t * qkvd + h2 * hd + 2 * i;
            const float a = p[0], b = p[1];
            p[0] = a * cs - b * sn;
            p[1] = b * cs + a * sn;
          }
        }
      }
    });
    auto& kc = k_[l];
    auto& vc = v_[l];
    const std::int64_t total = len_ + n;
    kc.resize(static_cast<std::size_t>(total * kvd));
    vc.resize(kc.size());
    for (std::int64_t t = 0; t < n; ++t) {
      std::copy_n(qkv_.data() + t * qkvd + qd, kvd, kc.data() + (len_ + t) * kvd);
      std::copy_n(qkv_.data() + t * qkvd + qd + kvd, kvd, vc.data() + (len_ + t) * kvd);
    }
    attn_.resize(static_cast<std::size_t>(n * qd));
    const std::int64_t base = len_, window = c_.window;
    host_attend(qkv_.data(), qkvd, kc.data(), vc.data(), kvd, n, total, H, KV, hd,
           [&](std::int64_t t) {
             const std::int64_t i = base + t;
             return std::pair<std::int64_t, std::int64_t>{window > 0 ? std::max<std::int64_t>(0, i - window + 1) : 0, i + 1};
           },
           attn_.data(), qd);
    host::gemm_nt(n, D, qd, attn_.data(), qd, w.wo.data(), qd, h_.data(), D);
    for (std::int64_t i = 0; i < n * D; ++i) x[i] += h_[i];
    rms_norm(x, n, D, w.mlp_norm, c_.rms_eps, h_.data());
    gu_.resize(static_cast<std::size_t>(n * 2 * F));
    host::gemm_nt(n, 2 * F, D, h_.data(), D, w.w_gate_up.data(), D, gu_.data(), 2 * F);
    act_.resize(static_cast<std::size_t>(n * F));
    host::pool().parallel_for(n, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t t = lo; t < hi; ++t) {
        const float* g = gu_.data() + t * 2 * F;
        for (int i = 0; i < F; ++i) act_[t * F + i] = g[i] / (1.0f + std::exp(-g[i])) * g[F + i];
      }
    });
    host::gemm_nt(n, D, F, act_.data(), F, w.w_down.data(), F, h_.data(), D);
    for (std::int64_t i = 0; i < n * D; ++i) x[i] += h_[i];
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
// q_norm(x) W_q; query i sees keys range(i).
template <class Range>
void cross_query(const io::BltStackConfig& c, const io::BltCrossWeights<float>& w, float* x, std::int64_t nq,
                 const float* kvp, std::int64_t nk, Range range) {
  const int D = c.hidden, qd = c.q_dim(), kvd = c.kv_dim();
  std::vector<float> h(static_cast<std::size_t>(nq * D)), q(static_cast<std::size_t>(nq * qd)), o(q.size());
  rms_norm(x, nq, D, w.q_norm, c.rms_eps, h.data());
  host::gemm_nt(nq, qd, D, h.data(), D, w.wq.data(), D, q.data(), qd);
  host_attend(q.data(), qd, kvp, kvp + kvd, 2 * kvd, nq, nk, c.heads, c.kv_heads, c.head_dim, range, o.data(), qd);
  host::gemm_nt(nq, D, qd, o.data(), qd, w.wo.data(), qd, h.data(), D);
  for (std::int64_t i = 0; i < nq * D; ++i) x[i] = 2 * x[i] + h[i];
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
  void global_rows() {
    const int De = c_.encoder.hidden, Dg = c_.global.hidden, Dd = c_.decoder.hidden, k = c_.k;
    auto p0 = static_cast<std::size_t>(global_.length());
    std::size_t p1 = p0;
    while (p1 < starts_.size() && complete(p1)) ++p1;
    if (p1 == p0) return;
    const auto P = static_cast<std::int64_t>(p1 - p0);
    std::vector<float> pooled(static_cast<std::size_t>(P * De)), slots(static_cast<std::size_t>(P * k * De));
    std::vector<std::int64_t> lo(static_cast<std::size_t>(P)), hi(lo.size());
    for (std::int64_t q = 0; q < P; ++q) {
      const std::size_t p = p0 + static_cast<std::size_t>(q);
      lo[q] = starts_[p];
      hi[q] = p + 1 < starts_.size() ? starts_[p + 1] : length();
      float* r = pooled.data() + q * De;
      std::copy_n(x_.data() + lo[q] * De, De, r);
      for (std::int64_t t = lo[q] + 1; t < hi[q]; ++t)
        for (int i = 0; i < De; ++i) r[i] = std::max(r[i], x_[t * De + i]);
    }
    host::gemm_nt(P, k * De, De, pooled.data(), De, w_.encoder_projection.data(), De, slots.data(), k * De);
    const std::int64_t b0 = lo[0], b1 = hi[P - 1];  // the new patches' bytes, the only keys they see
    blt_host_detail::cross_attend(c_.encoder, w_.encoder_cross.back(), slots.data(), P * k, x_.data() + b0 * De,
                                  b1 - b0, [&](std::int64_t s) {
                                    return std::pair<std::int64_t, std::int64_t>{lo[s / k] - b0, hi[s / k] - b0};
                                  });
    std::vector<float> g(static_cast<std::size_t>(P * Dg));
    if (c_.global_projection) {
      host::gemm_nt(P, Dg, k * De, slots.data(), k * De, w_.global_projection.data(), k * De, g.data(), Dg);
    } else {
      g = slots;
    }
    global_.forward(g.data(), P);
    // The decoder's slots, and each cross-attention's keys and values of them, cached.
    std::vector<float> dslots(static_cast<std::size_t>(P * k * Dd));
    host::gemm_nt(P, k * Dd, Dg, g.data(), Dg, w_.decoder_projection.data(), Dg, dslots.data(), k * Dd);
    const std::size_t row = static_cast<std::size_t>(2 * c_.decoder.kv_dim());
    dkv_.resize(w_.decoder_cross.size());
    for (std::size_t l = 0; l < dkv_.size(); ++l) {
      const std::size_t old = dkv_[l].size();
      dkv_[l].resize(old + static_cast<std::size_t>(P * k) * row);
      blt_host_detail::cross_kv(c_.decoder, w_.decoder_cross[l], dslots.data(), P * k, dkv_[l].data() + old);
    }
    slots_ += P * k;
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

