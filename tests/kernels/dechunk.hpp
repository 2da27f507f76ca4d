#pragma once
// H-Net's dechunk: forward and backward against the double-precision
// reference (naive-fp32 tolerance), CSR and ids, vector and scalar paths, one
// and several column blocks, batches that need several scan tiles and
// several tiles per carry warp; the generation step against the prefill
// (bitwise within a tile); sequences isolated from each other's NaN; the
// accumulating dL/dp; bad input. Shared by the emu and gpu tiers.
#include "../support/segment_problem.hpp"
#include "../support/testbed.hpp"

#include <tokenless/bottleneck/dechunk.cuh>
#include <tokenless/reference/bottleneck.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

namespace tlt::dechunk_tests {

namespace bn = tokenless::bottleneck;
namespace ref = tokenless::reference::bottleneck;
using tokenless::StatusCode;

// Chunk lengths 1..max_len, `counts[b]` chunks in sequence b (0: an empty sequence).
inline std::vector<std::vector<int>> random_chunks(const std::vector<int>& counts, std::uint64_t seed, int max_len = 5) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> len(1, max_len);
  std::vector<std::vector<int>> out;
  for (int n : counts) {
    std::vector<int> seq;
    for (int i = 0; i < n; ++i) seq.push_back(len(rng));
    out.push_back(seq);
  }
  return out;
}

// The router's p: 1 at a sequence start, (0.5, 1) at other chunk starts
// (now and then past the clamp), [0, 0.5] elsewhere (now and then 0).
inline std::vector<float> router_probs(const SegmentProblem& pr, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> p(static_cast<std::size_t>(pr.total()));
  for (auto& v : p) v = u(rng) < 0.1f ? 0.0f : 0.5f * u(rng);
  for (const auto& s : pr.segs) {
    if (s.hi == s.lo) continue;
    const float r = u(rng);
    p[s.lo] = s.opens ? 1.0f : (r < 0.1f ? 0.99999f : 0.5f + 0.5f * u(rng) * 0.999f + 1e-4f);
  }
  return p;
}

template <class T>
std::vector<float> floats_of(const std::vector<T>& v) {
  return to_floats(v);
}
inline std::vector<float> head(const std::vector<float>& v, std::size_t n) {
  return {v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n)};
}

// Kernel against truth at T's roundoff, with the naive fp32 loop (rounded
// through T where the result is stored in T) as the yardstick.
template <class T>
void check_close(const char* what, const std::vector<float>& got, const std::vector<float>& naive,
                 const std::vector<double>& truth) {
  INFO(what);
  check_accuracy(head(got, truth.size()), rounded<T>(std::vector<double>(naive.begin(), naive.end())), truth, 4.0,
                 tokenless::dtype_traits<T>::unit_roundoff);
}

