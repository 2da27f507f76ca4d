#pragma once
// Patcher schedules. One pass over the logits (groups of 8 lanes compute a
// row's entropy), then start flags from the boundary policy fused with a
// reduce-then-scan over tiles of positions that writes the CSR outputs. Sequences of a varlen
// batch never see each other: every rule reads only its own sequence.
#include <tokenless/core/async_copy.cuh>
#include <tokenless/core/block.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/functional.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/vec.hpp>
#include <tokenless/core/warp.cuh>
#include <tokenless/patcher/policy.hpp>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace tokenless::patcher::detail {

inline constexpr int kMaxVocab = 512;
inline constexpr int kEntropyWarps = 8;

// The patcher's device-side check, after core's batch check: more patches
// than the capacity (DeviceStatus::required holds the count).
enum : int { kCheckCapacity = kFirstOperationCheck };

// H = -sum p log p with p = softmax(x): log S - sum e_i (x_i - m) / S, where
// m = max x, e_i = exp(x_i - m), S = sum e_i. NaN anywhere in a row gives NaN
// (it reaches S through e_i); so does +inf, and a row of -inf, as in PyTorch.
//
// The logits are one contiguous stream, so a block stages a tile of whole
// rows into shared memory with 16-byte copies (a row of V = 260 bf16 logits is
// 520 bytes: not a multiple of 16, so per-row vector loads are impossible).
// Tiles are double-buffered: the next one is in flight (cp.async) while
// groups of 8 lanes reduce the rows of the current one, one row per group;
// three butterfly steps per reduction instead of five keep the instruction
// count under the memory time.
inline constexpr int kEntropyLanesPerRow = 8;
inline constexpr int kEntropyGroups = kEntropyWarps * 32 / kEntropyLanesPerRow;

// Rows per tile: one per lane group (32), or 16 or 8 for wide rows. All are
// multiples of 8, and 8 rows of any V and dtype are a multiple of 16 bytes,
// so every tile starts 16-byte aligned when the logits do.
// Per buffer at most tile_bytes (Tuning::entropy_tile_bytes; two buffers
// beyond 48 KiB take the opt-in).
inline std::int64_t entropy_tile_rows(int V, int elem_bytes, int tile_bytes) {
  std::int64_t rows = kEntropyGroups;
  while (rows > 8 && rows * V * elem_bytes > tile_bytes) rows /= 2;
  return rows;
}

// How the four 8-lane groups of a warp spread their shared-memory loads over
// the banks. Each group's load step reads 32 (or 16) contiguous bytes of its
// row; with consecutive rows of a 260-logit bf16 tile the rows start 130 words
// apart, so the four windows overlap and every load replays up to four times.
// Two remedies, picked on the host: the groups reduce rows k apart (k in
// {1, 2, 4, 8}; k = 4 for V = 260 bf16: 520 words apart, windows at banks 0,
// 8, 16, 24), or, where no k helps (rows a multiple of 64 bytes, as for
// V = 256), group q starts its pass q * rot windows into the row and wraps.
struct EntropySpread {
  int row_step = 1;  // k
  int rotation = 0;  // windows of offset between neighbouring groups
};

inline EntropySpread entropy_spread(int V, int elem_bytes) {
  const bool pair = elem_bytes == 2 && V % 2 == 0;
  const int load = pair ? 4 : elem_bytes;  // bytes one lane reads per step
  const int window = kEntropyLanesPerRow * load;
  EntropySpread best;
  int best_worst = 1 << 30;
  for (int rot = 0; rot <= 2; ++rot) {
    for (int k = 1; k <= 8; k *= 2) {
      int hits[32] = {};
      int worst = 0;
      for (int q = 0; q < 4; ++q) {
        const std::int64_t start = std::int64_t{q} * k * V * elem_bytes + std::int64_t{q} * rot * window;
        for (std::int64_t w = start / 4; w <= (start + window - 1) / 4; ++w) worst = std::max(worst, ++hits[w % 32]);
      }
      if (worst < best_worst) {  // strictly better: no rotation and small k win ties
        best_worst = worst;
        best = {k, rot};
      }
    }
  }
  return best;
}

