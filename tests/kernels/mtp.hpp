#pragma once
// DeepSeek-V3's multi-token module inputs against the host reference, shared
// by the emu and gpu tiers: the masked embedding at position 0, both norms,
// the concat order (embedding first) and eh_proj, forward and backward (dh,
// eh_proj, both norm weights, the embedding table's touched rows), written
// and accumulated; a bad id named on the device with nothing written.
#include "../support/testbed.hpp"

#include <tokenless/heads/mtp.cuh>
#include <tokenless/reference/blocks.hpp>

#include <random>
#include <type_traits>
#include <vector>

namespace tlt::mtp_tests {

namespace hd = tokenless::heads;
namespace bk = tokenless::blocks;
namespace rb = tokenless::reference::blocks;
using tokenless::StatusCode;

template <class R, class T>
std::vector<R> as(const std::vector<T>& v) {
  std::vector<R> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = static_cast<R>(tokenless::to_float(v[i]));
  return r;
}

// The reference forward in R: c (each half rounded to T, as stored) and out.
template <class R>
struct Ref {
  std::vector<R> e, c, out;
};
template <class R, class T>
Ref<R> reference(const std::vector<T>& embed, const std::vector<std::int32_t>& ids,
                 const std::vector<std::int32_t>& pos, const std::vector<T>& hidden, const std::vector<T>& enorm,
                 const std::vector<T>& hnorm, const std::vector<T>& eh, std::int64_t n, int d, bool cast,
                 const std::function<R(R)>& round) {
  Ref<R> o;
  o.e.assign(static_cast<std::size_t>(n * d), R(0));
  const auto table = as<R>(embed);
  for (std::int64_t i = 0; i < n; ++i) {
    if (pos[i] == 0) continue;  // masked
    for (int c = 0; c < d; ++c) o.e[i * d + c] = table[static_cast<std::size_t>(ids[i]) * d + c];
  }
  const auto ye = rb::rms_norm<R>(o.e, {}, as<R>(enorm), n, d, R(1e-6), cast, round).y;
  const auto yh = rb::rms_norm<R>(as<R>(hidden), {}, as<R>(hnorm), n, d, R(1e-6), cast, round).y;
  o.c.assign(static_cast<std::size_t>(n * 2 * d), R(0));
  for (std::int64_t i = 0; i < n; ++i) {
    for (int c = 0; c < d; ++c) {
      o.c[i * 2 * d + c] = round(ye[i * d + c]);
      o.c[i * 2 * d + d + c] = round(yh[i * d + c]);
    }
  }
  const auto w = as<R>(eh);
  o.out.assign(static_cast<std::size_t>(n * d), R(0));
  for (std::int64_t i = 0; i < n; ++i) {
    for (int r = 0; r < d; ++r) {
      R acc = 0;
      for (int c = 0; c < 2 * d; ++c) acc += o.c[i * 2 * d + c] * w[r * 2 * d + c];
      o.out[i * d + r] = acc;
    }
  }
  return o;
}

template <class P, class T>
void check_mtp(std::int64_t n, int d, std::int64_t vocab, std::uint64_t seed) {
  CAPTURE(P::kName);
  CAPTURE(n);
  CAPTURE(d);
  constexpr bool kCast = std::is_same_v<P, bk::NormThenCast>;
  const auto embed = random_values<T>(static_cast<std::size_t>(vocab * d), seed, -1.0f, 1.0f);
  const auto hidden = random_values<T>(static_cast<std::size_t>(n * d), seed + 1, -2.0f, 2.0f);
  const auto enorm = random_values<T>(static_cast<std::size_t>(d), seed + 2, 0.5f, 1.5f);
  const auto hnorm = random_values<T>(static_cast<std::size_t>(d), seed + 3, 0.5f, 1.5f);
  const auto eh = random_values<T>(static_cast<std::size_t>(d * 2 * d), seed + 4, -0.1f, 0.1f);
  const auto gout = random_values<T>(static_cast<std::size_t>(n * d), seed + 5, -1.0f, 1.0f);
  std::mt19937_64 rng(seed + 6);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n)), pos(static_cast<std::size_t>(n));
  // Three sequences of a packed batch: positions restart at 0 (masked rows).
  const std::int64_t cut1 = n / 3, cut2 = 2 * n / 3;
  for (std::int64_t i = 0; i < n; ++i) {
    ids[i] = static_cast<std::int32_t>(rng() % static_cast<std::uint64_t>(vocab));
    pos[i] = static_cast<std::int32_t>(i < cut1 ? i : i < cut2 ? i - cut1 : i - cut2);
  }
  ids[1] = ids[n - 1];  // a row touched twice in the embedding's gradient
  DeviceBuffer<T> dembed(embed), dhidden(hidden), den(enorm), dhn(hnorm), deh(eh), out(static_cast<std::size_t>(n * d)),
      concat(static_cast<std::size_t>(n * 2 * d)), dgo(gout), dh(static_cast<std::size_t>(n * d));
  DeviceBuffer<std::int32_t> dids(ids), dpos(pos);
  DeviceBuffer<float> inv_e(static_cast<std::size_t>(n)), inv_h(static_cast<std::size_t>(n));
  tokenless::blas::LtHandle handle;
  REQUIRE_OK(tokenless::blas::LtHandle::create(handle));
  typename hd::MtpInputs<P, T>::Arguments a;
  a.handle = &handle;
  a.embed = dembed.get();
  a.ids = dids.get();
  a.positions = dpos.get();
  a.hidden = dhidden.get();
  a.enorm = den.get();
  a.hnorm = dhn.get();
  a.eh_proj = deh.get();
  a.n = n;
  a.vocab = vocab;
  a.d = d;
  a.out = out.get();
  a.concat = concat.get();
  a.inv_rms_e = inv_e.get();
  a.inv_rms_h = inv_h.get();
  Testbed<hd::MtpInputs<P, T>>().run_ok(a);
  const auto t = reference<double>(embed, ids, pos, hidden, enorm, hnorm, eh, n, d, kCast, round_d<T>());
  const auto f = reference<float>(embed, ids, pos, hidden, enorm, hnorm, eh, n, d, kCast, round_f<T>());
  const float u = tokenless::dtype_traits<T>::unit_roundoff, u32 = tokenless::dtype_traits<float>::unit_roundoff;
  const auto c_got = concat.download();
  {
    INFO("c = [enorm(masked embedding), hnorm(h)]");
    check_accuracy(to_floats(c_got), f.c, t.c, 4.0, u);
    for (std::int64_t i = 0; i < n; ++i) {
      if (pos[i] != 0) continue;
      for (int c = 0; c < d; ++c) CHECK(tokenless::to_float(c_got[i * 2 * d + c]) == 0.0f);  // masked rows
    }
  }
  {
    INFO("out = c · eh_projᵀ");
    check_accuracy(to_floats(out.download()), rounded<T>(std::vector<double>(f.out.begin(), f.out.end())), t.out, 4.0,
                   u);
  }

  // The backward, from the kernel's own c (what it kept).
  DeviceBuffer<float> geh(std::vector<float>(static_cast<std::size_t>(d * 2 * d), 5.0f)),
      gen(std::vector<float>(static_cast<std::size_t>(d), 5.0f)), ghn(std::vector<float>(static_cast<std::size_t>(d), 5.0f)),
      gemb(std::vector<float>(static_cast<std::size_t>(vocab * d), 0.0f));
  typename hd::MtpInputsBackward<P, T>::Arguments b;
  b.forward = a;
  b.grad_out = dgo.get();
  b.grad_hidden = dh.get();
  b.grad_eh_proj = geh.get();
  b.grad_enorm = gen.get();
  b.grad_hnorm = ghn.get();
  b.grad_embed = gemb.get();
  Testbed<hd::MtpInputsBackward<P, T>> tb;
  tb.run_ok(b);
  const auto go_d = as<double>(gout), c_d = as<double>(c_got), eh_d = as<double>(eh);
  const auto go_f = as<float>(gout), c_f = as<float>(c_got), eh_f = as<float>(eh);
  std::vector<double> geh_t(static_cast<std::size_t>(d * 2 * d), 0.0), dc_t(static_cast<std::size_t>(n * 2 * d), 0.0);
  std::vector<float> geh_n(geh_t.size(), 0.0f), dc_n(dc_t.size(), 0.0f);
  for (std::int64_t i = 0; i < n; ++i) {
    for (int r = 0; r < d; ++r) {
      for (int c = 0; c < 2 * d; ++c) {
        geh_t[r * 2 * d + c] += go_d[i * d + r] * c_d[i * 2 * d + c];
        geh_n[r * 2 * d + c] += go_f[i * d + r] * c_f[i * 2 * d + c];
        dc_t[i * 2 * d + c] += go_d[i * d + r] * eh_d[r * 2 * d + c];
        dc_n[i * 2 * d + c] += go_f[i * d + r] * eh_f[r * 2 * d + c];
      }
    }
  }
  {
    INFO("d eh_proj");
    check_accuracy(geh.download(), geh_n, geh_t, 4.0, u32);
  }
  // dc in T (a GEMM's output), split into the halves.
  const auto dc_nt = rounded<T>(std::vector<double>(dc_n.begin(), dc_n.end()));
  auto half = [&](const auto& v, int off) {
    std::vector<std::decay_t<decltype(v[0])>> h(static_cast<std::size_t>(n * d));
    for (std::int64_t i = 0; i < n; ++i) {
      for (int c = 0; c < d; ++c) h[i * d + c] = v[i * 2 * d + off + c];
    }
    return h;
  };
  {
    const auto [tdh, tdw] = rb::rms_norm_backward<double>(as<double>(hidden), as<double>(hnorm), half(dc_t, d), {}, n, d,
                                                          1e-6, kCast, round_d<T>());
    const auto [ndh, ndw] = rb::rms_norm_backward<float>(as<float>(hidden), as<float>(hnorm), half(dc_nt, d), {}, n, d,
                                                         1e-6f, kCast, round_f<T>());
    INFO("dh and hnorm's gradient");
    check_accuracy(to_floats(dh.download()), rounded<T>(std::vector<double>(ndh.begin(), ndh.end())), tdh, 4.0, u);
    check_accuracy(ghn.download(), ndw, tdw, 4.0, u);
  }
  {
    const auto [tde, tdw] =
        rb::rms_norm_backward<double>(t.e, as<double>(enorm), half(dc_t, 0), {}, n, d, 1e-6, kCast, round_d<T>());
    const auto [nde, ndw] = rb::rms_norm_backward<float>(std::vector<float>(t.e.begin(), t.e.end()), as<float>(enorm),
                                                         half(dc_nt, 0), {}, n, d, 1e-6f, kCast, round_f<T>());
    INFO("enorm's gradient and the embedding's (masked rows add nothing)");
    check_accuracy(gen.download(), ndw, tdw, 4.0, u);
    const auto nde_t = rounded<T>(std::vector<double>(nde.begin(), nde.end()));  // d_e stored in T
    std::vector<double> ge_t(static_cast<std::size_t>(vocab * d), 0.0);
    std::vector<float> ge_n(ge_t.size(), 0.0f);
    for (std::int64_t i = 0; i < n; ++i) {
      if (pos[i] == 0) continue;
      for (int c = 0; c < d; ++c) {
        ge_t[static_cast<std::size_t>(ids[i]) * d + c] += tde[i * d + c];
        ge_n[static_cast<std::size_t>(ids[i]) * d + c] += nde_t[i * d + c];
      }
    }
    check_accuracy(gemb.download(), ge_n, ge_t, 4.0, u);
  }
  // Accumulated: the fp32 weight gradients twice over (the table's: always added).
  const auto geh1 = geh.download();
  b.accumulate = true;
  tb.run_ok(b);
  const auto geh2 = geh.download();
  double worst = 0, scale = 0;
  for (std::size_t i = 0; i < geh1.size(); ++i) {
    worst = std::max(worst, std::fabs(double(geh2[i]) - 2.0 * geh1[i]));
    scale = std::max(scale, std::fabs(double(geh1[i])));
  }
  CHECK(worst <= 8 * 5.96e-8 * 2 * scale);
}

