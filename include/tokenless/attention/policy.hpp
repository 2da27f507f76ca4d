#pragma once
// Attention variants: what each query may see, as compile-time policies
// with named hooks (FlashInfer's idea), read by one tensor-core core.
//
// Sequence b of the query batch attends to sequence b of the key batch.
// Hooks see positions local to the pair (query i in [0, q_len), key j in
// [0, k_len)) through a SeqView, and the variant's own Params (device
// pointers and scalars, passed by value to the kernel).
//
// The hooks:
//   key_range(p, s, q_lo, q_hi) -> Range   keys any query of [q_lo, q_hi) may see;
//                                           key tiles outside are never loaded
//   tile_full(p, s, q_lo, q_hi, k_lo, k_hi) every pair of the tile visible: no
//                                           per-element mask is applied
//   visible(p, s, i, j) -> bool             the per-element mask
//   row_keys(p, s, i) -> Range (optional)   the contiguous keys query i sees: the
//                                           kernel then masks by two compares a
//                                           row, computed once per query tile
//   query_range(p, s, k_lo, k_hi) (optional) queries that may see the key tile
//                                           (the backward walks them; without it
//                                           it asks key_range of every query tile)
//   transform(p, x), transform_grad(p, y)   optional score transform (soft-cap)
//                                           applied after the scale, and its
//                                           derivative given the transformed value
//   check(p) -> Status (optional)           host-side checks of the Params
//
// A variant whose visible keys are, for every query, one contiguous range
// whose two ends never decrease with the query (causal, windows, documents,
// BLT's cross-attention, DLCM's concepts) need only give row_keys and derive
// the rest from MonotoneRows<Self>.
#include <tokenless/core/config.hpp>
#include <tokenless/core/segments.hpp>
#include <tokenless/core/status.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/varlen.hpp>

#include <cmath>
#include <concepts>
#include <cstdint>
#include <type_traits>

namespace tokenless::attention {

// A half-open range of local positions.
struct Range {
  int lo = 0, hi = 0;
  TL_HOST_DEVICE constexpr bool empty() const { return hi <= lo; }
};
TL_HOST_DEVICE constexpr int imin(int a, int b) { return a < b ? a : b; }
TL_HOST_DEVICE constexpr int imax(int a, int b) { return a > b ? a : b; }
TL_HOST_DEVICE constexpr Range intersect(Range a, Range b) { return {imax(a.lo, b.lo), imin(a.hi, b.hi)}; }

// One query sequence and its key sequence.
struct SeqView {
  std::int64_t b = 0;        // the sequence
  std::int64_t q_start = 0;  // its first query, in the query batch
  std::int64_t k_start = 0;  // its first key, in the key batch
  int q_len = 0, k_len = 0;
};

template <class V>
concept Variant = requires(const typename V::Params& p, const SeqView& s, int i) {
  { V::kName } -> std::convertible_to<const char*>;
  { V::key_range(p, s, i, i) } -> std::same_as<Range>;
  { V::tile_full(p, s, i, i, i, i) } -> std::same_as<bool>;
  { V::visible(p, s, i, i) } -> std::same_as<bool>;
} && std::is_trivially_copyable_v<typename V::Params>;

template <class V>
concept HasRowKeys = requires(const typename V::Params& p, const SeqView& s, int i) {
  { V::row_keys(p, s, i) } -> std::same_as<Range>;
};
template <class V>
concept HasQueryRange = requires(const typename V::Params& p, const SeqView& s, int i) {
  { V::query_range(p, s, i, i) } -> std::same_as<Range>;
};
template <class V>
concept HasTransform = requires(const typename V::Params& p, float x) {
  { V::transform(p, x) } -> std::same_as<float>;
  { V::transform_grad(p, x) } -> std::same_as<float>;
};

template <Variant V>
inline Status check_variant(const typename V::Params& p) {
  if constexpr (requires { { V::check(p) } -> std::same_as<Status>; }) return V::check(p);
  else return Status::ok();
}

// The hooks of a variant with monotone contiguous rows, from row_keys alone.
template <class Self>
struct MonotoneRows {
  template <class P>
  TL_HOST_DEVICE static Range key_range(const P& p, const SeqView& s, int q_lo, int q_hi) {
    return {Self::row_keys(p, s, q_lo).lo, Self::row_keys(p, s, q_hi - 1).hi};
  }
  template <class P>
  TL_HOST_DEVICE static bool tile_full(const P& p, const SeqView& s, int q_lo, int q_hi, int k_lo, int k_hi) {
    return Self::row_keys(p, s, q_hi - 1).lo <= k_lo && Self::row_keys(p, s, q_lo).hi >= k_hi;
  }
  template <class P>
  TL_HOST_DEVICE static bool visible(const P& p, const SeqView& s, int i, int j) {
    const Range r = Self::row_keys(p, s, i);
    return j >= r.lo && j < r.hi;
  }
  // Queries whose keys meet [k_lo, k_hi): the first whose range ends after
  // k_lo, to the last whose range starts before k_hi (binary searches).
  template <class P>
  TL_HOST_DEVICE static Range query_range(const P& p, const SeqView& s, int k_lo, int k_hi) {
    int lo = 0, hi = s.q_len;  // first i with row_keys(i).hi > k_lo
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (Self::row_keys(p, s, mid).hi > k_lo) hi = mid;
      else lo = mid + 1;
    }
    int lo2 = lo, hi2 = s.q_len;  // first i with row_keys(i).lo >= k_hi
    while (lo2 < hi2) {
      const int mid = (lo2 + hi2) / 2;
      if (Self::row_keys(p, s, mid).lo >= k_hi) hi2 = mid;
      else lo2 = mid + 1;
    }
    return {lo, lo2};
  }
};

