#pragma once
// BLT assembled from the library's operations (the model layer: no kernel
// of its own): transformers' BltForCausalLM on the kernels' path
// (tokenless-run --device gpu, or emu: the same code on the CPU SIMT
// executor), a batch of sequences, bf16 or fp16 storage with fp32
// accumulation.
//
//   x_p      = Embedding(ids); DecoderLayer…(x_p)                  the entropy model
//   H        = ByteHead(RmsNorm(x_p)).entropy                      (heads/byte_head.cuh)
//   patches  = Patcher<EntropyGlobal | BytePatches>(H)             CSR, on the device
//   x        = HashEmbeddingForward(ids); DecoderLayer…(x)         the local encoder
//   slots    = SegmentPool<PoolMax>(x) · W_pᵀ                      k rows a patch
//   slots    = 2 slots + Attention<PatchesToBytes>(q_norm(slots), kv_norm(x)) · W_oᵀ
//   g        = DecoderLayer…(slots as [P, k D_e] · W_gᵀ)           the global transformer
//   s_d      = g · W_dᵀ                                            the decoder's slots
//   y        = x; y = 2 y + Attention<BytesToPatches>(q_norm(y), kv_norm(s_d)) · W_oᵀ
//              before the first (or every) DecoderLayer…(y)        the local decoder
//   logits   = RmsNorm(y) · lm_headᵀ                               [n, 260], fp32
//
// Every residual fold (x + δ of the layers' fused residual) is an RmsNorm
// with residual_out, whose normalised output the next step reads; the
// cross-attentions' "2 y + o" is the output projection's GEMM with beta 2.
//
// The patches stay on the device for the pool, the cross-attentions and the
// decoder; forward() reads the patch count once (the global transformer's
// rows) and synchronises there. The decoder reads the last patch as
// transformers does (BltHost::patch_lengths): a second patcher pass with
// include_next_token, or, with max_patch_length, the last patch open.
//
// Enc: the hash embedding's compile-time policy (n-gram sizes, hash
// functions, the fused table); blt_encoder_policy_name() and the runner's
// dispatch match a config to one.
#include <tokenless/attention/attention.cuh>
#include <tokenless/attention/policy.hpp>
#include <tokenless/blocks/decoder.cuh>
#include <tokenless/blocks/norm.cuh>
#include <tokenless/blocks/policy.hpp>
#include <tokenless/blocks/tokens.cuh>
#include <tokenless/bottleneck/pool.cuh>
#include <tokenless/core/cublaslt.hpp>
#include <tokenless/core/device_buffer.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/encoder/hash_embedding.cuh>
#include <tokenless/heads/byte_head.cuh>
#include <tokenless/io/blt_weights.hpp>
#include <tokenless/patcher/patcher.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace tokenless::models {

// The hash embeddings the kernels' path instantiates (BLT ids, the fused
// table of transformers' checkpoints): BLT-1B's and BLT-7B's (n-grams 3–8,
// one hash function), BLT's code defaults and its debug shape (3–8, three),
// and the small one of the test fixtures (3–5, two).
using BltEncoder1B = encoder::HashEmbeddingPolicy<encoder::BltIds, encoder::NGrams<3, 4, 5, 6, 7, 8>, 1, encoder::FusedTable>;
using BltEncoderDefault =
    encoder::HashEmbeddingPolicy<encoder::BltIds, encoder::NGrams<3, 4, 5, 6, 7, 8>, 3, encoder::FusedTable>;
using BltEncoderSmall = encoder::HashEmbeddingPolicy<encoder::BltIds, encoder::NGrams<3, 4, 5>, 2, encoder::FusedTable>;

// Whether the hash-embedding policy Enc is the config's (n-gram sizes in
// order, hash functions, BLT ids, the fused table transformers stores).
template <class Enc>
bool blt_encoder_matches(const io::BltConfig& c) {
  if (Enc::hash_functions != c.hash_functions || Enc::ngrams::size != static_cast<int>(c.ngrams.size())) return false;
  if (!std::is_same_v<typename Enc::layout, encoder::FusedTable> || !std::is_same_v<typename Enc::ids, encoder::BltIds>) {
    return false;
  }
  for (int g = 0; g < Enc::ngrams::size; ++g) {
    if (Enc::ngrams::at(g) != c.ngrams[static_cast<std::size_t>(g)]) return false;
  }
  return true;
}

// f.template operator()<Enc>() with the policy that serves the config, or a
// Status naming what the config asks for.
template <class F>
Status with_blt_encoder(const io::BltConfig& c, F&& f) {
  if (blt_encoder_matches<BltEncoder1B>(c)) return f.template operator()<BltEncoder1B>();
  if (blt_encoder_matches<BltEncoderDefault>(c)) return f.template operator()<BltEncoderDefault>();
  if (blt_encoder_matches<BltEncoderSmall>(c)) return f.template operator()<BltEncoderSmall>();
  std::string sizes;
  for (int g : c.ngrams) sizes += (sizes.empty() ? "" : ", ") + std::to_string(g);
  return Status::error(StatusCode::unsupported,
                       "BLT: the kernels' path has no hash embedding for n-grams [%s] with %d hash functions (it "
                       "instantiates [3..8] with 1 or 3, and [3, 4, 5] with 2; models/blt.cuh); --device cpu runs any",
                       sizes.c_str(), c.hash_functions);
}

// A batch of B sequences (create()'s max_batch) runs as one varlen batch
// through every operation: forward() and prefill() take B prompts, step()
// appends a byte to every stream that steps (the others take no rows: a
// decode batch's empty sequences). Each stream is patched on its own, so a
// batch gives each sequence's result alone (tested). The streams' encoder
// rows and the decoder's patch keys live in two arenas (rows appended as
// the streams grow; the host keeps where each stream's are), read back by
// gathers (blocks::Embedding over the arena's rows): no scatter, no copy a
// stream.
template <class T, class Enc, class HD = attention::SupportedHeadDims>
class BltModel {
 public:
  using Layer = blocks::DecoderLayer<T, blocks::NormThenCast, blocks::RopeInterleaved, blocks::Silu, HD>;
  using Norm = blocks::RmsNorm<blocks::NormThenCast, T>;
  using Embed = blocks::Embedding<T>;  // also the arenas' gathers: out[i] = rows[index[i]]
  using Hash = encoder::HashEmbeddingForward<Enc, T, std::int32_t>;
  using Pool = bottleneck::SegmentPool<bottleneck::PoolMax, T>;
  using EncoderCross = attention::Forward<attention::PatchesToBytes, T, HD>;
  using DecoderCross = attention::Forward<attention::BytesToPatches, T, HD>;
  using FullCross = attention::Forward<attention::Full, T, HD>;  // a step's: one patch's slots or bytes
  using EntropyPatcher = patcher::Patcher<patcher::EntropyGlobal>;
  using BytePatcher = patcher::Patcher<patcher::BytePatches>;
  using Head = heads::ByteHead<blocks::NormThenCast, T>;
  using Gemm = blas::Gemm;
  template <class U>
  using Buf = DeviceBuffer<U>;

