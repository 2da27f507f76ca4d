#pragma once
// The Llama family assembled (Llama 3, Mistral, Mixtral, Phi-3; the model
// layer: public operations only, no kernel of its own): a checkpoint's
// decoder from the library's operations, one sequence with a KV cache. It
// is tokenless-run's device path (--device gpu, or emu: the same code on the
// CPU SIMT executor).
//
//   x      = Embedding(ids)
//   x, δ   = DecoderLayer(x, δ)        for every layer (blocks/decoder.cuh)
//   h      = RmsNorm(x + δ)            the final norm, the last residual add fused
//   logits = h · lm_headᵀ              (blas::Gemm)
//   next   = Argmax(logits[last])      on the device, straight into the ids
//
// With DeepSeek-V3-style multi-token modules (the checkpoint's
// num_nextn_predict_layers), speculate(K) decodes self-speculatively: the
// first module drafts K tokens (heads::MtpInputs, a DecoderLayer with its
// own cache, its shared norm and the head; recursively, as vLLM runs it),
// the model verifies them in one forward of K + 1 tokens through the
// few-query decode, heads::SpeculativeAccept keeps the longest agreeing
// prefix and the model's next token, and the caches roll back the rest. The
// ids are exactly the greedy ones. Forced drafts (a benchmark's acceptance
// curve) skip the modules.
//
// Storage T is bf16 or fp16; the checkpoint's weights are converted once.
// One workspace, sized for the largest step, serves every operation; nothing
// is allocated after create(), and a step does not synchronise the host
// except to read the ids it must print.
#include <tokenless/blocks/decoder.cuh>
#include <tokenless/blocks/norm.cuh>
#include <tokenless/blocks/policy.hpp>
#include <tokenless/blocks/tokens.cuh>
#include <tokenless/core/cublaslt.hpp>
#include <tokenless/core/device_buffer.cuh>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/heads/mtp.cuh>
#include <tokenless/heads/speculative.cuh>
#include <tokenless/io/model_config.hpp>
#include <tokenless/io/model_weights.hpp>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

namespace tokenless::models {

// HD: the attention core's head dims to instantiate (all supported ones by default).
template <class T, class HD = tokenless::attention::SupportedHeadDims>
class LlamaModel {
 public:
  using Layer = tokenless::blocks::DecoderLayer<T, tokenless::blocks::NormThenCast, tokenless::blocks::RopeHalf,
                                                tokenless::blocks::Silu, HD>;
  using Norm = tokenless::blocks::RmsNorm<tokenless::blocks::NormThenCast, T>;
  using Embed = tokenless::blocks::Embedding<T>;
  using Argmax = tokenless::blocks::Argmax<T>;
  using Status = tokenless::Status;
  template <class U>
  using Buf = tokenless::DeviceBuffer<U>;

  // Uploads the weights (rounded to T) and sizes every buffer for a prompt of
  // at most max_prompt tokens and a cache of `capacity` positions.
  using Inputs = tokenless::heads::MtpInputs<tokenless::blocks::NormThenCast, T>;
  using Accept = tokenless::heads::SpeculativeAccept;
  using Rollback = tokenless::attention::KvCacheRollback;

