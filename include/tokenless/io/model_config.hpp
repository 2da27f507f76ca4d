#pragma once
// config.json of a Hugging Face causal LM, for the families the runner
// loads: LlamaForCausalLM (Llama 3.x), MistralForCausalLM (sliding window),
// MixtralForCausalLM (sparse MoE) and Phi3ForCausalLM (fused qkv and
// gate_up). Both styles of RoPE settings are read: the Hub's top-level
// `rope_theta` and `rope_scaling` ({"rope_type" or "type", "factor", ...}),
// and the `rope_parameters` object that transformers 5 writes. What the
// library does not implement (another architecture, a rope type other than
// default/linear/llama3, biases, another activation) is refused with a
// message that names it.
#include <tokenless/blocks/policy.hpp>
#include <tokenless/core/status.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <string>

namespace tokenless::io {

enum class Family : std::uint8_t { kLlama, kMistral, kMixtral, kPhi3 };

inline const char* to_string(Family f) {
  switch (f) {
    case Family::kLlama: return "LlamaForCausalLM";
    case Family::kMistral: return "MistralForCausalLM";
    case Family::kMixtral: return "MixtralForCausalLM";
    case Family::kPhi3: return "Phi3ForCausalLM";
  }
  return "?";
}

struct ModelConfig {
  Family family = Family::kLlama;
  int vocab = 0, hidden = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0, intermediate = 0;
  float rms_eps = 1e-5f;
  blocks::RopeConfig rope;
  int rot_dim = 0;          // head_dim · partial_rotary_factor
  int sliding_window = 0;   // 0: none (Mistral: keys j with i - j < window)
  int experts = 0, top_k = 0;  // Mixtral
  // Mixtral's load-balancing loss in training: added × this coefficient
  // where output_router_logits is true (transformers' defaults: 0.001, false).
  float router_aux_loss_coef = 0.001f;
  bool output_router_logits = false;
  int mtp_modules = 0;         // DeepSeek-V3-style multi-token modules (num_nextn_predict_layers)
  bool tie_embeddings = false;
  int max_positions = 0;
  int bos = -1, eos = -1;

  int q_dim() const { return heads * head_dim; }
  int kv_dim() const { return kv_heads * head_dim; }
  int qkv_dim() const { return q_dim() + 2 * kv_dim(); }