  // Uploads the weights (rounded to T) and sizes every buffer for up to
  // max_batch sequences of at most max_bytes ids each (BOS included).
  static Status create(const io::BltWeights<float>& w, std::int64_t max_bytes, std::unique_ptr<BltModel>* out,
                       std::int64_t max_batch = 1) {
    const io::BltConfig& c = w.config;
    if (!blt_encoder_matches<Enc>(c)) {
      return Status::error(StatusCode::unsupported,
                           "BLT: the model was instantiated for another hash embedding (%d functions, %d n-gram sizes) "
                           "than the config's (%d functions, %zu sizes)",
                           Enc::hash_functions, Enc::ngrams::size, c.hash_functions, c.ngrams.size());
    }
    if (c.encoder.hidden != c.decoder.hidden) {
      return Status::error(StatusCode::unsupported, "BLT: encoder and decoder widths differ (%d, %d)", c.encoder.hidden,
                           c.decoder.hidden);
    }
    TL_RETURN_IF_ERROR(check::positive("max_bytes", max_bytes));
    TL_RETURN_IF_ERROR(check::positive("max_batch", max_batch));
    // Every arena row and slot index is 32-bit: B (n + 2) k of them.
    TL_RETURN_IF_ERROR(check::product_fits_int32("max_batch * (max_bytes + 2) * cross_attn_k", max_batch * (max_bytes + 2), c.k));
    auto m = std::unique_ptr<BltModel>(new BltModel());
    m->c_ = c;
    m->max_ = max_bytes;
    m->max_batch_ = max_batch;
    const std::int64_t B = max_batch, n = max_bytes, rows = B * n, patches = B * (n + 2), slots = patches * c.k;
    TL_RETURN_IF_ERROR(blas::LtHandle::create(m->handle_));
    TL_RETURN_IF_ERROR(m->patcher_.create(c.patcher, w.patcher_layers, B, n));
    TL_RETURN_IF_ERROR(m->encoder_.create(c.encoder, w.encoder_layers, B, n));
    TL_RETURN_IF_ERROR(m->global_.create(c.global, w.global_layers, B, n + 1));
    TL_RETURN_IF_ERROR(m->decoder_.create(c.decoder, w.decoder_layers, B, n));
    TL_RETURN_IF_ERROR(upload(w.patcher_embed, m->patcher_embed_));
    TL_RETURN_IF_ERROR(upload(w.patcher_norm, m->patcher_norm_));
    TL_RETURN_IF_ERROR(upload(w.patcher_head, m->patcher_head_));
    TL_RETURN_IF_ERROR(upload(w.byte_embed, m->byte_embed_));
    TL_RETURN_IF_ERROR(upload(w.hash_embed, m->hash_embed_));
    TL_RETURN_IF_ERROR(upload(w.encoder_projection, m->encoder_projection_));
    TL_RETURN_IF_ERROR(upload(w.global_projection, m->global_projection_));
    TL_RETURN_IF_ERROR(upload(w.decoder_projection, m->decoder_projection_));
    TL_RETURN_IF_ERROR(upload(w.decoder_norm, m->decoder_norm_));
    TL_RETURN_IF_ERROR(upload(w.lm_head, m->lm_head_));
    TL_RETURN_IF_ERROR(upload_cross(w.encoder_cross.back(), m->encoder_cross_));
    for (const auto& x : w.decoder_cross) {
      CrossBuffers b;
      TL_RETURN_IF_ERROR(upload_cross(x, b));
      m->decoder_cross_.push_back(std::move(b));
    }
    const int De = c.encoder.hidden, Dg = c.global.hidden, Dp = c.patcher.hidden;
    const std::int64_t wide = std::max<std::int64_t>({Dp, De, Dg, std::int64_t{c.k} * De});
    TL_RETURN_IF_ERROR(m->ids_.allocate(static_cast<std::size_t>(rows)));
    TL_RETURN_IF_ERROR(m->entropies_.allocate(static_cast<std::size_t>(rows)));
    for (auto* p : {&m->enc_patches_, &m->dec_patches_}) TL_RETURN_IF_ERROR(p->allocate(B, rows + B));
    for (auto* p : {&m->cu_, &m->cu_slots_}) TL_RETURN_IF_ERROR(p->allocate(static_cast<std::size_t>(B + 1)));
    // Scratch rows: bytes (B n), slots (<= B (n + 1) k) or patches, each as
    // wide as any of the tensors that pass through them.
    const std::int64_t scratch = std::max(slots, rows);
    std::int64_t cols = wide;
    for (const auto* st : {&c.patcher, &c.encoder, &c.global, &c.decoder}) {
      cols = std::max<std::int64_t>({cols, st->qkv_dim(), 2 * st->kv_dim(), st->q_dim()});
    }
    for (auto* b : {&m->x_, &m->delta_, &m->px_, &m->h_, &m->q_, &m->o_, &m->attn_, &m->slots_, &m->kv_}) {
      TL_RETURN_IF_ERROR(b->allocate(static_cast<std::size_t>(scratch * cols)));
    }
    TL_RETURN_IF_ERROR(upload(std::vector<float>(static_cast<std::size_t>(Dg), 1.0f), m->ones_));
    TL_RETURN_IF_ERROR(m->y_.allocate(static_cast<std::size_t>(rows * De)));
    TL_RETURN_IF_ERROR(m->last_.allocate(static_cast<std::size_t>(B * De)));
    TL_RETURN_IF_ERROR(m->g_.allocate(static_cast<std::size_t>(patches * Dg)));
    TL_RETURN_IF_ERROR(m->gdelta_.allocate(static_cast<std::size_t>(patches * Dg)));
    for (std::size_t l = 0; l < m->decoder_cross_.size(); ++l) {
      Buf<T> kv;
      TL_RETURN_IF_ERROR(kv.allocate(static_cast<std::size_t>(slots * 2 * c.decoder.kv_dim())));
      m->decoder_kv_.push_back(std::move(kv));
    }
    TL_RETURN_IF_ERROR(m->logits_.allocate(static_cast<std::size_t>(rows * c.vocab)));
    TL_RETURN_IF_ERROR(m->next_.allocate(static_cast<std::size_t>(B)));
    TL_RETURN_IF_ERROR(m->positions_.allocate(static_cast<std::size_t>(B)));
    int widest = 1;
    for (int g : c.ngrams) widest = std::max(widest, g);
    m->widest_ = widest;
    // A step's index arrays (uploaded together): ids, windows, the global's
    // bytes and segments, gathers, counts (meta()'s layout).
    TL_RETURN_IF_ERROR(m->meta_.allocate(static_cast<std::size_t>(3 * rows + B * (widest + 4 * c.k + 16) + 64)));
    TL_RETURN_IF_ERROR(m->size_workspace());
    *out = std::move(m);
    return Status::ok();
  }

  const io::BltConfig& config() const { return c_; }
  std::int64_t max_batch() const { return max_batch_; }
  // A new entropy threshold (a calibration: patcher/calibrate.cuh picks one
  // for a target patch length); the next prefill or forward cuts with it.
  Status set_threshold(float threshold) {
    if (!std::isfinite(threshold)) {
      return Status::argument(StatusCode::invalid_argument, "threshold", "a finite entropy (nats)", "%g",
                              static_cast<double>(threshold));
    }
    c_.threshold = threshold;
    cached_ = false;  // the caches were cut with the old one
    return Status::ok();
  }
  // How next() picks: greedy (temperature 0, the default) or heads::Sampling's
  // seeded draw through the byte head, stream b's byte at position t drawn
  // with offset t and row b (models::blt_generate's key: the same bytes as
  // the host's for a seed, where rounding cannot flip a draw). seed and
  // temperature/top_p are used; offset is the position.
  Status set_sampling(const heads::Sampling& s) {
    TL_RETURN_IF_ERROR(heads::check_sampling(s));
    sampling_ = s;
    return Status::ok();
  }
  std::int64_t batch() const { return static_cast<std::int64_t>(s_.size()); }
  std::int64_t length(std::int64_t b = 0) const { return at(b).n(); }
  std::int64_t patches(std::int64_t b = 0) const { return at(b).patches; }

  // The whole sequences through the model, no cache kept: the logits of
  // every position (logits()), the entropies, the patches, and each
  // sequence's next id (next()). Synchronises once, to read the patch counts.
  Status forward(const std::vector<std::vector<std::int32_t>>& seqs, cudaStream_t stream = nullptr) {
    return whole(seqs, false, stream);
  }
  Status forward(const std::vector<std::int32_t>& ids, cudaStream_t stream = nullptr) { return forward(one(ids), stream); }