  // max_draft: the most drafts speculate() will be asked for (0: none).
  static Status create(const tokenless::io::ModelWeights<float>& w, std::int64_t max_prompt, std::int64_t capacity,
                       std::unique_ptr<LlamaModel>* out, int max_draft = 0) {
    if (max_draft < 0 || max_draft > tokenless::heads::kMaxDraft) {
      return Status::argument(tokenless::StatusCode::invalid_argument, "max_draft", "0 to 15 drafts", "%d", max_draft);
    }
    auto m = std::unique_ptr<LlamaModel>(new LlamaModel());
    const tokenless::io::ModelConfig& c = w.config;
    m->c_ = c;
    m->shape_ = tokenless::io::decoder_shape(c);
    m->max_prompt_ = std::max<std::int64_t>(max_prompt, 1);
    m->capacity_ = capacity;
    m->max_draft_ = max_draft;
    m->max_queries_ = max_draft + 1;
    TL_RETURN_IF_ERROR(tokenless::blas::LtHandle::create(m->handle_));
    TL_RETURN_IF_ERROR(upload(w.embed, m->embed_));
    TL_RETURN_IF_ERROR(upload(w.norm, m->norm_));
    TL_RETURN_IF_ERROR(upload(w.lm_head, m->lm_head_));
    for (const auto& l : w.layers) {
      LayerBuffers b;
      TL_RETURN_IF_ERROR(upload_layer(l, capacity * c.kv_dim(), b));
      m->layers_.push_back(std::move(b));
    }
    if (max_draft > 0 && !w.mtp.empty()) {  // the first module drafts
      const auto& mw = w.mtp.front();
      TL_RETURN_IF_ERROR(upload(mw.enorm, m->mtp_.enorm));
      TL_RETURN_IF_ERROR(upload(mw.hnorm, m->mtp_.hnorm));
      TL_RETURN_IF_ERROR(upload(mw.eh_proj, m->mtp_.eh_proj));
      TL_RETURN_IF_ERROR(upload(mw.shared_norm, m->mtp_.shared_norm));
      TL_RETURN_IF_ERROR(upload(mw.head, m->mtp_.head));
      TL_RETURN_IF_ERROR(upload_layer(mw.layer, capacity * c.kv_dim(), m->mtp_.layer));
      m->has_mtp_ = true;
    }
    std::vector<float> inv_freq(static_cast<std::size_t>(c.rot_dim / 2));
    TL_RETURN_IF_ERROR(tokenless::blocks::rope_inv_freq(c.rope, c.rot_dim, inv_freq.data()));
    TL_RETURN_IF_ERROR(m->inv_freq_.allocate(inv_freq.size()));
    TL_RETURN_IF_ERROR(m->inv_freq_.upload(inv_freq));
    TL_RETURN_IF_ERROR(m->cache_len_.allocate(static_cast<std::size_t>(c.layers + 1)));  // + the module's
    const std::int64_t n = std::max<std::int64_t>(m->max_prompt_, max_draft + 1), d = c.hidden;
    m->rows_ = n;
    TL_RETURN_IF_ERROR(m->x_.allocate(static_cast<std::size_t>(n * d)));
    TL_RETURN_IF_ERROR(m->delta_.allocate(static_cast<std::size_t>(n * d)));
    TL_RETURN_IF_ERROR(m->h_.allocate(static_cast<std::size_t>(n * d)));
    TL_RETURN_IF_ERROR(m->logits_.allocate(static_cast<std::size_t>(n * c.vocab)));
    TL_RETURN_IF_ERROR(m->ids_.allocate(static_cast<std::size_t>(n + capacity + max_draft + 1)));
    TL_RETURN_IF_ERROR(m->verified_.allocate(static_cast<std::size_t>(max_draft + 1)));
    TL_RETURN_IF_ERROR(m->accepted_.allocate(1));
    TL_RETURN_IF_ERROR(m->drop_.allocate(2));  // [0] the model's, [1] the module's
    TL_RETURN_IF_ERROR(m->histogram_.allocate(static_cast<std::size_t>(tokenless::heads::kMaxDraft + 1)));
    TL_RETURN_IF_ERROR(m->histogram_.fill_bytes(0));
    if (m->has_mtp_) {
      TL_RETURN_IF_ERROR(m->mtp_x_.allocate(static_cast<std::size_t>(n * d)));
      TL_RETURN_IF_ERROR(m->mtp_delta_.allocate(static_cast<std::size_t>(n * d)));
      TL_RETURN_IF_ERROR(m->mtp_stream_.allocate(static_cast<std::size_t>(n * d)));
      TL_RETURN_IF_ERROR(m->mtp_h_.allocate(static_cast<std::size_t>(n * d)));
      TL_RETURN_IF_ERROR(m->positions_.allocate(static_cast<std::size_t>(n)));
    }
    // One workspace for the largest step: a status record for the embedding's
    // id check, then the largest layer's plan (the prompt's prefill, or a decode step).
    std::size_t layer_ws = 0;
    for (const auto attend : {tokenless::blocks::Attend::prefill, tokenless::blocks::Attend::decode}) {
      const std::int64_t tokens = attend == tokenless::blocks::Attend::prefill ? n : m->max_queries_;
      layer_ws = std::max(layer_ws, Layer::workspace_size(m->layer_args(0, tokens, attend)));
    }
    if (m->has_mtp_) layer_ws = std::max(layer_ws, Inputs::workspace_size(m->inputs_args(0, n)));
    m->layer_ws_at_ = 2 * tokenless::kStatusBytes;  // the embedding's and the rollbacks' status records first
    TL_RETURN_IF_ERROR(m->ws_.allocate(m->layer_ws_at_ + layer_ws));
    TL_RETURN_IF_ERROR(m->reset());
    *out = std::move(m);
    return Status::ok();
  }

