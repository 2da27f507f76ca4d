#pragma once
// BLT assembled from the library's operations (the model layer: no kernel
// of its own): transformers' BltForCausalLM on the kernels' path
// (tokenless-run --device gpu, or emu: the same code on the CPU SIMT
// executor), one sequence, bf16 or fp16 storage with fp32 accumulation.
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

template <class T, class Enc, class HD = attention::SupportedHeadDims>
class BltModel {
 public:
  using Layer = blocks::DecoderLayer<T, blocks::NormThenCast, blocks::RopeInterleaved, blocks::Silu, HD>;
  using Norm = blocks::RmsNorm<blocks::NormThenCast, T>;
  using Embed = blocks::Embedding<T>;
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

  // Uploads the weights (rounded to T) and sizes every buffer for sequences
  // of at most max_bytes ids (BOS included).
  static Status create(const io::BltWeights<float>& w, std::int64_t max_bytes, std::unique_ptr<BltModel>* out) {
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
    TL_RETURN_IF_ERROR(check::product_fits_int32("max_bytes * cross_attn_k", max_bytes + 1, c.k));
    auto m = std::unique_ptr<BltModel>(new BltModel());
    m->c_ = c;
    m->max_ = max_bytes;
    TL_RETURN_IF_ERROR(blas::LtHandle::create(m->handle_));
    TL_RETURN_IF_ERROR(m->patcher_.create(c.patcher, w.patcher_layers, max_bytes));
    TL_RETURN_IF_ERROR(m->encoder_.create(c.encoder, w.encoder_layers, max_bytes));
    TL_RETURN_IF_ERROR(m->global_.create(c.global, w.global_layers, max_bytes + 1));
    TL_RETURN_IF_ERROR(m->decoder_.create(c.decoder, w.decoder_layers, max_bytes));
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
    const std::int64_t n = max_bytes, pos = n + 1, slots = pos * c.k;
    const int De = c.encoder.hidden, Dg = c.global.hidden, Dp = c.patcher.hidden;
    const std::int64_t wide = std::max<std::int64_t>({Dp, De, Dg, std::int64_t{c.k} * De});
    TL_RETURN_IF_ERROR(m->ids_.allocate(static_cast<std::size_t>(n)));
    TL_RETURN_IF_ERROR(m->entropies_.allocate(static_cast<std::size_t>(n)));
    for (auto* p : {&m->enc_patches_, &m->dec_patches_}) TL_RETURN_IF_ERROR(p->allocate(pos));
    // Scratch rows: bytes (n), slots (P k <= (n + 1) k) or patches (<= n + 1),
    // each as wide as any of the tensors that pass through them.
    const std::int64_t rows = std::max(slots, n);
    std::int64_t cols = wide;
    for (const auto* st : {&c.patcher, &c.encoder, &c.global, &c.decoder}) {
      cols = std::max<std::int64_t>({cols, st->qkv_dim(), 2 * st->kv_dim(), st->q_dim()});
    }
    for (auto* b : {&m->x_, &m->delta_, &m->px_, &m->h_, &m->q_, &m->o_, &m->attn_, &m->slots_, &m->kv_}) {
      TL_RETURN_IF_ERROR(b->allocate(static_cast<std::size_t>(rows * cols)));
    }
    TL_RETURN_IF_ERROR(upload(std::vector<float>(static_cast<std::size_t>(Dg), 1.0f), m->ones_));
    TL_RETURN_IF_ERROR(m->y_.allocate(static_cast<std::size_t>(n * De)));
    TL_RETURN_IF_ERROR(m->g_.allocate(static_cast<std::size_t>(pos * Dg)));
    TL_RETURN_IF_ERROR(m->gdelta_.allocate(static_cast<std::size_t>(pos * Dg)));
    for (std::size_t l = 0; l < m->decoder_cross_.size(); ++l) {
      Buf<T> kv;
      TL_RETURN_IF_ERROR(kv.allocate(static_cast<std::size_t>(slots * 2 * c.decoder.kv_dim())));
      m->decoder_kv_.push_back(std::move(kv));
    }
    TL_RETURN_IF_ERROR(m->logits_.allocate(static_cast<std::size_t>(n * c.vocab)));
    TL_RETURN_IF_ERROR(m->next_.allocate(1));
    TL_RETURN_IF_ERROR(m->zeros_.allocate(static_cast<std::size_t>(n)));  // one segment: every position's id 0
    TL_RETURN_IF_ERROR(m->zeros_.fill_bytes(0));
    TL_RETURN_IF_ERROR(m->drop_.allocate(2));
    TL_RETURN_IF_ERROR(m->drop_.upload(std::vector<std::int32_t>{0, 1}));  // a rollback's counts: none, one
    TL_RETURN_IF_ERROR(m->size_workspace());
    *out = std::move(m);
    return Status::ok();
  }

