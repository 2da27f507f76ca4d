#pragma once
// The backbone blocks: RMSNorm fused with the residual add, both weight
// orders (transformers' cast-then-scale and fp32 scaling), with and without
// a residual, in place, forward and backward (dL/dh with the residual path,
// the weight's gradient written and accumulated), NaN propagation and bad
// input. Against the double reference at the naive same-precision
// tolerance; shared by the emu and gpu tiers.
#include "../support/testbed.hpp"

#include <tokenless/blocks/rms_norm.cuh>
#include <tokenless/reference/blocks.hpp>

#include <cmath>
#include <cstring>
#include <functional>

namespace tlt::blocks_tests {

namespace bk = tokenless::blocks;
namespace ref = tokenless::reference::blocks;
using tokenless::StatusCode;

template <class T>
std::function<double(double)> round_d() {
  return [](double v) { return static_cast<double>(tokenless::round_trip<T>(static_cast<float>(v))); };
}
template <class T>
std::function<float(float)> round_f() {
  return [](float v) { return tokenless::round_trip<T>(v); };
}

template <class P, class T>
void check_rms_norm(std::int64_t rows, int d, bool with_residual, std::uint64_t seed) {
  CAPTURE(P::kName);
  CAPTURE(d);
  CAPTURE(with_residual);
  constexpr bool kCast = std::is_same_v<P, bk::NormThenCast>;
  const float eps = 1e-5f;
  const auto xh = random_values<T>(static_cast<std::size_t>(rows * d), seed, -2.0f, 2.0f);
  const auto rh = random_values<T>(static_cast<std::size_t>(rows * d), seed + 1, -2.0f, 2.0f);
  const auto wh = random_values<T>(static_cast<std::size_t>(d), seed + 2, 0.5f, 1.5f);
  const auto gh = random_values<T>(static_cast<std::size_t>(rows * d), seed + 3);
  const auto grh = random_values<T>(static_cast<std::size_t>(rows * d), seed + 4);
  DeviceBuffer<T> x(xh), res(rh), w(wh), out(rows * d), h(rows * d), g(gh), gr(grh), dh(rows * d);
  DeviceBuffer<float> inv(rows), dw(std::vector<float>(static_cast<std::size_t>(d), 0.5f));
  REQUIRE_OK((bk::RmsNorm<P, T>::run({.x = x.get(), .residual = with_residual ? res.get() : nullptr, .weight = w.get(),
                                      .rows = rows, .d = d, .eps = eps, .out = out.get(), .residual_out = h.get(),
                                      .inv_rms = inv.get()})));
  const std::vector<double> no;
  const std::vector<float> nof;
  const auto t = ref::rms_norm<double>(widen(xh), with_residual ? widen(rh) : no, widen(wh), rows, d, eps, kCast,
                                       round_d<T>());
  const auto n = ref::rms_norm<float>(to_floats(xh), with_residual ? to_floats(rh) : nof, to_floats(wh), rows, d, eps,
                                      kCast, round_f<T>());
  const auto u = tokenless::dtype_traits<T>::unit_roundoff;
  {
    INFO("y");
    check_accuracy(to_floats(out.download()), rounded<T>(std::vector<double>(n.y.begin(), n.y.end())), t.y, 4.0, u);
  }
  CHECK(to_floats(h.download()) == std::vector<float>(t.h.begin(), t.h.end()));  // the rounded add, exactly
  {
    INFO("inv_rms");
    check_accuracy(inv.download(), n.inv, t.inv, 4.0, tokenless::dtype_traits<float>::unit_roundoff);
  }
  for (bool residual_grad : {false, true}) {
    CAPTURE(residual_grad);
    using Bwd = bk::RmsNormBackward<P, T>;
    REQUIRE_OK(Bwd::run({.h = h.get(), .inv_rms = inv.get(), .weight = w.get(), .grad_out = g.get(),
                         .grad_residual = residual_grad ? gr.get() : nullptr, .rows = rows, .d = d,
                         .grad_h = dh.get(), .grad_weight = dw.get(), .accumulate_weight = residual_grad}));
    const auto [tdh, tdw] = ref::rms_norm_backward<double>(t.h, widen(wh), widen(gh), residual_grad ? widen(grh) : no,
                                                           rows, d, eps, kCast, round_d<T>());
    const auto [ndh, ndw] = ref::rms_norm_backward<float>(std::vector<float>(t.h.begin(), t.h.end()), to_floats(wh),
                                                          to_floats(gh), residual_grad ? to_floats(grh) : nof, rows, d,
                                                          eps, kCast, round_f<T>());
    {
      INFO("dL/dh");
      check_accuracy(to_floats(dh.download()), rounded<T>(std::vector<double>(ndh.begin(), ndh.end())), tdh, 4.0, u);
    }
    // The weight's gradient: written, then (second pass) added to what the first wrote.
    std::vector<double> want = tdw;
    std::vector<float> naive = ndw;
    if (residual_grad) {  // dL/dw does not depend on the residual path: twice the first pass's
      for (int c = 0; c < d; ++c) {
        want[c] = 2.0 * tdw[c];
        naive[c] = 2.0f * ndw[c];
      }
    }
    INFO("dL/dw");
    check_accuracy(dw.download(), naive, want, 4.0, tokenless::dtype_traits<float>::unit_roundoff);
  }
}

TEST_CASE("blocks: RMSNorm fused with the residual add, forward and backward") {
  check_rms_norm<bk::NormThenCast, __nv_bfloat16>(9, 256, true, 1);   // Llama's order, vector path
  check_rms_norm<bk::NormThenCast, __half>(5, 72, false, 2);
  check_rms_norm<bk::ScaleInFp32, float>(7, 100, true, 3);
  check_rms_norm<bk::ScaleInFp32, __nv_bfloat16>(3, 30, true, 4);     // scalar path
}

TEST_CASE("blocks: RMSNorm in place (residual_out over the residual); a NaN fills its row only") {
  const std::int64_t rows = 3;
  const int d = 64;
  auto xh = random_values<float>(rows * d, 11);
  const auto rh = random_values<float>(rows * d, 12);
  const auto wh = random_values<float>(d, 13, 0.5f, 1.5f);
  xh[1 * d + 7] = NAN;
  DeviceBuffer<float> x(xh), res(rh), w(wh), out(rows * d), ref_out(rows * d), h(rows * d);
  using Op = bk::RmsNorm<bk::NormThenCast, float>;
  REQUIRE_OK(Op::run({.x = x.get(), .residual = res.get(), .weight = w.get(), .rows = rows, .d = d, .out = ref_out.get(),
                      .residual_out = h.get()}));
  REQUIRE_OK(Op::run({.x = x.get(), .residual = res.get(), .weight = w.get(), .rows = rows, .d = d, .out = out.get(),
                      .residual_out = res.get()}));
  const auto a = out.download(), b = ref_out.download(), r = res.download(), hh = h.download();
  for (std::int64_t i = 0; i < rows * d; ++i) {
    CHECK((std::memcmp(&a[i], &b[i], 4) == 0 || (std::isnan(a[i]) && std::isnan(b[i]))));
    CHECK((std::memcmp(&r[i], &hh[i], 4) == 0 || (std::isnan(r[i]) && std::isnan(hh[i]))));
    CHECK(std::isnan(a[i]) == (i / d == 1));  // row 1 only
  }
}

TEST_CASE("blocks: RMSNorm's bad input gets a clear Status") {
  DeviceBuffer<float> x(64), w(16), out(64);
  using Op = bk::RmsNorm<bk::NormThenCast, float>;
  const Op::Arguments good{.x = x.get(), .weight = w.get(), .rows = 4, .d = 16, .out = out.get()};
  REQUIRE_OK(Op::can_implement(good));
  auto a = good;
  a.eps = NAN;
  CHECK(Op::can_implement(a).code() == StatusCode::invalid_argument);
  a = good;
  a.weight = nullptr;
  CHECK(Op::can_implement(a).code() == StatusCode::null_pointer);
  a = good;
  a.d = 0;
  CHECK(Op::can_implement(a).code() == StatusCode::empty);
  a = good;
  a.out_stride = 8;
  CHECK(Op::can_implement(a).code() == StatusCode::invalid_argument);
}

}  // namespace tlt::blocks_tests
