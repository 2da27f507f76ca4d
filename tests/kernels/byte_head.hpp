#pragma once
// The byte head against the host reference, shared by the emu and gpu tiers:
//   * forward: entropy, lse, log-probs, the loss in every reduction with
//     every option, z-loss, dz, the argmax, the norm's inverse rms (the
//     library's RmsNorm bits exactly); fp32/fp16/bf16, both norm policies and
//     none, bias and per-token weights, partial row tiles and d chunks;
//   * backward from the forward's dz: dW, db, dh through the norm and the
//     norm weight's gradient, in row chunks, written and accumulated;
//   * sampling: the reference's draw wherever rounding cannot flip it, the
//     same draw on a rerun, another at another offset, the nucleus respected,
//     and frequencies that follow the probabilities;
//   * the entropy equals the patcher's own entropy pass over the logits, and
//     fed to the patcher gives its patches;
//   * bad input: refused with nothing written, a bad label named on the device.
#include "../support/testbed.hpp"

#include <tokenless/blocks/norm.cuh>
#include <tokenless/heads/byte_head.cuh>
#include <tokenless/patcher/patcher.cuh>
#include <tokenless/reference/blocks.hpp>
#include <tokenless/reference/heads.hpp>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace tlt::byte_head_tests {

namespace hd = tokenless::heads;
namespace bk = tokenless::blocks;
namespace ref = tokenless::reference::heads;
using tokenless::StatusCode;

struct ByteCase {
  std::int64_t n = 100;  // a full row tile and a partial one
  int vocab = 260, d = 96;
  bool norm = true, bias = false, weights = false;
  hd::CrossEntropyOptions o{};
  int chunk_rows = 0;
  float w_scale = 3.0f;  // logits of order 1: entropies across the range
  std::uint64_t seed = 11;
};

template <class P, class T>
struct ByteProblem {
  ByteCase c;
  std::vector<T> h, g, w, b;
  std::vector<std::int32_t> labels;
  std::vector<float> tw;
  std::vector<T> y;        // the rows the logits are formed from: the library's RmsNorm output (or h)
  std::vector<float> inv;  // RmsNorm's inverse rms
  explicit ByteProblem(const ByteCase& k) : c(k) {
    const float s = k.w_scale / std::sqrt(static_cast<float>(k.d));
    h = random_values<T>(static_cast<std::size_t>(k.n * k.d), k.seed, -2.0f, 2.0f);
    g = random_values<T>(static_cast<std::size_t>(k.d), k.seed + 1, 0.5f, 1.5f);
    w = random_values<T>(static_cast<std::size_t>(k.vocab * k.d), k.seed + 2, -s, s);
    if (k.bias) b = random_values<T>(static_cast<std::size_t>(k.vocab), k.seed + 3, -0.5f, 0.5f);
    std::mt19937_64 rng(k.seed + 4);
    labels.resize(static_cast<std::size_t>(k.n));
    for (auto& l : labels) l = static_cast<std::int32_t>(rng() % static_cast<std::uint64_t>(k.vocab));
    for (std::int64_t i = 0; i < k.n; i += 7) labels[i] = k.o.ignore_index;
    if (k.weights) tw = random_values<float>(static_cast<std::size_t>(k.n), k.seed + 5, 0.25f, 2.0f);
    y = h;
    if (k.norm) {
      DeviceBuffer<T> dh(h), dg(g), out(static_cast<std::size_t>(k.n * k.d));
      DeviceBuffer<float> di(static_cast<std::size_t>(k.n));
      REQUIRE_OK((bk::RmsNorm<P, T>::run(
          {.x = dh.get(), .weight = dg.get(), .rows = k.n, .d = k.d, .eps = 1e-5f, .out = out.get(), .inv_rms = di.get()})));
      y = out.download();
      inv = di.download();
    }
  }
  template <class R>
  std::vector<R> logits() const {
    std::vector<R> yr(y.size()), wr(w.size()), br(b.size());
    for (std::size_t i = 0; i < y.size(); ++i) yr[i] = static_cast<R>(tokenless::to_float(y[i]));
    for (std::size_t i = 0; i < w.size(); ++i) wr[i] = static_cast<R>(tokenless::to_float(w[i]));
    for (std::size_t i = 0; i < b.size(); ++i) br[i] = static_cast<R>(tokenless::to_float(b[i]));
    return ref::logits<R>(yr, wr, br, c.n, c.vocab, c.d);
  }
};

