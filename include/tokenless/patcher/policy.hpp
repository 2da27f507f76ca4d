#pragma once
// Boundary policies: which positions start a patch. Each is a small struct
// (its parameters are run-time values) with a host/device rule that looks at
// the sequence around one position, so the patcher can decide every position
// in parallel, and a streaming patcher can decide them one at a time.
//
// Positions: a sequence of n bytes has n positions, or n + 1 with
// include_next_token (the position of the byte still to come). Positions 0
// and 1 always start a patch (BLT's first_ids); the rules below decide
// positions p >= 2. entropies[i] is the model's uncertainty about byte i + 1,
// so a rule for p reads entropies[p - 1] (and entropies[p - 2]).
#include <tokenless/core/config.hpp>
#include <tokenless/core/status.hpp>
#include <tokenless/core/validate.hpp>

#include <bit>
#include <concepts>
#include <cstdint>

namespace tokenless::patcher {

// What a rule may read about the sequence around position p (all indices are
// sequence-local). Entropy rules read `entropy`, token rules read `token`.
struct PositionView {
  const float* entropies = nullptr;     // [n], or null
  const std::int32_t* tokens = nullptr; // [n] BLT ids (byte + 4), or null
  std::int64_t n = 0;                   // bytes in the sequence
  std::uint64_t selected_from = 0;      // selection rules: the smallest selected key of the sequence
  TL_HOST_DEVICE float entropy(std::int64_t i) const { return entropies[i]; }
  TL_HOST_DEVICE std::int32_t token(std::int64_t i) const { return tokens[i]; }
};

// ------------------------------------------------------------------ entropy rules (BLT)
// Global threshold: H[p - 1] > theta. BLT's default theta is 1.335442066192627.
struct EntropyGlobal {
  static constexpr bool needs_entropies = true;
  static constexpr bool needs_tokens = false;
  float threshold = 1.335442066192627f;
  template <class View>
  TL_HOST_DEVICE bool starts(const View& v, std::int64_t p) const { return v.entropy(p - 1) > threshold; }
};

// Monotonic: H[p - 1] - H[p - 2] > theta. As in BLT, position 2 always starts
// a patch (the first element of BLT's shifted mask is set).
struct EntropyMonotonic {
  static constexpr bool needs_entropies = true;
  static constexpr bool needs_tokens = false;
  float threshold = 1.335442066192627f;
  template <class View>
  TL_HOST_DEVICE bool starts(const View& v, std::int64_t p) const {
    if (p == 2) return true;
    return v.entropy(p - 1) - v.entropy(p - 2) > threshold;
  }
};

// Combined (BLT's threshold_add): (H[p - 1] - H[p - 2] > theta_add) and
// (H[p - 1] > theta). BLT's quirks kept: position 2 always starts a patch and
// position 3 never does (index 1 of the shifted mask cannot fire).
struct EntropyCombined {
  static constexpr bool needs_entropies = true;
  static constexpr bool needs_tokens = false;
  float threshold = 1.335442066192627f;
  float threshold_add = 0.0f;
  template <class View>
  TL_HOST_DEVICE bool starts(const View& v, std::int64_t p) const {
    if (p == 2) return true;
    if (p == 3) return false;
    return (v.entropy(p - 1) - v.entropy(p - 2) > threshold_add) && (v.entropy(p - 1) > threshold);
  }
};

// Top-k (BLT with threshold=None): in a sequence of n bytes, the
// k = max(0, n / patch_size - 2) positions p >= 2 with the largest H[p - 1]
// start patches, besides positions 0 and 1. The candidates are H[1..n-1]; the
// one of byte n - 1 would start position n, which exists only with
// include_next_token. Ties go to the earlier position and NaN ranks above
// +inf, as torch.topk ranks it (its tie order is unspecified). Every
// candidate gets a distinct 64-bit key, entropy above position, so the
// patcher selects the k largest keys of each sequence on the device (a radix
// select) and a position starts a patch when its key is at least the k-th.
// It needs the whole sequence, so it cannot stream.
TL_HOST_DEVICE inline std::uint64_t topk_key(float h, std::int64_t candidate) {
#if defined(__CUDA_ARCH__)
  std::uint32_t bits = __float_as_uint(h);
#else
  std::uint32_t bits = std::bit_cast<std::uint32_t>(h);
#endif
  if (bits == 0x80000000u) bits = 0;  // -0 ties with +0, as they compare
  bits = (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;  // order-preserving
  if (h != h) bits = 0xffffffffu;     // every NaN: the largest
  return (std::uint64_t{bits} << 32) | (0x7fffffffu - static_cast<std::uint32_t>(candidate));
}
inline constexpr std::uint64_t kSelectNone = ~std::uint64_t{0};  // above every key: k = 0

struct EntropyTopK {
  static constexpr bool needs_entropies = true;
  static constexpr bool needs_tokens = false;
  static constexpr bool needs_selection = true;
  int patch_size = 4;
  TL_HOST_DEVICE std::int64_t k(std::int64_t n) const {
    const std::int64_t k = n / patch_size - 2;
    return k < 0 ? 0 : (k < n - 1 ? k : n - 1);
  }
  template <class View>
  TL_HOST_DEVICE bool starts(const View& v, std::int64_t p) const {
    return topk_key(v.entropy(p - 1), p - 2) >= v.selected_from;
  }
};

template <class P>
inline constexpr bool needs_selection_v = requires { requires P::needs_selection; };

// ------------------------------------------------------------------ fixed rules
struct StaticPatches {
  static constexpr bool needs_entropies = false;
  static constexpr bool needs_tokens = false;
  int patch_size = 4;
  // Static patching has no first-two rule: every patch_size-th position.
  static constexpr bool first_two = false;
  template <class View>
  TL_HOST_DEVICE bool starts(const View&, std::int64_t p) const { return p % patch_size == 0; }
};

struct BytePatches {
  static constexpr bool needs_entropies = false;
  static constexpr bool needs_tokens = false;
  template <class View>
  TL_HOST_DEVICE bool starts(const View&, std::int64_t) const { return true; }
};

// BLT's find_space_patch_start_ids: a patch ends after the first of a run of
// bytes that are neither ASCII letters nor digits; UTF-8 continuation bytes
// (0x80-0xBF) do not end one, lead bytes (>= 0xC0) do; ids below 4 (BOE, BOS,
// EOS, BPE) always end one.
struct SpacePatches {
  static constexpr bool needs_entropies = false;
  static constexpr bool needs_tokens = true;
  static constexpr int kOffset = 4;
  TL_HOST_DEVICE static constexpr bool separator(std::int32_t id) {
    const std::int32_t b = id - kOffset;
    return b < '0' || (b > '9' && b < 'A') || (b > 'Z' && b < 'a') || (b > 'z' && b < 0x80) || b >= 0xC0;
  }
  template <class View>
  TL_HOST_DEVICE bool starts(const View& v, std::int64_t p) const {
    const std::int64_t i = p - 1;  // the byte that would end the previous patch
    const std::int32_t t = v.token(i);
    return (separator(t) && !separator(v.token(i - 1))) || t < kOffset;
  }
};

template <class P>
concept BoundaryPolicy = requires(const P& policy, const PositionView& v, std::int64_t p) {
  { policy.starts(v, p) } -> std::same_as<bool>;
  { P::needs_entropies } -> std::convertible_to<bool>;
  { P::needs_tokens } -> std::convertible_to<bool>;
};

// The checks of a rule's parameters, the same for every operation that takes
// a rule (the patcher and the streaming step): finite thresholds, a positive
// patch size.
template <BoundaryPolicy P>
inline Status check_rule(const P& r) {
  if constexpr (requires { r.threshold; }) TL_RETURN_IF_ERROR(check::finite("rule.threshold", r.threshold));
  if constexpr (requires { r.threshold_add; }) TL_RETURN_IF_ERROR(check::finite("rule.threshold_add", r.threshold_add));
  if constexpr (requires { r.patch_size; }) TL_RETURN_IF_ERROR(check::positive("rule.patch_size", r.patch_size));
  return Status::ok();
}

// Whether BLT's "positions 0 and 1 always start a patch" applies.
template <class P>
TL_HOST_DEVICE constexpr bool uses_first_two() {
  if constexpr (requires { P::first_two; }) return P::first_two;
  else return true;
}

// The start flag of position p of a sequence under policy `rule` (without a
// max-length cap, which needs the previous start: see apply_max_length).
template <BoundaryPolicy P, class View = PositionView>
TL_HOST_DEVICE bool is_patch_start(const P& rule, const View& v, std::int64_t p) {
  if (p == 0) return true;
  if (uses_first_two<P>() && p == 1) return true;
  return rule.starts(v, p);
}

// BLT's max_patch_length: a patch longer than M splits into pieces of M and a
// remainder, i.e. position p also starts a patch when it lies a multiple of M
// after the last start.
TL_HOST_DEVICE constexpr bool max_length_start(std::int64_t p, std::int64_t last_start, std::int64_t max_len) {
  return max_len > 0 && p > last_start && (p - last_start) % max_len == 0;
}

// The cap in closed form, for the patcher's tile passes. How many positions
// in [lo, hi) a cap M > 0 makes starts, when c < lo is the last rule start
// before all of them:
TL_HOST_DEVICE constexpr std::int64_t cap_starts_between(std::int64_t c, std::int64_t lo, std::int64_t hi, int M) {
  return hi <= lo ? 0 : (hi - 1 - c) / M - (lo - 1 - c) / M;
}

// The last start, of the rule or the cap, at or before pos, given the last
// rule start c <= pos (-1: none).
TL_HOST_DEVICE constexpr std::int64_t last_start_at(std::int64_t c, std::int64_t pos, int M) {
  return c < 0 || M <= 0 ? c : c + (pos - c) / M * M;
}

// ------------------------------------------------------------------ outputs
// The patches of a batch in CSR form (patcher/patcher.cuh): device arrays.
struct PatchOutputs {
  std::uint8_t* flags = nullptr;     // [n_pos] 1 where a patch starts
  std::int32_t* ids = nullptr;       // [n_pos] global patch index of every position
  std::int32_t* offsets = nullptr;   // [num_seqs + 1] sequence b owns patches [off[b], off[b+1])
  std::int32_t* starts = nullptr;    // [capacity] start of each patch, within its sequence
  std::int32_t* lengths = nullptr;   // [capacity]
  std::int64_t capacity = 0;         // patches the starts and lengths hold
};

// ------------------------------------------------------------------ tuning (values, not semantics)
// The patcher's passes run 256-thread blocks (one instantiation for every
// architecture); the entropy pass stages tiles of entropy_tile_bytes per
// buffer (two buffers); the grid-stride passes (top-k counting and picking,
// calibration, a thread per stream or per sequence) run at most
// *_blocks_per_sm blocks per SM.
struct Tuning {
  int block_threads;
  int entropy_tile_bytes;
  int select_blocks_per_sm;
  int calibrate_blocks_per_sm;
  int sequence_blocks_per_sm;
  friend constexpr bool operator==(const Tuning&, const Tuning&) = default;
};
// sm_90: 40 KiB tiles gave fp32 logits 93-94% of copy bandwidth from 4M
// positions on H100 (25bb840); the grid caps are untuned.
inline constexpr Tuning kTuningSm90{256, 40960, 16, 8, 16};
// sm_80: untuned (the sm_90 values; two 80 KiB tile pairs fit A100's 164 KiB).
inline constexpr Tuning kTuningSm80{256, 40960, 16, 8, 16};
constexpr Tuning tuning_for(int compute_capability) { return compute_capability >= 90 ? kTuningSm90 : kTuningSm80; }

// ------------------------------------------------------------------ streaming
// The patcher for generation: fed, for each new position p, the entropy and
// the id of byte p - 1 (the model's uncertainty about byte p, known before p
// is sampled), it decides whether p starts a patch. It carries the last two
// bytes' entropies and ids and the last start, and gives exactly the offline
// patcher's starts (tested).
struct StreamState {
  std::int64_t position = 0;    // the position the next push decides
  std::int64_t last_start = 0;
  float entropy[2] = {0, 0};    // H[p - 2], H[p - 1]
  std::int32_t token[2] = {0, 0};
};

// What a rule sees while streaming: the two previous bytes.
struct StreamView {
  const StreamState* s;
  TL_HOST_DEVICE float entropy(std::int64_t i) const { return s->entropy[i == s->position - 1 ? 1 : 0]; }
  TL_HOST_DEVICE std::int32_t token(std::int64_t i) const { return s->token[i == s->position - 1 ? 1 : 0]; }
};

// Decides position state.position. For position 0 the inputs are ignored
// (there is no previous byte); afterwards pass byte p - 1's entropy and id.
template <BoundaryPolicy P>
TL_HOST_DEVICE bool stream_push(const P& rule, StreamState& state, float prev_entropy, std::int32_t prev_token,
                                int max_patch_length = 0) {
  static_assert(!needs_selection_v<P>,
                "tokenless: top-k patching selects over the whole sequence, so it cannot stream; "
                "generate with a threshold rule (EntropyGlobal, calibrated to the same mean patch size)");
  const std::int64_t p = state.position;
  if (p > 0) {
    state.entropy[0] = state.entropy[1];
    state.token[0] = state.token[1];
    state.entropy[1] = prev_entropy;
    state.token[1] = prev_token;
  }
  bool start = is_patch_start(rule, StreamView{&state}, p);
  if (start) state.last_start = p;
  else if (max_length_start(p, state.last_start, max_patch_length)) start = true;
  state.position = p + 1;
  return start;
}

}  // namespace tokenless::patcher
