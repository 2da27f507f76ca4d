#pragma once
// BLT assembled from the kernels (models/blt.cuh), bf16, against the host
// model (models/blt_host.hpp) run in fp32 on the same bf16-rounded weights,
// on the transformers fixtures (tests/fixtures/models/blt: k 2, n-grams 3–5
// with 2 hash functions, windows, a projected global; blt_k4: k 4, n-grams
// 3–8, max_patch_length 4, encoder cross-attention after every layer):
//   * entropies within bf16's error of the host's;
//   * the patches exactly those BLT's rule cuts from the kernels' own
//     entropies (the fixtures' thresholds sit 1e-3 nats from an entropy, so
//     bf16 may move a boundary: the rule is checked, not the fp32 cut);
//   * the logits, given those patches, within a bf16 tolerance of the host's;
//   * the greedy next byte of each uncached step the host's wherever the
//     host's top-2 margin exceeds twice the tolerance.
#include "../support/margin.hpp"
#include "../support/testbed.hpp"

#include <tokenless/models/blt.cuh>
#include <tokenless/models/blt_host.hpp>
#include <tokenless/reference/heads.hpp>
#include <tokenless/reference/patcher.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace tlt::blt_tests {

namespace io = tokenless::io;
namespace models = tokenless::models;
using Bf16 = __nv_bfloat16;
using FixtureDims = tokenless::attention::HeadDims<64, 128>;

inline const std::string kFixtures = std::string(TOKENLESS_SOURCE_DIR) + "/tests/fixtures/models/";

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Every weight rounded to bf16, as the kernels store them.
inline void round_to_bf16(io::BltWeights<float>& w) {
  auto r = [](std::vector<float>& t) {
    for (auto& v : t) v = tokenless::round_trip<Bf16>(v);
  };
  for (auto* t : {&w.patcher_embed, &w.patcher_norm, &w.patcher_head, &w.byte_embed, &w.hash_embed,
                  &w.encoder_projection, &w.global_projection, &w.decoder_projection, &w.decoder_norm, &w.lm_head}) {
    r(*t);
  }
  for (auto* stack : {&w.patcher_layers, &w.encoder_layers, &w.global_layers, &w.decoder_layers}) {
    for (auto& l : *stack) {
      for (auto* t : {&l.attn_norm, &l.wqkv, &l.wo, &l.mlp_norm, &l.w_gate_up, &l.w_down}) r(*t);
    }
  }
  for (auto* cross : {&w.encoder_cross, &w.decoder_cross}) {
    for (auto& x : *cross) {
      for (auto* t : {&x.q_norm, &x.kv_norm, &x.wq, &x.wkv, &x.wo}) r(*t);
    }
  }
}

// The patches transformers would cut from these entropies, and whether the
// last is complete (BltHost::patch_lengths' rule).
inline models::BltHost::Patches patches_from(const io::BltConfig& c, const std::vector<float>& h) {
  models::BltHost::Patches p;
  const auto n = static_cast<std::int64_t>(h.size());
  if (c.patching == io::BltPatching::kByte) {
    p.lengths.assign(static_cast<std::size_t>(n), 1);
    p.last_complete = true;
    return p;
  }
  tokenless::reference::BltEntropyOptions o;
  o.threshold = c.threshold;
  o.max_patch_length = c.max_patch_length;
  p.lengths = tokenless::reference::blt_entropy_patch_lengths(h, o);
  p.last_complete = c.max_patch_length == 0 && (n == 1 || h[n - 1] > c.threshold);
  return p;
}