// ------------------------------------------------------------------ full, causal, window
// Every key.
struct Full : MonotoneRows<Full> {
  static constexpr const char* kName = "full";
  struct Params {};
  TL_HOST_DEVICE static Range row_keys(const Params&, const SeqView& s, int) { return {0, s.k_len}; }
};

// Causal, aligned to the bottom right as FlashAttention does when the query
// and key sequences differ in length: query i sees keys j <= i + k_len - q_len
// (the last query sees every key, as in decoding from a cache).
struct Causal : MonotoneRows<Causal> {
  static constexpr const char* kName = "causal";
  struct Params {};
  TL_HOST_DEVICE static Range row_keys(const Params&, const SeqView& s, int i) {
    return {0, imin(s.k_len, i + s.k_len - s.q_len + 1)};
  }
};

// Causal with a left window of W keys, the query's own included:
// i + shift - W < j <= i + shift.
struct SlidingWindow : MonotoneRows<SlidingWindow> {
  static constexpr const char* kName = "sliding_window";
  struct Params {
    int window = 0;
  };
  TL_HOST_DEVICE static Range row_keys(const Params& p, const SeqView& s, int i) {
    const int last = i + s.k_len - s.q_len;
    return {imax(0, last - p.window + 1), imin(s.k_len, last + 1)};
  }
  static Status check(const Params& p) { return check::positive("variant.window", p.window); }
};

// ------------------------------------------------------------------ documents
// Base's mask within documents: `docs` splits the positions of the (self-
// attention) batch into documents, as cu_seqlens over the packed positions,
// so that a padded [B, S] batch can hold several documents a row. A query
// sees only keys of its own document. The documents are checked on the
// device like every batch.
template <class Base>
struct Documents : MonotoneRows<Documents<Base>> {
  static_assert(HasRowKeys<Base>, "Documents<Base>: the base variant must give row_keys (contiguous rows)");
  static constexpr const char* kName = "documents";
  struct Params {
    VarlenBatch docs;  // over the positions of the batch (device cu_seqlens)
    typename Base::Params base{};
  };
  TL_HOST_DEVICE static Range row_keys(const Params& p, const SeqView& s, int i) {
    const std::int64_t pos = s.q_start + i;
    const std::int64_t d = p.docs.seq_of(pos);
    const Range doc{static_cast<int>(p.docs.start(d) - s.k_start), static_cast<int>(p.docs.start(d + 1) - s.k_start)};
    return intersect(Base::row_keys(p.base, s, i), doc);
  }
  static Status check(const Params& p) {
    TL_RETURN_IF_ERROR(check::batch("variant.docs", p.docs));
    return check_variant<Base>(p.base);
  }
};

// BLT's local self-attention (local_block_causal): causal within documents,
// with a window of W keys including the query itself.
using LocalBlockCausal = Documents<SlidingWindow>;