// The row of a 32-row slot that group q of warp w reduces with row step k: a
// bijection of [0, 32) for k in {1, 2, 4, 8}.
TL_HOST_DEVICE constexpr int entropy_slot(int w, int q, int k) { return w % k + k * q + 4 * k * (w / k); }

// Issues the copies of one tile: 16-byte asynchronous copies when the logits
// are aligned, then the tail (and an unaligned tile) element by element.
template <class T>
TL_DEVICE TL_FORCEINLINE void stage_tile(const T* __restrict__ src, std::int64_t n_elems, bool vector_ok, T* tile) {
  std::int64_t done = 0;
  if (vector_ok) {
    const std::int64_t n_vec = n_elems * static_cast<std::int64_t>(sizeof(T)) / 16;
    const auto* s = reinterpret_cast<const unsigned char*>(src);
    auto* d = reinterpret_cast<unsigned char*>(tile);
    for (std::int64_t i = threadIdx.x; i < n_vec; i += blockDim.x) async::copy16(d + 16 * i, s + 16 * i);
    done = n_vec * 16 / static_cast<std::int64_t>(sizeof(T));
  }
  for (std::int64_t i = done + threadIdx.x; i < n_elems; i += blockDim.x) tile[i] = src[i];
}

// 2^x with the SFU's approximation (2 ulp; results below 2^-126 flush to
// zero, which only drops terms below 2^-126 of the row's largest one).
TL_DEVICE TL_FORCEINLINE float fast_exp2(float x) {
#if defined(TOKENLESS_BACKEND_CUDA) && defined(__CUDA_ARCH__)
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return std::exp2(x);
#endif
}

// Elementwise max of two pairs of 2-byte logits: one HMNMX2 instead of two
// conversions and two FMNMX (the max pass is a third of the arithmetic).
// Like fmaxf it returns the other operand for one NaN; NaN still reaches the
// entropy through the sum pass.
template <class T>
TL_DEVICE TL_FORCEINLINE Vec<T, 2> pair_max(const Vec<T, 2>& a, const Vec<T, 2>& b) {
#if defined(TOKENLESS_BACKEND_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using P = std::conditional_t<std::is_same_v<T, __half>, __half2, __nv_bfloat162>;
  const P m = __hmax2(*reinterpret_cast<const P*>(&a), *reinterpret_cast<const P*>(&b));
  return *reinterpret_cast<const Vec<T, 2>*>(&m);
#else
  Vec<T, 2> r;
  TL_UNROLL
  for (int w = 0; w < 2; ++w) r.v[w] = to_float(b.v[w]) > to_float(a.v[w]) ? b.v[w] : a.v[w];
  return r;
#endif
}

// Entropy of row x, by the kEntropyLanesPerRow lanes of one group (j = the
// lane's index in it). Every lane of the warp must call it. kPair: 2-byte
// logits of an even-length row are read two per shared-memory load (rows
// then start 4-byte aligned), which halves the loads and the loop overhead.
template <class T, bool kPair>
TL_DEVICE TL_FORCEINLINE float group_row_entropy(const T* x, int V, int j, int rot) {
  constexpr int G = kEntropyLanesPerRow;
  constexpr int W = kPair ? 2 : 1;  // elements per load
  constexpr float kLog2e = 1.4426950408889634f;
  using Load = Vec<T, W>;
  const Load* xs = reinterpret_cast<const Load*>(x);
  const int n = V / W;
  // The group's pass starts rot windows in and wraps: [split, n), then [j, split).
  const int split = j + G * rot < n ? j + G * rot : n;
  float m = -INFINITY;
  if constexpr (kPair) {
    Load mx;
    mx.v[0] = mx.v[1] = from_float<T>(-INFINITY);
    TL_UNROLL_N(4)
    for (int c = split; c < n; c += G) mx = pair_max(mx, xs[c]);
    for (int c = j; c < split; c += G) mx = pair_max(mx, xs[c]);
    m = fmaxf(to_float(mx.v[0]), to_float(mx.v[1]));
  } else {
    TL_UNROLL_N(4)
    for (int c = split; c < n; c += G) m = fmaxf(m, to_float(xs[c].v[0]));
    for (int c = j; c < split; c += G) m = fmaxf(m, to_float(xs[c].v[0]));
  }
  m = warp::reduce_groups<G>(m, Max{});
  // In base 2: e_i = 2^(u_i) with u_i = (x_i - m) log2 e, one FFMA per element.
  const float mb = m * kLog2e;
  float s = 0.0f, t = 0.0f;
  auto add = [&](const Load& v) {
    TL_UNROLL
    for (int w = 0; w < W; ++w) {
      const float u = fmaf(to_float(v.v[w]), kLog2e, -mb);
      const float e = fast_exp2(u);
      s += e;
      t = fmaf(e, u, t);
    }
  };
  TL_UNROLL_N(4)
  for (int c = split; c < n; c += G) add(xs[c]);
  for (int c = j; c < split; c += G) add(xs[c]);
  s = warp::reduce_groups<G>(s, Sum{});
  t = warp::reduce_groups<G>(t, Sum{});
  // m = -inf (a row of -inf) gives u = NaN, hence NaN, as PyTorch does.
  return __logf(s) - t / (s * kLog2e);
}