template <class T>
void check_dechunk(const SegmentProblem& pr, int d, bool csr, bool with_residual, bool confidence, std::uint64_t seed) {
  CAPTURE(d);
  CAPTURE(csr);
  CAPTURE(with_residual);
  CAPTURE(confidence);
  const std::int64_t n = pr.total(), chunks = pr.count(), cap = chunks + 2, seqs = std::ssize(pr.ps.lengths);
  const auto zh = random_values<T>(static_cast<std::size_t>(cap * d), seed);
  const auto gh = random_values<T>(static_cast<std::size_t>(n * d), seed + 1);
  const auto rh = with_residual ? random_values<float>(static_cast<std::size_t>(n * d), seed + 2) : std::vector<float>{};
  const auto ph = router_probs(pr, seed + 3);
  DeviceBuffer<T> z(zh), out(n * d), g(gh), dz(cap * d);
  DeviceBuffer<float> prob(ph), res(with_residual ? rh : std::vector<float>{0.0f}), states(cap * d), fin(seqs * d),
      dp(n);
  states.fill_bytes(0x7f);
  fin.fill_bytes(0x7f);
  Testbed<bn::Dechunk<T>>().run_ok({.z = z.get(), .prob = prob.get(), .batch = pr.batch(),
                                    .segments = pr.segments(csr), .capacity = cap, .d = d,
                                    .residual = with_residual ? res.get() : nullptr, .out = out.get(),
                                    .states = states.get(), .final_state = fin.get()});
  const auto truth = ref::dechunk<double>(widen(zh), ph, d, pr.segs, widen(rh), n);
  const auto naive = ref::dechunk<float>(floats_of(zh), ph, d, pr.segs, rh, n);
  check_close<T>("out", floats_of(out.download()), naive.out, truth.out);
  const auto st = states.download();
  check_close<float>("states", st, naive.states, truth.states);
  for (std::size_t i = truth.states.size(); i < st.size(); ++i) {
    std::uint32_t bits;  // rows past the count keep their sentinel bytes
    std::memcpy(&bits, &st[i], 4);
    CHECK(bits == 0x7f7f7f7fu);
  }
  // final_state: each sequence's last chunk state, 0 for an empty one.
  const auto fh = fin.download();
  std::size_t c = 0;
  for (std::int64_t b = 0; b < seqs; ++b) {
    c += pr.ps.lengths[b].size();
    for (int j = 0; j < d; ++j) CHECK(fh[b * d + j] == (pr.ps.lengths[b].empty() ? 0.0f : st[(c - 1) * d + j]));
  }

  Testbed<bn::DechunkBackward<T>>().run_ok({.grad_out = g.get(), .z = z.get(), .prob = prob.get(),
                                            .states = states.get(), .batch = pr.batch(),
                                            .segments = pr.segments(csr), .capacity = cap, .d = d,
                                            .confidence = confidence, .grad_z = dz.get(), .grad_prob = dp.get()});
  const auto zw = widen(zh);
  const auto zt = std::vector<double>(zw.begin(), zw.begin() + chunks * d);
  const auto zf = head(floats_of(zh), static_cast<std::size_t>(chunks * d));
  const auto gt = ref::dechunk_backward<double>(widen(gh), zt, ph, d, pr.segs, n, confidence);
  const auto gf = ref::dechunk_backward<float>(floats_of(gh), zf, ph, d, pr.segs, n, confidence);
  check_close<T>("grad_z", floats_of(dz.download()), gf.z, gt.z);
  check_close<float>("grad_prob", dp.download(), gf.prob, gt.prob);
}

TEST_CASE("dechunk: forward and backward against the reference; CSR and ids; vector and scalar paths") {
  // An empty sequence, a one-chunk one, long ones: several tiles a sequence.
  const SegmentProblem pr(random_chunks({70, 0, 1, 45, 3}, 5));
  check_dechunk<float>(pr, 8, true, true, true, 11);                // vector (4 fp32), lanes past d idle
  check_dechunk<__nv_bfloat16>(pr, 272, false, true, true, 12);     // vector (8 bf16), two column blocks
  check_dechunk<__half>(pr, 36, true, false, false, 13);            // scalar, two column blocks, no STE term
  // Empty chunks (CSR only): no event, their rows of grad_z are 0.
  const SegmentProblem empties({{2, 0, 3, 0}, {0, 4}, {1}});
  check_dechunk<float>(empties, 12, true, true, true, 14);
}

TEST_CASE("dechunk: a batch of more tiles than the carry has warps") {
  // 1300 chunks: 41 tiles of 32, two a carry warp for the first ones.
  const SegmentProblem pr(random_chunks({600, 0, 700}, 6, 3));
  check_dechunk<float>(pr, 4, false, true, true, 21);
}

