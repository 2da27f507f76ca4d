// The assembled BLT on the host (models/blt_host.hpp) against transformers'
// BltForCausalLM on tiny random checkpoints (scripts/make_blt_fixtures.py:
// tests/fixtures/models/blt and blt_k4): the prompt's logits within 4×
// transformers' own fp32 error of its float64 run, the entropy model's
// patches, the greedy bytes exactly; the loader's messages on bad configs.
#include "npy.hpp"
#include "require_ok.hpp"

#include <tokenless/io/blt_weights.hpp>
#include <tokenless/models/blt_generate.hpp>
#include <tokenless/models/blt_host.hpp>

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace io = tokenless::io;
using tokenless::StatusCode;

namespace {

const std::string kFixtures = std::string(TOKENLESS_SOURCE_DIR) + "/tests/fixtures/models/";

using tlt::read_npy;
using tlt::slurp;

std::string config_with(const std::string& dir, const std::function<void(nlohmann::json&)>& edit) {
  auto j = nlohmann::json::parse(slurp(dir + "/config.json"));
  edit(j);
  return j.dump();
}

// A fixture's weights, and prefixes of its prompt of the given lengths (0: the whole prompt).
std::vector<std::vector<std::int32_t>> load_prefixes(const char* name, io::BltWeights<float>& w,
                                                     std::initializer_list<std::size_t> lengths) {
  const std::string dir = kFixtures + name;
  REQUIRE_OK(io::load_blt_weights(dir, &w));
  const auto full = nlohmann::json::parse(slurp(dir + "/expected.json"))["prompt"].get<std::vector<std::int32_t>>();
  std::vector<std::vector<std::int32_t>> out;
  for (std::size_t n : lengths) out.emplace_back(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n ? n : full.size()));
  return out;
}

}  // namespace

TEST_CASE("blt: logits, patches and greedy bytes match transformers' BltForCausalLM") {
  for (const char* name : {"blt", "blt_k4"}) {
    CAPTURE(name);
    const std::string dir = kFixtures + name;
    const auto expected = nlohmann::json::parse(slurp(dir + "/expected.json"));
    io::BltWeights<float> w;
    REQUIRE_OK(io::load_blt_weights(dir, &w));
    REQUIRE_OK(tokenless::models::BltHost::check(w.config));
    CHECK(w.config.threshold == doctest::Approx(expected["threshold"].get<double>()).epsilon(1e-7));
    tokenless::models::BltHost m(w);
    const auto prompt = expected["prompt"].get<std::vector<std::int32_t>>();
    std::vector<std::int64_t> lengths;
    const std::vector<float> logits = m.forward(prompt, &lengths);
    CHECK(lengths == expected["patch_lengths_prompt"].get<std::vector<std::int64_t>>());
    // Entropies against transformers' float64 run, within fp32's error.
    const auto want_h = expected["entropies_full"].get<std::vector<double>>();
    const std::vector<float> h = m.entropies(prompt);
    for (std::size_t i = 0; i < h.size(); ++i) CHECK(std::fabs(h[i] - want_h[i]) <= 1e-4);
    const auto truth = read_npy(dir + "/logits_fp64.npy"), hf32 = read_npy(dir + "/logits_fp32.npy");
    REQUIRE(truth.size() == logits.size());
    double ours = 0, theirs = 0, scale = 0;
    for (std::size_t i = 0; i < truth.size(); ++i) {
      ours = std::max(ours, std::fabs(logits[i] - truth[i]));
      theirs = std::max(theirs, std::fabs(hf32[i] - truth[i]));
      scale = std::max(scale, std::fabs(truth[i]));
    }
    INFO("fp32 error: ours " << ours << ", transformers " << theirs << ", scale " << scale);
    CHECK(ours <= 4 * theirs + 4 * 5.96e-8 * scale);
    // Greedy bytes exactly (every step's margin is far above both errors), and
    // the patches of the whole sequence.
    std::vector<float> first;
    const auto want = expected["generated"].get<std::vector<std::int32_t>>();
    const auto gen = m.generate(prompt, static_cast<int>(want.size()), /*ignore_eos=*/true, &first);
    CHECK(gen == want);
    CHECK(first == logits);
    std::vector<std::int32_t> full = prompt;
    full.insert(full.end(), gen.begin(), gen.end());
    CHECK(m.patch_lengths(full) == expected["patch_lengths_full"].get<std::vector<std::int64_t>>());
  }
}

