#pragma once
// The device path of tokenless-run (--device gpu, or emu: the same code on
// the CPU SIMT executor): a checkpoint's decoder assembled from the
// library's operations, one sequence with a KV cache.
//
//   x      = Embedding(ids)
//   x, δ   = DecoderLayer(x, δ)        for every layer (blocks/decoder.cuh)
//   h      = RmsNorm(x + δ)            the final norm, the last residual add fused
//   logits = h · lm_headᵀ              (blas::Gemm)
//   next   = Argmax(logits[last])      on the device, straight into the ids
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
#include <tokenless/io/model_config.hpp>
#include <tokenless/io/model_weights.hpp>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

namespace run_cli {

// HD: the attention core's head dims to instantiate (all supported ones by default).
template <class T, class HD = tokenless::attention::SupportedHeadDims>
class DeviceModel {
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
  static Status create(const tokenless::io::ModelWeights<float>& w, std::int64_t max_prompt, std::int64_t capacity,
                       std::unique_ptr<DeviceModel>* out) {
    auto m = std::unique_ptr<DeviceModel>(new DeviceModel());
    const tokenless::io::ModelConfig& c = w.config;
    m->c_ = c;
    m->shape_ = {.hidden = c.hidden,
                 .heads = c.heads,
                 .kv_heads = c.kv_heads,
                 .head_dim = c.head_dim,
                 .rot_dim = c.rot_dim,
                 .ffn = c.intermediate,
                 .experts = c.experts,
                 .top_k = c.top_k,
                 .window = c.sliding_window,
                 .eps = c.rms_eps};
    m->max_prompt_ = std::max<std::int64_t>(max_prompt, 1);
    m->capacity_ = capacity;
    TL_RETURN_IF_ERROR(tokenless::blas::LtHandle::create(m->handle_));
    TL_RETURN_IF_ERROR(upload(w.embed, m->embed_));
    TL_RETURN_IF_ERROR(upload(w.norm, m->norm_));
    TL_RETURN_IF_ERROR(upload(w.lm_head, m->lm_head_));
    for (const auto& l : w.layers) {
      LayerBuffers b;
      TL_RETURN_IF_ERROR(upload(l.attn_norm, b.attn_norm));
      TL_RETURN_IF_ERROR(upload(l.wqkv, b.wqkv));
      TL_RETURN_IF_ERROR(upload(l.wo, b.wo));
      TL_RETURN_IF_ERROR(upload(l.mlp_norm, b.mlp_norm));
      TL_RETURN_IF_ERROR(upload(l.w_gate_up, b.w_gate_up));
      TL_RETURN_IF_ERROR(upload(l.w_down, b.w_down));
      TL_RETURN_IF_ERROR(upload(l.router, b.router));
      const std::size_t cache = static_cast<std::size_t>(capacity * c.kv_dim());
      TL_RETURN_IF_ERROR(b.k_cache.allocate(cache));
      TL_RETURN_IF_ERROR(b.v_cache.allocate(cache));
      m->layers_.push_back(std::move(b));
    }
    std::vector<float> inv_freq(static_cast<std::size_t>(c.rot_dim / 2));
    TL_RETURN_IF_ERROR(tokenless::blocks::rope_inv_freq(c.rope, c.rot_dim, inv_freq.data()));
    TL_RETURN_IF_ERROR(m->inv_freq_.allocate(inv_freq.size()));
    TL_RETURN_IF_ERROR(m->inv_freq_.upload(inv_freq));
    TL_RETURN_IF_ERROR(m->cache_len_.allocate(static_cast<std::size_t>(c.layers)));
    const std::int64_t n = m->max_prompt_, d = c.hidden;
    TL_RETURN_IF_ERROR(m->x_.allocate(static_cast<std::size_t>(n * d)));
    TL_RETURN_IF_ERROR(m->delta_.allocate(static_cast<std::size_t>(n * d)));
    TL_RETURN_IF_ERROR(m->h_.allocate(static_cast<std::size_t>(n * d)));
    TL_RETURN_IF_ERROR(m->logits_.allocate(static_cast<std::size_t>(n * c.vocab)));
    TL_RETURN_IF_ERROR(m->ids_.allocate(static_cast<std::size_t>(n + capacity + 1)));
    // One workspace for the largest step: a status record for the embedding's
    // id check, then the largest layer's plan (the prompt's prefill, or a decode step).
    std::size_t layer_ws = 0;
    for (const auto attend : {tokenless::blocks::Attend::prefill, tokenless::blocks::Attend::decode}) {
      const std::int64_t tokens = attend == tokenless::blocks::Attend::prefill ? n : 1;
      layer_ws = std::max(layer_ws, Layer::workspace_size(m->layer_args(0, tokens, attend)));
    }
    m->layer_ws_at_ = tokenless::kStatusBytes;
    TL_RETURN_IF_ERROR(m->ws_.allocate(m->layer_ws_at_ + layer_ws));
    TL_RETURN_IF_ERROR(m->reset());
    *out = std::move(m);
    return Status::ok();
  }