  const io::BltConfig& config() const { return c_; }
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
  std::int64_t length() const { return n_; }
  std::int64_t patches() const { return P_; }

  // The whole sequence through the model, no cache kept: the logits of
  // every position (logits()), the entropies, the patches, and the greedy
  // next id (next()). Synchronises once, to read the patch count.
  Status forward(const std::vector<std::int32_t>& ids, cudaStream_t stream = nullptr) {
    return whole(ids, false, stream);
  }

  // Cached generation (models::BltStream's, on the kernels): prefill() runs
  // the prompt as forward() does and fills every cache (the entropy model's,
  // the encoder's and its states, the global transformer's over the complete
  // patches, the decoder's and each cross-attention's keys and values of the
  // slots); step(id) then appends one byte: the entropy model's row, whose
  // entropy the host reads (it decides whether the byte's patch is complete),
  // the encoder's row, one global step a newly completed patch, and the
  // decoder's row (with the row before it again where max_patch_length
  // completed that row's patch a byte late). logits() then holds the new
  // row, next() its greedy byte. A step synchronises to read the entropy.
  Status prefill(const std::vector<std::int32_t>& ids, cudaStream_t stream = nullptr) {
    return whole(ids, true, stream);
  }
  Status step(std::int32_t id, cudaStream_t stream = nullptr) {
    if (!cached_) {
      return Status::argument(StatusCode::invalid_argument, "step", "a prefill() before it", "a forward() or nothing");
    }
    if (n_ + 1 > max_) {
      return Status::argument(StatusCode::capacity_too_small, "max_bytes", "room for one more byte",
                              "%lld bytes, all used", static_cast<long long>(max_));
    }
    if (id < 0 || id >= c_.vocab) {
      return Status::argument(StatusCode::invalid_argument, "id", "an id in [0, 260)", "%d", id);
    }
    const std::int64_t t = n_;
    attend_ = blocks::Attend::decode;
    TL_CUDA_TRY(cudaMemcpyAsync(ids_.get() + t, &id, sizeof id, cudaMemcpyHostToDevice, stream));
    n_ = t + 1;
    rows_ = 1;
    cut(t);  // H[t - 1] is known: whether byte t starts a patch
    // The entropy model's row; its entropy decides whether byte t's patch is complete.
    TL_RETURN_IF_ERROR(entropy_model(t, 1, stream));
    h_host_.push_back(0.0f);
    if (c_.patching == io::BltPatching::kEntropy) {
      TL_CUDA_TRY(cudaMemcpyAsync(h_host_.data() + t, entropies_.get() + t, sizeof(float), cudaMemcpyDeviceToHost,
                                  stream));
      TL_CUDA_TRY(cudaStreamSynchronize(stream));
    }
    TL_RETURN_IF_ERROR(encoder_row(t, stream));
    while (global_len_ < static_cast<std::int64_t>(starts_.size()) && complete(global_len_)) {
      TL_RETURN_IF_ERROR(global_patch(global_len_, stream));
      ++global_len_;
      ++global_steps_;
    }
    // Row t - 1 again when its decoder patch changed (max_patch_length completes it a byte late).
    std::int64_t from = t;
    if (decoder_patch(t - 1) != last_patch_) {
      for (std::size_t l = 0; l < decoder_.layers.size(); ++l) TL_RETURN_IF_ERROR(rollback(decoder_, l, stream));
      from = t - 1;
      ++rollbacks_;
    }
    TL_RETURN_IF_ERROR(decoder_rows(from, t, stream));
    last_patch_ = decoder_patch(t);
    return Status::ok();
  }
  std::int64_t global_steps() const { return global_steps_; }  // patches through the global transformer, cached
  std::int64_t rollbacks() const { return rollbacks_; }

