#pragma once
// A training fixture's train.json (scripts/make_train_fixtures.py,
// make_blt_train_fixtures.py): its data and recipe, for the host tests and
// the kernels' (emu and gpu tiers); and the error measure the gradient
// checks use.
#include <tokenless/optim/policy.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace tlt {

struct TrainRecipe {
  nlohmann::json j;
  std::vector<std::int32_t> data;
  int B = 0, L = 0, A = 0;
  tokenless::optim::AdamWHyper hyper;

  explicit TrainRecipe(const std::string& dir) {
    std::ifstream f(dir + "/train.json");
    REQUIRE_MESSAGE(static_cast<bool>(f), std::string(dir + "/train.json"));
    std::stringstream ss;
    ss << f.rdbuf();
    j = nlohmann::json::parse(ss.str());
    data = j["data"].get<std::vector<std::int32_t>>();
    const auto& h = j["hyper"];
    B = h["batch_size"].get<int>();
    L = h["seq_len"].get<int>();
    A = h["grad_accum"].get<int>();
    hyper.lr = h["lr"].get<double>();
    hyper.beta1 = h["betas"][0].get<double>();
    hyper.beta2 = h["betas"][1].get<double>();
    hyper.eps = h["eps"].get<double>();
    hyper.weight_decay = h["weight_decay"].get<double>();
    hyper.max_norm = h["clip"].get<double>();
  }
};

// max |a − b| over max |b|: a tensor's error relative to its scale (an
// element near zero after a cancellation is as exact as its terms).
inline double rel_error(const float* a, const float* b, std::int64_t n) {
  double e = 0, m = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    e = std::fmax(e, std::fabs(double(a[i]) - double(b[i])));
    m = std::fmax(m, std::fabs(double(b[i])));
  }
  return m == 0 ? e : e / m;
}

}  // namespace tlt