TEST_CASE("blt: configs the library cannot run, or that are not BLT's, are refused by name") {
  const std::string dir = kFixtures + "blt";
  io::BltConfig c;
  REQUIRE_OK(io::BltConfig::parse(slurp(dir + "/config.json"), &c));
  CHECK(c.k == 2);
  CHECK(c.encoder.window == 8);
  CHECK(c.patcher.window == 6);
  CHECK(c.global.window == 0);
  CHECK(c.tables() == 6);
  CHECK(c.global_projection);
  CHECK(!c.encoder_cross_all);
  CHECK(c.decoder_cross_all);
  struct Case {
    const char* what;
    std::function<void(nlohmann::json&)> edit;
    const char* message;
  };
  const Case cases[] = {
      {"another family", [](auto& j) { j["architectures"] = {"LlamaForCausalLM"}; }, "only BltForCausalLM"},
      {"not blt", [](auto& j) { j["model_type"] = "llama"; }, "model_type is not \"blt\""},
      {"mode", [](auto& j) { j["patching_mode"] = "space"; }, "patching_mode 'space'"},
      {"no threshold", [](auto& j) { j.erase("patching_threshold"); }, "patching_threshold"},
      {"NaN threshold", [](auto& j) { j["patching_threshold"] = nullptr; }, "patching_threshold"},
      {"vocab", [](auto& j) { j["vocab_size"] = 300; }, "vocab_size 300"},
      {"k", [](auto& j) { j["encoder_config"]["cross_attn_k"] = 3; }, "encoder_config.cross_attn_k 3"},
      {"global width", [](auto& j) { j["decoder_config"]["hidden_size_global"] = 64; }, "hidden_size_global 64"},
      {"activation", [](auto& j) { j["global_config"]["hidden_act"] = "gelu"; }, "global_config.hidden_act 'gelu'"},
      {"rope", [](auto& j) { j["patcher_config"]["rope_parameters"]["rope_type"] = "yarn"; }, "patcher_config"},
      {"heads", [](auto& j) { j["encoder_config"]["num_attention_heads"] = 3; }, "encoder_config: hidden_size 128"},
      {"missing stack", [](auto& j) { j.erase("global_config"); }, "missing \"global_config\""},
      {"patch length", [](auto& j) { j["max_patch_length"] = -1; }, "max_patch_length -1"},
      {"window", [](auto& j) { j["local_attention_window_len"] = 0; }, "local_attention_window_len"},
      {"ngrams", [](auto& j) { j["encoder_hash_byte_group_size"] = {3, 0}; }, "encoder_hash_byte_group_size"},
      {"tied", [](auto& j) { j["tie_word_embeddings"] = true; }, "tie_word_embeddings"},
  };
  for (const auto& k : cases) {
    CAPTURE(k.what);
    io::BltConfig out;
    const auto s = io::BltConfig::parse(config_with(dir, k.edit), &out);
    REQUIRE(!s);
    CHECK(std::string(s.message()).find(k.message) != std::string::npos);
  }
  // Byte patching: any mode but entropy with the patcher gives a patch a byte.
  REQUIRE_OK(io::BltConfig::parse(config_with(dir, [](auto& j) { j["patch_in_forward"] = false; }), &c));
  CHECK(c.patching == io::BltPatching::kByte);
  // A missing tensor and a wrong shape are named.
  io::BltWeights<float> w;
  CHECK(io::load_blt_weights(kFixtures + "llama", &w).code() != StatusCode::ok);
}