template <class Enc>
void check_fixture(const char* name, bool byte_patches = false, int steps = 3) {
  CAPTURE(name);
  CAPTURE(byte_patches);
  const std::string dir = kFixtures + name;
  const auto expected = nlohmann::json::parse(slurp(dir + "/expected.json"));
  io::BltWeights<float> w;
  REQUIRE_OK(io::load_blt_weights(dir, &w));
  if (byte_patches) w.config.patching = io::BltPatching::kByte;
  round_to_bf16(w);
  const io::BltConfig& c = w.config;
  std::unique_ptr<models::BltModel<Bf16, Enc, FixtureDims>> m;
  std::vector<std::int32_t> seq = expected["prompt"].get<std::vector<std::int32_t>>();
  if (tlt::scale_down() > 1) seq.resize(24);
  REQUIRE_OK((models::BltModel<Bf16, Enc, FixtureDims>::create(w, static_cast<std::int64_t>(seq.size()) + steps, &m)));
  models::BltHost host(w);
  for (int step = 0; step <= steps; ++step) {
    CAPTURE(step);
    REQUIRE_OK(m->forward(seq));
    REQUIRE_OK(m->read_status());
    std::vector<float> h, logits;
    std::vector<std::int64_t> lengths;
    REQUIRE_OK(m->entropies(h));
    REQUIRE_OK(m->logits(logits));
    REQUIRE_OK(m->patch_lengths(lengths));
    const auto n = static_cast<std::int64_t>(seq.size());
    if (c.patching == io::BltPatching::kEntropy) {
      // Entropies: bf16 activations through the entropy model's two layers
      // and head; nats, |H| <= ln 260 = 5.6, so 0.02 nats is ~1 bf16 rounding
      // of the largest entropy (measured: 0.002-0.004).
      const std::vector<float> want = host.entropies(seq);
      double err = 0;
      for (std::int64_t i = 0; i < n; ++i) err = std::max(err, std::fabs(double(h[i]) - want[i]));
      INFO("entropy error " << err);
      CHECK(err <= 0.02);
    }
    const models::BltHost::Patches p = patches_from(c, h);
    CHECK(lengths == p.lengths);
    const std::vector<float> truth = host.forward(seq, nullptr, &p);
    REQUIRE(truth.size() == logits.size());
    double err = 0, scale = 0;
    for (std::size_t i = 0; i < truth.size(); ++i) {
      err = std::max(err, std::fabs(double(logits[i]) - truth[i]));
      scale = std::max(scale, std::fabs(double(truth[i])));
    }
    // bf16 rounds each of the model's ~30 stored activations (2^-8
    // relative, a random walk of about sqrt(30) = 5.5 of them): 8 unit
    // roundoffs of the logits' scale (measured: 0.045-0.059 of 0.115-0.136).
    const double tol = 8 * std::ldexp(1.0, -8) * scale;
    INFO("logit error " << err << " (tolerance " << tol << ", scale " << scale << ")");
    CHECK(err <= tol);
    std::int32_t next = -1;
    REQUIRE_OK(m->next(&next));
    const float* last = truth.data() + (n - 1) * 260;
    const auto want_next = static_cast<std::int32_t>(std::max_element(last, last + 260) - last);
    if (tlt::top2_margin(last, 260) > 2 * tol) CHECK(next == want_next);
    const float* dev_last = logits.data() + (n - 1) * 260;
    CHECK(next == static_cast<std::int32_t>(std::max_element(dev_last, dev_last + 260) - dev_last));
    seq.push_back(next);
  }
}

