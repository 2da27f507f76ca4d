#pragma once
// H-Net / DLCM: the cosine router (forward, backward against finite
// differences, p = 0.5 exactly, varlen sequence starts, the generation step)
// and the ratio loss in every scope (loss and gradient against finite
// differences). Shared by the emu and gpu tiers.
#include "../support/testbed.hpp"

#include <tokenless/tokenless.cuh>

namespace tlt::router_tests {

namespace rt = tokenless::router;
namespace ref = tokenless::reference;

TEST_CASE("cosine router: forward, boundaries, and p = 0.5 exactly") {
  const int d = 7;
  const std::vector<std::int32_t> cu = {0, 5, 6, 12};
  const std::int64_t n = cu.back();
  auto qf = random_values<float>(static_cast<std::size_t>(n * d), 1);
  auto kf = random_values<float>(static_cast<std::size_t>(n * d), 2);
  // Token 3: q_2 orthogonal to k_3, so cos = 0 and p = 0.5, not a boundary.
  for (int c = 0; c < d; ++c) {
    qf[2 * d + c] = c == 0 ? 1.0f : 0.0f;
    kf[3 * d + c] = c == 1 ? 2.0f : 0.0f;
  }
  DeviceBuffer<float> q(qf), k(kf), prob(n);
  DeviceBuffer<std::int32_t> d_cu(cu);
  DeviceBuffer<std::uint8_t> bnd(n);
  using Op = rt::CosineRouterForward<float>;
  Op::Arguments a{q.get(), k.get(), {d_cu.get(), 3, n}, d, prob.get(), bnd.get()};
  Testbed<Op>().run_ok(a);
  const auto p = prob.download();
  const auto b = bnd.download();
  const auto want = ref::cosine_router(std::vector<double>(qf.begin(), qf.end()), std::vector<double>(kf.begin(), kf.end()), d, cu);
  for (std::int64_t t = 0; t < n; ++t) {
    CHECK(p[t] == doctest::Approx(want[t]).epsilon(1e-5));
    CHECK(b[t] == (p[t] > 0.5f));
  }
  CHECK(p[3] == 0.5f);
  CHECK(b[3] == 0);
  for (int t : {0, 5, 6}) {  // every sequence start, the length-1 sequence included
    CHECK(p[t] == 1.0f);
    CHECK(b[t] == 1);
  }
}

// got[i] against the central difference of L in x[i] (x is restored).
template <class F>
void check_gradient(const std::vector<float>& got, std::vector<double>& x, F&& L, double scale) {
  REQUIRE(got.size() == x.size());
  const double h = 1e-6;
  for (std::size_t i = 0; i < x.size(); ++i) {
    CAPTURE(i);
    const double save = x[i];
    x[i] = save + h;
    const double up = L();
    x[i] = save - h;
    const double down = L();
    x[i] = save;
    CHECK(got[i] == doctest::Approx((up - down) / (2 * h)).epsilon(1e-3).scale(scale));
  }
}

TEST_CASE("cosine router: backward against finite differences") {
  const int d = 5;
  const std::vector<std::int32_t> cu = {0, 4, 9};
  const std::int64_t n = cu.back();
  auto qf = random_values<float>(static_cast<std::size_t>(n * d), 3);
  auto kf = random_values<float>(static_cast<std::size_t>(n * d), 4);
  auto gf = random_values<float>(static_cast<std::size_t>(n), 5);
  DeviceBuffer<float> q(qf), k(kf), g(gf), gq(n * d), gk(n * d);
  DeviceBuffer<std::int32_t> d_cu(cu);
  using Op = rt::CosineRouterBackward<float>;
  Op::Arguments a{q.get(), k.get(), g.get(), {d_cu.get(), 2, n}, d, gq.get(), gk.get()};
  Testbed<Op>().run_ok(a);
  const auto got_q = gq.download(), got_k = gk.download();
  std::vector<double> qd(qf.begin(), qf.end()), kd(kf.begin(), kf.end());
  auto L = [&] {
    const auto p = ref::cosine_router(qd, kd, d, cu);
    double s = 0;
    for (std::int64_t t = 0; t < n; ++t) s += gf[t] * p[t];
    return s;
  };
  check_gradient(got_q, qd, L, 1e-3);
  check_gradient(got_k, kd, L, 1e-3);
}

TEST_CASE("cosine router: the generation step equals the offline router") {
  const int d = 6;
  const std::vector<std::int32_t> cu = {0, 8};
  auto qf = random_values<float>(8 * d, 6);
  auto kf = random_values<float>(8 * d, 7);
  DeviceBuffer<float> q(qf), k(kf), prob(8);
  // Position 5: q_4 orthogonal to k_5, so p = 0.5 exactly, which is no boundary.
  for (int c = 0; c < d; ++c) {
    qf[4 * d + c] = c == 0 ? 1.0f : 0.0f;
    kf[5 * d + c] = c == 1 ? 3.0f : 0.0f;
  }
  q.upload(qf);
  k.upload(kf);
  DeviceBuffer<std::int32_t> d_cu(cu);
  DeviceBuffer<std::uint8_t> bnd(8);
  using Op = rt::CosineRouterForward<float>;
  Op::Arguments a{q.get(), k.get(), {d_cu.get(), 1, 8}, d, prob.get(), bnd.get()};
  Testbed<Op>().run_ok(a);
  const auto offline = prob.download();
  const auto offline_b = bnd.download();
  CHECK(offline[5] == 0.5f);
  CHECK(offline_b[5] == 0);
  for (int t = 0; t < 8; ++t) {
    CAPTURE(t);
    std::vector<float> qp(d), kn(kf.begin() + t * d, kf.begin() + (t + 1) * d);
    if (t > 0) std::copy(qf.begin() + (t - 1) * d, qf.begin() + t * d, qp.begin());
    DeviceBuffer<float> dq(qp), dk(kn), p1(1);
    DeviceBuffer<std::uint8_t> first(std::vector<std::uint8_t>{static_cast<std::uint8_t>(t == 0)}), b1(1);
    b1.fill_bytes(0x7f);
    rt::CosineRouterStep<float>::Arguments s{dq.get(), dk.get(), first.get(), 1, d, p1.get(), b1.get()};
    Testbed<rt::CosineRouterStep<float>>().run_ok(s);
    CHECK(p1.download()[0] == offline[t]);
    CHECK(b1.download()[0] == offline_b[t]);  // the step's boundary rule is the offline one (p = 0.5: none)
  }
}

TEST_CASE("cosine router: bad offsets are reported on the device and nothing is written") {
  // cu[0] = 2: before the device check existed, run() returned ok and the
  // kernels read q[-d] and wrote grad_q[-d].
  const int d = 4;
  const std::int64_t n = 7;
  auto qf = random_values<float>(static_cast<std::size_t>(n * d), 9);
  DeviceBuffer<float> q(qf), k(qf), prob(n), g(std::vector<float>(n, 1.0f)), gq(n * d), gk(n * d);
  DeviceBuffer<std::int32_t> cu(std::vector<std::int32_t>{0, 3, 7}), bad(std::vector<std::int32_t>{2, 3, 7}),
      down(std::vector<std::int32_t>{0, 5, 3, 7}), short_end(std::vector<std::int32_t>{0, 3, 6});
  using Code = tokenless::StatusCode;
  {
    using Op = rt::CosineRouterForward<float>;
    Testbed<Op> tb;
    tb.watch(prob, 0x7f);
    tb.reject({q.get(), k.get(), {cu.get(), 2, n}, d, prob.get(), nullptr},
              {{"cu[0] = 2", [&](auto& a) { a.batch.cu_seqlens = bad.get(); }, Code::invalid_argument,
                "router::CosineRouterForward: argument 'batch.cu_seqlens'"},
               {"decreasing", [&](auto& a) { a.batch = {down.get(), 3, n}; }, Code::invalid_argument, "cu[2] = 3 after cu[1] = 5"},
               {"short end", [&](auto& a) { a.batch.cu_seqlens = short_end.get(); }, Code::invalid_argument, "cu[2] = 6"},
               {"no q", [](auto& a) { a.q = nullptr; }, Code::null_pointer, "'q'"},
               {"no prob", [](auto& a) { a.prob = nullptr; }, Code::null_pointer, "'prob'"},
               {"empty batch", [](auto& a) { a.batch.total = 0; }, Code::empty, "total 0"},
               {"no d", [](auto& a) { a.d = 0; }, Code::empty, "'d'"}});
  }
  {
    using Op = rt::CosineRouterBackward<float>;
    Testbed<Op> tb;
    tb.watch(gq, 0x7f).watch(gk, 0x7f);
    tb.reject({q.get(), k.get(), g.get(), {cu.get(), 2, n}, d, gq.get(), gk.get()},
              {{"cu[0] = 2", [&](auto& a) { a.batch.cu_seqlens = bad.get(); }, Code::invalid_argument, "cu[0] = 2"},
               {"no grad_prob", [](auto& a) { a.grad_prob = nullptr; }, Code::null_pointer, "'grad_prob'"},
               {"no grad_k", [](auto& a) { a.grad_k = nullptr; }, Code::null_pointer, "'grad_k'"}});
  }
  {
    DeviceBuffer<std::uint8_t> bnd(n);
    DeviceBuffer<float> loss(1);
    Testbed<rt::RatioLoss> tb;
    tb.watch(loss, 0x7f).watch(g, 0x7f);
    rt::RatioLoss::Arguments a;
    a.prob = prob.get();
    a.boundary = bnd.get();
    a.batch = {cu.get(), 2, n};
    a.scope = rt::RatioScope::per_sequence;
    a.loss = loss.get();
    a.grad_prob = g.get();
    tb.reject(a, {{"cu[0] = 2", [&](auto& b) { b.batch.cu_seqlens = bad.get(); }, Code::invalid_argument, "cu[0] = 2"},
                  {"R = 1", [](auto& b) { b.target_ratio = 1.0f; }, Code::invalid_argument, "'target_ratio'"},
                  {"NaN scale", [](auto& b) { b.grad_scale = NAN; }, Code::invalid_argument, "'grad_scale'"},
                  {"global without sums", [](auto& b) { b.scope = rt::RatioScope::global; }, Code::null_pointer,
                   "'global_sums'"}});
  }
}

TEST_CASE("ratio loss: every scope, loss and gradient against finite differences") {
  const std::vector<std::int32_t> cu = {0, 6, 13, 20};
  const std::int64_t n = cu.back();
  std::mt19937 rng(8);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> pf(static_cast<std::size_t>(n));
  std::vector<std::uint8_t> bf(static_cast<std::size_t>(n));
  for (std::int64_t t = 0; t < n; ++t) {
    pf[t] = u(rng);
    bf[t] = pf[t] > 0.5f;
  }
  DeviceBuffer<float> p(pf), loss(1), grad(n), gsums(std::vector<float>{30.0f, 41.5f, 100.0f});
  DeviceBuffer<std::uint8_t> b(bf);
  DeviceBuffer<std::int32_t> d_cu(cu);
  const float R = 4.0f;
  for (auto scope : {rt::RatioScope::per_batch, rt::RatioScope::per_sequence, rt::RatioScope::global}) {
    CAPTURE(static_cast<int>(scope));
    rt::RatioLoss::Arguments a;
    a.prob = p.get();
    a.boundary = b.get();
    a.batch = {d_cu.get(), 3, n};
    a.scope = scope;
    a.global_sums = gsums.get();
    a.target_ratio = R;
    a.grad_scale = 1.0f;
    a.loss = loss.get();
    a.grad_prob = grad.get();
    Testbed<rt::RatioLoss>().run_ok(a);
    const float got = loss.download()[0];
    const auto got_grad = grad.download();
    std::vector<double> pd(pf.begin(), pf.end());
    const std::vector<std::int32_t> groups = scope == rt::RatioScope::per_sequence ? cu : std::vector<std::int32_t>{0, static_cast<std::int32_t>(n)};
    auto L = [&] {
      if (scope != rt::RatioScope::global) return ref::ratio_loss(pd, bf, groups, R);
      // Global: local p enters the global sum of p; F and the count come from the caller.
      double local = 0;
      for (double x : pd) local += x;
      const double F = 30.0 / 100.0, G = (41.5 - std::accumulate(pf.begin(), pf.end(), 0.0) + local) / 100.0;
      return R / (R - 1) * ((R - 1) * F * G + (1 - F) * (1 - G));
    };
    CHECK(got == doctest::Approx(L()).epsilon(1e-5));
    check_gradient(got_grad, pd, L, 1e-4);
  }
  rt::RatioLoss::Arguments bad;
  bad.prob = p.get();
  bad.boundary = b.get();
  bad.loss = loss.get();
  bad.grad_prob = grad.get();
  bad.batch = tokenless::VarlenBatch::uniform(1, n);
  bad.target_ratio = 1.0f;
  CHECK(std::string(rt::RatioLoss::can_implement(bad).message()).find("'target_ratio'") != std::string::npos);
}

TEST_CASE("cosine router step: bad input is refused and nothing is written") {
  using Op = rt::CosineRouterStep<float>;
  using Code = tokenless::StatusCode;
  DeviceBuffer<float> q(8), k(8), prob(2);
  Testbed<Op> tb;
  tb.watch(prob, 0x7f);
  tb.reject({q.get(), k.get(), nullptr, 2, 4, prob.get(), nullptr},
            {{"no q", [](auto& a) { a.q_prev = nullptr; }, Code::null_pointer, "'q_prev'"},
             {"no prob", [](auto& a) { a.prob = nullptr; }, Code::null_pointer, "'prob'"},
             {"no streams", [](auto& a) { a.streams = 0; }, Code::empty, "'streams'"},
             {"no d", [](auto& a) { a.d = 0; }, Code::empty, "'d'"},
             {"streams * d over 32 bits", [](auto& a) { a.streams = std::int64_t{1} << 30; }, Code::overflow, "streams * d"}});
}

}  // namespace tlt::router_tests