  // Cached generation (models::BltStream's, on the kernels): prefill() runs
  // the prompts as forward() does and fills every cache (the entropy
  // model's, the encoder's and its states, the global transformer's over the
  // complete patches, the decoder's and each cross-attention's keys and
  // values of the slots); step(ids) then appends ids[b] to stream b (a
  // negative id: stream b does not step): the entropy model's rows, whose
  // entropies the host reads (they decide whether each byte's patch is
  // complete), the encoder's rows, one global step over the newly completed
  // patches of every stream, and the decoder's rows (with the row before
  // again where max_patch_length completed that row's patch a byte late).
  // logits() then holds a row a stream, next() each stream's next byte. A
  // step synchronises once, to read the entropies.
  Status prefill(const std::vector<std::vector<std::int32_t>>& prompts, cudaStream_t stream = nullptr) {
    return whole(prompts, true, stream);
  }
  Status prefill(const std::vector<std::int32_t>& ids, cudaStream_t stream = nullptr) { return prefill(one(ids), stream); }
  Status step(std::int32_t id, cudaStream_t stream = nullptr) { return step(std::vector<std::int32_t>{id}, stream); }
  Status step(const std::vector<std::int32_t>& ids, cudaStream_t stream = nullptr) {
    if (!cached_) {
      return Status::argument(StatusCode::invalid_argument, "step", "a prefill() before it", "a forward() or nothing");
    }
    if (ids.size() != s_.size()) {
      return Status::argument(StatusCode::invalid_argument, "ids", "an id a stream of the prefill (negative: none)",
                              "%zu ids for %zu streams", ids.size(), s_.size());
    }
    std::int64_t stepping = 0;
    for (std::size_t b = 0; b < ids.size(); ++b) {
      if (ids[b] < 0) continue;
      ++stepping;
      if (ids[b] >= c_.vocab) {
        return Status::argument(StatusCode::invalid_argument, "ids", "ids in [0, 260)", "%d for stream %zu", ids[b], b);
      }
      if (s_[b].n() + 1 > max_) {
        return Status::argument(StatusCode::capacity_too_small, "max_bytes", "room for one more byte",
                                "stream %zu: %lld bytes, all used", b, static_cast<long long>(max_));
      }
    }
    if (stepping == 0) return Status::argument(StatusCode::invalid_argument, "ids", "at least one stream stepping", "none");
    const auto B = static_cast<std::int64_t>(s_.size());
    attend_ = blocks::Attend::decode;
    last_step_ = true;
    // 1. The entropy model's rows (one a stepping stream); their entropies
    //    decide whether the bytes' patches are complete.
    Meta m;
    const auto step_ids = m.add(stepping), cu_step = m.add(B + 1);
    for (std::int64_t b = 0, j = 0; b < B; ++b) {
      m[cu_step + b] = static_cast<std::int32_t>(j);
      if (ids[b] >= 0) m[step_ids + j++] = ids[b];
    }
    m[cu_step + B] = static_cast<std::int32_t>(stepping);
    // The encoder's rows: each stream's last n-gram window (the hash's rows),
    // the window's last row gathered into the arena.
    const auto cu_win = m.add(stepping + 1), win_last = m.add(stepping);
    std::vector<std::int32_t> window;
    for (std::int64_t b = 0, j = 0; b < B; ++b) {
      if (ids[b] < 0) continue;
      Stream& s = s_[b];
      s.ids.push_back(ids[b]);
      const std::int64_t t = s.n() - 1, w0 = std::max<std::int64_t>(0, t - widest_ + 1);
      m[cu_win + j] = static_cast<std::int32_t>(window.size());
      window.insert(window.end(), s.ids.begin() + w0, s.ids.end());
      m[win_last + j] = static_cast<std::int32_t>(window.size()) - 1;
      s.x_row.push_back(static_cast<std::int32_t>(x_top_ + j));
      ++j;
    }
    m[cu_win + stepping] = static_cast<std::int32_t>(window.size());
    const auto win_ids = m.add(static_cast<std::int64_t>(window.size()));
    std::copy(window.begin(), window.end(), &m[win_ids]);
    TL_RETURN_IF_ERROR(m.upload(meta_, stream));
    const VarlenBatch rows = VarlenBatch::packed(meta(cu_step), B, stepping);  // a row a stepping stream
    TL_RETURN_IF_ERROR(entropy_model(meta(step_ids), rows, entropies_.get(), stream));
    if (c_.patching == io::BltPatching::kEntropy) {
      std::vector<float> h(static_cast<std::size_t>(stepping));
      TL_RETURN_IF_ERROR(entropies_.download(h.data(), h.size(), stream));  // synchronises
      for (std::int64_t b = 0, j = 0; b < B; ++b) {
        if (ids[b] >= 0) s_[b].h.push_back(h[static_cast<std::size_t>(j++)]);
      }
    } else {
      for (std::int64_t b = 0; b < B; ++b) {
        if (ids[b] >= 0) s_[b].h.push_back(0.0f);
      }
    }
    for (std::int64_t b = 0; b < B; ++b) {
      if (ids[b] >= 0) cut(s_[b], s_[b].n() - 1);  // H[t - 1] is known: whether byte t starts a patch
    }
    {
      const int D = c_.encoder.hidden;
      auto h = hash_args(meta(win_ids), VarlenBatch::packed(meta(cu_win), stepping, static_cast<std::int64_t>(window.size())));
      h.output = o_.get();
      TL_RETURN_IF_ERROR(Hash::run(h, region(kHashRegion), stream));
      T* x = x_.get() + x_top_ * D;
      TL_RETURN_IF_ERROR(gather(o_.get(), static_cast<std::int64_t>(window.size()), meta(win_last), stepping, D, x, stream));
      TL_RETURN_IF_ERROR(layers(encoder_, 0, encoder_.layers.size(), true, x, delta_.get(), rows, stream));
      TL_RETURN_IF_ERROR(fold(x, delta_.get(), encoder_cross_.kv_norm.get(), D, c_.encoder.rms_eps, stepping, h_.get(), stream));
      x_top_ += stepping;
    }
    // 2. The patches completed now, every stream's at once; 3. the decoder's rows.
    Meta g;  // its own region of meta_ (the first's upload may still be read)
    g.base = m.size();
    TL_RETURN_IF_ERROR(global_step(ids, g, stream));
    return decoder_step(ids, g, stream);
  }
  std::int64_t global_steps(std::int64_t b = 0) const { return at(b).global_steps; }  // patches through the global, cached
  std::int64_t rollbacks(std::int64_t b = 0) const { return at(b).rollbacks; }

  // The last call's logits (fp32): forward's or prefill's [Σ n_b, 260]
  // (the sequences in order), a step's [B, 260] (row b: stream b; a row of a
  // stream that did not step is unspecified). Synchronises.
  Status logits(std::vector<float>& out, cudaStream_t stream = nullptr) const {
    out.resize(static_cast<std::size_t>(rows_ * c_.vocab));
    return logits_.download(out.data(), out.size(), stream);
  }
  // Stream b's rows of them: its n_b positions, or its step's one.
  Status logits(std::int64_t b, std::vector<float>& out, cudaStream_t stream = nullptr) const {
    const Stream& s = at(b);
    const std::int64_t first = last_step_ ? b : s.first, rows = last_step_ ? 1 : s.n();
    out.resize(static_cast<std::size_t>(rows * c_.vocab));
    TL_CUDA_TRY(cudaMemcpyAsync(out.data(), logits_.get() + first * c_.vocab, out.size() * sizeof(float),
                                cudaMemcpyDeviceToHost, stream));
    TL_CUDA_TRY(cudaStreamSynchronize(stream));
    return Status::ok();
  }
  // Stream b's entropies [n_b] (nats; zeros for byte patching); synchronises.
  Status entropies(std::vector<float>& out, cudaStream_t stream = nullptr) const { return entropies(0, out, stream); }
  Status entropies(std::int64_t b, std::vector<float>& out, cudaStream_t stream = nullptr) const {
    const Stream& s = at(b);
    if (c_.patching != io::BltPatching::kEntropy) {
      out.assign(static_cast<std::size_t>(s.n()), 0.0f);
      return Status::ok();
    }
    if (cached_) {
      out = s.h;
      return Status::ok();
    }
    out.resize(static_cast<std::size_t>(s.n()));
    TL_CUDA_TRY(cudaMemcpyAsync(out.data(), entropies_.get() + s.first, out.size() * sizeof(float),
                                cudaMemcpyDeviceToHost, stream));
    TL_CUDA_TRY(cudaStreamSynchronize(stream));
    return Status::ok();
  }
  // Stream b's patch lengths (summing to n_b); synchronises.
  Status patch_lengths(std::vector<std::int64_t>& out, cudaStream_t stream = nullptr) const {
    return patch_lengths(0, out, stream);
  }
  Status patch_lengths(std::int64_t b, std::vector<std::int64_t>& out, cudaStream_t stream = nullptr) const {
    const Stream& s = at(b);
    if (cached_) {  // the stream's, on the host
      out.clear();
      for (std::size_t p = 0; p < s.starts.size(); ++p) {
        out.push_back((p + 1 < s.starts.size() ? s.starts[p + 1] : s.n()) - s.starts[p]);
      }
      return Status::ok();
    }
    std::vector<std::int32_t> l(static_cast<std::size_t>(s.patches));
    TL_CUDA_TRY(cudaMemcpyAsync(l.data(), enc_patches_.lengths.get() + s.first_patch, l.size() * sizeof(std::int32_t),
                                cudaMemcpyDeviceToHost, stream));
    TL_CUDA_TRY(cudaStreamSynchronize(stream));
    out.assign(l.begin(), l.end());
    return Status::ok();
  }
  // Each sequence's next id after the last call (greedy, or set_sampling()'s
  // draw); synchronises.
  Status next(std::int32_t* id, cudaStream_t stream = nullptr) const { return next_.download(id, 1, stream); }
  Status next(std::vector<std::int32_t>& ids, cudaStream_t stream = nullptr) const {
    ids.resize(s_.size());
    return next_.download(ids.data(), ids.size(), stream);
  }

  // The device-side checks of the last forward (the patcher's, the hash
  // embedding's), the first failure named; synchronises.
  Status read_status(cudaStream_t stream = nullptr) const {
    TL_RETURN_IF_ERROR(Hash::read_status(hash_args(ids_.get(), bytes_batch()), region(kHashRegion), stream));
    if (c_.patching == io::BltPatching::kEntropy) {
      TL_RETURN_IF_ERROR(EntropyPatcher::read_status(entropy_patcher_args(false), region(kPatcherRegion), stream));
    }
    return Status::ok();
  }

 private:
  // A stream's host state: its ids, entropies and patch starts (they decide
  // the patches), where its rows are in the arenas, the global's progress.
  struct Stream {
    std::vector<std::int32_t> ids;
    std::vector<float> h;
    std::vector<std::int64_t> starts;
    std::vector<std::int32_t> x_row;   // the arena row of each byte's encoder output
    std::vector<std::int32_t> kv_row;  // the decoder arena's first row of each global-run patch's k slots
    std::int64_t first = 0, first_patch = 0, patches = 0;  // the last forward's: its rows, patches
    std::int64_t entropy_start = 0, global_len = 0, last_patch = 0, global_steps = 0, rollbacks = 0;
    std::int64_t n() const { return static_cast<std::int64_t>(ids.size()); }
  };
  const Stream& at(std::int64_t b) const {
    static const Stream none;
    return b >= 0 && b < static_cast<std::int64_t>(s_.size()) ? s_[static_cast<std::size_t>(b)] : none;
  }
  static std::vector<std::vector<std::int32_t>> one(const std::vector<std::int32_t>& ids) { return {ids}; }

