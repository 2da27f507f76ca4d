#pragma once
// The Llama family's forward and backward for training on the host path
// (`tokenless-train --device cpu`): Llama 3, Mistral (a sliding window),
// Mixtral (top-k MoE and its load-balancing loss) and Phi-3, in fp32, the
// arithmetic of transformers' modules and of torch autograd's backward, every
// projection and its two gradients matrix products over all the micro-batch's
// tokens (core/host_blas.hpp: OpenBLAS), the rest split over the pool.
//
// One call takes a micro-batch of B rows of L + 1 ids (the model reads the
// first L of a row, from position 0, and predicts the next L), and adds
// scale × ∂loss/∂θ into the gradient (io::zeros_like(weights) at the first
// micro-batch: accumulation is the caller's sum). The loss is the mean
// cross-entropy over the B·L predictions, plus router_aux_loss_coef × the
// load-balancing loss for a Mixtral config with output_router_logits, whose
// counts and mean probabilities are over every layer's router together, as
// transformers' load_balancing_loss_func takes them.
//
// Saved state (a documented choice, docs/training.md): each layer keeps its
// input, norms' inverse RMS, normalised inputs, q/k/v after RoPE, the
// attention's output and log-sum-exp, and the MLP's gate/up and activation;
// attention probabilities are recomputed from the log-sum-exp in the
// backward, as FlashAttention does, so no L × L matrix is kept. With
// `checkpoint_layers` only each layer's input is kept and the layer is run
// again in the backward: memory of one layer's activations, a second
// forward's time. The logits are made, used and dropped a block of rows at a
// time (a fused linear cross-entropy): never [B·L, vocab] at once.
//
//   models::LlamaHostTrainer t(weights.config);
//   auto grad = io::zeros_like(weights);
//   models::TrainLoss loss;
//   TL_RETURN_IF_ERROR(t.forward_backward(weights, rows.data(), B, L, 1.0f / A, &grad, &loss));
//
// LlamaHostTraining is a whole step over it: the documented batches
// (train_data.hpp), A micro-batches accumulated, then HostAdamW over every
// parameter (matrices decayed, norms not: optim::decayed_by_default) with
// clipping; a tied lm_head follows the embedding.
//
//   models::LlamaHostTraining run;
//   TL_RETURN_IF_ERROR(run.init(&weights));
//   for (s = 0; s < steps; ++s) TL_RETURN_IF_ERROR(run.step(data, s, B, L, A, hyper, &result));
#include <tokenless/blocks/policy.hpp>
#include <tokenless/core/host_blas.hpp>
#include <tokenless/core/status.hpp>
#include <tokenless/io/model_weights.hpp>
#include <tokenless/models/host_train_ops.hpp>
#include <tokenless/models/train_data.hpp>
#include <tokenless/optim/host.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

namespace tokenless::models {


class LlamaHostTrainer {
 public:
  explicit LlamaHostTrainer(const io::ModelConfig& c, bool checkpoint_layers = false)
      : c_(c), checkpoint_(checkpoint_layers), inv_freq_(static_cast<std::size_t>(c.rot_dim / 2)) {
    (void)blocks::rope_inv_freq(c_.rope, c_.rot_dim, inv_freq_.data());  // validated on load
  }

  bool aux_loss() const { return c_.experts > 0 && c_.output_router_logits; }

