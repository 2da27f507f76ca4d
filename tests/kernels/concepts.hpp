#pragma once
// CoCoMix's sparse concepts: the SAE's normalisation, top k (ties, NaN, the
// ReLU), sparse decode and compression (with the de-normalisation),
// their backwards (the dictionary's gradient by sorted runs: duplicates
// within and across rows, bit-identical across runs), the concept loss,
// mixing, column sums, and bad input. Against the double-precision
// reference at the naive-fp32 tolerance; shared by the emu and gpu tiers.
#include "../support/testbed.hpp"

#include <tokenless/bottleneck/concepts.cuh>
#include <tokenless/reference/bottleneck.hpp>

#include <cmath>
#include <cstring>
#include <random>

namespace tlt::concepts_tests {

namespace bn = tokenless::bottleneck;
namespace ref = tokenless::reference::bottleneck;
using tokenless::StatusCode;

inline std::vector<float> head(const std::vector<float>& v, std::size_t n) {
  return {v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n)};
}
template <class T>
void check_close(const char* what, const std::vector<float>& got, const std::vector<float>& naive,
                 const std::vector<double>& truth, double factor = 4.0) {
  INFO(what);
  check_accuracy(head(got, truth.size()), rounded<T>(std::vector<double>(naive.begin(), naive.end())), truth, factor,
                 tokenless::dtype_traits<T>::unit_roundoff);
}
inline std::vector<double> dbl(const std::vector<float>& v) { return {v.begin(), v.end()}; }

template <class T>
void check_normalize(std::int64_t rows, int d, std::uint64_t seed) {
  CAPTURE(d);
  const auto xh = random_values<T>(static_cast<std::size_t>(rows * d), seed, -2.0f, 3.0f);
  const auto pb = random_values<float>(static_cast<std::size_t>(d), seed + 1);
  const auto gh = random_values<T>(static_cast<std::size_t>(rows * d), seed + 2);
  const auto gm = random_values<float>(static_cast<std::size_t>(rows), seed + 3);
  const auto gsd = random_values<float>(static_cast<std::size_t>(rows), seed + 4);
  DeviceBuffer<T> x(xh), out(rows * d), g(gh), dx(rows * d);
  DeviceBuffer<float> pre(pb), mean(rows), sd(rows), gmean(gm), gstd(gsd);
  REQUIRE_OK(bn::SaeNormalize<T>::run(
      {.x = x.get(), .rows = rows, .d = d, .pre_bias = pre.get(), .out = out.get(), .mean = mean.get(), .std = sd.get()}));
  const auto xf = to_floats(xh);
  const auto truth = ref::sae_normalize<double>(widen(xh), rows, d, dbl(pb));
  const auto naive = ref::sae_normalize<float>(xf, rows, d, pb);
  check_close<T>("normalized", to_floats(out.download()), naive.out, truth.out);
  check_close<float>("mean", mean.download(), naive.mean, truth.mean);
  check_close<float>("std", sd.download(), naive.std, truth.std);
  for (bool with_stats : {false, true}) {
    CAPTURE(with_stats);
    REQUIRE_OK(bn::SaeNormalizeBackward<T>::run({.x = x.get(), .grad_out = g.get(), .mean = mean.get(), .std = sd.get(),
                                                 .grad_mean = with_stats ? gmean.get() : nullptr,
                                                 .grad_std = with_stats ? gstd.get() : nullptr, .rows = rows, .d = d,
                                                 .grad_x = dx.get()}));
    const auto t = ref::sae_normalize_backward<double>(widen(xh), widen(gh), rows, d, with_stats ? dbl(gm) : std::vector<double>{},
                                                       with_stats ? dbl(gsd) : std::vector<double>{});
    const auto n = ref::sae_normalize_backward<float>(xf, to_floats(gh), rows, d, with_stats ? gm : std::vector<float>{},
                                                      with_stats ? gsd : std::vector<float>{});
    check_close<T>("normalize backward", to_floats(dx.download()), n, t, 8.0);
  }
}

