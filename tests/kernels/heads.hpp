#pragma once
// The prediction heads against the host reference at the naive
// same-precision tolerance, shared by the emu and gpu tiers:
//   * the fused linear cross-entropy, forward (loss in every reduction,
//     z-loss, lse, log-probs) and backward (dH, dW, db), fp32/fp16/bf16,
//     with and without bias and per-token weights, label smoothing, z-loss,
//     ignored tokens, chunks that split rows and the vocabulary unevenly,
//     gradients written and accumulated, bit-identical reruns;
//   * the reference's gradient against central differences;
//   * DPO over the log-probs: loss, sequence log-probs, rewards and the
//     per-token gradient against the reference (a sequence in two pairs, an
//     empty one), and end to end through the cross-entropy's backward into
//     dH; its reference's gradient against central differences;
//   * bad input: arguments refused, and a label outside the vocabulary
//     named on the device with nothing written.
#include "../support/testbed.hpp"

#include <tokenless/heads/dpo.cuh>
#include <tokenless/heads/linear_cross_entropy.cuh>
#include <tokenless/reference/heads.hpp>

#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

namespace tlt::heads_tests {

namespace hd = tokenless::heads;
namespace ref = tokenless::reference::heads;
using tokenless::StatusCode;

struct Case {
  std::int64_t n = 37, vocab = 301;
  int d = 64;
  hd::CrossEntropyOptions o{};
  bool bias = false, weights = false;
  int chunk_rows = 0, chunk_cols = 0;
  std::uint64_t seed = 1;
};

template <class T>
struct Problem {
  Case c;
  std::vector<T> h, w, b;
  std::vector<std::int32_t> labels;
  std::vector<float> tw;
  explicit Problem(const Case& k) : c(k) {
    const float scale = 2.0f / std::sqrt(static_cast<float>(k.d));
    h = random_values<T>(static_cast<std::size_t>(k.n * k.d), k.seed, -1.0f, 1.0f);
    w = random_values<T>(static_cast<std::size_t>(k.vocab * k.d), k.seed + 1, -scale, scale);
    if (k.bias) b = random_values<T>(static_cast<std::size_t>(k.vocab), k.seed + 2, -0.5f, 0.5f);
    std::mt19937_64 rng(k.seed + 3);
    labels.resize(static_cast<std::size_t>(k.n));
    for (auto& y : labels) y = static_cast<std::int32_t>(rng() % static_cast<std::uint64_t>(k.vocab));
    for (std::int64_t i = 0; i < k.n; i += 5) labels[i] = k.o.ignore_index;  // every fifth token ignored
    if (k.weights) tw = random_values<float>(static_cast<std::size_t>(k.n), k.seed + 4, 0.25f, 2.0f);
  }
  template <class R>
  std::vector<R> wide(const std::vector<T>& v) const {
    std::vector<R> r(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) r[i] = static_cast<R>(tokenless::to_float(v[i]));
    return r;
  }
  template <class R>
  std::vector<R> weights_as() const {
    return std::vector<R>(tw.begin(), tw.end());
  }
};

template <class T>
void check_case(const Case& k) {
  CAPTURE(k.n);
  CAPTURE(k.vocab);
  CAPTURE(k.d);
  CAPTURE(tokenless::heads::to_string(k.o.reduction));
  CAPTURE(k.o.label_smoothing);
  CAPTURE(k.o.z_loss);
  CAPTURE(k.bias);
  CAPTURE(k.weights);
  CAPTURE(k.chunk_rows);
  CAPTURE(k.chunk_cols);
  const Problem<T> p(k);
  const bool none = k.o.reduction == hd::Reduction::none;
  const std::size_t n = static_cast<std::size_t>(k.n), outs = none ? n : 1;
  DeviceBuffer<T> h(p.h), w(p.w), b(k.bias ? p.b : std::vector<T>(1));
  DeviceBuffer<std::int32_t> labels(p.labels);
  DeviceBuffer<float> tw(k.weights ? p.tw : std::vector<float>(1));
  DeviceBuffer<float> loss(outs), z_loss(outs), lse(n), logprob(n);
  tokenless::blas::LtHandle handle;
  REQUIRE_OK(tokenless::blas::LtHandle::create(handle));
  typename hd::LinearCrossEntropy<T>::Arguments a;
  a.handle = &handle;
  a.h = h.get();
  a.weight = w.get();
  a.bias = k.bias ? b.get() : nullptr;
  a.labels = labels.get();
  a.token_weights = k.weights ? tw.get() : nullptr;
  a.n = k.n;
  a.vocab = k.vocab;
  a.d = k.d;
  a.options = k.o;
  a.loss = loss.get();
  a.z_loss = z_loss.get();
  a.lse = lse.get();
  a.logprob = logprob.get();
  a.chunk_rows = k.chunk_rows;
  a.chunk_cols = k.chunk_cols;
  Testbed<hd::LinearCrossEntropy<T>>().run_ok(a);

  // Truth in double, naive in float, both from the stored (rounded) inputs.
  const auto hb = k.bias ? p.template wide<double>(p.b) : std::vector<double>{};
  const auto fb = k.bias ? p.template wide<float>(p.b) : std::vector<float>{};
  const auto truth = ref::linear_cross_entropy<double>(p.template wide<double>(p.h), p.template wide<double>(p.w), hb,
                                                       p.labels, p.template weights_as<double>(), k.n, k.vocab, k.d, k.o);
  const auto naive = ref::linear_cross_entropy<float>(p.template wide<float>(p.h), p.template wide<float>(p.w), fb,
                                                      p.labels, p.template weights_as<float>(), k.n, k.vocab, k.d, k.o);
  // Every forward output is an fp32 computation from the fp32 logits.
  const float u32 = tokenless::dtype_traits<float>::unit_roundoff;
  {
    INFO("lse");
    check_accuracy(lse.download(), naive.lse, truth.lse, 4.0, u32);
  }
  {
    INFO("log-probs");
    check_accuracy(logprob.download(), naive.logprob, truth.logprob, 4.0, u32);
  }
  if (none) {
    INFO("per-token loss");
    check_accuracy(loss.download(), naive.loss_tok, truth.loss_tok, 4.0, u32);
    check_accuracy(z_loss.download(), naive.z_tok, truth.z_tok, 4.0, u32);
  } else {
    INFO("the reduced loss and z-loss");
    check_accuracy(loss.download(), {naive.loss}, {truth.loss}, 4.0, u32);
    check_accuracy(z_loss.download(), {naive.z_loss}, {truth.z_loss}, 4.0, u32);
  }

  // The backward: dL/dloss random; gradients written, then accumulated.
  const auto grad = random_values<float>(outs, k.seed + 5, 0.5f, 1.5f);
  DeviceBuffer<float> g(grad);
  DeviceBuffer<T> dh(static_cast<std::size_t>(k.n * k.d));
  DeviceBuffer<float> dw(std::vector<float>(static_cast<std::size_t>(k.vocab * k.d), 3.0f));
  DeviceBuffer<float> db(std::vector<float>(static_cast<std::size_t>(k.vocab), 3.0f));
  typename hd::LinearCrossEntropyBackward<T>::Arguments bw;
  bw.forward = a;
  bw.grad_loss = g.get();
  bw.grad_h = dh.get();
  bw.grad_weight = dw.get();
  bw.grad_bias = k.bias ? db.get() : nullptr;
  Testbed<hd::LinearCrossEntropyBackward<T>> tb;
  tb.run_ok(bw);
  const auto round_dz = [](double v) { return static_cast<double>(tokenless::round_trip<T>(static_cast<float>(v))); };
  const auto round_dz_f = [](float v) { return tokenless::round_trip<T>(v); };
  const auto tg = ref::linear_cross_entropy_backward<double>(
      p.template wide<double>(p.h), p.template wide<double>(p.w), hb, p.labels, p.template weights_as<double>(), k.n,
      k.vocab, k.d, k.o, std::vector<double>(grad.begin(), grad.end()), round_dz);
  const auto ng = ref::linear_cross_entropy_backward<float>(p.template wide<float>(p.h), p.template wide<float>(p.w),
                                                            fb, p.labels, p.template weights_as<float>(), k.n, k.vocab,
                                                            k.d, k.o, grad, round_dz_f);
  // The truth rounds dz as the kernels store it too: what is left is the
  // GEMMs' accumulation and, for dH, its rounding to T.
  const float u = tokenless::dtype_traits<T>::unit_roundoff;
  const auto dh1 = to_floats(dh.download());
  const auto dw1 = dw.download();
  const auto db1 = db.download();
  {
    INFO("dH");
    check_accuracy(dh1, rounded<T>(ng.dh.empty() ? std::vector<double>{} : std::vector<double>(ng.dh.begin(), ng.dh.end())),
                   tg.dh, 4.0, u);
  }
  {
    INFO("dW");
    check_accuracy(dw1, ng.dw, tg.dw, 4.0, u32);
  }
  if (k.bias) {
    INFO("db");
    check_accuracy(db1, ng.db, tg.db, 4.0, u32);
  }
  // Accumulated onto zeros: the written values bit for bit (a bit-identical
  // rerun); accumulated again: twice them, to fp32's rounding of the chunks' sums.
  bw.accumulate = true;
  dw.upload(std::vector<float>(dw1.size(), 0.0f));
  db.upload(std::vector<float>(db1.size(), 0.0f));
  tb.run_ok(bw);
  CHECK(to_floats(dh.download()) == dh1);
  CHECK(dw.download() == dw1);
  if (k.bias) CHECK(db.download() == db1);
  tb.run_ok(bw);
  auto near_twice = [](const std::vector<float>& got, const std::vector<float>& once) {
    double worst = 0, scale = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      worst = std::max(worst, std::fabs(double(got[i]) - 2.0 * once[i]));
      scale = std::max(scale, std::fabs(double(once[i])));
    }
    return worst <= 8 * 5.96e-8 * 2 * scale;
  };
  CHECK(near_twice(dw.download(), dw1));
  if (k.bias) CHECK(near_twice(db.download(), db1));
}

