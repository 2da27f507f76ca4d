#pragma once
// The Llama family's training step on the kernels (the model layer: public
// operations only): `tokenless-train --device gpu`, or emu, the same code on
// the CPU SIMT executor. Llama 3, Mistral, Mixtral and Phi-3, 16-bit storage
// (bf16 or fp16; the attention core's), fp32 accumulation, fp32 gradients
// and fp32 master weights and moments.
//
//   x        = Embedding(ids)
//   x, δ     = DecoderLayer(x, δ)  ×L     training forward: each layer keeps
//                                          its saved state (blocks/decoder.cuh)
//                                          and hands its `mid` on as the next x
//   h        = RmsNorm(x + δ)              the residual sum and 1/rms kept
//   loss     = LinearCrossEntropy(h, lm_head, labels)      mean over B·L
//            + coef · MoeBalanceLoss(every layer's router logits)   (Mixtral
//              with output_router_logits, as transformers adds it)
//   backward: LinearCrossEntropyBackward (dL/dloss = 1 / A, a device scalar),
//             RmsNormBackward, DecoderLayerBackward ×L (the balance loss's
//             gradient through each MoE), EmbeddingBackward
//   step:     optim::AdamW over every tensor: the norm, the clip, the update
//
// The batches are the documented ones (train_data.hpp): a step's A
// micro-batches of B rows of L + 1 ids, uploaded once a step; the gradients
// (one flat fp32 buffer) are zeroed once and every micro-batch adds into
// them. Nothing is allocated after create(), and a step synchronises the
// host once, at its end, to read its losses and the optimizer's state (the
// trainer prints them). No atomics: a rerun gives the same bits.
//
// The master weights start from the checkpoint's fp32 values (not from their
// 16-bit rounding), so a bf16 run of an fp32 checkpoint loses nothing at the
// start; weights() returns them, and the moments, for a save.
//
// Activation checkpointing (create()'s checkpoint_layers): only each layer's
// input stream is kept (the fold x + δ, rounded to T as the layer's own norm
// rounds it) and one layer's state; every layer but the last runs again
// before its backward. The same bits as keeping every layer (tested), one
// layer's activations instead of L, a second forward's time.
//
//   std::unique_ptr<models::LlamaTrainer<__nv_bfloat16>> t;
//   TL_RETURN_IF_ERROR(models::LlamaTrainer<__nv_bfloat16>::create(weights, B, L, A, &t));
//   for (s = 0; s < steps; ++s) TL_RETURN_IF_ERROR(t->step(data, s, hyper, &result));
#include <tokenless/blocks/decoder.cuh>
#include <tokenless/blocks/moe.cuh>
#include <tokenless/blocks/norm.cuh>
#include <tokenless/blocks/policy.hpp>
#include <tokenless/blocks/tokens.cuh>
#include <tokenless/core/cublaslt.hpp>
#include <tokenless/core/device_buffer.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/heads/linear_cross_entropy.cuh>
#include <tokenless/io/model_config.hpp>
#include <tokenless/io/model_weights.hpp>
#include <tokenless/models/train_data.hpp>
#include <tokenless/optim/adamw.cuh>
#include <tokenless/optim/multi_tensor.hpp>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

namespace tokenless::models {

// Calls f(tensor, dims) for every trained tensor of a model, in one fixed
// order (the order of the trainer's flat buffers): embed, the final norm,
// lm_head unless tied, then each layer's. A tied lm_head is the embedding.
template <class W, class F>
void for_each_trained(W& w, F&& f) {
  f(w.embed, 2);
  f(w.norm, 1);
  if (!w.config.tie_embeddings) f(w.lm_head, 2);
  for (auto& l : w.layers) {
    f(l.attn_norm, 1);
    f(l.wqkv, 2);
    f(l.wo, 2);
    f(l.mlp_norm, 1);
    f(l.w_gate_up, 2);
    f(l.w_down, 2);
    if (!l.router.empty()) f(l.router, 2);
  }
}

template <class T, class HD = attention::SupportedHeadDims>
class LlamaTrainer {
 public:
  using Layer = blocks::DecoderLayer<T, blocks::NormThenCast, blocks::RopeHalf, blocks::Silu, HD>;
  using LayerBackward = blocks::DecoderLayerBackward<T, blocks::NormThenCast, blocks::RopeHalf, blocks::Silu, HD>;
  using Norm = blocks::RmsNorm<blocks::NormThenCast, T>;
  using NormBackward = blocks::RmsNormBackward<blocks::NormThenCast, T>;
  using Embed = blocks::Embedding<T>;
  using EmbedBackward = blocks::EmbeddingBackward<T>;
  using Ce = heads::LinearCrossEntropy<T>;
  using CeBackward = heads::LinearCrossEntropyBackward<T>;
  using Balance = blocks::MoeBalanceLoss<T>;
  using Opt = optim::AdamW<T, float>;
  template <class U>
  using Buf = DeviceBuffer<U>;