template <class R, class T>
std::vector<R> as(const std::vector<T>& v) {
  std::vector<R> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = static_cast<R>(tokenless::to_float(v[i]));
  return r;
}

template <class P, class T>
typename hd::ByteHead<P, T>::Arguments head_args(const ByteCase& k, const DeviceBuffer<T>& h, const DeviceBuffer<T>& g,
                                                 const DeviceBuffer<T>& w, const DeviceBuffer<T>& b) {
  typename hd::ByteHead<P, T>::Arguments a;
  a.h = h.get();
  a.norm_weight = k.norm ? g.get() : nullptr;
  a.weight = w.get();
  a.bias = k.bias ? b.get() : nullptr;
  a.n = k.n;
  a.vocab = k.vocab;
  a.d = k.d;
  a.options = k.o;
  return a;
}

template <class P, class T>
void check_case(const ByteCase& k) {
  CAPTURE(P::kName);
  CAPTURE(k.n);
  CAPTURE(k.d);
  CAPTURE(k.vocab);
  CAPTURE(k.norm);
  CAPTURE(k.bias);
  CAPTURE(k.weights);
  CAPTURE(hd::to_string(k.o.reduction));
  const ByteProblem<P, T> p(k);
  const std::size_t n = static_cast<std::size_t>(k.n), V = static_cast<std::size_t>(k.vocab);
  const bool none = k.o.reduction == hd::Reduction::none;
  const std::size_t outs = none ? n : 1;
  const auto grad = random_values<float>(outs, k.seed + 6, 0.5f, 1.5f);
  DeviceBuffer<T> h(p.h), g(p.g), w(p.w), b(k.bias ? p.b : std::vector<T>(1)), dz(n * V);
  DeviceBuffer<std::int32_t> labels(p.labels), next(n);
  DeviceBuffer<float> tw(k.weights ? p.tw : std::vector<float>(1)), entropy(n), lse(n), logprob(n), inv(n), loss(outs),
      z_loss(outs), gl(grad);
  auto a = head_args<P, T>(k, h, g, w, b);
  a.entropy = entropy.get();
  a.next = next.get();
  a.labels = labels.get();
  a.token_weights = k.weights ? tw.get() : nullptr;
  a.loss = loss.get();
  a.z_loss = z_loss.get();
  a.lse = lse.get();
  a.logprob = logprob.get();
  a.grad_loss = gl.get();
  a.grad_logits = dz.get();
  a.inv_rms = inv.get();
  Testbed<hd::ByteHead<P, T>>().run_ok(a);

  const auto zt = p.template logits<double>();
  const auto zn = p.template logits<float>();
  const float u32 = tokenless::dtype_traits<float>::unit_roundoff, u = tokenless::dtype_traits<T>::unit_roundoff;
  if (k.norm) {
    INFO("the norm's inverse rms: RmsNorm's bits");
    CHECK(inv.download() == p.inv);
  }
  {
    INFO("entropy");
    std::vector<double> et(n);
    std::vector<float> en(n);
    for (std::size_t i = 0; i < n; ++i) {
      et[i] = ref::entropy(zt.data() + i * V, k.vocab);
      en[i] = ref::entropy(zn.data() + i * V, k.vocab);
    }
    check_accuracy(entropy.download(), en, et, 4.0, u32);
  }
  // The loss from the same rows through the linear cross-entropy's reference.
  const auto bt = k.bias ? as<double>(p.b) : std::vector<double>{};
  const auto bn = k.bias ? as<float>(p.b) : std::vector<float>{};
  const auto twd = std::vector<double>(p.tw.begin(), p.tw.end());
  const auto truth = ref::linear_cross_entropy<double>(as<double>(p.y), as<double>(p.w), bt, p.labels, twd, k.n,
                                                       k.vocab, k.d, k.o);
  const auto naive = ref::linear_cross_entropy<float>(as<float>(p.y), as<float>(p.w), bn, p.labels, p.tw, k.n, k.vocab,
                                                      k.d, k.o);
  {
    INFO("lse and log-probs");
    check_accuracy(lse.download(), naive.lse, truth.lse, 4.0, u32);
    check_accuracy(logprob.download(), naive.logprob, truth.logprob, 4.0, u32);
  }
  if (none) {
    INFO("per-token loss and z-loss");
    check_accuracy(loss.download(), naive.loss_tok, truth.loss_tok, 4.0, u32);
    check_accuracy(z_loss.download(), naive.z_tok, truth.z_tok, 4.0, u32);
  } else {
    INFO("reduced loss and z-loss");
    check_accuracy(loss.download(), {naive.loss}, {truth.loss}, 4.0, u32);
    check_accuracy(z_loss.download(), {naive.z_loss}, {truth.z_loss}, 4.0, u32);
  }
  const auto dzt = ref::cross_entropy_grad_logits<double>(zt, p.labels, twd, k.n, k.vocab, k.o,
                                                          std::vector<double>(grad.begin(), grad.end()));
  const auto dzn = ref::cross_entropy_grad_logits<float>(zn, p.labels, p.tw, k.n, k.vocab, k.o, grad);
  const auto dz_got = dz.download();
  {
    INFO("dz");
    check_accuracy(to_floats(dz_got), rounded<T>(std::vector<double>(dzn.begin(), dzn.end())), dzt, 4.0, u);
  }
  {
    INFO("argmax, where rounding cannot flip it");
    const auto ids = next.download();
    for (std::size_t i = 0; i < n; ++i) {
      double margin = 0;
      const std::int32_t want = ref::sample<double>(zt.data() + i * V, k.vocab, {}, static_cast<std::int64_t>(i), &margin);
      if (margin > 1e-3) CHECK(ids[i] == want);
    }
  }

  // The backward, from the forward's dz (as stored).
  DeviceBuffer<T> dh(static_cast<std::size_t>(k.n * k.d));
  DeviceBuffer<float> dw(std::vector<float>(V * k.d, 3.0f)), db(std::vector<float>(V, 3.0f)),
      dg(std::vector<float>(static_cast<std::size_t>(k.d), 3.0f));
  tokenless::blas::LtHandle handle;
  REQUIRE_OK(tokenless::blas::LtHandle::create(handle));
  typename hd::ByteHeadBackward<P, T>::Arguments bw;
  bw.handle = &handle;
  bw.h = h.get();
  bw.norm_weight = a.norm_weight;
  bw.weight = w.get();
  bw.n = k.n;
  bw.vocab = k.vocab;
  bw.d = k.d;
  bw.grad_logits = dz.get();
  bw.grad_h = dh.get();
  bw.grad_norm_weight = k.norm ? dg.get() : nullptr;
  bw.grad_weight = dw.get();
  bw.grad_bias = k.bias ? db.get() : nullptr;
  bw.chunk_rows = k.chunk_rows;
  Testbed<hd::ByteHeadBackward<P, T>> tb;
  tb.run_ok(bw);
  const auto dzd = as<double>(dz_got);
  const auto dzf = as<float>(dz_got);
  const std::vector<double> wd = as<double>(p.w), yd = as<double>(p.y);
  const std::vector<float> wf = as<float>(p.w), yf = as<float>(p.y);
  std::vector<double> dwt(V * k.d, 0.0), dbt(V, 0.0), dyt(n * k.d, 0.0);
  std::vector<float> dwn(V * k.d, 0.0f), dbn(V, 0.0f), dyn(n * k.d, 0.0f);
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t j = 0; j < V; ++j) {
      const double zd = dzd[i * V + j];
      const float zf = dzf[i * V + j];
      dbt[j] += zd;
      dbn[j] += zf;
      for (int c = 0; c < k.d; ++c) {
        dwt[j * k.d + c] += zd * yd[i * k.d + c];
        dwn[j * k.d + c] += zf * yf[i * k.d + c];
        dyt[i * k.d + c] += zd * wd[j * k.d + c];
        dyn[i * k.d + c] += zf * wf[j * k.d + c];
      }
    }
  }
  const auto dw1 = dw.download(), db1 = db.download(), dg1 = dg.download();
  const auto dh1 = to_floats(dh.download());
  {
    INFO("dW");
    check_accuracy(dw1, dwn, dwt, 4.0, u32);
  }
  if (k.bias) {
    INFO("db");
    check_accuracy(db1, dbn, dbt, 4.0, u32);
  }
  // dy = dz · W is stored in T before the norm's backward, as a separate
  // GEMM's output would be: the naive chain rounds it too.
  const auto dyn_t = rounded<T>(std::vector<double>(dyn.begin(), dyn.end()));
  if (k.norm) {
    constexpr bool kCast = std::is_same_v<P, bk::NormThenCast>;
    const auto [tdh, tdg] = tokenless::reference::blocks::rms_norm_backward<double>(as<double>(p.h), as<double>(p.g), dyt, {}, k.n, k.d, 1e-5,
                                                           kCast, round_d<T>());
    const auto [ndh, ndg] = tokenless::reference::blocks::rms_norm_backward<float>(as<float>(p.h), as<float>(p.g), dyn_t, {}, k.n, k.d, 1e-5f,
                                                          kCast, round_f<T>());
    {
      INFO("dh through the norm");
      check_accuracy(dh1, rounded<T>(std::vector<double>(ndh.begin(), ndh.end())), tdh, 4.0, u);
    }
    INFO("the norm weight's gradient");
    check_accuracy(dg1, ndg, tdg, 4.0, u);  // from dy in T: T's roundoff
  } else {
    INFO("dh");
    check_accuracy(dh1, dyn_t, dyt, 4.0, u);
  }
  // Accumulated onto zeros: the written values, bit for bit.
  bw.accumulate = true;
  dw.upload(std::vector<float>(dw1.size(), 0.0f));
  db.upload(std::vector<float>(db1.size(), 0.0f));
  dg.upload(std::vector<float>(dg1.size(), 0.0f));
  tb.run_ok(bw);
  CHECK(dw.download() == dw1);
  if (k.bias) CHECK(db.download() == db1);
  if (k.norm) CHECK(dg.download() == dg1);
  CHECK(to_floats(dh.download()) == dh1);
}

