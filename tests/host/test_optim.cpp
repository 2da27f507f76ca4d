// The optimizer on the host: the reference (reference/optim.hpp) against
// torch's AdamW and clip_grad_norm_ (tests/fixtures/optim/adamw.json, from
// scripts/make_optim_fixture.py), the host path (optim/host.hpp) against
// the reference, the skip of a non-finite norm, bad hyperparameters, and the
// schedules.
#include "require_ok.hpp"

#include <tokenless/optim/host.hpp>
#include <tokenless/optim/policy.hpp>
#include <tokenless/reference/optim.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace optim = tokenless::optim;
namespace ref = tokenless::reference;

namespace {

nlohmann::json fixture() {
  std::ifstream f(std::string(TOKENLESS_SOURCE_DIR) + "/tests/fixtures/optim/adamw.json");
  std::stringstream ss;
  ss << f.rdbuf();
  return nlohmann::json::parse(ss.str());
}

// max |a − b| in units of the last place of the tensor's largest magnitude
// (a moment near zero after a cancellation is as exact as its terms, not
// as its own size).
double max_ulps(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double e = 0, m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    e = std::fmax(e, std::fabs(double(a[i]) - double(b[i])));
    m = std::fmax(m, std::fabs(double(b[i])));
  }
  return m == 0 ? e : e / std::ldexp(1.0, std::ilogb(m) - 23);
}
double ulps(float a, float b) { return max_ulps({a}, {b}); }

// Into the existing storage (the optimizers hold pointers to it).
void set(std::vector<float>& to, const nlohmann::json& from) {
  const auto v = from.get<std::vector<float>>();
  REQUIRE(v.size() == to.size());
  std::copy(v.begin(), v.end(), to.begin());
}

optim::AdamWHyper hyper_of(const nlohmann::json& h) {
  optim::AdamWHyper o;
  o.lr = h["lr"].get<double>();
  o.beta1 = h["betas"][0].get<double>();
  o.beta2 = h["betas"][1].get<double>();
  o.eps = h["eps"].get<double>();
  o.weight_decay = h["weight_decay"].get<double>();
  o.max_norm = h["max_norm"].get<double>();
  return o;
}

// The fixture's tensors, in its order, with room for moments and gradients.
struct Model {
  std::vector<std::string> names;
  std::map<std::string, std::vector<float>> p, g, m, v;
  std::map<std::string, bool> decay;
  explicit Model(const nlohmann::json& fx) {
    for (const auto& n : fx["order"]) {
      const std::string k = n.get<std::string>();
      names.push_back(k);
      p[k] = fx["initial"][k].get<std::vector<float>>();
      g[k].assign(p[k].size(), 0.0f);
      m[k].assign(p[k].size(), 0.0f);
      v[k].assign(p[k].size(), 0.0f);
      decay[k] = fx["decay"][k].get<int>() != 0;
    }
  }
  std::vector<ref::AdamWTensor> tensors() {
    std::vector<ref::AdamWTensor> t;
    for (const auto& k : names) {
      t.push_back({p[k].data(), g[k].data(), m[k].data(), v[k].data(), static_cast<std::int64_t>(p[k].size()), decay[k]});
    }
    return t;
  }
  std::vector<optim::HostTensor> host_tensors() {
    std::vector<optim::HostTensor> t;
    for (const auto& k : names) t.push_back({p[k].data(), g[k].data(), static_cast<std::int64_t>(p[k].size()), decay[k]});
    return t;
  }
};

}  // namespace

TEST_CASE("optim: AdamW with clip_grad_norm_ gives torch's weights, moments and norms, step by step") {
  const auto fx = fixture();
  const optim::AdamWHyper h = hyper_of(fx["hyper"]);
  Model ref_model(fx), host_model(fx);
  const auto tensors = ref_model.tensors();
  optim::HostAdamW host;
  REQUIRE_OK(host.init(host_model.host_tensors()));
  std::int64_t step = 0, skipped = 0;
  for (std::size_t s = 0; s < fx["steps"].size(); ++s) {
    CAPTURE(s);
    const auto& st = fx["steps"][s];
    for (const auto& k : ref_model.names) {
      set(ref_model.g[k], st["grads"][k]);
      set(host_model.g[k], st["grads"][k]);
    }
    const float norm = ref::adamw_step(tensors, h, &step, &skipped);
    float host_norm = 0;
    REQUIRE_OK(host.step(h, &host_norm));
    // torch sums each tensor's squares in fp32 and takes the norm of the
    // norms; the reference sums in double: a few fp32 roundings apart.
    CHECK(ulps(norm, st["norm"].get<float>()) <= 4);
    CHECK(host_norm == norm);  // the same sums, in double
    for (const auto& k : ref_model.names) {
      CAPTURE(k);
      // A step is ~10 float roundings a weight, each at most half an ulp of
      // its terms; the clip coefficient comes from a norm a few ulps off
      // torch's: within 4 ulps of the tensor's scale (measured: at most 1).
      const double tol = 4.0;
      const double ep = max_ulps(ref_model.p[k], st["params"][k].get<std::vector<float>>());
      const double em = max_ulps(ref_model.m[k], st["exp_avg"][k].get<std::vector<float>>());
      const double ev = max_ulps(ref_model.v[k], st["exp_avg_sq"][k].get<std::vector<float>>());
      INFO("ulps: params " << ep << ", exp_avg " << em << ", exp_avg_sq " << ev);
      CHECK(ep <= tol);
      CHECK(em <= tol);
      CHECK(ev <= tol);
      CHECK(host_model.p[k] == ref_model.p[k]);  // the host path: the reference's arithmetic
    }
  }
  CHECK(step == 3);
  CHECK(skipped == 0);
  CHECK(host.state().step == 3);
  CHECK(host.state().clip == 1.0f);  // the last step's norm is under max_norm
}