template <class T, bool kPair>
TL_DEVICE TL_FORCEINLINE void entropy_tile(const T* tile, std::int64_t nr, std::int64_t tile_rows, int V,
                                           float* out, int slot, int j, int rot) {
  // Uniform trip count: the groups of a warp shuffle together, also past the
  // last row of a partial tile (they reduce row 0 again and write nothing).
  for (std::int64_t rb = 0; rb < tile_rows; rb += kEntropyGroups) {
    const std::int64_t r = rb + slot;
    const float h = group_row_entropy<T, kPair>(tile + (r < nr ? r : 0) * V, V, j, rot);
    if (j == 0 && r < nr) out[r] = h;
  }
}

template <class T>
struct EntropyKernel {
  struct Params {
    const T* __restrict__ logits;
    int V;
    std::int64_t rows, tile_rows;
    EntropySpread spread;
    float* __restrict__ out;
    DeviceStatus* status;
  };
  static constexpr int kThreads = kEntropyWarps * 32;
  static constexpr int kMinBlocks = 5;
  TL_DEVICE void operator()(const Params& p) const {
    const int V = p.V;
    const std::int64_t rows = p.rows, tile_rows = p.tile_rows;
    T* const buffers = dynamic_smem<T>();  // two tiles of tile_rows * V
    static_assert(kEntropyGroups == 32 && kEntropyWarps == 8, "entropy_slot maps 8 warps of 4 groups onto 32 rows");
    const int group = static_cast<int>(threadIdx.x) / kEntropyLanesPerRow;
    const int slot = entropy_slot(group / 4, group % 4, p.spread.row_step);
    const int rot = (group % 4) * p.spread.rotation;
    const int j = static_cast<int>(threadIdx.x) % kEntropyLanesPerRow;
    const bool vector_ok = reinterpret_cast<std::uintptr_t>(p.logits) % 16 == 0;
    const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * tile_rows;
    auto issue = [&](std::int64_t r0, int buf) {
      if (r0 < rows) {
        const std::int64_t nr = rows - r0 < tile_rows ? rows - r0 : tile_rows;
        stage_tile(p.logits + r0 * V, nr * V, vector_ok, buffers + buf * tile_rows * V);
      }
      async::commit();  // an empty group past the end keeps the wait count uniform
    };
    int cur = 0;
    issue(static_cast<std::int64_t>(blockIdx.x) * tile_rows, cur);
    for (std::int64_t r0 = static_cast<std::int64_t>(blockIdx.x) * tile_rows; r0 < rows; r0 += stride) {
      issue(r0 + stride, cur ^ 1);
      async::wait<1>();  // this thread's copies of the current tile have landed
      __syncthreads();   // and everyone's
      const T* tile = buffers + cur * tile_rows * V;
      const std::int64_t nr = rows - r0 < tile_rows ? rows - r0 : tile_rows;
      if (sizeof(T) == 2 && V % 2 == 0) entropy_tile<T, sizeof(T) == 2>(tile, nr, tile_rows, V, p.out + r0, slot, j, rot);
      else entropy_tile<T, false>(tile, nr, tile_rows, V, p.out + r0, slot, j, rot);
      __syncthreads();  // the next iteration refills this buffer
      cur ^= 1;
    }
    async::wait<0>();
  }
};

