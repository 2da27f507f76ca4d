#pragma once
// The backbone blocks, against the double reference at the naive
// same-precision tolerance; shared by the emu and gpu tiers:
//   * RMSNorm fused with the residual add, both weight orders (transformers'
//     cast-then-scale and fp32 scaling), with and without a residual, in
//     place, forward and backward (dL/dh with the residual path, the weight's
//     gradient written and accumulated), NaN propagation, bad input;
//   * LayerNorm the same, with its bias and the bias's gradient;
//   * RoPE in both layouts, partial rotation, q and k in a fused qkv row
//     (v untouched), positions from a varlen batch with cache offsets, from
//     a uniform batch and from an explicit array, the backward (the inverse
//     rotation), the rope_scaling frequency tables, bad input and a bad
//     cu_seqlens reported with nothing rotated;
//   * SwiGLU from two projections and from a fused gate_up row (in place),
//     GPT-2's GELU with a bias, forward and backward with the bias's gradient;
//   * the embedding (exact gather; ids outside the vocabulary reported with
//     nothing written), its deterministic gradient, and argmax (ties, NaN).
#include "../support/testbed.hpp"

#include <tokenless/blocks/activation.cuh>
#include <tokenless/blocks/norm.cuh>
#include <tokenless/blocks/rope.cuh>
#include <tokenless/blocks/tokens.cuh>
#include <tokenless/reference/blocks.hpp>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace tlt::blocks_tests {

namespace bk = tokenless::blocks;
namespace ref = tokenless::reference::blocks;
using tokenless::StatusCode;


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

// ------------------------------------------------------------------ LayerNorm

template <class T>
void check_layer_norm(std::int64_t rows, int d, bool with_residual, bool with_bias, std::uint64_t seed) {
  CAPTURE(d);
  CAPTURE(with_residual);
  CAPTURE(with_bias);
  const float eps = 1e-5f;
  const auto xh = random_values<T>(static_cast<std::size_t>(rows * d), seed, -2.0f, 3.0f);
  const auto rh = random_values<T>(static_cast<std::size_t>(rows * d), seed + 1, -2.0f, 2.0f);
  const auto wh = random_values<T>(static_cast<std::size_t>(d), seed + 2, 0.5f, 1.5f);
  const auto bh = random_values<T>(static_cast<std::size_t>(d), seed + 5, -0.5f, 0.5f);
  const auto gh = random_values<T>(static_cast<std::size_t>(rows * d), seed + 3);
  const auto grh = random_values<T>(static_cast<std::size_t>(rows * d), seed + 4);
  DeviceBuffer<T> x(xh), res(rh), w(wh), b(bh), out(rows * d), h(rows * d), g(gh), gr(grh), dh(rows * d);
  DeviceBuffer<float> mean(rows), inv(rows), dw(std::vector<float>(static_cast<std::size_t>(d), 0.5f)),
      db(std::vector<float>(static_cast<std::size_t>(d), -0.25f));
  REQUIRE_OK((bk::LayerNorm<T>::run({.x = x.get(), .residual = with_residual ? res.get() : nullptr, .weight = w.get(),
                                     .bias = with_bias ? b.get() : nullptr, .rows = rows, .d = d, .eps = eps,
                                     .out = out.get(), .residual_out = h.get(), .mean = mean.get(),
                                     .inv_std = inv.get()})));
  const std::vector<double> no;
  const std::vector<float> nof;
  const auto t = ref::layer_norm<double>(widen(xh), with_residual ? widen(rh) : no, widen(wh),
                                         with_bias ? widen(bh) : no, rows, d, eps, round_d<T>());
  const auto n = ref::layer_norm<float>(to_floats(xh), with_residual ? to_floats(rh) : nof, to_floats(wh),
                                        with_bias ? to_floats(bh) : nof, rows, d, eps, round_f<T>());
  const auto u = tokenless::dtype_traits<T>::unit_roundoff;
  const auto uf = tokenless::dtype_traits<float>::unit_roundoff;
  {
    INFO("y");
    check_accuracy(to_floats(out.download()), rounded<T>(std::vector<double>(n.y.begin(), n.y.end())), t.y, 4.0, u);
  }
  CHECK(to_floats(h.download()) == std::vector<float>(t.h.begin(), t.h.end()));
  {
    INFO("mean, inv_std");
    check_accuracy(mean.download(), n.mean, t.mean, 4.0, uf);
    check_accuracy(inv.download(), n.inv, t.inv, 4.0, uf);
  }
  for (bool residual_grad : {false, true}) {
    CAPTURE(residual_grad);
    REQUIRE_OK((bk::LayerNormBackward<T>::run({.h = h.get(), .mean = mean.get(), .inv_std = inv.get(),
                                               .weight = w.get(), .grad_out = g.get(),
                                               .grad_residual = residual_grad ? gr.get() : nullptr, .rows = rows,
                                               .d = d, .grad_h = dh.get(), .grad_weight = dw.get(),
                                               .grad_bias = db.get(), .accumulate_weight = residual_grad})));
    const auto tg = ref::layer_norm_backward<double>(t.h, widen(wh), widen(gh), residual_grad ? widen(grh) : no, rows,
                                                     d, eps);
    const auto ng = ref::layer_norm_backward<float>(std::vector<float>(t.h.begin(), t.h.end()), to_floats(wh),
                                                    to_floats(gh), residual_grad ? to_floats(grh) : nof, rows, d, eps);
    {
      INFO("dL/dh");
      check_accuracy(to_floats(dh.download()), rounded<T>(std::vector<double>(ng.dh.begin(), ng.dh.end())), tg.dh,
                     4.0, u);
    }
    const double k = residual_grad ? 2.0 : 1.0;  // the second pass adds to the first
    std::vector<double> tw(tg.dw), tb(tg.db);
    std::vector<float> nw(ng.dw), nb(ng.db);
    for (int c = 0; c < d; ++c) {
      tw[c] *= k;
      tb[c] *= k;
      nw[c] *= static_cast<float>(k);
      nb[c] *= static_cast<float>(k);
    }
    INFO("dL/dw, dL/db");
    check_accuracy(dw.download(), nw, tw, 4.0, uf);
    check_accuracy(db.download(), nb, tb, 4.0, uf);
  }
}

