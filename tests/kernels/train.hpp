#pragma once
// The kernels' training step (models/llama_train.cuh), bf16, against torch
// (tests/fixtures/train/<family>/, scripts/make_train_fixtures.py), shared
// by the emu and gpu tiers:
//   * step 0's gradient of every parameter against torch's fp32 autograd,
//     within a small multiple of torch's own bf16 autograd's error against
//     it (grads_bf16.safetensors: the naive same-precision run), and the
//     micro-batches' losses;
//   * three AdamW steps with clipping: losses and norms, and the weights;
//   * a rerun gives the same bits; a save's state restored continues as if
//     uninterrupted; a non-finite norm skips the step and changes nothing;
//     activation checkpointing changes no bit; a tied head.
#include "../support/testbed.hpp"
#include "../support/train_recipe.hpp"

#include <tokenless/io/model_weights.hpp>
#include <tokenless/io/safetensors.hpp>
#include <tokenless/models/llama_train.cuh>
#include <tokenless/models/train_data.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace tlt::train_tests {

namespace io = tokenless::io;
namespace models = tokenless::models;
namespace optim = tokenless::optim;
using Bf16 = __nv_bfloat16;
using FixtureDims = tokenless::attention::HeadDims<64, 96>;  // the fixtures' (Phi-3's 96)
using Trainer = models::LlamaTrainer<Bf16, FixtureDims>;

inline std::string dir_of(const char* family) {
  return std::string(TOKENLESS_SOURCE_DIR) + "/tests/fixtures/train/" + family;
}

struct Fixture : tlt::TrainRecipe {
  io::ModelWeights<float> w;
  explicit Fixture(const char* family) : tlt::TrainRecipe(dir_of(family)) { REQUIRE_OK(io::load_weights(dir_of(family), &w)); }
  std::unique_ptr<Trainer> trainer(bool checkpoint = false) const {
    std::unique_ptr<Trainer> t;
    REQUIRE_OK(Trainer::create(w, B, L, A, &t, checkpoint));
    return t;
  }
};

inline std::vector<float> tensor(const io::SafetensorsFile& f, const std::string& name, std::int64_t numel) {
  const io::TensorInfo* t = f.find(name);
  REQUIRE_MESSAGE(t != nullptr, name);
  REQUIRE(t->numel() == numel);
  std::vector<float> v(static_cast<std::size_t>(numel));
  REQUIRE_OK(io::convert(*t, v.data()));
  return v;
}

using tlt::rel_error;

// The bound: torch's bf16 autograd rounds its activations, its GEMM outputs
// and its gradients to bf16 (8 bits: 2⁻⁹ relative each) at its own points;
// the kernels round at theirs (blocks/decoder.cuh: where transformers' bf16
// model rounds, gradients in fp32 across layers). Each tensor's error
// against fp32 must stay within 3x torch's bf16 error, or 2⁻⁸ of its scale
// (one bf16 ulp of the largest element: a tensor torch happens to get
// nearly exact, a norm weight's say, cannot demand better).
inline void gradients_match(const char* family) {
  Fixture f(family);
  auto t = f.trainer();
  models::TrainStep r;
  REQUIRE_OK(t->gradients(f.data, 0, &r));
  for (int m = 0; m < f.A; ++m) {
    const auto& want = f.j["step0_micro_batches"][m];
    // The cross-entropy of bf16 logits: a few bf16 ulps of the loss.
    CHECK(r.micro[m].cross_entropy == doctest::Approx(want["cross_entropy"].get<double>()).epsilon(2e-2));
    if (!want["aux_loss"].is_null()) {
      CHECK(r.micro[m].aux == doctest::Approx(want["aux_loss"].get<double>()).epsilon(2e-2));
    }
  }
  auto g = io::zeros_like(f.w);
  REQUIRE_OK(t->grads(&g));
  io::SafetensorsFile fp32, bf16;
  REQUIRE_OK(io::SafetensorsFile::open(dir_of(family) + "/grads.safetensors", &fp32));
  REQUIRE_OK(io::SafetensorsFile::open(dir_of(family) + "/grads_bf16.safetensors", &bf16));
  double worst = 0;
  for (const auto& v : io::parameter_views(g)) {
    const auto truth = tensor(fp32, v.name, v.numel());
    const auto naive = tensor(bf16, v.name, v.numel());
    const double e = rel_error(v.data, truth.data(), v.numel());
    const double e_naive = rel_error(naive.data(), truth.data(), v.numel());
    INFO(std::string(family) << " " << v.name << ": error " << e << ", torch bf16's " << e_naive);
    CHECK(std::isfinite(e));
    CHECK(e <= std::fmax(3 * e_naive, 0x1.0p-8));
    worst = std::fmax(worst, e / std::fmax(e_naive, 0x1.0p-8));
  }
  MESSAGE(std::string(family) << ": worst gradient error, in units of torch bf16's, " << worst);
}