  // rows: B × (L + 1) ids, each in [0, vocab) (the trainer checks the data once).
  Status forward_backward(const io::ModelWeights<float>& w, const std::int32_t* rows, int B, int L, float scale,
                          io::ModelWeights<float>* grad, TrainLoss* loss) {
    if (!rows || !grad) return Status::error(StatusCode::null_pointer, "LlamaHostTrainer: null rows or gradient");
    if (B <= 0 || L <= 0) {
      return Status::error(StatusCode::invalid_argument, "LlamaHostTrainer: batch %d × length %d is empty", B, L);
    }
    if (c_.mtp_modules > 0) {
      return Status::error(StatusCode::unsupported, "LlamaHostTrainer: multi-token modules are not trained");
    }
    B_ = B;
    L_ = L;
    N_ = static_cast<std::int64_t>(B) * L;
    const int D = c_.hidden;
    ids_.resize(static_cast<std::size_t>(N_));
    targets_.resize(ids_.size());
    for (int b = 0; b < B; ++b) {
      for (int t = 0; t < L; ++t) {
        ids_[static_cast<std::size_t>(b * L + t)] = rows[b * (L + 1) + t];
        targets_[static_cast<std::size_t>(b * L + t)] = rows[b * (L + 1) + t + 1];
      }
    }
    for (std::int64_t i = 0; i < N_; ++i) {
      if (ids_[i] < 0 || ids_[i] >= c_.vocab || targets_[i] < 0 || targets_[i] >= c_.vocab) {
        return Status::error(StatusCode::invalid_argument, "LlamaHostTrainer: an id outside [0, %d)", c_.vocab);
      }
    }
    // The forward, each layer's state kept (or only its input).
    saves_.resize(static_cast<std::size_t>(c_.layers));
    x_.resize(static_cast<std::size_t>(N_ * D));
    for (std::int64_t t = 0; t < N_; ++t) std::copy_n(w.embed.data() + std::int64_t(ids_[t]) * D, D, x_.data() + t * D);
    for (int l = 0; l < c_.layers; ++l) {
      Save& s = saves_[static_cast<std::size_t>(l)];
      s.x_in = x_;
      if (checkpoint_) {
        layer_forward(w.layers[static_cast<std::size_t>(l)], scratch_, x_);
        s.probs = scratch_.probs;  // the aux loss needs every layer's routing before the backward
        s.expert = scratch_.expert;
      } else {
        layer_forward(w.layers[static_cast<std::size_t>(l)], s, x_);
      }
    }
    // The aux loss's counts and mean probabilities over every layer's router.
    double aux = 0;
    const int E = c_.experts;
    aux_grad_.assign(static_cast<std::size_t>(E), 0.0f);
    if (aux_loss()) {
      std::vector<double> count(static_cast<std::size_t>(E), 0.0), prob(count.size(), 0.0);
      for (const Save& s : saves_) {
        for (std::int64_t t = 0; t < N_; ++t) {
          for (int e = 0; e < E; ++e) prob[e] += s.probs[t * E + e];
          for (int k = 0; k < c_.top_k; ++k) count[s.expert[t * c_.top_k + k]] += 1;
        }
      }
      const double T = static_cast<double>(N_) * c_.layers;
      for (int e = 0; e < E; ++e) {
        aux += (count[e] / T) * (prob[e] / T);
        // ∂(coef · E Σ count/T · prob/T)/∂p[t, e], the counts constant (top-k).
        aux_grad_[e] = static_cast<float>(scale * c_.router_aux_loss_coef * E * count[e] / (T * T));
      }
      aux *= E;
    }
    // The head: final norm, logits a block of rows at a time, the
    // cross-entropy and its gradient into the norm's output.
    hf_.resize(x_.size());
    inv_f_.resize(static_cast<std::size_t>(N_));
    rms_norm(x_.data(), w.norm.data(), hf_.data(), inv_f_.data());
    dh_.assign(x_.size(), 0.0f);
    const double ce = linear_cross_entropy(w, grad, scale);
    // Backward: the final norm, then each layer in reverse.
    dx_.assign(x_.size(), 0.0f);
    rms_norm_backward(x_.data(), w.norm.data(), inv_f_.data(), dh_.data(), dx_.data(), grad->norm.data());
    for (int l = c_.layers - 1; l >= 0; --l) {
      Save& s = saves_[static_cast<std::size_t>(l)];
      const auto& lw = w.layers[static_cast<std::size_t>(l)];
      if (checkpoint_) {
        std::vector<float> x = s.x_in;
        layer_forward(lw, scratch_, x);
        scratch_.x_in = s.x_in;
        layer_backward(lw, scratch_, grad->layers[static_cast<std::size_t>(l)]);
      } else {
        layer_backward(lw, s, grad->layers[static_cast<std::size_t>(l)]);
      }
    }
    // The embedding: each token's row gathers its gradient (serial: rows repeat).
    for (std::int64_t t = 0; t < N_; ++t) {
      float* ge = grad->embed.data() + std::int64_t(ids_[t]) * D;
      const float* d = dx_.data() + t * D;
      for (int i = 0; i < D; ++i) ge[i] += d[i];
    }
    if (c_.tie_embeddings) {  // one tensor: the head's gradient joins the embedding's
      for (std::size_t i = 0; i < grad->embed.size(); ++i) grad->embed[i] += grad->lm_head[i];
      std::fill(grad->lm_head.begin(), grad->lm_head.end(), 0.0f);
    }
    if (loss) {
      loss->cross_entropy = ce;
      loss->aux = aux;
      loss->total = ce + (aux_loss() ? c_.router_aux_loss_coef * aux : 0.0);
    }
    return Status::ok();
  }