TEST_CASE("dechunk: a NaN stays in its sequence, forward and backward") {
  const SegmentProblem pr({{2, 3, 1}, {4, 2}});
  const int d = 8;
  const std::int64_t n = pr.total(), cap = pr.count();
  auto zh = random_values<float>(static_cast<std::size_t>(cap * d), 31);
  auto gh = random_values<float>(static_cast<std::size_t>(n * d), 32);
  const auto ph = router_probs(pr, 33);
  zh[1 * d + 3] = NAN;  // sequence 0, chunk 1
  gh[11 * d + 2] = INFINITY;  // sequence 1's last position: λ carries it leftwards
  DeviceBuffer<float> z(zh), g(gh), prob(ph), out(n * d), states(cap * d), dz(cap * d), dp(n);
  Testbed<bn::Dechunk<float>>().run_ok({.z = z.get(), .prob = prob.get(), .batch = pr.batch(),
                                        .segments = pr.segments(true), .capacity = cap, .d = d, .out = out.get(),
                                        .states = states.get()});
  Testbed<bn::DechunkBackward<float>>().run_ok({.grad_out = g.get(), .z = z.get(), .prob = prob.get(),
                                                .states = states.get(), .batch = pr.batch(),
                                                .segments = pr.segments(true), .capacity = cap, .d = d,
                                                .grad_z = dz.get(), .grad_prob = dp.get()});
  const auto o = out.download(), gz = dz.download();
  for (std::int64_t t = 0; t < n; ++t) {
    CAPTURE(t);
    const bool seq0 = t < 6;
    // Forward: column 3 is NaN from chunk 1 (position 2) on in sequence 0, finite in sequence 1.
    CHECK(std::isnan(o[t * d + 3]) == (seq0 && t >= 2));
  }
  for (std::int64_t c = 0; c < cap; ++c) {
    CAPTURE(c);
    // Backward: column 2's Inf reaches sequence 1's chunks (λ) but never sequence 0's.
    CHECK(std::isfinite(gz[c * d + 2]) == (c < 3));
  }
}

TEST_CASE("dechunk: dL/dp added to what grad_prob holds when asked") {
  const SegmentProblem pr({{2, 3}, {1, 1, 2}});
  const int d = 16;
  const std::int64_t n = pr.total(), cap = pr.count();
  const auto zh = random_values<float>(static_cast<std::size_t>(cap * d), 41);
  const auto gh = random_values<float>(static_cast<std::size_t>(n * d), 42);
  const auto ph = router_probs(pr, 43);
  DeviceBuffer<float> z(zh), g(gh), prob(ph), out(n * d), states(cap * d), dz(cap * d), dp(n), dp2(std::vector<float>(n, 0.25f));
  Testbed<bn::Dechunk<float>>().run_ok({.z = z.get(), .prob = prob.get(), .batch = pr.batch(),
                                        .segments = pr.segments(false), .capacity = cap, .d = d, .out = out.get(),
                                        .states = states.get()});
  bn::DechunkBackward<float>::Arguments a{.grad_out = g.get(), .z = z.get(), .prob = prob.get(),
                                          .states = states.get(), .batch = pr.batch(),
                                          .segments = pr.segments(false), .capacity = cap, .d = d,
                                          .grad_z = dz.get(), .grad_prob = dp.get()};
  Testbed<bn::DechunkBackward<float>>().run_ok(a);
  a.accumulate_prob = true;
  a.grad_prob = dp2.get();
  Testbed<bn::DechunkBackward<float>>().run_ok(a);
  const auto once = dp.download(), added = dp2.download();
  for (std::int64_t t = 0; t < n; ++t) CHECK(added[t] == 0.25f + once[t]);
}

