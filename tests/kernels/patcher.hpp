#pragma once
// The fused patcher against BLT's published figure and the BLT-style host
// reference, in every mode, on varlen batches; properties; bad input.
// Shared by the emu and gpu tiers.
#include "../support/blt_entropy_figure.hpp"
#include "../support/testbed.hpp"

#include <tokenless/tokenless.cuh>

#include <cstring>

namespace tlt::patcher_tests {

namespace pt = tokenless::patcher;
namespace ref = tokenless::reference;
using Lengths = std::vector<std::int64_t>;

struct Result {
  std::vector<std::uint8_t> flags;
  std::vector<std::int32_t> ids, offsets, starts, lengths;
  std::vector<float> entropies;
  tokenless::Status status;
};

template <class Rule, class LogitT = float>
Result run_patcher(const Rule& rule, const std::vector<std::int32_t>& cu, const std::vector<float>* entropies,
                   const std::vector<std::int32_t>* tokens, bool inc, int max_len, std::int64_t capacity,
                   const std::vector<LogitT>* logits = nullptr, int vocab = 260, int logit_shift = 0) {
  using Op = pt::Patcher<Rule, LogitT>;
  const std::int64_t n = cu.back(), B = static_cast<std::int64_t>(cu.size()) - 1, n_pos = n + (inc ? B : 0);
  DeviceBuffer<std::int32_t> d_cu(cu), d_ids(n_pos), d_off(B + 1), d_starts(capacity), d_len(capacity);
  DeviceBuffer<std::uint8_t> d_flags(n_pos);
  DeviceBuffer<float> d_ent_in(entropies ? *entropies : std::vector<float>{}), d_ent(n);
  DeviceBuffer<std::int32_t> d_tok(tokens ? *tokens : std::vector<std::int32_t>{});
  DeviceBuffer<LogitT> d_logits(logits ? *logits : std::vector<LogitT>{});
  // Sentinels: an unwritten output element shows, and bad input must leave them all.
  for (auto* buf : {&d_ids, &d_off, &d_starts, &d_len}) buf->fill_bytes(0xff);
  d_flags.fill_bytes(0xff);
  typename Op::Arguments a;
  a.rule = rule;
  a.logits = logits ? d_logits.get() + logit_shift : nullptr;  // a shift misaligns the rows
  a.vocab = vocab;
  a.entropies_in = entropies ? d_ent_in.get() : nullptr;
  a.tokens = tokens ? d_tok.get() : nullptr;
  a.batch = {d_cu.get(), B, n};
  a.include_next_token = inc;
  a.max_patch_length = max_len;
  a.entropies = d_ent.get();
  a.patches = {d_flags.get(), d_ids.get(), d_off.get(), d_starts.get(), d_len.get(), capacity};
  REQUIRE_OK(Op::can_implement(a));
  Result r;
  r.status = Testbed<Op>().run(a);
  r.flags = d_flags.download();
  r.ids = d_ids.download();
  r.offsets = d_off.download();
  r.starts = d_starts.download();
  r.lengths = d_len.download();
  r.entropies = d_ent.download();
  return r;
}

// Per-sequence lengths from the CSR output, with the properties every patching has.
inline std::vector<Lengths> lengths_by_sequence(const Result& r, const std::vector<std::int32_t>& cu, bool inc) {
  std::vector<Lengths> out;
  const std::int64_t B = static_cast<std::int64_t>(cu.size()) - 1;
  for (std::int64_t b = 0; b < B; ++b) {
    Lengths l;
    std::int64_t sum = 0;
    for (std::int32_t k = r.offsets[b]; k < r.offsets[b + 1]; ++k) {
      CHECK(r.lengths[k] > 0);  // no empty patch
      l.push_back(r.lengths[k]);
      sum += r.lengths[k];
    }
    CHECK(sum == cu[b + 1] - cu[b] + (inc ? 1 : 0));  // lengths sum to N (N + 1)
    out.push_back(l);
  }
  // Patch ids step by one exactly at flagged positions.
  for (std::size_t p = 1; p < r.ids.size(); ++p) CHECK(r.ids[p] - r.ids[p - 1] == r.flags[p]);
  return out;
}

TEST_CASE("patcher golden: BLT's entropy figure on the device") {
  using namespace tlt::blt_figure;
  const std::vector<float> e(kEntropies, kEntropies + kLength);
  const std::vector<std::int32_t> cu = {0, kLength};
  const Result r = run_patcher(pt::EntropyGlobal{kThreshold}, cu, &e, nullptr, false, 0, 128);
  REQUIRE_OK(r.status);
  for (int i = 0; i < kLength; ++i) {
    CHECK(r.flags[i] == kStart[i]);
    CHECK(r.ids[i] == kPatch[i]);
  }
  CHECK(r.offsets[1] == 23);
}

template <class Rule>
void mode_case(const Rule& rule, const std::vector<std::int32_t>& cu, const std::vector<float>& e,
               const std::vector<std::int32_t>& tok, bool inc, int max_len,
               const std::function<Lengths(const std::vector<float>&, const std::vector<std::int32_t>&)>& reference) {
  CAPTURE(inc);
  CAPTURE(max_len);
  const Result r = run_patcher(rule, cu, &e, &tok, inc, max_len, static_cast<std::int64_t>(e.size()) + 64);
  REQUIRE_OK(r.status);
  const auto got = lengths_by_sequence(r, cu, inc);
  for (std::size_t b = 0; b + 1 < cu.size(); ++b) {
    const std::vector<float> eb(e.begin() + cu[b], e.begin() + cu[b + 1]);
    const std::vector<std::int32_t> tb(tok.begin() + cu[b], tok.begin() + cu[b + 1]);
    CAPTURE(b);
    CHECK(got[b] == reference(eb, tb));  // no bleed: each sequence alone
  }
}

// BLT's entropy patching of one sequence, as mode_case's reference.
inline auto blt_entropy_reference(ref::EntropyMode m, float threshold, float threshold_add, bool inc, int cap) {
  return [=](const std::vector<float>& eb, const std::vector<std::int32_t>&) {
    ref::BltEntropyOptions o;
    o.mode = m;
    o.threshold = threshold;
    o.threshold_add = threshold_add;
    o.include_next_token = inc;
    o.max_patch_length = cap;
    return ref::blt_entropy_patch_lengths(eb, o);
  };
}

TEST_CASE("patcher: every mode on a varlen batch matches the BLT-style reference") {
  // Sequences of length 1, 2, 3 and longer ones.
  const std::vector<std::int32_t> cu = {0, 1, 3, 6, 40, 97, 160};
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.0f, 3.0f);
  std::vector<float> e(static_cast<std::size_t>(cu.back()));
  for (auto& x : e) x = u(rng);
  std::vector<std::int32_t> tok(e.size());
  const std::string text = "Hello, world. Ça va? 42 ms\xe2\x80\x94ok";
  for (std::size_t i = 0; i < tok.size(); ++i) tok[i] = static_cast<unsigned char>(text[i % text.size()]) + 4;
  for (bool inc : {false, true}) {
    for (int cap : {0, 3}) {
      if (cap == 0 && scale_down() > 1) continue;  // thread mode (TSan): the capped runs take every code path
      auto entropy_ref = [&](ref::EntropyMode m, float t, float ta) { return blt_entropy_reference(m, t, ta, inc, cap); };
      mode_case(pt::EntropyGlobal{1.5f}, cu, e, tok, inc, cap, entropy_ref(ref::EntropyMode::global, 1.5f, 0));
      mode_case(pt::EntropyMonotonic{0.8f}, cu, e, tok, inc, cap, entropy_ref(ref::EntropyMode::monotonic, 0.8f, 0));
      mode_case(pt::EntropyCombined{1.2f, 0.4f}, cu, e, tok, inc, cap,
                entropy_ref(ref::EntropyMode::combined, 1.2f, 0.4f));
      for (int ps : {4, 2, 7}) {
        if (ps != 4 && scale_down() > 1) continue;  // thread mode: one k
        CAPTURE(ps);
        mode_case(pt::EntropyTopK{ps}, cu, e, tok, inc, cap, [&](const std::vector<float>& eb, const auto&) {
          ref::BltEntropyOptions o;
          o.threshold = std::nullopt;
          o.patch_size = ps;
          o.include_next_token = inc;
          o.max_patch_length = cap;
          return ref::blt_entropy_patch_lengths(eb, o);
        });
      }
      mode_case(pt::StaticPatches{4}, cu, e, tok, inc, cap, [&](const std::vector<float>& eb, const auto&) {
        return ref::blt_static_patch_lengths(static_cast<std::int64_t>(eb.size()), 4, inc, cap);
      });
      mode_case(pt::BytePatches{}, cu, e, tok, inc, cap, [&](const std::vector<float>& eb, const auto&) {
        return ref::split_large(ref::blt_byte_patch_lengths(static_cast<std::int64_t>(eb.size()), inc), cap);
      });
      mode_case(pt::SpacePatches{}, cu, e, tok, inc, cap,
                [&](const auto&, const std::vector<std::int32_t>& tb) { return ref::blt_space_patch_lengths(tb, inc, cap); });
    }
  }
}

