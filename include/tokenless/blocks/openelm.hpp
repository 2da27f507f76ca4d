#pragma once
// OpenELM's layer-wise scaling (Apple's OpenELM, after DeLighT's block-wise
// scaling): each layer has its own query-head count and FFN width, from two
// multipliers interpolated over the layers. openelm_layers() gives each
// layer's DecoderShape, as OpenELMConfig computes it:
//
//   qkv multipliers  m_l = round(linspace(qkv[0], qkv[1], L)[l], 2)
//                    (one value: the same for every layer, not rounded)
//   query dim        make_divisible(model_dim · m_l, head_dim · gqa_groups)
//   heads            query dim / head_dim;  kv heads = heads / gqa_groups
//   FFN width        make_divisible(model_dim · f_l, ffn_dim_divisor), f_l
//                    from ffn multipliers the same way (or one a layer)
//   make_divisible   v ↦ max(d, ⌊v + d/2⌋ rounded down to a multiple of d),
//                    plus d when that lost more than 10 % of v
//
// round(·, 2) is Python's: correctly rounded to two decimals from the exact
// binary value (0.735 is 0.7349… and goes to 0.73). The OpenELM presets'
// numbers are checked in tests/host against the published configs.
// OpenELM also normalises q and k per head (normalize_qk_projections); the
// decoder layer does not yet, so a model built from these shapes has
// OpenELM's dimensions, not its exact function.
#include <tokenless/blocks/policy.hpp>
#include <tokenless/core/status.hpp>
#include <tokenless/core/validate.hpp>

#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace tokenless::blocks {

struct OpenElmConfig {
  int layers = 0;           // num_transformer_layers
  int model_dim = 0;
  int head_dim = 0;
  int gqa_groups = 1;       // num_gqa_groups: query heads per KV head
  std::vector<double> qkv_multipliers{1.0};  // one value, or [first, last]
  std::vector<double> ffn_multipliers{4.0};  // one value, [first, last], or one a layer
  int ffn_divisor = 256;    // ffn_dim_divisor
  float eps = 1e-6f;        // OpenELM's RMSNorm epsilon
  float rope_theta = 10000.0f;  // rope_freq_constant

  // The published models: OpenELM-270M, -450M, -1_1B, -3B.
  static bool preset(const std::string& name, OpenElmConfig* out) {
    struct P {
      const char* name;
      int layers, dim, head_dim;
    };
    for (const P& p : {P{"OpenELM-270M", 16, 1280, 64}, P{"OpenELM-450M", 20, 1536, 64},
                       P{"OpenELM-1_1B", 28, 2048, 64}, P{"OpenELM-3B", 36, 3072, 128}}) {
      if (name == p.name) {
        *out = {p.layers, p.dim, p.head_dim, 4, {0.5, 1.0}, {0.5, 4.0}};
        return true;
      }
    }
    return false;
  }
};

namespace detail {
inline double python_round2(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", v);  // glibc: correctly rounded, ties to even
  return std::strtod(buf, nullptr);
}
// numpy.linspace(first, last, n): first + i · step, the last exactly `last`.
inline std::vector<double> linspace(double first, double last, int n) {
  std::vector<double> v(static_cast<std::size_t>(n));
  const double step = n > 1 ? (last - first) / (n - 1) : 0.0;
  for (int i = 0; i < n; ++i) v[i] = i + 1 == n && n > 1 ? last : i * step + first;
  return v;
}
inline long long make_divisible(double v, long long d) {
  long long r = static_cast<long long>(v + static_cast<double>(d) / 2) / d * d;
  if (r < d) r = d;
  if (static_cast<double>(r) < 0.9 * v) r += d;
  return r;
}
inline Status per_layer(const char* name, const std::vector<double>& m, int layers, std::vector<double>* out) {
  if (m.size() == 1) {
    out->assign(static_cast<std::size_t>(layers), m[0]);
  } else if (m.size() == 2) {
    *out = linspace(m[0], m[1], layers);
    for (double& v : *out) v = python_round2(v);
  } else if (m.size() == static_cast<std::size_t>(layers) && std::string(name) == "ffn_multipliers") {
    *out = m;
  } else {
    return Status::argument(StatusCode::invalid_argument, name, "one value or two (first and last layer)",
                            "%zu values", m.size());
  }
  for (double v : *out) {
    if (!(v > 0) || !std::isfinite(v)) {
      return Status::argument(StatusCode::invalid_argument, name, "finite multipliers > 0", "%g", v);
    }
  }
  return Status::ok();
}
}  // namespace detail

// Every layer's shape (hidden, heads, kv_heads, head_dim, ffn, eps); rot_dim,
// experts and window are left 0 (full rotation, dense, causal).
inline Status openelm_layers(const OpenElmConfig& c, std::vector<DecoderShape>* out) {
  TL_RETURN_IF_ERROR(check::positive("layers", c.layers));
  TL_RETURN_IF_ERROR(check::positive("model_dim", c.model_dim));
  TL_RETURN_IF_ERROR(check::positive("head_dim", c.head_dim));
  TL_RETURN_IF_ERROR(check::positive("gqa_groups", c.gqa_groups));
  TL_RETURN_IF_ERROR(check::positive("ffn_divisor", c.ffn_divisor));
  std::vector<double> qkv, ffn;
  TL_RETURN_IF_ERROR(detail::per_layer("qkv_multipliers", c.qkv_multipliers, c.layers, &qkv));
  TL_RETURN_IF_ERROR(detail::per_layer("ffn_multipliers", c.ffn_multipliers, c.layers, &ffn));
  if (c.qkv_multipliers.size() == 1) {  // a single multiplier is not rounded (OpenELMConfig's Number case)
    qkv.assign(static_cast<std::size_t>(c.layers), c.qkv_multipliers[0]);
  }
  out->clear();
  for (int l = 0; l < c.layers; ++l) {
    const long long q_dim = detail::make_divisible(c.model_dim * qkv[l], std::int64_t{c.head_dim} * c.gqa_groups);
    const long long ffn_dim = detail::make_divisible(ffn[l] * c.model_dim, c.ffn_divisor);
    if (q_dim % c.head_dim != 0 || q_dim / c.head_dim > 65535 || ffn_dim > (1 << 30)) {
      return Status::error(StatusCode::invalid_argument, "layer %d: query dim %lld is not a multiple of head_dim %d",
                           l, q_dim, c.head_dim);
    }
    DecoderShape s;
    s.hidden = c.model_dim;
    s.head_dim = c.head_dim;
    s.heads = static_cast<int>(q_dim / c.head_dim);
    s.kv_heads = s.heads / c.gqa_groups;
    s.ffn = static_cast<int>(ffn_dim);
    s.eps = c.eps;
    out->push_back(s);
  }
  return Status::ok();
}

}  // namespace tokenless::blocks
