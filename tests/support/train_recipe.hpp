#pragma once
// A training fixture's train.json (scripts/make_train_fixtures.py,
// make_blt_train_fixtures.py): its data and recipe, for the host tests and
// the kernels' (emu and gpu tiers); and the error measure the gradient
// checks use, and the comparison of a model's tensors with a file's.
#include <tokenless/io/model_weights.hpp>
#include <tokenless/io/safetensors.hpp>
#include <tokenless/models/train_data.hpp>
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

// Every view's tensor against the file's tensor of its name; the worst error.
// abs > 0: the error is max |a − b| / abs instead, and the mean is held to
// bound / 500 too.
//
// The bounds. Gradients: fp32 throughout, sums over at most 192 terms in
// another order than torch's (sgemm's blocking, the attention's
// recomputed probabilities), ten or so operations deep: a few ulps of the
// tensor's scale at each, 2e-6 measured; 2e-5 is ten times that. Weights
// after three AdamW steps, in units of lr: Adam divides by √v, so an element
// whose gradient is 1e-4 of its tensor's largest carries that 2e-6 as a 2%
// change of m/√v at steps 2 and 3 (the first step is lr · sign(g), exact);
// 0.029 to 0.057 lr measured at the worst element as the products' thread
// split changes the summation order, 3e-5 lr on average: bounds 0.1 lr and
// 2e-4 lr.
// all: the views are every tensor of the file (none of it left out).
inline double compare(const std::vector<tokenless::io::ParamView>& views, const std::string& file, const char* what,
                      double bound, double abs = 0, bool all = false) {
  tokenless::io::SafetensorsFile f;
  REQUIRE(tokenless::io::SafetensorsFile::open(file, &f).is_ok());
  if (all) CHECK(views.size() == f.tensors().size());
  double worst = 0;
  for (const auto& v : views) {
    const tokenless::io::TensorInfo* t = f.find(v.name);
    REQUIRE_MESSAGE(t != nullptr, v.name);
    REQUIRE(t->numel() == v.numel());
    std::vector<float> want(static_cast<std::size_t>(t->numel()));
    REQUIRE(tokenless::io::convert(*t, want.data()).is_ok());
    double e = 0;
    if (abs > 0) {
      double sum = 0;
      for (std::int64_t i = 0; i < v.numel(); ++i) {
        const double d = std::fabs(double(v.data[i]) - want[static_cast<std::size_t>(i)]) / abs;
        e = std::fmax(e, d);
        sum += d;
      }
      INFO(what << " " << v.name << ": mean error " << sum / v.numel());
      CHECK(sum / v.numel() < bound / 500);
    } else {
      e = rel_error(v.data, want.data(), v.numel());
    }
    INFO(what << " " << v.name << ": error " << e);
    CHECK(e < bound);
    worst = std::fmax(worst, e);
  }
  return worst;
}

// A host training's steps against train.json's (fp32: losses and norms to
// 1e-5, none skipped); then the weights after them against after3.safetensors
// (compare's bounds: 0.1 lr worst, 2e-4 lr mean). Returns the worst weight
// error in units of lr.
template <class Run>
double check_host_trajectory(Run& run, const TrainRecipe& f, const std::string& dir, bool all_tensors = false) {
  const auto& steps = f.j["steps"];
  for (std::size_t s = 0; s < steps.size(); ++s) {
    tokenless::models::TrainStep r;
    REQUIRE(run.step(f.data, static_cast<std::int64_t>(s), f.B, f.L, f.A, f.hyper, &r).is_ok());
    CHECK(r.loss == doctest::Approx(steps[s]["loss"].get<double>()).epsilon(1e-5));
    CHECK(r.grad_norm == doctest::Approx(steps[s]["grad_norm"].get<double>()).epsilon(1e-5));
    CHECK(!r.skipped);
  }
  return compare(run.views(), dir + "/after3.safetensors", "weight", 1e-1, f.hyper.lr, all_tensors);
}

}  // namespace tlt