TEST_CASE("patcher: the entropy kernel's row slots are a bijection, and spread BLT's rows over the banks") {
  for (int k : {1, 2, 4, 8}) {
    CAPTURE(k);
    std::vector<int> seen(32, 0);
    for (int w = 0; w < 8; ++w)
      for (int q = 0; q < 4; ++q) ++seen[static_cast<std::size_t>(pt::detail::entropy_slot(w, q, k))];
    CHECK(std::count(seen.begin(), seen.end(), 1) == 32);
  }
  using pt::detail::entropy_spread;
  CHECK(entropy_spread(260, 2).row_step == 4);  // bf16 rows 130 words apart: windows at banks 0, 8, 16, 24
  CHECK(entropy_spread(260, 2).rotation == 0);
  CHECK(entropy_spread(260, 4).row_step == 2);  // fp32 rows 260 words apart
  CHECK(entropy_spread(256, 2).row_step == 1);  // rows 128 words apart: no row step helps ...
  CHECK(entropy_spread(256, 2).rotation == 1);  // ... so the groups start a window apart
}

TEST_CASE_TEMPLATE("patcher: entropies from logits match the reference", T, float, __half, __nv_bfloat16) {
  const std::vector<std::int32_t> cu = {0, 30, 77};
  for (int V : {260, 37, 512}) {
    CAPTURE(V);
    std::vector<T> logits(static_cast<std::size_t>(cu.back()) * V);
    std::mt19937 rng(9);
    std::normal_distribution<float> nrm(0.0f, 3.0f);
    for (auto& x : logits) x = tokenless::from_float<T>(nrm(rng));
    // Non-finite logits give NaN as in PyTorch: a NaN, a +inf, a row of -inf,
    // and a single -inf (0 * log 0).
    const T inf = tokenless::from_float<T>(INFINITY);
    logits[3 * V + 5] = tokenless::from_float<T>(NAN);
    logits[10 * V] = inf;
    for (int v = 0; v < V; ++v) logits[20 * V + v] = tokenless::from_float<T>(-INFINITY);
    logits[21 * V + V / 2] = tokenless::from_float<T>(-INFINITY);
    // Shifted by one element, the logits lose 16-byte alignment: the staging falls back to scalar loads.
    std::vector<T> shifted(logits.size() + 1, tokenless::from_float<T>(NAN));
    std::copy(logits.begin(), logits.end(), shifted.begin() + 1);
    const Result r = run_patcher<pt::EntropyGlobal, T>(pt::EntropyGlobal{2.0f}, cu, nullptr, nullptr, true, 0, 256,
                                                       &logits, V);
    REQUIRE_OK(r.status);
    const Result r_shifted = run_patcher<pt::EntropyGlobal, T>(pt::EntropyGlobal{2.0f}, cu, nullptr, nullptr, true, 0,
                                                               256, &shifted, V, 1);
    REQUIRE_OK(r_shifted.status);
    REQUIRE(r_shifted.entropies.size() == r.entropies.size());
    CHECK(std::memcmp(r_shifted.entropies.data(), r.entropies.data(), r.entropies.size() * sizeof(float)) == 0);
    const auto truth = ref::entropies_from_logits<double>(logits.data(), cu.back(), V);
    const auto naive = ref::entropies_from_logits<float>(logits.data(), cu.back(), V);
    // exp/log in fp32 and a different summation order: within 4x the naive fp32 loop.
    check_accuracy(r.entropies, naive, truth, 4.0, tokenless::dtype_traits<float>::unit_roundoff);
    for (int row : {3, 10, 20, 21}) CHECK(std::isnan(r.entropies[row]));
    // The patches follow from the kernel's own entropies.
    const auto got = lengths_by_sequence(r, cu, true);
    for (std::size_t b = 0; b + 1 < cu.size(); ++b) {
      ref::BltEntropyOptions o;
      o.threshold = 2.0f;
      o.include_next_token = true;
      CHECK(got[b] == ref::blt_entropy_patch_lengths(
                          std::vector<float>(r.entropies.begin() + cu[b], r.entropies.begin() + cu[b + 1]), o));
    }
  }
}