TEST_CASE("blt: cached generation equals the uncached reruns at every kind of patch boundary") {
  struct Case {
    const char* fixture;
    bool byte_patches;
    int max_patch_length;  // -1: the checkpoint's
    std::size_t prompt_bytes;  // of the fixture's prompt (0: BOS alone)
  };
  // blt: threshold boundaries (no max_patch_length); blt_k4: max_patch_length 4's
  // splits, where the last byte's patch completes a step late (a rollback);
  // byte patching; prompts of BOS alone and BOS + 1 byte (the first patches).
  const Case cases[] = {{"blt", false, -1, 57}, {"blt_k4", false, -1, 57}, {"blt", false, 3, 20},
                        {"blt", true, -1, 10},  {"blt", false, -1, 1},   {"blt_k4", false, -1, 0}};
  for (const auto& k : cases) {
    CAPTURE(k.fixture);
    CAPTURE(k.byte_patches);
    CAPTURE(k.max_patch_length);
    CAPTURE(k.prompt_bytes);
    const std::string dir = kFixtures + k.fixture;
    const auto expected = nlohmann::json::parse(slurp(dir + "/expected.json"));
    io::BltWeights<float> w;
    REQUIRE_OK(io::load_blt_weights(dir, &w));
    if (k.byte_patches) w.config.patching = io::BltPatching::kByte;
    if (k.max_patch_length >= 0) w.config.max_patch_length = k.max_patch_length;
    auto prompt = expected["prompt"].get<std::vector<std::int32_t>>();
    prompt.resize(1 + k.prompt_bytes);
    tokenless::models::BltHost truth(w);
    tokenless::models::BltStream stream(w);
    std::vector<std::int32_t> seq = prompt;
    std::vector<float> logits = stream.append(prompt, /*last_only=*/false);
    const std::vector<float> all = truth.forward(prompt);
    double scale = 0;
    for (float v : all) scale = std::max(scale, static_cast<double>(std::fabs(v)));
    const double tol = 64 * 5.96e-8 * (1 + scale);  // the same arithmetic, sums in another order
    REQUIRE(logits.size() == all.size());
    for (std::size_t i = 0; i < all.size(); ++i) CHECK(std::fabs(logits[i] - all[i]) <= tol);
    logits.erase(logits.begin(), logits.end() - 260);
    for (int step = 0; step < 16; ++step) {
      CAPTURE(step);
      const std::vector<float> want = truth.forward(seq);
      const float* last = want.data() + want.size() - 260;
      double err = 0;
      for (int v = 0; v < 260; ++v) err = std::max(err, static_cast<double>(std::fabs(logits[v] - last[v])));
      CHECK(err <= tol);
      const auto a = std::max_element(logits.begin(), logits.end()) - logits.begin();
      const auto b = std::max_element(last, last + 260) - last;
      CHECK(a == b);
      CHECK(stream.patch_lengths() == truth.patch_lengths(seq));
      seq.push_back(static_cast<std::int32_t>(b));
      logits = stream.append({static_cast<std::int32_t>(b)});
    }
    // One global step a completed patch, never more.
    const auto lengths = truth.patch_lengths(seq);
    CHECK(stream.global_steps() <= static_cast<std::int64_t>(lengths.size()));
    CHECK(stream.global_steps() >= static_cast<std::int64_t>(lengths.size()) - 1);
    if (std::string(k.fixture) == "blt_k4" && k.prompt_bytes > 0) CHECK(stream.rollbacks() > 0);
    if (std::string(k.fixture) == "blt" && !k.byte_patches && k.max_patch_length < 0) CHECK(stream.rollbacks() == 0);
  }
}

