// Host tier: the patcher's rules. BLT's published figure as a golden test; the
// per-position rules (patcher/policy.hpp) against the BLT-style reference
// (reference/patcher.hpp) in every mode; cases worked out by hand from BLT's
// rules.
#include <doctest/doctest.h>
#include <tokenless/tokenless.hpp>

#include "../support/blt_entropy_figure.hpp"

#include <random>
#include <vector>

namespace pt = tokenless::patcher;
namespace ref = tokenless::reference;
using Lengths = std::vector<std::int64_t>;

namespace {

// Lengths from the per-position rule, with an optional max-length cap.
template <class P>
Lengths rule_lengths(const P& rule, const std::vector<float>& e, const std::vector<std::int32_t>& tok, bool inc,
                     int max_len = 0) {
  const std::int64_t n = static_cast<std::int64_t>(std::max(e.size(), tok.size()));
  const pt::PositionView v{e.empty() ? nullptr : e.data(), tok.empty() ? nullptr : tok.data(), n};
  std::vector<std::int64_t> starts;
  std::int64_t last = 0;
  for (std::int64_t p = 0; p < n + (inc ? 1 : 0); ++p) {
    bool s = pt::is_patch_start(rule, v, p);
    if (s) last = p;
    else if (pt::max_length_start(p, last, max_len)) s = true;
    if (s) starts.push_back(p);
  }
  Lengths l;
  for (std::size_t k = 0; k < starts.size(); ++k)
    l.push_back((k + 1 < starts.size() ? starts[k + 1] : n + (inc ? 1 : 0)) - starts[k]);
  return l;
}

}  // namespace

TEST_CASE("golden: BLT's entropy figure, global threshold 1.335442066192627") {
  using namespace tlt::blt_figure;
  const std::vector<float> e(kEntropies, kEntropies + kLength);
  ref::BltEntropyOptions o;
  o.threshold = kThreshold;
  const Lengths got = ref::blt_entropy_patch_lengths(e, o);
  Lengths want;
  for (int i = 0; i < kLength; ++i) {
    if (kStart[i]) want.push_back(0);
    ++want.back();
  }
  CHECK(got == want);
  CHECK(want.size() == 23);
  // Patch index of every position, as the figure gives it.
  for (std::size_t i = 0, k = 0; k < got.size(); ++k)
    for (std::int64_t j = 0; j < got[k]; ++j, ++i) CHECK(kPatch[i] == static_cast<std::int32_t>(k));
  CHECK(rule_lengths(pt::EntropyGlobal{kThreshold}, e, {}, false) == want);
}

TEST_CASE("BLT rules by hand: first two positions, include_next_token, sequences of length 1 and 2") {
  ref::BltEntropyOptions o;
  o.threshold = 1.0f;
  // H[i] predicts byte i + 1; H[1] = 5 > 1 starts a patch at 2, H[3] = 2 at 4.
  const std::vector<float> e = {9, 5, 0, 2, 0};
  CHECK(ref::blt_entropy_patch_lengths(e, o) == Lengths{1, 1, 2, 1});
  o.include_next_token = true;  // H[4] = 0 adds nothing; the next token joins the last patch
  CHECK(ref::blt_entropy_patch_lengths(e, o) == Lengths{1, 1, 2, 2});
  o.include_next_token = false;
  CHECK(ref::blt_entropy_patch_lengths({7}, o) == Lengths{1});
  CHECK(ref::blt_entropy_patch_lengths({7, 7}, o) == Lengths{1, 1});
  o.include_next_token = true;
  CHECK(ref::blt_entropy_patch_lengths({7}, o) == Lengths{1, 1});
  CHECK(ref::blt_entropy_patch_lengths({7, 7}, o) == Lengths{1, 1, 1});  // H[1] > 1 starts the next token's patch
  CHECK(ref::blt_entropy_patch_lengths({7, 0}, o) == Lengths{1, 2});
}

TEST_CASE("BLT rules by hand: monotonic and the combined-mode quirk") {
  ref::BltEntropyOptions o;
  o.threshold = 1.0f;
  o.mode = ref::EntropyMode::monotonic;
  // Differences of H[1:] = {0, 3, 0.5, 4}: 3 > 1 at H[2] and 3.5 > 1 at H[4]; position 2 always starts.
  const std::vector<float> e = {0, 0, 3, 3.5f, 7.5f, 0};
  CHECK(ref::blt_entropy_patch_lengths(e, o) == Lengths{1, 1, 1, 2, 1});
  o.mode = ref::EntropyMode::combined;
  o.threshold = 2.0f;      // H[p - 1] > 2
  o.threshold_add = 1.0f;  // and a rise of more than 1
  // p = 2 always, p = 3 never (although H[2] = 3 rose by 3), p = 5: H[4] = 7.5 rose by 4.
  CHECK(ref::blt_entropy_patch_lengths(e, o) == Lengths{1, 1, 3, 1});
  for (auto rule_mode : {0, 1}) {
    for (std::uint64_t seed = 0; seed < 50; ++seed) {
      std::mt19937 rng(static_cast<unsigned>(seed));
      std::uniform_real_distribution<float> u(0.0f, 3.0f);
      std::vector<float> r(1 + rng() % 40);
      for (auto& x : r) x = u(rng);
      for (bool inc : {false, true}) {
        ref::BltEntropyOptions q;
        q.include_next_token = inc;
        q.threshold = 1.2f;
        q.threshold_add = 0.3f;
        q.mode = rule_mode ? ref::EntropyMode::combined : ref::EntropyMode::monotonic;
        const Lengths want = ref::blt_entropy_patch_lengths(r, q);
        const Lengths got = rule_mode ? rule_lengths(pt::EntropyCombined{1.2f, 0.3f}, r, {}, inc)
                                      : rule_lengths(pt::EntropyMonotonic{1.2f}, r, {}, inc);
        CHECK(got == want);
      }
    }
  }
}

