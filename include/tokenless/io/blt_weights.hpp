#pragma once
// BLT checkpoints as transformers' BltForCausalLM.save_pretrained writes
// them: config.json (model_type "blt", with patcher_config, encoder_config,
// decoder_config and global_config) and safetensors, sharded or not. Every
// field transformers reads is honoured or refused by name.
//
// The weights are read into one packed layout a transformer stack (host
// memory, as T): per layer attn_norm [D], wqkv [(H + 2 KV) hd, D] (q_proj,
// k_proj, v_proj stacked), wo [D, H hd], mlp_norm [D], w_gate_up [2F, D]
// (gate rows first), w_down [D, F]; a cross-attention: q_norm, kv_norm [D],
// wq [D, D], wkv [2D, D] (k_proj, v_proj stacked), wo [D, D]. The hash
// n-gram table is transformers' fused one (encoder_hash_tok_embedding,
// function-major: function f, n-gram size g at rows (f · sizes + g) · V).
#include <tokenless/blocks/policy.hpp>
#include <tokenless/core/status.hpp>
#include <tokenless/io/model_config.hpp>
#include <tokenless/io/model_weights.hpp>
#include <tokenless/io/safetensors.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace tokenless::io {

// One of BLT's four transformer stacks (entropy model, local encoder,
// global transformer, local decoder).
struct BltStackConfig {
  int hidden = 0, heads = 0, kv_heads = 0, head_dim = 0, layers = 0, intermediate = 0;
  float rms_eps = 1e-5f;
  blocks::RopeConfig rope;  // interleaved pairs (2i, 2i + 1), over the whole head
  int window = 0;           // a sliding window of this many keys, self included (0: causal)
  int max_positions = 0;
  int q_dim() const { return heads * head_dim; }
  int kv_dim() const { return kv_heads * head_dim; }
  int qkv_dim() const { return q_dim() + 2 * kv_dim(); }
};

enum class BltPatching : std::uint8_t { kEntropy, kByte };

struct BltConfig {
  BltStackConfig patcher, encoder, global, decoder;
  int vocab = 260;
  int k = 2;                  // cross_attn_k: slots a patch
  BltPatching patching = BltPatching::kEntropy;
  float threshold = 0;        // patching_threshold (nats)
  int max_patch_length = 0;   // 0: none
  std::vector<int> ngrams;    // encoder_hash_byte_group_size
  int hash_functions = 1;     // encoder_hash_byte_group_nb_functions
  std::int64_t hash_vocab = 0;  // encoder_hash_byte_group_vocab: rows a table
  bool encoder_cross_all = false, decoder_cross_all = true;  // cross_attn_all_layers
  bool global_projection = false;  // k · d_e != d_g: token_embedding_projection
  int bos = 1, eos = 2;

  int tables() const { return hash_functions * static_cast<int>(ngrams.size()); }

  static Status parse(const std::string& text, BltConfig* out);
};

template <class T>
struct BltLayerWeights {
  std::vector<T> attn_norm, wqkv, wo, mlp_norm, w_gate_up, w_down;
};

template <class T>
struct BltCrossWeights {
  std::vector<T> q_norm, kv_norm, wq, wkv, wo;
};

template <class T>
struct BltWeights {
  BltConfig config;
  // The entropy model: embedding, layers, norm, lm_head [V, D].
  std::vector<T> patcher_embed, patcher_norm, patcher_head;
  std::vector<BltLayerWeights<T>> patcher_layers;
  // The local encoder: byte embedding [V, D_e], the fused hash table
  // [tables · hash_vocab, D_e], layers, patch projection [k D_e, D_e], and
  // its cross-attentions (one, or one a layer).
  std::vector<T> byte_embed, hash_embed, encoder_projection;
  std::vector<BltLayerWeights<T>> encoder_layers;
  std::vector<BltCrossWeights<T>> encoder_cross;
  // The global transformer: [D_g, k D_e] when projected, then its layers.
  std::vector<T> global_projection;
  std::vector<BltLayerWeights<T>> global_layers;
  // The local decoder: patch projection [k D_d, D_g], cross-attentions,
  // layers, norm; the byte head [V, D_d].
  std::vector<T> decoder_projection, decoder_norm, lm_head;
  std::vector<BltLayerWeights<T>> decoder_layers;
  std::vector<BltCrossWeights<T>> decoder_cross;
};