  // Uploads the weights and sizes everything for micro-batches of B rows of
  // L tokens, A of them a step.
  static Status create(const io::ModelWeights<float>& w, int B, int L, int A, std::unique_ptr<LlamaTrainer>* out,
                       bool checkpoint_layers = false) {
    const io::ModelConfig& c = w.config;
    if (B <= 0 || L <= 0 || A <= 0) {
      return Status::argument(StatusCode::invalid_argument, "B, L, A", "a positive batch size, length and accumulation",
                              "%d, %d, %d", B, L, A);
    }
    if (c.mtp_modules > 0) {
      return Status::argument(StatusCode::unsupported, "config.num_nextn_predict_layers",
                              "no multi-token modules (not trained yet)", "%d", c.mtp_modules);
    }
    TL_RETURN_IF_ERROR(check::fits_int32("B * L", std::int64_t{B} * L));
    auto t = std::unique_ptr<LlamaTrainer>(new LlamaTrainer());
    t->c_ = c;
    t->B_ = B;
    t->L_ = L;
    t->A_ = A;
    t->N_ = std::int64_t{B} * L;
    t->shape_ = shape_of(c);
    t->ckpt_ = checkpoint_layers;
    TL_RETURN_IF_ERROR(blas::LtHandle::create(t->handle_));
    TL_RETURN_IF_ERROR(t->upload_weights(w));
    TL_RETURN_IF_ERROR(t->allocate_activations());
    TL_RETURN_IF_ERROR(t->plan_optimizer(w));
    // Every operation's arguments are fixed by the shapes: check them once.
    TL_RETURN_IF_ERROR(t->can_implement());
    *out = std::move(t);
    return Status::ok();
  }

  const io::ModelConfig& config() const { return c_; }
  bool aux_loss() const { return c_.experts > 0 && c_.output_router_logits; }

  // Step s: its A micro-batches' gradients summed (each scaled by 1 / A),
  // then one AdamW step at h. Synchronises once, at the end.
  Status step(const std::vector<std::int32_t>& data, std::int64_t s, const optim::AdamWHyper& h, TrainStep* out,
              cudaStream_t stream = nullptr) {
    if (static_cast<std::int64_t>(data.size()) < std::int64_t{L_} + 1) {
      return Status::argument(StatusCode::invalid_argument, "data", "at least seq_len + 1 ids", "%zu ids (L = %d)",
                              data.size(), L_);
    }
    TL_RETURN_IF_ERROR(optim::check_adamw(h));
    TL_RETURN_IF_ERROR(upload_batches(data, s, stream));
    TL_RETURN_IF_ERROR(grads_.fill_bytes(0, stream));
    for (int m = 0; m < A_; ++m) TL_RETURN_IF_ERROR(forward_backward(m, stream));
    auto o = opt_args(h);
    TL_RETURN_IF_ERROR(Opt::run(o, opt_ws(), stream));
    return finish_step(out, stream);
  }

  // Step 0's gradients without an update (a test's check against autograd):
  // the A micro-batches of step s summed into grads(), the losses in *out.
  Status gradients(const std::vector<std::int32_t>& data, std::int64_t s, TrainStep* out, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(upload_batches(data, s, stream));
    TL_RETURN_IF_ERROR(grads_.fill_bytes(0, stream));
    for (int m = 0; m < A_; ++m) TL_RETURN_IF_ERROR(forward_backward(m, stream));
    std::vector<float> losses(losses_.size());
    TL_RETURN_IF_ERROR(losses_.download(losses.data(), losses.size(), stream));
    *out = losses_of(losses);
    return Status::ok();
  }

