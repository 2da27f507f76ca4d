// Host tier: the host references against values worked out by hand.
#include <doctest/doctest.h>
#include <tokenless/tokenless.hpp>

#include <cmath>
#include <vector>

using namespace tokenless;
namespace rr = tokenless::row_reduce;

TEST_CASE("reference row_reduce: sums, squares and max by hand, with a row stride") {
  const std::vector<float> x = {1, -2, 3, 99,  //
                                4, 5, -6, 99};  // column 3 lies outside the view (ld 4, cols 3)
  auto s = reference::row_reduce<rr::SumPolicy>(x.data(), 2, 3, 4);
  auto q = reference::row_reduce<rr::SumSquaresPolicy>(x.data(), 2, 3, 4);
  auto m = reference::row_reduce<rr::MaxPolicy>(x.data(), 2, 3, 4);
  CHECK(s == std::vector<double>{2, 3});
  CHECK(q == std::vector<double>{14, 77});
  CHECK(m == std::vector<double>{3, 5});
  auto n = reference::row_reduce_naive<rr::SumPolicy>(x.data(), 2, 3, 4);
  CHECK(n == std::vector<float>{2, 3});
}

TEST_CASE("reference row_reduce backward: gradient of each policy") {
  const std::vector<float> x = {1, 7, 7, -1};
  const std::vector<float> g = {0.5f};
  CHECK(reference::row_reduce_backward<rr::SumPolicy>(x.data(), g.data(), 1, 4, 4) ==
        std::vector<float>{0.5f, 0.5f, 0.5f, 0.5f});
  CHECK(reference::row_reduce_backward<rr::SumSquaresPolicy>(x.data(), g.data(), 1, 4, 4) ==
        std::vector<float>{1, 7, 7, -1});
  // Ties: the first maximal element takes the whole gradient.
  CHECK(reference::row_reduce_backward<rr::MaxPolicy>(x.data(), g.data(), 1, 4, 4) ==
        std::vector<float>{0, 0.5f, 0, 0});
  const std::vector<float> with_nan = {1, std::nanf(""), 9, 2};
  CHECK(reference::row_reduce_backward<rr::MaxPolicy>(with_nan.data(), g.data(), 1, 4, 4) ==
        std::vector<float>{0, 0.5f, 0, 0});
}

TEST_CASE("row_reduce policies satisfy the concept and tuning is chosen by compute capability") {
  static_assert(rr::Policy<rr::SumPolicy> && rr::Policy<rr::SumSquaresPolicy> && rr::Policy<rr::MaxPolicy>);
  static_assert(rr::tuning_for(80) == rr::kTuningSm80);
  static_assert(rr::tuning_for(90) == rr::kTuningSm90);
  static_assert(rr::tuning_for(100) == rr::kTuningSm90);
  CHECK(rr::is_max_policy<rr::MaxPolicy>);
  CHECK_FALSE(rr::is_max_policy<rr::SumPolicy>);
}

// H-Net's dechunk: the reference's adjoint against central differences of
// its forward, on a random batch (two sequences, an empty chunk), through z,
// p and the clamp (p past 1 - 1e-4 gets no gradient). The STE term is not a
// derivative of the forward, so the comparison runs without it.
TEST_CASE("reference dechunk: the backward is the forward's derivative") {
  namespace bnr = tokenless::reference::bottleneck;
  const auto segs = bnr::segments_from_lengths({{2, 1, 0, 3}, {1, 2, 2}});
  const int d = 3;
  const std::int64_t n = 11;
  std::vector<double> z(segs.size() * d), w(n * d);
  for (std::size_t i = 0; i < z.size(); ++i) z[i] = std::sin(1.3 * static_cast<double>(i) + 0.2);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = std::cos(0.7 * static_cast<double>(i));
  std::vector<float> p = {1.0f, 0.3f, 0.7f, 0.625f, 0.1f, 0.2f, 1.0f, 0.99999f, 0.4f, 0.8125f, 0.2f};
  const auto loss = [&](const std::vector<double>& zz, const std::vector<float>& pp) {
    const auto out = bnr::dechunk<double>(zz, pp, d, segs, {}, n).out;
    double l = 0;
    for (std::size_t i = 0; i < out.size(); ++i) l += w[i] * out[i];
    return l;
  };
  const auto g = bnr::dechunk_backward<double>(w, z, p, d, segs, n, false);
  for (std::size_t i = 0; i < z.size(); ++i) {
    auto hi = z, lo = z;
    hi[i] += 1e-6;
    lo[i] -= 1e-6;
    CHECK(g.z[i] == doctest::Approx((loss(hi, p) - loss(lo, p)) / 2e-6).epsilon(1e-6));
  }
  for (std::int64_t t = 0; t < n; ++t) {
    CAPTURE(t);
    auto hi = p, lo = p;
    // A step under 1e-4, so that a clamped p stays clamped on both sides.
    const float h = 1.0f / 16384;
    hi[t] += h;
    lo[t] -= h;
    const double fd = (loss(z, hi) - loss(z, lo)) / (static_cast<double>(hi[t]) - lo[t]);
    // Chunk starts inside the clamp (positions 2, 3 and 9) get the EMA's
    // derivative; the rest (no chunk starts there, or p is clamped) none.
    const bool moves = t == 2 || t == 3 || t == 9;
    CHECK(g.prob[t] == doctest::Approx(moves ? fd : 0.0).epsilon(1e-4).scale(1.0));
    if (!moves) CHECK(fd == doctest::Approx(0.0).scale(1.0));
  }
}

