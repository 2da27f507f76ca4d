#pragma once
// The weights of a checkpoint of one of io::Family's families, read into the
// runner's packed layout (host memory, as T):
//
//   embed [V, D]; per layer: attn_norm [D], wqkv [(H + 2 KV) hd, D] (q, k, v
//   rows stacked: Phi-3's qkv_proj, or Llama's three projections packed),
//   wo [D, H hd], mlp_norm [D], and either w_gate_up [2F, D] (gate rows
//   first: Phi-3's gate_up_proj, or Llama's gate_proj and up_proj packed) and
//   w_down [D, F], or Mixtral's router [E, D], w_gate_up [E, 2F, D] and
//   w_down [E, D, F]; norm [D]; lm_head [V, D] (the embedding when tied).
//
// Both Mixtral layouts are read: transformers 5's fused experts
// (mlp.experts.gate_up_proj, mlp.experts.down_proj, mlp.gate) and the Hub's
// per-expert w1 (gate), w3 (up), w2 (down) under block_sparse_moe. A
// missing tensor or a wrong shape gets a message naming it.
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/status.hpp>
#include <tokenless/io/model_config.hpp>
#include <tokenless/io/safetensors.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace tokenless::io {

template <class T>
struct LayerWeights {
  std::vector<T> attn_norm, wqkv, wo, mlp_norm, w_gate_up, w_down, router;
};

// A DeepSeek-V3-style multi-token module (heads/mtp.cuh): its input norms
// and projection, one decoder block, and its shared head's norm; the head
// itself is the model's lm_head unless the checkpoint carries its own.
template <class T>
struct MtpWeights {
  std::vector<T> enorm, hnorm, eh_proj, shared_norm, head;  // head: empty for lm_head
  LayerWeights<T> layer;
};

template <class T>
struct ModelWeights {
  ModelConfig config;
  std::vector<T> embed, norm, lm_head;
  std::vector<LayerWeights<T>> layers;
  std::vector<MtpWeights<T>> mtp;  // config.mtp_modules of them, after the layers
};