// The position space: sequence b of n_b bytes has n_b positions, or n_b + 1
// with include_next_token (the position of the byte still to come).
struct Positions {
  VarlenBatch batch;
  int inc;  // 1 with include_next_token
  TL_DEVICE std::int64_t seq_of_position(std::int64_t pos) const { return batch.seq_of(pos, inc); }
  TL_DEVICE std::int64_t first_position(std::int64_t b) const { return batch.start(b) + b * inc; }
};

// ------------------------------------------------------------------ segments
// From start flags to CSR patches in three passes over tiles of positions,
// a reduce-then-scan fused with the rule and the max-length cap:
//   1. segment_count_kernel: each tile evaluates the rule at its positions,
//      keeps the flags as bits in the workspace, and summarises itself
//      (SegmentTile);
//   2. segment_scan_kernel (one block): the last rule start before each tile
//      (a max-scan), the patches before it (a sum-scan), and the capacity check;
//   3. segment_write_kernel: each tile adds the cap's starts, then writes
//      flags, patch ids, starts and lengths;
//   4. SequenceOffsetsKernel: each sequence's offset, from its first
//      position's patch id (empty sequences need no special case there).
// About 11 bytes move per position (entropy or token, the flag bit twice, the
// flag, the patch id, and a start and a length per patch), and no per-position
// scan buffer exists.
//
// The cap needs the last rule start before a position, which may lie many
// tiles back. Pass 1 cannot know it for the positions before its tile's first
// rule start f; it counts the starts from f on, and pass 2 adds the cap's
// starts in [tile begin, f) in closed form once it knows the carried start.
// That is sound because every sequence starts with a rule start: no rule
// start lies between the carried one and f, so they are in one sequence.
inline constexpr int kSegThreads = 256;
static_assert(kTuningSm80.block_threads == kSegThreads && kTuningSm90.block_threads == kSegThreads,
              "the patcher's passes are instantiated for 256-thread blocks");
inline constexpr int kSegItems = 16;  // consecutive positions per thread
inline constexpr std::int64_t kSegTile = std::int64_t{kSegThreads} * kSegItems;
// A thread's rule flags, one bit per position. They stay in the workspace
// until pass 3 knows that the patches fit: on overflow no flag is written.
using RuleWord = std::uint16_t;
static_assert(kSegItems <= 8 * sizeof(RuleWord), "a thread's flags live in the bits of one word");
static_assert(kSegItems % 4 == 0, "flags are written four to a word");

struct SegmentTile {
  std::int32_t count;       // pass 1: starts from first_rule on; pass 2: patches before the tile
  std::int32_t first_rule;  // the tile's first rule start, or -1
  std::int32_t last_rule;   // pass 1: the tile's last rule start; pass 2: the last one before the tile (-1: none)
};

// The sequence of a position, for a thread walking positions upwards.
struct SequenceCursor {
  Positions layout;  // a copy: a pointer to a kernel parameter would put it in local memory
  std::int64_t b = 0, first = 0, next_first = 0;
  TL_DEVICE SequenceCursor(const Positions& l, std::int64_t pos) : layout(l) {
    b = l.seq_of_position(pos);
    first = l.first_position(b);
    next_first = l.first_position(b + 1);
  }
  TL_DEVICE void advance(std::int64_t pos) {
    while (pos >= next_first) {
      ++b;
      first = next_first;
      next_first = layout.first_position(b + 1);
    }
  }
};

TL_DEVICE TL_FORCEINLINE bool full_vector(const void* p, std::int64_t base, std::int64_t n) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0 && base + kSegItems <= n;
}