TEST_CASE("blocks: LayerNorm fused with the residual add, forward and backward") {
  check_layer_norm<float>(6, 128, true, true, 21);
  check_layer_norm<__nv_bfloat16>(9, 256, true, true, 22);  // vector path
  check_layer_norm<__half>(4, 72, false, true, 23);
  check_layer_norm<__nv_bfloat16>(3, 30, true, false, 24);  // scalar path, no bias
}

TEST_CASE("blocks: LayerNorm's bad input gets a clear Status") {
  DeviceBuffer<float> x(64), w(16), out(64), mean(4), inv(4);
  using Op = bk::LayerNorm<float>;
  const Op::Arguments good{.x = x.get(), .weight = w.get(), .rows = 4, .d = 16, .out = out.get()};
  REQUIRE_OK(Op::can_implement(good));
  auto a = good;
  a.eps = -1.0f;
  CHECK(Op::can_implement(a).code() == StatusCode::invalid_argument);
  a = good;
  a.x = nullptr;
  CHECK(Op::can_implement(a).code() == StatusCode::null_pointer);
  using Bwd = bk::LayerNormBackward<float>;
  Bwd::Arguments g{.h = x.get(), .mean = nullptr, .inv_std = inv.get(), .weight = w.get(), .grad_out = out.get(),
                   .rows = 4, .d = 16, .grad_h = x.get()};
  CHECK(Bwd::can_implement(g).code() == StatusCode::null_pointer);
  g.mean = mean.get();
  REQUIRE_OK(Bwd::can_implement(g));
}

// ------------------------------------------------------------------ RoPE