  // An empty cache.
  Status reset() {
    length_ = 0;
    pending_ = -1;
    return cache_len_.fill_bytes(0);
  }
  bool has_mtp() const { return has_mtp_; }
  std::int64_t length() const { return length_; }

  // The prompt's logits [n, vocab] (T, on the device, until the next call),
  // its cache filled, and the greedy next id written to ids[n] on the device.
  Status prefill(const std::vector<std::int32_t>& prompt, cudaStream_t stream = nullptr) {
    const auto n = static_cast<std::int64_t>(prompt.size());
    if (n < 1 || n > max_prompt_ || n >= capacity_) {
      return Status::argument(tokenless::StatusCode::invalid_argument, "prompt", "1 to max_prompt tokens, fewer than the cache's capacity",
                              "%lld tokens", static_cast<long long>(n));
    }
    TL_RETURN_IF_ERROR(reset());
    TL_RETURN_IF_ERROR(ids_.upload(prompt, stream));
    TL_RETURN_IF_ERROR(step(0, n, tokenless::blocks::Attend::prefill, stream));
    length_ = n;
    pending_ = n;  // the module has not seen these rows yet
    return Status::ok();
  }
  // One token: ids[length] (written by the previous step's argmax) goes
  // through the model; the next greedy id lands in ids[length + 1].
  Status decode(cudaStream_t stream = nullptr) {
    if (length_ + 1 > capacity_) {
      return Status::argument(tokenless::StatusCode::capacity_too_small, "capacity", "room for one more token",
                              "%lld positions, all used", static_cast<long long>(capacity_));
    }
    TL_RETURN_IF_ERROR(step(length_, 1, tokenless::blocks::Attend::decode, stream));
    ++length_;
    pending_ = -1;  // the module's cache misses this row: speculate() needs a fresh prefill
    return Status::ok();
  }