// ------------------------------------------------------------------ patches
// The patcher's outputs as they come (core/segments.hpp): the CSR arrays or
// the per-position ids; positions and patch indices local to a sequence.
using Patches = Segments;

inline Status check_patches(const char* name, const Patches& p) {
  if (p.starts || p.lengths) {
    return check::not_null({{"variant.patches.offsets", p.offsets},
                            {"variant.patches.starts", p.starts},
                            {"variant.patches.lengths", p.lengths}});
  }
  if (!p.ids) {
    return Status::argument(StatusCode::null_pointer, name, "offsets, starts and lengths, or ids", "none of them");
  }
  return Status::ok();
}

// BLT's encoder cross-attention: queries are patch slots, k to a patch
// (slot s = p k + j belongs to patch s / k), keys are the bytes. A slot sees
// the bytes of its patch, or with a window w of patches p - w + 1 ... p. The
// patches are those of the key (byte) batch.
struct PatchesToBytes : MonotoneRows<PatchesToBytes> {
  static constexpr const char* kName = "blt_encoder_cross";
  struct Params {
    Patches patches;
    int k = 1;       // slots per patch
    int window = 1;  // patches seen: 1 = its own
  };
  TL_HOST_DEVICE static Range row_keys(const Params& p, const SeqView& s, int i) {
    const int n = p.patches.count(s.b, s.k_start, s.k_len);
    const int patch = i / p.k;
    if (patch >= n) return {s.k_len, s.k_len};
    return {p.patches.begin(s.b, s.k_start, s.k_len, imax(0, patch - p.window + 1)),
            p.patches.end(s.b, s.k_start, s.k_len, patch)};
  }
  static Status check(const Params& p) {
    TL_RETURN_IF_ERROR(check_patches("variant.patches", p.patches));
    TL_RETURN_IF_ERROR(check::positive("variant.k", p.k));
    return check::positive("variant.window", p.window);
  }
};

// BLT's decoder cross-attention: queries are bytes, keys are patch slots (k
// to a patch). Byte i reads the slots of its decoder patch: the patch ids
// BLT computes from patch_lengths[1:], i.e. the last patch that ended at or
// before i when the first patch is one byte (in general id(i + len_0) - 1).
// Lengths [1,3,2,3], 8 bytes: decoder ids [0,0,0,1,1,2,2,2]. A window w reads
// patches dec - w + 1 ... dec. The patches are those of the query (byte) batch.
struct BytesToPatches : MonotoneRows<BytesToPatches> {
  static constexpr const char* kName = "blt_decoder_cross";
  struct Params {
    Patches patches;
    int k = 1;
    int window = 1;
    // The last patch of every sequence is still open, whatever follows: the
    // last byte reads the patch before it (transformers' BLT with
    // max_patch_length, whose split drops the empty patch after the bytes).
    bool last_open = false;
  };
  // The patches that ended at or before i + len_0, less patch 0. With the
  // patcher's include_next_token the CSR lengths reach one position past the
  // bytes (BLT's example above); per-position ids cover the bytes exactly.
  TL_HOST_DEVICE static int decoder_patch(const Params& p, const SeqView& s, int i) {
    const int n = p.patches.count(s.b, s.q_start, s.q_len);
    const int j = i + p.patches.end(s.b, s.q_start, s.q_len, 0);
    if (j < s.q_len) return p.patches.id_of(s.b, s.q_start, s.q_len, j) - 1;
    if (p.last_open) return imax(0, n - 2);
    return p.patches.end(s.b, s.q_start, s.q_len, n - 1) > j ? n - 2 : n - 1;
  }
  TL_HOST_DEVICE static Range row_keys(const Params& p, const SeqView& s, int i) {
    const int d = decoder_patch(p, s, i);
    return {imin(s.k_len, imax(0, d - p.window + 1) * p.k), imin(s.k_len, (d + 1) * p.k)};
  }
  static Status check(const Params& p) { return PatchesToBytes::check({p.patches, p.k, p.window}); }
};

// DLCM's token -> concept attention, exactly, over the unique concepts: the
// keys are the concepts (one per segment of the query batch's tokens). A
// token sees the concepts whose segment started at or before it, or (the
// strict policy) only those whose segment has ended at or before it, so
// that no later token reaches it through the mean pooling. (Concept
// replication, K/V copied to token length, is Causal over the copies.)
enum class ConceptVisibility : std::uint8_t { started, completed };