  // The gradients into g (a zeros_like of the weights; a tied lm_head's is
  // the embedding's); synchronises.
  Status grads(io::ModelWeights<float>* g, cudaStream_t stream = nullptr) const {
    return download_flat(grads_, g, stream);
  }
  // The fp32 master weights (T = float: the parameters) into w, and the
  // moments into m and v (each a zeros_like of the weights, or null);
  // synchronises.
  Status weights(io::ModelWeights<float>* w, io::ModelWeights<float>* m = nullptr, io::ModelWeights<float>* v = nullptr,
                 cudaStream_t stream = nullptr) const {
    if constexpr (Opt::kMaster) {
      TL_RETURN_IF_ERROR(download_planned(master_, w, stream));
    } else {
      TL_RETURN_IF_ERROR(download_planned_params(w, stream));
    }
    if (m) TL_RETURN_IF_ERROR(download_planned(m_, m, stream));
    if (v) TL_RETURN_IF_ERROR(download_planned(v_, v, stream));
    return Status::ok();
  }
  // A saved run's state: the masters (w), the moments and the counters.
  Status restore(const io::ModelWeights<float>& w, const io::ModelWeights<float>& m, const io::ModelWeights<float>& v,
                 std::int64_t steps, std::int64_t skipped, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(upload_planned(w, master_, stream));
    TL_RETURN_IF_ERROR(upload_planned(m, m_, stream));
    TL_RETURN_IF_ERROR(upload_planned(v, v_, stream));
    TL_RETURN_IF_ERROR(upload_params(w, stream));
    optim::State st{};
    st.step = steps;
    st.skipped = skipped;
    st.clip = 1;
    TL_RETURN_IF_ERROR(state_.upload(&st, 1, stream));
    host_state_ = st;
    return Status::ok();
  }
  const optim::State& state() const { return host_state_; }

  // Device memory create() took, in bytes.
  std::size_t device_bytes() const { return device_bytes_; }
  // What create() would take for these shapes, without allocating (the
  // trainer's refusal of a batch that does not fit).
  static std::size_t estimate_bytes(const io::ModelConfig& c, int B, int L, int A, bool checkpoint_layers = false) {
    LlamaTrainer t;
    t.c_ = c;
    t.ckpt_ = checkpoint_layers;
    t.shape_ = shape_of(c);
    t.B_ = B;
    t.L_ = L;
    t.A_ = A;
    t.N_ = std::int64_t{B} * L;
    std::int64_t params = 0;
    io::ModelWeights<float> shapes = io::allocate_weights(c);
    for_each_trained(shapes, [&](std::vector<float>& x, int) { params += padded(static_cast<std::int64_t>(x.size())); });
    // 16-bit parameters; fp32 gradients, moments and masters.
    const std::size_t weights = static_cast<std::size_t>(params) * (sizeof(T) + 4 * sizeof(float));
    return weights + t.activation_bytes();
  }

