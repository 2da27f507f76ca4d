#pragma once
// optim::AdamW (fused, multi-tensor) against the reference
// (reference/optim.hpp, itself checked against torch in tests/host): fp32
// parameters, and bf16/fp16 ones with the fp32 master copy, over tensors
// that end on and off chunk boundaries; a rerun's bits; the skip of a
// non-finite norm; clipping on and off; bad input refused with nothing written.
#include "../support/testbed.hpp"

#include <tokenless/optim/adamw.cuh>
#include <tokenless/reference/optim.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

namespace tlt::optim_tests {

namespace optim = tokenless::optim;
namespace ref = tokenless::reference;

// Sizes: one element, a chunk less one, a chunk, a chunk and one, several.
inline const std::vector<std::int64_t> kSizes = {1, optim::kChunk - 1, optim::kChunk, optim::kChunk + 1, 2 * optim::kChunk + 517};

template <class T, class G>
struct Problem {
  std::vector<DeviceBuffer<T>> params;
  std::vector<DeviceBuffer<G>> grads;
  std::vector<std::vector<float>> master, host_grads;  // the reference's fp32 copies
  DeviceBuffer<unsigned char> table;
  DeviceBuffer<float> m, v, master_dev;
  DeviceBuffer<optim::State> state{1};
  DeviceBuffer<float> norm{1};
  optim::Plan plan;
  std::vector<float> rm, rv;  // the reference's moments (flat, as the plan's)

  explicit Problem(std::uint64_t seed) {
    std::vector<optim::TensorRef> refs;
    for (std::size_t i = 0; i < kSizes.size(); ++i) {
      auto p = random_values<T>(static_cast<std::size_t>(kSizes[i]), seed + i, -0.5f, 0.5f);
      master.push_back(to_floats(p));
      params.emplace_back(p);
      grads.emplace_back(static_cast<std::size_t>(kSizes[i]));
      host_grads.emplace_back(static_cast<std::size_t>(kSizes[i]));
    }
    for (std::size_t i = 0; i < kSizes.size(); ++i) {
      refs.push_back({params[i].get(), grads[i].get(), kSizes[i], i % 2 == 0});  // odd ones: not decayed
    }
    REQUIRE_OK(optim::Plan::build(refs, &plan));
    table = DeviceBuffer<unsigned char>(plan.image());
    const auto n = static_cast<std::size_t>(plan.total());
    m = DeviceBuffer<float>(n);
    v = DeviceBuffer<float>(n);
    if constexpr (!std::is_same_v<T, float>) master_dev = DeviceBuffer<float>(n);
    rm.assign(n, 0.0f);
    rv.assign(n, 0.0f);
  }
  typename optim::AdamW<T, G>::Arguments args(const optim::AdamWHyper& h) {
    typename optim::AdamW<T, G>::Arguments a;
    a.plan = plan.view(table.get());
    a.m = m.get();
    a.v = v.get();
    a.master = std::is_same_v<T, float> ? nullptr : master_dev.get();
    a.state = state.get();
    a.hyper = h;
    a.norm_out = norm.get();
    return a;
  }
  // New gradients (G-rounded; the reference reads the same values).
  void set_grads(std::uint64_t seed, float scale) {
    for (std::size_t i = 0; i < kSizes.size(); ++i) {
      auto g = random_values<G>(static_cast<std::size_t>(kSizes[i]), seed + 100 * i, -scale, scale);
      host_grads[i] = to_floats(g);
      grads[i].upload(g);
    }
  }
  std::vector<ref::AdamWTensor> ref_tensors() {
    std::vector<ref::AdamWTensor> t;
    for (std::size_t i = 0; i < kSizes.size(); ++i) {
      const auto off = static_cast<std::size_t>(plan.offset(i));
      t.push_back({master[i].data(), host_grads[i].data(), rm.data() + off, rv.data() + off, kSizes[i], i % 2 == 0});
    }
    return t;
  }
};

// AdamW::reset with a workspace of its own.
template <class Op>
void reset(const typename Op::Arguments& a) {
  DeviceBuffer<unsigned char> ws(Op::workspace_size(a));
  REQUIRE_OK(Op::reset(a, {ws.get(), ws.size()}));
}

// max |a − b| in units of the last place of b's largest magnitude.
inline double scaled_ulps(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double e = 0, m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    e = std::fmax(e, std::fabs(double(a[i]) - double(b[i])));
    m = std::fmax(m, std::fabs(double(b[i])));
  }
  return m == 0 ? e : e / std::ldexp(1.0, std::ilogb(m) - 23);
}