// Top-k for each patch size, with and without include_next_token, against
// BLT's rule on each sequence.
inline void topk_cases(const std::vector<std::int32_t>& cu, const std::vector<float>& e, std::vector<int> sizes) {
  const std::vector<std::int32_t> tok(e.size(), 100);
  if (scale_down() > 1) sizes.resize(1);  // thread mode (TSan): one k takes the selection's every pass
  for (bool inc : {false, true}) {
    for (int ps : sizes) {
      CAPTURE(ps);
      mode_case(pt::EntropyTopK{ps}, cu, e, tok, inc, 0, [&](const std::vector<float>& eb, const auto&) {
        ref::BltEntropyOptions o;
        o.threshold = std::nullopt;
        o.patch_size = ps;
        o.include_next_token = inc;
        return ref::blt_entropy_patch_lengths(eb, o);
      });
    }
  }
}

TEST_CASE("patcher: top-k (threshold None) with ties, NaN, signed zeros and sequences spanning blocks") {
  // Entropies from a handful of values: most keys tie on entropy and are
  // ordered by position; NaN ranks above everything.
  const std::int64_t big = 9000 / tlt::scale_down();
  const std::vector<std::int32_t> cu = {0, 1, 3, 12, 13, static_cast<std::int32_t>(13 + big),
                                        static_cast<std::int32_t>(13 + big + 517)};
  std::mt19937 rng(11);
  const float values[] = {0.0f, -0.0f, 1.0f, 1.0f, 2.5f, NAN, INFINITY, 0.75f};
  std::vector<float> e(static_cast<std::size_t>(cu.back()));
  for (auto& x : e) x = values[rng() % 8];
  topk_cases(cu, e, {3, 1, 4});
}