// The frequency tables: default, linear (every entry / factor) and llama3
// (long wavelengths / factor, short ones kept, a blend between).
TEST_CASE("blocks: RoPE frequency tables for default, linear and llama3 scaling") {
  const int rot = 128;
  std::vector<float> base(rot / 2), lin(rot / 2), l3(rot / 2);
  bk::RopeConfig c{.theta = 500000.0f};
  REQUIRE_OK(bk::rope_inv_freq(c, rot, base.data()));
  CHECK(base[0] == 1.0f);
  CHECK(base[1] == doctest::Approx(std::pow(500000.0, -2.0 / 128)).epsilon(1e-6));
  c.type = bk::RopeType::kLinear;
  c.factor = 4.0f;
  REQUIRE_OK(bk::rope_inv_freq(c, rot, lin.data()));
  for (int i = 0; i < rot / 2; ++i) CHECK(lin[i] == base[i] / 4.0f);
  // Llama 3.1's published settings.
  c = {.theta = 500000.0f, .type = bk::RopeType::kLlama3, .factor = 8.0f, .low_freq_factor = 1.0f,
       .high_freq_factor = 4.0f, .original_max_position = 8192.0f};
  REQUIRE_OK(bk::rope_inv_freq(c, rot, l3.data()));
  int kept = 0, divided = 0, blended = 0;
  for (int i = 0; i < rot / 2; ++i) {
    const double wavelen = 2 * M_PI / base[i];
    if (wavelen < 8192.0 / 4) {
      CHECK(l3[i] == base[i]);
      ++kept;
    } else if (wavelen > 8192.0) {
      CHECK(l3[i] == base[i] / 8.0f);
      ++divided;
    } else {
      CHECK(l3[i] < base[i]);
      CHECK(l3[i] > base[i] / 8.0f);
      ++blended;
    }
  }
  CHECK(kept > 0);
  CHECK(divided > 0);
  CHECK(blended > 0);
  for (int i = 1; i < rot / 2; ++i) CHECK(l3[i] < l3[i - 1]);  // still decreasing
  // Names: both spellings of the known types; any other refused by name.
  bk::RopeType type{};
  REQUIRE_OK(bk::RopeConfig::type_from_name("llama3", &type));
  CHECK(type == bk::RopeType::kLlama3);
  REQUIRE_OK(bk::RopeConfig::type_from_name(nullptr, &type));
  CHECK(type == bk::RopeType::kDefault);
  for (const char* other : {"yarn", "dynamic", "longrope", "su"}) {
    const auto s = bk::RopeConfig::type_from_name(other, &type);
    CHECK(s.code() == StatusCode::unsupported);
    CHECK(std::string(s.message()).find(other) != std::string::npos);
  }
  c.theta = NAN;
  CHECK(bk::rope_inv_freq(c, rot, l3.data()).code() == StatusCode::invalid_argument);
  c.theta = 10000.0f;
  CHECK(bk::rope_inv_freq(c, 7, l3.data()).code() == StatusCode::invalid_argument);
}

