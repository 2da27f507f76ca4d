#pragma once
// The concept bottleneck: segment pooling (every mode) and replication
// (shift 0 and 1), forward and backward, against the double-precision
// reference, from the patcher's CSR outputs and from ids, on the vector and
// the scalar paths; constant input; replication of length-1 pooling; the
// adjoint property; ties; and bad input. Shared by the emu and gpu tiers.
#include "../support/segment_problem.hpp"
#include "../support/testbed.hpp"

#include <tokenless/bottleneck/pool.cuh>
#include <tokenless/bottleneck/project.cuh>
#include <tokenless/reference/bottleneck.hpp>

namespace tlt::bottleneck_tests {

namespace bn = tokenless::bottleneck;
namespace ref = tokenless::reference::bottleneck;
using tokenless::Segments;
using tokenless::VarlenBatch;

template <class P>
constexpr ref::Pool mode_of() {
  if constexpr (std::is_same_v<P, bn::PoolSum>) return ref::Pool::sum;
  else if constexpr (std::is_same_v<P, bn::PoolMean>) return ref::Pool::mean;
  else if constexpr (std::is_same_v<P, bn::PoolMax>) return ref::Pool::max;
  else if constexpr (std::is_same_v<P, bn::PoolMin>) return ref::Pool::min;
  else if constexpr (std::is_same_v<P, bn::PoolFirst>) return ref::Pool::first;
  else return ref::Pool::last;
}

template <class T>
void check_close(const char* what, const std::vector<T>& got, const std::vector<double>& truth, std::size_t n) {
  INFO(what);
  const std::vector<T> head(got.begin(), got.begin() + static_cast<std::ptrdiff_t>(n));
  check_accuracy(to_floats(head), rounded<T>(truth), truth, 4.0, tokenless::dtype_traits<T>::unit_roundoff);
}

using Problem = SegmentProblem;

// Pools x (d columns) with P, forward and backward, against the reference;
// `capacity` rows past the count stay untouched.
template <class P, class T>
void check_pool(const Problem& pr, int d, bool csr, std::uint64_t seed) {
  const std::int64_t n = pr.total(), cap = pr.count() + 3;
  // Coarse values make ties (max, min) common.
  auto xh = random_values<T>(static_cast<std::size_t>(n * d), seed);
  for (auto& v : xh) v = tokenless::from_float<T>(std::round(tokenless::to_float(v) * 4.0f) / 4.0f);
  const auto gh = random_values<T>(static_cast<std::size_t>(cap * d), seed + 1);
  DeviceBuffer<T> x(xh), out(static_cast<std::size_t>(cap * d)), g(gh), dx(static_cast<std::size_t>(n * d));
  out.fill_bytes(0x7f);
  using Fwd = bn::SegmentPool<P, T>;
  Testbed<Fwd>().run_ok({.x = x.get(), .batch = pr.batch(), .segments = pr.segments(csr), .capacity = cap, .d = d,
                         .out = out.get()});
  const auto xd = widen(xh);
  const auto want = ref::pool(mode_of<P>(), xd, d, pr.segs);
  const auto got = out.download();
  check_close("pool forward", got, want, want.size());
  for (std::size_t i = want.size(); i < got.size(); ++i) {
    std::uint16_t bits;  // rows past the count keep their sentinel bytes
    std::memcpy(&bits, reinterpret_cast<const unsigned char*>(got.data() + i), 2);
    CHECK(bits == 0x7f7f);
  }
  using Bwd = bn::SegmentPoolBackward<P, T>;
  Testbed<Bwd>().run_ok({.x = x.get(), .grad_out = g.get(), .batch = pr.batch(), .segments = pr.segments(csr),
                         .capacity = cap, .d = d, .grad_x = dx.get()});
  const auto gd = widen(gh);
  const auto want_dx = ref::pool_backward(mode_of<P>(), xd, std::vector<double>(gd.begin(), gd.begin() + pr.count() * d),
                                          d, pr.segs);
  check_close("pool backward", dx.download(), want_dx, want_dx.size());
}

template <class P>
void check_pool_all(const Problem& pr, std::uint64_t seed) {
  check_pool<P, float>(pr, 64, true, seed);        // vector path, CSR
  check_pool<P, __nv_bfloat16>(pr, 24, false, seed + 10);  // vector path (8 bf16), ids
  check_pool<P, __half>(pr, 7, true, seed + 20);   // scalar path
}

// Sequences: an empty one, one of one position, one-position segments and
// long ones. (Empty segments, which only the CSR form can express, are in
// the constant-input case.)
inline Problem mixed() { return Problem({{3, 1, 1, 5}, {}, {1}, {2, 7, 1, 1, 1}, {9}}); }

TEST_CASE("bottleneck: pooling, every mode, CSR and ids, vector and scalar paths, forward and backward") {
  const Problem pr = mixed();
  check_pool_all<bn::PoolSum>(pr, 11);
  check_pool_all<bn::PoolMean>(pr, 12);
  check_pool_all<bn::PoolMax>(pr, 13);
  check_pool_all<bn::PoolMin>(pr, 14);
  check_pool_all<bn::PoolFirst>(pr, 15);
  check_pool_all<bn::PoolLast>(pr, 16);
}

TEST_CASE("bottleneck: pooling constant input; empty segments give 0; max ties split the gradient evenly") {
  const Problem pr({{4, 0, 2}, {3}});
  const int d = 8;
  const std::int64_t n = pr.total(), cap = pr.count();
  DeviceBuffer<float> x(std::vector<float>(n * d, 2.5f)), out(cap * d), g(std::vector<float>(cap * d, 1.0f)), dx(n * d);
  // Every mode but sum gives the constant; an empty segment gives 0 (for max
  // not -inf: BLT's scatter_reduce into zeros; for mean not NaN).
  const auto pool = [&](auto policy) {
    using P = decltype(policy);
    CAPTURE(P::kName);
    Testbed<bn::SegmentPool<P, float>>().run_ok(
        {.x = x.get(), .batch = pr.batch(), .segments = pr.segments(true), .capacity = cap, .d = d, .out = out.get()});
    const auto o = out.download();
    for (std::int64_t p = 0; p < cap; ++p) {
      for (int c = 0; c < d; ++c) CHECK(o[p * d + c] == (pr.segs[p].hi == pr.segs[p].lo ? 0.0f : 2.5f));
    }
  };
  pool(bn::PoolMean{});
  pool(bn::PoolMax{});
  pool(bn::PoolMin{});
  pool(bn::PoolFirst{});
  pool(bn::PoolLast{});
  // Every row ties for the max: each of a segment's L rows gets 1 / L.
  Testbed<bn::SegmentPoolBackward<bn::PoolMax, float>>().run_ok({.x = x.get(), .grad_out = g.get(), .batch = pr.batch(),
                                                                 .segments = pr.segments(true), .capacity = cap, .d = d,
                                                                 .grad_x = dx.get()});
  const auto gx = dx.download();
  for (const auto& s : pr.segs) {
    for (std::int64_t r = s.lo; r < s.hi; ++r) CHECK(gx[r * d] == doctest::Approx(1.0 / static_cast<double>(s.hi - s.lo)));
  }
}

TEST_CASE("bottleneck: replication, shift 0 and 1, forward and backward; it inverts length-1 pooling") {
  const Problem pr = mixed();
  for (int shift : {0, 1}) {
    for (bool csr : {true, false}) {
      CAPTURE(shift);
      CAPTURE(csr);
      const int d = 16;
      const std::int64_t n = pr.total(), cap = pr.count() + 2;
      const auto sh = random_values<__nv_bfloat16>(static_cast<std::size_t>(cap * d), 31 + shift);
      const auto gh = random_values<__nv_bfloat16>(static_cast<std::size_t>(n * d), 41 + shift);
      DeviceBuffer<__nv_bfloat16> src(sh), out(n * d), g(gh), gs(cap * d);
      Testbed<bn::Replicate<__nv_bfloat16>>().run_ok({.src = src.get(), .batch = pr.batch(), .segments = pr.segments(csr),
                                                      .capacity = cap, .d = d, .shift = shift, .out = out.get()});
      const auto want = ref::replicate(widen(sh), d, pr.segs, shift, n);
      check_close("replicate", out.download(), want, want.size());
      Testbed<bn::ReplicateBackward<__nv_bfloat16>>().run_ok({.grad_out = g.get(), .batch = pr.batch(),
                                                              .segments = pr.segments(csr), .capacity = cap, .d = d,
                                                              .shift = shift, .grad_src = gs.get()});
      const auto want_g = ref::replicate_backward(widen(gh), d, pr.segs, shift);
      check_close("replicate backward", gs.download(), want_g, want_g.size());
    }
  }
  // Segments of one position: replicate(pool(x)) = x, exactly, in every mode.
  const Problem ones({{1, 1, 1}, {1}, {1, 1}});
  const auto xh = random_values<float>(6 * 5, 51);
  DeviceBuffer<float> x(xh), pooled(6 * 5), back(6 * 5);
  Testbed<bn::SegmentPool<bn::PoolMax, float>>().run_ok(
      {.x = x.get(), .batch = ones.batch(), .segments = ones.segments(false), .capacity = 6, .d = 5, .out = pooled.get()});
  Testbed<bn::Replicate<float>>().run_ok({.src = pooled.get(), .batch = ones.batch(), .segments = ones.segments(true),
                                          .capacity = 6, .d = 5, .out = back.get()});
  CHECK(back.download() == xh);
}

// Pooling into a projection: out = pool(x) W^T (+ bias), forward and
// backward, against the reference with the pooled rows rounded to T (what a
// same-precision implementation stores between the two).
template <class P, class T>
void check_project(const Problem& pr, int d, std::int64_t out_features, bool with_bias, bool csr, std::uint64_t seed) {
  CAPTURE(P::kName);
  CAPTURE(out_features);
  tokenless::blas::LtHandle h;
  REQUIRE_OK(tokenless::blas::LtHandle::create(h));
  const std::int64_t n = pr.total(), cnt = pr.count(), cap = cnt + 2;
  const auto xh = random_values<T>(static_cast<std::size_t>(n * d), seed);
  const auto wh = random_values<T>(static_cast<std::size_t>(out_features * d), seed + 1);
  const auto bh = random_values<T>(static_cast<std::size_t>(out_features), seed + 2);
  auto gh = random_values<T>(static_cast<std::size_t>(cap * out_features), seed + 3);
  DeviceBuffer<T> x(xh), w(wh), b(bh), out(cap * out_features), g(gh), dx(n * d), dw(out_features * d);
  DeviceBuffer<float> db(out_features);
  out.fill_bytes(0x7f);
  Testbed<bn::PoolProject<P, T>>().run_ok({.handle = &h, .x = x.get(), .batch = pr.batch(), .segments = pr.segments(csr),
                                           .capacity = cap, .d = d, .weight = w.get(), .out_features = out_features,
                                           .bias = with_bias ? b.get() : nullptr, .out = out.get()});
  const auto pooled = ref::pool(mode_of<P>(), widen(xh), d, pr.segs);
  std::vector<double> pooled_t(pooled.size());
  for (std::size_t i = 0; i < pooled.size(); ++i) pooled_t[i] = tokenless::round_trip<T>(static_cast<float>(pooled[i]));
  const std::vector<double> bias = with_bias ? widen(bh) : std::vector<double>{};
  const auto truth = ref::linear(pooled, cnt, d, widen(wh), out_features, bias);
  const auto naive = ref::linear(pooled_t, cnt, d, widen(wh), out_features, bias);
  const auto got = to_floats(out.download());
  {
    INFO("projection");
    check_accuracy({got.begin(), got.begin() + cnt * out_features}, rounded<T>(naive), truth, 4.0,
                   tokenless::dtype_traits<T>::unit_roundoff);
  }
  for (std::int64_t i = cnt * out_features; i < cap * out_features; ++i) CHECK(got[i] == 0.0f);  // rows past the count
  // Backward; grad_out's rows past the count are the forward's zeros.
  for (std::int64_t i = cnt * out_features; i < cap * out_features; ++i) gh[i] = tokenless::from_float<T>(0.0f);
  g.upload(gh);
  using Bwd = bn::PoolProjectBackward<P, T>;
  typename Bwd::Arguments a{.handle = &h, .x = x.get(), .grad_out = g.get(), .batch = pr.batch(),
                            .segments = pr.segments(csr), .capacity = cap, .d = d, .weight = w.get(),
                            .out_features = out_features, .grad_x = dx.get(), .grad_weight = dw.get(),
                            .grad_bias = db.get()};
  Testbed<Bwd>().run_ok(a);
  const auto gd = widen(gh);
  std::vector<double> dpooled(static_cast<std::size_t>(cnt * d), 0.0);
  for (std::int64_t r = 0; r < cnt; ++r) {
    for (int c = 0; c < d; ++c) {
      for (std::int64_t o = 0; o < out_features; ++o) dpooled[r * d + c] += gd[r * out_features + o] * widen(wh)[o * d + c];
    }
  }
  std::vector<double> dpooled_t(dpooled.size());
  for (std::size_t i = 0; i < dpooled.size(); ++i) dpooled_t[i] = tokenless::round_trip<T>(static_cast<float>(dpooled[i]));
  const auto want_dx = ref::pool_backward(mode_of<P>(), widen(xh), dpooled, d, pr.segs);
  const auto naive_dx = ref::pool_backward(mode_of<P>(), widen(xh), dpooled_t, d, pr.segs);
  {
    INFO("grad_x");
    check_accuracy(to_floats(dx.download()), rounded<T>(naive_dx), want_dx, 4.0, tokenless::dtype_traits<T>::unit_roundoff);
  }
  std::vector<double> want_dw(static_cast<std::size_t>(out_features * d), 0.0), want_db(out_features, 0.0),
      naive_dw = want_dw;
  for (std::int64_t r = 0; r < cnt; ++r) {
    for (std::int64_t o = 0; o < out_features; ++o) {
      want_db[o] += gd[r * out_features + o];
      for (int c = 0; c < d; ++c) {
        want_dw[o * d + c] += gd[r * out_features + o] * pooled[r * d + c];
        naive_dw[o * d + c] += gd[r * out_features + o] * pooled_t[r * d + c];
      }
    }
  }
  {
    INFO("grad_weight");
    check_accuracy(to_floats(dw.download()), rounded<T>(naive_dw), want_dw, 4.0, tokenless::dtype_traits<T>::unit_roundoff);
  }
  const auto got_db = db.download();
  for (std::int64_t o = 0; o < out_features; ++o) CHECK(got_db[o] == doctest::Approx(want_db[o]).epsilon(1e-5).scale(1e-5));
  // Accumulating: the weight's gradient doubles (up to T's rounding), the bias's too.
  const auto dw1 = to_floats(dw.download());
  a.accumulate_weight = true;
  a.accumulate_bias = true;
  Testbed<Bwd>().run_ok(a);
  const auto dw2 = to_floats(dw.download()), db2 = db.download();
  for (std::size_t i = 0; i < dw1.size(); ++i) {
    CHECK(dw2[i] == doctest::Approx(2.0 * dw1[i]).epsilon(4.0 * tokenless::dtype_traits<T>::unit_roundoff).scale(1e-6));
  }
  for (std::int64_t o = 0; o < out_features; ++o) CHECK(db2[o] == doctest::Approx(2.0 * got_db[o]).epsilon(1e-6));
}

TEST_CASE("bottleneck: pooling into a projection, BLT's patch slots and DLCM's concepts, forward and backward") {
  const Problem pr = mixed();
  check_project<bn::PoolMax, __nv_bfloat16>(pr, 16, 32, false, true, 81);  // BLT: amax, D -> k·D (k = 2), no bias
  check_project<bn::PoolMean, float>(pr, 24, 40, true, false, 82);          // DLCM: mean, up to the concept width
  check_project<bn::PoolMean, __half>(pr, 8, 12, true, true, 83);
}

TEST_CASE("bottleneck: pooling into a projection refuses bad segments and writes nothing, GEMM included") {
  using tokenless::StatusCode;
  tokenless::blas::LtHandle h;
  REQUIRE_OK(tokenless::blas::LtHandle::create(h));
  const Problem pr({{2, 3}, {4}});
  const int d = 8;
  DeviceBuffer<float> x(std::vector<float>(9 * d, 1.0f)), w(std::vector<float>(16 * d, 0.5f)), out(4 * 16),
      g(std::vector<float>(4 * 16, 1.0f)), dx(9 * d), dw(16 * d);
  DeviceBuffer<std::int32_t> gap_starts(std::vector<std::int32_t>{0, 3, 0});
  using Op = bn::PoolProject<bn::PoolMax, float>;
  Testbed<Op> bed;
  bed.watch(out);
  using Bad = Testbed<Op>::Bad;
  bed.reject({.handle = &h, .x = x.get(), .batch = pr.batch(), .segments = pr.segments(true), .capacity = 4, .d = d,
              .weight = w.get(), .out_features = 16, .out = out.get()},
             {
                 Bad{"a gap (device)", [&](auto& a) { a.segments.starts = gap_starts.get(); },
                     StatusCode::invalid_argument, "segment 1: start 3, length 3"},
                 Bad{"no handle", [](auto& a) { a.handle = nullptr; }, StatusCode::null_pointer, "handle"},
                 Bad{"null weight", [](auto& a) { a.weight = nullptr; }, StatusCode::null_pointer, "'weight'"},
             });
  using Back = bn::PoolProjectBackward<bn::PoolMax, float>;
  Testbed<Back> back;
  back.watch(dx).watch(dw);
  using BadBack = Testbed<Back>::Bad;
  back.reject({.handle = &h, .x = x.get(), .grad_out = g.get(), .batch = pr.batch(), .segments = pr.segments(true),
               .capacity = 4, .d = d, .weight = w.get(), .out_features = 16, .grad_x = dx.get(),
               .grad_weight = dw.get(), .accumulate_weight = true},
              {
                  BadBack{"a gap (device)", [&](auto& a) { a.segments.starts = gap_starts.get(); },
                          StatusCode::invalid_argument, "segment 1: start 3, length 3"},
              });
}

TEST_CASE("bottleneck: bad input gets a clear Status and writes nothing") {
  using tokenless::StatusCode;
  const Problem pr({{2, 3}, {4}});
  const int d = 8;
  DeviceBuffer<float> x(std::vector<float>(9 * d, 1.0f)), out(4 * d);
  using Op = bn::SegmentPool<bn::PoolMean, float>;
  const Op::Arguments good{.x = x.get(), .batch = pr.batch(), .segments = pr.segments(true), .capacity = 4, .d = d,
                           .out = out.get()};
  // Broken segment arrays (device-side checks).
  DeviceBuffer<std::int32_t> gap_starts(std::vector<std::int32_t>{0, 3, 0}),     // a gap after the first
      short_lens(std::vector<std::int32_t>{2, 2, 4}),                             // the sequence's end not reached
      bad_off(std::vector<std::int32_t>{0, 3, 2}),                                // offsets going back
      jump_ids(std::vector<std::int32_t>{0, 0, 2, 2, 2, 3, 3, 3, 3}),             // a step of 2
      cross_ids(std::vector<std::int32_t>{0, 0, 1, 1, 1, 1, 1, 1, 1});            // no new segment at sequence 1
  using Bad = Testbed<Op>::Bad;
  Testbed<Op> bed;
  bed.watch(out);
  bed.reject(good, {
      Bad{"d 0", [](auto& a) { a.d = 0; }, StatusCode::empty, "'d'"},
      Bad{"capacity 0", [](auto& a) { a.capacity = 0; }, StatusCode::empty, "capacity"},
      Bad{"empty batch", [](auto& a) { a.batch.num_seqs = 0; }, StatusCode::empty, "batch"},
      Bad{"null x", [](auto& a) { a.x = nullptr; }, StatusCode::null_pointer, "'x'"},
      Bad{"overlapping rows", [](auto& a) { a.out_stride = 4; }, StatusCode::invalid_argument, "'out'"},
      Bad{"no segments", [](auto& a) { a.segments = {}; }, StatusCode::null_pointer, "segments"},
      Bad{"starts without lengths", [&](auto& a) { a.segments.lengths = nullptr; }, StatusCode::null_pointer,
          "segments.lengths"},
      Bad{"a gap (device)", [&](auto& a) { a.segments.starts = gap_starts.get(); }, StatusCode::invalid_argument,
          "segment 1: start 3, length 3"},
      Bad{"a sequence not covered (device)", [&](auto& a) { a.segments.lengths = short_lens.get(); },
          StatusCode::invalid_argument, "segment 1: start 2, length 2"},
      Bad{"offsets going back (device)", [&](auto& a) { a.segments.offsets = bad_off.get(); },
          StatusCode::invalid_argument, "segments.offsets"},
      Bad{"too few rows (device)", [](auto& a) { a.capacity = 2; }, StatusCode::capacity_too_small,
          "2 rows for 3 segments"},
      Bad{"ids jumping (device)", [&](auto& a) { a.segments = {nullptr, nullptr, nullptr, jump_ids.get()}; },
          StatusCode::invalid_argument, "ids[2] = 2"},
      Bad{"ids across a sequence start (device)", [&](auto& a) { a.segments = {nullptr, nullptr, nullptr, cross_ids.get()}; },
          StatusCode::invalid_argument, "ids[5] = 1"},
  });
  using Rep = bn::Replicate<float>;
  CHECK(Rep::can_implement({.src = out.get(), .batch = pr.batch(), .segments = pr.segments(true), .capacity = 4,
                            .d = d, .shift = 2, .out = x.get()})
            .code() == StatusCode::invalid_argument);
}

}  // namespace tlt::bottleneck_tests