template <class T>
void sweep() {
  const int s = scale_down();
  ByteCase base;
  // Thread mode (TSan): bf16's full case alone (one kernel, one schedule).
  if (s > 1 && !std::is_same_v<T, __nv_bfloat16>) return;
  ByteCase full = base;  // every option
  full.bias = true;
  full.weights = true;
  full.o.label_smoothing = 0.1f;
  full.o.z_loss = 0.01f;
  full.chunk_rows = 40;  // the backward in three row chunks
  check_case<bk::NormThenCast, T>(full);
  if (s > 1) return;
  ByteCase plain = base;  // no norm, sum; d = 40 leaves a partial d chunk
  plain.norm = false;
  plain.d = 40;
  plain.o.reduction = hd::Reduction::sum;
  check_case<bk::NormThenCast, T>(plain);
  ByteCase none = base;  // per-token loss, fp32 scaling; a vocabulary of 256 bytes
  none.o.reduction = hd::Reduction::none;
  none.vocab = 256;
  none.n = 64;
  none.seed = 5;
  check_case<bk::ScaleInFp32, T>(none);
}

// Sampling: the reference's draws where rounding cannot flip them.
inline void check_sampling() {
  using T = __nv_bfloat16;
  using P = bk::NormThenCast;
  ByteCase k;
  k.n = 64;
  k.d = 64;
  const ByteProblem<P, T> p(k);
  const auto zt = p.template logits<double>();
  DeviceBuffer<T> h(p.h), g(p.g), w(p.w), b(std::vector<T>(1));
  DeviceBuffer<std::int32_t> next(static_cast<std::size_t>(k.n));
  auto a = head_args<P, T>(k, h, g, w, b);
  a.next = next.get();
  const float temps[] = {0.7f, 1.0f, 1.6f};
  const float tops[] = {1.0f, 0.9f, 0.3f};
  // Thread mode (TSan): one setting with a nucleus (the others take the same
  // path with other numbers; nine took 36 s).
  const int s = scale_down(), configs = s > 1 ? 1 : 9;
  int compared = 0;
  for (int cfg = 0; cfg < configs; ++cfg) {
    {
      const float t = s > 1 ? 1.0f : temps[cfg / 3], tp = s > 1 ? 0.9f : tops[cfg % 3];
      CAPTURE(t);
      CAPTURE(tp);
      a.sampling = {t, tp, 1234, 7};
      Testbed<hd::ByteHead<P, T>> tb;
      tb.run_ok(a);
      const auto ids = next.download();
      for (std::int64_t i = 0; i < k.n; ++i) {
        double margin = 0;
        const std::int32_t want = ref::sample<double>(zt.data() + i * k.vocab, k.vocab, a.sampling, i, &margin);
        if (margin > 1e-4) {
          CHECK(ids[i] == want);
          ++compared;
        }
      }
      tb.run_ok(a);
      CHECK(next.download() == ids);  // a pure function of (seed, offset, row)
      a.sampling.offset = 8;
      tb.run_ok(a);
      CHECK(next.download() != ids);  // another step, other draws
      // Per-row offsets (a batch of streams at their own positions): row i
      // draws as a lone call with offset[i] would.
      std::vector<std::int64_t> offsets(static_cast<std::size_t>(k.n));
      for (std::int64_t i = 0; i < k.n; ++i) offsets[i] = 3 + (i * 7) % 11;
      DeviceBuffer<std::int64_t> off(offsets);
      a.sample_offsets = off.get();
      tb.run_ok(a);
      const auto per_row = next.download();
      a.sample_offsets = nullptr;
      for (std::int64_t i = 0; i < k.n; ++i) {
        auto sp = a.sampling;
        sp.offset = static_cast<std::uint64_t>(offsets[i]);
        double margin = 0;
        const std::int32_t want = ref::sample<double>(zt.data() + i * k.vocab, k.vocab, sp, i, &margin);
        if (margin > 1e-4) CHECK(per_row[i] == want);
      }
    }
  }
  CHECK(compared > configs * k.n * 9 / 10);
}