  // One self-speculative step (the header explains it): K drafts from the
  // module, or `forced` ones, verified in one forward; *made = a + 1 new ids,
  // at ids[length() - *made + 1 ...] afterwards (the next one, as after
  // decode(), at ids[length()]). With module_too, the module drafts anyway
  // and the forced drafts replace its own (a benchmark's acceptance curve at
  // the true cost of a step). Synchronises once, to read a.
  Status speculate(int K, int* made, const std::vector<std::int32_t>* forced = nullptr, bool module_too = false,
                   cudaStream_t stream = nullptr) {
    using tokenless::StatusCode;
    if (K <= 0 || K > max_draft_) {
      return Status::argument(StatusCode::invalid_argument, "K", "1 to the max_draft given to create()", "%d (max %d)",
                              K, max_draft_);
    }
    if (length_ + K + 1 > capacity_) {  // the verify step appends the next id and K drafts
      return Status::argument(StatusCode::capacity_too_small, "K", "drafts that fit the cache's free space",
                              "%d drafts + 1 with %lld of %lld positions free", K,
                              static_cast<long long>(capacity_ - length_), static_cast<long long>(capacity_));
    }
    if (forced && static_cast<int>(forced->size()) != K) {
      return Status::argument(StatusCode::shape_mismatch, "forced", "K drafts", "%zu", forced->size());
    }
    if (!forced && !has_mtp_) {
      return Status::argument(StatusCode::unsupported, "K",
                              "a model with multi-token modules (num_nextn_predict_layers), or forced drafts", "none");
    }
    const bool module = has_mtp_ && (!forced || module_too);
    if (module && pending_ < 0) {
      return Status::argument(StatusCode::invalid_argument, "speculate",
                              "a prefill() or a speculate() with the module before it", "a decode() or forced drafts");
    }
    const std::int64_t L = length_;
    if (module) TL_RETURN_IF_ERROR(draft(K, stream));
    if (forced) TL_RETURN_IF_ERROR(write_ids(L + 1, *forced, stream));
    // Verify: ids[L .. L + K] through the model, every row's greedy id.
    TL_RETURN_IF_ERROR(step(L, K + 1, tokenless::blocks::Attend::decode, stream, verified_.get()));
    Accept::Arguments acc;
    acc.draft = ids_.get() + L + 1;
    acc.verified = verified_.get();
    acc.batch = 1;
    acc.k = K;
    acc.out = ids_.get() + L + 1;  // over the drafts: the accepted ones are the same ids
    acc.accepted = accepted_.get();
    acc.drop = drop_.get();
    acc.histogram = histogram_.get();
    TL_RETURN_IF_ERROR(Accept::run(acc, {}, stream));
    for (int l = 0; l < c_.layers; ++l) TL_RETURN_IF_ERROR(rollback(l, drop_.get(), stream));
    std::int32_t a = 0;
    TL_RETURN_IF_ERROR(accepted_.download(&a, 1, stream));  // synchronises
    length_ = L + a + 1;
    pending_ = module ? a + 1 : -1;  // the verified rows' hidden states wait in h_ for the module
    *made = a + 1;
    return Status::ok();
  }
  // Counts of accepted drafts (index a: steps that accepted a), since create().
  Status acceptance(std::vector<unsigned long long>& counts, cudaStream_t stream = nullptr) const {
    counts.resize(static_cast<std::size_t>(max_draft_ + 1));
    return histogram_.download(counts.data(), counts.size(), stream);
  }
  // Overwrites ids[at ...]: the next decode() then reads a chosen id instead
  // of the greedy one (teacher forcing; a speculative step's drafts).
  Status write_ids(std::int64_t at, const std::vector<std::int32_t>& ids, cudaStream_t stream = nullptr) {
    if (at < 0 || at + static_cast<std::int64_t>(ids.size()) > static_cast<std::int64_t>(ids_.size())) {
      return Status::argument(tokenless::StatusCode::invalid_argument, "at", "positions inside the id buffer",
                              "%lld + %zu ids", static_cast<long long>(at), ids.size());
    }
    if (ids.empty()) return Status::ok();
    TL_CUDA_TRY(cudaMemcpyAsync(ids_.get() + at, ids.data(), ids.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice,
                                stream));
    return Status::ok();
  }
  // The ids [from, to) on the host (the prompt, then the greedy ones); synchronises.
  Status ids(std::int64_t from, std::int64_t to, std::vector<std::int32_t>& out, cudaStream_t stream = nullptr) const {
    std::vector<std::int32_t> all(static_cast<std::size_t>(to));
    TL_RETURN_IF_ERROR(ids_.download(all.data(), all.size(), stream));
    out.assign(all.begin() + from, all.end());
    return Status::ok();
  }
  // The last step's logits [rows, vocab] as float; synchronises.
  Status logits(std::int64_t rows, std::vector<float>& out, cudaStream_t stream = nullptr) const {
    std::vector<T> raw(static_cast<std::size_t>(rows * c_.vocab));
    TL_RETURN_IF_ERROR(logits_.download(raw.data(), raw.size(), stream));
    out.resize(raw.size());
    std::transform(raw.begin(), raw.end(), out.begin(), [](T v) { return tokenless::to_float(v); });
    return Status::ok();
  }
  // Every device-side check of the last step (ids in the vocabulary, the
  // batch, the cache), the first failure named; synchronises.
  Status read_status(cudaStream_t stream = nullptr) const {
    TL_RETURN_IF_ERROR(Embed::read_status(last_embed_, {ws_.get(), tokenless::kStatusBytes}, stream));
    for (int l = 0; l < c_.layers; ++l) {
      const auto a = layer_args(l, last_tokens_, last_attend_);
      TL_RETURN_IF_ERROR(Layer::read_status(a, layer_ws(a), stream));
    }
    return Status::ok();
  }

