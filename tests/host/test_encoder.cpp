// Host tier: the BLT-exact bucket function against values worked out by hand
// (Python integers: the exact polynomial, reduced mod 2^64 into int64, then
// floor-modulo V), including windows whose hash wraps negative.
#include <doctest/doctest.h>
#include <tokenless/tokenless.hpp>

#include <cstdint>
#include <vector>

using namespace tokenless::encoder;

TEST_CASE("BLT primes, in BLT's order") {
  CHECK(blt_prime(0) == 1000000007ull);
  CHECK(blt_prime(1) == 5915587277ull);
  CHECK(blt_prime(6) == 9576890767ull);
  CHECK(blt_prime(10) == 3367900313ull);
}

TEST_CASE("window hash: 64-bit wraparound and floor modulo as PyTorch computes them") {
  struct Case {
    std::vector<std::int32_t> window;  // oldest first
    int f;
    std::int64_t V, hash, bucket;
  };
  const Case cases[] = {
      {{0, 0, 76}, 0, 30000, 2213024769161797260LL, 7260},             // "H" at a sequence start
      {{105, 108, 112}, 0, 30000, 1319537233742696653LL, 26653},
      {{259, 259, 259, 259, 259, 259, 259, 259}, 1, 500002, 4728282309159328520LL, 244098},
      {{72, 101, 108, 108, 111, 32, 119, 111}, 2, 30000, -3101766620475532870LL, 7130},  // wraps negative
      {{1, 76, 105}, 0, 30000, -5680462896257304018LL, 5982},                           // wraps negative
      {{259, 259, 259}, 6, 500002, -4745642827577065645LL, 314683},
  };
  for (const Case& c : cases) {
    const std::int64_t h = blt_window_hash(c.window.data(), static_cast<int>(c.window.size()), c.f);
    CHECK(h == c.hash);
    CHECK(blt_bucket(h, c.V) == c.bucket);
    // C's % would give a negative bucket for the wrapped ones.
    if (h < 0) CHECK(h % c.V < 0);
  }
}

TEST_CASE("n-gram buckets: windows are left-padded with id 0 at each sequence start") {
  // Two sequences back to back: "Hi" starts at 0, "lp" at 2 (ids = byte + 4).
  const std::vector<std::int32_t> ids = {76, 109, 112, 116};
  // Position 0, n = 3: window [0, 0, 76].
  CHECK(blt_ngram_bucket(ids.data(), 0, 0, 3, 0, 30000) == 7260);
  // Position 2 starts the second sequence: its window must not see 76 or 109.
  const std::int32_t padded[] = {0, 0, 112};
  CHECK(blt_ngram_bucket(ids.data(), 2, 2, 3, 0, 30000) == blt_bucket(blt_window_hash(padded, 3, 0), 30000));
  const std::int32_t crossing[] = {76, 109, 112};
  CHECK(blt_ngram_bucket(ids.data(), 2, 0, 3, 0, 30000) == blt_bucket(blt_window_hash(crossing, 3, 0), 30000));
}

TEST_CASE("policies: table order and compile-time checks") {
  static_assert(Blt1B::tables == 6);
  static_assert(BltDefault::tables == 18);
  static_assert(BltDefault::function_of(7) == 1 && BltDefault::ngram_of(7) == 4);  // f outer, n inner
  static_assert(NGrams<3, 8, 5>::max == 8);
  static_assert(IdConvention<BltIds> && IdConvention<ByteIds>);
  static_assert(BltIds::kVocab == 260 && BltIds::kPad == -1);
  static_assert(EmbeddingPolicy<Blt1B>);
  CHECK(blt_bucket(-1, 7) == 6);
}