 private:
  Status whole(const std::vector<std::int32_t>& ids, bool cached, cudaStream_t stream) {
    const auto n = static_cast<std::int64_t>(ids.size());
    if (n < 1 || n > max_) {
      return Status::argument(StatusCode::invalid_argument, "ids", "1 to max_bytes ids", "%lld (max %lld)",
                              static_cast<long long>(n), static_cast<long long>(max_));
    }
    for (std::int64_t i = 0; i < n; ++i) {
      if (ids[i] < 0 || ids[i] >= c_.vocab) {
        return Status::argument(StatusCode::invalid_argument, "ids", "ids in [0, 260)", "%d at position %lld", ids[i],
                                static_cast<long long>(i));
      }
    }
    n_ = rows_ = n;
    cached_ = cached;
    attend_ = blocks::Attend::prefill;
    if (cached) {  // a prefill that fills a cache starts it empty
      for (auto* st : {&patcher_, &encoder_, &global_, &decoder_}) TL_RETURN_IF_ERROR(st->len.fill_bytes(0, stream));
    }
    TL_RETURN_IF_ERROR(ids_.upload(ids, stream));
    TL_RETURN_IF_ERROR(entropy_model(0, n, stream));
    TL_RETURN_IF_ERROR(patch(stream));
    std::int32_t off[2] = {0, 0};
    TL_RETURN_IF_ERROR(enc_patches_.offsets.download(off, 2, stream));  // synchronises: the global's rows
    P_ = off[1];
    TL_RETURN_IF_ERROR(local_encoder(stream));
    TL_RETURN_IF_ERROR(global_model(stream));
    TL_RETURN_IF_ERROR(local_decoder(stream));
    if (!cached) return Status::ok();
    // The host's view of the patches, as a stream would have cut them.
    h_host_.assign(static_cast<std::size_t>(n), 0.0f);
    if (c_.patching == io::BltPatching::kEntropy) TL_RETURN_IF_ERROR(entropies_.download(h_host_.data(), h_host_.size(), stream));
    starts_.clear();
    entropy_start_ = 0;
    for (std::int64_t t = 0; t < n; ++t) cut(t);
    // Only complete patches stay in the global transformer's cache (the
    // last one's row leaves it when it is still growing).
    global_len_ = 0;
    while (global_len_ < static_cast<std::int64_t>(starts_.size()) && complete(global_len_)) ++global_len_;
    global_steps_ = global_len_;
    rollbacks_ = 0;
    if (global_len_ < P_) {
      for (std::size_t l = 0; l < global_.layers.size(); ++l) TL_RETURN_IF_ERROR(rollback(global_, l, stream));
    }
    last_patch_ = decoder_patch(n - 1);
    return Status::ok();
  }
  template <class S>  // Stack, declared below
  Status rollback(S& s, std::size_t l, cudaStream_t stream) {
    return attention::KvCacheRollback::run({s.len.get() + l, drop_.get() + 1, 1}, region(kSharedRegion), stream);
  }

  // Whether position t starts a patch (BltStream's rule: 0 and 1 always, then
  // H[t - 1] > θ, then max_patch_length's split of an entropy patch); records it.
  void cut(std::int64_t t) {
    if (t <= 1 || c_.patching != io::BltPatching::kEntropy || h_host_[t - 1] > c_.threshold) {
      starts_.push_back(t);
      entropy_start_ = t;
    } else if (c_.max_patch_length > 0 && (t - entropy_start_) % c_.max_patch_length == 0) {
      starts_.push_back(t);
    }
  }
  // Whether patch p is complete at the current length (BltHost::patch_lengths' rule).
  bool complete(std::int64_t p) const {
    if (p == 0 || p + 1 < static_cast<std::int64_t>(starts_.size())) return true;
    if (c_.patching == io::BltPatching::kByte) return true;
    return c_.max_patch_length == 0 && (n_ == 1 || h_host_[n_ - 1] > c_.threshold);
  }
  // The decoder patch of row t: the last complete patch ending at or before it.
  std::int64_t decoder_patch(std::int64_t t) const {
    const auto it = std::upper_bound(starts_.begin(), starts_.end(), t + 1);
    auto p = static_cast<std::int64_t>(it - starts_.begin()) - 2;
    if (p + 1 == static_cast<std::int64_t>(starts_.size()) - 1 && t == n_ - 1 && complete(p + 1) && starts_.back() <= t) {
      ++p;
    }
    return std::max<std::int64_t>(p, 0);
  }

 public:

