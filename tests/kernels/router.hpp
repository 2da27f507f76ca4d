#pragma once
// H-Net / DLCM: the cosine router (forward, backward against finite
// differences, p = 0.5 exactly, varlen sequence starts, the generation step)
// and the ratio loss in every scope (loss and gradient against finite
// differences). Shared by the emu and gpu tiers.
#include "../support/support.hpp"

namespace tlt::router_tests {

namespace pt = tokenless::patcher;
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
  pt::CosineRouterForward<float>::Arguments a{q.get(), k.get(), n, d, d_cu.get(), 3, prob.get(), bnd.get()};
  REQUIRE_OK(pt::CosineRouterForward<float>::run(a));
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

TEST_CASE("cosine router: backward against finite differences") {
  const int d = 5;
  const std::vector<std::int32_t> cu = {0, 4, 9};
  const std::int64_t n = cu.back();
  auto qf = random_values<float>(static_cast<std::size_t>(n * d), 3);
  auto kf = random_values<float>(static_cast<std::size_t>(n * d), 4);
  auto gf = random_values<float>(static_cast<std::size_t>(n), 5);
  DeviceBuffer<float> q(qf), k(kf), g(gf), gq(n * d), gk(n * d);
  DeviceBuffer<std::int32_t> d_cu(cu);
  pt::CosineRouterBackward<float>::Arguments a{q.get(), k.get(), g.get(), n, d, d_cu.get(), 2, gq.get(), gk.get()};
  REQUIRE_OK(pt::CosineRouterBackward<float>::run(a));
  const auto got_q = gq.download(), got_k = gk.download();
  std::vector<double> qd(qf.begin(), qf.end()), kd(kf.begin(), kf.end());
  auto L = [&] {
    const auto p = ref::cosine_router(qd, kd, d, cu);
    double s = 0;
    for (std::int64_t t = 0; t < n; ++t) s += gf[t] * p[t];
    return s;
  };
  const double h = 1e-6;
  for (std::size_t i = 0; i < qd.size(); ++i) {
    const double save = qd[i];
    qd[i] = save + h;
    const double up = L();
    qd[i] = save - h;
    const double down = L();
    qd[i] = save;
    CHECK(got_q[i] == doctest::Approx((up - down) / (2 * h)).epsilon(1e-3).scale(1e-3));
  }
  for (std::size_t i = 0; i < kd.size(); ++i) {
    const double save = kd[i];
    kd[i] = save + h;
    const double up = L();
    kd[i] = save - h;
    const double down = L();
    kd[i] = save;
    CHECK(got_k[i] == doctest::Approx((up - down) / (2 * h)).epsilon(1e-3).scale(1e-3));
  }
}

TEST_CASE("cosine router: the generation step equals the offline router") {
  const int d = 6;
  const std::vector<std::int32_t> cu = {0, 8};
  auto qf = random_values<float>(8 * d, 6);
  auto kf = random_values<float>(8 * d, 7);
  DeviceBuffer<float> q(qf), k(kf), prob(8);
  DeviceBuffer<std::int32_t> d_cu(cu);
  pt::CosineRouterForward<float>::Arguments a{q.get(), k.get(), 8, d, d_cu.get(), 1, prob.get(), nullptr};
  REQUIRE_OK(pt::CosineRouterForward<float>::run(a));
  const auto offline = prob.download();
  for (int t = 0; t < 8; ++t) {
    std::vector<float> qp(d), kn(kf.begin() + t * d, kf.begin() + (t + 1) * d);
    if (t > 0) std::copy(qf.begin() + (t - 1) * d, qf.begin() + t * d, qp.begin());
    DeviceBuffer<float> dq(qp), dk(kn), p1(1);
    DeviceBuffer<std::uint8_t> first(std::vector<std::uint8_t>{static_cast<std::uint8_t>(t == 0)});
    pt::CosineRouterStep<float>::Arguments s{dq.get(), dk.get(), first.get(), 1, d, p1.get(), nullptr};
    REQUIRE_OK(pt::CosineRouterStep<float>::run(s));
    CHECK(p1.download()[0] == offline[t]);
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
  for (auto scope : {pt::RatioScope::per_batch, pt::RatioScope::per_sequence, pt::RatioScope::global}) {
    CAPTURE(static_cast<int>(scope));
    pt::RatioLoss::Arguments a;
    a.prob = p.get();
    a.boundary = b.get();
    a.n_total = n;
    a.cu_seqlens = d_cu.get();
    a.num_seqs = 3;
    a.scope = scope;
    a.global_sums = gsums.get();
    a.target_ratio = R;
    a.grad_scale = 1.0f;
    a.loss = loss.get();
    a.grad_prob = grad.get();
    DeviceBuffer<unsigned char> ws(pt::RatioLoss::workspace_size(a));
    REQUIRE_OK(pt::RatioLoss::run(a, {ws.get(), pt::RatioLoss::workspace_size(a)}));
    const float got = loss.download()[0];
    const auto got_grad = grad.download();
    std::vector<double> pd(pf.begin(), pf.end());
    const std::vector<std::int32_t> groups = scope == pt::RatioScope::per_sequence ? cu : std::vector<std::int32_t>{0, static_cast<std::int32_t>(n)};
    auto L = [&] {
      if (scope != pt::RatioScope::global) return ref::ratio_loss(pd, bf, groups, R);
      // Global: local p enters the global sum of p; F and the count come from the caller.
      double local = 0;
      for (double x : pd) local += x;
      const double F = 30.0 / 100.0, G = (41.5 - std::accumulate(pf.begin(), pf.end(), 0.0) + local) / 100.0;
      return R / (R - 1) * ((R - 1) * F * G + (1 - F) * (1 - G));
    };
    CHECK(got == doctest::Approx(L()).epsilon(1e-5));
    const double h = 1e-6;
    for (std::int64_t t = 0; t < n; ++t) {
      const double save = pd[t];
      pd[t] = save + h;
      const double up = L();
      pd[t] = save - h;
      const double down = L();
      pd[t] = save;
      CHECK(got_grad[t] == doctest::Approx((up - down) / (2 * h)).epsilon(1e-3).scale(1e-4));
    }
  }
  pt::RatioLoss::Arguments bad;
  bad.prob = p.get();
  bad.boundary = b.get();
  bad.loss = loss.get();
  bad.grad_prob = grad.get();
  bad.n_total = n;
  bad.target_ratio = 1.0f;
  CHECK(std::string(pt::RatioLoss::can_implement(bad).message()).find("'target_ratio'") != std::string::npos);
}

}  // namespace tlt::router_tests