// Frequencies: one row's logits on every row, each row its own draw.
inline void check_sampling_frequencies() {
  using T = __nv_bfloat16;
  using P = bk::NormThenCast;
  if (scale_down() > 1) {
    MESSAGE("the frequencies are the plain runs' (thread mode adds nothing to the sampling test's synchronisation)");
    return;
  }
  ByteCase k;
  k.n = 2048;
  k.d = 32;
  k.w_scale = 12.0f;  // a peaked distribution: a few ids carry the mass
  ByteProblem<P, T> p(k);
  for (std::int64_t i = 1; i < k.n; ++i) std::copy(p.h.begin(), p.h.begin() + k.d, p.h.begin() + i * k.d);
  k.norm = false;  // the rows as given
  p.y = p.h;
  const auto zt = p.template logits<double>();
  DeviceBuffer<T> h(p.h), g(p.g), w(p.w), b(std::vector<T>(1));
  DeviceBuffer<std::int32_t> next(static_cast<std::size_t>(k.n));
  auto a = head_args<P, T>(k, h, g, w, b);
  a.next = next.get();
  a.sampling = {1.0f, 1.0f, 99, 0};
  Testbed<hd::ByteHead<P, T>>().run_ok(a);
  const auto ids = next.download();
  std::vector<double> prob(static_cast<std::size_t>(k.vocab));
  double mx = *std::max_element(zt.begin(), zt.begin() + k.vocab), total = 0;
  for (int j = 0; j < k.vocab; ++j) total += prob[j] = std::exp(zt[j] - mx);
  std::vector<int> count(static_cast<std::size_t>(k.vocab), 0);
  for (const auto id : ids) {
    REQUIRE(id >= 0);
    REQUIRE(id < k.vocab);
    ++count[id];
  }
  for (int j = 0; j < k.vocab; ++j) {
    const double pj = prob[j] / total, want = pj * static_cast<double>(k.n);
    CAPTURE(j);
    CAPTURE(pj);
    CHECK(std::fabs(count[j] - want) <= 5.0 * std::sqrt(want * (1 - pj)) + 2.0);  // 5 sigma
  }
}