TEST_CASE("concepts: the SAE's normalisation, forward and backward (with the de-normalisation's gradients)") {
  check_normalize<float>(7, 96, 1);
  check_normalize<__nv_bfloat16>(5, 768, 2);
}

TEST_CASE("concepts: the normalisation's reference backward is its derivative") {
  const int d = 6;
  const std::vector<double> x = {0.3, -1.2, 2.0, 0.7, -0.4, 1.1};
  const std::vector<double> w = {0.5, -0.25, 1.0, 0.125, -0.75, 0.3}, wm = {0.4}, ws = {-0.6};
  // L = <w, x̂> + wm · mean + ws · std.
  const auto loss = [&](const std::vector<double>& v) {
    const auto n = ref::sae_normalize<double>(v, 1, d, {});
    double l = wm[0] * n.mean[0] + ws[0] * n.std[0];
    for (int c = 0; c < d; ++c) l += w[c] * n.out[c];
    return l;
  };
  const auto g = ref::sae_normalize_backward<double>(x, w, 1, d, wm, ws);
  for (int c = 0; c < d; ++c) {
    auto hi = x, lo = x;
    hi[c] += 1e-6;
    lo[c] -= 1e-6;
    CHECK(g[c] == doctest::Approx((loss(hi) - loss(lo)) / 2e-6).epsilon(1e-6));
  }
}

// Top k against the reference: every index and value exactly.
template <class A, class T>
void check_topk(const std::vector<float>& xf, std::int64_t rows, std::int64_t cols, int k) {
  CAPTURE(cols);
  CAPTURE(k);
  std::vector<T> xh(xf.size());
  for (std::size_t i = 0; i < xf.size(); ++i) xh[i] = tokenless::from_float<T>(xf[i]);
  DeviceBuffer<T> x(xh);
  DeviceBuffer<std::int32_t> idx(rows * k);
  DeviceBuffer<float> val(rows * k);
  REQUIRE_OK((bn::TopK<A, T>::run(
      {.x = x.get(), .rows = rows, .dictionary = cols, .k = k, .idx = idx.get(), .val = val.get()})));
  const auto want = ref::topk(to_floats(xh), rows, cols, k, std::is_same_v<A, bn::TopKRelu>);
  CHECK(idx.download() == want.idx);
  const auto got = val.download();
  for (std::size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CHECK((std::memcmp(&got[i], &want.val[i], 4) == 0 || (std::isnan(got[i]) && std::isnan(want.val[i]))));
  }
}

TEST_CASE("concepts: top k of a row; ties by lower index, NaN first, the ReLU on the kept values only") {
  const std::int64_t rows = 6, cols = 1000 / scale_down();
  auto x = random_values<float>(static_cast<std::size_t>(rows * cols), 11);
  for (std::int64_t i = 0; i < rows * cols; ++i) {
    if (i / cols == 1) x[i] = std::round(x[i] * 4.0f) / 4.0f;  // row 1: nine values, ties everywhere
    if (i / cols == 2) x[i] = x[i] < 0 ? -x[i] - 1.0f : -x[i];  // row 2: every value <= 0 (the ReLU gives zeros)
  }
  x[3 * cols + 17] = NAN;  // row 3: NaN ranks first
  x[3 * cols + 5] = INFINITY;
  x[4 * cols + 9] = -0.0f;  // row 4: -0 equals +0
  x[4 * cols + 3] = 0.0f;
  for (std::int64_t i = 5 * cols; i < 6 * cols; ++i) x[i] = 0.5f;  // row 5: all tied
  check_topk<bn::TopKRaw, float>(x, rows, cols, 32);
  check_topk<bn::TopKRelu, float>(x, rows, cols, 32);
  check_topk<bn::TopKRaw, __nv_bfloat16>(x, rows, cols, 128);
  check_topk<bn::TopKRelu, __half>(x, rows, cols, 1);
  check_topk<bn::TopKRaw, float>(std::vector<float>(x.begin(), x.begin() + 2 * 64), 2, 64, 64);  // k = the whole row
}

