#pragma once
// BLT's forward and backward for training on the host path
// (`tokenless-train --bytes-file`, `--device cpu`): transformers'
// BltForCausalLM in fp32 (models/blt_host.hpp's forward), torch autograd's
// backward, the entropy model frozen (it only cuts the patches; BLT trains
// it apart) and every other tensor trained:
//
//   x     = byte_embed[id] + Σ hash rows             backward: rows scattered into
//   x     = LocalEncoder layers(x)                   saved state a layer (as llama_train_host)
//   slots = W_p · amax_patch(x)                      amax: the gradient to the maximal bytes,
//                                                    split evenly between ties (scatter_reduce's)
//   slots = 2 slots + CrossAttn(slots → patch bytes) both sides' gradients
//   g     = Global(W_g · slots)                      causal over patches
//   y     = x; [2 y + CrossAttn(y → a patch's k slots); Decoder layer] × layers
//   loss  = CE(lm_head(norm(y)), next ids)
//
// One call takes a micro-batch of B rows of L + 1 ids (BLT ids: byte + 4);
// each row is a sequence of its own (its patches its own, positions from 0),
// and the loss is the mean over its B·L predictions. scale × ∂loss/∂θ is
// added into grad (io::blt_zeros_like(weights) at the first micro-batch).
// The entropy model's tensors, and the encoder's cross-attentions that do
// not reach the loss (io::blt_parameter_views), get no gradient.
//
//   models::BltHostTrainer t(weights);
//   auto grad = io::blt_zeros_like(weights);
//   TL_RETURN_IF_ERROR(t.forward_backward(weights, rows.data(), B, L, 1.0f / A, &grad, &loss));
#include <tokenless/core/host_blas.hpp>
#include <tokenless/core/status.hpp>
#include <tokenless/encoder/policy.hpp>
#include <tokenless/io/blt_weights.hpp>
#include <tokenless/models/blt_host.hpp>
#include <tokenless/models/host_train_ops.hpp>
#include <tokenless/models/train_data.hpp>
#include <tokenless/optim/host.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace tokenless::models {