// The step, position by position over sequences of equal length, against the
// prefill of the whole batch; then a prefill of a prompt continued by steps.
template <class T>
void check_step(const std::vector<std::vector<int>>& lengths, int d, bool bitwise, std::uint64_t seed) {
  CAPTURE(bitwise);
  const SegmentProblem pr(lengths);
  const std::int64_t seqs = std::ssize(lengths), n = pr.total(), len = n / seqs, cap = pr.count();
  const auto zh = random_values<T>(static_cast<std::size_t>(cap * d), seed);
  const auto rh = random_values<float>(static_cast<std::size_t>(n * d), seed + 1);
  const auto ph = router_probs(pr, seed + 2);
  DeviceBuffer<T> z(zh), out(n * d);
  DeviceBuffer<float> prob(ph), res(rh), fin(seqs * d);
  Testbed<bn::Dechunk<T>>().run_ok({.z = z.get(), .prob = prob.get(), .batch = pr.batch(),
                                    .segments = pr.segments(true), .capacity = cap, .d = d, .residual = res.get(),
                                    .out = out.get(), .final_state = fin.get()});
  const auto full = floats_of(out.download());
  // Chunk starts: which chunk opens at each position.
  std::vector<std::int64_t> opens(static_cast<std::size_t>(n), -1);
  for (std::size_t c = 0; c < pr.segs.size(); ++c) opens[pr.segs[c].lo] = static_cast<std::int64_t>(c);
  const auto step_from = [&](std::int64_t from, DeviceBuffer<float>& state, std::vector<float>& got) {
    DeviceBuffer<T> zs(seqs * d), os(seqs * d);
    DeviceBuffer<float> ps(seqs), rs(seqs * d);
    DeviceBuffer<std::uint8_t> bs(seqs), fs(seqs);
    for (std::int64_t i = from; i < len; ++i) {
      // Rows of streams without a boundary hold NaN: the step must not read them.
      std::vector<T> zrow(static_cast<std::size_t>(seqs * d), tokenless::from_float<T>(NAN));
      std::vector<float> prow(seqs), rrow(static_cast<std::size_t>(seqs * d));
      std::vector<std::uint8_t> brow(seqs), frow(seqs);
      for (std::int64_t b = 0; b < seqs; ++b) {
        const std::int64_t t = b * len + i;
        prow[b] = ph[t];
        brow[b] = opens[t] >= 0;
        frow[b] = i == 0;
        for (int j = 0; j < d; ++j) {
          rrow[b * d + j] = rh[t * d + j];
          if (opens[t] >= 0) zrow[b * d + j] = zh[opens[t] * d + j];
        }
      }
      zs.upload(zrow);
      ps.upload(prow);
      rs.upload(rrow);
      bs.upload(brow);
      fs.upload(frow);
      REQUIRE_OK(bn::DechunkStep<T>::run({.z = zs.get(), .prob = ps.get(), .boundary = bs.get(), .first = fs.get(),
                                          .residual = rs.get(), .streams = seqs, .d = d, .state = state.get(),
                                          .out = os.get()}));
      const auto o = floats_of(os.download());
      for (std::int64_t b = 0; b < seqs; ++b) {
        for (int j = 0; j < d; ++j) got[(b * len + i) * d + j] = o[b * d + j];
      }
    }
  };
  const auto compare = [&](const std::vector<float>& got, std::int64_t from) {
    double worst = 0, scale = 0;
    for (std::int64_t b = 0; b < seqs; ++b) {
      for (std::int64_t i = from; i < len; ++i) {
        for (int j = 0; j < d; ++j) {
          const std::size_t k = static_cast<std::size_t>((b * len + i) * d + j);
          if (bitwise) CHECK(std::memcmp(&got[k], &full[k], sizeof(float)) == 0);
          worst = std::max(worst, std::fabs(static_cast<double>(got[k]) - full[k]));
          scale = std::max(scale, std::fabs(static_cast<double>(full[k])));
        }
      }
    }
    INFO("largest difference " << worst << " at scale " << scale);
    CHECK(worst <= 8.0 * tokenless::dtype_traits<T>::unit_roundoff * scale);
  };
  // The whole sequences by steps, from a zero state.
  DeviceBuffer<float> state(std::vector<float>(static_cast<std::size_t>(seqs * d), 0.0f));
  std::vector<float> got(full.size());
  step_from(0, state, got);
  compare(got, 0);
  if (bitwise) CHECK(state.download() == fin.download());
  // A prefill of the first half, continued by steps from its final_state.
  const std::int64_t half = len / 2;
  std::vector<std::vector<int>> prompt;
  for (const auto& seq : lengths) {
    std::vector<int> p;
    int pos = 0;
    for (int l : seq) {
      if (pos >= half) break;
      p.push_back(std::min<int>(l, static_cast<int>(half) - pos));
      pos += p.back();
    }
    prompt.push_back(p);
  }
  const SegmentProblem pp(prompt);
  std::vector<float> pprob(static_cast<std::size_t>(seqs * half));
  std::vector<float> pres(static_cast<std::size_t>(seqs * half * d));
  for (std::int64_t b = 0; b < seqs; ++b) {
    for (std::int64_t i = 0; i < half; ++i) {
      pprob[b * half + i] = ph[b * len + i];
      for (int j = 0; j < d; ++j) pres[(b * half + i) * d + j] = rh[(b * len + i) * d + j];
    }
  }
  // The prompt's chunks: the full run's first chunks of each sequence (a
  // chunk cut at the half keeps its vector: the steps after it continue it).
  std::vector<T> pz;
  std::size_t c0 = 0;
  for (std::size_t b = 0; b < lengths.size(); ++b) {
    for (std::size_t k = 0; k < prompt[b].size(); ++k) {
      for (int j = 0; j < d; ++j) pz.push_back(zh[(c0 + k) * d + j]);
    }
    c0 += lengths[b].size();
  }
  DeviceBuffer<T> pzd(pz), pout(seqs * half * d);
  DeviceBuffer<float> pprobd(pprob), presd(pres), pstate(seqs * d);
  Testbed<bn::Dechunk<T>>().run_ok({.z = pzd.get(), .prob = pprobd.get(), .batch = pp.batch(),
                                    .segments = pp.segments(false), .capacity = pp.count(), .d = d,
                                    .residual = presd.get(), .out = pout.get(), .final_state = pstate.get()});
  std::vector<float> cont(full.size());
  step_from(half, pstate, cont);
  compare(cont, half);
}

