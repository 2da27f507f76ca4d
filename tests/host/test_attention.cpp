// Host tier: the attention variants' hooks (policy.hpp compiles without
// nvcc and runs on the host) against the reference rules, as golden index
// sets: BLT's worked example, first bytes, empty and one-byte patches,
// windows, documents and DLCM's two policies, exhaustively on small cases.
#include <doctest/doctest.h>
#include <tokenless/attention/policy.hpp>
#include <tokenless/reference/attention.hpp>

#include "../support/patch_set.hpp"

#include <random>
#include <vector>

namespace at = tokenless::attention;
namespace ref = tokenless::reference::attention;

namespace {

// One sequence's patches as the patcher gives them, in both forms.
struct OneSeq : tlt::PatchSet {
  explicit OneSeq(const std::vector<int>& lens) : PatchSet({lens}) {}
};

// Every (row, column) of a variant's rows against a rule.
template <class V, class Rule>
void check_rows(const typename V::Params& p, const at::SeqView& s, Rule&& rule) {
  for (int i = 0; i < s.q_len; ++i) {
    const at::Range r = V::row_keys(p, s, i);
    for (int j = 0; j < s.k_len; ++j) {
      CAPTURE(i);
      CAPTURE(j);
      CHECK((j >= r.lo && j < r.hi) == rule(i, j));
      CHECK(V::visible(p, s, i, j) == rule(i, j));
    }
  }
  // The tile hooks agree with the rows on every tile of every size up to 5.
  for (int q0 = 0; q0 < s.q_len; ++q0) {
    for (int q1 = q0 + 1; q1 <= std::min(s.q_len, q0 + 5); ++q1) {
      const at::Range kr = V::key_range(p, s, q0, q1);
      for (int i = q0; i < q1; ++i) {
        for (int j = 0; j < s.k_len; ++j) {
          if (rule(i, j)) CHECK((j >= kr.lo && j < kr.hi));
        }
      }
      for (int k0 = 0; k0 < s.k_len; ++k0) {
        for (int k1 = k0 + 1; k1 <= std::min(s.k_len, k0 + 5); ++k1) {
          bool all = true;
          for (int i = q0; i < q1; ++i) {
            for (int j = k0; j < k1; ++j) all = all && rule(i, j);
          }
          CHECK(V::tile_full(p, s, q0, q1, k0, k1) == all);
        }
      }
    }
  }
  // query_range covers every query that sees a key of the tile.
  for (int k0 = 0; k0 < s.k_len; ++k0) {
    const int k1 = std::min(s.k_len, k0 + 3);
    const at::Range qr = V::query_range(p, s, k0, k1);
    for (int i = 0; i < s.q_len; ++i) {
      bool sees = false;
      for (int j = k0; j < k1; ++j) sees = sees || rule(i, j);
      if (sees) CHECK((i >= qr.lo && i < qr.hi));
    }
  }
}

}  // namespace

TEST_CASE("attention golden: BLT's worked example, lengths [1,3,2,3] over 8 bytes") {
  const std::vector<int> lengths = {1, 3, 2, 3};
  CHECK(ref::encoder_patch_ids(lengths, 8) == std::vector<int>{0, 1, 1, 1, 2, 2, 3, 3});
  CHECK(ref::decoder_patch_ids(lengths, 8) == std::vector<int>{0, 0, 0, 1, 1, 2, 2, 2});
  // The policy's decoder patches from the patcher's CSR outputs as they come
  // with include_next_token: the lengths cover the 8 bytes and one more.
  OneSeq seq({1, 3, 2, 3});
  const at::SeqView s{0, 0, 0, 8, 4 * 2};
  const at::Patches p = seq.csr();
  std::vector<int> dec;
  for (int i = 0; i < 8; ++i) dec.push_back(at::BytesToPatches::decoder_patch({p, 2, 1}, s, i));
  CHECK(dec == std::vector<int>{0, 0, 0, 1, 1, 2, 2, 2});
  // Byte 4 reads slots 2 and 3 (patch 1), byte 7 slots 4 and 5; the last
  // patch's slots are never read.
  CHECK(at::BytesToPatches::row_keys({p, 2, 1}, s, 4).lo == 2);
  CHECK(at::BytesToPatches::row_keys({p, 2, 1}, s, 4).hi == 4);
  CHECK(at::BytesToPatches::row_keys({p, 2, 1}, s, 7).lo == 4);
  CHECK(at::BytesToPatches::row_keys({p, 2, 1}, s, 7).hi == 6);
  // Encoder: slot 3 (patch 1) reads bytes 1..3; with window 2, bytes 0..3.
  const at::SeqView e{0, 0, 0, 8, 8};
  for (const at::Patches& q : {seq.csr(), seq.by_id()}) {
    CHECK(at::PatchesToBytes::row_keys({q, 2, 1}, e, 3).lo == 1);
    CHECK(at::PatchesToBytes::row_keys({q, 2, 1}, e, 3).hi == 4);
    CHECK(at::PatchesToBytes::row_keys({q, 2, 2}, e, 3).lo == 0);
    CHECK(at::PatchesToBytes::row_keys({q, 2, 1}, e, 7).lo == 6);  // slot 7: patch 3, bytes 6..7
  }
  // Exact cover [1,3,2,2], per-position ids: BLT gives the last byte the
  // patch count of lengths[1:], 3.
  OneSeq exact({1, 3, 2, 2});
  dec.clear();
  for (int i = 0; i < 8; ++i) dec.push_back(at::BytesToPatches::decoder_patch({exact.by_id(), 2, 1}, s, i));
  CHECK(dec == ref::decoder_patch_ids({1, 3, 2, 2}, 8));
  CHECK(dec == std::vector<int>{0, 0, 0, 1, 1, 2, 2, 3});
}

