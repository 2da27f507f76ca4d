#pragma once
// Byte encoder semantics (BLT): id conventions, n-gram sets, hash functions,
// table layouts, and the BLT-exact bucket function, on host and device.
//
// BLT hashes *ids* (byte + 4), not raw bytes. For position i, n-gram size n
// and hash function f, the window is the n ids ending at i, left-padded with
// id 0 at the start of its sequence (never crossing into the previous one):
//
//   h = sum_j w_j * p_f^j      j = 0 is the oldest id, 64-bit wraparound
//   bucket = h mod V           floor modulo (always in [0, V)), as PyTorch's %
//
// and the embedding is E_byte[x_i] + sum_f sum_n E_{f,n}[bucket_{f,n}(i)].
#include <tokenless/core/config.hpp>

#include <concepts>
#include <cstdint>
#include <type_traits>

namespace tokenless::encoder {

// ------------------------------------------------------------------ ids
// BLT: id = byte + 4; ids 0..3 are BOE, BOS, EOS, BPE; PAD is -1; 260 ids.
struct BltIds {
  static constexpr int kOffset = 4;
  static constexpr int kVocab = 260;
  static constexpr int kBoe = 0, kBos = 1, kEos = 2, kBpe = 3, kPad = -1;
};
// Plain bytes: id = byte, 256 ids.
struct ByteIds {
  static constexpr int kOffset = 0;
  static constexpr int kVocab = 256;
};

template <class I>
concept IdConvention = requires {
  { I::kOffset } -> std::convertible_to<int>;
  { I::kVocab } -> std::convertible_to<int>;
} && (I::kVocab == 256 + I::kOffset) && (I::kOffset >= 0);

// ------------------------------------------------------------------ n-grams
template <int... Ns>
struct NGrams {
  static constexpr int size = sizeof...(Ns);
  static_assert(size > 0, "the n-gram set must not be empty");
  static_assert(((Ns >= 1 && Ns <= 16) && ...), "n-gram sizes must lie in [1, 16]");
  static constexpr int max = [] {
    int m = 0;
    ((m = Ns > m ? Ns : m), ...);
    return m;
  }();
  // A chain of selects, not an array lookup: a runtime k must not force the
  // sizes into local memory.
  TL_HOST_DEVICE static constexpr int at(int k) {
    int i = 0, r = 0;
    ((r = (i++ == k) ? Ns : r), ...);
    return r;
  }
};

template <class T>
struct is_ngrams : std::false_type {};
template <int... Ns>
struct is_ngrams<NGrams<Ns...>> : std::true_type {};

// ------------------------------------------------------------------ hashing
inline constexpr int kBltPrimeCount = 11;

// BLT's primes, in BLT's order (hash function f uses prime f).
TL_HOST_DEVICE constexpr std::uint64_t blt_prime(int f) {
  switch (f) {
    case 0: return 1000000007ull;
    case 1: return 5915587277ull;
    case 2: return 1500450271ull;
    case 3: return 3267000013ull;
    case 4: return 5754853343ull;
    case 5: return 4093082899ull;
    case 6: return 9576890767ull;
    case 7: return 3628273133ull;
    case 8: return 2860486313ull;
    case 9: return 5463458053ull;
    default: return 3367900313ull;
  }
}

// sum_j w_j p^j over a window given oldest first, in two's-complement int64
// with wraparound (unsigned arithmetic is the same ring, without the UB).
TL_HOST_DEVICE constexpr std::int64_t blt_window_hash(const std::int32_t* window_oldest_first, int n, int f) {
  const std::uint64_t p = blt_prime(f);
  std::uint64_t h = 0;
  for (int j = n - 1; j >= 0; --j) h = h * p + static_cast<std::uint64_t>(static_cast<std::int64_t>(window_oldest_first[j]));
  return static_cast<std::int64_t>(h);
}

// Floor modulo for V > 0: PyTorch's `%` on int64, unlike C's for negative h.
TL_HOST_DEVICE constexpr std::int64_t blt_bucket(std::int64_t hash, std::int64_t V) {
  const std::int64_t m = hash % V;
  return m < 0 ? m + V : m;
}

// The BLT bucket of the n-gram ending at position i of `ids`, whose sequence
// starts at seq_start (earlier positions read as id 0).
TL_HOST_DEVICE constexpr std::int64_t blt_ngram_bucket(const std::int32_t* ids, std::int64_t i, std::int64_t seq_start,
                                                       int n, int f, std::int64_t V) {
  const std::uint64_t p = blt_prime(f);
  std::uint64_t h = 0;
  for (int j = n - 1; j >= 0; --j) {
    const std::int64_t pos = i - (n - 1) + j;
    const std::int64_t w = pos >= seq_start ? ids[pos] : 0;
    h = h * p + static_cast<std::uint64_t>(w);
  }
  return blt_bucket(static_cast<std::int64_t>(h), V);
}

// ------------------------------------------------------------------ table layouts
// One table per (hash function, n-gram size), each [V, d].
struct SeparateTables {
  template <class T, int K>
  struct Tables {
    T* table[K] = {};
    // Selects instead of table[t]: a runtime t would copy the kernel's
    // parameter block to local memory.
    TL_HOST_DEVICE T* base(int t) const {
      T* p = table[0];
      TL_UNROLL
      for (int i = 1; i < K; ++i) p = i == t ? table[i] : p;
      return p;
    }
    TL_HOST_DEVICE T* row(int t, std::int64_t bucket, int d) const { return base(t) + bucket * d; }
  };
};

// One fused table (as Hugging Face's port stores them) with per-table row
// offsets; use_default_offsets() gives table t the rows [t V, (t + 1) V).
struct FusedTable {
  template <class T, int K>
  struct Tables {
    T* fused = nullptr;
    std::int64_t row_offset[K] = {};
    void use_default_offsets(std::int64_t V) {
      for (int t = 0; t < K; ++t) row_offset[t] = t * V;
    }
    TL_HOST_DEVICE std::int64_t offset(int t) const {
      std::int64_t o = row_offset[0];
      TL_UNROLL
      for (int i = 1; i < K; ++i) o = i == t ? row_offset[i] : o;
      return o;
    }
    TL_HOST_DEVICE T* row(int t, std::int64_t bucket, int d) const { return fused + (offset(t) + bucket) * d; }
    TL_HOST_DEVICE T* base(int) const { return fused; }
  };
};

template <class L>
concept TableLayout = std::same_as<L, SeparateTables> || std::same_as<L, FusedTable>;

// ------------------------------------------------------------------ batches
// ------------------------------------------------------------------ tuning (values, not semantics)
// The encoder's kernels run 256-thread blocks (8 warps: a warp per token,
// row or chunk; kThreads in encoder/kernel.cuh, one instantiation for every
// architecture) and grids of at most blocks_per_sm blocks per SM, striding
// over the rest.
struct Tuning {
  int block_threads;
  int blocks_per_sm;
  friend constexpr bool operator==(const Tuning&, const Tuning&) = default;
};
// sm_90: 256 threads and 32 blocks per SM gave the forward 99% of copy
// bandwidth at 1M bytes on H100 (96ec50f, docs/performance.md).
inline constexpr Tuning kTuningSm90{256, 32};
// sm_80: untuned (the sm_90 values; no A100 measurement yet).
inline constexpr Tuning kTuningSm80{256, 32};
constexpr Tuning tuning_for(int compute_capability) { return compute_capability >= 90 ? kTuningSm90 : kTuningSm80; }

// ------------------------------------------------------------------ the policy
// Table t = f * NGramSet::size + k holds hash function f and the k-th n-gram
// size: BLT's order (hash functions outer, n-gram sizes inner).
template <IdConvention Ids, class NGramSet, int kHashFunctions, TableLayout Layout = SeparateTables>
struct HashEmbeddingPolicy {
  static_assert(is_ngrams<NGramSet>::value, "NGramSet must be tokenless::encoder::NGrams<n...>");
  static_assert(kHashFunctions >= 1 && kHashFunctions <= kBltPrimeCount,
                "BLT defines 11 hash primes: use 1 to 11 hash functions");
  using ids = Ids;
  using ngrams = NGramSet;
  using layout = Layout;
  static constexpr int hash_functions = kHashFunctions;
  static constexpr int tables = kHashFunctions * NGramSet::size;
  static_assert(tables <= 32, "at most 32 hash tables (one per lane of a warp)");

  TL_HOST_DEVICE static constexpr int function_of(int t) { return t / NGramSet::size; }
  TL_HOST_DEVICE static constexpr int ngram_of(int t) { return NGramSet::at(t % NGramSet::size); }
};

// BLT-1B: n = 3..8, one hash function, 500,002 buckets, d = 1024.
using Blt1B = HashEmbeddingPolicy<BltIds, NGrams<3, 4, 5, 6, 7, 8>, 1>;
// BLT's code defaults: n = 3..8, three hash functions, V = 30,000.
using BltDefault = HashEmbeddingPolicy<BltIds, NGrams<3, 4, 5, 6, 7, 8>, 3>;

template <class P>
concept EmbeddingPolicy = requires {
  typename P::ids;
  typename P::ngrams;
  typename P::layout;
  { P::tables } -> std::convertible_to<int>;
};

}  // namespace tokenless::encoder