namespace blt_train_detail {

inline void rms_norm(const float* x, std::int64_t rows, int D, const float* w, float eps, float* y, float* inv) {
  host_rms_norm(x, rows, D, w, eps, y, inv);
}
inline void rms_norm_backward(const float* x, std::int64_t rows, int D, const float* w, const float* inv,
                              const float* dy, float* dx, float* dw) {
  host_rms_norm_backward(x, rows, D, w, inv, dy, dx, dw);
}

// Softmax attention over per-query key ranges, forward (its log-sum-exp
// kept) and backward (the probabilities remade from it), as loops: the
// cross-attentions' ranges are a patch's bytes or a patch's k slots, a few
// keys each (the stacks' causal attention is host_train_ops.hpp's). q rows ldq
// apart, k and v rows ldkv apart, GQA as everywhere (head h reads kv head
// h / (H / KV)); an empty range reads every key uniformly (host_attend's
// rule). Queries split over the pool in the forward; the backward's dk, dv
// sums are serial in query order (deterministic).
struct Attention {
  int H = 0, KV = 0, hd = 0;
  float scale() const { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd))); }

  template <class Range>
  void forward(const float* q, std::int64_t ldq, const float* k, const float* v, std::int64_t ldkv, std::int64_t nq,
               std::int64_t nk, Range range, float* o, std::int64_t ldo, float* lse) const {
    const int group = H / KV;
    const float sc = scale();
    host::pool().parallel_for(nq, [&](std::int64_t lo, std::int64_t hi) {
      std::vector<float> s;
      for (std::int64_t i = lo; i < hi; ++i) {
        auto [a, b] = range(i);
        const bool uniform = a >= b;
        if (uniform) a = 0, b = nk;
        s.resize(static_cast<std::size_t>(b - a));
        for (int h = 0; h < H; ++h) {
          const float* qi = q + i * ldq + h * hd;
          const int g = h / group;
          float mx = -INFINITY;
          for (std::int64_t j = a; j < b; ++j) {
            float dot = 0;
            for (int e = 0; e < hd; ++e) dot += qi[e] * k[j * ldkv + g * hd + e];
            s[j - a] = uniform ? 0.0f : dot * sc;
            mx = std::max(mx, s[j - a]);
          }
          float sum = 0;
          for (std::int64_t j = a; j < b; ++j) sum += s[j - a] = std::exp(s[j - a] - mx);
          float* oi = o + i * ldo + h * hd;
          std::fill_n(oi, hd, 0.0f);
          for (std::int64_t j = a; j < b; ++j) {
            const float p = s[j - a] / sum;
            for (int e = 0; e < hd; ++e) oi[e] += p * v[j * ldkv + g * hd + e];
          }
          lse[i * H + h] = uniform ? INFINITY : mx + std::log(sum);  // INFINITY: the uniform case
        }
      }
    });
  }

  // dq written; dk, dv added.
  template <class Range>
  void backward(const float* q, std::int64_t ldq, const float* k, const float* v, std::int64_t ldkv, std::int64_t nq,
                std::int64_t nk, Range range, const float* o, const float* d_o, std::int64_t ldo, const float* lse,
                float* dq, float* dk, float* dv) const {
    const int group = H / KV;
    const float sc = scale();
    std::vector<float> p;
    for (std::int64_t i = 0; i < nq; ++i) {
      auto [a, b] = range(i);
      const bool uniform = a >= b;
      if (uniform) a = 0, b = nk;
      p.resize(static_cast<std::size_t>(b - a));
      for (int h = 0; h < H; ++h) {
        const float* qi = q + i * ldq + h * hd;
        const float* doi = d_o + i * ldo + h * hd;
        const float* oi = o + i * ldo + h * hd;
        float* dqi = dq + i * ldq + h * hd;
        std::fill_n(dqi, hd, 0.0f);
        const int g = h / group;
        float di = 0;
        for (int e = 0; e < hd; ++e) di += doi[e] * oi[e];
        for (std::int64_t j = a; j < b; ++j) {
          const float* kj = k + j * ldkv + g * hd;
          const float* vj = v + j * ldkv + g * hd;
          float pj;
          if (uniform) {
            pj = 1.0f / static_cast<float>(b - a);
          } else {
            float dot = 0;
            for (int e = 0; e < hd; ++e) dot += qi[e] * kj[e];
            pj = std::exp(dot * sc - lse[i * H + h]);
          }
          float dp = 0;
          for (int e = 0; e < hd; ++e) dp += doi[e] * vj[e];
          float* dvj = dv + j * ldkv + g * hd;
          for (int e = 0; e < hd; ++e) dvj[e] += pj * doi[e];
          if (uniform) continue;  // the scores are constants: no gradient to q or k
          const float ds = pj * (dp - di) * sc;
          float* dkj = dk + j * ldkv + g * hd;
          for (int e = 0; e < hd; ++e) {
            dqi[e] += ds * kj[e];
            dkj[e] += ds * qi[e];
          }
        }
      }
    }
  }
};

// One of BLT's transformer stacks over one sequence, for training: pre-norm
// layers of self-attention (interleaved RoPE over the whole head, causal, a
// window of W keys) and SwiGLU, each layer's state kept.
class TrainStack {
 public:
  TrainStack(const io::BltStackConfig& c) : c_(c), inv_freq_(static_cast<std::size_t>(c.head_dim / 2)) {
    (void)blocks::rope_inv_freq(c.rope, c.head_dim, inv_freq_.data());  // validated on load
    att_ = {c.heads, c.kv_heads, c.head_dim, c.window};
  }
  struct Save {
    std::vector<float> x_in, inv1, h1, qkv, attn, lse, x_mid, inv2, h2, gu, act;
  };