 private:
  struct LayerBuffers {
    Buf<T> attn_norm, wqkv, wo, mlp_norm, w_gate_up, w_down, router, k_cache, v_cache;
  };
  struct MtpBuffers {
    Buf<T> enorm, hnorm, eh_proj, shared_norm, head;  // head: empty for lm_head
    LayerBuffers layer;
  };
  LlamaModel() = default;

  static Status upload_layer(const tokenless::io::LayerWeights<float>& l, std::int64_t cache, LayerBuffers& b) {
    TL_RETURN_IF_ERROR(upload(l.attn_norm, b.attn_norm));
    TL_RETURN_IF_ERROR(upload(l.wqkv, b.wqkv));
    TL_RETURN_IF_ERROR(upload(l.wo, b.wo));
    TL_RETURN_IF_ERROR(upload(l.mlp_norm, b.mlp_norm));
    TL_RETURN_IF_ERROR(upload(l.w_gate_up, b.w_gate_up));
    TL_RETURN_IF_ERROR(upload(l.w_down, b.w_down));
    TL_RETURN_IF_ERROR(upload(l.router, b.router));
    TL_RETURN_IF_ERROR(b.k_cache.allocate(static_cast<std::size_t>(cache)));
    return b.v_cache.allocate(static_cast<std::size_t>(cache));
  }

  static Status upload(const std::vector<float>& host, Buf<T>& dev) {
    if (host.empty()) return Status::ok();
    std::vector<T> t(host.size());
    std::transform(host.begin(), host.end(), t.begin(), [](float v) { return tokenless::from_float<T>(v); });
    TL_RETURN_IF_ERROR(dev.allocate(t.size()));
    return dev.upload(t);
  }
  static const T* or_null(const Buf<T>& b) { return b.size() ? b.get() : nullptr; }

  // Layer l of the model, or (l = layers) the module's.
  typename Layer::Arguments layer_args(int l, std::int64_t tokens, tokenless::blocks::Attend attend) const {
    const bool module = l == c_.layers;
    const LayerBuffers& b = module ? mtp_.layer : layers_[static_cast<std::size_t>(l)];
    typename Layer::Arguments a;
    a.handle = &handle_;
    a.shape = shape_;
    a.w = {b.attn_norm.get(), b.wqkv.get(), b.wo.get(), b.mlp_norm.get(), b.w_gate_up.get(), b.w_down.get(),
           or_null(b.router)};
    a.inv_freq = inv_freq_.get();
    a.batch = tokenless::VarlenBatch::uniform(1, tokens);
    a.x = module ? mtp_x_.get() : x_.get();
    a.delta = module ? mtp_delta_.get() : delta_.get();
    a.first = l == 0 || module;  // the module's x is its inputs' projection
    a.attend = attend;
    a.k_cache = b.k_cache.get();
    a.v_cache = b.v_cache.get();
    a.cache_len = cache_len_.get() + l;
    a.capacity = capacity_;
    a.max_queries = max_queries_;
    return a;
  }
  // The module's inputs for `rows` rows: ids[first + 1 ...] (each row's next
  // token), the positions in positions_, the hidden states from `hidden`.
  typename Inputs::Arguments inputs_args(std::int64_t first, std::int64_t rows, const T* hidden = nullptr) const {
    typename Inputs::Arguments a;
    a.handle = &handle_;
    a.embed = embed_.get();
    a.ids = ids_.get() + first + 1;
    a.positions = positions_.get();
    a.hidden = hidden ? hidden : h_.get();
    a.enorm = mtp_.enorm.get();
    a.hnorm = mtp_.hnorm.get();
    a.eh_proj = mtp_.eh_proj.get();
    a.eps = c_.rms_eps;
    a.n = rows;
    a.vocab = c_.vocab;
    a.d = c_.hidden;
    a.out = mtp_x_.get();
    return a;
  }
  Status rollback(int l, const std::int32_t* drop, cudaStream_t stream) {  // its own status record, after the embedding's
    return Rollback::run({cache_len_.get() + l, drop, 1}, {ws_.get() + tokenless::kStatusBytes, tokenless::kStatusBytes},
                         stream);
  }