// `seqs` sequences of `len` positions in chunks of 1..max_len.
inline std::vector<std::vector<int>> equal_chunks(int seqs, int len, std::uint64_t seed, int max_len) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> pick(1, max_len);
  std::vector<std::vector<int>> out(static_cast<std::size_t>(seqs));
  for (auto& seq : out) {
    for (int pos = 0; pos < len;) {
      seq.push_back(std::min(pick(rng), len - pos));
      pos += seq.back();
    }
  }
  return out;
}

TEST_CASE("dechunk: the generation step gives the prefill's bits within a scan tile, its values across tiles") {
  check_step<float>(equal_chunks(3, 12, 51, 3), 8, true, 61);                 // under 32 chunks: one tile
  check_step<__nv_bfloat16>(equal_chunks(2, 10, 52, 2), 16, true, 62);
  check_step<float>(equal_chunks(3, 120 / scale_down(), 53, 3), 12, false, 63);  // several tiles
}

// H-Net's clamp, from hnet's own rule (modules/dc.py: p̂ = clamp(p, min=1e-4,
// max=1 - 1e-4), written out here, not read from the library's constants,
// which the reference shares): chunk starts with p of 1 (a sequence start),
// 5e-4, 1e-4, 2e-5, 0 and 0.3, one position each. A mutation audit moved the
// kernels' lower bound to 1e-3 and no test saw it (they put p >= 0.5 at
// chunk starts). The forward's states, the backward's gate (dL/dp only where
// 1e-4 <= p <= 1 - 1e-4) and the generation step's states.
TEST_CASE("dechunk: the clamp at small p, as hnet's rule gives it (forward, the backward's gate, the step)") {
  const std::vector<float> p = {1.0f, 5e-4f, 1e-4f, 2e-5f, 0.0f, 0.3f};
  const auto hnet_clamp = [](double x) { return std::min(std::max(x, 1e-4), 1.0 - 1e-4); };
  const int d = 4, n = static_cast<int>(p.size());
  const SegmentProblem pr({std::vector<int>(static_cast<std::size_t>(n), 1)});
  std::vector<float> zh(static_cast<std::size_t>(n * d)), gh(zh.size());
  for (int c = 0; c < n; ++c) {
    for (int j = 0; j < d; ++j) {
      zh[c * d + j] = static_cast<float>((c + 1) * (j % 2 ? -1 : 1)) * (1.0f + 0.25f * j);
      gh[c * d + j] = 0.5f + 0.125f * static_cast<float>(c - j);
    }
  }
  // The EMA in double with hnet's p̂; the adjoint: λ_c = g_c + (1 − p̂_{c+1}) λ_{c+1},
  // dL/dp̂_c = <λ_c, z_c − z̄_{c−1}>.
  std::vector<double> zbar(zh.size()), lam(zh.size()), dp(static_cast<std::size_t>(n), 0.0);
  for (int c = 0; c < n; ++c) {
    const double ph = hnet_clamp(p[c]);
    for (int j = 0; j < d; ++j) zbar[c * d + j] = ph * zh[c * d + j] + (c ? (1 - ph) * zbar[(c - 1) * d + j] : 0.0);
  }
  for (int c = n - 1; c >= 0; --c) {
    for (int j = 0; j < d; ++j) lam[c * d + j] = gh[c * d + j] + (c + 1 < n ? (1 - hnet_clamp(p[c + 1])) * lam[(c + 1) * d + j] : 0.0);
    double dot = 0;
    for (int j = 0; j < d; ++j) dot += lam[c * d + j] * (zh[c * d + j] - (c ? zbar[(c - 1) * d + j] : 0.0));
    dp[c] = p[c] >= 1e-4f && p[c] <= 1.0f - 1e-4f ? dot : 0.0;  // torch.clamp passes the gradient inside the bounds
  }
  DeviceBuffer<float> z(zh), g(gh), prob(p), out(zh.size()), states(zh.size()), dz(zh.size()), dpb(p.size());
  Testbed<bn::Dechunk<float>>().run_ok({.z = z.get(), .prob = prob.get(), .batch = pr.batch(), .segments = pr.segments(true),
                                        .capacity = n, .d = d, .out = out.get(), .states = states.get()});
  const auto st = states.download();
  for (std::size_t i = 0; i < st.size(); ++i) CHECK(st[i] == doctest::Approx(zbar[i]).epsilon(1e-6));
  Testbed<bn::DechunkBackward<float>>().run_ok({.grad_out = g.get(), .z = z.get(), .prob = prob.get(),
                                                .states = states.get(), .batch = pr.batch(),
                                                .segments = pr.segments(true), .capacity = n, .d = d,
                                                .confidence = false, .grad_z = dz.get(), .grad_prob = dpb.get()});
  const auto got = dpb.download();
  for (int c = 0; c < n; ++c) {
    CAPTURE(p[c]);
    CHECK((got[c] != 0.0f) == (dp[c] != 0.0));  // the gate: 5e-4, 1e-4 and 0.3 pass; 1, 2e-5 and 0 do not
    CHECK(got[c] == doctest::Approx(dp[c]).epsilon(1e-5));
  }
  // The step, a position at a time from a zero state: the same states.
  DeviceBuffer<float> state(std::vector<float>(static_cast<std::size_t>(d), 0.0f)), zs(d), ps(1), os(d);
  DeviceBuffer<std::uint8_t> bs(std::vector<std::uint8_t>{1}), fs(1);
  for (int c = 0; c < n; ++c) {
    zs.upload(std::vector<float>(zh.begin() + c * d, zh.begin() + (c + 1) * d));
    ps.upload(std::vector<float>{p[c]});
    fs.upload(std::vector<std::uint8_t>{static_cast<std::uint8_t>(c == 0)});
    REQUIRE_OK(bn::DechunkStep<float>::run({.z = zs.get(), .prob = ps.get(), .boundary = bs.get(), .first = fs.get(),
                                            .streams = 1, .d = d, .state = state.get(), .out = os.get()}));
    const auto h = state.download();
    for (int j = 0; j < d; ++j) CHECK(h[j] == doctest::Approx(zbar[c * d + j]).epsilon(1e-6));
  }
}