TEST_CASE("per-position rules equal BLT's array algorithms, with and without a max-length cap") {
  for (std::uint64_t seed = 0; seed < 100; ++seed) {
    std::mt19937 rng(static_cast<unsigned>(seed));
    std::uniform_real_distribution<float> u(0.0f, 3.0f);
    const std::int64_t n = 1 + rng() % 64;
    std::vector<float> e(static_cast<std::size_t>(n));
    for (auto& x : e) x = u(rng);
    std::vector<std::int32_t> tok(static_cast<std::size_t>(n));
    const char alphabet[] = "ab cd,\xc3\xa9\xe2\x82\xac" "9Z.";
    for (auto& t : tok) t = static_cast<unsigned char>(alphabet[rng() % (sizeof alphabet - 1)]) + 4;
    if (rng() % 4 == 0) tok[rng() % n] = 1;  // a BOS inside
    for (bool inc : {false, true}) {
      for (int cap : {0, 3}) {
        CAPTURE(seed);
        CAPTURE(inc);
        CAPTURE(cap);
        ref::BltEntropyOptions o;
        o.threshold = 1.5f;
        o.include_next_token = inc;
        o.max_patch_length = cap;
        CHECK(rule_lengths(pt::EntropyGlobal{1.5f}, e, {}, inc, cap) == ref::blt_entropy_patch_lengths(e, o));
        CHECK(rule_lengths(pt::StaticPatches{5}, {}, tok, inc, cap) == ref::blt_static_patch_lengths(n, 5, inc, cap));
        CHECK(rule_lengths(pt::BytePatches{}, {}, tok, inc, cap) == ref::blt_byte_patch_lengths(n, inc));
        CHECK(rule_lengths(pt::SpacePatches{}, {}, tok, inc, cap) == ref::blt_space_patch_lengths(tok, inc, cap));
      }
    }
  }
}

TEST_CASE("space patching on UTF-8 text, as BLT does it") {
  const std::string text = "caf\xc3\xa9 ok";  // "café ok"
  std::vector<std::int32_t> tok;
  for (unsigned char c : text) tok.push_back(c + 4);
  // BLT ends a patch after a UTF-8 lead byte (0xC3) but never after a
  // continuation byte (0xA9), so the space right after it ends the next one:
  // 'c' | 'a' 'f' 0xC3 | 0xA9 ' ' | 'o' 'k'  (position 1 always starts a patch).
  CHECK(ref::blt_space_patch_lengths(tok, false) == Lengths{1, 3, 2, 2});
  CHECK(pt::SpacePatches::separator(0xC3 + 4));
  CHECK_FALSE(pt::SpacePatches::separator(0xA9 + 4));
  CHECK(pt::SpacePatches::separator(1));  // BOS
}

TEST_CASE("max_patch_length splits long patches into pieces and a remainder") {
  CHECK(ref::split_large({7, 2, 6}, 3) == Lengths{3, 3, 1, 2, 3, 3});
  CHECK(ref::blt_static_patch_lengths(10, 4, false) == Lengths{4, 4, 2});
  CHECK(ref::blt_static_patch_lengths(10, 4, true) == Lengths{4, 4, 3});
}

TEST_CASE("the cap in closed form equals walking the positions one by one") {
  // cap_starts_between and last_start_at let the tile passes skip the walk
  // from a rule start many tiles back.
  for (int M = 1; M <= 9; ++M) {
    for (std::int64_t c = 0; c < 12; ++c) {
      std::int64_t last = c, count = 0;
      for (std::int64_t pos = c + 1; pos < 60; ++pos) {
        const bool start = pt::max_length_start(pos, c, M);
        if (start) last = pos;
        CHECK(pt::last_start_at(c, pos, M) == last);
        for (std::int64_t lo = c + 1; lo <= pos + 1; ++lo) {
          std::int64_t want = 0;
          for (std::int64_t q = lo; q <= pos; ++q) want += pt::max_length_start(q, c, M);
          CHECK(pt::cap_starts_between(c, lo, pos + 1, M) == want);
        }
        count += start;
      }
      CHECK(pt::cap_starts_between(c, c + 1, 60, M) == count);
    }
  }
  CHECK(pt::last_start_at(-1, 7, 3) == -1);  // no rule start yet
  CHECK(pt::last_start_at(5, 9, 0) == 5);    // no cap
}