// Values k/8 for small integers k: products and sums of them are exact in
// fp32, so the fused encode must give TopK's codes exactly, ties included.
template <class T>
std::vector<T> eighths(std::size_t n, std::uint64_t seed, int span = 4) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> v(-span, span);
  std::vector<T> out(n);
  for (auto& x : out) x = tokenless::from_float<T>(static_cast<float>(v(rng)) / 8.0f);
  return out;
}
// The pre-activations x̂ W^T + b, in double (exact for eighths).
template <class T>
std::vector<float> pre_acts(const std::vector<T>& x, const std::vector<T>& w, const std::vector<float>& b,
                            std::int64_t rows, std::int64_t L, int d) {
  std::vector<float> pre(static_cast<std::size_t>(rows * L));
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t i = 0; i < L; ++i) {
      double a = b.empty() ? 0.0 : b[i];
      for (int c = 0; c < d; ++c) a += static_cast<double>(tokenless::to_float(x[r * d + c])) * tokenless::to_float(w[i * d + c]);
      pre[r * L + i] = static_cast<float>(a);
    }
  }
  return pre;
}

template <class T>
void check_encode(std::int64_t rows, std::int64_t L, int d, int k, bool exact, std::uint64_t seed) {
  CAPTURE(rows);
  CAPTURE(L);
  CAPTURE(k);
  CAPTURE(exact);
  const auto xh = exact ? eighths<T>(static_cast<std::size_t>(rows * d), seed) : random_values<T>(rows * d, seed);
  const auto wh = exact ? eighths<T>(static_cast<std::size_t>(L * d), seed + 1) : random_values<T>(L * d, seed + 1);
  std::vector<float> bh(static_cast<std::size_t>(L));
  for (std::int64_t i = 0; i < L; ++i) bh[i] = static_cast<float>(i % 5) / 8.0f - 0.25f;
  DeviceBuffer<T> x(xh), w(wh);
  DeviceBuffer<float> b(bh), val(rows * k);
  DeviceBuffer<std::int32_t> idx(rows * k);
  REQUIRE_OK((bn::SaeEncode<bn::TopKRelu, T>::run({.x = x.get(), .rows = rows, .d = d, .w_enc = w.get(),
                                                   .dictionary = L, .latent_bias = b.get(), .k = k, .idx = idx.get(),
                                                   .val = val.get()})));
  const auto pre = pre_acts(xh, wh, bh, rows, L, d);
  const auto want = ref::topk(pre, rows, L, k, true);
  const auto gi = idx.download();
  const auto gv = val.download();
  if (exact) {
    CHECK(gi == want.idx);
    CHECK(gv == want.val);
    return;
  }
  // Rounded values: a valid top k within the fp32 products' roundoff.
  const double tol = 1e-5 * d;
  for (std::int64_t r = 0; r < rows; ++r) {
    std::vector<float> sorted(pre.begin() + r * L, pre.begin() + (r + 1) * L);
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    for (int j = 0; j < k; ++j) {
      const auto e = static_cast<std::size_t>(r * k + j);
      CHECK(pre[r * L + gi[e]] >= sorted[k - 1] - tol);  // no unselected value is clearly larger
      CHECK(gv[e] == doctest::Approx(std::max(pre[r * L + gi[e]], 0.0f)).epsilon(1e-5).scale(tol));
      if (j > 0) CHECK(pre[r * L + gi[e]] <= pre[r * L + gi[e - 1]] + tol);
    }
  }
}

TEST_CASE("concepts: the SAE encode fused with its GEMM gives TopK's codes (ties, partial tiles, k up to 128)") {
  check_encode<__nv_bfloat16>(70, 300, 128, 32, true, 81);  // two row blocks, a partial one; a partial latent tile
  check_encode<__half>(17, 200, 64, 128, true, 82);          // k = 128
  check_encode<__nv_bfloat16>(9, 150, 192, 8, false, 83);    // random values: a top k within roundoff
}