// Three steps against torch's fp32 run (after3), bounded by how far torch's
// own naive mixed precision lands from it (after3_bf16: fp32 masters and
// AdamW, bf16 forward and backward; train.json's bf16_steps): each loss and
// norm within 3x torch mixed's distance (or 2e-3 of it: bf16 logits' own
// noise), each tensor's worst element and mean error within 3x torch
// mixed's, or 2.5 lr and 0.01 lr. The floor: Adam's step is about lr ·
// sign(g) whatever |g|, so an element whose gradient is below bf16's noise
// (near zero after a cancellation) moves about 2 lr the wrong way if either
// run rounds it across zero, at any of the steps; which elements flip is
// luck (torch mixed flips some of Mixtral's norm weights by 1.5 lr, the
// kernels others by 2). Such elements are few: the mean stays small.
inline void trajectory_matches(const char* family) {
  Fixture f(family);
  auto t = f.trainer();
  const auto& steps = f.j["steps"];
  const auto& mixed = f.j["bf16_steps"];
  for (std::size_t s = 0; s < steps.size(); ++s) {
    models::TrainStep r;
    REQUIRE_OK(t->step(f.data, static_cast<std::int64_t>(s), f.hyper, &r));
    CHECK(!r.skipped);
    for (const char* key : {"loss", "grad_norm"}) {
      const double want = steps[s][key].get<double>(), naive = mixed[s][key].get<double>();
      const double got = std::string(key) == "loss" ? r.loss : double(r.grad_norm);
      INFO(std::string(family) << " step " << s << " " << key << ": " << got << ", torch " << want << ", torch mixed " << naive);
      CHECK(std::fabs(got - want) <= std::fmax(3 * std::fabs(naive - want), 2e-3 * std::fabs(want)));
    }
  }
  CHECK(t->state().step == 3);
  auto w = io::zeros_like(f.w);
  REQUIRE_OK(t->weights(&w));
  io::SafetensorsFile after, after_mixed;
  REQUIRE_OK(io::SafetensorsFile::open(dir_of(family) + "/after3.safetensors", &after));
  REQUIRE_OK(io::SafetensorsFile::open(dir_of(family) + "/after3_bf16.safetensors", &after_mixed));
  // Worst and mean |a − b| / lr.
  auto distance = [&](const float* a, const std::vector<float>& b, std::int64_t n) {
    double e = 0, sum = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      const double d = std::fabs(double(a[i]) - b[static_cast<std::size_t>(i)]) / f.hyper.lr;
      e = std::fmax(e, d);
      sum += d;
    }
    return std::pair<double, double>{e, sum / static_cast<double>(n)};
  };
  double worst = 0, worst_mean = 0;
  for (const auto& v : io::parameter_views(w)) {
    const auto want = tensor(after, v.name, v.numel());
    const auto naive = tensor(after_mixed, v.name, v.numel());
    const auto [e, mean] = distance(v.data, want, v.numel());
    const auto [e_naive, mean_naive] = distance(naive.data(), want, v.numel());
    INFO(std::string(family) << " " << v.name << ": worst " << e << " lr (torch mixed " << e_naive << "), mean " << mean
                << " lr (torch mixed " << mean_naive << ")");
    CHECK(e <= std::fmax(3 * e_naive, 2.5));
    CHECK(mean <= std::fmax(3 * mean_naive, 0.01));
    worst = std::fmax(worst, e / std::fmax(e_naive, 2.5));
    worst_mean = std::fmax(worst_mean, mean / std::fmax(mean_naive, 0.01));
  }
  MESSAGE(std::string(family) << ": weights after 3 steps, in units of torch mixed precision's error (or the floors): worst element " << worst
                 << ", worst tensor mean " << worst_mean);
}