  // K drafts into ids[length_ + 1 ...]: the module over the rows the model
  // verified last (their hidden states in h_), then K - 1 rows of its own
  // drafts on its own output stream; those K - 1 rows leave its cache after
  // (the next step redoes them on the model's hidden states).
  Status draft(int K, cudaStream_t stream) {
    const std::int64_t L = length_, rows = pending_, first = L - rows;
    for (int j = 1; j <= K; ++j) {
      const std::int64_t n = j == 1 ? rows : 1, at = j == 1 ? first : L + j - 2;
      std::vector<std::int32_t> pos(static_cast<std::size_t>(n));
      for (std::int64_t i = 0; i < n; ++i) pos[i] = static_cast<std::int32_t>(at + i);
      TL_RETURN_IF_ERROR(positions_.upload(pos, stream));
      const T* hidden = j == 1 ? h_.get() : mtp_stream_.get();
      const auto in = inputs_args(at, n, hidden);
      TL_RETURN_IF_ERROR(Inputs::run(in, layer_ws(Inputs::workspace_size(in)), stream));
      // The module's cache starts with the prompt's prefill.
      const auto attend = at == 0 ? tokenless::blocks::Attend::prefill : tokenless::blocks::Attend::decode;
      const auto la = layer_args(c_.layers, n, attend);
      TL_RETURN_IF_ERROR(Layer::run(la, layer_ws(Layer::workspace_size(la)), stream));
      // The stream (the next draft's hidden state) and the shared norm of its last row.
      typename Norm::Arguments fn;
      fn.x = mtp_delta_.get();
      fn.residual = mtp_x_.get();
      fn.weight = mtp_.shared_norm.get();
      fn.rows = n;
      fn.d = c_.hidden;
      fn.eps = c_.rms_eps;
      fn.out = mtp_h_.get();
      fn.residual_out = mtp_stream_.get();
      TL_RETURN_IF_ERROR(Norm::run(fn, {}, stream));
      if (n > 1) {  // the next draft reads the last row's stream from row 0
        TL_CUDA_TRY(cudaMemcpyAsync(mtp_stream_.get(), mtp_stream_.get() + (n - 1) * c_.hidden, c_.hidden * sizeof(T),
                                    cudaMemcpyDeviceToDevice, stream));
      }
      TL_RETURN_IF_ERROR(head(mtp_h_.get() + (n - 1) * c_.hidden, 1, mtp_.head.size() ? mtp_.head.get() : nullptr,
                              stream));
      TL_RETURN_IF_ERROR(Argmax::run({logits_.get(), 1, c_.vocab, 0, ids_.get() + L + j, 1}, {}, stream));
    }
    if (K == 1) return Status::ok();
    // From pageable memory the copy has read `drop` when it returns.
    const std::int32_t drop = K - 1;
    TL_CUDA_TRY(cudaMemcpyAsync(drop_.get() + 1, &drop, sizeof drop, cudaMemcpyHostToDevice, stream));
    return rollback(c_.layers, drop_.get() + 1, stream);
  }
  tokenless::Workspace layer_ws(const typename Layer::Arguments& a) const { return layer_ws(Layer::workspace_size(a)); }
  tokenless::Workspace layer_ws(std::size_t bytes) const { return {ws_.get() + layer_ws_at_, bytes}; }