// Cached generation (prefill, then a step a byte) against the uncached
// forward of the whole sequence at every step, on the same kernels: the
// logits within the bf16 tolerance (the two differ only in the order of
// sums and where they round), the patches and the greedy bytes equal.
template <class Enc>
void check_cached(const char* name, bool byte_patches, std::size_t prompt_bytes, int steps) {
  CAPTURE(name);
  CAPTURE(byte_patches);
  CAPTURE(prompt_bytes);
  const std::string dir = kFixtures + name;
  const auto expected = nlohmann::json::parse(slurp(dir + "/expected.json"));
  io::BltWeights<float> w;
  REQUIRE_OK(io::load_blt_weights(dir, &w));
  if (byte_patches) w.config.patching = io::BltPatching::kByte;
  using Model = models::BltModel<Bf16, Enc, FixtureDims>;
  std::vector<std::int32_t> seq = expected["prompt"].get<std::vector<std::int32_t>>();
  seq.resize(1 + prompt_bytes);
  const std::int64_t cap = static_cast<std::int64_t>(seq.size()) + steps + 1;
  std::unique_ptr<Model> cached, rerun;
  REQUIRE_OK(Model::create(w, cap, &cached));
  REQUIRE_OK(Model::create(w, cap, &rerun));
  REQUIRE_OK(cached->prefill(seq));
  std::vector<float> a, b;
  std::vector<std::int64_t> pa, pb;
  for (int step = 0; step <= steps; ++step) {
    CAPTURE(step);
    if (step > 0) {
      std::int32_t next = -1;
      REQUIRE_OK(cached->next(&next));
      seq.push_back(next);
      REQUIRE_OK(cached->step(next));
    }
    REQUIRE_OK(rerun->forward(seq));
    REQUIRE_OK(cached->logits(a));
    REQUIRE_OK(rerun->logits(b));
    if (step > 0) b.erase(b.begin(), b.end() - 260);  // the rerun's last row
    REQUIRE(a.size() == b.size());
    double err = 0, scale = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      err = std::max(err, std::fabs(double(a[i]) - b[i]));
      scale = std::max(scale, std::fabs(double(b[i])));
    }
    const double tol = 8 * std::ldexp(1.0, -8) * scale;
    INFO("cached vs rerun: logit error " << err << " (tolerance " << tol << ")");
    CHECK(err <= tol);
    REQUIRE_OK(cached->patch_lengths(pa));
    REQUIRE_OK(rerun->patch_lengths(pb));
    CHECK(pa == pb);
    std::int32_t x = -1, y = -1;
    REQUIRE_OK(cached->next(&x));
    REQUIRE_OK(rerun->next(&y));
    const float* last = b.data() + b.size() - 260;
    if (tlt::top2_margin(last, 260) > 2 * err) CHECK(x == y);
  }
  REQUIRE_OK(cached->read_status());
  // One global step a completed patch.
  CHECK(cached->global_steps() <= static_cast<std::int64_t>(pb.size()));
  CHECK(cached->global_steps() >= static_cast<std::int64_t>(pb.size()) - 1);
  if (std::string(name) == "blt_k4" && prompt_bytes > 0 && !byte_patches) CHECK(cached->rollbacks() > 0);
}