TEST_CASE("entropy of logits: uniform, one-hot, NaN") {
  std::vector<float> logits(2 * 260, 0.0f);
  logits[260 + 7] = 1000.0f;
  auto h = ref::entropies_from_logits<double>(logits.data(), 2, 260);
  CHECK(h[0] == doctest::Approx(std::log(260.0)));
  CHECK(h[1] == doctest::Approx(0.0));
  logits[3] = NAN;
  CHECK(std::isnan(ref::entropies_from_logits<double>(logits.data(), 1, 260)[0]));
}

TEST_CASE("streaming equals offline, for every rule, with and without a cap") {
  for (std::uint64_t seed = 0; seed < 60; ++seed) {
    std::mt19937 rng(static_cast<unsigned>(seed));
    std::uniform_real_distribution<float> u(0.0f, 3.0f);
    const std::int64_t n = 1 + rng() % 50;
    std::vector<float> e(static_cast<std::size_t>(n));
    for (auto& x : e) x = u(rng);
    std::vector<std::int32_t> tok(static_cast<std::size_t>(n));
    const char alphabet[] = "ab cd,.9Z\xc3\xa9";
    for (auto& t : tok) t = static_cast<unsigned char>(alphabet[rng() % (sizeof alphabet - 1)]) + 4;
    for (bool inc : {false, true}) {
      for (int cap : {0, 4}) {
        auto check_rule = [&](const auto& rule) {
          pt::StreamState st;
          std::vector<std::int64_t> starts;
          for (std::int64_t p = 0; p < n + (inc ? 1 : 0); ++p) {
            const bool s = pt::stream_push(rule, st, p > 0 ? e[p - 1] : 0.0f, p > 0 ? tok[p - 1] : 0, cap);
            if (s) starts.push_back(p);
          }
          Lengths l;
          for (std::size_t k = 0; k < starts.size(); ++k)
            l.push_back((k + 1 < starts.size() ? starts[k + 1] : n + (inc ? 1 : 0)) - starts[k]);
          CHECK(l == rule_lengths(rule, e, tok, inc, cap));
        };
        check_rule(pt::EntropyGlobal{1.5f});
        check_rule(pt::EntropyMonotonic{0.7f});
        check_rule(pt::EntropyCombined{1.2f, 0.3f});
        check_rule(pt::StaticPatches{3});
        check_rule(pt::BytePatches{});
        check_rule(pt::SpacePatches{});
      }
    }
  }
}

TEST_CASE("top-k keys: a total order, entropy first (NaN on top, -0 = +0), then the earlier position") {
  const float ascending[] = {-INFINITY, -1e30f, -1.0f, -1e-40f, 0.0f, 1e-40f, 1.0f, 1.335442066192627f, 1e30f,
                             INFINITY, NAN};
  for (std::size_t i = 0; i + 1 < std::size(ascending); ++i) {
    CAPTURE(i);
    CHECK(pt::topk_key(ascending[i], 5) < pt::topk_key(ascending[i + 1], 5));
    CHECK(pt::topk_key(ascending[i], 0) < pt::topk_key(ascending[i + 1], 1000000));  // entropy decides first
  }
  CHECK(pt::topk_key(-0.0f, 3) == pt::topk_key(0.0f, 3));
  CHECK(pt::topk_key(-NAN, 3) == pt::topk_key(NAN, 3));
  CHECK(pt::topk_key(2.0f, 3) > pt::topk_key(2.0f, 4));  // ties: the earlier candidate ranks higher
  CHECK(pt::topk_key(NAN, 0) < pt::kSelectNone);
  // k = n / patch_size - 2, clamped to the n - 1 candidates.
  CHECK(pt::EntropyTopK{4}.k(7) == 0);
  CHECK(pt::EntropyTopK{4}.k(16) == 2);
  CHECK(pt::EntropyTopK{1}.k(5) == 3);
  CHECK(pt::EntropyTopK{1}.k(1) == 0);
}

TEST_CASE("top-k by hand: BLT's threshold=None picks the k largest of H[1:], starts at index + 2") {
  // n = 12, patch_size 4: k = 1. The largest of H[1:] is H[6] = 3.0: start 7.
  const std::vector<float> e = {9.0f, 0.1f, 0.2f, 0.3f, 2.0f, 0.4f, 3.0f, 0.5f, 2.0f, 0.6f, 0.7f, 0.8f};
  ref::BltEntropyOptions o;
  o.threshold = std::nullopt;
  o.patch_size = 4;
  CHECK(ref::blt_entropy_patch_lengths(e, o) == Lengths{1, 6, 5});
  // patch_size 2: k = 4: H[6] = 3.0, then the tie H[4] = H[8] = 2.0 (both), then H[11] = 0.8.
  o.patch_size = 2;
  CHECK(ref::blt_entropy_patch_lengths(e, o) == Lengths{1, 4, 2, 2, 3});
}