TEST_CASE("blt: a batch of prompts equals each prompt alone, greedy and sampled, cached and not") {
  namespace models = tokenless::models;
  for (const char* name : {"blt", "blt_k4"}) {
    CAPTURE(name);
    io::BltWeights<float> w;
    // Lengths that put the streams at different patch boundaries: BOS alone, a
    // byte, mid-sentence, the whole fixture prompt (0: all of it).
    const auto prompts = load_prefixes(name, w, {1, 2, 13, 0});
    models::BltGenerateOptions o;
    o.max_new_tokens = 10;
    o.ignore_eos = true;
    o.prompt_logits = true;
    std::vector<models::BltOutput> batch;
    REQUIRE_OK(models::blt_generate(w, prompts, o, batch));
    REQUIRE(batch.size() == prompts.size());
    models::BltHost truth(w);
    for (std::size_t b = 0; b < prompts.size(); ++b) {
      CAPTURE(b);
      std::vector<models::BltOutput> alone;
      REQUIRE_OK(models::blt_generate(w, {prompts[b]}, o, alone));
      CHECK(batch[b].generated == alone[0].generated);  // no bleed (the batch decodes its streams together)
      CHECK(batch[b].prompt_logits == alone[0].prompt_logits);
      CHECK(batch[b].patches == alone[0].patches);
      CHECK(batch[b].generated == truth.generate(prompts[b], o.max_new_tokens, true));
    }
    // Sampled: each stream draws with its own row, so stream b equals a
    // plain uncached loop drawing with row b; the cached and uncached paths
    // give the same bytes for the same seed.
    o.sampling.temperature = 1.0f;
    o.sampling.top_p = 0.9f;
    o.sampling.seed = 1234;
    o.prompt_logits = false;
    std::vector<models::BltOutput> sampled, uncached;
    REQUIRE_OK(models::blt_generate(w, prompts, o, sampled));
    o.cache = false;
    REQUIRE_OK(models::blt_generate(w, prompts, o, uncached));
    o.cache = true;
    for (std::size_t b = 0; b < prompts.size(); ++b) {
      CAPTURE(b);
      std::vector<std::int32_t> seq = prompts[b], want;
      for (int i = 0; i < o.max_new_tokens; ++i) {
        const std::vector<float> logits = truth.forward(seq);
        const auto next = models::draw_next(logits.data() + logits.size() - 260, 260, o.sampling,
                                            static_cast<std::int64_t>(seq.size()), static_cast<std::int64_t>(b));
        want.push_back(next);
        seq.push_back(next);
      }
      CHECK(sampled[b].generated == want);
      CHECK(uncached[b].generated == want);
      CHECK(sampled[b].patches == truth.patch_lengths(seq));
    }
    // Different seeds draw different bytes (40 draws at temperature 1 over
    // this model's near-flat rows: equal by chance with odds far below 1e-9).
    std::vector<models::BltOutput> other;
    o.sampling.seed = 1235;
    REQUIRE_OK(models::blt_generate(w, prompts, o, other));
    int differ = 0;
    for (std::size_t b = 0; b < prompts.size(); ++b) differ += other[b].generated != sampled[b].generated;
    CHECK(differ > 0);
    // top_p so small only the most likely byte is kept: greedy.
    o.sampling.top_p = 1e-6f;
    REQUIRE_OK(models::blt_generate(w, prompts, o, other));
    for (std::size_t b = 0; b < prompts.size(); ++b) CHECK(other[b].generated == batch[b].generated);
  }
}

TEST_CASE("blt: generation stops at EOS or the count, and refuses bad options by name") {
  namespace models = tokenless::models;
  const std::string dir = kFixtures + "blt";
  const auto expected = nlohmann::json::parse(slurp(dir + "/expected.json"));
  io::BltWeights<float> w;
  REQUIRE_OK(io::load_blt_weights(dir, &w));
  const auto prompt = expected["prompt"].get<std::vector<std::int32_t>>();
  const auto greedy = expected["generated"].get<std::vector<std::int32_t>>();
  models::BltGenerateOptions o;
  o.max_new_tokens = 8;
  std::vector<models::BltOutput> out;
  // EOS: make the third greedy byte the end-of-sequence id; the stream stops after it.
  w.config.eos = greedy[2];
  REQUIRE_OK(models::blt_generate(w, {prompt, {1}}, o, out));
  CHECK(out[0].generated == std::vector<std::int32_t>(greedy.begin(), greedy.begin() + 3));
  o.ignore_eos = true;
  REQUIRE_OK(models::blt_generate(w, {prompt}, o, out));
  CHECK(out[0].generated == std::vector<std::int32_t>(greedy.begin(), greedy.begin() + 8));
  o.max_new_tokens = 0;
  REQUIRE_OK(models::blt_generate(w, {prompt}, o, out));
  CHECK(out[0].generated.empty());
  CHECK(out[0].patches == expected["patch_lengths_prompt"].get<std::vector<std::int64_t>>());
  struct Case {
    const char* what;
    std::vector<std::vector<std::int32_t>> prompts;
    std::function<void(models::BltGenerateOptions&)> edit;
    const char* message;
  };
  const Case cases[] = {
      {"no prompt", {}, [](auto&) {}, "at least one prompt"},
      {"an empty prompt", {prompt, {}}, [](auto&) {}, "prompt 1 is empty"},
      {"an id beyond 260", {{1, 300}}, [](auto&) {}, "outside BLT's 260"},
      {"a negative count", {prompt}, [](auto& g) { g.max_new_tokens = -1; }, "max_new_tokens"},
      {"positions", {prompt}, [](auto& g) { g.max_new_tokens = 1 << 20; }, "positions"},
      {"NaN temperature", {prompt}, [](auto& g) { g.sampling.temperature = std::nanf(""); }, "sampling.temperature"},
      {"negative temperature", {prompt}, [](auto& g) { g.sampling.temperature = -1; }, "sampling.temperature"},
      {"top_p 0", {prompt}, [](auto& g) { g.sampling.top_p = 0; }, "sampling.top_p"},
      {"top_p above 1", {prompt}, [](auto& g) { g.sampling.top_p = 1.5f; }, "sampling.top_p"},
  };
  for (const auto& k : cases) {
    CAPTURE(k.what);
    models::BltGenerateOptions g;
    k.edit(g);
    out.assign(3, models::BltOutput{});
    out[0].generated = {7};
    const auto s = models::blt_generate(w, k.prompts, g, out);
    REQUIRE(!s);
    CHECK(std::string(s.message()).find(k.message) != std::string::npos);
    CHECK(out.size() == 3);  // nothing changed
    CHECK(out[0].generated == std::vector<std::int32_t>{7});
  }
}