  // x [n, D] in place through layer l, its state into s.
  void forward(const io::BltLayerWeights<float>& w, float* x, std::int64_t n, Save& s) const {
    const int D = c_.hidden, qkvd = c_.qkv_dim(), qd = c_.q_dim(), F = c_.intermediate;
    const auto N = static_cast<std::size_t>(n);
    s.x_in.assign(x, x + n * D);
    s.inv1.resize(N);
    s.h1.resize(N * D);
    rms_norm(x, n, D, w.attn_norm.data(), c_.rms_eps, s.h1.data(), s.inv1.data());
    s.qkv.resize(N * qkvd);
    host::gemm_nt(n, qkvd, D, s.h1.data(), D, w.wqkv.data(), D, s.qkv.data(), qkvd);
    rope(s.qkv.data(), n, 1.0f);
    s.attn.resize(N * qd);
    s.lse.resize(N * c_.heads);
    att_.forward(s.qkv.data(), qkvd, 1, n, s.attn.data(), qd, s.lse.data());
    host::gemm_nt(n, D, qd, s.attn.data(), qd, w.wo.data(), qd, x, D, /*accumulate=*/true);
    s.x_mid.assign(x, x + n * D);
    s.inv2.resize(N);
    s.h2.resize(N * D);
    rms_norm(x, n, D, w.mlp_norm.data(), c_.rms_eps, s.h2.data(), s.inv2.data());
    s.gu.resize(N * 2 * F);
    s.act.resize(N * F);
    host::gemm_nt(n, 2 * F, D, s.h2.data(), D, w.w_gate_up.data(), D, s.gu.data(), 2 * F);
    host::pool().parallel_for(n, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t t = lo; t < hi; ++t) {
        const float* g = s.gu.data() + t * 2 * F;
        for (int i = 0; i < F; ++i) s.act[t * F + i] = g[i] / (1.0f + std::exp(-g[i])) * g[F + i];
      }
    });
    host::gemm_nt(n, D, F, s.act.data(), F, w.w_down.data(), F, x, D, /*accumulate=*/true);
  }

  // dx [n, D]: in, dL/d(the layer's output); out, dL/d(its input). Weight gradients added.
  void backward(const io::BltLayerWeights<float>& w, const Save& s, float* dx, std::int64_t n,
                io::BltLayerWeights<float>& g) {
    const int D = c_.hidden, qkvd = c_.qkv_dim(), qd = c_.q_dim(), F = c_.intermediate;
    const auto N = static_cast<std::size_t>(n);
    // The MLP: x_out = x_mid + down(act(gu(norm2(x_mid)))).
    d_act_.resize(N * F);
    host::gemm_nn(n, F, D, dx, D, w.w_down.data(), F, d_act_.data(), F);
    host::gemm_tn(D, F, n, dx, D, s.act.data(), F, g.w_down.data(), F, true);
    d_gu_.resize(N * 2 * F);
    host::pool().parallel_for(n, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t t = lo; t < hi; ++t) {
        for (int i = 0; i < F; ++i) {
          const float a = s.gu[t * 2 * F + i], u = s.gu[t * 2 * F + F + i], da = d_act_[t * F + i];
          const float sg = 1.0f / (1.0f + std::exp(-a));
          d_gu_[t * 2 * F + i] = da * u * sg * (1.0f + a * (1.0f - sg));
          d_gu_[t * 2 * F + F + i] = da * a * sg;
        }
      }
    });
    host::gemm_tn(2 * F, D, n, d_gu_.data(), 2 * F, s.h2.data(), D, g.w_gate_up.data(), D, true);
    d_h_.resize(N * D);
    host::gemm_nn(n, D, 2 * F, d_gu_.data(), 2 * F, w.w_gate_up.data(), D, d_h_.data(), D);
    rms_norm_backward(s.x_mid.data(), n, D, w.mlp_norm.data(), s.inv2.data(), d_h_.data(), dx, g.mlp_norm.data());
    // The attention: x_mid = x_in + o(attn(rope(qkv(norm1(x_in))))).
    d_attn_.resize(N * qd);
    host::gemm_nn(n, qd, D, dx, D, w.wo.data(), qd, d_attn_.data(), qd);
    host::gemm_tn(D, qd, n, dx, D, s.attn.data(), qd, g.wo.data(), qd, true);
    d_qkv_.resize(N * qkvd);
    att_.backward(s.qkv.data(), qkvd, 1, n, s.attn.data(), d_attn_.data(), qd, s.lse.data(), d_qkv_.data());
    rope(d_qkv_.data(), n, -1.0f);
    host::gemm_tn(qkvd, D, n, d_qkv_.data(), qkvd, s.h1.data(), D, g.wqkv.data(), D, true);
    host::gemm_nn(n, D, qkvd, d_qkv_.data(), qkvd, w.wqkv.data(), D, d_h_.data(), D);
    rms_norm_backward(s.x_in.data(), n, D, w.attn_norm.data(), s.inv1.data(), d_h_.data(), dx, g.attn_norm.data());
  }

 private:
  // Interleaved RoPE (pairs 2i, 2i + 1) on q and k of rows at positions 0..n − 1; sign −1 rotates back.
  void rope(float* qkv, std::int64_t n, float sign) const {
    const int hd = c_.head_dim, H = c_.heads, KV = c_.kv_heads, qkvd = c_.qkv_dim();
    host::pool().parallel_for(n, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t t = lo; t < hi; ++t) {
        for (int i = 0; i < hd / 2; ++i) {
          const float angle = static_cast<float>(t) * inv_freq_[i];
          const float cs = std::cos(angle), sn = sign * std::sin(angle);
          for (int h2 = 0; h2 < H + KV; ++h2) {
            float* q = qkv + t * qkvd + h2 * hd + 2 * i;
            const float a = q[0], b = q[1];
            q[0] = a * cs - b * sn;
            q[1] = b * cs + a * sn;
          }
        }
      }
    });
  }

  const io::BltStackConfig& c_;
  std::vector<float> inv_freq_;
  HostCausalAttention att_;
  std::vector<float> d_act_, d_gu_, d_h_, d_attn_, d_qkv_;
};

