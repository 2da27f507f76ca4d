// The checkpoint loader and the plain C++ decoder against transformers'
// golden fixtures (scripts/make_model_fixtures.py: tiny random models of
// four families, tests/fixtures/models): the prompt's logits within the
// naive same-precision tolerance (transformers' own fp32 and bf16 runs are
// the naive implementations, a double-precision run of the decoder the
// truth), greedy ids exactly, the cache equal to no cache, Mixtral's
// load-balancing loss, both Mixtral layouts, both config styles, and
// messages that name what is wrong.
#include "../support/safetensors_writer.hpp"
#include "npy.hpp"
#include "require_ok.hpp"

#include <tokenless/blocks/openelm.hpp>
#include <tokenless/io/model_config.hpp>
#include <tokenless/io/model_weights.hpp>
#include <tokenless/reference/transformer.hpp>

#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace io = tokenless::io;
namespace ref = tokenless::reference;
using tokenless::StatusCode;


namespace {

const std::string kFixtures = std::string(TOKENLESS_SOURCE_DIR) + "/tests/fixtures/models/";

using tlt::slurp;

// A float32 .npy, C order.
std::vector<float> read_npy(const std::string& path) {
  const std::vector<double> d = tlt::read_npy(path);
  return std::vector<float>(d.begin(), d.end());
}

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}

std::vector<std::int32_t> ids_of(const nlohmann::json& j) { return j.get<std::vector<std::int32_t>>(); }

std::string temp_dir(const std::string& tag) {
  const auto d = std::filesystem::temp_directory_path() / ("tokenless_models_" + tag + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d.string();
}

float bf16(float v) { return tokenless::round_trip<__nv_bfloat16>(v); }

}  // namespace

TEST_CASE("models: every family's logits and greedy ids match transformers'") {
  for (const char* family : {"llama", "mistral", "mixtral", "phi3"}) {
    CAPTURE(family);
    const std::string dir = kFixtures + family;
    const auto expected = nlohmann::json::parse(slurp(dir + "/expected.json"));
    io::ModelWeights<float> w;
    REQUIRE_OK(io::load_weights(dir, &w));
    CHECK(std::string(io::to_string(w.config.family)) == expected["architecture"].get<std::string>());
    const auto prompt = ids_of(expected["prompt"]);
    const int V = w.config.vocab;
    // The truth: the same decoder in double.
    ref::HostDecoderT<double> truth_d(w, [](double v) { return v; });
    const std::vector<double> truth = truth_d.forward(prompt);
    double scale = 0;
    for (double v : truth) scale = std::max(scale, std::fabs(v));
    // fp32: within 4x transformers' own fp32 error (and a floor of 4 u).
    ref::HostDecoder ours(w, [](float v) { return v; });
    const auto got = ours.forward(prompt);
    const auto hf32 = read_npy(dir + "/logits_fp32.npy");
    REQUIRE(hf32.size() == got.size());
    const double e32 = max_abs_diff(got, truth), n32 = max_abs_diff(hf32, truth);
    INFO("fp32: ours " << e32 << ", transformers " << n32 << ", scale " << scale);
    CHECK(e32 <= 4 * n32 + 4 * 5.96e-8 * scale);
    // bf16, weights and activations rounded where transformers rounds them.
    ref::HostDecoder ours16(w, bf16);  // the weights are bf16 values already
    const auto got16 = ours16.forward(prompt);
    const auto hf16 = read_npy(dir + "/logits_bf16.npy");
    const double e16 = max_abs_diff(got16, truth), n16 = max_abs_diff(hf16, truth);
    INFO("bf16: ours " << e16 << ", transformers " << n16);
    CHECK(e16 <= 4 * n16 + 4 * 3.9e-3 * scale);
    // Greedy ids with the cache, exactly; and without it (the whole sequence each step).
    const auto want = ids_of(expected["generated"]);
    std::vector<std::int32_t> gen, seq = prompt;
    std::int32_t next = static_cast<std::int32_t>(
        std::max_element(got.end() - V, got.end()) - (got.end() - V));
    for (std::size_t i = 0; i < want.size(); ++i) {
      gen.push_back(next);
      seq.push_back(next);
      const auto step = ours.forward({next});
      next = static_cast<std::int32_t>(std::max_element(step.begin(), step.end()) - step.begin());
    }
    CHECK(gen == want);
    ref::HostDecoder fresh(w, [](float v) { return v; });
    std::vector<std::int32_t> nocache;
    for (std::size_t i = 0; i < want.size(); ++i) {
      fresh.reset();
      const std::vector<std::int32_t> ctx(seq.begin(), seq.begin() + static_cast<std::ptrdiff_t>(prompt.size() + i));
      const auto all = fresh.forward(ctx);
      nocache.push_back(static_cast<std::int32_t>(std::max_element(all.end() - V, all.end()) - (all.end() - V)));
    }
    CHECK(nocache == want);
  }
}