  // A call's index arrays, laid out on the host and uploaded in one copy
  // into meta_ at `base`.
  struct Meta {
    std::vector<std::int32_t> data;
    std::int64_t base = 0;
    // n more entries; returns the first's index in meta_.
    std::int64_t add(std::int64_t n) {
      const std::int64_t first = size();
      data.resize(data.size() + static_cast<std::size_t>(n), 0);
      return first;
    }
    std::int32_t& operator[](std::int64_t i) { return data[static_cast<std::size_t>(i - base)]; }
    std::int64_t size() const { return base + static_cast<std::int64_t>(data.size()); }
    Status upload(Buf<std::int32_t>& dev, cudaStream_t stream) const {
      if (data.empty()) return Status::ok();
      TL_CUDA_TRY(cudaMemcpyAsync(dev.get() + base, data.data(), data.size() * sizeof(std::int32_t),
                                  cudaMemcpyHostToDevice, stream));
      return Status::ok();
    }
  };
  const std::int32_t* meta(std::int64_t at) const { return meta_.get() + at; }

  Status whole(const std::vector<std::vector<std::int32_t>>& seqs, bool cached, cudaStream_t stream) {
    const auto B = static_cast<std::int64_t>(seqs.size());
    if (B < 1 || B > max_batch_) {
      return Status::argument(StatusCode::invalid_argument, "prompts", "1 to max_batch sequences", "%lld (max %lld)",
                              static_cast<long long>(B), static_cast<long long>(max_batch_));
    }
    std::vector<std::int32_t> ids, cu(1, 0);
    for (std::int64_t b = 0; b < B; ++b) {
      const auto& q = seqs[static_cast<std::size_t>(b)];
      const auto n = static_cast<std::int64_t>(q.size());
      if (n < 1 || n > max_) {
        return Status::argument(StatusCode::invalid_argument, "ids", "1 to max_bytes ids a sequence",
                                "sequence %lld: %lld (max %lld)", static_cast<long long>(b), static_cast<long long>(n),
                                static_cast<long long>(max_));
      }
      for (std::int64_t i = 0; i < n; ++i) {
        if (q[i] < 0 || q[i] >= c_.vocab) {
          return Status::argument(StatusCode::invalid_argument, "ids", "ids in [0, 260)",
                                  "%d at position %lld of sequence %lld", q[i], static_cast<long long>(i),
                                  static_cast<long long>(b));
        }
      }
      ids.insert(ids.end(), q.begin(), q.end());
      cu.push_back(static_cast<std::int32_t>(ids.size()));
    }
    const auto total = static_cast<std::int64_t>(ids.size());
    s_.assign(static_cast<std::size_t>(B), Stream{});
    for (std::int64_t b = 0; b < B; ++b) {
      s_[b].ids = seqs[static_cast<std::size_t>(b)];
      s_[b].first = cu[b];
    }
    total_ = rows_ = total;
    cached_ = cached;
    last_step_ = false;
    attend_ = blocks::Attend::prefill;
    if (cached) {  // a prefill that fills a cache starts it empty
      for (auto* st : {&patcher_, &encoder_, &global_, &decoder_}) TL_RETURN_IF_ERROR(st->len.fill_bytes(0, stream));
    }
    TL_RETURN_IF_ERROR(ids_.upload(ids, stream));
    TL_RETURN_IF_ERROR(cu_.upload(cu, stream));
    TL_RETURN_IF_ERROR(entropy_model(ids_.get(), bytes_batch(), entropies_.get(), stream));
    TL_RETURN_IF_ERROR(patch(stream));
    std::vector<std::int32_t> off(static_cast<std::size_t>(B + 1));
    TL_RETURN_IF_ERROR(enc_patches_.offsets.download(off.data(), off.size(), stream));  // synchronises: the global's rows
    P_ = off[B];
    std::vector<std::int32_t> cu_slots(off.size());
    for (std::int64_t b = 0; b <= B; ++b) cu_slots[b] = off[b] * c_.k;
    for (std::int64_t b = 0; b < B; ++b) {
      s_[b].first_patch = off[b];
      s_[b].patches = off[b + 1] - off[b];
    }
    TL_RETURN_IF_ERROR(cu_slots_.upload(cu_slots, stream));
    TL_RETURN_IF_ERROR(local_encoder(stream));
    TL_RETURN_IF_ERROR(global_model(stream));
    TL_RETURN_IF_ERROR(local_decoder(stream));
    // Each sequence's next id, from its last row.
    Meta m;
    const auto last = m.add(B);
    std::vector<std::int64_t> positions(static_cast<std::size_t>(B));
    for (std::int64_t b = 0; b < B; ++b) {
      m[last + b] = cu[b + 1] - 1;
      positions[b] = s_[b].n();
    }
    TL_RETURN_IF_ERROR(m.upload(meta_, stream));
    TL_RETURN_IF_ERROR(pick_next(h_.get(), total, meta(last), positions, stream));
    if (!cached) return Status::ok();
    // The host's view of the patches, as a stream would have cut them.
    std::vector<float> h(static_cast<std::size_t>(total), 0.0f);
    if (c_.patching == io::BltPatching::kEntropy) TL_RETURN_IF_ERROR(entropies_.download(h.data(), h.size(), stream));
    Meta d;  // the global's rollbacks
    d.base = m.size();
    const auto drop = d.add(B);
    bool any = false;
    for (std::int64_t b = 0; b < B; ++b) {
      Stream& s = s_[b];
      s.h.assign(h.begin() + cu[b], h.begin() + cu[b + 1]);
      for (std::int64_t t = 0; t < s.n(); ++t) {
        cut(s, t);
        s.x_row.push_back(static_cast<std::int32_t>(cu[b] + t));
      }
      // Only complete patches stay in the global transformer's cache (the
      // last one's row leaves it when it is still growing).
      while (s.global_len < static_cast<std::int64_t>(s.starts.size()) && complete(s, s.global_len)) ++s.global_len;
      s.global_steps = s.global_len;
      for (std::int64_t p = 0; p < s.global_len; ++p) s.kv_row.push_back(static_cast<std::int32_t>((off[b] + p) * c_.k));
      if (s.global_len < s.patches) {
        d[drop + b] = 1;
        any = true;
      }
      s.last_patch = decoder_patch(s, s.n() - 1);
    }
    x_top_ = total;
    kv_top_ = std::int64_t{P_} * c_.k;
    if (any) {
      TL_RETURN_IF_ERROR(d.upload(meta_, stream));
      for (std::size_t l = 0; l < global_.layers.size(); ++l) TL_RETURN_IF_ERROR(rollback(global_, l, meta(drop), stream));
    }
    return Status::ok();
  }
  template <class S>  // Stack, declared below
  Status rollback(S& s, std::size_t l, const std::int32_t* drop, cudaStream_t stream) {
    const auto B = static_cast<std::int64_t>(s_.size());
    return attention::KvCacheRollback::run({s.len.get() + l * max_batch_, drop, B}, region(kSharedRegion), stream);
  }

  // Whether position t starts a patch (BltStream's rule: 0 and 1 always, then
  // H[t - 1] > θ, then max_patch_length's split of an entropy patch); records it.
  void cut(Stream& s, std::int64_t t) const {
    if (t <= 1 || c_.patching != io::BltPatching::kEntropy || s.h[t - 1] > c_.threshold) {
      s.starts.push_back(t);
      s.entropy_start = t;
    } else if (c_.max_patch_length > 0 && (t - s.entropy_start) % c_.max_patch_length == 0) {
      s.starts.push_back(t);
    }
  }
  // Whether patch p is complete at the stream's length (BltHost::patch_lengths' rule).
  bool complete(const Stream& s, std::int64_t p) const {
    if (p == 0 || p + 1 < static_cast<std::int64_t>(s.starts.size())) return true;
    if (c_.patching == io::BltPatching::kByte) return true;
    return c_.max_patch_length == 0 && (s.n() == 1 || s.h[s.n() - 1] > c_.threshold);
  }
  // The decoder patch of row t: the last complete patch ending at or before it.
  std::int64_t decoder_patch(const Stream& s, std::int64_t t) const {
    const auto it = std::upper_bound(s.starts.begin(), s.starts.end(), t + 1);
    auto p = static_cast<std::int64_t>(it - s.starts.begin()) - 2;
    if (p + 1 == static_cast<std::int64_t>(s.starts.size()) - 1 && t == s.n() - 1 && complete(s, p + 1) &&
        s.starts.back() <= t) {
      ++p;
    }
    return std::max<std::int64_t>(p, 0);
  }