// q [tokens, hq, hd] and k [tokens, hk, hd] as views into one fused qkv row
// of (hq + 2 hk) heads (v last, untouched), rotated in place.
template <class L, class T>
void check_rope(int hq, int hk, int head_dim, int rot_dim, const std::vector<std::int32_t>& cu,
                const std::vector<std::int32_t>& offsets, bool explicit_positions, std::uint64_t seed) {
  CAPTURE(L::kName);
  CAPTURE(head_dim);
  CAPTURE(rot_dim);
  CAPTURE(explicit_positions);
  constexpr bool kInterleaved = std::is_same_v<L, bk::RopeInterleaved>;
  const auto num_seqs = static_cast<std::int64_t>(cu.size() - 1);
  const std::int64_t tokens = cu.back();
  const int row = (hq + 2 * hk) * head_dim;
  std::vector<std::int64_t> pos(static_cast<std::size_t>(tokens));
  std::vector<std::int32_t> pos32(pos.size());
  for (std::int64_t b = 0; b < num_seqs; ++b) {
    for (std::int32_t t = cu[b]; t < cu[b + 1]; ++t) {
      pos[t] = t - cu[b] + (offsets.empty() ? 0 : offsets[b]);
      pos32[t] = static_cast<std::int32_t>(pos[t]);
    }
  }
  std::vector<float> inv_freq(static_cast<std::size_t>(rot_dim / 2));
  REQUIRE_OK(bk::rope_inv_freq({.theta = 10000.0f}, rot_dim, inv_freq.data()));
  const auto xh = random_values<T>(static_cast<std::size_t>(tokens * row), seed, -2.0f, 2.0f);
  DeviceBuffer<T> qkv(xh);
  DeviceBuffer<float> freq(inv_freq);
  DeviceBuffer<std::int32_t> cu_d(cu), off_d(offsets.empty() ? std::vector<std::int32_t>{0} : offsets), pos_d(pos32);
  const bool uniform = explicit_positions ? false : cu.size() == 2;
  using Op = bk::Rope<L, T>;
  typename Op::Arguments a{.q = qkv.get(), .k = qkv.get() + hq * head_dim,
                           .batch = uniform ? tokenless::VarlenBatch::uniform(1, tokens)
                                            : tokenless::VarlenBatch::packed(cu_d.get(), num_seqs, tokens),
                           .q_heads = hq, .k_heads = hk, .head_dim = head_dim, .rot_dim = rot_dim, .q_stride = row,
                           .k_stride = row, .inv_freq = freq.get(),
                           .positions = explicit_positions ? pos_d.get() : nullptr,
                           .offset = !explicit_positions && !offsets.empty() ? off_d.get() : nullptr};
  Testbed<Op> bed;
  bed.run_ok(a);
  const auto got = to_floats(qkv.download());
  // The reference on each of q, k and v (v with no heads rotated).
  auto part = [&](int first_head, int heads, bool rotate, auto tag) {
    using R = decltype(tag);
    std::vector<R> x(static_cast<std::size_t>(tokens * heads * head_dim));
    for (std::int64_t t = 0; t < tokens; ++t)
      for (int e = 0; e < heads * head_dim; ++e)
        x[t * heads * head_dim + e] = static_cast<R>(tokenless::to_float(xh[t * row + first_head * head_dim + e]));
    if (rotate) ref::rope<R>(x, tokens, heads, head_dim, rot_dim, kInterleaved, pos, inv_freq, 1);
    return x;
  };
  auto slice = [&](const std::vector<float>& v, int first_head, int heads) {
    std::vector<float> o;
    for (std::int64_t t = 0; t < tokens; ++t)
      for (int e = 0; e < heads * head_dim; ++e) o.push_back(v[t * row + first_head * head_dim + e]);
    return o;
  };
  const auto u = tokenless::dtype_traits<T>::unit_roundoff;
  for (const auto& [first, heads] : {std::pair{0, hq}, std::pair{hq, hk}}) {
    CAPTURE(first);
    const auto naive = part(first, heads, true, 0.0f);
    check_accuracy(slice(got, first, heads), rounded<T>(std::vector<double>(naive.begin(), naive.end())),
                   part(first, heads, true, 0.0), 4.0, u);
  }
  CHECK(slice(got, hq + hk, hk) == slice(to_floats(xh), hq + hk, hk));  // v untouched
  // The backward turns back: dL/dx of L = <g, rope(x)> is rope^-1(g).
  REQUIRE_OK(Op::run_backward(a, bed.workspace()));
  const auto back = to_floats(qkv.download());
  for (const auto& [first, heads] : {std::pair{0, hq}, std::pair{hq, hk}}) {
    // The truth of the backward on the rotated values the kernel stored.
    std::vector<double> stored = widen(slice(got, first, heads));
    ref::rope<double>(stored, tokens, heads, head_dim, rot_dim, kInterleaved, pos, inv_freq, -1);
    std::vector<float> stored_f = slice(got, first, heads);
    ref::rope<float>(stored_f, tokens, heads, head_dim, rot_dim, kInterleaved, pos, inv_freq, -1);
    check_accuracy(slice(back, first, heads), rounded<T>(std::vector<double>(stored_f.begin(), stored_f.end())),
                   stored, 4.0, u);
  }
}

TEST_CASE("blocks: RoPE in both layouts, on q and k in a fused qkv row, forward and backward") {
  const std::vector<std::int32_t> cu{0, 5, 5, 12, 20};
  // A varlen batch with cache offsets (chunked prefill / decode), Llama's shape.
  check_rope<bk::RopeHalf, __nv_bfloat16>(4, 2, 64, 64, cu, {3, 0, 100, 4000}, false, 31);
  check_rope<bk::RopeHalf, float>(2, 1, 64, 64, cu, {120000, 7, 65536, 2000000}, false, 36);  // huge angles
  check_rope<bk::RopeInterleaved, float>(4, 2, 64, 64, cu, {}, false, 32);
  // Phi-3's heads of 96, partial rotation, explicit positions.
  check_rope<bk::RopeHalf, __half>(2, 1, 96, 96, cu, {7, 1, 2, 3}, true, 33);
  check_rope<bk::RopeHalf, float>(2, 2, 64, 32, cu, {}, false, 34);
  check_rope<bk::RopeInterleaved, __nv_bfloat16>(2, 1, 256, 256, {0, 9}, {}, false, 35);  // uniform, widest
}