// BLT's cross-attention for training: x ← 2 x + Wo · attn(q_norm(x) Wq →
// kv_norm(src) Wkv), a query's keys range(i); the state kept.
class TrainCross {
 public:
  explicit TrainCross(const io::BltStackConfig& c) : c_(c) { att_ = {c.heads, c.kv_heads, c.head_dim}; }
  struct Save {
    std::vector<float> x_in, inv_q, hq, q, src, inv_s, hs, kv, o, lse;
  };
  template <class Range>
  void forward(const io::BltCrossWeights<float>& w, float* x, std::int64_t nq, const float* src, std::int64_t nk,
               Range range, Save& s) const {
    const int D = c_.hidden, qd = c_.q_dim(), kvd = c_.kv_dim();
    s.x_in.assign(x, x + nq * D);
    s.src.assign(src, src + nk * D);
    s.inv_q.resize(static_cast<std::size_t>(nq));
    s.hq.resize(static_cast<std::size_t>(nq * D));
    rms_norm(x, nq, D, w.q_norm.data(), c_.rms_eps, s.hq.data(), s.inv_q.data());
    s.q.resize(static_cast<std::size_t>(nq * qd));
    host::gemm_nt(nq, qd, D, s.hq.data(), D, w.wq.data(), D, s.q.data(), qd);
    s.inv_s.resize(static_cast<std::size_t>(nk));
    s.hs.resize(static_cast<std::size_t>(nk * D));
    rms_norm(src, nk, D, w.kv_norm.data(), c_.rms_eps, s.hs.data(), s.inv_s.data());
    s.kv.resize(static_cast<std::size_t>(nk * 2 * kvd));
    host::gemm_nt(nk, 2 * kvd, D, s.hs.data(), D, w.wkv.data(), D, s.kv.data(), 2 * kvd);
    s.o.resize(static_cast<std::size_t>(nq * qd));
    s.lse.resize(static_cast<std::size_t>(nq * c_.heads));
    att_.forward(s.q.data(), qd, s.kv.data(), s.kv.data() + kvd, 2 * kvd, nq, nk, range, s.o.data(), qd, s.lse.data());
    auto& out = out_;
    out.resize(static_cast<std::size_t>(nq * D));
    host::gemm_nt(nq, D, qd, s.o.data(), qd, w.wo.data(), qd, out.data(), D);
    for (std::int64_t i = 0; i < nq * D; ++i) x[i] = 2 * x[i] + out[i];
  }
  // dx: in, dL/d(new x); out, dL/d(old x). d_src added. Weight gradients added.
  template <class Range>
  void backward(const io::BltCrossWeights<float>& w, const Save& s, float* dx, std::int64_t nq, float* d_src,
                std::int64_t nk, Range range, io::BltCrossWeights<float>& g) const {
    const int D = c_.hidden, qd = c_.q_dim(), kvd = c_.kv_dim();
    auto &d_o = d_o_, &d_q = d_q_, &d_kv = d_kv_, &d_h = d_h_;
    d_o.resize(static_cast<std::size_t>(nq * qd));
    d_q.resize(d_o.size());
    d_kv.assign(static_cast<std::size_t>(nk * 2 * kvd), 0.0f);
    d_h.resize(static_cast<std::size_t>(std::max(nq, nk) * D));
    host::gemm_nn(nq, qd, D, dx, D, w.wo.data(), qd, d_o.data(), qd);
    host::gemm_tn(D, qd, nq, dx, D, s.o.data(), qd, g.wo.data(), qd, true);
    att_.backward(s.q.data(), qd, s.kv.data(), s.kv.data() + kvd, 2 * kvd, nq, nk, range, s.o.data(), d_o.data(), qd,
                  s.lse.data(), d_q.data(), d_kv.data(), d_kv.data() + kvd);
    // The keys' side: kv = kv_norm(src) Wkvᵀ.
    host::gemm_tn(2 * kvd, D, nk, d_kv.data(), 2 * kvd, s.hs.data(), D, g.wkv.data(), D, true);
    host::gemm_nn(nk, D, 2 * kvd, d_kv.data(), 2 * kvd, w.wkv.data(), D, d_h.data(), D);
    rms_norm_backward(s.src.data(), nk, D, w.kv_norm.data(), s.inv_s.data(), d_h.data(), d_src, g.kv_norm.data());
    // The queries' side: the residual doubles, q = q_norm(x) Wqᵀ.
    for (std::int64_t i = 0; i < nq * D; ++i) dx[i] *= 2;
    host::gemm_tn(qd, D, nq, d_q.data(), qd, s.hq.data(), D, g.wq.data(), D, true);
    host::gemm_nn(nq, D, qd, d_q.data(), qd, w.wq.data(), D, d_h.data(), D);
    rms_norm_backward(s.x_in.data(), nq, D, w.q_norm.data(), s.inv_q.data(), d_h.data(), dx, g.q_norm.data());
  }