// A batch of prompts (BOS alone to the whole fixture prompt) through one
// model: the forward, the prefill and every step (some streams sitting out
// some steps) against each prompt alone on its own model, and seeded
// sampling keyed by (seed, position, stream) through the byte head.
template <class Enc>
void check_batch(const char* name, bool byte_patches, int steps) {
  CAPTURE(name);
  CAPTURE(byte_patches);
  const std::string dir = kFixtures + name;
  const auto expected = nlohmann::json::parse(slurp(dir + "/expected.json"));
  io::BltWeights<float> w;
  REQUIRE_OK(io::load_blt_weights(dir, &w));
  if (byte_patches) w.config.patching = io::BltPatching::kByte;
  using Model = models::BltModel<Bf16, Enc, FixtureDims>;
  const auto full = expected["prompt"].get<std::vector<std::int32_t>>();
  std::vector<std::vector<std::int32_t>> prompts;
  for (std::size_t bytes : {std::size_t{9}, std::size_t{0}, full.size() - 1, std::size_t{20}}) {
    prompts.emplace_back(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(1 + std::min(bytes, full.size() - 1)));
  }
  const auto B = static_cast<std::int64_t>(prompts.size());
  const std::int64_t cap = static_cast<std::int64_t>(full.size()) + steps + 1;
  std::unique_ptr<Model> batch;
  REQUIRE_OK(Model::create(w, cap, &batch, B));
  std::vector<std::unique_ptr<Model>> alone(static_cast<std::size_t>(B));
  for (auto& m : alone) REQUIRE_OK(Model::create(w, cap, &m));
  auto close = [](const std::vector<float>& a, const std::vector<float>& b) {
    REQUIRE(a.size() == b.size());
    double err = 0, scale = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      err = std::max(err, std::fabs(double(a[i]) - b[i]));
      scale = std::max(scale, std::fabs(double(b[i])));
    }
    // The same kernels over other row counts: GEMMs may pick other
    // algorithms on a GPU (the executor's are bitwise the same).
    const double tol = 8 * std::ldexp(1.0, -8) * scale;
    INFO("batch vs alone: logit error " << err << " (tolerance " << tol << ")");
    CHECK(err <= tol);
  };
  // 1. The uncached forward.
  REQUIRE_OK(batch->forward(prompts));
  REQUIRE_OK(batch->read_status());
  std::vector<std::int32_t> next;
  REQUIRE_OK(batch->next(next));
  for (std::int64_t b = 0; b < B; ++b) {
    CAPTURE(b);
    REQUIRE_OK(alone[b]->forward(prompts[b]));
    std::vector<float> x, y;
    std::vector<std::int64_t> px, py;
    REQUIRE_OK(batch->logits(b, x));
    REQUIRE_OK(alone[b]->logits(y));
    close(x, y);
    REQUIRE_OK(batch->patch_lengths(b, px));
    REQUIRE_OK(alone[b]->patch_lengths(py));
    CHECK(px == py);
    std::int32_t id = -1;
    REQUIRE_OK(alone[b]->next(&id));
    const float* last = y.data() + y.size() - 260;
    if (tlt::top2_margin(last, 260) > 1e-2) CHECK(next[b] == id);
  }
  // 2. Cached: the prefill and steps, stream b sitting out every step s
  //    with (s + b) % 3 == 2.
  REQUIRE_OK(batch->prefill(prompts));
  for (std::int64_t b = 0; b < B; ++b) REQUIRE_OK(alone[b]->prefill(prompts[b]));
  for (int step = 1; step <= steps; ++step) {
    CAPTURE(step);
    REQUIRE_OK(batch->next(next));
    std::vector<std::int32_t> ids(static_cast<std::size_t>(B), -1);
    for (std::int64_t b = 0; b < B; ++b) {
      if ((step + b) % 3 == 2) continue;
      std::int32_t id = -1;
      REQUIRE_OK(alone[b]->next(&id));
      ids[b] = id;  // each stream follows its lone run (a near-tie may pick another byte in the batch)
      REQUIRE_OK(alone[b]->step(id));
    }
    REQUIRE_OK(batch->step(ids));
    for (std::int64_t b = 0; b < B; ++b) {
      if (ids[b] < 0) continue;
      CAPTURE(b);
      std::vector<float> x, y;
      REQUIRE_OK(batch->logits(b, x));
      REQUIRE_OK(alone[b]->logits(y));
      close(x, y);
    }
  }
  REQUIRE_OK(batch->read_status());
  for (std::int64_t b = 0; b < B; ++b) {
    CAPTURE(b);
    std::vector<std::int64_t> px, py;
    REQUIRE_OK(batch->patch_lengths(b, px));
    REQUIRE_OK(alone[b]->patch_lengths(py));
    CHECK(px == py);
    CHECK(batch->length(b) == alone[b]->length());
    CHECK(batch->global_steps(b) == alone[b]->global_steps());
    CHECK(batch->rollbacks(b) == alone[b]->rollbacks());
  }
  // 3. Sampling: stream b's byte at position t is heads::Sampling's draw
  //    with offset t and row b over its logits (where rounding cannot flip it).
  tokenless::heads::Sampling sp{0.8f, 0.9f, 7, 0};
  REQUIRE_OK(batch->set_sampling(sp));
  REQUIRE_OK(batch->prefill(prompts));
  int compared = 0;
  for (int step = 0; step < 3; ++step) {
    REQUIRE_OK(batch->next(next));
    for (std::int64_t b = 0; b < B; ++b) {
      std::vector<float> z;
      REQUIRE_OK(batch->logits(b, z));
      auto k = sp;
      k.offset = static_cast<std::uint64_t>(batch->length(b));
      float margin = 0;
      const auto want = tokenless::reference::heads::sample(z.data() + z.size() - 260, 260, k, b, &margin);
      if (margin > 1e-4f) {
        CHECK(next[b] == want);
        ++compared;
      }
    }
    REQUIRE_OK(batch->step(next));
  }
  CHECK(compared >= 3 * B / 2);
  CHECK(batch->set_sampling({-1.0f, 1.0f, 0, 0}).code() == tokenless::StatusCode::invalid_argument);
}