TEST_CASE("blocks: RoPE's bad input gets a clear Status, and a bad cu_seqlens rotates nothing") {
  using Op = bk::Rope<bk::RopeHalf, float>;
  const int tokens = 6, hd = 64;
  DeviceBuffer<float> q(tokens * 2 * hd), k(tokens * hd), freq(std::vector<float>(hd / 2, 0.5f));
  DeviceBuffer<std::int32_t> cu(std::vector<std::int32_t>{0, 4, 2}), pos(tokens), off(2);
  const Op::Arguments good{.q = q.get(), .k = k.get(), .batch = tokenless::VarlenBatch::uniform(2, 3), .q_heads = 2,
                           .k_heads = 1, .head_dim = hd, .inv_freq = freq.get()};
  Testbed<Op> bed;
  bed.watch(q).watch(k);
  bed.reject(good, {
      {"odd rot_dim", [](auto& a) { a.rot_dim = 31; }, StatusCode::invalid_argument, "rot_dim"},
      {"rot_dim over head_dim", [](auto& a) { a.rot_dim = 66; }, StatusCode::invalid_argument, "rot_dim"},
      {"null q", [](auto& a) { a.q = nullptr; }, StatusCode::null_pointer, "q"},
      {"null inv_freq", [](auto& a) { a.inv_freq = nullptr; }, StatusCode::null_pointer, "inv_freq"},
      {"no k heads", [](auto& a) { a.k_heads = 0; }, StatusCode::empty, "k_heads"},
      {"overlapping rows", [](auto& a) { a.q_stride = 64; }, StatusCode::invalid_argument, "q_stride"},
      {"positions and offset", [&](auto& a) { a.positions = pos.get(); a.offset = off.get(); },
       StatusCode::invalid_argument, "offset"},
      {"empty batch", [](auto& a) { a.batch = tokenless::VarlenBatch::uniform(0, 3); }, StatusCode::empty, "batch"},
      {"bad cu_seqlens", [&](auto& a) { a.batch = tokenless::VarlenBatch::packed(cu.get(), 2, 6); },
       StatusCode::invalid_argument, "cu[2] = 2"},
  });
  DeviceBuffer<float> wide(tokens * 2 * 512);
  auto a = good;
  a.q = wide.get();
  a.k = nullptr;
  a.head_dim = 512;
  CHECK(Op::can_implement(a).code() == StatusCode::unsupported);  // over 256 rotated features
}

// ------------------------------------------------------------------ activations