// Pass 1. The rule's flag at each position, as one bit per position in the
// workspace (the cap's flags come in pass 3).
template <BoundaryPolicy Rule>
struct SegmentCountKernel {
  struct Params {
    Rule rule;
    Positions layout;
    const float* entropies;
    const std::int32_t* tokens;
    const std::uint64_t* selected_from;
    std::int64_t n_pos;
    int max_len;
    RuleWord* rule_words;
    SegmentTile* tiles;
    DeviceStatus* status;
  };
  using Scan = block::Scan<std::int32_t, kSegThreads>;
  using Reduce = block::Reduce<std::int32_t, kSegThreads>;
  struct SharedStorage {
    typename Scan::TempStorage scan;
    typename Reduce::TempStorage reduce;
  };
  static constexpr int kThreads = kSegThreads;
  TL_DEVICE void operator()(const Params& prm, SharedStorage& smem) const {
    const Rule& rule = prm.rule;
    const Positions& layout = prm.layout;
    const float* entropies = prm.entropies;
    const std::int32_t* tokens = prm.tokens;
    const std::uint64_t* selected_from = prm.selected_from;
    const std::int64_t n_pos = prm.n_pos;
    const int max_len = prm.max_len;
    const std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * kSegTile + threadIdx.x * kSegItems;
    std::uint32_t rule_bits = 0;
    std::int32_t first = -1, last = -1;
    if (base < n_pos) {
      SequenceCursor cur(layout, base);
      std::int64_t view_b = -1;
      PositionView view;
      TL_UNROLL_N(1)  // unrolled, the sequence walk and the rule made ptxas spill
      for (int k = 0; k < kSegItems; ++k) {
        const std::int64_t pos = base + k;
        if (pos < n_pos) {
          cur.advance(pos);
          if (cur.b != view_b) {
            view_b = cur.b;
            const std::int64_t begin = layout.batch.start(view_b);
            view = {entropies ? entropies + begin : nullptr, tokens ? tokens + begin : nullptr,
                    layout.batch.length(view_b), selected_from ? selected_from[view_b] : 0};
          }
          if (is_patch_start(rule, view, pos - cur.first)) {
            rule_bits |= 1u << k;
            if (first < 0) first = static_cast<std::int32_t>(pos);
            last = static_cast<std::int32_t>(pos);
          }
        }
      }
    }
    prm.rule_words[static_cast<std::int64_t>(blockIdx.x) * kSegThreads + threadIdx.x] = static_cast<RuleWord>(rule_bits);
    std::int32_t tile_last;
    std::int32_t carried = Scan::exclusive(last, Max{}, std::int32_t{-1}, tile_last, smem.scan);
    std::int32_t count = 0;
    TL_UNROLL
    for (int k = 0; k < kSegItems; ++k) {
      const std::int64_t pos = base + k;
      if (rule_bits >> k & 1u) {
        carried = static_cast<std::int32_t>(pos);
        ++count;
      } else if (carried >= 0 && pos < n_pos && max_length_start(pos, carried, max_len)) {
        ++count;
      }
    }
    count = Reduce::reduce(count, Sum{}, smem.reduce);
    first = Reduce::reduce(first < 0 ? INT32_MAX : first, Min{}, smem.reduce);
    if (threadIdx.x == 0) prm.tiles[blockIdx.x] = {count, first == INT32_MAX ? -1 : first, tile_last};
  }
};

// Pass 2, one block: the carried rule start and the patch offset of every
// tile, the total patch count, and the capacity check (on overflow it only
// records how many patches were needed, in a field no kernel reads). Each
// thread takes kScanItems consecutive tiles of a chunk, so that a 64M-position
// batch (16K tiles) takes 16 chunks.
inline constexpr int kScanThreads = 256, kScanItems = 4;