  // Bytes of activations one micro-batch of B × L keeps (an estimate for
  // the trainer's memory check and its report).
  std::int64_t activation_bytes(int B, int L) const {
    const std::int64_t N = std::int64_t(B) * L, D = c_.hidden, F = c_.intermediate;
    const std::int64_t K = c_.experts ? c_.top_k : 1;
    const std::int64_t per_layer = N * (5 * D + c_.qkv_dim() + c_.q_dim() + K * (3 * F + D) + 2 + c_.heads) +
                                   N * (c_.experts ? 2 * c_.experts : 0);
    const std::int64_t layers = checkpoint_ ? c_.layers * N * D + 2 * per_layer : c_.layers * per_layer;
    return 4 * (layers + 4 * N * D + kCeRows * c_.vocab);
  }

 private:
  static constexpr std::int64_t kCeRows = 256;  // rows of logits alive at once

  struct Save {
    std::vector<float> x_in, inv1, h1, qkv, attn, lse, x_mid, inv2, h2, gu, act;
    // Mixtral: the router's probabilities [N, E], each token's experts and
    // weights [N, K], each expert's rows (slot = t·K + k), and every slot's
    // output; gu and act hold the experts' rows in expert order.
    std::vector<float> probs, weight, slot_out;
    std::vector<int> expert;
    std::vector<std::int64_t> expert_rows, expert_begin;
  };

  static float silu(float x) { return x / (1.0f + std::exp(-x)); }

  // RMSNorm over the micro-batch's rows, and its backward (host_train_ops.hpp).
  void rms_norm(const float* x, const float* w, float* y, float* inv) const {
    host_rms_norm(x, N_, c_.hidden, w, c_.rms_eps, y, inv);
  }
  void rms_norm_backward(const float* x, const float* w, const float* inv, const float* dy, float* dx, float* dw) {
    host_rms_norm_backward(x, N_, c_.hidden, w, inv, dy, dx, dw);
  }