template <class T, class G>
void check_adamw(bool clip) {
  CAPTURE(clip);
  using Op = optim::AdamW<T, G>;
  Problem<T, G> pr(7);
  optim::AdamWHyper h;
  h.lr = 0.02;
  h.beta1 = 0.9;
  h.beta2 = 0.95;
  h.weight_decay = 0.1;
  h.max_norm = clip ? 1.0 : 0.0;
  Testbed<Op> tb;
  auto a = pr.args(h);
  reset<Op>(a);
  std::int64_t step = 0, skipped = 0;
  for (int s = 0; s < 3; ++s) {
    CAPTURE(s);
    pr.set_grads(40 + s, s == 2 ? 0.001f : 0.05f);  // the last under max_norm
    tb.run_ok(a);
    const float want_norm = ref::adamw_step(pr.ref_tensors(), h, &step, &skipped);
    const auto st = pr.state.download()[0];
    // The norm: fp32 sums of chunks against the reference's double (one
    // rounding a chunk and the tree: relative 1e-6 at these sizes).
    CHECK(std::fabs(st.grad_norm - want_norm) <= 1e-6 * want_norm);
    CHECK(pr.norm.download()[0] == st.grad_norm);
    CHECK(st.step == s + 1);
    CHECK(st.skip == 0);
    const auto m = pr.m.download(), v = pr.v.download();
    // The moments and the master: the reference's arithmetic, but for the
    // clip coefficient, which carries the norm's relative difference (in
    // ulps) and its own rounding, c, into g: m and p within 4 ulps of scale
    // + c, v (g²) + 2c.
    const double c = clip ? std::fabs(double(st.grad_norm) - want_norm) / want_norm * std::ldexp(1.0, 23) + 1 : 0.0;
    INFO("the norm's difference: " << c << " ulps");
    const double tol = 4 + c;
    CHECK(scaled_ulps(m, pr.rm) <= tol);
    CHECK(scaled_ulps(v, pr.rv) <= 4 + 2 * c);
    const std::vector<float> master = std::is_same_v<T, float> ? std::vector<float>{} : pr.master_dev.download();
    for (std::size_t i = 0; i < kSizes.size(); ++i) {
      CAPTURE(i);
      const auto p = to_floats(pr.params[i].download());
      if constexpr (std::is_same_v<T, float>) {
        CHECK(scaled_ulps(p, pr.master[i]) <= tol);
      } else {
        const auto off = static_cast<std::size_t>(pr.plan.offset(i));
        const std::vector<float> mine(master.begin() + static_cast<std::ptrdiff_t>(off),
                                      master.begin() + static_cast<std::ptrdiff_t>(off + pr.master[i].size()));
        CHECK(scaled_ulps(mine, pr.master[i]) <= tol);
        for (std::size_t e = 0; e < p.size(); ++e) {  // the parameter: the master rounded
          if (p[e] != tokenless::round_trip<T>(mine[e])) {
            CHECK(p[e] == tokenless::round_trip<T>(mine[e]));
            break;
          }
        }
      }
    }
  }
}

// The same gradients from the same start give the same bits (no atomics).
template <class T>
void check_rerun() {
  using Op = optim::AdamW<T, T>;
  optim::AdamWHyper h;
  h.max_norm = 0.5;
  std::vector<std::vector<float>> first;
  for (int run = 0; run < 2; ++run) {
    Problem<T, T> pr(11);
    Testbed<Op> tb;
    auto a = pr.args(h);
    reset<Op>(a);
    for (int s = 0; s < 2; ++s) {
      pr.set_grads(60 + s, 0.1f);
      tb.run_ok(a);
    }
    std::vector<std::vector<float>> now;
    for (auto& p : pr.params) now.push_back(to_floats(p.download()));
    now.push_back(pr.m.download());
    if (run == 0) first = now;
    else CHECK(now == first);
  }
}