template <class A, class T>
void check_gated(std::int64_t rows, int cols, bool fused, std::uint64_t seed) {
  CAPTURE(A::kName);
  CAPTURE(cols);
  CAPTURE(fused);
  const bool silu = std::is_same_v<A, bk::Silu>;
  auto act = [&](auto x) { return silu ? ref::silu(x) : ref::gelu_tanh(x); };
  auto act_d = [&](auto x) { return silu ? ref::silu_derivative(x) : ref::gelu_tanh_derivative(x); };
  // Fused: one [rows, 2 cols] row, gate first (Phi-3's gate_up_proj).
  const std::int64_t stride = fused ? 2 * cols : cols;
  const auto gu = random_values<T>(static_cast<std::size_t>(rows * 2 * cols), seed, -4.0f, 4.0f);
  const auto dyh = random_values<T>(static_cast<std::size_t>(rows * cols), seed + 1);
  DeviceBuffer<T> buf(gu), out(rows * cols), dy(dyh), dbuf(rows * 2 * cols);
  const T* gate = buf.get();
  const T* up = fused ? buf.get() + cols : buf.get() + rows * cols;
  REQUIRE_OK((bk::Gated<A, T>::run({.gate = gate, .up = up, .rows = rows, .cols = cols, .gate_stride = stride,
                                    .up_stride = stride, .out = out.get()})));
  std::vector<double> tv, tdg, tdu;
  std::vector<float> nv, ndg, ndu;
  auto at = [&](std::int64_t r, int c, bool is_up) {
    const std::int64_t i = fused ? r * stride + c + (is_up ? cols : 0) : (is_up ? rows * cols : 0) + r * cols + c;
    return tokenless::to_float(gu[i]);
  };
  for (std::int64_t r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      const float g = at(r, c, false), u = at(r, c, true), d = tokenless::to_float(dyh[r * cols + c]);
      tv.push_back(act(double(g)) * u);
      nv.push_back(tokenless::round_trip<T>(tokenless::round_trip<T>(act(g)) * u));  // transformers' two roundings
      tdg.push_back(double(d) * u * act_d(double(g)));
      ndg.push_back(tokenless::round_trip<T>(d * u * act_d(g)));
      tdu.push_back(double(d) * act(double(g)));
      ndu.push_back(tokenless::round_trip<T>(d * act(g)));
    }
  }
  const auto u = tokenless::dtype_traits<T>::unit_roundoff;
  check_accuracy(to_floats(out.download()), nv, tv, 4.0, u);
  // Backward into a fused gradient row (or two buffers).
  T* dgate = dbuf.get();
  T* dup = fused ? dbuf.get() + cols : dbuf.get() + rows * cols;
  REQUIRE_OK((bk::GatedBackward<A, T>::run({.gate = gate, .up = up, .grad_out = dy.get(), .rows = rows, .cols = cols,
                                            .gate_stride = stride, .up_stride = stride, .grad_gate_stride = stride,
                                            .grad_up_stride = stride, .grad_gate = dgate, .grad_up = dup})));
  const auto d = to_floats(dbuf.download());
  std::vector<float> kg, ku;
  for (std::int64_t r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      kg.push_back(fused ? d[r * stride + c] : d[r * cols + c]);
      ku.push_back(fused ? d[r * stride + cols + c] : d[rows * cols + r * cols + c]);
    }
  }
  check_accuracy(kg, ndg, tdg, 4.0, u);
  check_accuracy(ku, ndu, tdu, 4.0, u);
  // In place: the gradient over the fused row itself gives the same bits.
  if (fused) {
    REQUIRE_OK((bk::GatedBackward<A, T>::run({.gate = gate, .up = up, .grad_out = dy.get(), .rows = rows,
                                              .cols = cols, .gate_stride = stride, .up_stride = stride,
                                              .grad_gate_stride = stride, .grad_up_stride = stride,
                                              .grad_gate = buf.get(), .grad_up = buf.get() + cols})));
    CHECK(to_floats(buf.download()) == d);
  }
}

template <class T>
void check_gelu(std::int64_t rows, int cols, bool with_bias, std::uint64_t seed) {
  CAPTURE(cols);
  CAPTURE(with_bias);
  const auto xh = random_values<T>(static_cast<std::size_t>(rows * cols), seed, -5.0f, 5.0f);
  const auto bh = random_values<T>(static_cast<std::size_t>(cols), seed + 1);
  const auto dyh = random_values<T>(static_cast<std::size_t>(rows * cols), seed + 2);
  DeviceBuffer<T> x(xh), b(bh), dy(dyh), out(rows * cols), dx(rows * cols);
  DeviceBuffer<float> db(std::vector<float>(static_cast<std::size_t>(cols), 1.0f));
  using G = bk::GeluTanh;
  REQUIRE_OK((bk::Activation<G, T>::run({.x = x.get(), .bias = with_bias ? b.get() : nullptr, .rows = rows,
                                         .cols = cols, .out = out.get()})));
  REQUIRE_OK((bk::ActivationBackward<G, T>::run({.x = x.get(), .bias = with_bias ? b.get() : nullptr,
                                                 .grad_out = dy.get(), .rows = rows, .cols = cols, .grad_x = dx.get(),
                                                 .grad_bias = db.get(), .accumulate_bias = true})));
  std::vector<double> tv, tdx, tdb(static_cast<std::size_t>(cols), 1.0);
  std::vector<float> nv, ndx, ndb(static_cast<std::size_t>(cols), 1.0f);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      const float v = tokenless::to_float(xh[r * cols + c]) + (with_bias ? tokenless::to_float(bh[c]) : 0.0f);
      const double vd = double(tokenless::to_float(xh[r * cols + c])) + (with_bias ? tokenless::to_float(bh[c]) : 0.0);
      const float d = tokenless::to_float(dyh[r * cols + c]);
      tv.push_back(ref::gelu_tanh(vd));
      nv.push_back(tokenless::round_trip<T>(ref::gelu_tanh(v)));
      tdx.push_back(d * ref::gelu_tanh_derivative(vd));
      ndx.push_back(tokenless::round_trip<T>(d * ref::gelu_tanh_derivative(v)));
      tdb[c] += d * ref::gelu_tanh_derivative(vd);
      ndb[c] += d * ref::gelu_tanh_derivative(v);
    }
  }
  const auto u = tokenless::dtype_traits<T>::unit_roundoff;
  check_accuracy(to_floats(out.download()), nv, tv, 4.0, u);
  check_accuracy(to_floats(dx.download()), ndx, tdx, 4.0, u);
  check_accuracy(db.download(), ndb, tdb, 4.0, tokenless::dtype_traits<float>::unit_roundoff);
}