TEST_CASE("blt: self-speculative decoding gives exactly the greedy bytes, with its acceptance counts") {
  namespace models = tokenless::models;
  for (const char* name : {"blt", "blt_k4"}) {
    CAPTURE(name);
    io::BltWeights<float> w;
    const auto prompts = load_prefixes(name, w, {1, 9, 0});
    models::BltGenerateOptions o;
    o.max_new_tokens = 24;
    o.ignore_eos = true;
    std::vector<models::BltOutput> greedy;
    REQUIRE_OK(models::blt_generate(w, prompts, o, greedy));
    for (int D : {1, 3, 6}) {
      CAPTURE(D);
      o.speculative = D;
      std::vector<models::BltOutput> spec;
      REQUIRE_OK(models::blt_generate(w, prompts, o, spec));
      unsigned long long accepted = 0;
      for (std::size_t b = 0; b < prompts.size(); ++b) {
        CAPTURE(b);
        CHECK(spec[b].generated == greedy[b].generated);
        CHECK(spec[b].patches == greedy[b].patches);
        REQUIRE(spec[b].acceptance.size() == static_cast<std::size_t>(D) + 1);
        unsigned long long steps = 0, bytes = 0;
        for (std::size_t a = 0; a < spec[b].acceptance.size(); ++a) {
          steps += spec[b].acceptance[a];
          bytes += (a + 1) * spec[b].acceptance[a];
          if (a > 0) accepted += spec[b].acceptance[a];
        }
        // Each step makes a + 1 bytes; the last byte may come without a step.
        CHECK(bytes <= 24);
        CHECK(bytes + 1 >= 24);
        CHECK(steps >= 24 / (D + 1));
      }
      CHECK(accepted > 0);  // drafts within a patch read the same global output: they agree
    }
  }
  // Refused: sampling, and no caches.
  io::BltWeights<float> w;
  REQUIRE_OK(io::load_blt_weights(kFixtures + "blt", &w));
  models::BltGenerateOptions o;
  o.speculative = 2;
  o.sampling.temperature = 0.7f;
  std::vector<models::BltOutput> out;
  auto s = models::blt_generate(w, {{1, 5}}, o, out);
  CHECK(s.code() == StatusCode::unsupported);
  o.sampling.temperature = 0;
  o.cache = false;
  s = models::blt_generate(w, {{1, 5}}, o, out);
  CHECK(s.code() == StatusCode::unsupported);
  o.cache = true;
  o.speculative = 16;
  CHECK(models::blt_generate(w, {{1, 5}}, o, out).code() == StatusCode::invalid_argument);
}