TEST_CASE("patcher: sequences, patches and capped pieces that span many position tiles") {
  // The segment passes work on tiles of 4096 positions. Rule starts are rare
  // here (one entropy in 600 is high), so patches, and the pieces a cap cuts
  // from them, cross tile boundaries; sequences end next to tile edges (with
  // include_next_token every sequence shifts the later ones by one).
  const std::vector<std::int32_t> cu = {0, 4095, 4096, 4099, 8190, 13001};
  std::mt19937 rng(5);
  std::vector<float> e(static_cast<std::size_t>(cu.back()));
  for (auto& x : e) x = rng() % 600 == 0 ? 3.0f : 0.1f * static_cast<float>(rng() % 4);
  std::vector<std::int32_t> tok(e.size(), 100);
  // The small (TSan) runs keep two caps and the global rule: every tile pass
  // still crosses tiles, at a tenth of the cost.
  const bool small = tlt::scale_down() > 1;
  const std::vector<int> caps = small ? std::vector<int>{7, 4096} : std::vector<int>{0, 7, 1000, 4096, 5000};
  for (bool inc : {false, true}) {
    for (int cap : caps) {
      auto entropy_ref = [&](ref::EntropyMode m, float t) { return blt_entropy_reference(m, t, 0.0f, inc, cap); };
      mode_case(pt::EntropyGlobal{1.0f}, cu, e, tok, inc, cap, entropy_ref(ref::EntropyMode::global, 1.0f));
      if (small) continue;
      mode_case(pt::EntropyMonotonic{1.0f}, cu, e, tok, inc, cap, entropy_ref(ref::EntropyMode::monotonic, 1.0f));
      mode_case(pt::StaticPatches{3000}, cu, e, tok, inc, cap, [&](const std::vector<float>& eb, const auto&) {
        return ref::blt_static_patch_lengths(static_cast<std::int64_t>(eb.size()), 3000, inc, cap);
      });
    }
  }
}

TEST_CASE("patcher: the tile scan carries rule starts and patch counts across chunks of tiles") {
  // segment_scan_kernel alone, on synthetic tile summaries: 2500 tiles make
  // three chunks of 1024, which no batch small enough for the executor
  // reaches through Patcher::run.
  namespace det = pt::detail;
  const std::int64_t n_tiles = 2500, n_pos = n_tiles * det::kSegTile - 100;
  std::mt19937 rng(9);
  std::vector<det::SegmentTile> tiles(static_cast<std::size_t>(n_tiles));
  for (std::int64_t i = 0; i < n_tiles; ++i) {
    const std::int64_t lo = i * det::kSegTile, span = std::min<std::int64_t>(det::kSegTile, n_pos - lo);
    auto& t = tiles[static_cast<std::size_t>(i)];
    if (i > 0 && rng() % 3 == 0) {
      t = {0, -1, -1};  // no rule start: patches (and cap pieces) run through
    } else {
      const std::int64_t first = i == 0 ? 0 : lo + static_cast<std::int64_t>(rng() % static_cast<unsigned>(span));
      const std::int64_t last = first + static_cast<std::int64_t>(rng() % static_cast<unsigned>(lo + span - first));
      t = {static_cast<std::int32_t>(1 + rng() % 50), static_cast<std::int32_t>(first), static_cast<std::int32_t>(last)};
    }
  }
  for (int cap : {0, 5, 3000, 100000}) {
    CAPTURE(cap);
    // The host walk of the same arithmetic.
    std::vector<det::SegmentTile> want(tiles);
    std::int64_t c = -1, before = 0;
    for (std::int64_t i = 0; i < n_tiles; ++i) {
      const auto& t = tiles[static_cast<std::size_t>(i)];
      const std::int64_t lo = i * det::kSegTile, end = std::min(lo + det::kSegTile, n_pos);
      const std::int64_t extra = cap > 0 && c >= 0 ? pt::cap_starts_between(c, lo, t.first_rule >= 0 ? t.first_rule : end, cap) : 0;
      want[static_cast<std::size_t>(i)] = {static_cast<std::int32_t>(before), t.first_rule, static_cast<std::int32_t>(c)};
      before += t.count + extra;
      c = std::max<std::int64_t>(c, t.last_rule);
    }
    for (const std::int64_t capacity : {before, before - 1}) {
      DeviceBuffer<det::SegmentTile> d_tiles(tiles);
      DeviceBuffer<std::int32_t> d_total(1);
      DeviceBuffer<tokenless::DeviceStatus> d_status(1);
      d_status.fill_bytes(0xff);
      REQUIRE_OK(tokenless::launch<det::SegmentScanKernel>({d_tiles.get(), n_tiles, n_pos, cap, capacity, d_total.get(),
                                                            d_status.get()},
                                                           dim3(1), nullptr));
      const auto got = d_tiles.download();
      std::int64_t first_difference = -1;  // the tile, if any
      for (std::size_t i = 0; i < got.size() && first_difference < 0; ++i) {
        if (got[i].count != want[i].count || got[i].first_rule != want[i].first_rule ||
            got[i].last_rule != want[i].last_rule)
          first_difference = static_cast<std::int64_t>(i);
      }
      CHECK(first_difference == -1);
      CHECK(d_total.download()[0] == before);
      const tokenless::DeviceStatus st = d_status.download()[0];
      CHECK((st.first == tokenless::kDeviceOk) == (capacity >= before));
      if (capacity < before) CHECK(st.required == before);
    }
  }
}