 private:
  LlamaTrainer() = default;
  // Tensors start 256 bytes apart at least (any T), as the GEMMs and the
  // vectorised passes like them.
  static constexpr std::int64_t kAlign = 128;
  static std::int64_t padded(std::int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

  static blocks::DecoderShape shape_of(const io::ModelConfig& c) { return io::decoder_shape(c); }

  struct Tensor {
    std::int64_t at = 0, numel = 0;  // in the flat parameter and gradient buffers
    int dims = 0;
  };
  struct LayerTensors {
    std::int64_t attn_norm, wqkv, wo, mlp_norm, w_gate_up, w_down, router = -1;  // into tensors_
  };
  struct Saved {
    Buf<T> h0, h1, qkv, o, mid, h2, gu, act;
    Buf<float> inv1, inv2, lse;
    Buf<unsigned char> moe;
  };

  // ---------------------------------------------------------------- set-up
  Status upload_weights(const io::ModelWeights<float>& w) {
    std::int64_t total = 0;
    for_each_trained(w, [&](const std::vector<float>& x, int dims) {
      tensors_.push_back({total, static_cast<std::int64_t>(x.size()), dims});
      total += padded(static_cast<std::int64_t>(x.size()));
    });
    std::vector<T> flat(static_cast<std::size_t>(total), from_float<T>(0.0f));
    std::size_t i = 0;
    for_each_trained(w, [&](const std::vector<float>& x, int) {
      std::transform(x.begin(), x.end(), flat.begin() + tensors_[i++].at, [](float v) { return from_float<T>(v); });
    });
    TL_RETURN_IF_ERROR(params_.allocate(flat.size()));
    TL_RETURN_IF_ERROR(params_.upload(flat));
    TL_RETURN_IF_ERROR(grads_.allocate(flat.size()));
    device_bytes_ += params_.bytes() + grads_.bytes();
    // Where each layer's tensors sit (for_each_trained's order).
    std::int64_t k = c_.tie_embeddings ? 2 : 3;
    for (const auto& l : w.layers) {
      LayerTensors t{k, k + 1, k + 2, k + 3, k + 4, k + 5, -1};
      k += 6;
      if (!l.router.empty()) t.router = k++;
      layer_tensors_.push_back(t);
    }
    std::vector<float> inv_freq(static_cast<std::size_t>(c_.rot_dim / 2));
    TL_RETURN_IF_ERROR(blocks::rope_inv_freq(c_.rope, c_.rot_dim, inv_freq.data()));
    TL_RETURN_IF_ERROR(inv_freq_.allocate(inv_freq.size()));
    return inv_freq_.upload(inv_freq);
  }

  // The bytes allocate_activations() takes (and the workspace's).
  std::size_t activation_bytes() const {
    const std::int64_t n = N_, d = c_.hidden, E = c_.experts;
    std::int64_t per_layer = sizeof(T) * n * (4 * d + c_.qkv_dim() + c_.q_dim()) + sizeof(float) * n * (2 + c_.heads);
    if (E == 0) per_layer += sizeof(T) * n * 3 * std::int64_t{c_.intermediate};
    std::int64_t model = sizeof(T) * n * d * 5 + sizeof(float) * n * 2 + sizeof(std::int32_t) * 2 * n * A_ +
                         sizeof(T) * c_.layers * n * E;
    const std::int64_t kept = ckpt_ ? 1 : c_.layers;  // layers whose whole state is alive at once
    const std::int64_t inputs = ckpt_ ? sizeof(T) * (c_.layers - 1) * n * d : 0;
    return static_cast<std::size_t>(per_layer * kept + model + inputs) + layer_moe_bytes() * kept + 64 * 1024;
  }
  std::size_t layer_moe_bytes() const {
    if (c_.experts == 0) return 0;
    typename Layer::Arguments a;
    a.shape = shape_;
    a.batch = VarlenBatch::uniform(B_, L_);
    return Layer::moe_saved_bytes(a);
  }

  Status allocate_activations() {
    const auto n = static_cast<std::size_t>(N_), d = static_cast<std::size_t>(c_.hidden);
    const auto E = static_cast<std::size_t>(c_.experts), F = static_cast<std::size_t>(c_.intermediate);
    TL_RETURN_IF_ERROR(ids_.allocate(n * A_));
    TL_RETURN_IF_ERROR(labels_.allocate(n * A_));
    for (Buf<T>* b : {&x_, &delta_, &hf_, &hn_, &g_, &dh_}) TL_RETURN_IF_ERROR(b->allocate(n * d));
    TL_RETURN_IF_ERROR(inv_f_.allocate(n));
    TL_RETURN_IF_ERROR(lse_.allocate(n));
    TL_RETURN_IF_ERROR(losses_.allocate(2 * static_cast<std::size_t>(A_)));
    TL_RETURN_IF_ERROR(losses_.fill_bytes(0));
    const float inv_a = 1.0f / static_cast<float>(A_);
    TL_RETURN_IF_ERROR(scale_.allocate(1));
    TL_RETURN_IF_ERROR(scale_.upload(&inv_a, 1));
    if (E > 0) {
      TL_RETURN_IF_ERROR(router_logits_.allocate(static_cast<std::size_t>(c_.layers) * n * E));
      TL_RETURN_IF_ERROR(fraction_.allocate(E));
    }
    saved_.resize(static_cast<std::size_t>(ckpt_ ? 1 : c_.layers));
    if (ckpt_) {
      inputs_.resize(static_cast<std::size_t>(c_.layers));
      for (int l = 1; l < c_.layers; ++l) TL_RETURN_IF_ERROR(inputs_[static_cast<std::size_t>(l)].allocate(n * d));
    }
    for (std::size_t l = 0; l < saved_.size(); ++l) {
      Saved& s = saved_[l];
      if (l > 0) TL_RETURN_IF_ERROR(s.h0.allocate(n * d));
      for (Buf<T>* b : {&s.h1, &s.mid, &s.h2}) TL_RETURN_IF_ERROR(b->allocate(n * d));
      TL_RETURN_IF_ERROR(s.qkv.allocate(n * static_cast<std::size_t>(c_.qkv_dim())));
      TL_RETURN_IF_ERROR(s.o.allocate(n * static_cast<std::size_t>(c_.q_dim())));
      TL_RETURN_IF_ERROR(s.inv1.allocate(n));
      TL_RETURN_IF_ERROR(s.inv2.allocate(n));
      TL_RETURN_IF_ERROR(s.lse.allocate(n * static_cast<std::size_t>(c_.heads)));
      if (E == 0) {
        TL_RETURN_IF_ERROR(s.gu.allocate(n * 2 * F));
        TL_RETURN_IF_ERROR(s.act.allocate(n * F));
      } else {
        TL_RETURN_IF_ERROR(s.moe.allocate(layer_moe_bytes()));
      }
    }
    // One workspace for the largest operation.
    std::size_t bytes = 0;
    bytes = std::max(bytes, Embed::workspace_size(embed_args(0)));
    bytes = std::max(bytes, EmbedBackward::workspace_size(embed_backward_args()));
    for (int l = 0; l < c_.layers; ++l) {
      bytes = std::max(bytes, Layer::workspace_size(layer_args(l)));
      bytes = std::max(bytes, LayerBackward::workspace_size(layer_backward_args(l)));
    }
    bytes = std::max(bytes, Ce::workspace_size(ce_args(0)));
    bytes = std::max(bytes, CeBackward::workspace_size(ce_backward_args(0)));
    if (aux_loss()) bytes = std::max(bytes, Balance::workspace_size(balance_args(0)));
    TL_RETURN_IF_ERROR(ws_.allocate(bytes));
    device_bytes_ += activation_bytes() + bytes;
    return Status::ok();
  }

  Status plan_optimizer(const io::ModelWeights<float>& w) {
    std::vector<optim::TensorRef> refs;
    for (const Tensor& t : tensors_) {
      refs.push_back({params_.get() + t.at, grads_.get() + t.at, t.numel, optim::decayed_by_default(t.dims)});
    }
    TL_RETURN_IF_ERROR(optim::Plan::build(refs, &plan_));
    TL_RETURN_IF_ERROR(table_.allocate(plan_.bytes()));
    TL_RETURN_IF_ERROR(table_.upload(plan_.image()));
    const auto total = static_cast<std::size_t>(plan_.total());
    TL_RETURN_IF_ERROR(m_.allocate(total));
    TL_RETURN_IF_ERROR(v_.allocate(total));
    if (Opt::kMaster) TL_RETURN_IF_ERROR(master_.allocate(total));
    TL_RETURN_IF_ERROR(state_.allocate(1));
    TL_RETURN_IF_ERROR(opt_ws_.allocate(Opt::workspace_size(opt_args({}))));
    device_bytes_ += m_.bytes() + v_.bytes() + master_.bytes() + opt_ws_.bytes();
    TL_RETURN_IF_ERROR(Opt::can_implement(opt_args({})));
    TL_RETURN_IF_ERROR(Opt::reset(opt_args({}), opt_ws()));
    // The masters from the checkpoint's own values.
    if (Opt::kMaster) TL_RETURN_IF_ERROR(upload_planned(w, master_));
    host_state_ = {};
    host_state_.clip = 1;
    return Status::ok();
  }

  Status can_implement() const {
    TL_RETURN_IF_ERROR(Embed::can_implement(embed_args(0)));
    TL_RETURN_IF_ERROR(EmbedBackward::can_implement(embed_backward_args()));
    for (int l = 0; l < c_.layers; ++l) {
      TL_RETURN_IF_ERROR(Layer::can_implement(layer_args(l)));
      TL_RETURN_IF_ERROR(LayerBackward::can_implement(layer_backward_args(l)));
    }
    TL_RETURN_IF_ERROR(Norm::can_implement(norm_args()));
    if (ckpt_ && c_.layers > 1) TL_RETURN_IF_ERROR(Norm::can_implement(fold_args(0)));
    TL_RETURN_IF_ERROR(NormBackward::can_implement(norm_backward_args()));
    TL_RETURN_IF_ERROR(Ce::can_implement(ce_args(0)));
    TL_RETURN_IF_ERROR(CeBackward::can_implement(ce_backward_args(0)));
    if (aux_loss()) TL_RETURN_IF_ERROR(Balance::can_implement(balance_args(0)));
    return Status::ok();
  }

  // ---------------------------------------------------------------- the step
  // Every micro-batch's inputs (the first L ids of a row) and labels (the next L).
  Status upload_batches(const std::vector<std::int32_t>& data, std::int64_t s, cudaStream_t stream) {
    ids_host_.resize(static_cast<std::size_t>(N_ * A_));
    labels_host_.resize(ids_host_.size());
    for (int m = 0; m < A_; ++m) {
      train_rows(data, s, m, B_, L_, A_, rows_);
      for (int r = 0; r < B_; ++r) {
        for (int i = 0; i < L_; ++i) {
          const auto at = static_cast<std::size_t>((m * std::int64_t{B_} + r) * L_ + i);
          ids_host_[at] = rows_[static_cast<std::size_t>(r) * (L_ + 1) + i];
          labels_host_[at] = rows_[static_cast<std::size_t>(r) * (L_ + 1) + i + 1];
        }
      }
    }
    // Checked here, before anything runs (the kernels' own checks would
    // only name a row of the batch).
    for (std::size_t i = 0; i < ids_host_.size(); ++i) {
      for (const std::int32_t id : {ids_host_[i], labels_host_[i]}) {
        if (id < 0 || id >= c_.vocab) {
          return Status::argument(StatusCode::invalid_argument, "data", "ids in [0, vocab)",
                                  "%d in micro-batch %lld, row %lld (vocab %d)", id,
                                  static_cast<long long>(i / N_), static_cast<long long>(i % N_ / L_), c_.vocab);
        }
      }
    }
    TL_RETURN_IF_ERROR(ids_.upload(ids_host_, stream));
    return labels_.upload(labels_host_, stream);
  }

  // Micro-batch m's forward and backward, its gradients added.
  Status forward_backward(int m, cudaStream_t stream) {
    TL_RETURN_IF_ERROR(Embed::run(embed_args(m), ws(), stream));
    for (int l = 0; l < c_.layers; ++l) {
      TL_RETURN_IF_ERROR(Layer::run(layer_args(l), ws(), stream));
      if (ckpt_ && l + 1 < c_.layers) TL_RETURN_IF_ERROR(Norm::run(fold_args(l), {}, stream));
    }
    TL_RETURN_IF_ERROR(Norm::run(norm_args(), {}, stream));
    const auto ce = ce_args(m);
    TL_RETURN_IF_ERROR(Ce::run(ce, ws(), stream));
    if (aux_loss()) TL_RETURN_IF_ERROR(Balance::run(balance_args(m), ws(), stream));
    TL_RETURN_IF_ERROR(CeBackward::run(ce_backward_args(m), ws(), stream));
    TL_RETURN_IF_ERROR(NormBackward::run(norm_backward_args(), {}, stream));
    for (int l = c_.layers - 1; l >= 0; --l) {
      // Checkpointed: the layer's state again (the last layer's is still there).
      if (ckpt_ && l + 1 < c_.layers) TL_RETURN_IF_ERROR(Layer::run(layer_args(l), ws(), stream));
      TL_RETURN_IF_ERROR(LayerBackward::run(layer_backward_args(l), ws(), stream));
    }
    auto e = embed_backward_args();
    e.ids = ids_.get() + m * N_;
    return EmbedBackward::run(e, ws(), stream);
  }

  TrainStep losses_of(const std::vector<float>& losses) const {
    TrainStep r;
    for (int m = 0; m < A_; ++m) {
      TrainLoss l;
      l.cross_entropy = losses[2 * static_cast<std::size_t>(m)];
      l.aux = aux_loss() ? losses[2 * static_cast<std::size_t>(m) + 1] : 0.0;
      l.total = l.cross_entropy + (aux_loss() ? c_.router_aux_loss_coef * l.aux : 0.0);
      r.loss += l.total / A_;
      r.micro.push_back(l);
    }
    return r;
  }

  Status finish_step(TrainStep* out, cudaStream_t stream) {
    std::vector<float> losses(losses_.size());
    TL_RETURN_IF_ERROR(losses_.download(losses.data(), losses.size(), stream));
    optim::State st{};
    TL_RETURN_IF_ERROR(state_.download(&st, 1, stream));
    TrainStep r = losses_of(losses);
    r.grad_norm = st.grad_norm;
    r.skipped = st.skipped != host_state_.skipped;
    host_state_ = st;
    if (out) *out = std::move(r);
    return Status::ok();
  }

  // ---------------------------------------------------------------- the operations' arguments
  Workspace ws() const { return {ws_.get(), ws_.bytes()}; }
  Workspace opt_ws() const { return {opt_ws_.get(), opt_ws_.bytes()}; }
  T* param(std::int64_t i) const { return params_.get() + tensors_[static_cast<std::size_t>(i)].at; }
  float* grad(std::int64_t i) const { return grads_.get() + tensors_[static_cast<std::size_t>(i)].at; }
  std::int64_t lm_head() const { return c_.tie_embeddings ? 0 : 2; }

  typename Embed::Arguments embed_args(int m) const {
    typename Embed::Arguments a;
    a.table = param(0);
    a.ids = ids_.get() + m * N_;
    a.n = N_;
    a.vocab = c_.vocab;
    a.d = c_.hidden;
    a.out = x_.get();
    return a;
  }
  typename EmbedBackward::Arguments embed_backward_args() const {
    typename EmbedBackward::Arguments a;
    a.ids = ids_.get();
    a.grad_out = g_.get();
    a.n = N_;
    a.vocab = c_.vocab;
    a.d = c_.hidden;
    a.grad_table = grad(0);
    a.accumulate = true;
    return a;
  }
  typename Layer::Arguments layer_args(int l) const {
    const LayerTensors& t = layer_tensors_[static_cast<std::size_t>(l)];
    const Saved& s = saved_[ckpt_ ? 0 : static_cast<std::size_t>(l)];
    typename Layer::Arguments a;
    a.handle = &handle_;
    a.shape = shape_;
    a.w = {param(t.attn_norm), param(t.wqkv),   param(t.wo),
           param(t.mlp_norm),  param(t.w_gate_up), param(t.w_down),
           t.router >= 0 ? param(t.router) : nullptr};
    a.inv_freq = inv_freq_.get();
    a.batch = VarlenBatch::uniform(B_, L_);
    // Checkpointed, every layer starts from its kept input stream, as a first layer does.
    a.x = l == 0 ? x_.get() : ckpt_ ? inputs_[static_cast<std::size_t>(l)].get() : saved_[static_cast<std::size_t>(l - 1)].mid.get();
    a.delta = delta_.get();
    a.first = l == 0 || ckpt_;
    a.attend = blocks::Attend::prefill;
    if (c_.experts > 0) a.router_logits = router_logits_.get() + static_cast<std::int64_t>(l) * N_ * c_.experts;
    a.saved = {a.first ? nullptr : s.h0.get(), s.inv1.get(), s.h1.get(), s.qkv.get(), s.o.get(), s.lse.get(),
               s.mid.get(), s.inv2.get(), s.h2.get(), c_.experts ? nullptr : s.gu.get(),
               c_.experts ? nullptr : s.act.get(), c_.experts ? s.moe.get() : nullptr};
    return a;
  }
  typename LayerBackward::Arguments layer_backward_args(int l) const {
    const LayerTensors& t = layer_tensors_[static_cast<std::size_t>(l)];
    typename LayerBackward::Arguments b;
    b.forward = layer_args(l);
    b.grad = g_.get();
    b.grad_in = g_.get();
    b.grads = {grad(t.attn_norm), grad(t.wqkv),   grad(t.wo),
               grad(t.mlp_norm),  grad(t.w_gate_up), grad(t.w_down),
               t.router >= 0 ? grad(t.router) : nullptr};
    b.accumulate = true;
    if (aux_loss()) {
      b.balance_fraction = fraction_.get();
      b.balance_rows = c_.layers * N_;
      b.balance_scale = c_.router_aux_loss_coef / static_cast<float>(A_);
    }
    return b;
  }
  // The final norm: h = RmsNorm(mid + δ) of the last layer, the sum kept.
  typename Norm::Arguments norm_args() const {
    typename Norm::Arguments a;
    a.x = delta_.get();
    a.residual = c_.layers > 0 ? saved_.back().mid.get() : x_.get();
    a.weight = param(1);
    a.rows = N_;
    a.d = c_.hidden;
    a.eps = c_.rms_eps;
    a.out = hn_.get();
    a.residual_out = hf_.get();
    a.inv_rms = inv_f_.get();
    return a;
  }
  // Checkpointed: layer l + 1's input stream, mid + δ of layer l, rounded as
  // its norm would round it (a norm pass whose normalised rows go unused).
  typename Norm::Arguments fold_args(int l) const {
    typename Norm::Arguments a;
    a.x = delta_.get();
    a.residual = saved_[0].mid.get();
    a.weight = param(layer_tensors_[static_cast<std::size_t>(l + 1)].attn_norm);
    a.rows = N_;
    a.d = c_.hidden;
    a.eps = c_.rms_eps;
    a.out = hn_.get();
    a.residual_out = inputs_[static_cast<std::size_t>(l + 1)].get();
    return a;
  }
  typename NormBackward::Arguments norm_backward_args() const {
    typename NormBackward::Arguments a;
    a.h = hf_.get();
    a.inv_rms = inv_f_.get();
    a.weight = param(1);
    a.grad_out = dh_.get();
    a.rows = N_;
    a.d = c_.hidden;
    a.grad_h = g_.get();
    a.grad_weight = grad(1);
    a.accumulate_weight = true;
    return a;
  }
  typename Ce::Arguments ce_args(int m) const {
    typename Ce::Arguments a;
    a.handle = &handle_;
    a.h = hn_.get();
    a.weight = param(lm_head());
    a.labels = labels_.get() + m * N_;
    a.n = N_;
    a.vocab = c_.vocab;
    a.d = c_.hidden;
    a.loss = losses_.get() + 2 * m;
    a.lse = lse_.get();
    return a;
  }
  typename CeBackward::Arguments ce_backward_args(int m) const {
    typename CeBackward::Arguments b;
    b.forward = ce_args(m);
    b.grad_loss = scale_.get();
    b.grad_h = dh_.get();
    b.grad_weight = grad(lm_head());
    b.accumulate = true;
    return b;
  }
  typename Balance::Arguments balance_args(int m) const {
    typename Balance::Arguments a;
    a.logits = router_logits_.get();
    a.rows = c_.layers * N_;
    a.experts = c_.experts;
    a.top_k = c_.top_k;
    a.loss = losses_.get() + 2 * m + 1;
    a.fraction = fraction_.get();
    return a;
  }
  typename Opt::Arguments opt_args(const optim::AdamWHyper& h) const {
    typename Opt::Arguments a;
    a.plan = plan_.view(table_.get());
    a.m = m_.get();
    a.v = v_.get();
    a.master = Opt::kMaster ? master_.get() : nullptr;
    a.state = state_.get();
    a.hyper = h;
    return a;
  }

  // ---------------------------------------------------------------- host copies
  // The flat buffers (the parameters' layout) into a model's tensors.
  Status download_flat(const Buf<float>& flat, io::ModelWeights<float>* w, cudaStream_t stream) const {
    std::vector<float> all(flat.size());
    TL_RETURN_IF_ERROR(flat.download(all.data(), all.size(), stream));
    std::size_t i = 0;
    for_each_trained(*w, [&](std::vector<float>& x, int) {
      const Tensor& t = tensors_[i++];
      x.assign(all.begin() + t.at, all.begin() + t.at + t.numel);
    });
    if (w->config.tie_embeddings) w->lm_head = w->embed;
    return Status::ok();
  }
  Status download_planned_params(io::ModelWeights<float>* w, cudaStream_t stream) const {
    std::vector<T> all(params_.size());
    TL_RETURN_IF_ERROR(params_.download(all.data(), all.size(), stream));
    std::size_t i = 0;
    for_each_trained(*w, [&](std::vector<float>& x, int) {
      const Tensor& t = tensors_[i++];
      x.resize(static_cast<std::size_t>(t.numel));
      for (std::int64_t e = 0; e < t.numel; ++e) x[static_cast<std::size_t>(e)] = to_float(all[static_cast<std::size_t>(t.at + e)]);
    });
    if (w->config.tie_embeddings) w->lm_head = w->embed;
    return Status::ok();
  }
  // The optimizer's flat buffers (plan offsets, no padding) to and from a model's tensors.
  Status download_planned(const Buf<float>& flat, io::ModelWeights<float>* w, cudaStream_t stream) const {
    std::vector<float> all(flat.size());
    TL_RETURN_IF_ERROR(flat.download(all.data(), all.size(), stream));
    std::size_t i = 0;
    for_each_trained(*w, [&](std::vector<float>& x, int) {
      const auto at = static_cast<std::size_t>(plan_.offset(i));
      x.assign(all.begin() + at, all.begin() + at + tensors_[i].numel);
      ++i;
    });
    if (w->config.tie_embeddings) w->lm_head = w->embed;
    return Status::ok();
  }
  Status upload_planned(const io::ModelWeights<float>& w, Buf<float>& flat, cudaStream_t stream = nullptr) {
    if (flat.size() == 0) return Status::ok();
    std::vector<float> all(flat.size());
    std::size_t i = 0;
    Status bad = Status::ok();
    for_each_trained(w, [&](const std::vector<float>& x, int) {
      if (static_cast<std::int64_t>(x.size()) != tensors_[i].numel) bad = Status::argument(StatusCode::shape_mismatch, "weights", "the trainer's shapes", "tensor %zu", i);
      else std::copy(x.begin(), x.end(), all.begin() + plan_.offset(i));
      ++i;
    });
    TL_RETURN_IF_ERROR(bad);
    // A pageable source is staged before the call returns: `all` may go.
    return flat.upload(all, stream);
  }
  Status upload_params(const io::ModelWeights<float>& w, cudaStream_t stream) {
    std::vector<T> flat(params_.size(), from_float<T>(0.0f));
    std::size_t i = 0;
    for_each_trained(w, [&](const std::vector<float>& x, int) {
      std::transform(x.begin(), x.end(), flat.begin() + tensors_[i++].at, [](float v) { return from_float<T>(v); });
    });
    return params_.upload(flat, stream);
  }

  io::ModelConfig c_;
  blocks::DecoderShape shape_;
  int B_ = 0, L_ = 0, A_ = 0;
  std::int64_t N_ = 0;
  blas::LtHandle handle_;
  std::vector<Tensor> tensors_;
  std::vector<LayerTensors> layer_tensors_;
  Buf<T> params_;
  Buf<float> grads_, inv_freq_;
  Buf<std::int32_t> ids_, labels_;
  Buf<T> x_, delta_, hf_, hn_, g_, dh_, router_logits_;
  Buf<float> inv_f_, lse_, losses_, scale_, fraction_;
  std::vector<Saved> saved_;      // a layer each, or (checkpointed) one
  std::vector<Buf<T>> inputs_;    // checkpointed: layer l's input stream (l >= 1)
  bool ckpt_ = false;
  Buf<unsigned char> ws_, table_, opt_ws_;
  optim::Plan plan_;
  Buf<float> m_, v_, master_;
  Buf<optim::State> state_;
  optim::State host_state_{};
  std::vector<std::int32_t> rows_, ids_host_, labels_host_;
  std::size_t device_bytes_ = 0;
};

}  // namespace tokenless::models
