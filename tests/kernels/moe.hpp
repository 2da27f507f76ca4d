#pragma once
// Mixtral-style MoE and its grouped GEMM, against the double reference at
// the naive same-precision tolerance; shared by the emu and gpu tiers:
//   * the grouped GEMM over empty, single-row and multi-tile groups, n and k
//     off the tile sizes, every dtype; bad offsets reported with C untouched;
//   * the MoE block: the router's logits, then (routed from the kernel's own
//     logits, so that a one-ulp difference cannot change a choice) the
//     experts and the combine, top-1/2/3, more experts than a warp's lanes,
//     renormalised or not; the same bits on a second run;
//   * the backward (dL/dx and the fp32 weight gradients, the balance loss's
//     term included) against the reference, itself checked against finite
//     differences in the host tier; accumulation into the weight gradients;
//   * the load-balancing loss against transformers' load_balancing_loss_func
//     (golden values) and the reference;
//   * bad input.
#include "../support/testbed.hpp"

#include <tokenless/blocks/moe.cuh>
#include <tokenless/reference/blocks.hpp>

#include <cstring>
#include <functional>
#include <vector>

namespace tlt::moe_tests {

namespace bk = tokenless::blocks;
namespace ref = tokenless::reference::blocks;
using tokenless::StatusCode;
using tokenless::VarlenBatch;


template <class T>
void check_grouped_gemm(const std::vector<std::int32_t>& offsets, int n, int k, std::uint64_t seed) {
  CAPTURE(n);
  CAPTURE(k);
  const auto groups = static_cast<std::int64_t>(offsets.size() - 1);
  const std::int64_t m = offsets.back();
  const auto ah = random_values<T>(static_cast<std::size_t>(m * k), seed);
  const auto bh = random_values<T>(static_cast<std::size_t>(groups * n * k), seed + 1);
  DeviceBuffer<T> a(ah), b(bh), c(static_cast<std::size_t>(m * n));
  DeviceBuffer<std::int32_t> off(offsets);
  using Op = bk::GroupedGemm<T>;
  Testbed<Op> bed;
  bed.run_ok({.a = a.get(), .b = b.get(), .c = c.get(), .groups = VarlenBatch::packed(off.get(), groups, m), .n = n,
              .k = k});
  const auto truth = ref::grouped_gemm<double>(widen(ah), widen(bh), offsets, n, k, [](double v) { return v; });
  const auto naive = ref::grouped_gemm<float>(to_floats(ah), to_floats(bh), offsets, n, k, round_f<T>());
  check_accuracy(to_floats(c.download()), naive, truth, 4.0, tokenless::dtype_traits<T>::unit_roundoff);
}

TEST_CASE("blocks: grouped GEMM over device-side groups") {
  const std::vector<std::int32_t> offsets{0, 0, 70, 71, 200, 200};  // empty, multi-tile, one row, empty last
  check_grouped_gemm<__nv_bfloat16>(offsets, 80, 72, 1);
  check_grouped_gemm<__half>(offsets, 64, 128, 2);
  check_grouped_gemm<float>(offsets, 80, 70, 3);  // fp32: any k
  check_grouped_gemm<__nv_bfloat16>({0, 130}, 8, 16, 4);
}

TEST_CASE("blocks: grouped GEMM's bad input gets a clear Status and writes nothing") {
  using Op = bk::GroupedGemm<__nv_bfloat16>;
  DeviceBuffer<__nv_bfloat16> a(16 * 64), b(2 * 32 * 64), c(16 * 32);
  DeviceBuffer<std::int32_t> good_off(std::vector<std::int32_t>{0, 10, 16}), bad_off(std::vector<std::int32_t>{0, 12, 9});
  const Op::Arguments good{.a = a.get(), .b = b.get(), .c = c.get(),
                           .groups = VarlenBatch::packed(good_off.get(), 2, 16), .n = 32, .k = 64};
  Testbed<Op> bed;
  bed.watch(c);
  bed.reject(good, {
      {"k not a multiple of 8", [](auto& x) { x.k = 60; x.lda = 64; x.ldb = 64; }, StatusCode::unsupported, "k"},
      {"misaligned a", [&](auto& x) { x.a = a.get() + 1; }, StatusCode::misaligned, "a"},
      {"null c", [](auto& x) { x.c = nullptr; }, StatusCode::null_pointer, "c"},
      {"short lda", [](auto& x) { x.lda = 32; }, StatusCode::shape_mismatch, "a"},
      {"offsets not a prefix sum", [&](auto& x) { x.groups = VarlenBatch::packed(bad_off.get(), 2, 16); },
       StatusCode::invalid_argument, "cu[2] = 9"},
  });
}

template <class T>
void check_moe(std::int64_t tokens, int d, int experts, int k, int ffn, bool renormalize, std::uint64_t seed) {
  CAPTURE(d);
  CAPTURE(experts);
  CAPTURE(k);
  CAPTURE(renormalize);
  const auto xh = random_values<T>(static_cast<std::size_t>(tokens * d), seed, -1.0f, 1.0f);
  const auto rh = random_values<T>(static_cast<std::size_t>(experts * d), seed + 1, -0.5f, 0.5f);
  const auto guh = random_values<T>(static_cast<std::size_t>(experts) * 2 * ffn * d, seed + 2, -0.25f, 0.25f);
  const auto dh = random_values<T>(static_cast<std::size_t>(experts) * d * ffn, seed + 3, -0.25f, 0.25f);
  DeviceBuffer<T> x(xh), router(rh), gu(guh), down(dh), out(tokens * d), logits(tokens * experts);
  using Op = bk::Moe<bk::Silu, T>;
  const typename Op::Arguments args{.x = x.get(), .tokens = tokens, .d = d, .router = router.get(),
                                    .gate_up = gu.get(), .down = down.get(), .experts = experts, .top_k = k,
                                    .ffn = ffn, .renormalize = renormalize, .out = out.get(),
                                    .router_logits = logits.get()};
  Testbed<Op> bed;
  bed.run_ok(args);
  const auto u = tokenless::dtype_traits<T>::unit_roundoff;
  // The router's logits: x · W_gᵀ rounded to T.
  const std::vector<std::int32_t> one{0, static_cast<std::int32_t>(tokens)};
  const auto lt = ref::grouped_gemm<double>(widen(xh), widen(rh), one, experts, d, [](double v) { return v; });
  const auto ln = ref::grouped_gemm<float>(to_floats(xh), to_floats(rh), one, experts, d, round_f<T>());
  const auto lk = to_floats(logits.download());
  {
    INFO("router logits");
    check_accuracy(lk, ln, lt, 4.0, u);
  }
  // The rest, routed from the kernel's logits.
  std::vector<int> ids;
  std::vector<double> wt;
  std::vector<float> wn;
  ref::moe_route<double>(std::vector<double>(lk.begin(), lk.end()), tokens, experts, k, renormalize, ids, wt);
  std::vector<int> ids_f;
  ref::moe_route<float>(lk, tokens, experts, k, renormalize, ids_f, wn);
  REQUIRE(ids_f == ids);
  const auto truth = ref::moe_experts<double>(widen(xh), tokens, d, widen(guh), widen(dh), ffn, ids, wt, k,
                                              [](double v) { return ref::silu(v); }, [](double v) { return v; });
  const auto naive = ref::moe_experts<float>(to_floats(xh), tokens, d, to_floats(guh), to_floats(dh), ffn, ids, wn, k,
                                             [](float v) { return ref::silu(v); }, round_f<T>());
  const auto first = out.download();
  {
    INFO("out");
    check_accuracy(to_floats(first), naive, truth, 4.0, u);
  }
  bed.run_ok(args);  // deterministic: no atomics
  const auto second = out.download();
  CHECK(std::memcmp(first.data(), second.data(), first.size() * sizeof(T)) == 0);
}

// Test names avoid "router": the TSan job of the patcher's cases selects by it.
TEST_CASE("blocks: Mixtral-style MoE forward (gating, top-k, dispatch, experts, combine)") {
  check_moe<__nv_bfloat16>(37, 64, 4, 2, 48, true, 11);  // Mixtral's top-2, renormalised
  check_moe<float>(29, 32, 8, 2, 40, true, 12);
  if (scale_down() > 1) return;  // thread mode (TSan): a thread per CUDA thread; the smaller cases suffice
  check_moe<__half>(20, 64, 40, 3, 16, false, 13);       // more experts than lanes, not renormalised
  check_moe<__nv_bfloat16>(9, 128, 6, 1, 64, true, 14);  // top-1: every weight 1
}

TEST_CASE("blocks: the MoE load-balancing loss matches transformers'") {
  // transformers 5.24's load_balancing_loss_func((l1,), 4, 2) and ((l1, l2), 4, 2).
  const std::vector<float> l1{0.5f, -1.0f, 2.0f, 0.25f, 1.5f, 1.25f, -0.5f, 0.0f, -2.0f, 0.75f, 0.5f, 3.0f};
  const std::vector<float> l2{0.0f, -0.5f, 0.25f, 1.0f, 2.5f, -0.5f, 1.0f, -1.5f, 0.125f, 0.375f, -0.25f, 0.5f};
  std::vector<float> both(l1);
  both.insert(both.end(), l2.begin(), l2.end());
  DeviceBuffer<float> one_layer(l1), two_layers(both), loss(1);
  using Op = bk::MoeBalanceLoss<float>;
  Testbed<Op> bed;
  bed.run_ok({.logits = one_layer.get(), .rows = 3, .experts = 4, .top_k = 2, .loss = loss.get()});
  CHECK(loss.download()[0] == doctest::Approx(1.8288122415542603).epsilon(1e-6));
  bed.run_ok({.logits = two_layers.get(), .rows = 6, .experts = 4, .top_k = 2, .loss = loss.get()});
  CHECK(loss.download()[0] == doctest::Approx(1.9999998807907104).epsilon(1e-6));
  // Many rows, more experts than a warp's lanes, bf16 logits: the reference.
  const std::int64_t rows = scale_down() > 1 ? 40 : 500;  // thread mode (TSan): fewer blocks
  const int experts = 40;
  const auto lh = random_values<__nv_bfloat16>(static_cast<std::size_t>(rows * experts), 21, -3.0f, 3.0f);
  DeviceBuffer<__nv_bfloat16> lb(lh);
  Testbed<bk::MoeBalanceLoss<__nv_bfloat16>> bed16;
  bed16.run_ok({.logits = lb.get(), .rows = rows, .experts = experts, .top_k = 3, .loss = loss.get()});
  const double want = ref::moe_balance_loss<double>(widen(lh), rows, experts, 3);
  CHECK(loss.download()[0] == doctest::Approx(want).epsilon(1e-5));
}

TEST_CASE("blocks: MoE's bad input gets a clear Status and writes nothing") {
  using T = __nv_bfloat16;
  const int d = 64, experts = 4, ffn = 32;
  DeviceBuffer<T> x(8 * d), router(experts * d), gu(experts * 2 * ffn * d), down(experts * d * ffn), out(8 * d);
  using Op = bk::Moe<bk::Silu, T>;
  const Op::Arguments good{.x = x.get(), .tokens = 8, .d = d, .router = router.get(), .gate_up = gu.get(),
                           .down = down.get(), .experts = experts, .top_k = 2, .ffn = ffn, .out = out.get()};
  Testbed<Op> bed;
  bed.watch(out);
  bed.reject(good, {
      {"no experts", [](auto& a) { a.experts = 0; }, StatusCode::invalid_argument, "experts"},
      {"too many experts", [](auto& a) { a.experts = 300; }, StatusCode::unsupported, "experts"},
      {"top_k over experts", [](auto& a) { a.top_k = 5; }, StatusCode::invalid_argument, "top_k"},
      {"top_k 0", [](auto& a) { a.top_k = 0; }, StatusCode::invalid_argument, "top_k"},
      {"d off 16 bytes", [](auto& a) { a.d = 60; }, StatusCode::unsupported, "d, ffn"},
      {"misaligned x", [&](auto& a) { a.x = x.get() + 1; }, StatusCode::misaligned, "x"},
      {"null down", [](auto& a) { a.down = nullptr; }, StatusCode::null_pointer, "down"},
      {"out over x", [&](auto& a) { a.out = x.get(); }, StatusCode::invalid_argument, "out"},
      {"no tokens", [](auto& a) { a.tokens = 0; }, StatusCode::empty, "tokens"},
  });
}

template <class T>
void check_moe_backward(std::int64_t tokens, int d, int experts, int k, int ffn, bool renormalize, bool balance,
                        std::uint64_t seed) {
  CAPTURE(d);
  CAPTURE(experts);
  CAPTURE(k);
  CAPTURE(renormalize);
  CAPTURE(balance);
  const auto xh = random_values<T>(static_cast<std::size_t>(tokens * d), seed, -1.0f, 1.0f);
  const auto rh = random_values<T>(static_cast<std::size_t>(experts * d), seed + 1, -0.5f, 0.5f);
  const auto guh = random_values<T>(static_cast<std::size_t>(experts) * 2 * ffn * d, seed + 2, -0.25f, 0.25f);
  const auto dh = random_values<T>(static_cast<std::size_t>(experts) * d * ffn, seed + 3, -0.25f, 0.25f);
  const auto gh = random_values<T>(static_cast<std::size_t>(tokens * d), seed + 4, -1.0f, 1.0f);
  const auto frac = random_values<float>(static_cast<std::size_t>(experts), seed + 5, 0.0f, 0.5f);
  DeviceBuffer<T> x(xh), router(rh), gu(guh), down(dh), out(tokens * d), logits(tokens * experts), g(gh), dx(tokens * d);
  DeviceBuffer<float> fr(frac), d_router(static_cast<std::size_t>(experts * d)),
      d_gu(static_cast<std::size_t>(experts) * 2 * ffn * d), d_down(static_cast<std::size_t>(experts) * d * ffn);
  using Fwd = bk::Moe<bk::Silu, T>;
  using Bwd = bk::MoeBackward<bk::Silu, T>;
  const typename Fwd::Arguments fa{.x = x.get(), .tokens = tokens, .d = d, .router = router.get(), .gate_up = gu.get(),
                                   .down = down.get(), .experts = experts, .top_k = k, .ffn = ffn,
                                   .renormalize = renormalize, .out = out.get(), .router_logits = logits.get()};
  const float scale = 0.7f;
  const std::int64_t balance_rows = 3 * tokens;  // as if three layers were stacked
  typename Bwd::Arguments ba{.forward = fa, .grad_out = g.get(), .grad_x = dx.get(), .grad_router = d_router.get(),
                             .grad_gate_up = d_gu.get(), .grad_down = d_down.get(),
                             .balance_fraction = balance ? fr.get() : nullptr, .balance_rows = balance_rows,
                             .balance_scale = scale};
  const std::size_t bytes = Bwd::workspace_size(ba);
  DeviceBuffer<unsigned char> ws(bytes);
  const tokenless::Workspace w{ws.get(), bytes};
  REQUIRE_OK(Fwd::run(fa, w));
  REQUIRE_OK(Bwd::run(ba, w));
  const auto lk = to_floats(logits.download());
  std::vector<int> ids;
  std::vector<double> wt;
  std::vector<float> wn;
  ref::moe_route<double>(std::vector<double>(lk.begin(), lk.end()), tokens, experts, k, renormalize, ids, wt);
  ref::moe_route<float>(lk, tokens, experts, k, renormalize, ids, wn);
  const double coef = balance ? double(scale) * experts / double(balance_rows) : 0.0;
  const std::vector<double> no;
  const std::vector<float> nof;
  const auto t = ref::moe_backward<double>(
      widen(xh), tokens, d, std::vector<double>(lk.begin(), lk.end()), widen(rh), widen(guh), widen(dh), experts, ffn,
      ids, wt, k, renormalize, widen(gh), balance ? widen(frac) : no, coef, [](double v) { return ref::silu(v); },
      [](double v) { return ref::silu_derivative(v); }, [](double v) { return v; });
  const auto n = ref::moe_backward<float>(
      to_floats(xh), tokens, d, lk, to_floats(rh), to_floats(guh), to_floats(dh), experts, ffn, ids, wn, k,
      renormalize, to_floats(gh), balance ? frac : nof, static_cast<float>(coef), [](float v) { return ref::silu(v); },
      [](float v) { return ref::silu_derivative(v); }, round_f<T>());
  const auto u = tokenless::dtype_traits<T>::unit_roundoff;
  const auto uf = tokenless::dtype_traits<float>::unit_roundoff;
  {
    INFO("dL/dx");
    check_accuracy(to_floats(dx.download()), n.dx, t.dx, 4.0, u);
  }
  {
    INFO("dL/dW_router");
    check_accuracy(d_router.download(), n.d_router, t.d_router, 4.0, uf);
  }
  {
    INFO("dL/dW_gate_up");
    check_accuracy(d_gu.download(), n.d_gate_up, t.d_gate_up, 4.0, uf);
  }
  {
    INFO("dL/dW_down");
    check_accuracy(d_down.download(), n.d_down, t.d_down, 4.0, uf);
  }
  // Accumulating: a second backward adds the same gradients again.
  const auto once = d_down.download();
  ba.accumulate_weights = true;
  REQUIRE_OK(Bwd::run(ba, w));
  const auto twice = d_down.download();
  for (std::size_t i = 0; i < once.size(); ++i) CHECK(twice[i] == doctest::Approx(2.0 * once[i]).epsilon(1e-6));
}

TEST_CASE("blocks: Mixtral-style MoE backward (experts, gating, balance loss)") {
  check_moe_backward<__nv_bfloat16>(37, 64, 4, 2, 48, true, true, 31);
  check_moe_backward<float>(29, 32, 8, 2, 40, true, false, 32);
  if (scale_down() > 1) return;  // as the forward's
  check_moe_backward<__half>(20, 64, 40, 3, 16, false, true, 33);
  check_moe_backward<__nv_bfloat16>(70, 128, 8, 2, 64, true, false, 34);  // a group over one tile
}

}  // namespace tlt::moe_tests