  struct LayerBuffers {
    Buf<T> attn_norm, wqkv, wo, mlp_norm, w_gate_up, w_down;
  };
  struct CrossBuffers {
    Buf<T> q_norm, kv_norm, wq, wkv, wo;
  };
  struct PatchBuffers {
    Buf<std::uint8_t> flags;
    Buf<std::int32_t> ids, offsets, starts, lengths;
    std::int64_t capacity = 0;
    Status allocate(std::int64_t seqs, std::int64_t positions) {
      capacity = positions;
      TL_RETURN_IF_ERROR(flags.allocate(static_cast<std::size_t>(positions)));
      TL_RETURN_IF_ERROR(ids.allocate(static_cast<std::size_t>(positions)));
      TL_RETURN_IF_ERROR(offsets.allocate(static_cast<std::size_t>(seqs + 1)));
      TL_RETURN_IF_ERROR(starts.allocate(static_cast<std::size_t>(positions)));
      return lengths.allocate(static_cast<std::size_t>(positions));
    }
    patcher::PatchOutputs outputs() const {
      return {const_cast<std::uint8_t*>(flags.get()), const_cast<std::int32_t*>(ids.get()),
              const_cast<std::int32_t*>(offsets.get()), const_cast<std::int32_t*>(starts.get()),
              const_cast<std::int32_t*>(lengths.get()), capacity};
    }
    Segments segments() const { return {offsets.get(), starts.get(), lengths.get(), nullptr}; }
  };
  // One of BLT's transformer stacks: its layers, RoPE table and shape.
  struct Stack {
    blocks::DecoderShape shape;
    std::vector<LayerBuffers> layers;
    Buf<float> inv_freq;
    // The KV caches ([B, capacity, kv_heads, head_dim] a layer) and their
    // lengths ([layers, B]: layer l's at l · max_batch).
    std::vector<Buf<T>> k, v;
    Buf<std::int32_t> len;
    std::int64_t capacity = 0;
    Status create(const io::BltStackConfig& c, const std::vector<io::BltLayerWeights<float>>& w, std::int64_t seqs,
                  std::int64_t cap) {
      capacity = cap;
      k.resize(w.size());
      v.resize(w.size());
      for (std::size_t l = 0; l < w.size(); ++l) {
        TL_RETURN_IF_ERROR(k[l].allocate(static_cast<std::size_t>(seqs * cap * c.kv_dim())));
        TL_RETURN_IF_ERROR(v[l].allocate(static_cast<std::size_t>(seqs * cap * c.kv_dim())));
      }
      TL_RETURN_IF_ERROR(len.allocate(std::max<std::size_t>(1, w.size()) * static_cast<std::size_t>(seqs)));
      // The decoder layer's rows are 16-byte multiples: an FFN width that is
      // not a multiple of 8 (transformers' default encoder FFN, 2730) is
      // padded with zero gate and up rows and zero down columns, which add
      // exact zeros (silu(0) · 0) to every sum: the same model.
      const int F = c.intermediate, Fp = (F + 7) / 8 * 8;
      shape = {.hidden = c.hidden,
               .heads = c.heads,
               .kv_heads = c.kv_heads,
               .head_dim = c.head_dim,
               .rot_dim = c.head_dim,
               .ffn = Fp,
               .experts = 0,
               .top_k = 0,
               .window = c.window,
               .eps = c.rms_eps};
      for (const auto& l : w) {
        LayerBuffers b;
        TL_RETURN_IF_ERROR(upload(l.attn_norm, b.attn_norm));
        TL_RETURN_IF_ERROR(upload(l.wqkv, b.wqkv));
        TL_RETURN_IF_ERROR(upload(l.wo, b.wo));
        TL_RETURN_IF_ERROR(upload(l.mlp_norm, b.mlp_norm));
        if (Fp == F) {
          TL_RETURN_IF_ERROR(upload(l.w_gate_up, b.w_gate_up));
          TL_RETURN_IF_ERROR(upload(l.w_down, b.w_down));
        } else {
          const auto D = static_cast<std::size_t>(c.hidden), f = static_cast<std::size_t>(F),
                     fp = static_cast<std::size_t>(Fp);
          std::vector<float> gu(2 * fp * D, 0.0f), down(D * fp, 0.0f);
          for (std::size_t half = 0; half < 2; ++half) {  // gate rows, then up rows
            std::copy_n(l.w_gate_up.begin() + static_cast<std::ptrdiff_t>(half * f * D), f * D,
                        gu.begin() + static_cast<std::ptrdiff_t>(half * fp * D));
          }
          for (std::size_t r = 0; r < D; ++r) {
            std::copy_n(l.w_down.begin() + static_cast<std::ptrdiff_t>(r * f), f, down.begin() + static_cast<std::ptrdiff_t>(r * fp));
          }
          TL_RETURN_IF_ERROR(upload(gu, b.w_gate_up));
          TL_RETURN_IF_ERROR(upload(down, b.w_down));
        }
        layers.push_back(std::move(b));
      }
      std::vector<float> f(static_cast<std::size_t>(c.head_dim / 2));
      TL_RETURN_IF_ERROR(blocks::rope_inv_freq(c.rope, c.head_dim, f.data()));
      TL_RETURN_IF_ERROR(inv_freq.allocate(f.size()));
      return inv_freq.upload(f);
    }
  };

  BltModel() = default;

  static Status upload(const std::vector<float>& host, Buf<T>& dev) {
    if (host.empty()) return Status::ok();
    std::vector<T> t(host.size());
    std::transform(host.begin(), host.end(), t.begin(), [](float v) { return from_float<T>(v); });
    TL_RETURN_IF_ERROR(dev.allocate(t.size()));
    return dev.upload(t);
  }
  static Status upload_cross(const io::BltCrossWeights<float>& w, CrossBuffers& b) {
    TL_RETURN_IF_ERROR(upload(w.q_norm, b.q_norm));
    TL_RETURN_IF_ERROR(upload(w.kv_norm, b.kv_norm));
    TL_RETURN_IF_ERROR(upload(w.wq, b.wq));
    TL_RETURN_IF_ERROR(upload(w.wkv, b.wkv));
    return upload(w.wo, b.wo);
  }

  // The workspace: the hash embedding's and the patcher's status records
  // kept apart (read_status() reads them after the forward), then one region
  // every other operation shares in turn. Sized for the largest call: a
  // prefill of max_batch full sequences, or a step of two rows a stream.
  enum Region { kHashRegion, kPatcherRegion, kSharedRegion };
  Status size_workspace() {
    const std::int64_t B = max_batch_, n = max_;
    s_.assign(static_cast<std::size_t>(B), Stream{});  // the batches' sequence counts
    total_ = B * n;
    P_ = B * (n + 1);
    std::size_t shared = Gemm::workspace_size({});
    for (const bool cached : {false, true}) {
      cached_ = cached;
      for (const auto mode : {blocks::Attend::prefill, blocks::Attend::decode}) {
        attend_ = mode;
        const bool prefill = mode == blocks::Attend::prefill;
        auto ws = [&](const Stack& s, std::int64_t rows) -> std::size_t {
          if (s.layers.empty()) return 0;
          const auto batch = VarlenBatch::uniform(B, prefill ? rows : 2);
          return Layer::workspace_size(layer_args(s, 0, x_.get(), delta_.get(), batch));
        };
        shared = std::max({shared, ws(patcher_, n), ws(encoder_, n), ws(global_, n + 1), ws(decoder_, n)});
      }
    }
    cached_ = false;
    attend_ = blocks::Attend::prefill;
    shared = std::max(shared, Head::workspace_size(entropy_head_args(entropies_.get(), total_)));
    shared = std::max(shared, Head::workspace_size(next_head_args(h_.get(), B)));
    shared = std::max(shared, Pool::workspace_size(pool_args()));
    shared = std::max(shared, Embed::workspace_size({}));
    shared = std::max(shared, EncoderCross::workspace_size({}));
    shared = std::max(shared, DecoderCross::workspace_size({}));
    shared = std::max(shared, FullCross::workspace_size({}));
    shared = std::max(shared, attention::KvCacheRollback::workspace_size({}));
    shared = std::max(shared, BytePatcher::workspace_size(byte_patcher_args(true)));
    shared = std::max(shared, EntropyPatcher::workspace_size(entropy_patcher_args(true)));
    regions_[kHashRegion] = Hash::workspace_size(hash_args(ids_.get(), VarlenBatch::uniform(B, n)));
    regions_[kPatcherRegion] = std::max(EntropyPatcher::workspace_size(entropy_patcher_args(false)),
                                        BytePatcher::workspace_size(byte_patcher_args(false)));
    regions_[kSharedRegion] = shared;
    total_ = P_ = 0;
    s_.clear();
    std::size_t total = 0;
    for (std::size_t r = 0; r < 3; ++r) {
      offsets_[r] = total;
      total += (regions_[r] + 255) / 256 * 256;
    }
    return ws_.allocate(total);
  }
  Workspace region(Region r) const { return {const_cast<unsigned char*>(ws_.get()) + offsets_[r], regions_[r]}; }

  // The last forward's bytes as a varlen batch (cu_ on the device).
  VarlenBatch bytes_batch() const {
    return VarlenBatch::packed(cu_.get(), std::max<std::int64_t>(1, static_cast<std::int64_t>(s_.size())), total_);
  }