inline bool same_bits(const io::ModelWeights<float>& a, const io::ModelWeights<float>& b) {
  auto va = io::parameter_views(const_cast<io::ModelWeights<float>&>(a));
  auto vb = io::parameter_views(const_cast<io::ModelWeights<float>&>(b));
  if (va.size() != vb.size()) return false;
  for (std::size_t i = 0; i < va.size(); ++i) {
    if (va[i].numel() != vb[i].numel()) return false;
    if (std::memcmp(va[i].data, vb[i].data, sizeof(float) * static_cast<std::size_t>(va[i].numel())) != 0) return false;
  }
  return true;
}

// A rerun: the same bits. A save (weights and moments) restored into a
// fresh trainer continues as the uninterrupted run: the same bits again.
inline void reruns_and_resumes(const char* family) {
  Fixture f(family);
  auto run = [&](std::unique_ptr<Trainer>& t, std::int64_t from, std::int64_t to) {
    for (std::int64_t s = from; s < to; ++s) REQUIRE_OK(t->step(f.data, s, f.hyper, nullptr));
  };
  auto a = f.trainer(), b = f.trainer();
  run(a, 0, 3);
  run(b, 0, 1);
  auto wa = io::zeros_like(f.w), wb = io::zeros_like(f.w), mb = io::zeros_like(f.w), vb = io::zeros_like(f.w);
  REQUIRE_OK(a->weights(&wa));
  REQUIRE_OK(b->weights(&wb, &mb, &vb));
  auto c = f.trainer();
  REQUIRE_OK(c->restore(wb, mb, vb, b->state().step, b->state().skipped));
  run(b, 1, 3);
  run(c, 1, 3);
  auto wb3 = io::zeros_like(f.w), wc3 = io::zeros_like(f.w);
  REQUIRE_OK(b->weights(&wb3));
  REQUIRE_OK(c->weights(&wc3));
  CHECK(same_bits(wa, wb3));
  CHECK(same_bits(wb3, wc3));
  CHECK(c->state().step == 3);
}

// A NaN in the embedding of an id the batch reads: the norm is NaN, the
// step is skipped and counted, and no master or moment changes.
inline void skips_non_finite(const char* family) {
  Fixture f(family);
  const std::int32_t id = f.data[0];
  f.w.embed[static_cast<std::size_t>(id) * f.w.config.hidden] = std::nanf("");
  auto t = f.trainer();
  auto w0 = io::zeros_like(f.w), m0 = io::zeros_like(f.w), v0 = io::zeros_like(f.w);
  REQUIRE_OK(t->weights(&w0, &m0, &v0));
  models::TrainStep r;
  REQUIRE_OK(t->step(f.data, 0, f.hyper, &r));
  CHECK(r.skipped);
  CHECK(!std::isfinite(r.grad_norm));
  CHECK(t->state().skipped == 1);
  CHECK(t->state().step == 0);
  auto w1 = io::zeros_like(f.w), m1 = io::zeros_like(f.w), v1 = io::zeros_like(f.w);
  REQUIRE_OK(t->weights(&w1, &m1, &v1));
  CHECK(same_bits(w0, w1));
  CHECK(same_bits(m0, m1));
  CHECK(same_bits(v0, v1));
}

// A tied lm_head (the embedding is the head): its gradient is the
// embedding's plus the head's, as the same model untied with lm_head = embed
// computes them apart (the same bf16 forward; fp32 sums in another order).
inline void tied_embeddings() {
  Fixture f("llama");
  f.w.lm_head = f.w.embed;
  auto untied = f.trainer();
  f.w.config.tie_embeddings = true;
  auto tied = f.trainer();
  models::TrainStep a, b;
  REQUIRE_OK(untied->gradients(f.data, 0, &a));
  REQUIRE_OK(tied->gradients(f.data, 0, &b));
  CHECK(a.loss == b.loss);
  auto ga = io::zeros_like(f.w), gb = io::zeros_like(f.w);
  ga.config.tie_embeddings = false;
  REQUIRE_OK(untied->grads(&ga));
  REQUIRE_OK(tied->grads(&gb));
  std::vector<float> sum(ga.embed.size());
  for (std::size_t i = 0; i < sum.size(); ++i) sum[i] = ga.embed[i] + ga.lm_head[i];
  CHECK(rel_error(gb.embed.data(), sum.data(), static_cast<std::int64_t>(sum.size())) < 1e-5);
  CHECK(gb.lm_head == gb.embed);
  for (std::size_t l = 0; l < ga.layers.size(); ++l) CHECK(ga.layers[l].wqkv == gb.layers[l].wqkv);
  // A step keeps them one tensor: the weights() head is the embedding.
  REQUIRE_OK(tied->step(f.data, 0, f.hyper, nullptr));
  auto w = io::zeros_like(f.w);
  REQUIRE_OK(tied->weights(&w));
  CHECK(w.lm_head == w.embed);
  CHECK(w.embed != f.w.embed);
}