namespace detail {

// Converts `name` (of exactly `shape`) into dst[offset ...].
template <class T>
Status fetch(const Checkpoint& c, const std::string& name, std::initializer_list<std::int64_t> shape, std::vector<T>& dst,
             std::size_t offset = 0) {
  const TensorInfo* t = nullptr;
  TL_RETURN_IF_ERROR(c.get(name, shape, &t));
  if (offset + static_cast<std::size_t>(t->numel()) > dst.size()) {
    return Status::error(StatusCode::internal, "load: '%s' does not fit its packed buffer", name.c_str());
  }
  return convert(*t, dst.data() + offset);
}

// One decoder layer's tensors under `p` ("model.layers.N.").
template <class T>
Status load_layer(const Checkpoint& ck, const ModelConfig& c, const std::string& p, bool hub_moe, LayerWeights<T>& w) {
  const std::int64_t D = c.hidden, F = c.intermediate, Q = c.q_dim(), KV = c.kv_dim(), E = c.experts;
  w.attn_norm.resize(static_cast<std::size_t>(D));
  w.mlp_norm.resize(static_cast<std::size_t>(D));
  TL_RETURN_IF_ERROR(fetch(ck, p + "input_layernorm.weight", {D}, w.attn_norm));
  TL_RETURN_IF_ERROR(fetch(ck, p + "post_attention_layernorm.weight", {D}, w.mlp_norm));
  w.wqkv.resize(static_cast<std::size_t>((Q + 2 * KV) * D));
  if (c.family == Family::kPhi3) {
    TL_RETURN_IF_ERROR(fetch(ck, p + "self_attn.qkv_proj.weight", {Q + 2 * KV, D}, w.wqkv));
  } else {
    TL_RETURN_IF_ERROR(fetch(ck, p + "self_attn.q_proj.weight", {Q, D}, w.wqkv));
    TL_RETURN_IF_ERROR(fetch(ck, p + "self_attn.k_proj.weight", {KV, D}, w.wqkv, static_cast<std::size_t>(Q * D)));
    TL_RETURN_IF_ERROR(
        fetch(ck, p + "self_attn.v_proj.weight", {KV, D}, w.wqkv, static_cast<std::size_t>((Q + KV) * D)));
  }
  w.wo.resize(static_cast<std::size_t>(D * Q));
  TL_RETURN_IF_ERROR(fetch(ck, p + "self_attn.o_proj.weight", {D, Q}, w.wo));
  if (c.family == Family::kMixtral) {
    w.router.resize(static_cast<std::size_t>(E * D));
    w.w_gate_up.resize(static_cast<std::size_t>(E * 2 * F * D));
    w.w_down.resize(static_cast<std::size_t>(E * D * F));
    if (!hub_moe) {
      TL_RETURN_IF_ERROR(fetch(ck, p + "mlp.gate.weight", {E, D}, w.router));
      TL_RETURN_IF_ERROR(fetch(ck, p + "mlp.experts.gate_up_proj", {E, 2 * F, D}, w.w_gate_up));
      TL_RETURN_IF_ERROR(fetch(ck, p + "mlp.experts.down_proj", {E, D, F}, w.w_down));
    } else {
      const std::string b = p + "block_sparse_moe.";
      TL_RETURN_IF_ERROR(fetch(ck, b + "gate.weight", {E, D}, w.router));
      for (std::int64_t e = 0; e < E; ++e) {
        const std::string x = b + "experts." + std::to_string(e) + ".";
        const auto base = static_cast<std::size_t>(e * 2 * F * D);
        TL_RETURN_IF_ERROR(fetch(ck, x + "w1.weight", {F, D}, w.w_gate_up, base));
        TL_RETURN_IF_ERROR(fetch(ck, x + "w3.weight", {F, D}, w.w_gate_up, base + static_cast<std::size_t>(F * D)));
        TL_RETURN_IF_ERROR(fetch(ck, x + "w2.weight", {D, F}, w.w_down, static_cast<std::size_t>(e * D * F)));
      }
    }
  } else {
    w.w_gate_up.resize(static_cast<std::size_t>(2 * F * D));
    w.w_down.resize(static_cast<std::size_t>(D * F));
    if (c.family == Family::kPhi3) {
      TL_RETURN_IF_ERROR(fetch(ck, p + "mlp.gate_up_proj.weight", {2 * F, D}, w.w_gate_up));
    } else {
      TL_RETURN_IF_ERROR(fetch(ck, p + "mlp.gate_proj.weight", {F, D}, w.w_gate_up));
      TL_RETURN_IF_ERROR(fetch(ck, p + "mlp.up_proj.weight", {F, D}, w.w_gate_up, static_cast<std::size_t>(F * D)));
    }
    TL_RETURN_IF_ERROR(fetch(ck, p + "mlp.down_proj.weight", {D, F}, w.w_down));
  }
  return Status::ok();
}

}  // namespace detail