// BLT's entropy model into the patcher with no logits in memory: the head's
// entropies are the patcher's own entropy pass over the logits, and give the
// same patches.
inline void check_entropy_feeds_patcher() {
  using T = __nv_bfloat16;
  using P = bk::NormThenCast;
  namespace pt = tokenless::patcher;
  ByteCase k;
  k.n = 130;
  k.d = 64;
  const ByteProblem<P, T> p(k);
  const std::vector<std::int32_t> cu{0, 70, 130};
  DeviceBuffer<T> h(p.h), g(p.g), w(p.w), b(std::vector<T>(1));
  DeviceBuffer<float> ent(static_cast<std::size_t>(k.n));
  auto a = head_args<P, T>(k, h, g, w, b);
  a.entropy = ent.get();
  Testbed<hd::ByteHead<P, T>>().run_ok(a);
  const auto head_ent = ent.download();
  // The threshold in the widest gap near the median: no entropy close to it.
  std::vector<float> sorted = head_ent;
  std::sort(sorted.begin(), sorted.end());
  std::size_t best = sorted.size() / 2;
  for (std::size_t i = sorted.size() / 3; i < 2 * sorted.size() / 3; ++i) {
    if (sorted[i + 1] - sorted[i] > sorted[best + 1] - sorted[best]) best = i;
  }
  const float threshold = 0.5f * (sorted[best] + sorted[best + 1]);
  REQUIRE(sorted[best + 1] - sorted[best] > 1e-4f);
  struct Run {
    std::vector<float> entropies;
    std::vector<std::uint8_t> flags;
  };
  auto patch = [&](const float* logits, const float* entropies_in) {
    using Op = pt::Patcher<pt::EntropyGlobal, float>;
    DeviceBuffer<std::int32_t> d_cu(cu), ids(static_cast<std::size_t>(k.n)), off(3), starts(static_cast<std::size_t>(k.n)),
        len(static_cast<std::size_t>(k.n));
    DeviceBuffer<std::uint8_t> flags(static_cast<std::size_t>(k.n));
    DeviceBuffer<float> out(static_cast<std::size_t>(k.n));
    Op::Arguments pa;
    pa.rule.threshold = threshold;
    pa.logits = logits;
    pa.vocab = k.vocab;
    pa.entropies_in = entropies_in;
    pa.batch = {d_cu.get(), 2, k.n};
    pa.entropies = out.get();
    pa.patches = {flags.get(), ids.get(), off.get(), starts.get(), len.get(), k.n};
    Testbed<Op>().run_ok(pa);
    return Run{out.download(), flags.download()};
  };
  const auto zn = p.template logits<float>();
  DeviceBuffer<float> logits(zn);
  const Run from_logits = patch(logits.get(), nullptr);
  const Run from_head = patch(nullptr, ent.get());
  {
    INFO("the head's entropy against the patcher's pass over the fp32 logits");
    std::vector<double> et(static_cast<std::size_t>(k.n));
    for (std::int64_t i = 0; i < k.n; ++i) et[i] = ref::entropy(zn.data() + i * k.vocab, k.vocab);
    check_accuracy(head_ent, from_logits.entropies, et, 4.0, tokenless::dtype_traits<float>::unit_roundoff);
  }
  CHECK(from_head.flags == from_logits.flags);
}