TEST_CASE("optim: a NaN or infinite gradient norm skips the step and changes nothing") {
  const auto fx = fixture();
  optim::AdamWHyper h = hyper_of(fx["hyper"]);
  for (const float bad : {std::nanf(""), INFINITY}) {
    CAPTURE(bad);
    Model model(fx);
    optim::HostAdamW host;
    REQUIRE_OK(host.init(model.host_tensors()));
    const auto& st = fx["steps"][0];
    for (const auto& k : model.names) set(model.g[k], st["grads"][k]);
    REQUIRE_OK(host.step(h));
    const auto p = model.p;
    const auto m = host.m(), v = host.v();
    model.g["w2"][3] = bad;
    float norm = 0;
    REQUIRE_OK(host.step(h, &norm));
    CHECK(!std::isfinite(norm));
    CHECK(model.p == p);
    CHECK(host.m() == m);
    CHECK(host.v() == v);
    CHECK(host.state().step == 1);
    CHECK(host.state().skipped == 1);
    // The reference agrees.
    Model r(fx);
    std::int64_t step = 0, skipped = 0;
    r.g["emb"][7] = bad;
    const auto before = r.p;
    (void)ref::adamw_step(r.tensors(), h, &step, &skipped);
    CHECK(r.p == before);
    CHECK(step == 0);
    CHECK(skipped == 1);
  }
}

TEST_CASE("optim: bad hyperparameters and schedules are refused by name") {
  auto refused = [](optim::AdamWHyper h, const char* name) {
    const auto s = optim::check_adamw(h);
    CHECK(s.code() == tokenless::StatusCode::invalid_argument);
    CHECK(std::string(s.message()).find(name) != std::string::npos);
  };
  optim::AdamWHyper h;
  REQUIRE_OK(optim::check_adamw(h));
  auto b = h;
  b.lr = -1e-3;
  refused(b, "lr");
  b = h;
  b.beta1 = 1.0;
  refused(b, "beta1");
  b = h;
  b.beta2 = -0.1;
  refused(b, "beta2");
  b = h;
  b.eps = 0.0;
  refused(b, "eps");
  b = h;
  b.weight_decay = std::nan("");
  refused(b, "weight_decay");
  b = h;
  b.max_norm = -1.0;
  refused(b, "max_norm");
  optim::HostAdamW host;
  CHECK(host.step(h).code() == tokenless::StatusCode::invalid_argument);  // no tensors yet
  CHECK(host.init({}).code() == tokenless::StatusCode::invalid_argument);
  std::vector<float> w(4), g(4);
  CHECK(host.init({{w.data(), nullptr, 4, true}}).code() == tokenless::StatusCode::null_pointer);
  optim::Schedule s;
  s.kind = optim::Schedule::Kind::cosine;
  s.min_lr = 2.0 * s.lr;
  CHECK(std::string(optim::check_schedule(s).message()).find("min_lr") != std::string::npos);
  s.min_lr = 0;
  s.warmup = -1;
  CHECK(std::string(optim::check_schedule(s).message()).find("warmup") != std::string::npos);
}

TEST_CASE("optim: the schedules: constant, and linear warmup then cosine decay to the floor") {
  optim::Schedule c;
  c.lr = 3e-4;
  for (int s : {0, 5, 1000}) CHECK(c.at(s) == 3e-4);
  optim::Schedule s;
  s.kind = optim::Schedule::Kind::cosine;
  s.lr = 1e-3;
  s.warmup = 10;
  s.total = 110;
  s.min_lr = 1e-4;
  REQUIRE_OK(optim::check_schedule(s));
  CHECK(s.at(0) == doctest::Approx(1e-4));   // (0 + 1) / 10 of the peak
  CHECK(s.at(9) == doctest::Approx(1e-3));   // the warmup's last step
  CHECK(s.at(10) == doctest::Approx(1e-3));  // the decay starts at the peak
  CHECK(s.at(60) == doctest::Approx(5.5e-4));  // halfway: the mean of peak and floor
  CHECK(s.at(110) == doctest::Approx(1e-4));
  CHECK(s.at(500) == doctest::Approx(1e-4));  // past the end: the floor
  for (int i = 10; i < 110; ++i) CHECK(s.at(i + 1) <= s.at(i));
}