// A NaN or infinite gradient: nothing changes, the skip is counted, t stays.
inline void check_skip() {
  using Op = optim::AdamW<__nv_bfloat16, __nv_bfloat16>;
  for (const float bad : {std::nanf(""), INFINITY}) {
    CAPTURE(bad);
    Problem<__nv_bfloat16, __nv_bfloat16> pr(5);
    optim::AdamWHyper h;
    Testbed<Op> tb;
    auto a = pr.args(h);
    reset<Op>(a);
    pr.set_grads(3, 0.1f);
    tb.run_ok(a);
    std::vector<std::vector<__nv_bfloat16>> before;
    for (auto& p : pr.params) before.push_back(p.download());
    const auto m = pr.m.download(), v = pr.v.download(), master = pr.master_dev.download();
    auto g = pr.grads[3].download();
    g[17] = tokenless::from_float<__nv_bfloat16>(bad);
    pr.grads[3].upload(g);
    tb.run_ok(a);
    for (std::size_t i = 0; i < before.size(); ++i) {
      const auto now = pr.params[i].download();
      CHECK(std::memcmp(now.data(), before[i].data(), now.size() * sizeof(now[0])) == 0);
    }
    CHECK(pr.m.download() == m);
    CHECK(pr.v.download() == v);
    CHECK(pr.master_dev.download() == master);
    const auto st = pr.state.download()[0];
    CHECK(st.step == 1);
    CHECK(st.skipped == 1);
    CHECK(st.skip == 1);
    CHECK(!std::isfinite(st.grad_norm));
    // The next finite step goes on from t = 1.
    pr.set_grads(4, 0.1f);
    tb.run_ok(a);
    CHECK(pr.state.download()[0].step == 2);
  }
}

inline void check_bad_input() {
  using Op = optim::AdamW<__nv_bfloat16, __nv_bfloat16>;
  Problem<__nv_bfloat16, __nv_bfloat16> pr(9);
  optim::AdamWHyper h;
  auto good = pr.args(h);
  Testbed<Op> tb;
  tb.watch(pr.m).watch(pr.v).watch(pr.master_dev);
  using tokenless::StatusCode;
  tb.reject(good, {
                      {"a negative lr", [](auto& a) { a.hyper.lr = -1; }, StatusCode::invalid_argument, "lr"},
                      {"beta1 = 1", [](auto& a) { a.hyper.beta1 = 1; }, StatusCode::invalid_argument, "beta1"},
                      {"eps = 0", [](auto& a) { a.hyper.eps = 0; }, StatusCode::invalid_argument, "eps"},
                      {"a NaN max_norm", [](auto& a) { a.hyper.max_norm = NAN; }, StatusCode::invalid_argument, "max_norm"},
                      {"no m", [](auto& a) { a.m = nullptr; }, StatusCode::null_pointer, "m"},
                      {"no master for bf16", [](auto& a) { a.master = nullptr; }, StatusCode::null_pointer, "master"},
                      {"no state", [](auto& a) { a.state = nullptr; }, StatusCode::null_pointer, "state"},
                      {"no plan", [](auto& a) { a.plan.tensors = nullptr; }, StatusCode::null_pointer, "plan"},
                  });
  // A master copy for fp32 parameters is a mistake, named.
  Problem<float, float> f(9);
  auto fa = f.args(h);
  fa.master = f.m.get();
  CHECK(optim::AdamW<float, float>::can_implement(fa).code() == StatusCode::invalid_argument);
  // The plan refuses empty and null tensors.
  optim::Plan p;
  CHECK(optim::Plan::build({}, &p).code() == StatusCode::invalid_argument);
  CHECK(optim::Plan::build({{nullptr, pr.grads[0].get(), 1, true}}, &p).code() == StatusCode::null_pointer);
  CHECK(optim::Plan::build({{pr.params[0].get(), pr.grads[0].get(), 0, true}}, &p).code() == StatusCode::invalid_argument);
}

}  // namespace tlt::optim_tests

TEST_CASE("optim: fused AdamW on fp32 parameters equals the reference, with and without clipping") {
  tlt::optim_tests::check_adamw<float, float>(true);
  tlt::optim_tests::check_adamw<float, float>(false);
}
TEST_CASE("optim: fused AdamW on bf16 and fp16 parameters updates an fp32 master copy and rounds it") {
  tlt::optim_tests::check_adamw<__nv_bfloat16, __nv_bfloat16>(true);
  tlt::optim_tests::check_adamw<__half, __half>(true);
  tlt::optim_tests::check_adamw<__nv_bfloat16, float>(false);  // fp32 gradients (the byte head's) into bf16 weights
}
TEST_CASE("optim: fused AdamW is bit-identical on a rerun") {
  tlt::optim_tests::check_rerun<float>();
  tlt::optim_tests::check_rerun<__nv_bfloat16>();
}
TEST_CASE("optim: a non-finite gradient norm skips the step, counts it, and changes nothing") {
  tlt::optim_tests::check_skip();
}
TEST_CASE("optim: fused AdamW refuses bad input by name and writes nothing") { tlt::optim_tests::check_bad_input(); }