inline void check_bad_input() {
  using T = __nv_bfloat16;
  using P = bk::NormThenCast;
  using Op = hd::ByteHead<P, T>;
  using Bwd = hd::ByteHeadBackward<P, T>;
  ByteCase k;
  k.n = 20;
  k.d = 32;
  const ByteProblem<P, T> p(k);
  std::vector<std::int32_t> bad_labels = p.labels;
  bad_labels[4] = 260;
  DeviceBuffer<T> h(p.h), g(p.g), w(p.w), b(std::vector<T>(1)), dz(static_cast<std::size_t>(k.n * k.vocab)),
      dh(static_cast<std::size_t>(k.n * k.d));
  DeviceBuffer<std::int32_t> labels(p.labels), bad(bad_labels), next(static_cast<std::size_t>(k.n));
  DeviceBuffer<float> ent(static_cast<std::size_t>(k.n)), loss(1), gl(std::vector<float>{1.0f}),
      dw(static_cast<std::size_t>(k.vocab * k.d));
  auto a = head_args<P, T>(k, h, g, w, b);
  a.entropy = ent.get();
  a.next = next.get();
  a.labels = labels.get();
  a.loss = loss.get();
  a.grad_loss = gl.get();
  a.grad_logits = dz.get();
  Testbed<Op> fwd;
  fwd.watch(ent).watch(next).watch(loss).watch(dz);
  const std::int32_t* bad_ptr = bad.get();
  const T* misaligned = h.get() + 1;
  fwd.reject(a, {
      {"no tokens", [](Op::Arguments& x) { x.n = 0; }, StatusCode::empty, "n"},
      {"no vocabulary", [](Op::Arguments& x) { x.vocab = 0; }, StatusCode::empty, "vocab"},
      {"a vocabulary over the kernel's limit", [](Op::Arguments& x) { x.vocab = 300; }, StatusCode::unsupported,
       "at most 288"},
      {"d of 0", [](Op::Arguments& x) { x.d = 0; }, StatusCode::empty, "d"},
      {"d not a multiple of 8", [](Op::Arguments& x) { x.d = 30; }, StatusCode::invalid_argument, "multiple of 8"},
      {"misaligned rows", [misaligned](Op::Arguments& x) { x.h = misaligned; }, StatusCode::misaligned, "h"},
      {"a NaN eps", [](Op::Arguments& x) { x.eps = NAN; }, StatusCode::invalid_argument, "eps"},
      {"nothing to compute",
       [](Op::Arguments& x) {
         x.entropy = nullptr;
         x.next = nullptr;
         x.labels = nullptr;
         x.loss = nullptr;
         x.grad_loss = nullptr;
         x.grad_logits = nullptr;
       },
       StatusCode::null_pointer, "at least one output"},
      {"dz without dL/dloss", [](Op::Arguments& x) { x.grad_loss = nullptr; }, StatusCode::null_pointer, "grad_loss"},
      {"a loss without labels", [](Op::Arguments& x) { x.labels = nullptr; }, StatusCode::null_pointer, "labels"},
      {"top-p of 0", [](Op::Arguments& x) { x.sampling.top_p = 0.0f; }, StatusCode::invalid_argument, "top_p"},
      {"a NaN temperature", [](Op::Arguments& x) { x.sampling.temperature = NAN; }, StatusCode::invalid_argument,
       "temperature"},
      {"smoothing above 1", [](Op::Arguments& x) { x.options.label_smoothing = 2.0f; }, StatusCode::invalid_argument,
       "label_smoothing"},
      {"a label outside the vocabulary", [bad_ptr](Op::Arguments& x) { x.labels = bad_ptr; },
       StatusCode::invalid_argument, "labels[4] = 260"},
  });
  tokenless::blas::LtHandle handle;
  REQUIRE_OK(tokenless::blas::LtHandle::create(handle));
  Bwd::Arguments bw;
  bw.handle = &handle;
  bw.h = h.get();
  bw.norm_weight = g.get();
  bw.weight = w.get();
  bw.n = k.n;
  bw.vocab = k.vocab;
  bw.d = k.d;
  bw.grad_logits = dz.get();
  bw.grad_h = dh.get();
  bw.grad_weight = dw.get();
  Testbed<Bwd> bwd;
  bwd.watch(dh).watch(dw);
  float* dw_ptr = dw.get();
  bwd.reject(bw, {
      {"no handle", [](Bwd::Arguments& x) { x.handle = nullptr; }, StatusCode::null_pointer, "handle"},
      {"no dz", [](Bwd::Arguments& x) { x.grad_logits = nullptr; }, StatusCode::null_pointer, "grad_logits"},
      {"no gradient asked for",
       [](Bwd::Arguments& x) {
         x.grad_h = nullptr;
         x.grad_weight = nullptr;
       },
       StatusCode::null_pointer, "at least one gradient"},
      {"a norm gradient without a norm",
       [dw_ptr](Bwd::Arguments& x) {
         x.norm_weight = nullptr;
         x.grad_norm_weight = dw_ptr;
       },
       StatusCode::invalid_argument, "grad_norm_weight"},
      {"a vocabulary over the kernel's limit", [](Bwd::Arguments& x) { x.vocab = 1000; }, StatusCode::unsupported,
       "vocab"},
  });
}

}  // namespace tlt::byte_head_tests

TEST_CASE_TEMPLATE("byte head: norm, logits, entropy, loss, dz and argmax match the reference; the backward too", T,
                   float, __half, __nv_bfloat16) {
  tlt::byte_head_tests::sweep<T>();
}

TEST_CASE("byte head: sampling draws the reference's ids, reproducibly, within the nucleus") {
  tlt::byte_head_tests::check_sampling();
}

TEST_CASE("byte head: sampled ids follow the probabilities") { tlt::byte_head_tests::check_sampling_frequencies(); }

TEST_CASE("byte head: its entropy is the patcher's entropy pass, and patches alike") {
  tlt::byte_head_tests::check_entropy_feeds_patcher();
}

TEST_CASE("byte head: bad input is refused and nothing is written") { tlt::byte_head_tests::check_bad_input(); }