TEST_CASE("models: Mixtral's per-expert Hub layout loads to the same weights as transformers 5's fused one") {
  const std::string src = kFixtures + "mixtral";
  io::ModelWeights<float> fused;
  REQUIRE_OK(io::load_weights(src, &fused));
  const auto& c = fused.config;
  const std::int64_t D = c.hidden, F = c.intermediate;
  // Rewrite the checkpoint with block_sparse_moe.experts.E.w1/w2/w3 (bf16, as the Hub's).
  io::Checkpoint ck;
  REQUIRE_OK(io::Checkpoint::open(src, &ck));
  std::vector<tlt::RawTensor> out;
  auto raw = [&](const io::TensorInfo* t, const std::string& name, std::vector<std::int64_t> shape, std::size_t first,
                 std::size_t count) {
    tlt::RawTensor r{name, t->dtype, std::move(shape), {}};
    r.bytes.assign(t->data + first * 2, t->data + (first + count) * 2);
    out.push_back(std::move(r));
  };
  for (const auto& [name, t] : ck.tensors()) {
    const auto pos = name.find(".mlp.");
    if (pos == std::string::npos) {
      raw(t, name, t->shape, 0, static_cast<std::size_t>(t->numel()));
      continue;
    }
    const std::string layer = name.substr(0, pos) + ".block_sparse_moe.";
    if (name.ends_with("mlp.gate.weight")) {
      raw(t, layer + "gate.weight", t->shape, 0, static_cast<std::size_t>(t->numel()));
    } else if (name.ends_with("gate_up_proj")) {
      for (std::int64_t e = 0; e < c.experts; ++e) {
        const auto base = static_cast<std::size_t>(e * 2 * F * D);
        raw(t, layer + "experts." + std::to_string(e) + ".w1.weight", {F, D}, base, static_cast<std::size_t>(F * D));
        raw(t, layer + "experts." + std::to_string(e) + ".w3.weight", {F, D}, base + static_cast<std::size_t>(F * D),
            static_cast<std::size_t>(F * D));
      }
    } else if (name.ends_with("down_proj")) {
      for (std::int64_t e = 0; e < c.experts; ++e) {
        raw(t, layer + "experts." + std::to_string(e) + ".w2.weight", {D, F}, static_cast<std::size_t>(e * D * F),
            static_cast<std::size_t>(D * F));
      }
    }
  }
  const std::string dir = temp_dir("hub_mixtral");
  tlt::write_file(dir + "/model.safetensors", tlt::safetensors_bytes(out));
  // The Hub's config style: rope_theta at the top, no rope_parameters.
  auto cfg = nlohmann::json::parse(slurp(src + "/config.json"));
  const double theta = cfg["rope_parameters"]["rope_theta"].get<double>();
  cfg.erase("rope_parameters");
  cfg["rope_theta"] = theta;
  tlt::write_file(dir + "/config.json", cfg.dump());
  io::ModelWeights<float> hub;
  REQUIRE_OK(io::load_weights(dir, &hub));
  CHECK(hub.config.rope.theta == fused.config.rope.theta);
  for (std::size_t l = 0; l < fused.layers.size(); ++l) {
    CHECK(hub.layers[l].w_gate_up == fused.layers[l].w_gate_up);
    CHECK(hub.layers[l].w_down == fused.layers[l].w_down);
    CHECK(hub.layers[l].router == fused.layers[l].router);
    CHECK(hub.layers[l].wqkv == fused.layers[l].wqkv);
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("models: both RoPE config styles give Llama 3's table; other rope types are refused by name") {
  const auto v5 = nlohmann::json::parse(slurp(kFixtures + "llama/config.json"));
  io::ModelConfig a, b;
  REQUIRE_OK(io::ModelConfig::parse(v5.dump(), &a));
  auto hub = v5;
  auto rp = hub["rope_parameters"];
  hub.erase("rope_parameters");
  hub["rope_theta"] = rp["rope_theta"];
  rp.erase("rope_theta");
  rp["type"] = rp["rope_type"];  // the older key
  rp.erase("rope_type");
  hub["rope_scaling"] = rp;
  REQUIRE_OK(io::ModelConfig::parse(hub.dump(), &b));
  CHECK(b.rope.type == tokenless::blocks::RopeType::kLlama3);
  CHECK(b.rope.theta == a.rope.theta);
  CHECK(b.rope.factor == a.rope.factor);
  CHECK(b.rope.original_max_position == a.rope.original_max_position);
  // transformers' own table (expected.json) against ours.
  const auto expected = nlohmann::json::parse(slurp(kFixtures + "llama/expected.json"));
  const auto table = expected["inv_freq"].get<std::vector<double>>();
  std::vector<float> ours(table.size());
  REQUIRE_OK(tokenless::blocks::rope_inv_freq(a.rope, a.rot_dim, ours.data()));
  for (std::size_t i = 0; i < table.size(); ++i) CHECK(ours[i] == doctest::Approx(table[i]).epsilon(2e-7));
  hub["rope_scaling"]["type"] = "yarn";
  const auto s = io::ModelConfig::parse(hub.dump(), &b);
  CHECK(s.code() == StatusCode::unsupported);
  CHECK(std::string(s.message()).find("\"yarn\"") != std::string::npos);
}

TEST_CASE("models: an unknown architecture, a missing tensor and a wrong shape are named") {
  const std::string src = kFixtures + "llama";
  auto cfg = nlohmann::json::parse(slurp(src + "/config.json"));
  auto bad = cfg;
  bad["architectures"] = {"GPT2LMHeadModel"};
  io::ModelConfig c;
  auto s = io::ModelConfig::parse(bad.dump(), &c);
  CHECK(s.code() == StatusCode::unsupported);
  CHECK(std::string(s.message()).find("GPT2LMHeadModel") != std::string::npos);
  bad = cfg;
  bad.erase("hidden_size");
  CHECK(std::string(io::ModelConfig::parse(bad.dump(), &c).message()).find("hidden_size") != std::string::npos);
  // A missing tensor, and a shape that disagrees with the config.
  const std::string dir = temp_dir("llama_broken");
  std::filesystem::copy_file(src + "/model.safetensors", dir + "/model.safetensors");
  bad = cfg;
  bad["num_hidden_layers"] = 3;
  tlt::write_file(dir + "/config.json", bad.dump());
  io::ModelWeights<float> w;
  s = io::load_weights(dir, &w);
  CHECK(std::string(s.message()).find("missing tensor 'model.layers.2.input_layernorm.weight'") != std::string::npos);
  bad = cfg;
  bad["intermediate_size"] = 128;
  tlt::write_file(dir + "/config.json", bad.dump());
  s = io::load_weights(dir, &w);
  CHECK(s.code() == StatusCode::shape_mismatch);
  CHECK(std::string(s.message()).find("model.layers.0.mlp.gate_proj.weight") != std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST_CASE("models: DeepSeek-V3-style multi-token modules load after the layers; a missing one is named") {
  const std::string src = kFixtures + "llama_mtp";
  io::ModelWeights<float> w;
  REQUIRE_OK(io::load_weights(src, &w));
  const auto& c = w.config;
  CHECK(c.mtp_modules == 1);
  REQUIRE(w.mtp.size() == 1);
  const std::size_t d = static_cast<std::size_t>(c.hidden);
  CHECK(w.mtp[0].eh_proj.size() == d * 2 * d);
  CHECK(w.mtp[0].enorm.size() == d);
  CHECK(w.mtp[0].shared_norm.size() == d);
  CHECK(w.mtp[0].head.empty());  // the model's lm_head
  CHECK(w.mtp[0].layer.wqkv.size() == w.layers[0].wqkv.size());
  CHECK(w.mtp[0].layer.wqkv != w.layers.back().wqkv);  // its own block, not a layer's
  // Two modules asked for, one stored: the missing one named.
  auto cfg = nlohmann::json::parse(slurp(src + "/config.json"));
  cfg["num_nextn_predict_layers"] = 2;
  const std::string dir = temp_dir("llama_mtp_broken");
  std::filesystem::copy_file(src + "/model.safetensors", dir + "/model.safetensors");
  tlt::write_file(dir + "/config.json", cfg.dump());
  const auto s = io::load_weights(dir, &w);
  CHECK(std::string(s.message()).find("missing tensor 'model.layers.3.enorm.weight'") != std::string::npos);
  cfg["num_nextn_predict_layers"] = -1;
  io::ModelConfig c2;
  CHECK(io::ModelConfig::parse(cfg.dump(), &c2).code() == StatusCode::invalid_argument);
  std::filesystem::remove_all(dir);
}

TEST_CASE("models: Mixtral's load-balancing loss on the prompt matches transformers' aux_loss") {
  const std::string dir = kFixtures + "mixtral";
  const auto expected = nlohmann::json::parse(slurp(dir + "/expected.json"));
  io::ModelWeights<float> w;
  REQUIRE_OK(io::load_weights(dir, &w));
  ref::HostDecoderT<double> d(w, [](double v) { return v; });
  d.record_router_logits(true);
  (void)d.forward(ids_of(expected["prompt"]));
  const auto& logits = d.router_logits();  // [layers · tokens, experts]
  const auto rows = static_cast<std::int64_t>(logits.size() / w.config.experts);
  const double loss = ref::blocks::moe_balance_loss<double>(logits, rows, w.config.experts, w.config.top_k);
  CHECK(loss == doctest::Approx(expected["aux_loss"].get<double>()).epsilon(1e-5));
}

TEST_CASE("models: OpenELM's layer-wise scaling gives the published models' heads and FFN widths") {
  namespace bk = tokenless::blocks;
  struct Want {
    const char* name;
    std::vector<int> heads, kv, ffn;
  };
  // The numbers OpenELMConfig computes (the 270M's heads are those of
  // apple/OpenELM-270M's config.json); 1_1B's FFN repeats 4608 (layers 13
  // and 14: make_divisible rounds 2.25·2048 and 2.37·2048 alike).
  const std::vector<Want> wants{
      {"OpenELM-270M",
       {12, 12, 12, 12, 12, 16, 16, 16, 16, 16, 16, 16, 20, 20, 20, 20},
       {3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5},
       {768, 1024, 1280, 1536, 1792, 2048, 2560, 2816, 3072, 3328, 3584, 3840, 4352, 4608, 4864, 5120}},
      {"OpenELM-1_1B",
       {16, 16, 16, 20, 20, 20, 20, 20, 20, 20, 24, 24, 24, 24, 24, 24, 24, 24, 28, 28, 28, 28, 28, 28, 32, 32, 32, 32},
       {4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 8, 8, 8, 8},
       {1024, 1280, 1536, 1792, 2048, 2304, 2560, 2816, 3072, 3328, 3584, 3840, 4096, 4608,
        4608, 5120, 5376, 5632, 5888, 6144, 6400, 6656, 6912, 7168, 7424, 7680, 7936, 8192}},
      {"OpenELM-3B",
       {12, 12, 12, 12, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
        20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 24, 24, 24, 24, 24, 24},
       {3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6},
       {1536, 1792, 2048, 2560, 2816, 3072, 3328, 3584, 4096, 4352, 4608, 4864, 5120, 5632, 5888, 6144, 6400, 6656,
        7168, 7424, 7680, 7936, 8192, 8704, 8960, 9216, 9472, 9728, 10240, 10496, 10752, 11008, 11264, 11776, 12032,
        12288}},
  };
  for (const Want& w : wants) {
    CAPTURE(w.name);
    bk::OpenElmConfig c;
    REQUIRE(bk::OpenElmConfig::preset(w.name, &c));
    std::vector<bk::DecoderShape> layers;
    REQUIRE_OK(bk::openelm_layers(c, &layers));
    REQUIRE(layers.size() == w.heads.size());
    for (std::size_t l = 0; l < layers.size(); ++l) {
      CAPTURE(l);
      CHECK(layers[l].heads == w.heads[l]);
      CHECK(layers[l].kv_heads == w.kv[l]);
      CHECK(layers[l].ffn == w.ffn[l]);
      CHECK(layers[l].hidden == c.model_dim);
      CHECK(layers[l].head_dim == c.head_dim);
    }
  }
  // Python's round(v, 2): from the exact binary value, ties to even.
  CHECK(bk::detail::python_round2(0.735) == 0.73);
  CHECK(bk::detail::python_round2(0.125) == 0.12);
  CHECK(bk::detail::python_round2(0.7333333333) == 0.73);
  // One multiplier: every layer alike; bad multipliers are named.
  bk::OpenElmConfig u{4, 512, 64, 2, {1.0}, {2.0}};
  std::vector<bk::DecoderShape> ul;
  REQUIRE_OK(bk::openelm_layers(u, &ul));
  for (const auto& s : ul) CHECK((s.heads == 8 && s.kv_heads == 4 && s.ffn == 1024));
  u.qkv_multipliers = {0.5, 0.7, 1.0};
  CHECK(std::string(bk::openelm_layers(u, &ul).message()).find("qkv_multipliers") != std::string::npos);
  u.qkv_multipliers = {1.0};
  u.ffn_multipliers = {-1.0};
  CHECK(std::string(bk::openelm_layers(u, &ul).message()).find("ffn_multipliers") != std::string::npos);
  CHECK(!bk::OpenElmConfig::preset("OpenELM-7B", &u));
}