 private:
  const io::BltStackConfig& c_;
  Attention att_;
  mutable std::vector<float> out_, d_o_, d_q_, d_kv_, d_h_;  // scratch, kept between calls (no fresh pages)
};

}  // namespace blt_train_detail

class BltHostTrainer {
 public:
  explicit BltHostTrainer(const io::BltWeights<float>& w)
      : host_(w), c_(w.config), encoder_(c_.encoder), global_(c_.global), decoder_(c_.decoder),
        enc_cross_(c_.encoder), dec_cross_(c_.decoder) {}

  // rows: B × (L + 1) BLT ids (the trainer checks them once).
  Status forward_backward(const io::BltWeights<float>& w, const std::int32_t* rows, int B, int L, float scale,
                          io::BltWeights<float>* grad, TrainLoss* loss) {
    if (!rows || !grad) return Status::error(StatusCode::null_pointer, "BltHostTrainer: null rows or gradient");
    if (B <= 0 || L <= 0) return Status::error(StatusCode::invalid_argument, "BltHostTrainer: batch %d × length %d is empty", B, L);
    TL_RETURN_IF_ERROR(BltHost::check(c_));
    double ce = 0;
    patch_lengths_.clear();
    for (int b = 0; b < B; ++b) {
      const std::int32_t* row = rows + static_cast<std::int64_t>(b) * (L + 1);
      for (int i = 0; i <= L; ++i) {
        if (row[i] < 0 || row[i] >= c_.vocab) {
          return Status::error(StatusCode::invalid_argument, "BltHostTrainer: id %d outside [0, %d)", row[i], c_.vocab);
        }
      }
      ce += sequence(w, row, L, scale / static_cast<float>(B), grad) / B;
    }
    if (loss) {
      loss->cross_entropy = ce;
      loss->aux = 0;
      loss->total = ce;
    }
    return Status::ok();
  }

  // The last call's patch lengths, a row each (the trailing empty patch
  // transformers may keep is not among them).
  const std::vector<std::vector<std::int64_t>>& patch_lengths() const { return patch_lengths_; }

  // Bytes one micro-batch of B × L keeps alive at once (a row at a time).
  std::int64_t activation_bytes(int B, int L) const {
    (void)B;
    const std::int64_t n = L, De = c_.encoder.hidden, Dd = c_.decoder.hidden, Dg = c_.global.hidden;
    auto stack = [&](const io::BltStackConfig& s, std::int64_t rows) {
      return s.layers * rows * (6 * std::int64_t{s.hidden} + s.qkv_dim() + s.q_dim() + 3 * s.intermediate + s.heads + 2);
    };
    return 4 * (stack(c_.encoder, n) + stack(c_.global, n) + stack(c_.decoder, n) +
                (c_.decoder.layers + 1) * n * (4 * Dd + 4 * De + c_.k * (De + Dd) + Dg) + n * c_.vocab);
  }

 private:
  using Stack = blt_train_detail::TrainStack;
  using Cross = blt_train_detail::TrainCross;