  // The last forward's or prefill's logits [n, 260], or a step's [1, 260] (fp32); synchronises.
  Status logits(std::vector<float>& out, cudaStream_t stream = nullptr) const {
    out.resize(static_cast<std::size_t>(rows_ * c_.vocab));
    return logits_.download(out.data(), out.size(), stream);
  }
  // Its entropies [n] (nats); synchronises.
  Status entropies(std::vector<float>& out, cudaStream_t stream = nullptr) const {
    out.resize(static_cast<std::size_t>(n_));
    if (c_.patching != io::BltPatching::kEntropy) {
      std::fill(out.begin(), out.end(), 0.0f);
      return Status::ok();
    }
    return entropies_.download(out.data(), out.size(), stream);
  }
  // Its patch lengths (summing to n); synchronises.
  Status patch_lengths(std::vector<std::int64_t>& out, cudaStream_t stream = nullptr) const {
    if (cached_) {  // the stream's, on the host
      out.clear();
      for (std::size_t p = 0; p < starts_.size(); ++p) {
        out.push_back((p + 1 < starts_.size() ? starts_[p + 1] : n_) - starts_[p]);
      }
      return Status::ok();
    }
    std::vector<std::int32_t> l(static_cast<std::size_t>(P_));
    TL_RETURN_IF_ERROR(enc_patches_.lengths.download(l.data(), l.size(), stream));
    out.assign(l.begin(), l.end());
    return Status::ok();
  }
  // The greedy next id after the last forward's sequence; synchronises.
  Status next(std::int32_t* id, cudaStream_t stream = nullptr) const { return next_.download(id, 1, stream); }

  // The device-side checks of the last forward (the patcher's, the hash
  // embedding's), the first failure named; synchronises.
  Status read_status(cudaStream_t stream = nullptr) const {
    TL_RETURN_IF_ERROR(Hash::read_status(hash_args(), region(kHashRegion), stream));
    if (c_.patching == io::BltPatching::kEntropy) {
      TL_RETURN_IF_ERROR(EntropyPatcher::read_status(entropy_patcher_args(false), region(kPatcherRegion), stream));
    }
    return Status::ok();
  }