  // RoPE in transformers' half layout on q and k heads of a [N, qkvd] buffer;
  // sign -1 rotates back (the backward's transpose).
  void rope(float* qkv, float sign) const {
    const int hd = c_.head_dim, H = c_.heads, KV = c_.kv_heads, qkvd = c_.qkv_dim(), half = c_.rot_dim / 2;
    const int L = L_;
    host::pool().parallel_for(N_, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t t = lo; t < hi; ++t) {
        const auto pos = static_cast<float>(t % L);
        for (int i = 0; i < half; ++i) {
          const float angle = pos * inv_freq_[i];
          const float cs = std::cos(angle), sn = sign * std::sin(angle);
          for (int h2 = 0; h2 < H + KV; ++h2) {
            float* head = qkv + t * qkvd + h2 * hd;
            const float a = head[i], b = head[i + half];
            head[i] = a * cs - b * sn;
            head[i + half] = a * sn + b * cs;
          }
        }
      }
    });
  }

  // Causal attention of each row (a sequence of L) and head, and its
  // backward (host_train_ops.hpp), Mistral's window included.
  HostCausalAttention attention() const { return {c_.heads, c_.kv_heads, c_.head_dim, c_.sliding_window}; }
  void attention_forward(Save& s) {
    s.attn.resize(static_cast<std::size_t>(N_ * c_.q_dim()));
    s.lse.resize(static_cast<std::size_t>(N_ * c_.heads));
    attention().forward(s.qkv.data(), c_.qkv_dim(), B_, L_, s.attn.data(), c_.q_dim(), s.lse.data());
  }
  void attention_backward(const Save& s, const float* d_attn, float* d_qkv) {
    attention().backward(s.qkv.data(), c_.qkv_dim(), B_, L_, s.attn.data(), d_attn, c_.q_dim(), s.lse.data(), d_qkv);
  }

  // SwiGLU over rows: act = silu(g) · u from gu [rows, 2F] (gate first).
  void swiglu(const float* gu, float* act, std::int64_t rows) const {
    const int F = c_.intermediate;
    host::pool().parallel_for(rows, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t t = lo; t < hi; ++t) {
        for (int i = 0; i < F; ++i) act[t * F + i] = silu(gu[t * 2 * F + i]) * gu[t * 2 * F + F + i];
      }
    });
  }
  // d_gu from d_act: dg = da · u · σ(g)(1 + g(1 − σ(g))), du = da · silu(g).
  void swiglu_backward(const float* gu, const float* d_act, float* d_gu, std::int64_t rows) const {
    const int F = c_.intermediate;
    host::pool().parallel_for(rows, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t t = lo; t < hi; ++t) {
        for (int i = 0; i < F; ++i) {
          const float g = gu[t * 2 * F + i], u = gu[t * 2 * F + F + i], da = d_act[t * F + i];
          const float sg = 1.0f / (1.0f + std::exp(-g));
          d_gu[t * 2 * F + i] = da * u * sg * (1.0f + g * (1.0f - sg));
          d_gu[t * 2 * F + F + i] = da * g * sg;
        }
      }
    });
  }

  // One decoder layer: x ← x + o(attn(norm(x))), x ← x + mlp(norm(x)).
  void layer_forward(const io::LayerWeights<float>& w, Save& s, std::vector<float>& x) {
    const int D = c_.hidden, qkvd = c_.qkv_dim(), qd = c_.q_dim(), F = c_.intermediate;
    s.inv1.resize(static_cast<std::size_t>(N_));
    s.h1.resize(x.size());
    rms_norm(x.data(), w.attn_norm.data(), s.h1.data(), s.inv1.data());
    s.qkv.resize(static_cast<std::size_t>(N_ * qkvd));
    host::gemm_nt(N_, qkvd, D, s.h1.data(), D, w.wqkv.data(), D, s.qkv.data(), qkvd);
    rope(s.qkv.data(), 1.0f);
    attention_forward(s);
    host::gemm_nt(N_, D, qd, s.attn.data(), qd, w.wo.data(), qd, x.data(), D, /*accumulate=*/true);
    s.x_mid = x;
    s.inv2.resize(static_cast<std::size_t>(N_));
    s.h2.resize(x.size());
    rms_norm(x.data(), w.mlp_norm.data(), s.h2.data(), s.inv2.data());
    if (c_.experts) {
      moe_forward(w, s, x);
      return;
    }
    s.gu.resize(static_cast<std::size_t>(N_ * 2 * F));
    s.act.resize(static_cast<std::size_t>(N_ * F));
    host::gemm_nt(N_, 2 * F, D, s.h2.data(), D, w.w_gate_up.data(), D, s.gu.data(), 2 * F);
    swiglu(s.gu.data(), s.act.data(), N_);
    host::gemm_nt(N_, D, F, s.act.data(), F, w.w_down.data(), F, x.data(), D, /*accumulate=*/true);
  }

  // Mixtral's block: softmax over the router's logits (fp32), the top k by
  // probability renormalised, each expert over the rows routed to it, and a
  // token's outputs summed in its slot order.
  void moe_forward(const io::LayerWeights<float>& w, Save& s, std::vector<float>& x) {
    const int D = c_.hidden, F = c_.intermediate, E = c_.experts, K = c_.top_k;
    s.probs.resize(static_cast<std::size_t>(N_ * E));
    host::gemm_nt(N_, E, D, s.h2.data(), D, w.router.data(), D, s.probs.data(), E);
    s.expert.resize(static_cast<std::size_t>(N_ * K));
    s.weight.resize(s.expert.size());
    for (std::int64_t t = 0; t < N_; ++t) {
      float* p = s.probs.data() + t * E;
      float mx = -INFINITY, sum = 0;
      for (int e = 0; e < E; ++e) mx = std::max(mx, p[e]);
      for (int e = 0; e < E; ++e) sum += p[e] = std::exp(p[e] - mx);
      for (int e = 0; e < E; ++e) p[e] /= sum;
      float total = 0;
      for (int k = 0; k < K; ++k) {  // torch.topk's order: largest first, the lower index on a tie
        int best = -1;
        for (int e = 0; e < E; ++e) {
          bool taken = false;
          for (int j = 0; j < k; ++j) taken |= s.expert[t * K + j] == e;
          if (!taken && (best < 0 || p[e] > p[best])) best = e;
        }
        s.expert[t * K + k] = best;
        total += p[best];
      }
      for (int k = 0; k < K; ++k) s.weight[t * K + k] = p[s.expert[t * K + k]] / total;
    }
    s.expert_begin.assign(static_cast<std::size_t>(E + 1), 0);
    s.expert_rows.clear();
    for (int e = 0; e < E; ++e) {
      s.expert_begin[e] = static_cast<std::int64_t>(s.expert_rows.size());
      for (std::int64_t r = 0; r < N_ * K; ++r) {
        if (s.expert[r] == e) s.expert_rows.push_back(r);
      }
    }
    s.expert_begin[E] = static_cast<std::int64_t>(s.expert_rows.size());
    const std::int64_t M = s.expert_begin[E];
    s.gu.resize(static_cast<std::size_t>(M * 2 * F));
    s.act.resize(static_cast<std::size_t>(M * F));
    s.slot_out.assign(static_cast<std::size_t>(N_ * K * D), 0.0f);
    gather_expert_rows(s);
    for (int e = 0; e < E; ++e) {
      const std::int64_t a = s.expert_begin[e], m = s.expert_begin[e + 1] - a;
      if (m == 0) continue;
      host::gemm_nt(m, 2 * F, D, xs_.data() + a * D, D, w.w_gate_up.data() + std::int64_t(e) * 2 * F * D, D,
                    s.gu.data() + a * 2 * F, 2 * F);
      swiglu(s.gu.data() + a * 2 * F, s.act.data() + a * F, m);
      host::gemm_nt(m, D, F, s.act.data() + a * F, F, w.w_down.data() + std::int64_t(e) * D * F, F,
                    ys_.data() + a * D, D);
    }
    for (std::int64_t i = 0; i < M; ++i) std::copy_n(ys_.data() + i * D, D, s.slot_out.data() + s.expert_rows[i] * D);
    for (std::int64_t t = 0; t < N_; ++t) {
      for (int k = 0; k < K; ++k) {
        const float wt = s.weight[t * K + k];
        const float* y = s.slot_out.data() + (t * K + k) * D;
        for (int i = 0; i < D; ++i) x[t * D + i] += wt * y[i];
      }
    }
  }

  // Each routed slot's input row (its token's normalised h2) in expert
  // order into xs_ (ys_ sized alike: the experts' outputs or input gradients).
  void gather_expert_rows(const Save& s) {
    const int D = c_.hidden, K = c_.top_k;
    const std::int64_t M = s.expert_begin[c_.experts];
    xs_.resize(static_cast<std::size_t>(M * D));
    ys_.resize(xs_.size());
    for (std::int64_t i = 0; i < M; ++i) std::copy_n(s.h2.data() + (s.expert_rows[i] / K) * D, D, xs_.data() + i * D);
  }

  // dh2 (zeroed here) from dy, the MLP's output gradient; the experts' and
  // router's weight gradients accumulate into g.
  void moe_backward(const io::LayerWeights<float>& w, const Save& s, const float* dy, float* dh2,
                    io::LayerWeights<float>& g) {
    const int D = c_.hidden, F = c_.intermediate, E = c_.experts, K = c_.top_k;
    const std::int64_t M = s.expert_begin[E];
    // Each slot's output gradient, w · dy, in expert order, and dw = dy · y.
    std::vector<float> dys(static_cast<std::size_t>(M * D)), dwt(static_cast<std::size_t>(N_ * K));
    for (std::int64_t i = 0; i < M; ++i) {
      const std::int64_t r = s.expert_rows[i], t = r / K;
      for (int j = 0; j < D; ++j) dys[i * D + j] = s.weight[r] * dy[t * D + j];
    }
    host::pool().parallel_for(N_ * K, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t r = lo; r < hi; ++r) {
        float acc = 0;
        for (int j = 0; j < D; ++j) acc += dy[(r / K) * D + j] * s.slot_out[r * D + j];
        dwt[r] = acc;
      }
    });
    std::vector<float> dact(static_cast<std::size_t>(M * F)), dgu(static_cast<std::size_t>(M * 2 * F));
    gather_expert_rows(s);
    for (int e = 0; e < E; ++e) {
      const std::int64_t a = s.expert_begin[e], m = s.expert_begin[e + 1] - a;
      if (m == 0) continue;
      const float* wgu = w.w_gate_up.data() + std::int64_t(e) * 2 * F * D;
      const float* wd = w.w_down.data() + std::int64_t(e) * D * F;
      host::gemm_nn(m, F, D, dys.data() + a * D, D, wd, F, dact.data() + a * F, F);
      host::gemm_tn(D, F, m, dys.data() + a * D, D, s.act.data() + a * F, F,
                    g.w_down.data() + std::int64_t(e) * D * F, F, true);
      swiglu_backward(s.gu.data() + a * 2 * F, dact.data() + a * F, dgu.data() + a * 2 * F, m);
      host::gemm_nn(m, D, 2 * F, dgu.data() + a * 2 * F, 2 * F, wgu, D, ys_.data() + a * D, D);
      host::gemm_tn(2 * F, D, m, dgu.data() + a * 2 * F, 2 * F, xs_.data() + a * D, D,
                    g.w_gate_up.data() + std::int64_t(e) * 2 * F * D, D, true);
    }
    std::fill(dh2, dh2 + N_ * D, 0.0f);
    for (std::int64_t i = 0; i < M; ++i) {  // serial: a token's K slots add to one row
      const std::int64_t t = s.expert_rows[i] / K;
      for (int j = 0; j < D; ++j) dh2[t * D + j] += ys_[i * D + j];
    }
    // The routing: w_k = p_k / Σ_sel p, then the softmax; the aux loss adds
    // its constant gradient per expert to every token's probabilities.
    std::vector<float> dlogit(static_cast<std::size_t>(N_ * E));
    host::pool().parallel_for(N_, [&](std::int64_t lo, std::int64_t hi) {
      std::vector<float> dp(static_cast<std::size_t>(E));
      for (std::int64_t t = lo; t < hi; ++t) {
        const float* p = s.probs.data() + t * E;
        float sel = 0, dot = 0;
        for (int k = 0; k < K; ++k) {
          sel += p[s.expert[t * K + k]];
          dot += dwt[t * K + k] * s.weight[t * K + k];
        }
        for (int e = 0; e < E; ++e) dp[e] = aux_grad_[e];
        for (int k = 0; k < K; ++k) dp[s.expert[t * K + k]] += (dwt[t * K + k] - dot) / sel;
        float pd = 0;
        for (int e = 0; e < E; ++e) pd += p[e] * dp[e];
        for (int e = 0; e < E; ++e) dlogit[t * E + e] = p[e] * (dp[e] - pd);
      }
    });
    host::gemm_nn(N_, D, E, dlogit.data(), E, w.router.data(), D, dh2, D, true);
    host::gemm_tn(E, D, N_, dlogit.data(), E, s.h2.data(), D, g.router.data(), D, true);
  }

  // dx_ (the gradient into the layer's output) becomes the gradient into its input.
  void layer_backward(const io::LayerWeights<float>& w, const Save& s, io::LayerWeights<float>& g) {
    const int D = c_.hidden, qkvd = c_.qkv_dim(), qd = c_.q_dim(), F = c_.intermediate;
    dh_.resize(static_cast<std::size_t>(N_ * D));
    if (c_.experts) {
      moe_backward(w, s, dx_.data(), dh_.data(), g);
    } else {
      dact_.resize(static_cast<std::size_t>(N_ * F));
      dgu_.resize(static_cast<std::size_t>(N_ * 2 * F));
      host::gemm_nn(N_, F, D, dx_.data(), D, w.w_down.data(), F, dact_.data(), F);
      host::gemm_tn(D, F, N_, dx_.data(), D, s.act.data(), F, g.w_down.data(), F, true);
      swiglu_backward(s.gu.data(), dact_.data(), dgu_.data(), N_);
      host::gemm_nn(N_, D, 2 * F, dgu_.data(), 2 * F, w.w_gate_up.data(), D, dh_.data(), D);
      host::gemm_tn(2 * F, D, N_, dgu_.data(), 2 * F, s.h2.data(), D, g.w_gate_up.data(), D, true);
    }
    rms_norm_backward(s.x_mid.data(), w.mlp_norm.data(), s.inv2.data(), dh_.data(), dx_.data(), g.mlp_norm.data());
    // The attention half: o_proj, attention, RoPE's transpose, qkv.
    dattn_.resize(static_cast<std::size_t>(N_ * qd));
    host::gemm_nn(N_, qd, D, dx_.data(), D, w.wo.data(), qd, dattn_.data(), qd);
    host::gemm_tn(D, qd, N_, dx_.data(), D, s.attn.data(), qd, g.wo.data(), qd, true);
    dqkv_.resize(static_cast<std::size_t>(N_ * qkvd));
    attention_backward(s, dattn_.data(), dqkv_.data());
    rope(dqkv_.data(), -1.0f);
    host::gemm_nn(N_, D, qkvd, dqkv_.data(), qkvd, w.wqkv.data(), D, dh_.data(), D);
    host::gemm_tn(qkvd, D, N_, dqkv_.data(), qkvd, s.h1.data(), D, g.wqkv.data(), D, true);
    rms_norm_backward(s.x_in.data(), w.attn_norm.data(), s.inv1.data(), dh_.data(), dx_.data(), g.attn_norm.data());
  }

  // The LM head and the mean cross-entropy a block of rows at a time: the
  // logits, their log-softmax, d logits = scale (softmax − onehot) / N, then
  // dh += d logits · W and dW += d logitsᵀ h. Returns the mean loss.
  double linear_cross_entropy(const io::ModelWeights<float>& w, io::ModelWeights<float>* grad, float scale) {
    const int D = c_.hidden, V = c_.vocab;
    logits_.resize(static_cast<std::size_t>(std::min(kCeRows, N_) * V));
    std::vector<double> row_loss(static_cast<std::size_t>(N_));
    const float g = scale / static_cast<float>(N_);
    for (std::int64_t r0 = 0; r0 < N_; r0 += kCeRows) {
      const std::int64_t rows = std::min(kCeRows, N_ - r0);
      host::gemm_nt(rows, V, D, hf_.data() + r0 * D, D, w.lm_head.data(), D, logits_.data(), V);
      host::pool().parallel_for(rows, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) {
          float* z = logits_.data() + i * V;
          float mx = -INFINITY;
          for (int v = 0; v < V; ++v) mx = std::max(mx, z[v]);
          float sum = 0;
          for (int v = 0; v < V; ++v) sum += std::exp(z[v] - mx);
          const float lse = mx + std::log(sum);
          const int y = targets_[static_cast<std::size_t>(r0 + i)];
          row_loss[static_cast<std::size_t>(r0 + i)] = static_cast<double>(lse - z[y]);
          for (int v = 0; v < V; ++v) z[v] = g * std::exp(z[v] - lse);
          z[y] -= g;
        }
      }, 4);
      host::gemm_nn(rows, D, V, logits_.data(), V, w.lm_head.data(), D, dh_.data() + r0 * D, D, true);
      host::gemm_tn(V, D, rows, logits_.data(), V, hf_.data() + r0 * D, D, grad->lm_head.data(), D, true);
    }
    double total = 0;
    for (double l : row_loss) total += l;
    return total / static_cast<double>(N_);
  }

  const io::ModelConfig c_;
  bool checkpoint_;
  std::vector<float> inv_freq_;
  int B_ = 0, L_ = 0;
  std::int64_t N_ = 0;
  std::vector<std::int32_t> ids_, targets_;
  std::vector<Save> saves_;
  Save scratch_;
  std::vector<float> x_, hf_, inv_f_, dh_, dx_, dattn_, dqkv_, dact_, dgu_, logits_, xs_, ys_, aux_grad_;
};