TEST_CASE("concepts: attribution labels over the dictionary, the inactive latents counting as zeros") {
  const std::int64_t rows = 6, L = 40;
  const int d = 16, k = 5, K = 4;
  // Codes: distinct indices a row; row 2 has a single positive attribution,
  // so zeros (active with value 0, or inactive) fill its labels.
  std::mt19937_64 rng(91);
  ref::Codes codes;
  for (std::int64_t r = 0; r < rows; ++r) {
    std::vector<std::int32_t> pool(L);
    for (int i = 0; i < L; ++i) pool[i] = (i * 7 + static_cast<int>(r) * 3) % L;
    for (int j = 0; j < k; ++j) {
      codes.idx.push_back(pool[j + 1]);
      codes.val.push_back(r == 2 ? (j == 0 ? 0.5f : 0.0f) : static_cast<float>(rng() % 5) / 4.0f);
    }
  }
  const auto gh = eighths<float>(static_cast<std::size_t>(rows * d), 92);
  const auto wh = eighths<float>(static_cast<std::size_t>(L * d), 93);
  DeviceBuffer<std::int32_t> idx(codes.idx), labels(rows * K);
  DeviceBuffer<float> val(codes.val), g(gh), w(wh), scores(rows * K);
  Testbed<bn::AttributionLabels<float>>().run_ok({.idx = idx.get(), .val = val.get(), .rows = rows, .k = k,
                                                  .grad = g.get(), .dict = w.get(), .dictionary = L, .d = d,
                                                  .num_labels = K, .labels = labels.get(), .scores = scores.get()});
  // The dense attribution row, then the reference top k.
  std::vector<float> attr(static_cast<std::size_t>(rows * L), 0.0f);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (int j = 0; j < k; ++j) {
      const std::int32_t i = codes.idx[r * k + j];
      double dot = 0;
      for (int c = 0; c < d; ++c) dot += static_cast<double>(gh[r * d + c]) * wh[i * d + c];
      attr[r * L + i] = static_cast<float>(dot * codes.val[r * k + j]);
    }
  }
  const auto want = ref::topk(attr, rows, L, K, false);
  CHECK(labels.download() == want.idx);
  CHECK(scores.download() == want.val);
}

TEST_CASE("concepts: top k's backward adds into a gradient, or writes its rows") {
  const std::int64_t rows = 3, cols = 300;
  const int k = 8;
  const auto xh = random_values<float>(static_cast<std::size_t>(rows * cols), 21);
  const auto gv = random_values<float>(static_cast<std::size_t>(rows * k), 22);
  DeviceBuffer<float> x(xh), val(rows * k), grad_val(gv), gx(std::vector<float>(rows * cols, 0.5f));
  DeviceBuffer<std::int32_t> idx(rows * k);
  REQUIRE_OK((bn::TopK<bn::TopKRelu, float>::run(
      {.x = x.get(), .rows = rows, .dictionary = cols, .k = k, .idx = idx.get(), .val = val.get()})));
  const auto codes = ref::topk(xh, rows, cols, k, true);
  for (bool accumulate : {true, false}) {
    CAPTURE(accumulate);
    Testbed<bn::TopKBackward<bn::TopKRelu, float>>().run_ok({.idx = idx.get(), .val = val.get(), .grad_val = grad_val.get(),
                                                            .rows = rows, .dictionary = cols, .k = k,
                                                            .accumulate = accumulate, .grad_x = gx.get()});
    const auto got = gx.download();
    std::vector<float> want(static_cast<std::size_t>(rows * cols), accumulate ? 0.5f : 0.0f);
    for (std::int64_t r = 0; r < rows; ++r) {
      for (int j = 0; j < k; ++j) {
        const auto e = static_cast<std::size_t>(r * k + j);
        if (codes.val[e] > 0) want[r * cols + codes.idx[e]] += gv[e];  // the ReLU's gradient
      }
    }
    CHECK(got == want);
  }
}