// An FFN width that is not a multiple of 8 (BLT-1B's encoder: 2730) runs
// padded: the fixture's encoder and decoder FFNs widened by 3 with zero
// rows and columns (the same function) give the fixture's logits.
inline void check_ffn_padding() {
  const std::string dir = kFixtures + "blt";
  io::BltWeights<float> w;
  REQUIRE_OK(io::load_blt_weights(dir, &w));
  io::BltWeights<float> wide = w;
  for (auto [st, layers] : {std::pair{&wide.config.encoder, &wide.encoder_layers}, std::pair{&wide.config.decoder, &wide.decoder_layers}}) {
    const auto D = static_cast<std::size_t>(st->hidden), F = static_cast<std::size_t>(st->intermediate), G = F + 3;
    for (auto& l : *layers) {
      std::vector<float> gu(2 * G * D, 0.0f), down(D * G, 0.0f);
      for (std::size_t h = 0; h < 2; ++h) std::copy_n(l.w_gate_up.begin() + h * F * D, F * D, gu.begin() + h * G * D);
      for (std::size_t r = 0; r < D; ++r) std::copy_n(l.w_down.begin() + r * F, F, down.begin() + r * G);
      l.w_gate_up = std::move(gu);
      l.w_down = std::move(down);
    }
    st->intermediate = static_cast<int>(G);
  }
  using Model = models::BltModel<Bf16, models::BltEncoderSmall, FixtureDims>;
  std::unique_ptr<Model> a, b;
  REQUIRE_OK(Model::create(w, 32, &a));
  REQUIRE_OK(Model::create(wide, 32, &b));
  const auto expected = nlohmann::json::parse(slurp(dir + "/expected.json"));
  auto seq = expected["prompt"].get<std::vector<std::int32_t>>();
  seq.resize(24);
  REQUIRE_OK(a->forward(seq));
  REQUIRE_OK(b->forward(seq));
  std::vector<float> x, y;
  REQUIRE_OK(a->logits(x));
  REQUIRE_OK(b->logits(y));
  REQUIRE(x.size() == y.size());
  double err = 0, scale = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    err = std::max(err, std::fabs(double(x[i]) - y[i]));
    scale = std::max(scale, std::fabs(double(x[i])));
  }
  CHECK(err <= 8 * std::ldexp(1.0, -8) * scale);  // the executor's: 0 (zeros added to fp32 sums)
}