TEST_CASE("patcher: bad input gets a clear Status and nothing is written") {
  const std::vector<std::int32_t> cu = {0, 10, 20};
  std::vector<float> e(20, 5.0f);  // every position starts a patch: 20 patches
  auto untouched = [](const Result& r) {
    for (auto f : r.flags) CHECK(f == 0xff);
    for (const auto* v : {&r.ids, &r.offsets, &r.starts, &r.lengths})
      for (auto x : *v) CHECK(x == -1);
  };
  // Too small a capacity: reported with the number needed; nothing written,
  // with or without a cap (whose starts are found after the count).
  for (int cap : {0, 3}) {
    CAPTURE(cap);
    Result r = run_patcher(pt::EntropyGlobal{1.0f}, cu, &e, nullptr, false, cap, 8);
    INFO(r.status.message());
    CHECK(r.status.code() == tokenless::StatusCode::capacity_too_small);
    CHECK(std::string(r.status.message()).find("20 patches") != std::string::npos);
    CHECK(std::string(r.status.message()).find("nothing was written") != std::string::npos);
    untouched(r);
  }
  // From logits, the entropies are written (the count needs them) and reusable
  // as entropies_in; nothing else is.
  {
    std::vector<float> logits(20 * 7, 0.0f);  // uniform rows: H = log 7 > 1
    Result r = run_patcher<pt::EntropyGlobal, float>(pt::EntropyGlobal{1.0f}, cu, nullptr, nullptr, false, 0, 8,
                                                     &logits, 7);
    INFO(r.status.message());
    CHECK(r.status.code() == tokenless::StatusCode::capacity_too_small);
    CHECK(std::string(r.status.message()).find("only the entropies were written") != std::string::npos);
    untouched(r);
    for (float h : r.entropies) CHECK(h == doctest::Approx(std::log(7.0f)).epsilon(1e-5));
  }
  // Offsets that are not a prefix sum: reported with the entry and its
  // predecessor; nothing written.
  Result r = run_patcher(pt::EntropyGlobal{1.0f}, {0, 10, 5, 20}, &e, nullptr, false, 0, 64);
  INFO(r.status.message());
  CHECK(r.status.code() == tokenless::StatusCode::invalid_argument);
  CHECK(std::string(r.status.message()).find("cu[2] = 5 after cu[1] = 10") != std::string::npos);
  CHECK(std::string(r.status.message()).find("patcher::Patcher") != std::string::npos);
  untouched(r);
}

TEST_CASE("patcher: empty sequences own no position and no patch (one with include_next_token)") {
  std::vector<float> e(20);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(0.0f, 3.0f);
  for (auto& x : e) x = u(rng);
  const std::vector<std::int32_t> dense = {0, 10, 20}, sparse = {0, 0, 10, 10, 10, 20, 20};
  for (bool inc : {false, true}) {
    CAPTURE(inc);
    const Result want = run_patcher(pt::EntropyGlobal{1.0f}, dense, &e, nullptr, inc, 3, 64);
    const Result got = run_patcher(pt::EntropyGlobal{1.0f}, sparse, &e, nullptr, inc, 3, 64);
    REQUIRE_OK(got.status);
    const auto w = lengths_by_sequence(want, dense, inc);
    const auto g = lengths_by_sequence(got, sparse, inc);
    REQUIRE(g.size() == 6);
    const Lengths empty = inc ? Lengths{1} : Lengths{};
    for (int b : {0, 2, 3, 5}) CHECK(g[static_cast<std::size_t>(b)] == empty);
    CHECK(g[1] == w[0]);
    CHECK(g[4] == w[1]);
    if (!inc) CHECK(got.ids == want.ids);
  }

}