  typename Layer::Arguments layer_args(const Stack& s, std::size_t l, T* x, T* delta, VarlenBatch batch) const {
    const LayerBuffers& b = s.layers[l];
    typename Layer::Arguments a;
    a.handle = &handle_;
    a.shape = s.shape;
    a.w = {b.attn_norm.get(), b.wqkv.get(), b.wo.get(), b.mlp_norm.get(), b.w_gate_up.get(), b.w_down.get(), nullptr};
    a.inv_freq = s.inv_freq.get();
    a.batch = batch;
    a.x = x;
    a.delta = delta;
    a.attend = attend_;
    if (cached_) {
      a.k_cache = const_cast<T*>(s.k[l].get());
      a.v_cache = const_cast<T*>(s.v[l].get());
      a.cache_len = const_cast<std::int32_t*>(s.len.get()) + l * max_batch_;
      a.capacity = s.capacity;
      a.max_queries = 2;  // a step's rows a stream: its byte, and the one before after a rollback (or two patches)
    }
    return a;
  }
  // Layers [l0, l1) of a stack over the batch's rows of x, leaving the stream
  // as x + delta; `first`: x holds the whole stream before layer l0 (no delta to add).
  Status layers(const Stack& s, std::size_t l0, std::size_t l1, bool first, T* x, T* delta, VarlenBatch batch,
                cudaStream_t stream) {
    for (std::size_t l = l0; l < l1; ++l) {
      auto a = layer_args(s, l, x, delta, batch);
      a.first = first && l == l0;
      TL_RETURN_IF_ERROR(Layer::run(a, region(kSharedRegion), stream));
    }
    return Status::ok();
  }
  // out = norm(x + delta) (weight), x ← x + delta; or out = norm(x) without delta.
  Status fold(T* x, const T* delta, const T* weight, int d, float eps, std::int64_t rows, T* out, cudaStream_t stream) {
    typename Norm::Arguments a;
    a.x = delta ? delta : x;
    a.residual = delta ? x : nullptr;
    a.weight = weight;
    a.rows = rows;
    a.d = d;
    a.eps = eps;
    a.out = out;
    a.residual_out = delta ? x : nullptr;
    return Norm::run(a, {}, stream);
  }
  // d[m, n] = a[m, k] · w[n, k]ᵀ (+ beta · d).
  Status gemm(const T* a, const T* w, void* d, std::int64_t m, std::int64_t n, std::int64_t k, float beta,
              cudaStream_t stream, bool fp32_out = false) {
    Gemm::Arguments g;
    g.handle = &handle_;
    g.dtype = dtype_traits<T>::id;
    g.m = m;
    g.n = n;
    g.k = k;
    g.a = a;
    g.lda = k;
    g.b = w;
    g.ldb = k;
    g.trans_b = true;
    g.d = d;
    g.ldd = n;
    g.beta = beta;
    g.d_fp32 = fp32_out;
    return Gemm::run(g, region(kSharedRegion), stream);
  }
  // out[i] = rows[index[i]] (n rows of d): an arena's gather.
  Status gather(const T* rows, std::int64_t count, const std::int32_t* index, std::int64_t n, int d, T* out,
                cudaStream_t stream) {
    return Embed::run({rows, index, n, count, d, out, 0}, region(kSharedRegion), stream);
  }

  typename Head::Arguments entropy_head_args(float* entropy, std::int64_t rows) const {
    typename Head::Arguments a;
    a.h = h_.get();
    a.norm_weight = nullptr;  // h is normalised by the fold
    a.weight = patcher_head_.get();
    a.n = rows;
    a.vocab = c_.vocab;
    a.d = c_.patcher.hidden;
    a.entropy = entropy;
    return a;
  }
  // The next ids of B rows h (normalised by the decoder's final norm).
  typename Head::Arguments next_head_args(const T* h, std::int64_t rows) const {
    typename Head::Arguments a;
    a.h = h;
    a.norm_weight = nullptr;
    a.weight = lm_head_.get();
    a.n = rows;
    a.vocab = c_.vocab;
    a.d = c_.decoder.hidden;
    a.next = const_cast<std::int32_t*>(next_.get());
    a.sampling = sampling_;
    a.sample_offsets = sampling_.temperature > 0 ? positions_.get() : nullptr;
    return a;
  }
  // Each stream's next id from its row index[b] of the normalised rows h:
  // the rows gathered (row b: stream b), the byte head's pick at position
  // positions[b] (the sampled draw's offset).
  Status pick_next(const T* h, std::int64_t count, const std::int32_t* index, const std::vector<std::int64_t>& positions,
                   cudaStream_t stream) {
    const auto B = static_cast<std::int64_t>(positions.size());
    const int D = c_.decoder.hidden;
    TL_RETURN_IF_ERROR(gather(h, count, index, B, D, last_.get(), stream));
    if (sampling_.temperature > 0) TL_RETURN_IF_ERROR(positions_.upload(positions, stream));
    return Head::run(next_head_args(last_.get(), B), region(kSharedRegion), stream);
  }
  typename EntropyPatcher::Arguments entropy_patcher_args(bool next_token) const {
    typename EntropyPatcher::Arguments a;
    a.rule.threshold = c_.threshold;
    a.entropies_in = entropies_.get();
    a.batch = bytes_batch();
    a.include_next_token = next_token;
    a.max_patch_length = c_.max_patch_length;
    a.patches = (next_token ? dec_patches_ : enc_patches_).outputs();
    return a;
  }
  typename BytePatcher::Arguments byte_patcher_args(bool next_token) const {
    typename BytePatcher::Arguments a;
    a.batch = bytes_batch();
    a.include_next_token = next_token;
    a.patches = (next_token ? dec_patches_ : enc_patches_).outputs();
    return a;
  }
  typename Hash::Arguments hash_args(const std::int32_t* ids, VarlenBatch batch) const {
    typename Hash::Arguments a;
    a.ids = ids;
    a.batch = batch;
    a.byte_table = byte_embed_.get();
    a.hash_tables.fused = hash_embed_.get();
    a.hash_tables.use_default_offsets(c_.hash_vocab);
    a.hash_vocab = c_.hash_vocab;
    a.d = c_.encoder.hidden;
    a.output = x_.get();
    return a;
  }
  typename Pool::Arguments pool_args() const {
    typename Pool::Arguments a;
    a.x = x_.get();
    a.batch = bytes_batch();
    a.segments = enc_patches_.segments();
    a.capacity = enc_patches_.capacity;
    a.d = c_.encoder.hidden;
    a.out = h_.get();
    return a;
  }

  // Entropies of the batch's rows of ids (byte patching: none).
  Status entropy_model(const std::int32_t* ids, VarlenBatch batch, float* entropy, cudaStream_t stream) {
    if (c_.patching != io::BltPatching::kEntropy) return Status::ok();
    const io::BltStackConfig& s = c_.patcher;
    const std::int64_t rows = batch.total;
    TL_RETURN_IF_ERROR(Embed::run({patcher_embed_.get(), ids, rows, c_.vocab, s.hidden, px_.get(), 0},
                                  region(kSharedRegion), stream));
    TL_RETURN_IF_ERROR(layers(patcher_, 0, patcher_.layers.size(), true, px_.get(), delta_.get(), batch, stream));
    TL_RETURN_IF_ERROR(fold(px_.get(), delta_.get(), patcher_norm_.get(), s.hidden, s.rms_eps, rows, h_.get(), stream));
    return Head::run(entropy_head_args(entropy, rows), region(kSharedRegion), stream);
  }

  // The patches over the bytes (the pool's, the encoder's and the global's),
  // and the decoder's: over the bytes and the next one (its start decides
  // whether the last patch is complete), or, with max_patch_length, the
  // same patches with the last one open.
  Status patch(cudaStream_t stream) {
    if (c_.patching == io::BltPatching::kEntropy) {
      TL_RETURN_IF_ERROR(EntropyPatcher::run(entropy_patcher_args(false), region(kPatcherRegion), stream));
      if (c_.max_patch_length == 0) {
        TL_RETURN_IF_ERROR(EntropyPatcher::run(entropy_patcher_args(true), region(kSharedRegion), stream));
      }
      return Status::ok();
    }
    TL_RETURN_IF_ERROR(BytePatcher::run(byte_patcher_args(false), region(kPatcherRegion), stream));
    return BytePatcher::run(byte_patcher_args(true), region(kSharedRegion), stream);
  }

  // BLT's cross-attention: x[nq] ← 2 x + Attention(qn W_qᵀ, kv) W_oᵀ, where
  // qn = q_norm(x) (given), kv [k_batch.total, 2 kv_dim] is k and v side by side.
  template <class Op, class Params>
  Status cross_attend(const io::BltStackConfig& s, const CrossBuffers& w, T* x, const T* qn, VarlenBatch q_batch,
                      const T* kv, VarlenBatch k_batch, const Params& variant, cudaStream_t stream) {
    const int D = s.hidden, qd = s.q_dim(), kvd = s.kv_dim();
    const std::int64_t nq = q_batch.total;
    TL_RETURN_IF_ERROR(gemm(qn, w.wq.get(), q_.get(), nq, qd, D, 0.0f, stream));
    typename Op::Arguments a;
    a.q = q_.get();
    a.k = kv;
    a.v = kv + kvd;
    a.q_batch = q_batch;
    a.k_batch = k_batch;
    a.heads = s.heads;
    a.kv_heads = s.kv_heads;
    a.head_dim = s.head_dim;
    a.q_stride = qd;
    a.k_stride = a.v_stride = 2 * kvd;
    a.out_stride = qd;
    a.variant = variant;
    a.out = attn_.get();
    TL_RETURN_IF_ERROR(Op::run(a, region(kSharedRegion), stream));
    return gemm(attn_.get(), w.wo.get(), x, nq, D, qd, 2.0f, stream);  // the module's residual and its caller's
  }