template <class T>
void option_sweep() {
  const int s = scale_down();
  Case base;
  // Thread mode (TSan) and the sanitizer sizes: bf16 only, the chunked case
  // alone (it has every kernel and option; the other storage types and
  // reductions share its synchronisation). It took 55 s in thread mode.
  if (s > 1 && !std::is_same_v<T, __nv_bfloat16>) return;
  if (s == 1) check_case<T>(base);  // mean, one chunk
  Case chunked = base;  // rows and vocabulary split unevenly
  chunked.chunk_rows = 7;
  chunked.chunk_cols = 50;
  chunked.bias = true;
  chunked.weights = true;
  chunked.o.label_smoothing = 0.1f;
  chunked.o.z_loss = 0.01f;
  check_case<T>(chunked);
  if (s > 1) return;
  for (const auto r : {hd::Reduction::sum, hd::Reduction::none}) {
    Case c = chunked;
    c.o.reduction = r;
    c.seed = 7 + static_cast<int>(r);
    check_case<T>(c);
  }
  Case wide = base;  // a vocabulary of several default-sized column chunks' worth
  wide.vocab = 1500;
  wide.d = 32;
  wide.chunk_cols = 512;
  wide.o.ignore_index = 3;
  check_case<T>(wide);
}

// The reference's gradient against central differences of its loss (double).
inline void check_reference_gradient() {
  const std::int64_t n = 5, V = 7;
  const int d = 3;
  hd::CrossEntropyOptions o;
  o.label_smoothing = 0.2f;
  o.z_loss = 0.05f;
  auto doubles = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
  auto h = doubles(random_values<float>(n * d, 1)), w = doubles(random_values<float>(V * d, 2)),
       b = doubles(random_values<float>(V, 3));
  const std::vector<std::int32_t> y{1, -100, 6, 0, 3};
  const std::vector<double> tw{1.0, 2.0, 0.5, 1.5, 1.0};
  const auto loss = [&](const std::vector<double>& hh, const std::vector<double>& ww, const std::vector<double>& bb) {
    return ref::linear_cross_entropy<double>(hh, ww, bb, y, tw, n, V, d, o).loss;
  };
  const auto g = ref::linear_cross_entropy_backward<double>(h, w, b, y, tw, n, V, d, o, {1.0}, [](double v) { return v; });
  const double e = 1e-6;
  auto fd = [&](std::vector<double>& x, std::size_t i) {
    const double keep = x[i];
    x[i] = keep + e;
    const double up = loss(h, w, b);
    x[i] = keep - e;
    const double down = loss(h, w, b);
    x[i] = keep;
    return (up - down) / (2 * e);
  };
  for (std::size_t i = 0; i < h.size(); ++i) CHECK(std::fabs(fd(h, i) - g.dh[i]) < 1e-7);
  for (std::size_t i = 0; i < w.size(); ++i) CHECK(std::fabs(fd(w, i) - g.dw[i]) < 1e-7);
  for (std::size_t i = 0; i < b.size(); ++i) CHECK(std::fabs(fd(b, i) - g.db[i]) < 1e-7);
}