// Codes with duplicates: within a row (the same latent twice) and across rows.
inline ref::Codes random_codes(std::int64_t rows, int k, std::int64_t dictionary, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int32_t> pick(0, static_cast<std::int32_t>(dictionary - 1));
  std::uniform_real_distribution<float> v(-1.0f, 2.0f);
  ref::Codes c;
  for (std::int64_t e = 0; e < rows * k; ++e) {
    c.idx.push_back(e % 5 == 3 ? c.idx.back() : pick(rng));
    c.val.push_back(v(rng));
  }
  return c;
}

template <class T>
void check_decode(std::int64_t rows, int k, std::int64_t dictionary, int d, bool denorm, std::uint64_t seed) {
  CAPTURE(d);
  CAPTURE(denorm);
  const auto codes = random_codes(rows, k, dictionary, seed);
  const auto wh = random_values<T>(static_cast<std::size_t>(dictionary * d), seed + 1);
  const auto bias = random_values<float>(static_cast<std::size_t>(d), seed + 2);
  const auto pre = random_values<float>(static_cast<std::size_t>(d), seed + 3);
  const auto mean = random_values<float>(static_cast<std::size_t>(rows), seed + 4);
  const auto sd = random_values<float>(static_cast<std::size_t>(rows), seed + 5, 0.5f, 2.0f);
  const auto gh = random_values<T>(static_cast<std::size_t>(rows * d), seed + 6);
  DeviceBuffer<std::int32_t> idx(codes.idx);
  DeviceBuffer<float> val(codes.val), b(bias), pb(pre), mu(mean), sg(sd), gval(rows * k), gmean(rows), gstd(rows),
      gdict(dictionary * d), gbias(d);
  DeviceBuffer<T> dict(wh), out(rows * d), g(gh);
  Testbed<bn::SparseDecode<T>>().run_ok({.idx = idx.get(), .val = val.get(), .rows = rows, .k = k, .dict = dict.get(),
                                         .dictionary = dictionary, .d = d, .bias = b.get(), .pre_bias = pb.get(),
                                         .mean = denorm ? mu.get() : nullptr, .std = denorm ? sg.get() : nullptr,
                                         .out = out.get()});
  const std::vector<double> no;
  const auto t = ref::sparse_decode<double>(codes, rows, k, widen(wh), d, dbl(bias), dbl(pre), denorm ? dbl(mean) : no,
                                            denorm ? dbl(sd) : no);
  const std::vector<float> nof;
  const auto n = ref::sparse_decode<float>(codes, rows, k, to_floats(wh), d, bias, pre, denorm ? mean : nof,
                                           denorm ? sd : nof);
  check_close<T>("decode", to_floats(out.download()), n, t);
  using Bwd = bn::SparseDecodeBackward<T>;
  const typename Bwd::Arguments a{.idx = idx.get(), .val = val.get(), .rows = rows, .k = k, .dict = dict.get(),
                                  .dictionary = dictionary, .d = d, .bias = b.get(), .pre_bias = pb.get(),
                                  .std = denorm ? sg.get() : nullptr, .grad_out = g.get(), .grad_val = gval.get(),
                                  .grad_mean = gmean.get(), .grad_std = gstd.get(), .grad_dict = gdict.get(),
                                  .grad_bias = gbias.get()};
  Testbed<Bwd>().run_ok(a);
  const auto tg = ref::sparse_decode_backward<double>(codes, rows, k, widen(wh), dictionary, d, dbl(bias), dbl(pre),
                                                      denorm ? dbl(sd) : no, widen(gh));
  const auto ng = ref::sparse_decode_backward<float>(codes, rows, k, to_floats(wh), dictionary, d, bias, pre,
                                                     denorm ? sd : nof, to_floats(gh));
  check_close<float>("grad_val", gval.download(), ng.val, tg.val);
  check_close<float>("grad_dict", gdict.download(), ng.dict, tg.dict);
  check_close<float>("grad_bias", gbias.download(), ng.bias, tg.bias);
  if (denorm) {
    check_close<float>("grad_mean", gmean.download(), ng.mean, tg.mean);
    check_close<float>("grad_std", gstd.download(), ng.std, tg.std);
  }
  // Bit-identical on a second run: no atomics.
  const auto first = gdict.download();
  Testbed<Bwd>().run_ok(a);
  CHECK(gdict.download() == first);
}