TEST_CASE("patcher: host-side checks refuse bad arguments and write nothing") {
  using Op = pt::Patcher<pt::EntropyGlobal, float>;
  using Code = tokenless::StatusCode;
  DeviceBuffer<float> logits(std::vector<float>(4 * 7, 0.0f)), ent(4);
  DeviceBuffer<std::int32_t> cu(std::vector<std::int32_t>{0, 4}), ids(4), off(2), starts(4), lens(4);
  DeviceBuffer<std::uint8_t> flags(4);
  Op::Arguments a;
  a.rule.threshold = 1.0f;
  a.logits = logits.get();
  a.vocab = 7;
  a.entropies = ent.get();
  a.batch = {cu.get(), 1, 4};
  a.patches = {flags.get(), ids.get(), off.get(), starts.get(), lens.get(), 4};
  Testbed<Op> tb;
  tb.watch(flags).watch(ids).watch(off).watch(starts).watch(lens);  // an overflow writes the entropies
  tb.reject(a, {{"no vocab", [](auto& b) { b.vocab = 0; }, Code::invalid_argument, "'vocab'"},
                {"vocab 513", [](auto& b) { b.vocab = 513; }, Code::unsupported, "0 < V <= 512"},
                {"NaN threshold", [](auto& b) { b.rule.threshold = std::nanf(""); }, Code::invalid_argument, "'rule.threshold'"},
                {"no capacity", [](auto& b) { b.patches.capacity = 0; }, Code::empty, "'patches.capacity'"},
                {"capacity 3", [](auto& b) { b.patches.capacity = 3; }, Code::capacity_too_small, "4 patches"},
                {"empty batch", [](auto& b) { b.batch.total = 0; }, Code::empty, "total 0"},
                {"no sequences", [](auto& b) { b.batch.num_seqs = 0; }, Code::empty, "num_seqs 0"},
                {"negative cap", [](auto& b) { b.max_patch_length = -1; }, Code::invalid_argument, "'max_patch_length'"},
                {"no flags", [](auto& b) { b.patches.flags = nullptr; }, Code::null_pointer, "'patches.flags'"},
                {"no entropies for logits", [](auto& b) { b.entropies = nullptr; }, Code::null_pointer, "'entropies'"},
                {"no input", [](auto& b) { b.logits = nullptr; }, Code::null_pointer, "logits or entropies_in"}});
  pt::Patcher<pt::StaticPatches>::Arguments st;
  st.rule.patch_size = 0;
  CHECK(pt::Patcher<pt::StaticPatches>::can_implement(st).code() == Code::empty);
  pt::Patcher<pt::SpacePatches>::Arguments sp;
  sp.batch = {cu.get(), 1, 4};
  CHECK(std::string(pt::Patcher<pt::SpacePatches>::can_implement(sp).message()).find("'tokens'") != std::string::npos);
}

TEST_CASE("n-gram entropy source: matches the host model, with leave-one-out on its own text") {
  const std::string s =
      "the cat sat on the mat. the cat ate the rat. a cat is a cat, and the mat is a mat; 0xDEADBEEF 3.14159 \xe2\x82\xac";
  const std::vector<std::uint8_t> text(s.begin(), s.end());
  const std::int64_t n = static_cast<std::int64_t>(text.size());
  DeviceBuffer<std::uint8_t> d_text(text);
  DeviceBuffer<float> d_h(n);
  for (int order : {1, 2, 4}) {
    tokenless::entropy_model::NGramEntropy::Arguments a;
    a.train = d_text.get();
    a.n_train = n;
    a.text = d_text.get();
    a.n = n;
    a.config.order = order;
    a.config.buckets = 4096;
    a.entropies = d_h.get();
    Testbed<tokenless::entropy_model::NGramEntropy>().run_ok(a);
    const auto got = d_h.download();
    ref::NGramReferenceConfig c;
    c.order = order;
    c.buckets = 4096;
    const auto want = ref::ngram_entropies(text, text, c, true);
    for (std::int64_t i = 0; i < n; ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-4));
  }
  // A different training text of the same length is scored with every count:
  // leave-one-out is for the text's own occurrences only.
  {
    std::string other(s.rbegin(), s.rend());
    const std::vector<std::uint8_t> train(other.begin(), other.end());
    REQUIRE(train.size() == text.size());
    DeviceBuffer<std::uint8_t> d_train(train);
    tokenless::entropy_model::NGramEntropy::Arguments a;
    a.train = d_train.get();
    a.n_train = n;
    a.text = d_text.get();
    a.n = n;
    a.config.buckets = 4096;
    a.entropies = d_h.get();
    Testbed<tokenless::entropy_model::NGramEntropy>().run_ok(a);
    const auto got = d_h.download();
    ref::NGramReferenceConfig c;
    c.buckets = 4096;
    const auto want = ref::ngram_entropies(train, text, c, false);
    for (std::int64_t i = 0; i < n; ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-4));
  }
  tokenless::entropy_model::NGramEntropy::Arguments bad;
  bad.train = bad.text = d_text.get();
  bad.n_train = bad.n = n;
  bad.entropies = d_h.get();
  bad.config.order = 0;
  CHECK(std::string(tokenless::entropy_model::NGramEntropy::can_implement(bad).message()).find("'config.order'") != std::string::npos);
}

TEST_CASE("calibration: the threshold gives the target mean patch size, on the device") {
  const std::vector<std::int32_t> cu = {0, 500, 1200, 2000};
  std::vector<float> e(2000);
  std::mt19937 rng(5);
  std::gamma_distribution<float> g(2.0f, 0.6f);
  for (auto& x : e) x = g(rng);
  DeviceBuffer<float> d_e(e), d_theta(1);
  DeviceBuffer<std::int32_t> d_cu(cu);
  for (float target : {3.0f, 4.5f, 8.0f}) {
    CAPTURE(target);
    pt::Calibrate::Arguments a;
    a.entropies = d_e.get();
    a.batch = {d_cu.get(), 3, 2000};
    a.target_patch_size = target;
    a.threshold = d_theta.get();
    Testbed<pt::Calibrate>().run_ok(a);
    const float theta = d_theta.download()[0];
    auto patches = [&](float t) {
      std::int64_t total = 0;
      for (std::size_t b = 0; b + 1 < cu.size(); ++b) {
        ref::BltEntropyOptions o;
        o.threshold = t;
        total += static_cast<std::int64_t>(
            ref::blt_entropy_patch_lengths(std::vector<float>(e.begin() + cu[b], e.begin() + cu[b + 1]), o).size());
      }
      return total;
    };
    const double mean = 2000.0 / static_cast<double>(patches(theta));
    CHECK(mean >= target - 1e-3);       // at most the patches wanted
    CHECK(mean < target * 1.02 + 0.05); // and as many as that allows
    CHECK(theta == ref::calibrated_threshold(e, cu, false, target));  // exactly the selected entropy
  }
}

