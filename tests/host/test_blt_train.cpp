// BLT's training on the host path (models/blt_train_host.hpp) against torch
// autograd and torch.optim.AdamW (tests/fixtures/train/blt, blt_k4, from
// scripts/make_blt_train_fixtures.py): step 0's patches, loss and the
// gradient of every trained parameter, then three steps' losses, norms and
// weights. blt: k 2, a window, the global projection, cross-attention before
// every decoder layer; blt_k4: k 4, max_patch_length, the encoder's
// cross-attention a layer (only the last trained), no projection... (the
// script's header has both).
#include "require_ok.hpp"
#include "../support/train_recipe.hpp"

#include <tokenless/io/blt_weights.hpp>
#include <tokenless/io/safetensors.hpp>
#include <tokenless/models/blt_train_host.hpp>
#include <tokenless/models/train_data.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace io = tokenless::io;
namespace models = tokenless::models;
namespace optim = tokenless::optim;

namespace {

std::string dir_of(const char* name) { return std::string(TOKENLESS_SOURCE_DIR) + "/tests/fixtures/train/" + name; }

struct BltFixture : tlt::TrainRecipe {
  io::BltWeights<float> w;
  explicit BltFixture(const char* name) : tlt::TrainRecipe(dir_of(name)) { REQUIRE_OK(io::load_blt_weights(dir_of(name), &w)); }
};

using tlt::rel_error;

// Every view against the file's tensor of its name, and no tensor of the
// file left out, at test_train.cpp's bounds (tests/support/train_recipe.hpp
// has their reasons): gradients 2e-5 of the tensor's scale; weights after
// three steps 0.1 lr worst, 2e-4 lr mean.
double compare(std::vector<io::ParamView> views, const std::string& file, double bound, double lr = 0) {
  return tlt::compare(views, file, "", bound, lr, /*all=*/true);
}

void gradients_match(const char* name) {
  BltFixture f(name);
  models::BltHostTrainer t(f.w);
  auto grad = io::blt_zeros_like(f.w);
  std::vector<std::int32_t> rows;
  for (int m = 0; m < f.A; ++m) {
    models::train_rows(f.data, 0, m, f.B, f.L, f.A, rows);
    models::TrainLoss loss;
    REQUIRE_OK(t.forward_backward(f.w, rows.data(), f.B, f.L, 1.0f / f.A, &grad, &loss));
    const auto& want = f.j["step0_micro_batches"][m];
    // The entropy model's patches first: the rest depends on them.
    for (int r = 0; r < f.B; ++r) {
      std::vector<std::int64_t> lengths;
      for (auto v : want["patch_lengths"][r]) {
        if (v.get<std::int64_t>() > 0) lengths.push_back(v.get<std::int64_t>());
      }
      CHECK(t.patch_lengths()[static_cast<std::size_t>(r)] == lengths);
    }
    CHECK(loss.cross_entropy == doctest::Approx(want["cross_entropy"].get<double>()).epsilon(2e-6));
  }
  const double worst = compare(io::blt_parameter_views(grad), dir_of(name) + "/grads.safetensors", 2e-5);
  MESSAGE(std::string(name) << ": worst gradient error " << worst);
}

void trajectory_matches(const char* name) {
  BltFixture f(name);
  models::BltHostTraining run;
  REQUIRE_OK(run.init(&f.w));
  const double worst = tlt::check_host_trajectory(run, f, dir_of(name), /*all_tensors=*/true);
  MESSAGE(std::string(name) << ": worst weight error after 3 steps, in units of lr, " << worst);
}

}  // namespace

TEST_CASE("train host BLT: step 0's patches, losses and gradients equal torch autograd's") {
  for (const char* name : {"blt", "blt_k4"}) {
    CAPTURE(name);
    gradients_match(name);
  }
}

TEST_CASE("train host BLT: three AdamW steps give torch's losses, norms and weights") {
  for (const char* name : {"blt", "blt_k4"}) {
    CAPTURE(name);
    trajectory_matches(name);
  }
}