  Status local_encoder(cudaStream_t stream) {
    const io::BltStackConfig& s = c_.encoder;
    const int D = s.hidden, k = c_.k;
    const std::int64_t n = total_, P = P_, B = batch();
    TL_RETURN_IF_ERROR(Hash::run(hash_args(ids_.get(), bytes_batch()), region(kHashRegion), stream));
    TL_RETURN_IF_ERROR(layers(encoder_, 0, encoder_.layers.size(), true, x_.get(), delta_.get(), bytes_batch(), stream));
    // x ← x + δ, with kv_norm(x) for the cross-attention's keys.
    TL_RETURN_IF_ERROR(fold(x_.get(), delta_.get(), encoder_cross_.kv_norm.get(), D, s.rms_eps, n, kv_.get(), stream));
    // The slots: amax over each patch's bytes, projected to k rows ([P, k D] = [P k, D]).
    TL_RETURN_IF_ERROR(Pool::run(pool_args(), region(kSharedRegion), stream));
    TL_RETURN_IF_ERROR(gemm(h_.get(), encoder_projection_.get(), slots_.get(), P, std::int64_t{k} * D, D, 0.0f, stream));
    // The slots' cross-attention to their patches' bytes.
    TL_RETURN_IF_ERROR(gemm(kv_.get(), encoder_cross_.wkv.get(), o_.get(), n, 2 * s.kv_dim(), D, 0.0f, stream));
    TL_RETURN_IF_ERROR(fold(slots_.get(), nullptr, encoder_cross_.q_norm.get(), D, s.rms_eps, P * k, h_.get(), stream));
    attention::PatchesToBytes::Params v;
    v.patches = enc_patches_.segments();
    v.k = k;
    v.window = 1;
    return cross_attend<EncoderCross>(s, encoder_cross_, slots_.get(), h_.get(), VarlenBatch::packed(cu_slots_.get(), B, P * k),
                                      o_.get(), bytes_batch(), v, stream);
  }

  Status global_model(cudaStream_t stream) {
    const int De = c_.encoder.hidden, Dg = c_.global.hidden, k = c_.k;
    const std::int64_t P = P_;
    if (c_.global_projection) {
      TL_RETURN_IF_ERROR(gemm(slots_.get(), global_projection_.get(), g_.get(), P, Dg, std::int64_t{k} * De, 0.0f, stream));
    } else {
      TL_CUDA_TRY(cudaMemcpyAsync(g_.get(), slots_.get(), static_cast<std::size_t>(P * Dg) * sizeof(T),
                                  cudaMemcpyDeviceToDevice, stream));
    }
    const auto patches = VarlenBatch::packed(enc_patches_.offsets.get(), batch(), P);
    TL_RETURN_IF_ERROR(layers(global_, 0, global_.layers.size(), true, g_.get(), gdelta_.get(), patches, stream));
    // g ← g + δ (the global transformer has no final norm: unit weights, the normalised rows unused).
    return fold(g_.get(), gdelta_.get(), ones_.get(), Dg, c_.global.rms_eps, P, h_.get(), stream);
  }

  // The patches every stepping stream completed (in stream order, a stream's
  // in patch order): their slots (amax of their bytes, gathered from the
  // arena, projected, the cross-attention to them), one global step over all
  // of them (a stream's patches its new rows), their decoder slots and each
  // decoder cross-attention's keys and values of them (appended to the arena).
  Status global_step(const std::vector<std::int32_t>& ids, Meta& m, cudaStream_t stream) {
    const io::BltStackConfig& e = c_.encoder;
    const int De = e.hidden, Dg = c_.global.hidden, Dd = c_.decoder.hidden, k = c_.k;
    const auto B = static_cast<std::int64_t>(s_.size());
    struct Done {
      std::int64_t b, lo, hi;
    };
    std::vector<Done> done;
    std::vector<std::int32_t> per(static_cast<std::size_t>(B), 0);
    for (std::int64_t b = 0; b < B; ++b) {
      Stream& s = s_[b];
      if (ids[b] < 0) continue;
      while (s.global_len < static_cast<std::int64_t>(s.starts.size()) && complete(s, s.global_len)) {
        const auto p = static_cast<std::size_t>(s.global_len);
        const std::int64_t lo = s.starts[p], hi = p + 1 < s.starts.size() ? s.starts[p + 1] : s.n();
        done.push_back({b, lo, hi});
        s.kv_row.push_back(static_cast<std::int32_t>(kv_top_ + static_cast<std::int64_t>(done.size() - 1) * k));
        ++s.global_len;
        ++s.global_steps;
        ++per[b];
      }
    }
    const auto c = static_cast<std::int64_t>(done.size());
    if (c == 0) return Status::ok();
    std::int64_t rows = 0;
    for (const Done& d : done) rows += d.hi - d.lo;
    const auto gather_rows = m.add(rows), seg = m.add(rows), cu_p = m.add(c + 1), cu_g = m.add(B + 1);
    std::int64_t r = 0;
    for (std::int64_t j = 0; j < c; ++j) {
      const Done& d = done[j];
      m[cu_p + j] = static_cast<std::int32_t>(r);
      for (std::int64_t t = d.lo; t < d.hi; ++t, ++r) {
        m[gather_rows + r] = s_[d.b].x_row[static_cast<std::size_t>(t)];
        m[seg + r] = static_cast<std::int32_t>(j);
      }
    }
    m[cu_p + c] = static_cast<std::int32_t>(rows);
    for (std::int64_t b = 0, at = 0; b <= B; ++b) {
      m[cu_g + b] = static_cast<std::int32_t>(at);
      if (b < B) at += per[b];
    }
    TL_RETURN_IF_ERROR(m.upload(meta_, stream));
    // The completed patches' bytes, gathered (y is free until the decoder's step).
    T* x = y_.get();
    TL_RETURN_IF_ERROR(gather(x_.get(), x_top_, meta(gather_rows), rows, De, x, stream));
    const auto bytes = VarlenBatch::packed(meta(cu_p), c, rows);
    typename Pool::Arguments pa;
    pa.x = x;
    pa.batch = bytes;
    pa.segments = {nullptr, nullptr, nullptr, meta(seg)};  // a patch a sequence
    pa.capacity = c;
    pa.d = De;
    pa.out = h_.get();
    TL_RETURN_IF_ERROR(Pool::run(pa, region(kSharedRegion), stream));
    TL_RETURN_IF_ERROR(gemm(h_.get(), encoder_projection_.get(), slots_.get(), c, std::int64_t{k} * De, De, 0.0f, stream));
    TL_RETURN_IF_ERROR(fold(x, nullptr, encoder_cross_.kv_norm.get(), De, e.rms_eps, rows, h_.get(), stream));
    TL_RETURN_IF_ERROR(gemm(h_.get(), encoder_cross_.wkv.get(), o_.get(), rows, 2 * e.kv_dim(), De, 0.0f, stream));
    TL_RETURN_IF_ERROR(fold(slots_.get(), nullptr, encoder_cross_.q_norm.get(), De, e.rms_eps, c * k, h_.get(), stream));
    TL_RETURN_IF_ERROR(cross_attend<FullCross>(e, encoder_cross_, slots_.get(), h_.get(), VarlenBatch::uniform(c, k), o_.get(),
                                               bytes, attention::Full::Params{}, stream));
    T* g = g_.get();
    if (c_.global_projection) {
      TL_RETURN_IF_ERROR(gemm(slots_.get(), global_projection_.get(), g, c, Dg, std::int64_t{k} * De, 0.0f, stream));
    } else {
      TL_CUDA_TRY(cudaMemcpyAsync(g, slots_.get(), static_cast<std::size_t>(c * Dg) * sizeof(T), cudaMemcpyDeviceToDevice,
                                  stream));
    }
    const auto steps = VarlenBatch::packed(meta(cu_g), B, c);
    TL_RETURN_IF_ERROR(layers(global_, 0, global_.layers.size(), true, g, gdelta_.get(), steps, stream));
    TL_RETURN_IF_ERROR(fold(g, gdelta_.get(), ones_.get(), Dg, c_.global.rms_eps, c, h_.get(), stream));
    TL_RETURN_IF_ERROR(gemm(g, decoder_projection_.get(), slots_.get(), c, std::int64_t{k} * Dd, Dg, 0.0f, stream));
    for (std::size_t l = 0; l < decoder_cross_.size(); ++l) {
      const CrossBuffers& w = decoder_cross_[l];
      TL_RETURN_IF_ERROR(fold(slots_.get(), nullptr, w.kv_norm.get(), Dd, c_.decoder.rms_eps, c * k, h_.get(), stream));
      T* kv = decoder_kv_[l].get() + kv_top_ * 2 * c_.decoder.kv_dim();
      TL_RETURN_IF_ERROR(gemm(h_.get(), w.wkv.get(), kv, c * k, 2 * c_.decoder.kv_dim(), Dd, 0.0f, stream));
    }
    kv_top_ += c * k;
    return Status::ok();
  }