TEST_CASE("calibration: exact on ties, NaN, short sequences, include_next_token and every-patch targets") {
  // Quantised entropies (heavy ties), NaN, a negative zero, sequences of
  // length 1 and 2 (no rule entropy), over several blocks of the count pass.
  const std::vector<std::int32_t> cu = {0, 1, 3, 700, 701, 1500, 3000};
  std::vector<float> e(3000);
  std::mt19937 rng(8);
  for (auto& x : e) x = static_cast<float>(rng() % 64) / 16.0f;
  e[10] = NAN;
  e[900] = NAN;
  e[20] = -0.0f;
  DeviceBuffer<float> d_e(e), d_theta(1);
  DeviceBuffer<std::int32_t> d_cu(cu);
  // Thread mode (TSan): two targets take the count pass's every branch.
  const std::vector<float> targets = scale_down() > 1 ? std::vector<float>{1.5f, 5000.0f}
                                                      : std::vector<float>{1.0f, 1.5f, 3.0f, 4.5f, 50.0f, 5000.0f};
  for (bool inc : {false, true}) {
    for (float target : targets) {
      CAPTURE(inc);
      CAPTURE(target);
      pt::Calibrate::Arguments a;
      a.entropies = d_e.get();
      a.batch = {d_cu.get(), 6, 3000};
      a.include_next_token = inc;
      a.target_patch_size = target;
      a.threshold = d_theta.get();
      Testbed<pt::Calibrate>().run_ok(a);
      const float theta = d_theta.download()[0];
      CHECK(theta == ref::calibrated_threshold(e, cu, inc, target));
    }
  }
  // Only sequences of one and two bytes: no rule entropy, θ = 0.
  const std::vector<std::int32_t> tiny = {0, 1, 3};
  DeviceBuffer<std::int32_t> d_tiny(tiny);
  pt::Calibrate::Arguments a;
  a.entropies = d_e.get();
  a.batch = {d_tiny.get(), 2, 3};
  a.threshold = d_theta.get();
  Testbed<pt::Calibrate>().run_ok(a);
  CHECK(d_theta.download()[0] == 0.0f);
  CHECK(ref::calibrated_threshold(e, tiny, false, 4.5f) == 0.0f);
}

// Streams a batch of B sequences of T bytes position by position and
// compares with the offline patcher. Every stream gets its own bytes and
// entropies, so a step that read another stream's inputs would differ.
template <class Rule>
void streaming_case(const Rule& rule, int cap) {
  CAPTURE(cap);
  const std::int64_t B = 37, T = 40;
  std::mt19937 rng(21);
  std::uniform_real_distribution<float> u(0.0f, 3.0f);
  const std::string text = "Hello, world. Ca va? 42 ms - ok; a_b (c) d.e";
  std::vector<float> e(static_cast<std::size_t>(B * T));
  std::vector<std::int32_t> tok(e.size());
  for (auto& x : e) x = u(rng);
  for (std::size_t i = 0; i < tok.size(); ++i) tok[i] = static_cast<unsigned char>(text[(i * 7 + i / T) % text.size()]) + 4;
  std::vector<std::int32_t> cu(B + 1);
  for (std::int64_t b = 0; b <= B; ++b) cu[b] = static_cast<std::int32_t>(b * T);
  const Result offline = run_patcher(rule, cu, &e, &tok, true, cap, B * (T + 1));
  REQUIRE_OK(offline.status);
  DeviceBuffer<pt::StreamState> states(B);
  states.fill_bytes(0);
  DeviceBuffer<float> prev(B);
  DeviceBuffer<std::int32_t> prev_tok(B);
  DeviceBuffer<std::uint8_t> starts(B);
  using Op = pt::StreamStep<Rule>;
  typename Op::Arguments a;
  a.rule = rule;
  a.states = states.get();
  a.prev_entropies = prev.get();
  a.prev_tokens = prev_tok.get();
  a.streams = B;
  a.max_patch_length = cap;
  a.starts = starts.get();
  for (std::int64_t p = 0; p <= T; ++p) {  // include_next_token: T + 1 positions
    std::vector<float> h(static_cast<std::size_t>(B), 0.0f);
    std::vector<std::int32_t> t(static_cast<std::size_t>(B), 0);
    if (p > 0) {
      for (std::int64_t b = 0; b < B; ++b) {
        h[b] = e[b * T + p - 1];
        t[b] = tok[b * T + p - 1];
      }
    }
    prev.upload(h);
    prev_tok.upload(t);
    Testbed<Op>().run_ok(a);
    const auto got = starts.download();
    for (std::int64_t b = 0; b < B; ++b) {
      CAPTURE(b);
      CAPTURE(p);
      CHECK(got[b] == offline.flags[b * (T + 1) + p]);
    }
  }
}