TEST_CASE("concepts: sparse decode and its backward; duplicates within and across rows") {
  check_decode<float>(9, 8, 50, 64, false, 31);           // the SAE's decode, vector path
  check_decode<__nv_bfloat16>(6, 32, 300, 40, true, 32);  // CoCoMix's compression with the de-normalisation
  check_decode<__half>(4, 5, 20, 7, true, 33);            // scalar path
}

TEST_CASE("concepts: compression by gather equals CoCoMix's dense GEMM over the masked logits") {
  // CoCoMix: compress_layer(mask * z) with a [d, L] weight; here: the top k
  // of z (raw), gathered from the weight's transpose [L, d].
  const std::int64_t rows = 4, L = 200;
  const int d = 16, k = 12;
  const auto z = random_values<float>(static_cast<std::size_t>(rows * L), 41);
  const auto wt = random_values<float>(static_cast<std::size_t>(L * d), 42);  // [L, d]
  DeviceBuffer<float> zd(z), val(rows * k), dict(wt), out(rows * d);
  DeviceBuffer<std::int32_t> idx(rows * k);
  REQUIRE_OK((bn::TopK<bn::TopKRaw, float>::run(
      {.x = zd.get(), .rows = rows, .dictionary = L, .k = k, .idx = idx.get(), .val = val.get()})));
  Testbed<bn::SparseDecode<float>>().run_ok({.idx = idx.get(), .val = val.get(), .rows = rows, .k = k,
                                             .dict = dict.get(), .dictionary = L, .d = d, .out = out.get()});
  const auto got = out.download();
  for (std::int64_t r = 0; r < rows; ++r) {
    std::vector<float> row(z.begin() + r * L, z.begin() + (r + 1) * L), sorted = row;
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    for (int c = 0; c < d; ++c) {
      double dense = 0;  // W_c (mask ⊙ z), over the whole dictionary
      for (std::int64_t i = 0; i < L; ++i) dense += (row[i] >= sorted[k - 1] ? row[i] : 0.0) * wt[i * d + c];
      CHECK(got[r * d + c] == doctest::Approx(dense).epsilon(1e-5));
    }
  }
}

template <class T>
void check_loss(std::int64_t rows, std::int64_t cols, int labels, std::uint64_t seed) {
  const auto zh = random_values<T>(static_cast<std::size_t>(rows * cols), seed, -4.0f, 4.0f);
  std::mt19937_64 rng(seed + 1);
  std::vector<std::int32_t> lab(static_cast<std::size_t>(rows * labels));
  for (auto& l : lab) l = static_cast<std::int32_t>(rng() % static_cast<std::uint64_t>(cols));
  lab[1] = lab[0];  // a label twice
  DeviceBuffer<T> z(zh), dz(rows * cols);
  DeviceBuffer<std::int32_t> ld(lab);
  DeviceBuffer<float> loss(1);
  Testbed<bn::ConceptLoss<T>>().run_ok({.logits = z.get(), .rows = rows, .dictionary = cols, .labels = ld.get(),
                                        .num_labels = labels, .weight = 0.1f, .loss = loss.get(),
                                        .grad_logits = dz.get()});
  const auto [tl, tg] = ref::concept_loss<double>(widen(zh), rows, cols, lab, labels, 0.1);
  const auto [nl, ng] = ref::concept_loss<float>(to_floats(zh), rows, cols, lab, labels, 0.1f);
  check_close<float>("loss", loss.download(), {nl}, {tl});
  check_close<T>("grad", to_floats(dz.download()), ng, tg);
}