TEST_CASE("blocks: SwiGLU and GELU, forward and backward") {
  check_gated<bk::Silu, __nv_bfloat16>(5, 256, true, 41);   // Phi-3's fused gate_up, vector path
  check_gated<bk::Silu, float>(4, 100, false, 42);          // two projections
  check_gated<bk::Silu, __half>(3, 30, true, 43);           // scalar path
  check_gated<bk::GeluTanh, __nv_bfloat16>(3, 64, false, 44);  // GeGLU
  check_gelu<float>(5, 96, true, 45);
  check_gelu<__nv_bfloat16>(7, 256, true, 46);
  check_gelu<__half>(3, 30, false, 47);
}

TEST_CASE("blocks: the activations' bad input gets a clear Status") {
  DeviceBuffer<float> g(64), u(64), out(64);
  using Op = bk::Gated<bk::Silu, float>;
  const Op::Arguments good{.gate = g.get(), .up = u.get(), .rows = 4, .cols = 16, .out = out.get()};
  REQUIRE_OK(Op::can_implement(good));
  auto a = good;
  a.up = nullptr;
  CHECK(Op::can_implement(a).code() == StatusCode::null_pointer);
  a = good;
  a.cols = 0;
  CHECK(Op::can_implement(a).code() == StatusCode::empty);
  a = good;
  a.gate_stride = 8;
  CHECK(Op::can_implement(a).code() == StatusCode::invalid_argument);
  using Act = bk::Activation<bk::GeluTanh, float>;
  CHECK(Act::can_implement({.x = g.get(), .rows = -1, .cols = 16, .out = out.get()}).code() ==
        StatusCode::invalid_argument);
}

// ------------------------------------------------------------------ token ids

template <class T>
void check_embedding(std::int64_t vocab, int d, std::uint64_t seed) {
  CAPTURE(d);
  const std::vector<std::int32_t> ids{3, 0, 7, 3, 3, static_cast<std::int32_t>(vocab - 1), 7, 12, 0};
  const auto n = static_cast<std::int64_t>(ids.size());
  const auto th = random_values<T>(static_cast<std::size_t>(vocab * d), seed);
  const auto gh = random_values<T>(static_cast<std::size_t>(n * d), seed + 1);
  DeviceBuffer<T> table(th), out(n * d), g(gh);
  DeviceBuffer<std::int32_t> id(ids);
  Testbed<bk::Embedding<T>> bed;
  bed.run_ok({.table = table.get(), .ids = id.get(), .n = n, .vocab = vocab, .d = d, .out = out.get()});
  const auto o = out.download();
  for (std::int64_t t = 0; t < n; ++t) {
    for (int c = 0; c < d; ++c) {
      CHECK(std::memcmp(&o[t * d + c], &th[ids[t] * d + c], sizeof(T)) == 0);  // a copy, bit for bit
    }
  }
  // The gradient: added to what the table held, each id's rows in token order.
  const std::vector<float> start(static_cast<std::size_t>(vocab * d), 0.25f);
  DeviceBuffer<float> gt(start);
  using Bwd = bk::EmbeddingBackward<T>;
  const typename Bwd::Arguments ba{.ids = id.get(), .grad_out = g.get(), .n = n, .vocab = vocab, .d = d,
                                   .grad_table = gt.get()};
  Testbed<Bwd> bbed;
  bbed.run_ok(ba);
  std::vector<double> truth(start.begin(), start.end());
  std::vector<float> naive(start);
  for (std::int64_t t = 0; t < n; ++t) {
    for (int c = 0; c < d; ++c) {
      truth[ids[t] * d + c] += tokenless::to_float(gh[t * d + c]);
      naive[ids[t] * d + c] += tokenless::to_float(gh[t * d + c]);
    }
  }
  const auto first = gt.download();
  check_accuracy(first, naive, truth, 4.0, tokenless::dtype_traits<float>::unit_roundoff);
  // Deterministic: the same sums again from the same start.
  gt.upload(start);
  bbed.run_ok(ba);
  CHECK(gt.download() == first);
  // Written, not accumulated: touched rows hold the sums alone, the others keep their values.
  auto wa = ba;
  wa.accumulate = false;
  gt.upload(start);
  bbed.run_ok(wa);
  const auto written = gt.download();
  for (std::int64_t v = 0; v < vocab; ++v) {
    const bool touched = std::find(ids.begin(), ids.end(), v) != ids.end();
    CHECK(written[v * d] == doctest::Approx(touched ? first[v * d] - 0.25f : 0.25f).epsilon(1e-6));
  }
}