class LlamaHostTraining {
 public:
  // The weights are trained in place; hub_moe: Mixtral's per-expert names.
  Status init(io::ModelWeights<float>* w, bool hub_moe = false, bool checkpoint_layers = false) {
    if (!w) return Status::error(StatusCode::null_pointer, "LlamaHostTraining: null weights");
    w_ = w;
    trainer_ = std::make_unique<LlamaHostTrainer>(w->config, checkpoint_layers);
    grad_ = io::zeros_like(*w);
    views_ = io::parameter_views(*w, hub_moe);
    grad_views_ = io::parameter_views(grad_, hub_moe);
    return opt_.init(host_tensors(views_, grad_views_));
  }

  // Step s: its A micro-batches' gradients summed (each scaled by 1 / A),
  // then one AdamW step at h (the schedule's lr for this step).
  Status step(const std::vector<std::int32_t>& data, std::int64_t s, int B, int L, int A, const optim::AdamWHyper& h,
              TrainStep* out) {
    if (!w_) return Status::error(StatusCode::invalid_argument, "LlamaHostTraining: init first");
    if (w_->config.tie_embeddings) std::fill(grad_.lm_head.begin(), grad_.lm_head.end(), 0.0f);
    TL_RETURN_IF_ERROR(host_train_step("LlamaHostTraining", opt_, grad_views_, data, s, B, L, A, h, rows_,
                                       [&](const std::int32_t* rows, float scale, TrainLoss* l) {
                                         return trainer_->forward_backward(*w_, rows, B, L, scale, &grad_, l);
                                       },
                                       out));
    if (w_->config.tie_embeddings) w_->lm_head = w_->embed;
    return Status::ok();
  }

  const io::ModelWeights<float>& grad() const { return grad_; }
  const std::vector<io::ParamView>& grad_views() const { return grad_views_; }
  const std::vector<io::ParamView>& views() const { return views_; }
  optim::HostAdamW& optimizer() { return opt_; }
  LlamaHostTrainer& trainer() { return *trainer_; }

 private:
  io::ModelWeights<float>* w_ = nullptr;
  std::unique_ptr<LlamaHostTrainer> trainer_;
  io::ModelWeights<float> grad_;
  std::vector<io::ParamView> views_, grad_views_;
  optim::HostAdamW opt_;
  std::vector<std::int32_t> rows_;
};

}  // namespace tokenless::models