struct SegmentScanKernel {
  struct Params {
    SegmentTile* tiles;
    std::int64_t n_tiles, n_pos;
    int max_len;
    std::int64_t capacity;
    std::int32_t* total;
    DeviceStatus* status;
  };
  using Scan = block::Scan<std::int32_t, kScanThreads>;
  struct SharedStorage {
    typename Scan::TempStorage last, count;
  };
  static constexpr int kThreads = kScanThreads;
  TL_DEVICE void operator()(const Params& p, SharedStorage& smem) const {
    SegmentTile* tiles = p.tiles;
    const std::int64_t n_tiles = p.n_tiles, n_pos = p.n_pos;
    const int max_len = p.max_len;
    std::int32_t carry_last = -1, carry_count = 0;
    for (std::int64_t chunk = 0; chunk < n_tiles; chunk += kScanThreads * kScanItems) {
      const std::int64_t first = chunk + threadIdx.x * kScanItems;
      SegmentTile t[kScanItems];
      std::int32_t last = -1;
      TL_UNROLL
      for (int q = 0; q < kScanItems; ++q) {
        t[q] = first + q < n_tiles ? tiles[first + q] : SegmentTile{0, -1, -1};
        last = t[q].last_rule > last ? t[q].last_rule : last;
      }
      std::int32_t chunk_last, chunk_count;
      std::int32_t c = Scan::exclusive(last, Max{}, std::int32_t{-1}, chunk_last, smem.last);
      c = c > carry_last ? c : carry_last;
      std::int32_t patches[kScanItems], carried[kScanItems], sum = 0;
      TL_UNROLL
      for (int q = 0; q < kScanItems; ++q) {
        const std::int64_t i = first + q;
        carried[q] = c;
        patches[q] = t[q].count;
        if (i < n_tiles && max_len > 0 && c >= 0) {
          const std::int64_t lo = i * kSegTile, end = lo + kSegTile < n_pos ? lo + kSegTile : n_pos;
          patches[q] += static_cast<std::int32_t>(cap_starts_between(c, lo, t[q].first_rule >= 0 ? t[q].first_rule : end, max_len));
        }
        sum += patches[q];
        c = t[q].last_rule > c ? t[q].last_rule : c;
      }
      std::int32_t before = carry_count + Scan::exclusive(sum, Sum{}, std::int32_t{0}, chunk_count, smem.count);
      TL_UNROLL
      for (int q = 0; q < kScanItems; ++q) {
        if (first + q < n_tiles) tiles[first + q] = {before, t[q].first_rule, carried[q]};
        before += patches[q];
      }
      carry_last = chunk_last > carry_last ? chunk_last : carry_last;
      carry_count += chunk_count;
      __syncthreads();  // the next chunk reuses the scan storage
    }
    if (threadIdx.x == 0) {
      *p.total = carry_count;
      if (carry_count > p.capacity) {
        p.status->required = carry_count;
        device_fail(p.status, kCheckCapacity, 0);
      }
    }
  }
};