inline void check_bad_input() {
  const std::string dir = kFixtures + "blt";
  io::BltWeights<float> w;
  REQUIRE_OK(io::load_blt_weights(dir, &w));
  using Small = models::BltEncoderSmall;
  std::unique_ptr<models::BltModel<Bf16, Small, FixtureDims>> m;
  // A config another policy serves is refused by name.
  std::unique_ptr<models::BltModel<Bf16, models::BltEncoder1B, FixtureDims>> other;
  const auto s = models::BltModel<Bf16, models::BltEncoder1B, FixtureDims>::create(w, 16, &other);
  CHECK(s.code() == tokenless::StatusCode::unsupported);
  CHECK(std::string(s.message()).find("hash embedding") != std::string::npos);
  REQUIRE_OK((models::BltModel<Bf16, Small, FixtureDims>::create(w, 16, &m)));
  CHECK(m->forward(std::vector<std::int32_t>{}).code() == tokenless::StatusCode::invalid_argument);
  CHECK(m->step(5).code() == tokenless::StatusCode::invalid_argument);  // no prefill
  REQUIRE_OK(m->prefill(std::vector<std::int32_t>(16, 5)));
  CHECK(m->step(5).code() == tokenless::StatusCode::capacity_too_small);  // the caches are full
  REQUIRE_OK(m->prefill({1, 5}));
  CHECK(m->step(260).code() == tokenless::StatusCode::invalid_argument);
  // Batches: more prompts than max_batch, an id count that is not the
  // prefill's streams, a step with no stream stepping.
  using Batch = std::vector<std::vector<std::int32_t>>;
  CHECK(m->prefill(Batch{{1, 5}, {1, 6}}).code() == tokenless::StatusCode::invalid_argument);
  CHECK(m->step(std::vector<std::int32_t>{5, 5}).code() == tokenless::StatusCode::invalid_argument);
  CHECK(m->step(std::vector<std::int32_t>{-1}).code() == tokenless::StatusCode::invalid_argument);
  REQUIRE_OK(m->step(std::vector<std::int32_t>{5}));
  CHECK(m->forward(std::vector<std::int32_t>(17, 5)).code() == tokenless::StatusCode::invalid_argument);
  const auto bad = m->forward({1, 300});
  CHECK(bad.code() == tokenless::StatusCode::invalid_argument);
  CHECK(std::string(bad.message()).find("300") != std::string::npos);
}

}  // namespace tlt::blt_tests

TEST_CASE("models: BLT on the kernels (bf16) matches the host model, k 2 with n-grams 3-5 and windows") {
  tlt::blt_tests::check_fixture<tokenless::models::BltEncoderSmall>("blt");
}
TEST_CASE("models: BLT on the kernels (bf16) matches the host model, k 4, max_patch_length, n-grams 3-8") {
  tlt::blt_tests::check_fixture<tokenless::models::BltEncoder1B>("blt_k4");
}
TEST_CASE("models: BLT on the kernels with byte patching") {
  tlt::blt_tests::check_fixture<tokenless::models::BltEncoderSmall>("blt", /*byte_patches=*/true, 1);
}
TEST_CASE("models: BLT's cached generation on the kernels equals the uncached reruns at every kind of boundary") {
  using tokenless::models::BltEncoder1B;
  using tokenless::models::BltEncoderSmall;
  const int steps = tlt::scale_down() > 1 ? 4 : 12;
  tlt::blt_tests::check_cached<BltEncoderSmall>("blt", false, 20, steps);   // threshold boundaries
  tlt::blt_tests::check_cached<BltEncoder1B>("blt_k4", false, 20, steps);   // max_patch_length: rollbacks
  tlt::blt_tests::check_cached<BltEncoderSmall>("blt", true, 5, 4);         // byte patching
  tlt::blt_tests::check_cached<BltEncoderSmall>("blt", false, 0, 4);        // BOS alone: the first patches
}
TEST_CASE("models: BLT on the kernels batches prompts of every length, each as alone, and samples by (seed, position, stream)") {
  const int steps = tlt::scale_down() > 1 ? 3 : 8;
  tlt::blt_tests::check_batch<tokenless::models::BltEncoderSmall>("blt", false, steps);
  tlt::blt_tests::check_batch<tokenless::models::BltEncoder1B>("blt_k4", false, steps);  // rollbacks
  tlt::blt_tests::check_batch<tokenless::models::BltEncoderSmall>("blt", true, 3);
}
TEST_CASE("models: BLT on the kernels runs an FFN width that is not a multiple of 8 (padded with zeros)") {
  tlt::blt_tests::check_ffn_padding();
}
TEST_CASE("models: BLT on the kernels refuses bad input by name") { tlt::blt_tests::check_bad_input(); }