  // One row: its forward and backward; returns its mean cross-entropy and
  // adds scale × its gradient.
  double sequence(const io::BltWeights<float>& w, const std::int32_t* row, int L, float scale, io::BltWeights<float>* g) {
    using namespace blt_train_detail;
    const std::vector<std::int32_t> ids(row, row + L);
    const std::int64_t n = L;
    const int De = c_.encoder.hidden, Dg = c_.global.hidden, Dd = c_.decoder.hidden, k = c_.k, V = c_.vocab;
    bool last_complete = false;
    const std::vector<std::int64_t> lengths = host_.patch_lengths(ids, &last_complete);
    patch_lengths_.push_back(lengths);
    const auto P = static_cast<std::int64_t>(lengths.size());
    std::vector<std::int64_t> start(static_cast<std::size_t>(P + 1), 0);
    for (std::int64_t p = 0; p < P; ++p) start[p + 1] = start[p] + lengths[p];
    std::vector<std::int64_t> dpatch(static_cast<std::size_t>(n));
    for (std::int64_t t = 0, p = 0; t < n; ++t) {  // as BltHost::forward: the last patch ended at or before t
      while (p + 1 < P && start[p + 2] - 1 <= t && (p + 2 < P || last_complete)) ++p;
      dpatch[t] = p;
    }
    auto patch_bytes = [&](std::int64_t s) {
      const std::int64_t p = s / k;
      return std::pair<std::int64_t, std::int64_t>{start[p], start[p + 1]};
    };
    auto slots_of = [&](std::int64_t t) { return std::pair<std::int64_t, std::int64_t>{dpatch[t] * k, (dpatch[t] + 1) * k}; };
    // ---- forward
    auto& x = b_.x;
    x.resize(static_cast<std::size_t>(n * De));
    blt_host_detail::embed(w, ids, 0, x.data());
    enc_saves_.resize(w.encoder_layers.size());
    for (std::size_t l = 0; l < w.encoder_layers.size(); ++l) encoder_.forward(w.encoder_layers[l], x.data(), n, enc_saves_[l]);
    // Pooling: amax a patch, ties counted (their share of the gradient).
    auto& pooled = b_.pooled;
    pooled.resize(static_cast<std::size_t>(P * De));
    for (std::int64_t p = 0; p < P; ++p) {
      for (int i = 0; i < De; ++i) {
        float m = x[start[p] * De + i];
        for (std::int64_t t = start[p] + 1; t < start[p + 1]; ++t) m = std::max(m, x[t * De + i]);
        pooled[p * De + i] = m;
      }
    }
    auto& slots = b_.slots;
    slots.resize(static_cast<std::size_t>(P * k * De));
    host::gemm_nt(P, k * De, De, pooled.data(), De, w.encoder_projection.data(), De, slots.data(), k * De);
    const auto& ecw = w.encoder_cross.back();
    enc_cross_.forward(ecw, slots.data(), P * k, x.data(), n, patch_bytes, enc_cross_save_);
    auto& gin = b_.gin;
    gin.resize(static_cast<std::size_t>(P * Dg));
    if (c_.global_projection) {
      host::gemm_nt(P, Dg, k * De, slots.data(), k * De, w.global_projection.data(), k * De, gin.data(), Dg);
    } else {
      gin = slots;
    }
    auto& gx = b_.gx;
    gx = gin;
    glob_saves_.resize(w.global_layers.size());
    for (std::size_t l = 0; l < w.global_layers.size(); ++l) global_.forward(w.global_layers[l], gx.data(), P, glob_saves_[l]);
    auto& dslots = b_.dslots;
    dslots.resize(static_cast<std::size_t>(P * k * Dd));
    host::gemm_nt(P, k * Dd, Dg, gx.data(), Dg, w.decoder_projection.data(), Dg, dslots.data(), k * Dd);
    auto& y = b_.y;
    y = x;
    const int Ld = c_.decoder.layers;
    dec_saves_.resize(static_cast<std::size_t>(Ld));
    dec_cross_saves_.resize(static_cast<std::size_t>(Ld));
    for (int l = 0; l < Ld; ++l) {
      if (l == 0 || c_.decoder_cross_all) {
        dec_cross_.forward(w.decoder_cross[static_cast<std::size_t>(l)], y.data(), n, dslots.data(), P * k, slots_of,
                           dec_cross_saves_[static_cast<std::size_t>(l)]);
      }
      decoder_.forward(w.decoder_layers[static_cast<std::size_t>(l)], y.data(), n, dec_saves_[static_cast<std::size_t>(l)]);
    }
    auto &hn = b_.hn, &inv = b_.inv, &logits = b_.logits;
    hn.resize(y.size());
    inv.resize(static_cast<std::size_t>(n));
    logits.resize(static_cast<std::size_t>(n * V));
    rms_norm(y.data(), n, Dd, w.decoder_norm.data(), c_.decoder.rms_eps, hn.data(), inv.data());
    host::gemm_nt(n, V, Dd, hn.data(), Dd, w.lm_head.data(), Dd, logits.data(), V);
    // ---- the loss and dL/dlogits (mean over the row's n predictions, times scale)
    double ce = 0;
    for (std::int64_t t = 0; t < n; ++t) {
      float* z = logits.data() + t * V;
      const float mx = *std::max_element(z, z + V);
      double sum = 0;
      for (int v = 0; v < V; ++v) sum += std::exp(static_cast<double>(z[v] - mx));
      const double lse = mx + std::log(sum);
      const std::int32_t target = row[t + 1];
      ce += lse - z[target];
      const float inv_n = scale / static_cast<float>(n);
      for (int v = 0; v < V; ++v) z[v] = static_cast<float>(std::exp(z[v] - lse)) * inv_n;
      z[target] -= inv_n;
    }
    ce /= static_cast<double>(n);
    // ---- backward
    host::gemm_tn(V, Dd, n, logits.data(), V, hn.data(), Dd, g->lm_head.data(), Dd, true);
    auto& dh = b_.dh;
    dh.resize(y.size());
    host::gemm_nn(n, Dd, V, logits.data(), V, w.lm_head.data(), Dd, dh.data(), Dd);
    auto& dy = b_.dy;
    dy.assign(y.size(), 0.0f);
    rms_norm_backward(y.data(), n, Dd, w.decoder_norm.data(), inv.data(), dh.data(), dy.data(), g->decoder_norm.data());
    auto& d_dslots = b_.d_dslots;
    d_dslots.assign(dslots.size(), 0.0f);
    for (int l = Ld - 1; l >= 0; --l) {
      const auto ul = static_cast<std::size_t>(l);
      decoder_.backward(w.decoder_layers[ul], dec_saves_[ul], dy.data(), n, g->decoder_layers[ul]);
      if (l == 0 || c_.decoder_cross_all) {
        dec_cross_.backward(w.decoder_cross[ul], dec_cross_saves_[ul], dy.data(), n, d_dslots.data(), P * k, slots_of,
                            g->decoder_cross[ul]);
      }
    }
    auto& dx = b_.dx;
    dx = dy;  // y started as the encoder's output
    // The decoder's slots: dslots = gx W_dpᵀ.
    host::gemm_tn(k * Dd, Dg, P, d_dslots.data(), k * Dd, gx.data(), Dg, g->decoder_projection.data(), Dg, true);
    auto& dg = b_.dg;
    dg.resize(gx.size());
    host::gemm_nn(P, Dg, k * Dd, d_dslots.data(), k * Dd, w.decoder_projection.data(), Dg, dg.data(), Dg);
    for (int l = static_cast<int>(w.global_layers.size()) - 1; l >= 0; --l) {
      const auto ul = static_cast<std::size_t>(l);
      global_.backward(w.global_layers[ul], glob_saves_[ul], dg.data(), P, g->global_layers[ul]);
    }
    auto& d_slots = b_.d_slots;
    d_slots.resize(slots.size());
    if (c_.global_projection) {
      host::gemm_tn(Dg, k * De, P, dg.data(), Dg, slots.data(), k * De, g->global_projection.data(), k * De, true);
      host::gemm_nn(P, k * De, Dg, dg.data(), Dg, w.global_projection.data(), k * De, d_slots.data(), k * De);
    } else {
      d_slots = dg;
    }
    enc_cross_.backward(ecw, enc_cross_save_, d_slots.data(), P * k, dx.data(), n, patch_bytes, g->encoder_cross.back());
    // slots = pooled W_epᵀ.
    host::gemm_tn(k * De, De, P, d_slots.data(), k * De, pooled.data(), De, g->encoder_projection.data(), De, true);
    auto& d_pooled = b_.d_pooled;
    d_pooled.resize(pooled.size());
    host::gemm_nn(P, De, k * De, d_slots.data(), k * De, w.encoder_projection.data(), De, d_pooled.data(), De);
    for (std::int64_t p = 0; p < P; ++p) {  // to every byte at the patch's max, split evenly
      for (int i = 0; i < De; ++i) {
        const float m = pooled[p * De + i];
        int ties = 0;
        for (std::int64_t t = start[p]; t < start[p + 1]; ++t) ties += x[t * De + i] == m;
        if (ties == 0) continue;  // NaN: transformers' amax gives it nowhere to go either
        const float share = d_pooled[p * De + i] / static_cast<float>(ties);
        for (std::int64_t t = start[p]; t < start[p + 1]; ++t) {
          if (x[t * De + i] == m) dx[t * De + i] += share;
        }
      }
    }
    for (int l = static_cast<int>(w.encoder_layers.size()) - 1; l >= 0; --l) {
      const auto ul = static_cast<std::size_t>(l);
      encoder_.backward(w.encoder_layers[ul], enc_saves_[ul], dx.data(), n, g->encoder_layers[ul]);
    }
    // The embeddings: each byte's rows gather its gradient (serial: rows repeat).
    const int G = static_cast<int>(c_.ngrams.size());
    for (std::int64_t t = 0; t < n; ++t) {
      const float* d = dx.data() + t * De;
      float* e = g->byte_embed.data() + static_cast<std::int64_t>(ids[t]) * De;
      for (int i = 0; i < De; ++i) e[i] += d[i];
      for (int f = 0; f < c_.hash_functions; ++f) {
        for (int gi = 0; gi < G; ++gi) {
          const std::int64_t b = encoder::blt_ngram_bucket(ids.data(), t, 0, c_.ngrams[gi], f, c_.hash_vocab);
          float* hrow = g->hash_embed.data() + ((f * G + gi) * c_.hash_vocab + b) * De;
          for (int i = 0; i < De; ++i) hrow[i] += d[i];
        }
      }
    }
    return ce;
  }