inline void check_bad_input() {
  using T = __nv_bfloat16;
  using Op = hd::LinearCrossEntropy<T>;
  using Bwd = hd::LinearCrossEntropyBackward<T>;
  Case k;
  const Problem<T> p(k);
  std::vector<std::int32_t> bad_labels = p.labels;
  bad_labels[3] = 999;
  DeviceBuffer<T> h(p.h), w(p.w);
  DeviceBuffer<std::int32_t> labels(p.labels), bad(bad_labels);
  DeviceBuffer<float> loss(1), lse(static_cast<std::size_t>(k.n)), g(std::vector<float>{1.0f});
  DeviceBuffer<float> dw(static_cast<std::size_t>(k.vocab * k.d));
  DeviceBuffer<T> dh(static_cast<std::size_t>(k.n * k.d));
  tokenless::blas::LtHandle handle;
  REQUIRE_OK(tokenless::blas::LtHandle::create(handle));
  Op::Arguments a;
  a.handle = &handle;
  a.h = h.get();
  a.weight = w.get();
  a.labels = labels.get();
  a.n = k.n;
  a.vocab = k.vocab;
  a.d = k.d;
  a.loss = loss.get();
  a.lse = lse.get();
  a.chunk_rows = 16;
  a.chunk_cols = 100;
  Testbed<Op> fwd;
  fwd.watch(loss).watch(lse);
  const std::int32_t* bad_ptr = bad.get();
  fwd.reject(a, {
      {"no tokens", [](Op::Arguments& x) { x.n = 0; }, StatusCode::empty, "n"},
      {"no vocabulary", [](Op::Arguments& x) { x.vocab = 0; }, StatusCode::empty, "vocab"},
      {"d of 0", [](Op::Arguments& x) { x.d = 0; }, StatusCode::empty, "d"},
      {"no labels", [](Op::Arguments& x) { x.labels = nullptr; }, StatusCode::null_pointer, "labels"},
      {"smoothing above 1", [](Op::Arguments& x) { x.options.label_smoothing = 1.5f; }, StatusCode::invalid_argument,
       "label_smoothing"},
      {"a NaN z-loss", [](Op::Arguments& x) { x.options.z_loss = NAN; }, StatusCode::invalid_argument, "z_loss"},
      {"a vocabulary past 32 bits", [](Op::Arguments& x) { x.vocab = std::int64_t{1} << 32; }, StatusCode::overflow,
       "vocab"},
      {"a label outside the vocabulary", [bad_ptr](Op::Arguments& x) { x.labels = bad_ptr; },
       StatusCode::invalid_argument, "labels[3] = 999"},
  });
  // The backward: the same label refused on the device, no gradient touched.
  Testbed<Op>().run_ok(a);
  Bwd::Arguments b;
  b.forward = a;
  b.grad_loss = g.get();
  b.grad_h = dh.get();
  b.grad_weight = dw.get();
  Testbed<Bwd> bwd;
  bwd.watch(dh).watch(dw);
  bwd.reject(b, {
      {"a label outside the vocabulary", [bad_ptr](Bwd::Arguments& x) { x.forward.labels = bad_ptr; },
       StatusCode::invalid_argument, "labels[3] = 999"},
      {"no gradient asked for",
       [](Bwd::Arguments& x) {
         x.grad_h = nullptr;
         x.grad_weight = nullptr;
       },
       StatusCode::null_pointer, "grad_h"},
      {"a bias gradient without a bias", [](Bwd::Arguments& x) { x.grad_bias = x.grad_weight; },
       StatusCode::invalid_argument, "grad_bias"},
      {"no dL/dloss", [](Bwd::Arguments& x) { x.grad_loss = nullptr; }, StatusCode::null_pointer, "grad_loss"},
  });
}