TEST_CASE("blocks: the embedding, its gradient, and bad ids") {
  check_embedding<__nv_bfloat16>(16, 64, 51);  // vector path
  check_embedding<float>(13, 30, 52);          // scalar path
  using Op = bk::Embedding<float>;
  DeviceBuffer<float> table(10 * 8), out(4 * 8);
  DeviceBuffer<std::int32_t> good(std::vector<std::int32_t>{1, 2, 3, 4}), high(std::vector<std::int32_t>{1, 2, 10, 4}),
      low(std::vector<std::int32_t>{1, -1, 3, 4});
  const Op::Arguments a{.table = table.get(), .ids = good.get(), .n = 4, .vocab = 10, .d = 8, .out = out.get()};
  Testbed<Op> bed;
  bed.watch(out);
  bed.reject(a, {
      {"an id past the vocabulary", [&](auto& x) { x.ids = high.get(); }, StatusCode::invalid_argument, "ids[2] = 10"},
      {"a negative id", [&](auto& x) { x.ids = low.get(); }, StatusCode::invalid_argument, "ids[1] = -1"},
      {"no table", [](auto& x) { x.table = nullptr; }, StatusCode::null_pointer, "table"},
      {"no tokens", [](auto& x) { x.n = 0; }, StatusCode::empty, "n"},
  });
}

TEST_CASE("blocks: argmax takes the first of equal maxima and NaN as largest, as torch.argmax") {
  const int cols = 1000;  // more than a block's threads
  std::vector<float> x(5 * cols);
  for (int i = 0; i < 5 * cols; ++i) x[i] = std::sin(0.37f * i);
  x[0 * cols + 999] = 2.0f;  // row 0: the last column
  x[1 * cols + 10] = 3.0f;   // row 1: a tie, the first wins
  x[1 * cols + 700] = 3.0f;
  x[2 * cols + 500] = NAN;   // row 2: NaN is largest
  x[2 * cols + 600] = NAN;
  for (int c = 0; c < cols; ++c) x[3 * cols + c] = -INFINITY;  // row 3: all -inf: index 0
  x[4 * cols + 256] = 5.0f;
  DeviceBuffer<float> xf(x);
  std::vector<__nv_bfloat16> xb(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) xb[i] = tokenless::from_float<__nv_bfloat16>(x[i]);
  DeviceBuffer<__nv_bfloat16> xbf(xb);
  DeviceBuffer<std::int32_t> ids(std::vector<std::int32_t>(10, -7));
  REQUIRE_OK((bk::Argmax<float>::run({.x = xf.get(), .rows = 5, .cols = cols, .out = ids.get(), .out_stride = 2})));
  REQUIRE_OK((bk::Argmax<__nv_bfloat16>::run({.x = xbf.get(), .rows = 5, .cols = cols, .out = ids.get() + 1,
                                               .out_stride = 2})));
  const auto got = ids.download();
  const std::vector<std::int32_t> want{999, 999, 10, 10, 500, 500, 0, 0, 256, 256};
  CHECK(got == want);
}

}  // namespace tlt::blocks_tests