TEST_CASE("concepts: the concept loss and its gradient in one pass") {
  check_loss<float>(5, 3000, 4, 51);
  check_loss<__nv_bfloat16>(3, 700, 4, 52);
}

TEST_CASE("concepts: mixing by interleave and by add, forward and backward") {
  const std::int64_t rows = 5;
  const int d = 24;
  const auto hh = random_values<__nv_bfloat16>(static_cast<std::size_t>(rows * d), 61);
  const auto ch = random_values<__nv_bfloat16>(static_cast<std::size_t>(rows * d), 62);
  const auto gh = random_values<__nv_bfloat16>(static_cast<std::size_t>(2 * rows * d), 63);
  DeviceBuffer<__nv_bfloat16> h(hh), c(ch), out(2 * rows * d), g(gh), dh(rows * d), dc(rows * d);
  REQUIRE_OK((bn::Mix<bn::MixInterleave, __nv_bfloat16>::run({.h = h.get(), .c = c.get(), .rows = rows, .d = d,
                                                              .out = out.get()})));
  const auto o = out.download();
  for (std::int64_t t = 0; t < rows; ++t) {
    for (int j = 0; j < d; ++j) {
      CHECK(tokenless::to_float(o[(2 * t) * d + j]) == tokenless::to_float(hh[t * d + j]));
      CHECK(tokenless::to_float(o[(2 * t + 1) * d + j]) == tokenless::to_float(ch[t * d + j]));
    }
  }
  // The gradient of slot 2t goes to h_t, of slot 2t+1 to c_t.
  REQUIRE_OK((bn::MixBackward<bn::MixInterleave, __nv_bfloat16>::run(
      {.grad_out = g.get(), .rows = rows, .d = d, .grad_h = dh.get(), .grad_c = dc.get()})));
  const auto gdh = dh.download(), gdc = dc.download();
  for (std::int64_t t = 0; t < rows; ++t) {
    for (int j = 0; j < d; ++j) {
      CHECK(tokenless::to_float(gdh[t * d + j]) == tokenless::to_float(gh[(2 * t) * d + j]));
      CHECK(tokenless::to_float(gdc[t * d + j]) == tokenless::to_float(gh[(2 * t + 1) * d + j]));
    }
  }
  REQUIRE_OK((bn::Mix<bn::MixAdd, __nv_bfloat16>::run({.h = h.get(), .c = c.get(), .rows = rows, .d = d,
                                                       .out = out.get()})));
  const auto a = out.download();
  for (std::int64_t i = 0; i < rows * d; ++i) {
    CHECK(tokenless::to_float(a[i]) ==
          tokenless::round_trip<__nv_bfloat16>(tokenless::to_float(hh[i]) + tokenless::to_float(ch[i])));
  }
  REQUIRE_OK((bn::MixBackward<bn::MixAdd, __nv_bfloat16>::run(
      {.grad_out = g.get(), .rows = rows, .d = d, .grad_h = dh.get(), .grad_c = dc.get()})));
  const auto ah = dh.download(), ac = dc.download();
  for (std::int64_t i = 0; i < rows * d; ++i) {
    CHECK(tokenless::to_float(ah[i]) == tokenless::to_float(gh[i]));
    CHECK(tokenless::to_float(ac[i]) == tokenless::to_float(gh[i]));
  }
}