inline void check_dpo() {
  const std::vector<std::int32_t> cu{0, 3, 7, 7, 12, 20, 26};
  const std::vector<std::int32_t> chosen{0, 3, 4}, rejected{1, 5, 3};
  const std::int64_t n = cu.back(), S = static_cast<std::int64_t>(cu.size()) - 1;
  const float beta = 0.5f;
  const auto lp = random_values<float>(static_cast<std::size_t>(n), 3, -3.0f, -0.1f);
  const auto ref_lp = random_values<float>(static_cast<std::size_t>(S), 4, -12.0f, -2.0f);
  DeviceBuffer<float> logprob(lp), ref(ref_lp), loss(1), seq(static_cast<std::size_t>(S)), rc(3), rr(3),
      grad(static_cast<std::size_t>(n));
  DeviceBuffer<std::int32_t> dcu(cu), dc(chosen), dr(rejected);
  hd::DpoLoss::Arguments a;
  a.logprob = logprob.get();
  a.seqs = tokenless::VarlenBatch::packed(dcu.get(), S, n);
  a.ref_logprob = ref.get();
  a.chosen = dc.get();
  a.rejected = dr.get();
  a.pairs = 3;
  a.beta = beta;
  a.loss = loss.get();
  a.seq_logprob = seq.get();
  a.chosen_reward = rc.get();
  a.rejected_reward = rr.get();
  a.grad_token_loss = grad.get();
  Testbed<hd::DpoLoss> tb;
  tb.run_ok(a);
  const auto wide = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
  const auto t = ref::dpo<double>(wide(lp), cu, wide(ref_lp), chosen, rejected, double{beta});
  const auto f = ref::dpo<float>(lp, cu, ref_lp, chosen, rejected, beta);
  const float u = tokenless::dtype_traits<float>::unit_roundoff;
  check_accuracy(loss.download(), {f.loss}, {t.loss}, 4.0, u);
  check_accuracy(seq.download(), f.seq, t.seq, 4.0, u);
  check_accuracy(rc.download(), f.chosen_reward, t.chosen_reward, 4.0, u);
  check_accuracy(rr.download(), f.rejected_reward, t.rejected_reward, 4.0, u);
  check_accuracy(grad.download(), f.grad_token_loss, t.grad_token_loss, 4.0, u);
  // The reference's per-token gradient against central differences of its loss.
  auto lpd = wide(lp);
  for (std::size_t i = 0; i < lpd.size(); ++i) {
    const double keep = lpd[i];
    lpd[i] = keep + 1e-6;
    const double up = ref::dpo<double>(lpd, cu, wide(ref_lp), chosen, rejected, double{beta}).loss;
    lpd[i] = keep - 1e-6;
    const double down = ref::dpo<double>(lpd, cu, wide(ref_lp), chosen, rejected, double{beta}).loss;
    lpd[i] = keep;
    CHECK(std::fabs(-(up - down) / 2e-6 - t.grad_token_loss[i]) < 1e-7);  // a token's loss is −its log-prob
  }
  // Bad input: nothing written.
  std::vector<std::int32_t> same = rejected, outside = rejected;
  same[1] = chosen[1];
  outside[2] = 6;
  DeviceBuffer<std::int32_t> dsame(same), doutside(outside);
  const std::int32_t* ps = dsame.get();
  const std::int32_t* po = doutside.get();
  Testbed<hd::DpoLoss> bad;
  bad.watch(loss).watch(seq).watch(grad);
  bad.reject(a, {
      {"no pairs", [](hd::DpoLoss::Arguments& x) { x.pairs = 0; }, StatusCode::empty, "pairs"},
      {"beta of 0", [](hd::DpoLoss::Arguments& x) { x.beta = 0.0f; }, StatusCode::invalid_argument, "beta"},
      {"no reference log-probs", [](hd::DpoLoss::Arguments& x) { x.ref_logprob = nullptr; }, StatusCode::null_pointer,
       "ref_logprob"},
      {"a pair of one sequence", [ps](hd::DpoLoss::Arguments& x) { x.rejected = ps; }, StatusCode::invalid_argument,
       "pair 1: chosen 3, rejected 3"},
      {"a sequence outside the batch", [po](hd::DpoLoss::Arguments& x) { x.rejected = po; },
       StatusCode::invalid_argument, "pair 2: chosen 4, rejected 6"},
  });
}