template <class T>
Status load_weights(const std::string& dir, ModelWeights<T>* out) {
  ModelWeights<T> m;
  std::string text;
  if (!Checkpoint::read_text(dir + "/config.json", &text)) {
    return Status::error(StatusCode::invalid_argument, "%s/config.json: cannot read", dir.c_str());
  }
  TL_RETURN_IF_ERROR(ModelConfig::parse(text, &m.config));
  const ModelConfig& c = m.config;
  Checkpoint ck;
  TL_RETURN_IF_ERROR(Checkpoint::open(dir, &ck));
  const std::int64_t V = c.vocab, D = c.hidden;
  using detail::fetch;
  m.embed.resize(static_cast<std::size_t>(V * D));
  TL_RETURN_IF_ERROR(fetch(ck, "model.embed_tokens.weight", {V, D}, m.embed));
  m.norm.resize(static_cast<std::size_t>(D));
  TL_RETURN_IF_ERROR(fetch(ck, "model.norm.weight", {D}, m.norm));
  if (c.tie_embeddings && !ck.find("lm_head.weight")) {
    m.lm_head = m.embed;
  } else {
    m.lm_head.resize(static_cast<std::size_t>(V * D));
    TL_RETURN_IF_ERROR(fetch(ck, "lm_head.weight", {V, D}, m.lm_head));
  }
  const bool hub_moe = c.family == Family::kMixtral && !ck.find("model.layers.0.mlp.experts.gate_up_proj");
  for (int l = 0; l < c.layers; ++l) {
    LayerWeights<T> w;
    TL_RETURN_IF_ERROR(detail::load_layer(ck, c, "model.layers." + std::to_string(l) + ".", hub_moe, w));
    m.layers.push_back(std::move(w));
  }
  // DeepSeek-V3's naming: module i is model.layers.(layers + i), its block's
  // tensors beside enorm, hnorm, eh_proj and shared_head.
  for (int i = 0; i < c.mtp_modules; ++i) {
    const std::string p = "model.layers." + std::to_string(c.layers + i) + ".";
    MtpWeights<T> w;
    w.enorm.resize(static_cast<std::size_t>(D));
    w.hnorm.resize(static_cast<std::size_t>(D));
    w.shared_norm.resize(static_cast<std::size_t>(D));
    w.eh_proj.resize(static_cast<std::size_t>(D * 2 * D));
    TL_RETURN_IF_ERROR(fetch(ck, p + "enorm.weight", {D}, w.enorm));
    TL_RETURN_IF_ERROR(fetch(ck, p + "hnorm.weight", {D}, w.hnorm));
    TL_RETURN_IF_ERROR(fetch(ck, p + "eh_proj.weight", {D, 2 * D}, w.eh_proj));
    TL_RETURN_IF_ERROR(fetch(ck, p + "shared_head.norm.weight", {D}, w.shared_norm));
    if (ck.find(p + "shared_head.head.weight")) {
      w.head.resize(static_cast<std::size_t>(V * D));
      TL_RETURN_IF_ERROR(fetch(ck, p + "shared_head.head.weight", {V, D}, w.head));
    }
    TL_RETURN_IF_ERROR(detail::load_layer(ck, c, p, hub_moe, w.layer));
    m.mtp.push_back(std::move(w));
  }
  *out = std::move(m);
  return Status::ok();
}