 private:
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
    Status allocate(std::int64_t positions) {
      capacity = positions;
      TL_RETURN_IF_ERROR(flags.allocate(static_cast<std::size_t>(positions)));
      TL_RETURN_IF_ERROR(ids.allocate(static_cast<std::size_t>(positions)));
      TL_RETURN_IF_ERROR(offsets.allocate(2));
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
    // The KV caches ([capacity, kv_heads, head_dim] a layer) and their lengths.
    std::vector<Buf<T>> k, v;
    Buf<std::int32_t> len;
    std::int64_t capacity = 0;
    Status create(const io::BltStackConfig& c, const std::vector<io::BltLayerWeights<float>>& w, std::int64_t cap) {
      capacity = cap;
      k.resize(w.size());
      v.resize(w.size());
      for (std::size_t l = 0; l < w.size(); ++l) {
        TL_RETURN_IF_ERROR(k[l].allocate(static_cast<std::size_t>(cap * c.kv_dim())));
        TL_RETURN_IF_ERROR(v[l].allocate(static_cast<std::size_t>(cap * c.kv_dim())));
      }
      TL_RETURN_IF_ERROR(len.allocate(std::max<std::size_t>(1, w.size())));
      shape = {.hidden = c.hidden,
               .heads = c.heads,
               .kv_heads = c.kv_heads,
               .head_dim = c.head_dim,
               .rot_dim = c.head_dim,
               .ffn = c.intermediate,
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
        TL_RETURN_IF_ERROR(upload(l.w_gate_up, b.w_gate_up));
        TL_RETURN_IF_ERROR(upload(l.w_down, b.w_down));
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
  // every other operation shares in turn.
  enum Region { kHashRegion, kPatcherRegion, kSharedRegion };
  Status size_workspace() {
    const std::int64_t n = max_;
    n_ = n;
    P_ = n + 1;
    std::size_t shared = Gemm::workspace_size({});
    auto layer_ws = [&](const Stack& s, std::int64_t rows) {
      return Layer::workspace_size(layer_args(s, 0, x_.get(), delta_.get(), rows));
    };
    shared = std::max({shared, layer_ws(patcher_, n), layer_ws(encoder_, n), layer_ws(global_, n + 1),
                       layer_ws(decoder_, n)});
    shared = std::max(shared, Head::workspace_size(entropy_head_args()));
    shared = std::max(shared, Pool::workspace_size(pool_args()));
    shared = std::max(shared, EncoderCross::workspace_size({}));
    shared = std::max(shared, DecoderCross::workspace_size({}));
    shared = std::max(shared, BytePatcher::workspace_size(byte_patcher_args(true)));
    shared = std::max(shared, EntropyPatcher::workspace_size(entropy_patcher_args(true)));
    regions_[kHashRegion] = Hash::workspace_size(hash_args());
    regions_[kPatcherRegion] = std::max(EntropyPatcher::workspace_size(entropy_patcher_args(false)),
                                        BytePatcher::workspace_size(byte_patcher_args(false)));
    regions_[kSharedRegion] = shared;
    n_ = P_ = 0;
    std::size_t total = 0;
    for (std::size_t r = 0; r < 3; ++r) {
      offsets_[r] = total;
      total += (regions_[r] + 255) / 256 * 256;
    }
    return ws_.allocate(total);
  }
  Workspace region(Region r) const { return {const_cast<unsigned char*>(ws_.get()) + offsets_[r], regions_[r]}; }

  typename Layer::Arguments layer_args(const Stack& s, std::size_t l, T* x, T* delta, std::int64_t rows) const {
    const LayerBuffers& b = s.layers[l];
    typename Layer::Arguments a;
    a.handle = &handle_;
    a.shape = s.shape;
    a.w = {b.attn_norm.get(), b.wqkv.get(), b.wo.get(), b.mlp_norm.get(), b.w_gate_up.get(), b.w_down.get(), nullptr};
    a.inv_freq = s.inv_freq.get();
    a.batch = VarlenBatch::uniform(1, rows);
    a.x = x;
    a.delta = delta;
    a.attend = attend_;
    if (cached_) {
      a.k_cache = const_cast<T*>(s.k[l].get());
      a.v_cache = const_cast<T*>(s.v[l].get());
      a.cache_len = const_cast<std::int32_t*>(s.len.get()) + l;
      a.capacity = s.capacity;
      a.max_queries = 2;  // a step's rows: its byte, and the one before after a rollback
    }
    return a;
  }
  // Layers [l0, l1) of a stack over rows of x, leaving the stream as x +
  // delta; `first`: x holds the whole stream before layer l0 (no delta to add).
  Status layers(const Stack& s, std::size_t l0, std::size_t l1, bool first, T* x, T* delta, std::int64_t rows,
                cudaStream_t stream) {
    for (std::size_t l = l0; l < l1; ++l) {
      auto a = layer_args(s, l, x, delta, rows);
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

  typename Head::Arguments entropy_head_args(std::int64_t first = 0, std::int64_t rows = -1) const {
    typename Head::Arguments a;
    a.h = h_.get();
    a.norm_weight = nullptr;  // h is normalised by the fold
    a.weight = patcher_head_.get();
    a.n = rows < 0 ? n_ : rows;
    a.vocab = c_.vocab;
    a.d = c_.patcher.hidden;
    a.entropy = const_cast<float*>(entropies_.get()) + first;
    return a;
  }
  typename EntropyPatcher::Arguments entropy_patcher_args(bool next_token) const {
    typename EntropyPatcher::Arguments a;
    a.rule.threshold = c_.threshold;
    a.entropies_in = entropies_.get();
    a.batch = VarlenBatch::uniform(1, n_);
    a.include_next_token = next_token;
    a.max_patch_length = c_.max_patch_length;
    a.patches = (next_token ? dec_patches_ : enc_patches_).outputs();
    return a;
  }
  typename BytePatcher::Arguments byte_patcher_args(bool next_token) const {
    typename BytePatcher::Arguments a;
    a.batch = VarlenBatch::uniform(1, n_);
    a.include_next_token = next_token;
    a.patches = (next_token ? dec_patches_ : enc_patches_).outputs();
    return a;
  }
  typename Hash::Arguments hash_args() const {
    typename Hash::Arguments a;
    a.ids = ids_.get();
    a.batch = VarlenBatch::uniform(1, n_);
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
    a.batch = VarlenBatch::uniform(1, n_);
    a.segments = enc_patches_.segments();
    a.capacity = n_;
    a.d = c_.encoder.hidden;
    a.out = h_.get();
    return a;
  }

  // Entropies of positions [first, first + rows) (byte patching: none).
  Status entropy_model(std::int64_t first, std::int64_t rows, cudaStream_t stream) {
    if (c_.patching != io::BltPatching::kEntropy) return Status::ok();
    const io::BltStackConfig& s = c_.patcher;
    TL_RETURN_IF_ERROR(Embed::run({patcher_embed_.get(), ids_.get() + first, rows, c_.vocab, s.hidden, px_.get(), 0},
                                  region(kSharedRegion), stream));
    TL_RETURN_IF_ERROR(layers(patcher_, 0, patcher_.layers.size(), true, px_.get(), delta_.get(), rows, stream));
    TL_RETURN_IF_ERROR(fold(px_.get(), delta_.get(), patcher_norm_.get(), s.hidden, s.rms_eps, rows, h_.get(), stream));
    return Head::run(entropy_head_args(first, rows), region(kSharedRegion), stream);
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
  // qn = q_norm(x) (given), kv [nk, 2 kv_dim] is k and v side by side.
  template <class Op, class Params>
  Status cross_attend(const io::BltStackConfig& s, const CrossBuffers& w, T* x, const T* qn, std::int64_t nq,
                      const T* kv, std::int64_t nk, const Params& variant, cudaStream_t stream) {
    const int D = s.hidden, qd = s.q_dim(), kvd = s.kv_dim();
    TL_RETURN_IF_ERROR(gemm(qn, w.wq.get(), q_.get(), nq, qd, D, 0.0f, stream));
    typename Op::Arguments a;
    a.q = q_.get();
    a.k = kv;
    a.v = kv + kvd;
    a.q_batch = VarlenBatch::uniform(1, nq);
    a.k_batch = VarlenBatch::uniform(1, nk);
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
    const std::int64_t n = n_, P = P_;
    TL_RETURN_IF_ERROR(Hash::run(hash_args(), region(kHashRegion), stream));
    TL_RETURN_IF_ERROR(layers(encoder_, 0, encoder_.layers.size(), true, x_.get(), delta_.get(), n, stream));
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
    return cross_attend<EncoderCross>(s, encoder_cross_, slots_.get(), h_.get(), P * k, o_.get(), n, v, stream);
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
    TL_RETURN_IF_ERROR(layers(global_, 0, global_.layers.size(), true, g_.get(), gdelta_.get(), P, stream));
    // g ← g + δ (the global transformer has no final norm: unit weights, the normalised rows unused).
    return fold(g_.get(), gdelta_.get(), ones_.get(), Dg, c_.global.rms_eps, P, h_.get(), stream);
  }

  // The encoder's row t: its hash n-gram embedding (over the last n-gram's
  // window, of which only row t is kept), its layers' step, x[t] ← x + δ.
  Status encoder_row(std::int64_t t, cudaStream_t stream) {
    const io::BltStackConfig& s = c_.encoder;
    const int D = s.hidden;
    int widest = 1;
    for (int g : c_.ngrams) widest = std::max(widest, g);
    const std::int64_t w0 = std::max<std::int64_t>(0, t - widest + 1), rows = t - w0 + 1;
    auto h = hash_args();
    h.ids = ids_.get() + w0;
    h.batch = VarlenBatch::uniform(1, rows);
    h.output = o_.get();
    TL_RETURN_IF_ERROR(Hash::run(h, region(kHashRegion), stream));
    T* x = x_.get() + t * D;
    TL_CUDA_TRY(cudaMemcpyAsync(x, o_.get() + (rows - 1) * D, D * sizeof(T), cudaMemcpyDeviceToDevice, stream));
    TL_RETURN_IF_ERROR(layers(encoder_, 0, encoder_.layers.size(), true, x, delta_.get(), 1, stream));
    return fold(x, delta_.get(), encoder_cross_.kv_norm.get(), D, s.rms_eps, 1, h_.get(), stream);
  }

  // Patch p complete: its slots (amax of its bytes, projected, the
  // cross-attention to them), one global step, its decoder slots and each
  // decoder cross-attention's keys and values of them.
  Status global_patch(std::int64_t p, cudaStream_t stream) {
    const io::BltStackConfig& e = c_.encoder;
    const int De = e.hidden, Dg = c_.global.hidden, Dd = c_.decoder.hidden, k = c_.k;
    const std::int64_t lo = starts_[static_cast<std::size_t>(p)],
                       hi = p + 1 < static_cast<std::int64_t>(starts_.size()) ? starts_[static_cast<std::size_t>(p + 1)] : n_;
    const std::int64_t rows = hi - lo;
    const T* x = x_.get() + lo * De;
    typename Pool::Arguments pa;
    pa.x = x;
    pa.batch = VarlenBatch::uniform(1, rows);
    pa.segments = {nullptr, nullptr, nullptr, zeros_.get()};  // one segment
    pa.capacity = 1;
    pa.d = De;
    pa.out = h_.get();
    TL_RETURN_IF_ERROR(Pool::run(pa, region(kSharedRegion), stream));
    TL_RETURN_IF_ERROR(gemm(h_.get(), encoder_projection_.get(), slots_.get(), 1, std::int64_t{k} * De, De, 0.0f, stream));
    TL_RETURN_IF_ERROR(fold(const_cast<T*>(x), nullptr, encoder_cross_.kv_norm.get(), De, e.rms_eps, rows, h_.get(), stream));
    TL_RETURN_IF_ERROR(gemm(h_.get(), encoder_cross_.wkv.get(), o_.get(), rows, 2 * e.kv_dim(), De, 0.0f, stream));
    TL_RETURN_IF_ERROR(fold(slots_.get(), nullptr, encoder_cross_.q_norm.get(), De, e.rms_eps, k, h_.get(), stream));
    TL_RETURN_IF_ERROR(cross_attend<FullCross>(e, encoder_cross_, slots_.get(), h_.get(), k, o_.get(), rows,
                                               attention::Full::Params{}, stream));
    T* g = g_.get();
    if (c_.global_projection) {
      TL_RETURN_IF_ERROR(gemm(slots_.get(), global_projection_.get(), g, 1, Dg, std::int64_t{k} * De, 0.0f, stream));
    } else {
      TL_CUDA_TRY(cudaMemcpyAsync(g, slots_.get(), Dg * sizeof(T), cudaMemcpyDeviceToDevice, stream));
    }
    TL_RETURN_IF_ERROR(layers(global_, 0, global_.layers.size(), true, g, gdelta_.get(), 1, stream));
    TL_RETURN_IF_ERROR(fold(g, gdelta_.get(), ones_.get(), Dg, c_.global.rms_eps, 1, h_.get(), stream));
    TL_RETURN_IF_ERROR(gemm(g, decoder_projection_.get(), slots_.get(), 1, std::int64_t{k} * Dd, Dg, 0.0f, stream));
    for (std::size_t l = 0; l < decoder_cross_.size(); ++l) {
      const CrossBuffers& w = decoder_cross_[l];
      TL_RETURN_IF_ERROR(fold(slots_.get(), nullptr, w.kv_norm.get(), Dd, c_.decoder.rms_eps, k, h_.get(), stream));
      T* kv = decoder_kv_[l].get() + p * k * 2 * c_.decoder.kv_dim();
      TL_RETURN_IF_ERROR(gemm(h_.get(), w.wkv.get(), kv, k, 2 * c_.decoder.kv_dim(), Dd, 0.0f, stream));
    }
    return Status::ok();
  }

  // The decoder's rows [from, t] (one, or two after a rollback), each
  // cross-attending to its decoder patch's k slots; the logits of row t and
  // its greedy byte.
  Status decoder_rows(std::int64_t from, std::int64_t t, cudaStream_t stream) {
    const io::BltStackConfig& s = c_.decoder;
    const int D = s.hidden, k = c_.k, V = c_.vocab;
    const std::int64_t m = t - from + 1;
    TL_CUDA_TRY(cudaMemcpyAsync(y_.get(), x_.get() + from * D, static_cast<std::size_t>(m * D) * sizeof(T),
                                cudaMemcpyDeviceToDevice, stream));
    for (std::size_t l = 0; l < decoder_.layers.size(); ++l) {
      const bool crossed = l == 0 || c_.decoder_cross_all;
      if (crossed) {
        const CrossBuffers& w = decoder_cross_[l];
        TL_RETURN_IF_ERROR(fold(y_.get(), l > 0 ? delta_.get() : nullptr, w.q_norm.get(), D, s.rms_eps, m, h_.get(), stream));
        for (std::int64_t r = 0; r < m; ++r) {
          const std::int64_t d = decoder_patch(from + r);
          const T* kv = decoder_kv_[l].get() + d * k * 2 * s.kv_dim();
          TL_RETURN_IF_ERROR(cross_attend<FullCross>(s, w, y_.get() + r * D, h_.get() + r * D, 1, kv, k,
                                                     attention::Full::Params{}, stream));
        }
      }
      TL_RETURN_IF_ERROR(layers(decoder_, l, l + 1, crossed, y_.get(), delta_.get(), m, stream));
    }
    TL_RETURN_IF_ERROR(fold(y_.get(), delta_.get(), decoder_norm_.get(), D, s.rms_eps, m, h_.get(), stream));
    TL_RETURN_IF_ERROR(gemm(h_.get() + (m - 1) * D, lm_head_.get(), logits_.get(), 1, V, D, 0.0f, stream, true));
    return blocks::Argmax<float>::run({logits_.get(), 1, V, 0, next_.get(), 1}, {}, stream);
  }

  Status local_decoder(cudaStream_t stream) {
    const io::BltStackConfig& s = c_.decoder;
    const int D = s.hidden, Dg = c_.global.hidden, k = c_.k, V = c_.vocab;
    const std::int64_t n = n_, P = P_;
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
    for (std::size_t l = 0; l < decoder_.layers.size(); ++l) {
      const bool crossed = l == 0 || c_.decoder_cross_all;
      if (crossed) {
        const CrossBuffers& w = decoder_cross_[l];
        // Keys and values of the slots, then queries from q_norm(y) (δ folded in first).
        TL_RETURN_IF_ERROR(fold(slots_.get(), nullptr, w.kv_norm.get(), D, s.rms_eps, P * k, h_.get(), stream));
        TL_RETURN_IF_ERROR(gemm(h_.get(), w.wkv.get(), decoder_kv_[l].get(), P * k, 2 * s.kv_dim(), D, 0.0f, stream));
        TL_RETURN_IF_ERROR(fold(y_.get(), l > 0 ? delta_.get() : nullptr, w.q_norm.get(), D, s.rms_eps, n, h_.get(), stream));
        TL_RETURN_IF_ERROR(cross_attend<DecoderCross>(s, w, y_.get(), h_.get(), n, decoder_kv_[l].get(), P * k, v, stream));
      }
      TL_RETURN_IF_ERROR(layers(decoder_, l, l + 1, crossed, y_.get(), delta_.get(), n, stream));
    }
    TL_RETURN_IF_ERROR(fold(y_.get(), delta_.get(), decoder_norm_.get(), D, s.rms_eps, n, h_.get(), stream));
    TL_RETURN_IF_ERROR(gemm(h_.get(), lm_head_.get(), logits_.get(), n, V, D, 0.0f, stream, /*fp32_out=*/true));
    return blocks::Argmax<float>::run({logits_.get() + (n - 1) * V, 1, V, 0, next_.get(), 1}, {}, stream);
  }

  io::BltConfig c_;
  std::int64_t max_ = 0, n_ = 0, P_ = 0;
  blas::LtHandle handle_;
  Stack patcher_, encoder_, global_, decoder_;
  Buf<T> patcher_embed_, patcher_norm_, patcher_head_, byte_embed_, hash_embed_, encoder_projection_,
      global_projection_, decoder_projection_, decoder_norm_, lm_head_;
  CrossBuffers encoder_cross_;
  std::vector<CrossBuffers> decoder_cross_;
  Buf<std::int32_t> ids_, next_, zeros_, drop_;
  Buf<float> entropies_, logits_;
  PatchBuffers enc_patches_, dec_patches_;
  Buf<T> x_, delta_, px_, h_, q_, o_, attn_, slots_, kv_, y_, g_, gdelta_, ones_;
  // Cached generation: the caches are in use; the patch starts and entropies
  // so far (host copies: they decide the patches); the patches run through
  // the global transformer; the decoder patch the last row was run with.
  bool cached_ = false;
  blocks::Attend attend_ = blocks::Attend::prefill;
  std::int64_t rows_ = 0;  // rows in logits_
  std::vector<std::int64_t> starts_;
  std::vector<float> h_host_;
  std::int64_t entropy_start_ = 0, global_len_ = 0, last_patch_ = 0, global_steps_ = 0, rollbacks_ = 0;
  std::vector<Buf<T>> decoder_kv_;
  Buf<unsigned char> ws_;
  std::size_t regions_[3] = {}, offsets_[3] = {};
};

}  // namespace tokenless::models