// DPO end to end: the cross-entropy's log-probs, DPO, and its per-token
// gradient back through the cross-entropy into dH.
inline void check_dpo_through_cross_entropy() {
  using T = __nv_bfloat16;
  Case k;
  k.n = 20;
  k.vocab = 97;
  k.d = 32;
  k.o.reduction = hd::Reduction::none;
  const Problem<T> p(k);  // every fifth token ignored: a prompt's, say
  const std::vector<std::int32_t> cu{0, 6, 10, 15, 20};
  const std::vector<std::int32_t> chosen{0, 2}, rejected{1, 3};
  const std::vector<float> ref_lp{-20.0f, -22.0f, -18.0f, -19.0f};
  DeviceBuffer<T> h(p.h), w(p.w), dh(static_cast<std::size_t>(k.n * k.d));
  DeviceBuffer<std::int32_t> labels(p.labels), dcu(cu), dc(chosen), dr(rejected);
  DeviceBuffer<float> token_loss(static_cast<std::size_t>(k.n)), lse(static_cast<std::size_t>(k.n)),
      logprob(static_cast<std::size_t>(k.n)), ref_d(ref_lp), loss(1), g(static_cast<std::size_t>(k.n));
  tokenless::blas::LtHandle handle;
  REQUIRE_OK(tokenless::blas::LtHandle::create(handle));
  hd::LinearCrossEntropy<T>::Arguments a;
  a.handle = &handle;
  a.h = h.get();
  a.weight = w.get();
  a.labels = labels.get();
  a.n = k.n;
  a.vocab = k.vocab;
  a.d = k.d;
  a.options = k.o;
  a.loss = token_loss.get();
  a.lse = lse.get();
  a.logprob = logprob.get();
  Testbed<hd::LinearCrossEntropy<T>>().run_ok(a);
  hd::DpoLoss::Arguments d;
  d.logprob = logprob.get();
  d.seqs = tokenless::VarlenBatch::packed(dcu.get(), 4, k.n);
  d.ref_logprob = ref_d.get();
  d.chosen = dc.get();
  d.rejected = dr.get();
  d.pairs = 2;
  d.beta = 0.1f;
  d.loss = loss.get();
  d.grad_token_loss = g.get();
  Testbed<hd::DpoLoss>().run_ok(d);
  hd::LinearCrossEntropyBackward<T>::Arguments b;
  b.forward = a;
  b.grad_loss = g.get();
  b.grad_h = dh.get();
  Testbed<hd::LinearCrossEntropyBackward<T>>().run_ok(b);
  // The reference chain in double.
  const auto hw = p.template wide<double>(p.h), ww = p.template wide<double>(p.w);
  const auto f = ref::linear_cross_entropy<double>(hw, ww, {}, p.labels, {}, k.n, k.vocab, k.d, k.o);
  const auto dp = ref::dpo<double>(f.logprob, cu, std::vector<double>(ref_lp.begin(), ref_lp.end()), chosen, rejected, 0.1);
  CHECK(std::fabs(loss.download()[0] - dp.loss) < 1e-4 * (1.0 + std::fabs(dp.loss)));
  const auto round_dz = [](double v) { return static_cast<double>(tokenless::round_trip<T>(static_cast<float>(v))); };
  const auto tg = ref::linear_cross_entropy_backward<double>(hw, ww, {}, p.labels, {}, k.n, k.vocab, k.d, k.o,
                                                             dp.grad_token_loss, round_dz);
  const auto got = to_floats(dh.download());
  double worst = 0, scale = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    worst = std::max(worst, std::fabs(got[i] - tg.dh[i]));
    scale = std::max(scale, std::fabs(tg.dh[i]));
  }
  INFO("dH error " << worst << " at scale " << scale);
  CHECK(worst <= 4 * 3.9e-3 * scale);  // bf16 dz and dH, a few roundings deep
}

}  // namespace tlt::heads_tests