struct TokensToConcepts : MonotoneRows<TokensToConcepts> {
  static constexpr const char* kName = "dlcm_token_to_concept";
  struct Params {
    Patches segments;
    ConceptVisibility visibility = ConceptVisibility::started;
  };
  TL_HOST_DEVICE static Range row_keys(const Params& p, const SeqView& s, int i) {
    const int c = p.segments.id_of(s.b, s.q_start, s.q_len, i);
    if (p.visibility == ConceptVisibility::started) return {0, imin(s.k_len, c + 1)};
    const bool ended = p.segments.end(s.b, s.q_start, s.q_len, c) == i + 1;
    return {0, imin(s.k_len, ended ? c + 1 : c)};
  }
  static Status check(const Params& p) { return check_patches("variant.segments", p.segments); }
};

// ------------------------------------------------------------------ score transforms
// Gemma-style logit soft-capping on top of any variant: cap tanh(x / cap),
// applied to the scaled score.
template <class Base>
struct SoftCap {
  static constexpr const char* kName = "soft_cap";
  struct Params {
    float cap = 0;
    typename Base::Params base{};
  };
  TL_HOST_DEVICE static Range key_range(const Params& p, const SeqView& s, int a, int b) {
    return Base::key_range(p.base, s, a, b);
  }
  TL_HOST_DEVICE static bool tile_full(const Params& p, const SeqView& s, int a, int b, int c, int d) {
    return Base::tile_full(p.base, s, a, b, c, d);
  }
  TL_HOST_DEVICE static bool visible(const Params& p, const SeqView& s, int i, int j) {
    return Base::visible(p.base, s, i, j);
  }
  TL_HOST_DEVICE static Range row_keys(const Params& p, const SeqView& s, int i)
    requires HasRowKeys<Base>
  {
    return Base::row_keys(p.base, s, i);
  }
  TL_HOST_DEVICE static Range query_range(const Params& p, const SeqView& s, int a, int b)
    requires HasQueryRange<Base>
  {
    return Base::query_range(p.base, s, a, b);
  }
  TL_HOST_DEVICE static float transform(const Params& p, float x) { return p.cap * tanhf(x / p.cap); }
  TL_HOST_DEVICE static float transform_grad(const Params& p, float y) {
    const float t = y / p.cap;
    return 1.0f - t * t;
  }
  static Status check(const Params& p) {
    if (!(p.cap > 0.0f) || !std::isfinite(p.cap)) {
      return Status::argument(StatusCode::invalid_argument, "variant.cap", "a finite cap > 0", "%g",
                              static_cast<double>(p.cap));
    }
    return check_variant<Base>(p.base);
  }
};

// ------------------------------------------------------------------ head dims
// The head dims the tensor-core core is instantiated for; run() dispatches
// the runtime head_dim over the list. Others are not yet supported.
template <int... kDims>
struct HeadDims {
  static constexpr int kCount = sizeof...(kDims);
  static constexpr bool contains(int d) { return ((d == kDims) || ...); }
};
using SupportedHeadDims = HeadDims<64, 96, 128>;

// ------------------------------------------------------------------ tuning (values, not semantics)
// Tiles: the forward's (and the backward's dQ pass's) query rows a block, 16
// a warp of 4; keys a tile; and the query rows a step of the dK/dV pass,
// whose blocks hold dK and dV for 64 keys in registers: above head dim 64,
// 32 rows spilled at 255 registers on sm_90 and 16 rows take 239 (ptxas,
// this commit's compile tier); at 64, 64 rows take 230. The kernels are
// instantiated once for every architecture, so both selectors must agree
// (static_assert in kernel.cuh). Untuned: FlashAttention-2's shapes, to be
// measured on a GPU.
struct Tuning {
  int block_q;
  int block_k;
  int bwd_block_q_small;  // head dim <= 64
  int bwd_block_q_large;  // head dim > 64
  friend constexpr bool operator==(const Tuning&, const Tuning&) = default;
};
inline constexpr Tuning kTuningSm80{64, 64, 64, 16};  // untuned
inline constexpr Tuning kTuningSm90{64, 64, 64, 16};  // untuned
constexpr Tuning tuning_for(int cc) { return cc >= 90 ? kTuningSm90 : kTuningSm80; }

}  // namespace tokenless::attention
