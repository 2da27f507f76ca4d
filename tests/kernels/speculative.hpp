#pragma once
// Self-speculative decoding's acceptance against the reference, shared by the
// emu and gpu tiers: planted agreement lengths 0..k, padded rows, the
// histogram added to across runs, only a + 1 tokens written; bad input
// refused with nothing written.
#include "../support/testbed.hpp"

#include <tokenless/heads/speculative.cuh>
#include <tokenless/reference/heads.hpp>

#include <random>
#include <vector>

namespace tlt::speculative_tests {

namespace hd = tokenless::heads;
using tokenless::StatusCode;

inline void check_accept(int k, std::int64_t batch, std::int64_t ds, std::int64_t vs, std::int64_t os) {
  CAPTURE(k);
  CAPTURE(batch);
  CAPTURE(ds);
  std::mt19937_64 rng(static_cast<std::uint64_t>(k * 131 + batch));
  const std::int64_t dstride = ds ? ds : k, vstride = vs ? vs : k + 1, ostride = os ? os : k + 1;
  std::vector<std::int32_t> draft(static_cast<std::size_t>(batch * dstride), -7),
      verified(static_cast<std::size_t>(batch * vstride), -7);
  std::vector<int> planted(static_cast<std::size_t>(batch));
  for (std::int64_t b = 0; b < batch; ++b) {
    planted[b] = static_cast<int>(b % (k + 1));  // every length 0..k
    for (int j = 0; j <= k; ++j) verified[b * vstride + j] = static_cast<std::int32_t>(rng() % 50);
    for (int j = 0; j < k; ++j) {
      // Agree before the planted length, differ at it, anything after.
      const std::int32_t v = verified[b * vstride + j];
      draft[b * dstride + j] = j < planted[b] ? v : j == planted[b] ? v + 1 : static_cast<std::int32_t>(rng() % 50);
    }
  }
  DeviceBuffer<std::int32_t> d(draft), v(verified), out(std::vector<std::int32_t>(batch * ostride, -1)),
      acc(static_cast<std::size_t>(batch)), drop(static_cast<std::size_t>(batch));
  DeviceBuffer<unsigned long long> hist(std::vector<unsigned long long>(static_cast<std::size_t>(k + 1), 0ull));
  hd::SpeculativeAccept::Arguments a;
  a.draft = d.get();
  a.verified = v.get();
  a.batch = batch;
  a.k = k;
  a.draft_stride = ds;
  a.verified_stride = vs;
  a.out_stride = os;
  a.out = out.get();
  a.accepted = acc.get();
  a.drop = drop.get();
  a.histogram = hist.get();
  Testbed<hd::SpeculativeAccept> tb;
  tb.run_ok(a);
  const auto got_out = out.download();
  const auto got_acc = acc.download();
  const auto got_drop = drop.download();
  std::vector<unsigned long long> want_hist(static_cast<std::size_t>(k + 1), 0ull);
  for (std::int64_t b = 0; b < batch; ++b) {
    std::vector<std::int32_t> want;
    const std::int32_t n = tokenless::reference::heads::speculative_accept(draft.data() + b * dstride,
                                                                            verified.data() + b * vstride, k, want);
    CHECK(n == planted[b]);
    CHECK(got_acc[b] == n);
    CHECK(got_drop[b] == k - n);
    ++want_hist[n];
    for (std::int64_t j = 0; j < ostride; ++j) {
      const std::int32_t g = got_out[b * ostride + j];
      if (j <= n) CHECK(g == want[j]);
      else CHECK(g == -1);  // only a + 1 tokens are written
    }
  }
  CHECK(hist.download() == want_hist);
  tb.run_ok(a);  // added to: twice the counts
  for (auto& c : want_hist) c *= 2;
  CHECK(hist.download() == want_hist);
}

inline void check_bad_input() {
  DeviceBuffer<std::int32_t> d(std::vector<std::int32_t>(8, 1)), v(std::vector<std::int32_t>(10, 1)),
      out(std::vector<std::int32_t>(10, -1)), acc(2);
  hd::SpeculativeAccept::Arguments a;
  a.draft = d.get();
  a.verified = v.get();
  a.batch = 2;
  a.k = 4;
  a.out = out.get();
  a.accepted = acc.get();
  Testbed<hd::SpeculativeAccept> tb;
  tb.watch(out).watch(acc);
  using A = hd::SpeculativeAccept::Arguments;
  tb.reject(a, {
      {"k of 0", [](A& x) { x.k = 0; }, StatusCode::invalid_argument, "at least one draft"},
      {"a negative k", [](A& x) { x.k = -3; }, StatusCode::invalid_argument, "k"},
      {"more drafts than the few-query decode verifies", [](A& x) { x.k = 16; }, StatusCode::unsupported, "at most 15"},
      {"no sequences", [](A& x) { x.batch = 0; }, StatusCode::empty, "batch"},
      {"no output", [](A& x) { x.out = nullptr; }, StatusCode::null_pointer, "out"},
      {"rows shorter than k", [](A& x) { x.draft_stride = 3; }, StatusCode::shape_mismatch, "draft_stride"},
  });
}

}  // namespace tlt::speculative_tests

TEST_CASE("speculative decoding: acceptance takes the longest agreeing prefix and the verifier's next token") {
  tlt::speculative_tests::check_accept(4, 37, 0, 0, 0);
  tlt::speculative_tests::check_accept(1, 5, 0, 0, 0);
  tlt::speculative_tests::check_accept(15, 33, 17, 19, 20);  // the most drafts, padded rows
}

TEST_CASE("speculative decoding: acceptance refuses bad input and writes nothing") {
  tlt::speculative_tests::check_bad_input();
}