  // The decoder's rows of every stepping stream (its byte, or the byte
  // before it too after a rollback), each cross-attending to its decoder
  // patch's k slots (gathered from the arena); then each stream's logits
  // row and next id.
  Status decoder_step(const std::vector<std::int32_t>& ids, Meta& m, cudaStream_t stream) {
    const io::BltStackConfig& s = c_.decoder;
    const int D = s.hidden, k = c_.k, V = c_.vocab, kvd = s.kv_dim();
    const auto B = static_cast<std::int64_t>(s_.size());
    m.base = m.size();
    m.data.clear();
    // Rows: (stream, position), in stream order.
    std::vector<std::pair<std::int64_t, std::int64_t>> rows;
    const auto drop = m.add(B), cu = m.add(B + 1), last = m.add(B);
    bool any = false;
    std::vector<std::int64_t> positions(static_cast<std::size_t>(B));
    for (std::int64_t b = 0; b < B; ++b) {
      Stream& st = s_[b];
      m[cu + b] = static_cast<std::int32_t>(rows.size());
      positions[b] = st.n();
      if (ids[b] < 0) continue;
      const std::int64_t t = st.n() - 1;
      // Row t - 1 again when its decoder patch changed (max_patch_length completes it a byte late).
      if (decoder_patch(st, t - 1) != st.last_patch) {
        m[drop + b] = 1;
        any = true;
        rows.push_back({b, t - 1});
        ++st.rollbacks;
      }
      rows.push_back({b, t});
      st.last_patch = decoder_patch(st, t);
      m[last + b] = static_cast<std::int32_t>(rows.size()) - 1;
    }
    const auto nr = static_cast<std::int64_t>(rows.size());
    m[cu + B] = static_cast<std::int32_t>(nr);
    const auto src = m.add(nr), kv_rows = m.add(nr * k);
    for (std::int64_t r = 0; r < nr; ++r) {
      const Stream& st = s_[rows[r].first];
      m[src + r] = st.x_row[static_cast<std::size_t>(rows[r].second)];
      const std::int32_t first = st.kv_row[static_cast<std::size_t>(decoder_patch(st, rows[r].second))];
      for (int j = 0; j < k; ++j) m[kv_rows + r * k + j] = first + j;
    }
    TL_RETURN_IF_ERROR(m.upload(meta_, stream));
    if (any) {
      for (std::size_t l = 0; l < decoder_.layers.size(); ++l) TL_RETURN_IF_ERROR(rollback(decoder_, l, meta(drop), stream));
    }
    TL_RETURN_IF_ERROR(gather(x_.get(), x_top_, meta(src), nr, D, y_.get(), stream));
    const auto step_rows = VarlenBatch::packed(meta(cu), B, nr);
    for (std::size_t l = 0; l < decoder_.layers.size(); ++l) {
      const bool crossed = l == 0 || c_.decoder_cross_all;
      if (crossed) {
        const CrossBuffers& w = decoder_cross_[l];
        TL_RETURN_IF_ERROR(fold(y_.get(), l > 0 ? delta_.get() : nullptr, w.q_norm.get(), D, s.rms_eps, nr, h_.get(), stream));
        // Each row's patch keys and values, gathered: row r reads rows [r k, (r + 1) k).
        T* kv = kv_.get();
        TL_RETURN_IF_ERROR(gather(decoder_kv_[l].get(), kv_top_, meta(kv_rows), nr * k, 2 * kvd, kv, stream));
        TL_RETURN_IF_ERROR(cross_attend<FullCross>(s, w, y_.get(), h_.get(), VarlenBatch::uniform(nr, 1), kv,
                                                   VarlenBatch::uniform(nr, k), attention::Full::Params{}, stream));
      }
      TL_RETURN_IF_ERROR(layers(decoder_, l, l + 1, crossed, y_.get(), delta_.get(), step_rows, stream));
    }
    TL_RETURN_IF_ERROR(fold(y_.get(), delta_.get(), decoder_norm_.get(), D, s.rms_eps, nr, h_.get(), stream));
    TL_RETURN_IF_ERROR(pick_next(h_.get(), nr, meta(last), positions, stream));
    rows_ = B;
    return gemm(last_.get(), lm_head_.get(), logits_.get(), B, V, D, 0.0f, stream, true);
  }

  Status local_decoder(cudaStream_t stream) {
    const io::BltStackConfig& s = c_.decoder;
    const int D = s.hidden, Dg = c_.global.hidden, k = c_.k, V = c_.vocab;
    const std::int64_t n = total_, P = P_, B = batch();
    // The decoder's slots s_d = g W_dᵀ ([P, k D] = [P k, D]); y starts as the encoder's output.
    TL_RETURN_IF_ERROR(gemm(g_.get(), decoder_projection_.get(), slots_.get(), P, std::int64_t{k} * D, Dg, 0.0f, stream));
    TL_CUDA_TRY(cudaMemcpyAsync(y_.get(), x_.get(), static_cast<std::size_t>(n * D) * sizeof(T),
                                cudaMemcpyDeviceToDevice, stream));
    attention::BytesToPatches::Params v;
    v.k = k;
    v.window = 1;
    const bool open = c_.patching == io::BltPatching::kEntropy && c_.max_patch_length > 0;
    v.patches = open ? enc_patches_.segments() : dec_patches_.segments();
    v.last_open = open;
    const auto slots = VarlenBatch::packed(cu_slots_.get(), B, P * k);
    for (std::size_t l = 0; l < decoder_.layers.size(); ++l) {
      const bool crossed = l == 0 || c_.decoder_cross_all;
      if (crossed) {
        const CrossBuffers& w = decoder_cross_[l];
        // Keys and values of the slots, then queries from q_norm(y) (δ folded in first).
        TL_RETURN_IF_ERROR(fold(slots_.get(), nullptr, w.kv_norm.get(), D, s.rms_eps, P * k, h_.get(), stream));
        TL_RETURN_IF_ERROR(gemm(h_.get(), w.wkv.get(), decoder_kv_[l].get(), P * k, 2 * s.kv_dim(), D, 0.0f, stream));
        TL_RETURN_IF_ERROR(fold(y_.get(), l > 0 ? delta_.get() : nullptr, w.q_norm.get(), D, s.rms_eps, n, h_.get(), stream));
        TL_RETURN_IF_ERROR(cross_attend<DecoderCross>(s, w, y_.get(), h_.get(), bytes_batch(), decoder_kv_[l].get(), slots,
                                                      v, stream));
      }
      TL_RETURN_IF_ERROR(layers(decoder_, l, l + 1, crossed, y_.get(), delta_.get(), bytes_batch(), stream));
    }
    TL_RETURN_IF_ERROR(fold(y_.get(), delta_.get(), decoder_norm_.get(), D, s.rms_eps, n, h_.get(), stream));
    return gemm(h_.get(), lm_head_.get(), logits_.get(), n, V, D, 0.0f, stream, /*fp32_out=*/true);
  }

  io::BltConfig c_;
  std::int64_t max_ = 0, max_batch_ = 1, total_ = 0, P_ = 0;
  int widest_ = 1;
  blas::LtHandle handle_;
  Stack patcher_, encoder_, global_, decoder_;
  Buf<T> patcher_embed_, patcher_norm_, patcher_head_, byte_embed_, hash_embed_, encoder_projection_,
      global_projection_, decoder_projection_, decoder_norm_, lm_head_;
  CrossBuffers encoder_cross_;
  std::vector<CrossBuffers> decoder_cross_;
  Buf<std::int32_t> ids_, next_, cu_, cu_slots_, meta_;
  Buf<std::int64_t> positions_;
  Buf<float> entropies_, logits_;
  PatchBuffers enc_patches_, dec_patches_;
  // x_ is the encoder rows' arena: a prefill's rows, then a step's appended
  // at x_top_; decoder_kv_[l] the decoder's patch keys and values, appended at kv_top_.
  Buf<T> x_, delta_, px_, h_, q_, o_, attn_, slots_, kv_, y_, g_, gdelta_, ones_, last_;
  std::vector<Buf<T>> decoder_kv_;
  std::int64_t x_top_ = 0, kv_top_ = 0;
  heads::Sampling sampling_{};
  // The streams (the last prefill's or forward's), whether the caches are in
  // use, whether the last call was a step, rows in logits_.
  std::vector<Stream> s_;
  bool cached_ = false, last_step_ = false;
  blocks::Attend attend_ = blocks::Attend::prefill;
  std::int64_t rows_ = 0;
  Buf<unsigned char> ws_;
  std::size_t regions_[3] = {}, offsets_[3] = {};
};

}  // namespace tokenless::models