inline void check_bad_input() {
  using T = __nv_bfloat16;
  using Op = hd::MtpInputs<bk::NormThenCast, T>;
  const std::int64_t n = 6, vocab = 10;
  const int d = 16;
  DeviceBuffer<T> embed(random_values<T>(vocab * d, 1)), hidden(random_values<T>(n * d, 2)),
      norm(std::vector<T>(d, tokenless::from_float<T>(1.0f))), eh(random_values<T>(d * 2 * d, 3)), out(n * d);
  DeviceBuffer<std::int32_t> ids(std::vector<std::int32_t>{1, 2, 3, 4, 5, 6}),
      bad(std::vector<std::int32_t>{1, 2, 10, 4, 5, 6}), pos(std::vector<std::int32_t>{0, 1, 2, 0, 1, 2});
  tokenless::blas::LtHandle handle;
  REQUIRE_OK(tokenless::blas::LtHandle::create(handle));
  Op::Arguments a;
  a.handle = &handle;
  a.embed = embed.get();
  a.ids = ids.get();
  a.positions = pos.get();
  a.hidden = hidden.get();
  a.enorm = norm.get();
  a.hnorm = norm.get();
  a.eh_proj = eh.get();
  a.n = n;
  a.vocab = vocab;
  a.d = d;
  a.out = out.get();
  Testbed<Op> tb;
  tb.watch(out);
  const std::int32_t* bad_ptr = bad.get();
  tb.reject(a, {
      {"no rows", [](Op::Arguments& x) { x.n = 0; }, StatusCode::empty, "n"},
      {"d of 0", [](Op::Arguments& x) { x.d = 0; }, StatusCode::empty, "d"},
      {"no positions", [](Op::Arguments& x) { x.positions = nullptr; }, StatusCode::null_pointer, "positions"},
      {"no eh_proj", [](Op::Arguments& x) { x.eh_proj = nullptr; }, StatusCode::null_pointer, "eh_proj"},
      {"a NaN eps", [](Op::Arguments& x) { x.eps = NAN; }, StatusCode::invalid_argument, "eps"},
      {"an id outside the vocabulary", [bad_ptr](Op::Arguments& x) { x.ids = bad_ptr; }, StatusCode::invalid_argument,
       "ids[2] = 10"},
  });
}

}  // namespace tlt::mtp_tests

TEST_CASE_TEMPLATE("multi-token module inputs (DeepSeek-V3): forward and backward match the reference", T, float,
                   __half, __nv_bfloat16) {
  if (tlt::scale_down() > 1 && !std::is_same_v<T, __nv_bfloat16>) return;  // thread mode: bf16 alone
  tlt::mtp_tests::check_mtp<tokenless::blocks::NormThenCast, T>(23, 32, 50, 1);
  if (tlt::scale_down() == 1) tlt::mtp_tests::check_mtp<tokenless::blocks::ScaleInFp32, T>(9, 24, 13, 2);
}

TEST_CASE("multi-token module inputs: bad input is refused and nothing is written") {
  tlt::mtp_tests::check_bad_input();
}