// The bottleneck's other references against central differences: pooling
// (sum, mean, max without ties, first, last), the concept loss's gradient,
// and sparse decode's (values, dictionary, std).
TEST_CASE("reference bottleneck: pooling, the concept loss and sparse decode are their derivatives") {
  namespace bnr = tokenless::reference::bottleneck;
  const auto segs = bnr::segments_from_lengths({{3, 1}, {2}});
  const int d = 2;
  std::vector<double> x(12), w(6);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::sin(2.1 * static_cast<double>(i) + 0.3);  // no ties
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = std::cos(1.7 * static_cast<double>(i));
  for (auto mode : {bnr::Pool::sum, bnr::Pool::mean, bnr::Pool::max, bnr::Pool::min, bnr::Pool::first, bnr::Pool::last}) {
    const auto g = bnr::pool_backward(mode, x, w, d, segs);
    for (std::size_t i = 0; i < x.size(); ++i) {
      auto hi = x, lo = x;
      hi[i] += 1e-6;
      lo[i] -= 1e-6;
      const auto ph = bnr::pool(mode, hi, d, segs), pl = bnr::pool(mode, lo, d, segs);
      double fd = 0;
      for (std::size_t j = 0; j < ph.size(); ++j) fd += w[j] * (ph[j] - pl[j]) / 2e-6;
      CHECK(g[i] == doctest::Approx(fd).epsilon(1e-6));
    }
  }
  // The concept loss: dL/dz of λ · mean_r mean_j CE(z_r, label_rj).
  const std::vector<double> z = {0.3, -1.1, 0.8, 2.0, -0.5, 0.1, 0.7, -0.2};
  const std::vector<std::int32_t> labels = {2, 0, 3, 3};
  const auto [l0, dz] = bnr::concept_loss<double>(z, 2, 4, labels, 2, 0.1);
  for (std::size_t i = 0; i < z.size(); ++i) {
    auto hi = z, lo = z;
    hi[i] += 1e-6;
    lo[i] -= 1e-6;
    const double fd = (bnr::concept_loss<double>(hi, 2, 4, labels, 2, 0.1).first -
                       bnr::concept_loss<double>(lo, 2, 4, labels, 2, 0.1).first) / 2e-6;
    CHECK(dz[i] == doctest::Approx(fd).epsilon(1e-6));
  }
  (void)l0;
  // Sparse decode with the de-normalisation: dL/dval, dL/dW, dL/dstd, dL/dmean, dL/dbias.
  bnr::Codes codes{{1, 3, 0, 3}, {0.5f, -1.25f, 2.0f, 0.75f}};
  const std::vector<double> dict = {0.2, -0.4, 1.1, 0.3, -0.7, 0.9, 0.05, 0.6}, bias = {0.1, -0.3}, mean = {0.4, -0.2},
                            sd = {1.5, 0.8}, gw = {0.3, -0.6, 1.2, 0.5};
  const auto loss = [&](const bnr::Codes& c, const std::vector<double>& dc, const std::vector<double>& b,
                        const std::vector<double>& m, const std::vector<double>& s) {
    const auto out = bnr::sparse_decode<double>(c, 2, 2, dc, 2, b, {}, m, s);
    double l = 0;
    for (std::size_t i = 0; i < out.size(); ++i) l += gw[i] * out[i];
    return l;
  };
  const auto gr = bnr::sparse_decode_backward<double>(codes, 2, 2, dict, 4, 2, bias, {}, sd, gw);
  const auto fd_of = [&](auto perturb) {
    return (perturb(1e-6) - perturb(-1e-6)) / 2e-6;
  };
  for (std::size_t i = 0; i < dict.size(); ++i) {
    CHECK(gr.dict[i] == doctest::Approx(fd_of([&](double h) {
                          auto dc = dict;
                          dc[i] += h;
                          return loss(codes, dc, bias, mean, sd);
                        })).epsilon(1e-6));
  }
  for (int r = 0; r < 2; ++r) {
    CHECK(gr.std[r] == doctest::Approx(fd_of([&](double h) {
                         auto s = sd;
                         s[r] += h;
                         return loss(codes, dict, bias, mean, s);
                       })).epsilon(1e-6));
    CHECK(gr.mean[r] == doctest::Approx(fd_of([&](double h) {
                          auto m = mean;
                          m[r] += h;
                          return loss(codes, dict, bias, m, sd);
                        })).epsilon(1e-6));
  }
  for (int c = 0; c < 2; ++c) {
    CHECK(gr.bias[c] == doctest::Approx(fd_of([&](double h) {
                          auto b = bias;
                          b[c] += h;
                          return loss(codes, dict, b, mean, sd);
                        })).epsilon(1e-6));
  }
  for (std::size_t e = 0; e < codes.val.size(); ++e) {
    // Values are float in the codes: a step of 2^-10, exact there.
    auto hi = codes, lo = codes;
    hi.val[e] += 1.0f / 1024;
    lo.val[e] -= 1.0f / 1024;
    const double fd = (loss(hi, dict, bias, mean, sd) - loss(lo, dict, bias, mean, sd)) / (2.0 / 1024);
    CHECK(gr.val[e] == doctest::Approx(fd).epsilon(1e-6));
  }
}