  static Status parse(const std::string& text, ModelConfig* out) {
    using nlohmann::json;
    const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) return Status::error(StatusCode::invalid_argument, "config.json: not a JSON object");
    ModelConfig c;
    // The architecture.
    const auto arch = j.find("architectures");
    if (arch == j.end() || !arch->is_array() || arch->empty() || !(*arch)[0].is_string()) {
      return Status::error(StatusCode::invalid_argument, "config.json: no \"architectures\" list");
    }
    const std::string& a = (*arch)[0].get_ref<const std::string&>();
    if (a == "LlamaForCausalLM") c.family = Family::kLlama;
    else if (a == "MistralForCausalLM") c.family = Family::kMistral;
    else if (a == "MixtralForCausalLM") c.family = Family::kMixtral;
    else if (a == "Phi3ForCausalLM") c.family = Family::kPhi3;
    else {
      return Status::error(StatusCode::unsupported,
                           "config.json: architecture '%s' is not supported (LlamaForCausalLM, MistralForCausalLM, "
                           "MixtralForCausalLM, Phi3ForCausalLM)",
                           a.c_str());
    }
    TL_RETURN_IF_ERROR(get_int(j, "vocab_size", &c.vocab));
    TL_RETURN_IF_ERROR(get_int(j, "hidden_size", &c.hidden));
    TL_RETURN_IF_ERROR(get_int(j, "num_hidden_layers", &c.layers));
    TL_RETURN_IF_ERROR(get_int(j, "num_attention_heads", &c.heads));
    TL_RETURN_IF_ERROR(get_int(j, "intermediate_size", &c.intermediate));
    c.kv_heads = c.heads;
    TL_RETURN_IF_ERROR(get_int(j, "num_key_value_heads", &c.kv_heads, /*required=*/false));
    if (c.vocab <= 0 || c.hidden <= 0 || c.layers <= 0 || c.heads <= 0 || c.intermediate <= 0) {
      return Status::error(StatusCode::invalid_argument,
                           "config.json: vocab_size, hidden_size, num_hidden_layers, num_attention_heads and "
                           "intermediate_size must be positive");
    }
    TL_RETURN_IF_ERROR(get_int(j, "head_dim", &c.head_dim, /*required=*/false));
    if (c.head_dim == 0) {
      if (c.hidden % c.heads != 0) {
        return Status::error(StatusCode::invalid_argument, "config.json: hidden_size %d is not a multiple of %d heads",
                             c.hidden, c.heads);
      }
      c.head_dim = c.hidden / c.heads;
    }
    if (c.kv_heads <= 0 || c.heads % c.kv_heads != 0) {
      return Status::error(StatusCode::invalid_argument,
                           "config.json: num_attention_heads %d is not a multiple of num_key_value_heads %d", c.heads,
                           c.kv_heads);
    }
    double eps = 1e-5;
    TL_RETURN_IF_ERROR(get_number(j, "rms_norm_eps", &eps, /*required=*/false));
    c.rms_eps = static_cast<float>(eps);
    TL_RETURN_IF_ERROR(get_int(j, "max_position_embeddings", &c.max_positions, /*required=*/false));
    TL_RETURN_IF_ERROR(get_int(j, "bos_token_id", &c.bos, /*required=*/false));
    TL_RETURN_IF_ERROR(get_int(j, "eos_token_id", &c.eos, /*required=*/false));
    TL_RETURN_IF_ERROR(get_int(j, "num_nextn_predict_layers", &c.mtp_modules, /*required=*/false));
    if (c.mtp_modules < 0) {
      return Status::error(StatusCode::invalid_argument, "config.json: num_nextn_predict_layers %d is negative",
                           c.mtp_modules);
    }
    if (const auto t = j.find("tie_word_embeddings"); t != j.end() && t->is_boolean()) c.tie_embeddings = t->get<bool>();
    // What the library's blocks implement.
    if (const auto act = j.find("hidden_act"); act != j.end() && act->is_string() && act->get_ref<const std::string&>() != "silu") {
      return Status::error(StatusCode::unsupported, "config.json: hidden_act '%s' is not supported (silu)",
                           act->get_ref<const std::string&>().c_str());
    }
    for (const char* bias : {"attention_bias", "mlp_bias"}) {
      if (const auto b = j.find(bias); b != j.end() && b->is_boolean() && b->get<bool>()) {
        return Status::error(StatusCode::unsupported, "config.json: %s = true is not supported", bias);
      }
    }
    if (c.family == Family::kMistral || c.family == Family::kMixtral || c.family == Family::kPhi3) {
      if (const auto w = j.find("sliding_window"); w != j.end() && !w->is_null()) {
        TL_RETURN_IF_ERROR(get_int(j, "sliding_window", &c.sliding_window));
      }
      // Phi-3 and Mixtral configs carry a window the Hub models do not use
      // unless use_sliding_window is set (Phi-3: Phi-3-small's).
      if (c.family == Family::kPhi3) c.sliding_window = 0;
    }
    if (c.family == Family::kMixtral) {
      TL_RETURN_IF_ERROR(get_int(j, "num_local_experts", &c.experts));
      TL_RETURN_IF_ERROR(get_int(j, "num_experts_per_tok", &c.top_k));
      double coef = c.router_aux_loss_coef;
      TL_RETURN_IF_ERROR(get_number(j, "router_aux_loss_coef", &coef, /*required=*/false));
      if (!std::isfinite(coef)) {
        return Status::error(StatusCode::invalid_argument, "config.json: router_aux_loss_coef is not finite");
      }
      c.router_aux_loss_coef = static_cast<float>(coef);
      if (const auto o = j.find("output_router_logits"); o != j.end() && o->is_boolean()) {
        c.output_router_logits = o->get<bool>();
      }
    }
    TL_RETURN_IF_ERROR(parse_rope(j, c));
    *out = c;
    return Status::ok();
  }