// Activation checkpointing: each layer's state remade from its kept input
// stream gives the same bits as keeping every layer's (the fold is the
// norm's own rounded add), for the gradients and after an update.
inline void checkpointing_is_exact(const char* family) {
  Fixture f(family);
  auto kept = f.trainer(false), remade = f.trainer(true);
  CHECK(remade->device_bytes() < kept->device_bytes());
  models::TrainStep a, b;
  REQUIRE_OK(kept->gradients(f.data, 0, &a));
  REQUIRE_OK(remade->gradients(f.data, 0, &b));
  CHECK(a.loss == b.loss);
  auto ga = io::zeros_like(f.w), gb = io::zeros_like(f.w);
  REQUIRE_OK(kept->grads(&ga));
  REQUIRE_OK(remade->grads(&gb));
  CHECK(same_bits(ga, gb));
  REQUIRE_OK(kept->step(f.data, 0, f.hyper, nullptr));
  REQUIRE_OK(remade->step(f.data, 0, f.hyper, nullptr));
  auto wa = io::zeros_like(f.w), wb = io::zeros_like(f.w);
  REQUIRE_OK(kept->weights(&wa));
  REQUIRE_OK(remade->weights(&wb));
  CHECK(same_bits(wa, wb));
}

inline void bad_input() {
  Fixture f("llama");
  std::unique_ptr<Trainer> t;
  CHECK(Trainer::create(f.w, 0, f.L, f.A, &t).code() == tokenless::StatusCode::invalid_argument);
  CHECK(!t);
  auto ok = f.trainer();
  std::vector<std::int32_t> short_data(static_cast<std::size_t>(f.L), 1);
  CHECK(!ok->step(short_data, 0, f.hyper, nullptr).is_ok());
  auto bad = f.data;
  bad[3] = f.w.config.vocab;  // read by step 0's first row
  const auto s = ok->step(bad, 0, f.hyper, nullptr);
  CHECK(s.code() == tokenless::StatusCode::invalid_argument);
  CHECK(std::string(s.message()).find("vocab") != std::string::npos);
  auto h = f.hyper;
  h.lr = -1;
  CHECK(std::string(ok->step(f.data, 0, h, nullptr).message()).find("lr") != std::string::npos);
  CHECK(ok->state().step == 0);  // nothing ran
}

}  // namespace tlt::train_tests

TEST_CASE("train kernels: step 0's gradients against torch autograd, bf16") {
  for (const char* family : {"llama", "mistral", "mixtral", "phi3"}) {
    CAPTURE(family);
    tlt::train_tests::gradients_match(family);
  }
}

TEST_CASE("train kernels: three AdamW steps follow torch's") {
  for (const char* family : {"llama", "mistral", "mixtral", "phi3"}) {
    CAPTURE(family);
    tlt::train_tests::trajectory_matches(family);
  }
}

TEST_CASE("train kernels: reruns are bit-identical, a restored state continues exactly") {
  tlt::train_tests::reruns_and_resumes("mixtral");
}

TEST_CASE("train kernels: a non-finite norm skips the step") { tlt::train_tests::skips_non_finite("llama"); }

TEST_CASE("train kernels: a tied lm_head's gradient is the embedding's plus the head's") {
  tlt::train_tests::tied_embeddings();
}

TEST_CASE("train kernels: activation checkpointing gives the same bits") {
  for (const char* family : {"llama", "mixtral"}) {
    CAPTURE(family);
    tlt::train_tests::checkpointing_is_exact(family);
  }
}

TEST_CASE("train kernels: bad input is refused by name") { tlt::train_tests::bad_input(); }