TEST_CASE("reference MoE: the backward is the forward's derivative (experts, renormalised router, balance term)") {
  namespace rb = tokenless::reference::blocks;
  const std::int64_t T = 3;
  const int d = 4, E = 3, k = 2, F = 2;
  auto rnd = [](int n, double seed) {
    std::vector<double> v(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) v[i] = std::sin(seed * (i + 1) * 1.7 + 0.3);
    return v;
  };
  auto x = rnd(T * d, 1.1), router = rnd(E * d, 2.3), gu = rnd(E * 2 * F * d, 3.7), down = rnd(E * d * F, 4.1);
  const auto g = rnd(T * d, 5.3), fraction = rnd(E, 6.7);
  const double coef = 0.3;
  const auto id = [](double v) { return v; };
  const auto act = [](double v) { return rb::silu(v); };
  const auto act_d = [](double v) { return rb::silu_derivative(v); };
  const std::vector<std::int32_t> one{0, static_cast<std::int32_t>(T)};
  // L = <out, g> + coef · Σ_t Σ_e fraction[e] · p[t, e] (the balance term with its fractions held).
  auto loss = [&](const std::vector<double>& xx, const std::vector<double>& rr, const std::vector<double>& gg,
                  const std::vector<double>& dd, const std::vector<int>& fixed) {
    const auto logits = rb::grouped_gemm<double>(xx, rr, one, E, d, id);
    std::vector<int> ids;
    std::vector<double> w;
    rb::moe_route<double>(logits, T, E, k, true, ids, w);
    REQUIRE(ids == fixed);  // the step keeps the routing
    const auto out = rb::moe_experts<double>(xx, T, d, gg, dd, F, ids, w, k, act, id);
    double l = 0;
    for (std::size_t i = 0; i < out.size(); ++i) l += out[i] * g[i];
    for (std::int64_t t = 0; t < T; ++t) {
      double mx = logits[t * E], s = 0;
      for (int e = 1; e < E; ++e) mx = std::max(mx, logits[t * E + e]);
      for (int e = 0; e < E; ++e) s += std::exp(logits[t * E + e] - mx);
      for (int e = 0; e < E; ++e) l += coef * fraction[e] * std::exp(logits[t * E + e] - mx) / s;
    }
    return l;
  };
  const auto logits = rb::grouped_gemm<double>(x, router, one, E, d, id);
  std::vector<int> ids;
  std::vector<double> w;
  rb::moe_route<double>(logits, T, E, k, true, ids, w);
  const auto grads = rb::moe_backward<double>(x, T, d, logits, router, gu, down, E, F, ids, w, k, true, g, fraction,
                                              coef, act, act_d, id);
  auto fd = [&](std::vector<double>& v, std::size_t i) {
    const double h = 1e-6, keep = v[i];
    v[i] = keep + h;
    const double up = loss(x, router, gu, down, ids);
    v[i] = keep - h;
    const double dn = loss(x, router, gu, down, ids);
    v[i] = keep;
    return (up - dn) / (2 * h);
  };
  for (std::size_t i = 0; i < x.size(); ++i) CHECK(grads.dx[i] == doctest::Approx(fd(x, i)).epsilon(1e-6));
  for (std::size_t i = 0; i < router.size(); ++i) CHECK(grads.d_router[i] == doctest::Approx(fd(router, i)).epsilon(1e-6));
  for (std::size_t i = 0; i < gu.size(); ++i) CHECK(grads.d_gate_up[i] == doctest::Approx(fd(gu, i)).epsilon(1e-6));
  for (std::size_t i = 0; i < down.size(); ++i) CHECK(grads.d_down[i] == doctest::Approx(fd(down, i)).epsilon(1e-6));
}