// Pass 3: the cap's starts, then, when the patches fit, the flags and the CSR
// outputs. Patch k's length is written by the thread that meets patch k + 1's
// start (or the last position).
struct SegmentWriteKernel {
  struct Params {
    Positions layout;
    std::int64_t n_pos;
    int max_len;
    const SegmentTile* tiles;
    const RuleWord* rule_words;
    const std::int32_t* total;
    std::uint8_t* flags;
    std::int32_t *patch_ids, *patch_starts, *patch_lengths;
    DeviceStatus* status;
  };
  using Scan = block::Scan<std::int32_t, kSegThreads>;
  struct SharedStorage {
    typename Scan::TempStorage last, count;
  };
  static constexpr int kThreads = kSegThreads;
  TL_DEVICE void operator()(const Params& p, SharedStorage& smem) const {
    const Positions& layout = p.layout;
    const std::int64_t n_pos = p.n_pos;
    const int max_len = p.max_len;
    std::uint8_t* flags = p.flags;
    std::int32_t* patch_ids = p.patch_ids;
    std::int32_t* patch_starts = p.patch_starts;
    std::int32_t* patch_lengths = p.patch_lengths;
    const SegmentTile tile = p.tiles[blockIdx.x];
    const std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * kSegTile + threadIdx.x * kSegItems;
    const std::uint32_t rule_bits = p.rule_words[static_cast<std::int64_t>(blockIdx.x) * kSegThreads + threadIdx.x];
    const std::int32_t last = rule_bits ? static_cast<std::int32_t>(base + 31 - __clz(static_cast<int>(rule_bits))) : -1;
    std::int32_t ignored;
    std::int32_t carried = Scan::exclusive(last, Max{}, std::int32_t{-1}, ignored, smem.last);
    carried = carried > tile.last_rule ? carried : tile.last_rule;  // the last rule start before this thread's items
    const std::int32_t carried_before = carried;
    std::uint32_t start_bits = rule_bits;
    if (max_len > 0) {
      TL_UNROLL
      for (int k = 0; k < kSegItems; ++k) {
        const std::int64_t pos = base + k;
        if (rule_bits >> k & 1u) carried = static_cast<std::int32_t>(pos);
        else if (carried >= 0 && pos < n_pos && max_length_start(pos, carried, max_len)) start_bits |= 1u << k;
      }
    }
    // The patches fit the capacity: the kernel layer checked the status.
    const std::int32_t count = __popc(start_bits);
    std::int32_t pid = tile.count + Scan::exclusive(count, Sum{}, std::int32_t{0}, ignored, smem.count) - 1;
    if (base >= n_pos) return;
    if (full_vector(flags + base, base, n_pos)) {
      Vec<std::uint32_t, kSegItems / 4> f;  // four flag bytes per word
      TL_UNROLL
      for (int q = 0; q < kSegItems / 4; ++q) {
        const std::uint32_t nib = start_bits >> (4 * q);
        f.v[q] = (nib & 1u) | (nib >> 1 & 1u) << 8 | (nib >> 2 & 1u) << 16 | (nib >> 3 & 1u) << 24;
      }
      *reinterpret_cast<Vec<std::uint32_t, kSegItems / 4>*>(flags + base) = f;
    } else {
      TL_UNROLL
      for (int k = 0; k < kSegItems; ++k)
        if (base + k < n_pos) flags[base + k] = start_bits >> k & 1u;
    }
    // The last start before this thread's items, of the rule or the cap.
    std::int64_t prev = last_start_at(carried_before, base - 1, max_len);
    SequenceCursor cur(layout, base);
    std::int32_t ids[kSegItems];
    TL_UNROLL
    for (int k = 0; k < kSegItems; ++k) {
      const std::int64_t pos = base + k;
      if (start_bits >> k & 1u) {
        ++pid;
        cur.advance(pos);
        const std::int64_t local = pos - cur.first;
        patch_starts[pid] = static_cast<std::int32_t>(local);
        if (pid > 0) patch_lengths[pid - 1] = static_cast<std::int32_t>(pos - prev);
        prev = pos;
      }
      ids[k] = pid;
      if (pos == n_pos - 1) patch_lengths[pid] = static_cast<std::int32_t>(n_pos - prev);
    }
    if (full_vector(patch_ids + base, base, n_pos)) {
      TL_UNROLL
      for (int q = 0; q < kSegItems; q += 4)
        *reinterpret_cast<Vec<std::int32_t, 4>*>(patch_ids + base + q) = {ids[q], ids[q + 1], ids[q + 2], ids[q + 3]};
    } else {
      TL_UNROLL
      for (int k = 0; k < kSegItems; ++k)
        if (base + k < n_pos) patch_ids[base + k] = ids[k];
    }
  }
};

// Pass 4: the sequences' patch offsets. A sequence's first position starts
// a patch, so its offset is that position's patch id; an empty sequence
// (no position) takes the next one's, and the end takes the total. A thread
// per sequence, apart from the write pass: empty sequences cost it nothing.
struct SequenceOffsetsKernel {
  struct Params {
    Positions layout;
    std::int64_t n_pos;
    const std::int32_t* total;
    const std::int32_t* patch_ids;
    std::int32_t* patch_offsets;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.layout.batch.num_seqs + 1, [&](std::int64_t b) {
      const std::int64_t first = p.layout.first_position(b);
      p.patch_offsets[b] = first < p.n_pos ? p.patch_ids[first] : *p.total;
    });
  }
};

// ------------------------------------------------------------------ streaming
// One generation step for a batch of streams (patcher/streaming.cuh): a
// thread per stream.
template <BoundaryPolicy Rule>
struct StreamStepKernel {
  struct Params {
    Rule rule;
    StreamState* states;
    const float* prev_entropy;
    const std::int32_t* prev_token;
    std::int64_t streams;
    int max_len;
    std::uint8_t* starts;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.streams, [&](std::int64_t b) {
      StreamState s = p.states[b];
      p.starts[b] = stream_push(p.rule, s, p.prev_entropy ? p.prev_entropy[b] : 0.0f,
                                p.prev_token ? p.prev_token[b] : 0, p.max_len);
      p.states[b] = s;
    });
  }
};

}  // namespace tokenless::patcher::detail