  // An empty cache.
  Status reset() {
    length_ = 0;
    return cache_len_.fill_bytes(0);
  }
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
    return Status::ok();
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
  DeviceModel() = default;

  static Status upload(const std::vector<float>& host, Buf<T>& dev) {
    std::vector<T> t(host.size());
    std::transform(host.begin(), host.end(), t.begin(), [](float v) { return tokenless::from_float<T>(v); });
    TL_RETURN_IF_ERROR(dev.allocate(t.size()));
    return dev.upload(t);
  }
  static const T* or_null(const Buf<T>& b) { return b.size() ? b.get() : nullptr; }

  typename Layer::Arguments layer_args(int l, std::int64_t tokens, tokenless::blocks::Attend attend) const {
    const LayerBuffers& b = layers_[static_cast<std::size_t>(l)];
    typename Layer::Arguments a;
    a.handle = &handle_;
    a.shape = shape_;
    a.w = {b.attn_norm.get(), b.wqkv.get(), b.wo.get(), b.mlp_norm.get(), b.w_gate_up.get(), b.w_down.get(),
           or_null(b.router)};
    a.inv_freq = inv_freq_.get();
    a.batch = tokenless::VarlenBatch::uniform(1, tokens);
    a.x = x_.get();
    a.delta = delta_.get();
    a.first = l == 0;
    a.attend = attend;
    a.k_cache = b.k_cache.get();
    a.v_cache = b.v_cache.get();
    a.cache_len = cache_len_.get() + l;
    a.capacity = capacity_;
    a.max_queries = 1;
    return a;
  }
  tokenless::Workspace layer_ws(const typename Layer::Arguments& a) const {
    return {ws_.get() + layer_ws_at_, Layer::workspace_size(a)};
  }

  // `tokens` ids from ids[at] through the model; the greedy next id to ids[at + tokens].
  Status step(std::int64_t at, std::int64_t tokens, tokenless::blocks::Attend attend, cudaStream_t stream) {
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
    tokenless::blas::Gemm::Arguments g;
    g.handle = &handle_;
    g.dtype = tokenless::dtype_traits<T>::id;
    g.m = tokens;
    g.n = c_.vocab;
    g.k = d;
    g.a = h_.get();
    g.lda = d;
    g.b = lm_head_.get();
    g.ldb = d;
    g.trans_b = true;
    g.d = logits_.get();
    g.ldd = c_.vocab;
    const auto la = layer_args(0, tokens, attend);
    const tokenless::Workspace lw = layer_ws(la);
    TL_RETURN_IF_ERROR(tokenless::blas::Gemm::run(g, {lw.ptr, ws_.bytes() - layer_ws_at_}, stream));
    return Argmax::run({logits_.get() + (tokens - 1) * c_.vocab, 1, c_.vocab, 0, ids_.get() + at + tokens, 1}, {},
                       stream);
  }

  tokenless::io::ModelConfig c_;
  tokenless::blocks::DecoderShape shape_;
  std::int64_t max_prompt_ = 0, capacity_ = 0, length_ = 0;
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

}  // namespace run_cli