  BltHost host_;
  const io::BltConfig& c_;
  Stack encoder_, global_, decoder_;
  Cross enc_cross_, dec_cross_;
  std::vector<Stack::Save> enc_saves_, glob_saves_, dec_saves_;
  Cross::Save enc_cross_save_;
  std::vector<Cross::Save> dec_cross_saves_;
  std::vector<std::vector<std::int64_t>> patch_lengths_;
  // A row's tensors, kept between rows and steps (resized, not reallocated:
  // fresh pages cost the kernel's zeroing, 6% of a step).
  struct Buffers {
    std::vector<float> x, pooled, slots, gin, gx, dslots, y, hn, inv, logits, dh, dy, d_dslots, dx, dg, d_slots, d_pooled;
  } b_;
};

}  // namespace tokenless::models

namespace tokenless::models {

// A whole step over BltHostTrainer: the documented batches (train_data.hpp),
// A micro-batches accumulated, then HostAdamW over every trained tensor
// (io::blt_parameter_views: matrices decayed, norms not) with clipping.
class BltHostTraining {
 public:
  Status init(io::BltWeights<float>* w) {
    if (!w) return Status::error(StatusCode::null_pointer, "BltHostTraining: null weights");
    TL_RETURN_IF_ERROR(BltHost::check(w->config));
    w_ = w;
    trainer_ = std::make_unique<BltHostTrainer>(*w);
    grad_ = io::blt_zeros_like(*w);
    views_ = io::blt_parameter_views(*w);
    grad_views_ = io::blt_parameter_views(grad_);
    return opt_.init(host_tensors(views_, grad_views_));
  }
  Status step(const std::vector<std::int32_t>& data, std::int64_t s, int B, int L, int A, const optim::AdamWHyper& h,
              TrainStep* out) {
    if (!w_) return Status::error(StatusCode::invalid_argument, "BltHostTraining: init first");
    return host_train_step("BltHostTraining", opt_, grad_views_, data, s, B, L, A, h, rows_,
                           [&](const std::int32_t* rows, float scale, TrainLoss* l) {
                             return trainer_->forward_backward(*w_, rows, B, L, scale, &grad_, l);
                           },
                           out);
  }
  const io::BltWeights<float>& grad() const { return grad_; }
  const std::vector<io::ParamView>& views() const { return views_; }
  optim::HostAdamW& optimizer() { return opt_; }
  BltHostTrainer& trainer() { return *trainer_; }

 private:
  io::BltWeights<float>* w_ = nullptr;
  std::unique_ptr<BltHostTrainer> trainer_;
  io::BltWeights<float> grad_;
  std::vector<io::ParamView> views_, grad_views_;
  optim::HostAdamW opt_;
  std::vector<std::int32_t> rows_;
};

}  // namespace tokenless::models