 private:
  static Status get_int(const nlohmann::json& j, const char* key, int* out, bool required = true) {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
      if (!required) return Status::ok();
      return Status::error(StatusCode::invalid_argument, "config.json: missing \"%s\"", key);
    }
    if (!it->is_number_integer() || it->get<std::int64_t>() < 0 || it->get<std::int64_t>() > (1ll << 31) - 1) {
      return Status::error(StatusCode::invalid_argument, "config.json: \"%s\" is not a non-negative 32-bit integer", key);
    }
    *out = static_cast<int>(it->get<std::int64_t>());
    return Status::ok();
  }
  static Status get_number(const nlohmann::json& j, const char* key, double* out, bool required = true) {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
      if (!required) return Status::ok();
      return Status::error(StatusCode::invalid_argument, "config.json: missing \"%s\"", key);
    }
    if (!it->is_number()) return Status::error(StatusCode::invalid_argument, "config.json: \"%s\" is not a number", key);
    *out = it->get<double>();
    return Status::ok();
  }

 public:
  // RoPE: rope_parameters (transformers 5) or rope_theta + rope_scaling (the Hub);
  // BLT's stacks read theirs through it too (io/blt_weights.hpp).
  static Status parse_rope(const nlohmann::json& j, ModelConfig& c) {
    const nlohmann::json* scaling = nullptr;
    double theta = 10000.0, partial = 1.0;
    const auto params = j.find("rope_parameters");
    if (params != j.end() && params->is_object()) {
      TL_RETURN_IF_ERROR(get_number(*params, "rope_theta", &theta));
      TL_RETURN_IF_ERROR(get_number(*params, "partial_rotary_factor", &partial, false));
      scaling = &*params;
    } else {
      TL_RETURN_IF_ERROR(get_number(j, "rope_theta", &theta, false));
      const auto s = j.find("rope_scaling");
      if (s != j.end() && !s->is_null()) {
        if (!s->is_object()) return Status::error(StatusCode::invalid_argument, "config.json: rope_scaling is not an object");
        scaling = &*s;
      }
    }
    TL_RETURN_IF_ERROR(get_number(j, "partial_rotary_factor", &partial, false));
    c.rope.theta = static_cast<float>(theta);
    if (scaling) {
      std::string type = "default";
      for (const char* key : {"rope_type", "type"}) {
        if (const auto t = scaling->find(key); t != scaling->end() && t->is_string()) {
          type = t->get_ref<const std::string&>();
          break;
        }
      }
      TL_RETURN_IF_ERROR(blocks::RopeConfig::type_from_name(type.c_str(), &c.rope.type));
      double v = 0;
      if (c.rope.type != blocks::RopeType::kDefault) {
        TL_RETURN_IF_ERROR(get_number(*scaling, "factor", &v));
        c.rope.factor = static_cast<float>(v);
      }
      if (c.rope.type == blocks::RopeType::kLlama3) {
        TL_RETURN_IF_ERROR(get_number(*scaling, "low_freq_factor", &v));
        c.rope.low_freq_factor = static_cast<float>(v);
        TL_RETURN_IF_ERROR(get_number(*scaling, "high_freq_factor", &v));
        c.rope.high_freq_factor = static_cast<float>(v);
        TL_RETURN_IF_ERROR(get_number(*scaling, "original_max_position_embeddings", &v));
        c.rope.original_max_position = static_cast<float>(v);
      }
    }
    TL_RETURN_IF_ERROR(c.rope.validate());
    c.rot_dim = static_cast<int>(std::lround(c.head_dim * partial));
    if (c.rot_dim <= 0 || c.rot_dim % 2 != 0 || c.rot_dim > c.head_dim) {
      return Status::error(StatusCode::invalid_argument, "config.json: partial_rotary_factor %g gives %d rotated features of %d",
                           partial, c.rot_dim, c.head_dim);
    }
    return Status::ok();
  }
};

// The decoder layer's shape (blocks::DecoderLayer) of a config.
inline blocks::DecoderShape decoder_shape(const ModelConfig& c) {
  return {.hidden = c.hidden,
          .heads = c.heads,
          .kv_heads = c.kv_heads,
          .head_dim = c.head_dim,
          .rot_dim = c.rot_dim,
          .ffn = c.intermediate,
          .experts = c.experts,
          .top_k = c.top_k,
          .window = c.sliding_window,
          .eps = c.rms_eps};
}

}  // namespace tokenless::io