// True when config.json's model_type is "blt" (the runner's dispatch).
inline bool is_blt_config(const std::string& text) {
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return false;
  const auto t = j.find("model_type");
  return t != j.end() && t->is_string() && t->get_ref<const std::string&>() == "blt";
}

namespace blt_detail {

inline Status stack_config(const nlohmann::json& root, const char* key, BltStackConfig* out) {
  const auto it = root.find(key);
  if (it == root.end() || !it->is_object()) {
    return Status::error(StatusCode::invalid_argument, "config.json: missing \"%s\"", key);
  }
  const nlohmann::json& j = *it;
  BltStackConfig s;
  auto get_int = [&](const char* name, int* v, bool required) -> Status {
    const auto f = j.find(name);
    if (f == j.end() || f->is_null()) {
      return required ? Status::error(StatusCode::invalid_argument, "config.json: %s.%s is missing", key, name)
                      : Status::ok();
    }
    if (!f->is_number_integer()) return Status::error(StatusCode::invalid_argument, "config.json: %s.%s is not an integer", key, name);
    *v = f->get<int>();
    return Status::ok();
  };
  TL_RETURN_IF_ERROR(get_int("hidden_size", &s.hidden, true));
  TL_RETURN_IF_ERROR(get_int("num_attention_heads", &s.heads, true));
  TL_RETURN_IF_ERROR(get_int("num_hidden_layers", &s.layers, true));
  TL_RETURN_IF_ERROR(get_int("intermediate_size", &s.intermediate, false));
  s.kv_heads = s.heads;
  TL_RETURN_IF_ERROR(get_int("num_key_value_heads", &s.kv_heads, false));
  TL_RETURN_IF_ERROR(get_int("max_position_embeddings", &s.max_positions, false));
  if (s.hidden <= 0 || s.heads <= 0 || s.layers <= 0 || s.hidden % s.heads != 0) {
    return Status::error(StatusCode::invalid_argument,
                         "config.json: %s: hidden_size %d must be a positive multiple of num_attention_heads %d, "
                         "with num_hidden_layers %d > 0",
                         key, s.hidden, s.heads, s.layers);
  }
  if (s.intermediate == 0) s.intermediate = static_cast<int>(8 * s.hidden / 3);  // transformers' default
  if (s.kv_heads <= 0 || s.heads % s.kv_heads != 0 || s.intermediate <= 0) {
    return Status::error(StatusCode::invalid_argument,
                         "config.json: %s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                         key, s.heads, s.kv_heads);
  }
  s.head_dim = s.hidden / s.heads;  // BLT's attention: hidden_size // heads, whatever head_dim says
  double eps = 1e-5;
  if (const auto e = j.find("rms_norm_eps"); e != j.end() && e->is_number()) eps = e->get<double>();
  s.rms_eps = static_cast<float>(eps);
  if (const auto act = j.find("hidden_act"); act != j.end() && act->is_string() && act->get_ref<const std::string&>() != "silu") {
    return Status::error(StatusCode::unsupported, "config.json: %s.hidden_act '%s' is not supported (silu)", key,
                         act->get_ref<const std::string&>().c_str());
  }
  if (const auto d = j.find("dropout"); d != j.end() && d->is_number() && d->get<double>() != 0.0) {
    // Inference ignores dropout, as transformers' eval() does; nothing to refuse.
  }
  // RoPE: the stack's rope_parameters (transformers 5); default, linear or llama3.
  ModelConfig rc;
  rc.head_dim = s.head_dim;
  nlohmann::json rj = nlohmann::json::object();
  if (const auto rp = j.find("rope_parameters"); rp != j.end() && rp->is_object()) {
    rj["rope_parameters"] = *rp;
  } else if (const auto th = j.find("rope_theta"); th != j.end()) {
    rj["rope_theta"] = *th;
    if (const auto sc = j.find("rope_scaling"); sc != j.end()) rj["rope_scaling"] = *sc;
  } else {
    rj["rope_theta"] = 500000.0;  // BLT's default_theta
  }
  if (const Status st = ModelConfig::parse_rope(rj, rc); !st) {
    return Status::error(st.code(), "config.json: %s: %s", key, st.message());
  }
  if (rc.rot_dim != s.head_dim) {
    return Status::error(StatusCode::unsupported, "config.json: %s: partial rotary embeddings are not BLT's", key);
  }
  s.rope = rc.rope;
  *out = s;
  return Status::ok();
}

}  // namespace blt_detail

inline Status BltConfig::parse(const std::string& text, BltConfig* out) {
  using nlohmann::json;
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Status::error(StatusCode::invalid_argument, "config.json: not a JSON object");
  if (!is_blt_config(text)) return Status::error(StatusCode::invalid_argument, "config.json: model_type is not \"blt\"");
  if (const auto a = j.find("architectures"); a != j.end() && a->is_array() && !a->empty() && (*a)[0].is_string() &&
                                              (*a)[0].get_ref<const std::string&>() != "BltForCausalLM") {
    return Status::error(StatusCode::unsupported,
                         "config.json: model_type \"blt\" with architecture '%s': only BltForCausalLM is run",
                         (*a)[0].get_ref<const std::string&>().c_str());
  }
  BltConfig c;
  TL_RETURN_IF_ERROR(blt_detail::stack_config(j, "patcher_config", &c.patcher));
  TL_RETURN_IF_ERROR(blt_detail::stack_config(j, "encoder_config", &c.encoder));
  TL_RETURN_IF_ERROR(blt_detail::stack_config(j, "global_config", &c.global));
  TL_RETURN_IF_ERROR(blt_detail::stack_config(j, "decoder_config", &c.decoder));
  auto num = [&](const json& o, const char* key, double* v) -> bool {
    const auto f = o.find(key);
    if (f == o.end() || f->is_null() || !f->is_number()) return false;
    *v = f->get<double>();
    return true;
  };
  double v = 0;
  if (num(j, "vocab_size", &v)) c.vocab = static_cast<int>(v);
  if (c.vocab != 260) {
    return Status::error(StatusCode::unsupported, "config.json: vocab_size %d: BLT's byte vocabulary is 260", c.vocab);
  }
  for (const char* sub : {"patcher_config", "encoder_config", "decoder_config"}) {
    if (num(j[sub], "vocab_size", &v) && static_cast<int>(v) != c.vocab) {
      return Status::error(StatusCode::unsupported, "config.json: %s.vocab_size %d differs from vocab_size %d", sub,
                           static_cast<int>(v), c.vocab);
    }
  }
  if (num(j, "cross_attn_k", &v)) c.k = static_cast<int>(v);
  if (c.k <= 0) return Status::error(StatusCode::invalid_argument, "config.json: cross_attn_k %d is not positive", c.k);
  for (const char* sub : {"encoder_config", "decoder_config"}) {
    const int sk = num(j[sub], "cross_attn_k", &v) ? static_cast<int>(v) : 2;
    if (sk != c.k) {
      return Status::error(StatusCode::unsupported, "config.json: %s.cross_attn_k %d differs from cross_attn_k %d", sub,
                           sk, c.k);
    }
    const int hg = num(j[sub], "hidden_size_global", &v) ? static_cast<int>(v) : 2048;
    if (hg != c.global.hidden) {
      return Status::error(StatusCode::invalid_argument,
                           "config.json: %s.hidden_size_global %d differs from global_config.hidden_size %d", sub, hg,
                           c.global.hidden);
    }
  }
  auto flag = [&](const json& o, const char* key, bool dflt) {
    const auto f = o.find(key);
    return f != o.end() && f->is_boolean() ? f->get<bool>() : dflt;
  };
  c.encoder_cross_all = flag(j["encoder_config"], "cross_attn_all_layers", false);
  c.decoder_cross_all = flag(j["decoder_config"], "cross_attn_all_layers", true);
  // Patching: transformers runs the entropy model when patch_in_forward and
  // patching_mode "entropy", and one patch a byte otherwise.
  std::string mode = "entropy";
  if (const auto m = j.find("patching_mode"); m != j.end() && m->is_string()) mode = m->get_ref<const std::string&>();
  const bool in_forward = flag(j, "patch_in_forward", true);
  if (mode == "entropy" && in_forward) {
    c.patching = BltPatching::kEntropy;
    if (const auto ps = j.find("patch_size"); ps != j.end() && ps->is_null()) {
      return Status::error(StatusCode::unsupported, "config.json: patch_size null (one patch a byte, no BOS patch) is not supported");
    }
    if (!num(j, "patching_threshold", &v)) {
      return Status::error(StatusCode::invalid_argument, "config.json: patching_mode \"entropy\" needs patching_threshold");
    }
    c.threshold = static_cast<float>(v);
    if (std::isnan(c.threshold)) return Status::error(StatusCode::invalid_argument, "config.json: patching_threshold is NaN");
  } else if (mode == "byte" || mode == "entropy") {
    c.patching = BltPatching::kByte;
  } else {
    return Status::error(StatusCode::unsupported,
                         "config.json: patching_mode '%s' is not run by transformers' BLT (entropy, or byte)", mode.c_str());
  }
  if (num(j, "max_patch_length", &v)) c.max_patch_length = static_cast<int>(v);
  if (c.max_patch_length < 0) {
    return Status::error(StatusCode::invalid_argument, "config.json: max_patch_length %d is negative", c.max_patch_length);
  }
  // Windows: the local models' (local_attention_window_len, null for causal) and the entropy model's own.
  if (const auto w = j.find("local_attention_window_len"); w == j.end()) {
    c.encoder.window = c.decoder.window = 512;
  } else if (!w->is_null()) {
    if (!w->is_number_integer() || w->get<int>() <= 0) {
      return Status::error(StatusCode::invalid_argument, "config.json: local_attention_window_len is not a positive integer");
    }
    c.encoder.window = c.decoder.window = w->get<int>();
  }
  if (const auto w = j["patcher_config"].find("sliding_window"); w == j["patcher_config"].end()) {
    c.patcher.window = 512;
  } else if (!w->is_null()) {
    if (!w->is_number_integer() || w->get<int>() <= 0) {
      return Status::error(StatusCode::invalid_argument, "config.json: patcher_config.sliding_window is not a positive integer");
    }
    c.patcher.window = w->get<int>();
  }
  c.global.window = 0;
  // Hash n-grams.
  c.ngrams = {3, 4, 5, 6, 7, 8};
  if (const auto g = j.find("encoder_hash_byte_group_size"); g != j.end() && !g->is_null()) {
    if (!g->is_array() || g->empty()) {
      return Status::error(StatusCode::invalid_argument, "config.json: encoder_hash_byte_group_size is not a list of sizes");
    }
    c.ngrams.clear();
    for (const auto& e : *g) {
      if (!e.is_number_integer() || e.get<int>() < 1 || e.get<int>() > 64) {
        return Status::error(StatusCode::invalid_argument, "config.json: encoder_hash_byte_group_size holds a size outside 1..64");
      }
      c.ngrams.push_back(e.get<int>());
    }
  }
  c.hash_vocab = 500002;
  if (num(j, "encoder_hash_byte_group_vocab", &v)) c.hash_vocab = static_cast<std::int64_t>(v);
  if (num(j, "encoder_hash_byte_group_nb_functions", &v)) c.hash_functions = static_cast<int>(v);
  if (c.hash_vocab <= 0 || c.hash_functions < 0) {
    return Status::error(StatusCode::invalid_argument,
                         "config.json: encoder_hash_byte_group_vocab %lld and _nb_functions %d must be positive",
                         static_cast<long long>(c.hash_vocab), c.hash_functions);
  }
  if (num(j, "bos_token_id", &v)) c.bos = static_cast<int>(v);
  if (num(j, "eos_token_id", &v)) c.eos = static_cast<int>(v);
  c.global_projection = c.k * c.encoder.hidden != c.global.hidden;
  if (flag(j, "tie_word_embeddings", false)) {
    return Status::error(StatusCode::unsupported, "config.json: tie_word_embeddings = true is not BLT's");
  }
  *out = c;
  return Status::ok();
}

namespace blt_detail {

template <class T>
Status load_stack_layer(const Checkpoint& ck, const BltStackConfig& s, const std::string& p, BltLayerWeights<T>& w) {
  using detail::fetch;
  const std::int64_t D = s.hidden, F = s.intermediate, Q = s.q_dim(), KV = s.kv_dim();
  w.attn_norm.resize(static_cast<std::size_t>(D));
  w.mlp_norm.resize(static_cast<std::size_t>(D));
  TL_RETURN_IF_ERROR(fetch(ck, p + "input_layernorm.weight", {D}, w.attn_norm));
  TL_RETURN_IF_ERROR(fetch(ck, p + "post_attention_layernorm.weight", {D}, w.mlp_norm));
  w.wqkv.resize(static_cast<std::size_t>((Q + 2 * KV) * D));
  TL_RETURN_IF_ERROR(fetch(ck, p + "self_attn.q_proj.weight", {Q, D}, w.wqkv));
  TL_RETURN_IF_ERROR(fetch(ck, p + "self_attn.k_proj.weight", {KV, D}, w.wqkv, static_cast<std::size_t>(Q * D)));
  TL_RETURN_IF_ERROR(fetch(ck, p + "self_attn.v_proj.weight", {KV, D}, w.wqkv, static_cast<std::size_t>((Q + KV) * D)));
  w.wo.resize(static_cast<std::size_t>(D * Q));
  TL_RETURN_IF_ERROR(fetch(ck, p + "self_attn.o_proj.weight", {D, Q}, w.wo));
  w.w_gate_up.resize(static_cast<std::size_t>(2 * F * D));
  w.w_down.resize(static_cast<std::size_t>(D * F));
  TL_RETURN_IF_ERROR(fetch(ck, p + "mlp.gate_proj.weight", {F, D}, w.w_gate_up));
  TL_RETURN_IF_ERROR(fetch(ck, p + "mlp.up_proj.weight", {F, D}, w.w_gate_up, static_cast<std::size_t>(F * D)));
  TL_RETURN_IF_ERROR(fetch(ck, p + "mlp.down_proj.weight", {D, F}, w.w_down));
  return Status::ok();
}

template <class T>
Status load_stack(const Checkpoint& ck, const BltStackConfig& s, const std::string& p, std::vector<BltLayerWeights<T>>& out) {
  for (int l = 0; l < s.layers; ++l) {
    BltLayerWeights<T> w;
    TL_RETURN_IF_ERROR(load_stack_layer(ck, s, p + "layers." + std::to_string(l) + ".", w));
    out.push_back(std::move(w));
  }
  return Status::ok();
}

// BLT's cross-attention: q, k, v and o all [D, D] (heads of the local model).
template <class T>
Status load_cross(const Checkpoint& ck, const BltStackConfig& s, const std::string& p, int count,
                  std::vector<BltCrossWeights<T>>& out) {
  using detail::fetch;
  const std::int64_t D = s.hidden, Q = s.q_dim(), KV = s.kv_dim();
  for (int i = 0; i < count; ++i) {
    const std::string q = p + "cross_attn_layers." + std::to_string(i) + ".";
    BltCrossWeights<T> w;
    w.q_norm.resize(static_cast<std::size_t>(D));
    w.kv_norm.resize(static_cast<std::size_t>(D));
    w.wq.resize(static_cast<std::size_t>(Q * D));
    w.wkv.resize(static_cast<std::size_t>(2 * KV * D));
    w.wo.resize(static_cast<std::size_t>(D * Q));
    TL_RETURN_IF_ERROR(fetch(ck, q + "q_norm.weight", {D}, w.q_norm));
    TL_RETURN_IF_ERROR(fetch(ck, q + "k_norm.weight", {D}, w.kv_norm));
    TL_RETURN_IF_ERROR(fetch(ck, q + "q_proj.weight", {Q, D}, w.wq));
    TL_RETURN_IF_ERROR(fetch(ck, q + "k_proj.weight", {KV, D}, w.wkv));
    TL_RETURN_IF_ERROR(fetch(ck, q + "v_proj.weight", {KV, D}, w.wkv, static_cast<std::size_t>(KV * D)));
    TL_RETURN_IF_ERROR(fetch(ck, q + "o_proj.weight", {D, Q}, w.wo));
    out.push_back(std::move(w));
  }
  return Status::ok();
}

}  // namespace blt_detail

template <class T>
Status load_blt_weights(const std::string& dir, BltWeights<T>* out) {
  BltWeights<T> m;
  std::string text;
  if (!Checkpoint::read_text(dir + "/config.json", &text)) {
    return Status::error(StatusCode::invalid_argument, "%s/config.json: cannot read", dir.c_str());
  }
  TL_RETURN_IF_ERROR(BltConfig::parse(text, &m.config));
  const BltConfig& c = m.config;
  Checkpoint ck;
  TL_RETURN_IF_ERROR(Checkpoint::open(dir, &ck));
  using detail::fetch;
  const std::int64_t V = c.vocab;
  auto sized = [](std::vector<T>& v, std::int64_t n) -> std::vector<T>& {
    v.resize(static_cast<std::size_t>(n));
    return v;
  };
  if (c.patching == BltPatching::kEntropy) {
    const std::int64_t D = c.patcher.hidden;
    TL_RETURN_IF_ERROR(fetch(ck, "model.patcher.embed_tokens.weight", {V, D}, sized(m.patcher_embed, V * D)));
    TL_RETURN_IF_ERROR(fetch(ck, "model.patcher.norm.weight", {D}, sized(m.patcher_norm, D)));
    TL_RETURN_IF_ERROR(fetch(ck, "model.patcher.lm_head.weight", {V, D}, sized(m.patcher_head, V * D)));
    TL_RETURN_IF_ERROR(blt_detail::load_stack(ck, c.patcher, "model.patcher.", m.patcher_layers));
  }
  const std::int64_t De = c.encoder.hidden, Dg = c.global.hidden, Dd = c.decoder.hidden, k = c.k;
  TL_RETURN_IF_ERROR(fetch(ck, "model.local_encoder.embed_tokens.weight", {V, De}, sized(m.byte_embed, V * De)));
  const std::int64_t rows = c.tables() * c.hash_vocab;
  if (rows > 0) {
    TL_RETURN_IF_ERROR(fetch(ck, "model.encoder_hash_tok_embedding.weight", {rows, De}, sized(m.hash_embed, rows * De)));
  }
  TL_RETURN_IF_ERROR(blt_detail::load_stack(ck, c.encoder, "model.local_encoder.", m.encoder_layers));
  TL_RETURN_IF_ERROR(fetch(ck, "model.local_encoder.patch_embedding_projection.weight", {k * De, De},
                           sized(m.encoder_projection, k * De * De)));
  TL_RETURN_IF_ERROR(blt_detail::load_cross(ck, c.encoder, "model.local_encoder.",
                                            c.encoder_cross_all ? c.encoder.layers : 1, m.encoder_cross));
  if (c.global_projection) {
    TL_RETURN_IF_ERROR(fetch(ck, "model.global_transformer.token_embedding_projection.weight", {Dg, k * De},
                             sized(m.global_projection, Dg * k * De)));
  }
  TL_RETURN_IF_ERROR(blt_detail::load_stack(ck, c.global, "model.global_transformer.", m.global_layers));
  TL_RETURN_IF_ERROR(fetch(ck, "model.local_decoder.patch_embedding_projection.weight", {k * Dd, Dg},
                           sized(m.decoder_projection, k * Dd * Dg)));
  TL_RETURN_IF_ERROR(blt_detail::load_cross(ck, c.decoder, "model.local_decoder.",
                                            c.decoder_cross_all ? c.decoder.layers : 1, m.decoder_cross));
  TL_RETURN_IF_ERROR(blt_detail::load_stack(ck, c.decoder, "model.local_decoder.", m.decoder_layers));
  TL_RETURN_IF_ERROR(fetch(ck, "model.local_decoder.norm.weight", {Dd}, sized(m.decoder_norm, Dd)));
  TL_RETURN_IF_ERROR(fetch(ck, "lm_head.weight", {V, Dd}, sized(m.lm_head, V * Dd)));
  *out = std::move(m);
  return Status::ok();
}

// The trained tensors of a BLT model under transformers' names, as views
// into w (q, k, v and gate, up are row ranges of the fused tensors): every
// tensor but the entropy model's (frozen: BLT trains it apart) and, with
// the encoder's cross_attn_all_layers, but its cross-attentions before the
// last (only the last one's output reaches the loss; torch gives them no
// gradient and its AdamW skips them). With `all`, those too: every tensor
// of the checkpoint (a save's).
inline std::vector<ParamView> blt_parameter_views(BltWeights<float>& w, bool all = false) {
  const BltConfig& c = w.config;
  std::vector<ParamView> v;
  auto stack = [&](const BltStackConfig& s, const std::string& p, std::vector<BltLayerWeights<float>>& layers) {
    const std::int64_t D = s.hidden, F = s.intermediate, Q = s.q_dim(), KV = s.kv_dim();
    for (std::size_t l = 0; l < layers.size(); ++l) {
      auto& x = layers[l];
      const std::string q = p + "layers." + std::to_string(l) + ".";
      v.push_back({q + "self_attn.q_proj.weight", {Q, D}, x.wqkv.data()});
      v.push_back({q + "self_attn.k_proj.weight", {KV, D}, x.wqkv.data() + Q * D});
      v.push_back({q + "self_attn.v_proj.weight", {KV, D}, x.wqkv.data() + (Q + KV) * D});
      v.push_back({q + "self_attn.o_proj.weight", {D, Q}, x.wo.data()});
      v.push_back({q + "mlp.gate_proj.weight", {F, D}, x.w_gate_up.data()});
      v.push_back({q + "mlp.up_proj.weight", {F, D}, x.w_gate_up.data() + F * D});
      v.push_back({q + "mlp.down_proj.weight", {D, F}, x.w_down.data()});
      v.push_back({q + "input_layernorm.weight", {D}, x.attn_norm.data()});
      v.push_back({q + "post_attention_layernorm.weight", {D}, x.mlp_norm.data()});
    }
  };
  auto cross = [&](const BltStackConfig& s, const std::string& p, std::vector<BltCrossWeights<float>>& cs,
                   std::size_t first) {
    const std::int64_t D = s.hidden, Q = s.q_dim(), KV = s.kv_dim();
    for (std::size_t i = first; i < cs.size(); ++i) {
      auto& x = cs[i];
      const std::string q = p + "cross_attn_layers." + std::to_string(i) + ".";
      v.push_back({q + "q_proj.weight", {Q, D}, x.wq.data()});
      v.push_back({q + "k_proj.weight", {KV, D}, x.wkv.data()});
      v.push_back({q + "v_proj.weight", {KV, D}, x.wkv.data() + KV * D});
      v.push_back({q + "o_proj.weight", {D, Q}, x.wo.data()});
      v.push_back({q + "q_norm.weight", {D}, x.q_norm.data()});
      v.push_back({q + "k_norm.weight", {D}, x.kv_norm.data()});
    }
  };
  const std::int64_t V = c.vocab, De = c.encoder.hidden, Dg = c.global.hidden, Dd = c.decoder.hidden, k = c.k;
  stack(c.encoder, "model.local_encoder.", w.encoder_layers);
  v.push_back({"model.local_encoder.patch_embedding_projection.weight", {k * De, De}, w.encoder_projection.data()});
  v.push_back({"model.local_encoder.embed_tokens.weight", {V, De}, w.byte_embed.data()});
  cross(c.encoder, "model.local_encoder.", w.encoder_cross,
        all || w.encoder_cross.empty() ? 0 : w.encoder_cross.size() - 1);
  stack(c.global, "model.global_transformer.", w.global_layers);
  if (c.global_projection) {
    v.push_back({"model.global_transformer.token_embedding_projection.weight", {Dg, k * De}, w.global_projection.data()});
  }
  stack(c.decoder, "model.local_decoder.", w.decoder_layers);
  v.push_back({"model.local_decoder.patch_embedding_projection.weight", {k * Dd, Dg}, w.decoder_projection.data()});
  v.push_back({"model.local_decoder.norm.weight", {Dd}, w.decoder_norm.data()});
  cross(c.decoder, "model.local_decoder.", w.decoder_cross, 0);
  if (!w.hash_embed.empty()) {
    v.push_back({"model.encoder_hash_tok_embedding.weight", {c.tables() * c.hash_vocab, De}, w.hash_embed.data()});
  }
  v.push_back({"lm_head.weight", {V, Dd}, w.lm_head.data()});
  if (all && !w.patcher_embed.empty()) {
    const std::int64_t Dp = c.patcher.hidden;
    stack(c.patcher, "model.patcher.", w.patcher_layers);
    v.push_back({"model.patcher.embed_tokens.weight", {V, Dp}, w.patcher_embed.data()});
    v.push_back({"model.patcher.norm.weight", {Dp}, w.patcher_norm.data()});
    v.push_back({"model.patcher.lm_head.weight", {V, Dp}, w.patcher_head.data()});
  }
  return v;
}

// Every tensor of a BLT model of config c, zeroed (--init random fills them).
inline BltWeights<float> allocate_blt_weights(const BltConfig& c) {
  BltWeights<float> m;
  m.config = c;
  auto z = [](std::int64_t n) { return std::vector<float>(static_cast<std::size_t>(n), 0.0f); };
  auto stack = [&](const BltStackConfig& s) {
    std::vector<BltLayerWeights<float>> layers;
    const std::int64_t D = s.hidden, F = s.intermediate, Q = s.q_dim(), KV = s.kv_dim();
    for (int l = 0; l < s.layers; ++l) layers.push_back({z(D), z((Q + 2 * KV) * D), z(D * Q), z(D), z(2 * F * D), z(D * F)});
    return layers;
  };
  auto cross = [&](const BltStackConfig& s, int count) {
    std::vector<BltCrossWeights<float>> cs;
    const std::int64_t D = s.hidden, Q = s.q_dim(), KV = s.kv_dim();
    for (int i = 0; i < count; ++i) cs.push_back({z(D), z(D), z(Q * D), z(2 * KV * D), z(D * Q)});
    return cs;
  };
  const std::int64_t V = c.vocab, De = c.encoder.hidden, Dg = c.global.hidden, Dd = c.decoder.hidden, k = c.k;
  if (c.patching == BltPatching::kEntropy) {
    m.patcher_embed = z(V * c.patcher.hidden);
    m.patcher_norm = z(c.patcher.hidden);
    m.patcher_head = z(V * c.patcher.hidden);
    m.patcher_layers = stack(c.patcher);
  }
  m.byte_embed = z(V * De);
  m.hash_embed = z(c.tables() * c.hash_vocab * De);
  m.encoder_layers = stack(c.encoder);
  m.encoder_projection = z(k * De * De);
  m.encoder_cross = cross(c.encoder, c.encoder_cross_all ? c.encoder.layers : 1);
  if (c.global_projection) m.global_projection = z(Dg * k * De);
  m.global_layers = stack(c.global);
  m.decoder_projection = z(k * Dd * Dg);
  m.decoder_cross = cross(c.decoder, c.decoder_cross_all ? c.decoder.layers : 1);
  m.decoder_layers = stack(c.decoder);
  m.decoder_norm = z(Dd);
  m.lm_head = z(V * Dd);
  return m;
}

// A copy of w with every tensor zeroed (a gradient's buffers).
inline BltWeights<float> blt_zeros_like(const BltWeights<float>& w) {
  BltWeights<float> z = w;
  auto zero = [](std::vector<float>& x) { std::fill(x.begin(), x.end(), 0.0f); };
  for (auto* x : {&z.patcher_embed, &z.patcher_norm, &z.patcher_head, &z.byte_embed, &z.hash_embed,
                  &z.encoder_projection, &z.global_projection, &z.decoder_projection, &z.decoder_norm, &z.lm_head}) {
    zero(*x);
  }
  for (auto* stack : {&z.patcher_layers, &z.encoder_layers, &z.global_layers, &z.decoder_layers}) {
    for (auto& l : *stack) {
      for (auto* x : {&l.attn_norm, &l.wqkv, &l.wo, &l.mlp_norm, &l.w_gate_up, &l.w_down}) zero(*x);
    }
  }
  for (auto* cs : {&z.encoder_cross, &z.decoder_cross}) {
    for (auto& l : *cs) {
      for (auto* x : {&l.q_norm, &l.kv_norm, &l.wq, &l.wkv, &l.wo}) zero(*x);
    }
  }
  return z;
}

}  // namespace tokenless::io