  // logits_[0, rows) = h · headᵀ (the model's lm_head without one).
  Status head(const T* h, std::int64_t rows, const T* weight, cudaStream_t stream) {
    tokenless::blas::Gemm::Arguments g;
    g.handle = &handle_;
    g.dtype = tokenless::dtype_traits<T>::id;
    g.m = rows;
    g.n = c_.vocab;
    g.k = c_.hidden;
    g.a = h;
    g.lda = c_.hidden;
    g.b = weight ? weight : lm_head_.get();
    g.ldb = c_.hidden;
    g.trans_b = true;
    g.d = logits_.get();
    g.ldd = c_.vocab;
    return tokenless::blas::Gemm::run(g, {ws_.get() + layer_ws_at_, ws_.bytes() - layer_ws_at_}, stream);
  }

  // `tokens` ids from ids[at] through the model; the greedy next id to
  // ids[at + tokens], or every row's to `every` (a verify step).
  Status step(std::int64_t at, std::int64_t tokens, tokenless::blocks::Attend attend, cudaStream_t stream,
              std::int32_t* every = nullptr) {
    const int d = c_.hidden;
    last_tokens_ = tokens;
    last_attend_ = attend;
    last_embed_ = {embed_.get(), ids_.get() + at, tokens, c_.vocab, d, x_.get(), 0};
    TL_RETURN_IF_ERROR(Embed::run(last_embed_, {ws_.get(), tokenless::kStatusBytes}, stream));
    for (int l = 0; l < c_.layers; ++l) {
      const auto a = layer_args(l, tokens, attend);
      TL_RETURN_IF_ERROR(Layer::run(a, layer_ws(a), stream));
    }
    typename Norm::Arguments fn;
    fn.x = delta_.get();
    fn.residual = x_.get();
    fn.weight = norm_.get();
    fn.rows = tokens;
    fn.d = d;
    fn.eps = c_.rms_eps;
    fn.out = h_.get();
    TL_RETURN_IF_ERROR(Norm::run(fn, {}, stream));
    TL_RETURN_IF_ERROR(head(h_.get(), tokens, nullptr, stream));
    if (every) return Argmax::run({logits_.get(), tokens, c_.vocab, 0, every, 1}, {}, stream);
    return Argmax::run({logits_.get() + (tokens - 1) * c_.vocab, 1, c_.vocab, 0, ids_.get() + at + tokens, 1}, {},
                       stream);
  }

  tokenless::io::ModelConfig c_;
  tokenless::blocks::DecoderShape shape_;
  std::int64_t max_prompt_ = 0, capacity_ = 0, length_ = 0, rows_ = 0;
  std::int64_t pending_ = -1;  // rows verified last, waiting for the module (-1: its cache is behind)
  int max_draft_ = 0, max_queries_ = 1;
  bool has_mtp_ = false;
  MtpBuffers mtp_;
  Buf<T> mtp_x_, mtp_delta_, mtp_stream_, mtp_h_;
  Buf<std::int32_t> positions_, verified_, accepted_, drop_;
  Buf<unsigned long long> histogram_;
  tokenless::blas::LtHandle handle_;
  Buf<T> embed_, norm_, lm_head_;
  std::vector<LayerBuffers> layers_;
  Buf<float> inv_freq_;
  Buf<std::int32_t> cache_len_, ids_;
  Buf<T> x_, delta_, h_, logits_;
  Buf<unsigned char> ws_;
  std::size_t layer_ws_at_ = 0;
  std::int64_t last_tokens_ = 0;
  tokenless::blocks::Attend last_attend_ = tokenless::blocks::Attend::prefill;
  typename Embed::Arguments last_embed_{};
};

}  // namespace tokenless::models