// Each trainable tensor under its checkpoint name and shape, as a view into
// the packed buffers (every checkpoint tensor is a contiguous range of one:
// q, k and v rows of wqkv, gate and up rows of w_gate_up, an expert's rows
// of the stacked experts). Transformers 5's fused Mixtral experts, or the
// Hub's w1/w3/w2 with hub_moe. A tied lm_head is not listed (the embedding
// is the tensor). What the gradient tests compare and a save writes.
struct ParamView {
  std::string name;
  std::vector<std::int64_t> shape;
  float* data = nullptr;
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

inline std::vector<ParamView> parameter_views(ModelWeights<float>& m, bool hub_moe = false) {
  const ModelConfig& c = m.config;
  const std::int64_t V = c.vocab, D = c.hidden, F = c.intermediate, Q = c.q_dim(), KV = c.kv_dim(), E = c.experts;
  std::vector<ParamView> v;
  v.push_back({"model.embed_tokens.weight", {V, D}, m.embed.data()});
  for (int l = 0; l < c.layers; ++l) {
    auto& w = m.layers[static_cast<std::size_t>(l)];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    v.push_back({p + "input_layernorm.weight", {D}, w.attn_norm.data()});
    if (c.family == Family::kPhi3) {
      v.push_back({p + "self_attn.qkv_proj.weight", {Q + 2 * KV, D}, w.wqkv.data()});
    } else {
      v.push_back({p + "self_attn.q_proj.weight", {Q, D}, w.wqkv.data()});
      v.push_back({p + "self_attn.k_proj.weight", {KV, D}, w.wqkv.data() + Q * D});
      v.push_back({p + "self_attn.v_proj.weight", {KV, D}, w.wqkv.data() + (Q + KV) * D});
    }
    v.push_back({p + "self_attn.o_proj.weight", {D, Q}, w.wo.data()});
    v.push_back({p + "post_attention_layernorm.weight", {D}, w.mlp_norm.data()});
    if (c.family == Family::kMixtral && !hub_moe) {
      v.push_back({p + "mlp.gate.weight", {E, D}, w.router.data()});
      v.push_back({p + "mlp.experts.gate_up_proj", {E, 2 * F, D}, w.w_gate_up.data()});
      v.push_back({p + "mlp.experts.down_proj", {E, D, F}, w.w_down.data()});
    } else if (c.family == Family::kMixtral) {
      const std::string b = p + "block_sparse_moe.";
      v.push_back({b + "gate.weight", {E, D}, w.router.data()});
      for (std::int64_t e = 0; e < E; ++e) {
        const std::string x = b + "experts." + std::to_string(e) + ".";
        v.push_back({x + "w1.weight", {F, D}, w.w_gate_up.data() + e * 2 * F * D});
        v.push_back({x + "w2.weight", {D, F}, w.w_down.data() + e * D * F});
        v.push_back({x + "w3.weight", {F, D}, w.w_gate_up.data() + e * 2 * F * D + F * D});
      }
    } else if (c.family == Family::kPhi3) {
      v.push_back({p + "mlp.gate_up_proj.weight", {2 * F, D}, w.w_gate_up.data()});
      v.push_back({p + "mlp.down_proj.weight", {D, F}, w.w_down.data()});
    } else {
      v.push_back({p + "mlp.gate_proj.weight", {F, D}, w.w_gate_up.data()});
      v.push_back({p + "mlp.up_proj.weight", {F, D}, w.w_gate_up.data() + F * D});
      v.push_back({p + "mlp.down_proj.weight", {D, F}, w.w_down.data()});
    }
  }
  v.push_back({"model.norm.weight", {D}, m.norm.data()});
  if (!c.tie_embeddings) v.push_back({"lm_head.weight", {V, D}, m.lm_head.data()});
  return v;
}

// A model of config c with every buffer allocated and zero (no MTP modules):
// what --init random fills.
inline ModelWeights<float> allocate_weights(const ModelConfig& c) {
  const auto V = static_cast<std::size_t>(c.vocab), D = static_cast<std::size_t>(c.hidden);
  const auto F = static_cast<std::size_t>(c.intermediate), E = static_cast<std::size_t>(c.experts);
  const auto qkv = static_cast<std::size_t>(c.qkv_dim()), Q = static_cast<std::size_t>(c.q_dim());
  ModelWeights<float> m;
  m.config = c;
  m.embed.assign(V * D, 0.0f);
  m.norm.assign(D, 0.0f);
  m.lm_head.assign(V * D, 0.0f);
  const std::size_t experts = c.experts ? E : 1;
  for (int l = 0; l < c.layers; ++l) {
    LayerWeights<float> w;
    w.attn_norm.assign(D, 0.0f);
    w.mlp_norm.assign(D, 0.0f);
    w.wqkv.assign(qkv * D, 0.0f);
    w.wo.assign(D * Q, 0.0f);
    w.w_gate_up.assign(experts * 2 * F * D, 0.0f);
    w.w_down.assign(experts * D * F, 0.0f);
    if (c.experts) w.router.assign(E * D, 0.0f);
    m.layers.push_back(std::move(w));
  }
  return m;
}

// The same buffers, every element zero (a gradient of m's shape).
template <class T>
ModelWeights<T> zeros_like(const ModelWeights<T>& m) {
  auto z = [](const std::vector<T>& x) { return std::vector<T>(x.size(), T(0)); };
  ModelWeights<T> g;
  g.config = m.config;
  g.embed = z(m.embed);
  g.norm = z(m.norm);
  g.lm_head = z(m.lm_head);
  for (const auto& l : m.layers) {
    g.layers.push_back({z(l.attn_norm), z(l.wqkv), z(l.wo), z(l.mlp_norm), z(l.w_gate_up), z(l.w_down), z(l.router)});
  }
  return g;
}

}  // namespace tokenless::io