TEST_CASE("streaming patcher on the device: a batch of streams gives the offline patcher's starts") {
  for (int cap : {0, 5}) {
    streaming_case(pt::EntropyMonotonic{0.6f}, cap);
    streaming_case(pt::SpacePatches{}, cap);  // a token rule: each stream's own previous bytes
  }
  // The step checks its rule as the patcher does.
  pt::StreamStep<pt::EntropyCombined>::Arguments bad;
  bad.rule.threshold_add = std::nanf("");
  const tokenless::Status st = pt::StreamStep<pt::EntropyCombined>::can_implement(bad);
  CHECK(st.code() == tokenless::StatusCode::invalid_argument);
  CHECK(std::string(st.message()).find("'rule.threshold_add'") != std::string::npos);
}

TEST_CASE("patcher: top-k with every entropy equal picks the earliest positions") {
  // All keys tie on entropy, so the order is decided by position alone.
  const std::vector<std::int32_t> cu = {0, 37, 100};
  topk_cases(cu, std::vector<float>(100, 1.25f), {2, 4});
}

TEST_CASE("bad input: calibration, the n-gram model and the streaming step refuse it and write nothing") {
  using Code = tokenless::StatusCode;
  DeviceBuffer<float> e(std::vector<float>(16, 1.0f)), theta(1), h(16);
  DeviceBuffer<std::int32_t> cu(std::vector<std::int32_t>{0, 6, 16}), bad_cu(std::vector<std::int32_t>{0, 9, 6, 16});
  {
    pt::Calibrate::Arguments a;
    a.entropies = e.get();
    a.batch = {cu.get(), 2, 16};
    a.threshold = theta.get();
    Testbed<pt::Calibrate> tb;
    tb.watch(theta, 0x7f);
    tb.reject(a, {{"decreasing cu", [&](auto& b) { b.batch = {bad_cu.get(), 3, 16}; }, Code::invalid_argument,
                   "patcher::Calibrate: argument 'batch.cu_seqlens'"},
                  {"target below 1", [](auto& b) { b.target_patch_size = 0.5f; }, Code::invalid_argument, "'target_patch_size'"},
                  {"NaN target", [](auto& b) { b.target_patch_size = NAN; }, Code::invalid_argument, "'target_patch_size'"},
                  {"no entropies", [](auto& b) { b.entropies = nullptr; }, Code::null_pointer, "'entropies'"},
                  {"no threshold", [](auto& b) { b.threshold = nullptr; }, Code::null_pointer, "'threshold'"},
                  {"empty batch", [](auto& b) { b.batch.num_seqs = 0; }, Code::empty, "num_seqs 0"}});
  }
  {
    namespace em = tokenless::entropy_model;
    DeviceBuffer<std::uint8_t> text(std::vector<std::uint8_t>(16, 'a'));
    em::NGramEntropy::Arguments a;
    a.train = a.text = text.get();
    a.n_train = a.n = 16;
    a.entropies = h.get();
    Testbed<em::NGramEntropy> tb;
    tb.watch(h, 0x7f);
    tb.reject(a, {{"order 0", [](auto& b) { b.config.order = 0; }, Code::invalid_argument, "'config.order'"},
                  {"order 9", [](auto& b) { b.config.order = 9; }, Code::invalid_argument, "'config.order'"},
                  {"no buckets", [](auto& b) { b.config.buckets = 0; }, Code::empty, "'config.buckets'"},
                  {"NaN alpha", [](auto& b) { b.config.alpha = NAN; }, Code::invalid_argument, "'config.alpha/beta'"},
                  {"no text", [](auto& b) { b.text = nullptr; }, Code::null_pointer, "'text'"},
                  {"empty training text", [](auto& b) { b.n_train = 0; }, Code::empty, "'n_train'"}});
  }
  {
    DeviceBuffer<pt::StreamState> states(4);
    DeviceBuffer<std::uint8_t> starts(4);
    pt::StreamStep<pt::EntropyCombined>::Arguments a;
    a.states = states.get();
    a.prev_entropies = e.get();
    a.streams = 4;
    a.starts = starts.get();
    Testbed<pt::StreamStep<pt::EntropyCombined>> tb;
    tb.watch(states, 0).watch(starts, 0x7f);
    tb.reject(a, {{"NaN threshold", [](auto& b) { b.rule.threshold = NAN; }, Code::invalid_argument, "'rule.threshold'"},
                  {"NaN threshold_add", [](auto& b) { b.rule.threshold_add = NAN; }, Code::invalid_argument,
                   "'rule.threshold_add'"},
                  {"no entropies", [](auto& b) { b.prev_entropies = nullptr; }, Code::null_pointer, "'prev_entropies'"},
                  {"no streams", [](auto& b) { b.streams = 0; }, Code::empty, "'streams'"},
                  {"negative cap", [](auto& b) { b.max_patch_length = -1; }, Code::invalid_argument, "'max_patch_length'"}});
  }
}

}  // namespace tlt::patcher_tests