TEST_CASE("heads: DPO's loss, rewards and per-token gradient match the reference; bad pairs write nothing") {
  tlt::heads_tests::check_dpo();
}

TEST_CASE("heads: DPO through the cross-entropy's log-probs and back into dH") {
  tlt::heads_tests::check_dpo_through_cross_entropy();
}

TEST_CASE_TEMPLATE("heads: fused linear cross-entropy matches the reference, forward and backward", T, float, __half,
                   __nv_bfloat16) {
  tlt::heads_tests::option_sweep<T>();
}

TEST_CASE("heads: the cross-entropy reference's gradient matches central differences") {
  tlt::heads_tests::check_reference_gradient();
}

TEST_CASE("heads: fused linear cross-entropy refuses bad input and writes nothing") {
  tlt::heads_tests::check_bad_input();
}

TEST_CASE("heads: fused linear cross-entropy at Llama 3's vocabulary (gpu tier)") {
  if (std::strcmp(tokenless::backend_name(), "emu") == 0) {
    MESSAGE("V 128256 is the gpu tier's (the executor's GEMM loop would take minutes)");
    return;
  }
  tlt::heads_tests::Case k;
  k.n = 48;
  k.vocab = 128256;
  k.d = 128;
  k.chunk_cols = 16384;  // several vocabulary chunks, the last one partial
  k.o.z_loss = 1e-4f;
  tlt::heads_tests::check_case<__nv_bfloat16>(k);
}