TEST_CASE("concepts: bad input gets a clear Status and writes nothing") {
  const std::int64_t rows = 2, L = 10;
  const int d = 8, k = 3;
  DeviceBuffer<std::int32_t> idx(std::vector<std::int32_t>{0, 4, 9, 1, 10, 2});  // 10: outside
  DeviceBuffer<float> val(std::vector<float>(6, 1.0f)), x(rows * L);
  DeviceBuffer<float> dict(std::vector<float>(L * d, 1.0f)), out(rows * d);
  using Dec = bn::SparseDecode<float>;
  const Dec::Arguments good{.idx = idx.get(), .val = val.get(), .rows = rows, .k = k, .dict = dict.get(),
                            .dictionary = L + 1, .d = d, .out = out.get()};
  using Bad = Testbed<Dec>::Bad;
  Testbed<Dec> bed;
  bed.watch(out);
  bed.reject(good, {
      Bad{"k 0", [](auto& a) { a.k = 0; }, StatusCode::invalid_argument, "'k'"},
      Bad{"k past the dictionary", [](auto& a) { a.k = 12; }, StatusCode::invalid_argument, "'k'"},
      Bad{"a dictionary past 32-bit indices", [](auto& a) { a.dictionary = std::int64_t{1} << 31; },
          StatusCode::overflow, "dictionary"},
      Bad{"mean without std", [&](auto& a) { a.mean = val.get(); }, StatusCode::invalid_argument, "mean, std"},
      Bad{"null dict", [](auto& a) { a.dict = nullptr; }, StatusCode::null_pointer, "'dict'"},
      Bad{"an index outside (device)", [](auto& a) { a.dictionary = L; }, StatusCode::invalid_argument,
          "entry 4 outside"},
  });
  using Top = bn::TopK<bn::TopKRelu, float>;
  DeviceBuffer<std::int32_t> ti(rows * 129);
  CHECK(Top::can_implement({.x = x.get(), .rows = rows, .dictionary = L, .k = 0, .idx = ti.get(), .val = val.get()})
            .code() == StatusCode::invalid_argument);
  CHECK(Top::can_implement({.x = x.get(), .rows = rows, .dictionary = 1000, .k = 129, .idx = ti.get(), .val = val.get()})
            .code() == StatusCode::invalid_argument);
  // Labels outside the dictionary: refused on the device, nothing written.
  using Loss = bn::ConceptLoss<float>;
  DeviceBuffer<float> loss(1), dz(rows * L);
  DeviceBuffer<std::int32_t> labels(std::vector<std::int32_t>{1, 2, 3, 10});
  Testbed<Loss> lb;
  lb.watch(loss).watch(dz);
  using BadLoss = Testbed<Loss>::Bad;
  lb.reject({.logits = x.get(), .rows = rows, .dictionary = L, .labels = idx.get(), .num_labels = 2,
             .loss = loss.get(), .grad_logits = dz.get()},
            {
                BadLoss{"a label outside (device)", [&](auto& a) { a.labels = labels.get(); },
                        StatusCode::invalid_argument, "entry 3 outside"},
                BadLoss{"no labels", [](auto& a) { a.num_labels = 0; }, StatusCode::empty, "num_labels"},
                BadLoss{"NaN weight", [](auto& a) { a.weight = NAN; }, StatusCode::invalid_argument, "weight"},
            });
}

TEST_CASE("concepts: column sums in a fixed order, scaled by row, accumulated when asked") {
  const std::int64_t rows = 37;
  const int d = 70;
  const auto xh = random_values<float>(static_cast<std::size_t>(rows * d), 71);
  const auto sc = random_values<float>(static_cast<std::size_t>(rows), 72);
  DeviceBuffer<float> x(xh), s(sc), out(std::vector<float>(d, 1.0f));
  REQUIRE_OK(bn::ColumnSum<float>::run(
      {.x = x.get(), .rows = rows, .d = d, .row_scale = s.get(), .accumulate = true, .out = out.get()}));
  const auto got = out.download();
  for (int c = 0; c < d; ++c) {
    double want = 1.0;
    for (std::int64_t r = 0; r < rows; ++r) want += static_cast<double>(sc[r]) * xh[r * d + c];
    CHECK(got[c] == doctest::Approx(want).epsilon(1e-5));
  }
}

}  // namespace tlt::concepts_tests