TEST_CASE("dechunk: bad input gets a clear Status and writes nothing") {
  const SegmentProblem pr({{2, 3}, {4}});
  const int d = 8;
  DeviceBuffer<float> z(std::vector<float>(3 * d, 1.0f)), prob(std::vector<float>(9, 1.0f)), out(9 * d),
      states(3 * d), fin(2 * d);
  using Op = bn::Dechunk<float>;
  const Op::Arguments good{.z = z.get(), .prob = prob.get(), .batch = pr.batch(), .segments = pr.segments(true),
                           .capacity = 3, .d = d, .out = out.get(), .states = states.get(), .final_state = fin.get()};
  DeviceBuffer<std::int32_t> gap_starts(std::vector<std::int32_t>{0, 3, 0});
  using Bad = Testbed<Op>::Bad;
  Testbed<Op> bed;
  bed.watch(out).watch(states).watch(fin);
  bed.reject(good, {
      Bad{"null prob", [](auto& a) { a.prob = nullptr; }, StatusCode::null_pointer, "'prob'"},
      Bad{"null z", [](auto& a) { a.z = nullptr; }, StatusCode::null_pointer, "'z'"},
      Bad{"overlapping states", [](auto& a) { a.states_stride = 4; }, StatusCode::invalid_argument, "'states'"},
      Bad{"d 0", [](auto& a) { a.d = 0; }, StatusCode::empty, "'d'"},
      Bad{"a gap (device)", [&](auto& a) { a.segments.starts = gap_starts.get(); }, StatusCode::invalid_argument,
          "segment 1: start 3, length 3"},
      Bad{"too few rows (device)", [](auto& a) { a.capacity = 2; }, StatusCode::capacity_too_small,
          "2 rows for 3 segments"},
  });
  DeviceBuffer<float> g(9 * d), dz(3 * d), dp(9);
  using Back = bn::DechunkBackward<float>;
  const Back::Arguments gb{.grad_out = g.get(), .z = z.get(), .prob = prob.get(), .states = states.get(),
                           .batch = pr.batch(), .segments = pr.segments(true), .capacity = 3, .d = d,
                           .grad_z = dz.get(), .grad_prob = dp.get()};
  Testbed<Back> back;
  back.watch(dz).watch(dp);
  using BadBack = Testbed<Back>::Bad;
  back.reject(gb, {
      BadBack{"no states", [](auto& a) { a.states = nullptr; }, StatusCode::null_pointer, "'states'"},
      BadBack{"null grad_prob", [](auto& a) { a.grad_prob = nullptr; }, StatusCode::null_pointer, "'grad_prob'"},
      BadBack{"a gap (device)", [&](auto& a) { a.segments.starts = gap_starts.get(); }, StatusCode::invalid_argument,
          "segment 1: start 3, length 3"},
  });
  using Step = bn::DechunkStep<float>;
  const Step::Arguments sa{.z = z.get(), .prob = prob.get(), .streams = 2, .d = d, .state = states.get(),
                           .out = out.get()};
  REQUIRE_OK(Step::can_implement(sa));
  auto no_state = sa;
  no_state.state = nullptr;
  CHECK(Step::can_implement(no_state).code() == StatusCode::null_pointer);
  auto no_streams = sa;
  no_streams.streams = 0;
  CHECK(Step::can_implement(no_streams).code() == StatusCode::empty);
}

}  // namespace tlt::dechunk_tests