TEST_CASE("attention golden: encoder and decoder cross-attention, every small patching, windows 1-3") {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 60; ++trial) {
    std::vector<int> lens;
    const int n = 1 + static_cast<int>(rng() % 14);
    for (int left = n; left > 0;) {
      const int len = std::min(left, 1 + static_cast<int>(rng() % 4));
      lens.push_back(len);
      left -= len;
    }
    OneSeq seq(lens);
    const int k = 1 + static_cast<int>(rng() % 3), P = static_cast<int>(lens.size());
    const auto enc = ref::encoder_patch_ids(lens, n);
    const auto dec = ref::decoder_patch_ids(lens, n);
    for (int w = 1; w <= 3; ++w) {
      for (const at::Patches& p : {seq.csr(), seq.by_id()}) {
        CAPTURE(trial);
        CAPTURE(w);
        check_rows<at::PatchesToBytes>({p, k, w}, {0, 0, 0, P * k, n},
                                       [&](int s, int j) { return ref::encoder_cross(enc, s, j, k, w); });
        check_rows<at::BytesToPatches>({p, k, w}, {0, 0, 0, n, P * k},
                                       [&](int i, int s) { return ref::decoder_cross(dec, i, s, k, w); });
      }
    }
  }
}

TEST_CASE("attention golden: an empty patch sees nothing, and empty sequences own nothing") {
  // CSR patches [0,2) [2,2) [2,5): the empty patch's slots see no byte.
  const std::vector<std::int32_t> offsets = {0, 0, 3}, starts = {0, 2, 2}, lengths = {2, 0, 3};
  const at::Patches p{offsets.data(), starts.data(), lengths.data(), nullptr};
  const at::SeqView s{1, 0, 0, 6, 5};  // sequence 1 (sequence 0 is empty)
  CHECK(at::PatchesToBytes::row_keys({p, 2, 1}, s, 2).empty());
  CHECK(at::PatchesToBytes::row_keys({p, 2, 1}, s, 3).empty());
  CHECK(at::PatchesToBytes::row_keys({p, 2, 1}, s, 4).lo == 2);
  CHECK(at::PatchesToBytes::row_keys({p, 2, 2}, s, 4).lo == 2);  // window 2: patches 1..2
  const at::SeqView empty{0, 0, 0, 0, 0};
  CHECK(p.count(0, 0, 0) == 0);
  CHECK(at::PatchesToBytes::row_keys({p, 2, 1}, empty, 0).empty());
}

TEST_CASE("attention golden: causal, windows and documents, bottom-right aligned") {
  for (int lq : {1, 3, 7}) {
    for (int lk : {7, 9}) {
      const at::SeqView s{0, 0, 0, lq, lk};
      check_rows<at::Causal>({}, s, [&](int i, int j) { return ref::causal(i, j, lq, lk); });
      for (int w : {1, 2, 4}) {
        check_rows<at::SlidingWindow>({w}, s, [&](int i, int j) { return ref::window(i, j, lq, lk, w); });
      }
    }
  }
  // Documents [0,3) [3,4) [4,10) in one sequence of 10, window 3.
  const std::vector<std::int32_t> docs = {0, 3, 4, 10};
  const tokenless::VarlenBatch db = tokenless::VarlenBatch::packed(docs.data(), 3, 10);
  auto doc = [&](int pos) { return pos < 3 ? 0 : pos < 4 ? 1 : 2; };
  const at::SeqView s{0, 0, 0, 10, 10};
  check_rows<at::LocalBlockCausal>({db, {3}}, s, [&](int i, int j) {
    return doc(i) == doc(j) && ref::window(i, j, 10, 10, 3);
  });
}

TEST_CASE("attention golden: DLCM token-to-concept, started and completed") {
  OneSeq seq({2, 1, 3, 2});  // segments [0,2) [2,3) [3,6) [6,8)
  std::vector<int> seg_start = {0, 2, 3, 6}, seg_end = {2, 3, 6, 8};
  const at::SeqView s{0, 0, 0, 8, 4};
  for (const at::Patches& p : {seq.csr(), seq.by_id()}) {
    check_rows<at::TokensToConcepts>({p, at::ConceptVisibility::started}, s,
                                     [&](int t, int c) { return ref::concept_started(seg_start, t, c); });
    check_rows<at::TokensToConcepts>({p, at::ConceptVisibility::completed}, s,
                                     [&](int t, int c) { return ref::concept_completed(seg_end, t, c); });
  }
  // Token 0 sees no completed concept; token 1 completes concept 0.
  CHECK(at::TokensToConcepts::row_keys({seq.csr(), at::ConceptVisibility::completed}, s, 0).empty());
  CHECK(at::TokensToConcepts::row_keys({seq.csr(), at::ConceptVisibility::completed}, s, 1).hi == 1);
}
