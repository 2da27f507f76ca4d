// Training on the host path (models/llama_train_host.hpp) against torch
// autograd and torch.optim.AdamW (tests/fixtures/train/<family>/, from
// scripts/make_train_fixtures.py): step 0's loss and the gradient of every
// parameter, then three steps' losses, gradient norms and weights, for
// Llama 3, Mistral (a sliding window shorter than the rows), Mixtral (top-2
// MoE with its load-balancing loss) and Phi-3.
#include "require_ok.hpp"
#include "../support/train_recipe.hpp"

#include <tokenless/io/model_weights.hpp>
#include <tokenless/io/safetensors.hpp>
#include <tokenless/models/llama_train_host.hpp>
#include <tokenless/models/train_data.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace io = tokenless::io;
namespace models = tokenless::models;
namespace optim = tokenless::optim;

namespace {

std::string dir_of(const char* family) { return std::string(TOKENLESS_SOURCE_DIR) + "/tests/fixtures/train/" + family; }

using tlt::rel_error;

using tlt::compare;

struct Fixture : tlt::TrainRecipe {
  io::ModelWeights<float> w;
  explicit Fixture(const char* family) : tlt::TrainRecipe(dir_of(family)) { REQUIRE_OK(io::load_weights(dir_of(family), &w)); }
};

void gradients_match(const char* family, bool checkpoint) {
  Fixture f(family);
  models::LlamaHostTrainer t(f.w.config, checkpoint);
  auto grad = io::zeros_like(f.w);
  std::vector<std::int32_t> rows;
  for (int m = 0; m < f.A; ++m) {
    models::train_rows(f.data, 0, m, f.B, f.L, f.A, rows);
    models::TrainLoss loss;
    REQUIRE_OK(t.forward_backward(f.w, rows.data(), f.B, f.L, 1.0f / f.A, &grad, &loss));
    const auto& want = f.j["step0_micro_batches"][m];
    CHECK(loss.cross_entropy == doctest::Approx(want["cross_entropy"].get<double>()).epsilon(2e-6));
    if (!want["aux_loss"].is_null()) {
      CHECK(t.aux_loss());
      CHECK(loss.aux == doctest::Approx(want["aux_loss"].get<double>()).epsilon(2e-6));
    }
  }
  const double worst = compare(io::parameter_views(grad), dir_of(family) + "/grads.safetensors", "gradient", 2e-5);
  MESSAGE(std::string(family) << (checkpoint ? " (checkpointed)" : "") << ": worst gradient error " << worst);
}

void trajectory_matches(const char* family) {
  Fixture f(family);
  models::LlamaHostTraining run;
  REQUIRE_OK(run.init(&f.w));
  const double worst = tlt::check_host_trajectory(run, f, dir_of(family));
  MESSAGE(std::string(family) << ": worst weight error after 3 steps, in units of lr, " << worst);
}

}  // namespace

TEST_CASE("train host: step 0's gradients equal torch autograd's") {
  for (const char* family : {"llama", "mistral", "mixtral", "phi3"}) {
    CAPTURE(family);
    gradients_match(family, false);
  }
}

TEST_CASE("train host: activation checkpointing gives the same gradients") {
  for (const char* family : {"llama", "mixtral"}) {
    CAPTURE(family);
    gradients_match(family, true);
  }
}

TEST_CASE("train host: three AdamW steps give torch's losses, norms and weights") {
  for (const char* family : {"llama", "mistral", "mixtral", "phi3"}) {
    CAPTURE(family);
    trajectory_matches(family);
  }
}
