#pragma once
// The dechunk's schedule: an affine recurrence over chunks (policy.hpp,
// namespace dechunk), scanned in three phases so that no sequence runs
// serially:
//
//   1. tiles   a warp per (tile of chunks, 32·W columns) runs its tile from a
//              zero state: the tile's state B and its decay A (Π a, or kReset);
//   2. carry   a block per 32 columns, a warp per run of tiles: each warp
//              folds its run, then the runs before it, then writes the state
//              entering each of its tiles over B (in place);
//   3. apply   the tiles again, from their entering state, writing the output.
//
// The backward is the same scan in reverse over the adjoint
// λ_c = G_c + a_{c+1} λ_{c+1} (G_c: the gradient summed over chunk c's
// positions), and a last pass per position adds the clamp's and the STE's
// terms of dL/dp from per-column-block partials. Everything is fp32, the
// order of every sum is fixed (no atomics): the same bits on every run.
#include <tokenless/bottleneck/kernel.cuh>
#include <tokenless/bottleneck/policy.hpp>
#include <tokenless/core/config.hpp>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/vec.hpp>
#include <tokenless/core/warp.cuh>

#include <cstdint>

namespace tokenless::bottleneck::detail {

// Phases 1 and 3: 64 registers at most (4 blocks of 256 a SM). Left to its
// heuristics, ptxas took 32 to 48 and spilled a few bytes in 6 of the 24
// instantiations (CUDA 13, sm_90).
inline constexpr int kScanMinBlocks = 4;
inline constexpr int kCarryWarps = 32;                 // phase 2: a block of 32 warps
inline constexpr int kMaxScanTiles = kCarryWarps * 64;  // at most 64 tiles a warp in phase 2

// fp32 rows (the residual, the states) in 16-byte pieces when W allows.
template <int W>
TL_DEVICE TL_FORCEINLINE void load_f32(const float* p, float (&v)[W]) {
  constexpr int V = W == 1 ? 1 : 4;
TL_UNROLL
  for (int i = 0; i < W; i += V) {
    const Vec<float, V> x = *reinterpret_cast<const Vec<float, V>*>(p + i);
TL_UNROLL
    for (int j = 0; j < V; ++j) v[i + j] = x.v[j];
  }
}
template <int W>
TL_DEVICE TL_FORCEINLINE void store_f32(float* p, const float (&v)[W]) {
  constexpr int V = W == 1 ? 1 : 4;
TL_UNROLL
  for (int i = 0; i < W; i += V) {
    Vec<float, V> x;
TL_UNROLL
    for (int j = 0; j < V; ++j) x.v[j] = v[i + j];
    *reinterpret_cast<Vec<float, V>*>(p + i) = x;
  }
}

template <int W>
TL_DEVICE TL_FORCEINLINE void zero(float (&v)[W]) { fill(v, 0.0f); }

// out = residual + h, or h alone (0 + h would turn -0 into +0): the prefill
// and the step share it, so that they give the same bits.
template <class T, int W>
TL_DEVICE TL_FORCEINLINE void store_out(T* out, const float (&h)[W], const float* residual) {
  float o[W];
  if (residual) load_f32<W>(residual, o);
  else zero(o);
TL_UNROLL
  for (int i = 0; i < W; ++i) o[i] = residual ? o[i] + h[i] : h[i];
  store<T, W>(out, o);
}

// The scan's geometry: the layout, chunks per tile, and tiles for the capacity.
struct ScanGrid {
  Layout l;
  int tile;            // chunks a tile
  std::int64_t tiles;  // tiles for `capacity` chunks
};

// A chunk as the recurrence sees it: its positions, p̂ and decay a.
struct ChunkStep {
  std::int64_t lo, hi;
  float p;  // p̂ (0 for an empty chunk)
  float a;  // 1 - p̂, kReset at a sequence's first chunk, 1 for an empty chunk
};
TL_DEVICE TL_FORCEINLINE ChunkStep chunk_step(const Layout& l, const float* prob, std::int64_t c) {
  ChunkStep k;
  l.segs.positions(l.batch, c, k.lo, k.hi);
  const bool empty = k.hi == k.lo;
  k.p = empty ? 0.0f : dechunk::clamp_p(prob[k.lo]);
  k.a = opens_sequence(l, c, k.lo) ? dechunk::kReset : (empty ? 1.0f : 1.0f - k.p);
  return k;
}
// The decay that carries λ_{c+1} into λ_c: chunk c+1's a (kReset past the
// batch's last chunk).
TL_DEVICE TL_FORCEINLINE float next_decay(const Layout& l, const float* prob, std::int64_t c, std::int64_t n) {
  return c + 1 < n ? chunk_step(l, prob, c + 1).a : dechunk::kReset;
}

// f(tile, first chunk, end chunk, column, lane) for every (tile, column
// block) of the batch; `column` is the lane's first of W (past d: idle, but
// the lane stays for the warp's reductions).
template <int W, class F>
TL_DEVICE TL_FORCEINLINE void for_each_tile(const ScanGrid& g, F&& f) {
  const std::int64_t n = g.l.segs.total(g.l.batch);
  const unsigned blocks = static_cast<unsigned>((g.l.d + 32 * W - 1) / (32 * W));
  work::warp_items(g.tiles * blocks, [&](std::int64_t item, int lane) {
    // 32-bit: run() checks that tiles x blocks fits (a 64-bit division is a
    // call, whose stack frame ptxas counts as a spill).
    const unsigned i = static_cast<unsigned>(item), tb = i / blocks;
    const std::int64_t t = tb, first = t * g.tile;
    if (first >= n) return;
    const std::int64_t end = first + g.tile < n ? first + g.tile : n;
    f(t, first, end, static_cast<int>(i - tb * blocks) * 32 * W + lane * W, lane);
  });
}

// ------------------------------------------------------------------ phase 1
// Forward: each tile from a zero state, chunk by chunk.
template <class T, int W>
struct DechunkTilesKernel {
  struct Params {
    ScanGrid g;
    const T* z;
    std::int64_t z_stride;
    const float* prob;
    float* tile_a;  // [tiles]
    float* tile_b;  // [tiles, d]
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  static constexpr int kMinBlocks = kScanMinBlocks;
  TL_DEVICE void operator()(const Params& p) const {
    const int d = p.g.l.d;
    for_each_tile<W>(p.g, [&](std::int64_t t, std::int64_t first, std::int64_t end, int col, int) {
      float h[W], a = 1.0f;
      zero(h);
      for (std::int64_t c = first; c < end; ++c) {
        const ChunkStep k = chunk_step(p.g.l, p.prob, c);
        float z[W];
        if (col < d && k.hi > k.lo) load<T, W>(p.z + c * p.z_stride + col, z);
        else zero(z);
TL_UNROLL
        for (int i = 0; i < W; ++i) h[i] = dechunk::advance(k.a, h[i], k.p * z[i]);
        a = dechunk::chain(a, k.a);
      }
      if (col < d) store_f32<W>(p.tile_b + t * d + col, h);
      if (col == 0) p.tile_a[t] = a;
    });
  }
};

// Backward: each tile from a zero λ on its right, chunk by chunk leftwards.
template <class T, int W>
struct AdjointTilesKernel {
  struct Params {
    ScanGrid g;
    const T* grad_out;
    std::int64_t grad_out_stride;
    const float* prob;
    float* tile_a;
    float* tile_b;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  static constexpr int kMinBlocks = kScanMinBlocks;
  TL_DEVICE void operator()(const Params& p) const {
    const int d = p.g.l.d;
    const std::int64_t n = p.g.l.segs.total(p.g.l.batch);
    for_each_tile<W>(p.g, [&](std::int64_t t, std::int64_t first, std::int64_t end, int col, int) {
      float lam[W], a = 1.0f;
      zero(lam);
      float next = next_decay(p.g.l, p.prob, end - 1, n);
      for (std::int64_t c = end - 1; c >= first; --c) {
        const ChunkStep k = chunk_step(p.g.l, p.prob, c);
        float g[W];
        zero(g);
        if (col < d) {
          for (std::int64_t r = k.lo; r < k.hi; ++r) {
            float v[W];
            load<T, W>(p.grad_out + r * p.grad_out_stride + col, v);
TL_UNROLL
            for (int i = 0; i < W; ++i) g[i] += v[i];
          }
        }
TL_UNROLL
        for (int i = 0; i < W; ++i) lam[i] = dechunk::advance(next, lam[i], g[i]);
        a = dechunk::chain(a, next);
        next = k.a;
      }
      if (col < d) store_f32<W>(p.tile_b + t * d + col, lam);
      if (col == 0) p.tile_a[t] = a;
    });
  }
};

// ------------------------------------------------------------------ phase 2
// A block per 32 columns, a lane per column, warp w over the tiles
// [w·R, (w+1)·R) in scan order (reversed for the backward). Writes the state
// entering each tile over its B. The forward also zeroes final_state's rows
// of empty sequences (nothing else writes them).
template <bool kReverse>
struct DechunkCarryKernel {
  struct Params {
    ScanGrid g;
    float* tile_a;
    float* tile_b;
    float* final_state;  // forward, optional: [num_seqs, d]
    std::int64_t final_stride;
    DeviceStatus* status;
  };
  struct SharedStorage {
    float a[kCarryWarps];
    float b[kCarryWarps][32];
  };
  static constexpr int kThreads = kCarryWarps * 32;
  TL_DEVICE void operator()(const Params& p, SharedStorage& smem) const {
    const int d = p.g.l.d;
    const int lane = static_cast<int>(threadIdx.x) & 31, w = static_cast<int>(threadIdx.x) >> 5;
    const std::int64_t n = p.g.l.segs.total(p.g.l.batch);
    const std::int64_t tiles = (n + p.g.tile - 1) / p.g.tile;
    const std::int64_t run = (tiles + kCarryWarps - 1) / kCarryWarps;
    const std::int64_t j0 = w * run, j1 = j0 + run < tiles ? j0 + run : tiles;
    const auto tile_at = [&](std::int64_t j) { return kReverse ? tiles - 1 - j : j; };
    for (int col0 = static_cast<int>(blockIdx.x) * 32; col0 < d; col0 += static_cast<int>(gridDim.x) * 32) {
      const int col = col0 + lane;
      const bool on = col < d;
      // The run's own fold.
      float a = 1.0f, b = 0.0f;
      for (std::int64_t j = j0; j < j1; ++j) {
        const std::int64_t t = tile_at(j);
        const float ta = p.tile_a[t];
        b = dechunk::advance(ta, b, on ? p.tile_b[t * d + col] : 0.0f);
        a = dechunk::chain(a, ta);
      }
      if (lane == 0) smem.a[w] = a;  // the same in every lane: one writer
      smem.b[w][lane] = b;
      __syncthreads();
      // The runs before it, in order, from a zero state.
      float h = 0.0f;
      for (int v = 0; v < w; ++v) h = dechunk::advance(smem.a[v], h, smem.b[v][lane]);
      __syncthreads();  // the next column group reuses smem
      if (on) {
        for (std::int64_t j = j0; j < j1; ++j) {
          const std::int64_t t = tile_at(j);
          const float tb = p.tile_b[t * d + col];
          p.tile_b[t * d + col] = h;
          h = dechunk::advance(p.tile_a[t], h, tb);
        }
      }
      if constexpr (!kReverse) {
        if (p.final_state && on) {
          for (std::int64_t s = w; s < p.g.l.batch.num_seqs; s += kCarryWarps) {
            if (p.g.l.batch.length(s) == 0) p.final_state[s * p.final_stride + col] = 0.0f;
          }
        }
      }
    }
  }
};

// ------------------------------------------------------------------ phase 3
// Forward: out = z̄ + residual at every position, z̄ at every chunk (states,
// for the backward) and at each sequence's last chunk (final_state, for the
// generation step).
template <class T, int W>
struct DechunkApplyKernel {
  struct Params {
    ScanGrid g;
    const T* z;
    std::int64_t z_stride;
    const float* prob;
    const float* residual;  // optional
    std::int64_t residual_stride;
    const float* tile_in;  // the state entering each tile
    T* out;
    std::int64_t out_stride;
    float* states;  // optional: [capacity, d]
    std::int64_t states_stride;
    float* final_state;  // optional: [num_seqs, d]
    std::int64_t final_stride;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  static constexpr int kMinBlocks = kScanMinBlocks;
  TL_DEVICE void operator()(const Params& p) const {
    const Layout& l = p.g.l;
    for_each_tile<W>(p.g, [&](std::int64_t t, std::int64_t first, std::int64_t end, int col, int) {
      if (col >= l.d) return;
      float h[W];
      load_f32<W>(p.tile_in + t * l.d + col, h);
      for (std::int64_t c = first; c < end; ++c) {
        const ChunkStep k = chunk_step(l, p.prob, c);
        float z[W];
        if (k.hi > k.lo) load<T, W>(p.z + c * p.z_stride + col, z);
        else zero(z);
TL_UNROLL
        for (int i = 0; i < W; ++i) h[i] = dechunk::advance(k.a, h[i], k.p * z[i]);
        if (p.states) store_f32<W>(p.states + c * p.states_stride + col, h);
        if (p.final_state && closes_sequence(l, c, k.hi)) {
          const std::int64_t s = l.segs.csr() ? l.segs.sequence_of(l.batch.num_seqs, c) : l.batch.seq_of(k.lo);
          store_f32<W>(p.final_state + s * p.final_stride + col, h);
        }
        for (std::int64_t r = k.lo; r < k.hi; ++r) {
          store_out<T, W>(p.out + r * p.out_stride + col, h, p.residual ? p.residual + r * p.residual_stride + col : nullptr);
        }
      }
    });
  }
};

// Backward: λ from the tile's right, chunk by chunk leftwards: dL/dz_c =
// p̂_c λ_c, and per column block the partial sums of dL/dp̂_c =
// <λ_c, z_c - z̄_{c-1}> and of each position's <g_t, z̄_c> (the STE term).
template <class T, int W>
struct AdjointApplyKernel {
  struct Params {
    ScanGrid g;
    const T* grad_out;
    std::int64_t grad_out_stride;
    const T* z;
    std::int64_t z_stride;
    const float* prob;
    const float* states;  // the forward's z̄
    std::int64_t states_stride;
    const float* tile_in;  // λ entering each tile from its right
    T* grad_z;
    std::int64_t grad_z_stride;
    float* part_p;    // [column blocks, capacity]
    float* part_ste;  // [column blocks, positions], or null (no STE term)
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  static constexpr int kMinBlocks = kScanMinBlocks;
  TL_DEVICE void operator()(const Params& p) const {
    const Layout& l = p.g.l;
    const std::int64_t n = l.segs.total(l.batch);
    for_each_tile<W>(p.g, [&](std::int64_t t, std::int64_t first, std::int64_t end, int col, int lane) {
      const bool on = col < l.d;
      const int block = col / (32 * W);
      float lam[W];
      if (on) load_f32<W>(p.tile_in + t * l.d + col, lam);
      else zero(lam);
      float next = next_decay(l, p.prob, end - 1, n);
      for (std::int64_t c = end - 1; c >= first; --c) {
        const ChunkStep k = chunk_step(l, p.prob, c);
        float zbar[W], g[W];
        zero(g);
        if (on) load_f32<W>(p.states + c * p.states_stride + col, zbar);
        else zero(zbar);
        for (std::int64_t r = k.lo; r < k.hi; ++r) {
          float v[W], dot = 0.0f;
          if (on) load<T, W>(p.grad_out + r * p.grad_out_stride + col, v);
          else zero(v);
TL_UNROLL
          for (int i = 0; i < W; ++i) {
            g[i] += v[i];
            dot = fmaf(v[i], zbar[i], dot);
          }
          if (p.part_ste) {
            dot = warp::reduce(dot, Sum{});
            if (lane == 0) p.part_ste[block * l.batch.total + r] = dot;
          }
        }
TL_UNROLL
        for (int i = 0; i < W; ++i) lam[i] = dechunk::advance(next, lam[i], g[i]);
        next = k.a;
        // dL/dp̂_c: against the state before c (zero at a sequence's start).
        float prev[W], dp = 0.0f;
        if (on && k.a >= 0.0f && c > 0) load_f32<W>(p.states + (c - 1) * p.states_stride + col, prev);
        else zero(prev);
        float z[W];
        if (on && k.hi > k.lo) load<T, W>(p.z + c * p.z_stride + col, z);
        else zero(z);
        float dz[W];
TL_UNROLL
        for (int i = 0; i < W; ++i) {
          dp = fmaf(lam[i], z[i] - prev[i], dp);
          dz[i] = k.hi > k.lo ? k.p * lam[i] : 0.0f;
        }
        if (on) store<T, W>(p.grad_z + c * p.grad_z_stride + col, dz);
        dp = warp::reduce(dp, Sum{});
        if (lane == 0) p.part_p[block * l.capacity + c] = dp;
      }
    });
  }
};

// ------------------------------------------------------------------ dL/dp
// A thread per position: the STE term (sign · Σ partials) everywhere, and at
// a chunk's first position the EMA's term through the clamp.
struct DechunkProbGradKernel {
  struct Params {
    Layout l;
    const float* prob;
    const float* part_p;
    const float* part_ste;  // null: no STE term
    int blocks;             // column blocks
    bool accumulate;
    float* grad_prob;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    const Layout& l = p.l;
    work::thread_items(l.batch.total, [&](std::int64_t r) {
      float gp = 0.0f;
      if (p.part_ste) {
        float s = 0.0f;
        for (int k = 0; k < p.blocks; ++k) s += p.part_ste[k * l.batch.total + r];
        gp = dechunk::ste_sign(p.prob[r]) * s;
      }
      const std::int64_t c = l.segs.segment_of(l.batch, r);
      std::int64_t lo, hi;
      l.segs.positions(l.batch, c, lo, hi);
      if (r == lo && dechunk::clamp_passes(p.prob[r])) {
        float s = 0.0f;
        for (int k = 0; k < p.blocks; ++k) s += p.part_p[k * l.capacity + c];
        gp += s;
      }
      p.grad_prob[r] = p.accumulate ? p.grad_prob[r] + gp : gp;
    });
  }
};

// ------------------------------------------------------------------ the generation step
// A warp per stream: a boundary folds its new chunk vector into the state,
// any other position keeps it; the output is the state plus the residual.
template <class T, int W>
struct DechunkStepKernel {
  struct Params {
    const T* z;  // [streams, d]: read at boundaries only
    std::int64_t z_stride;
    const float* prob;               // [streams]
    const std::uint8_t* boundary;    // [streams], or null: p > 0.5
    const std::uint8_t* first;       // [streams], or null: none starts a sequence
    const float* residual;           // optional
    std::int64_t residual_stride;
    float* state;  // [streams, d], read and written
    std::int64_t state_stride;
    T* out;
    std::int64_t out_stride;
    std::int64_t streams;
    int d;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.streams, [&](std::int64_t s, int lane) {
      const float pr = p.prob[s];
      const bool at = p.boundary ? p.boundary[s] != 0 : pr > 0.5f;
      const bool opens = p.first && p.first[s] != 0;
      const float ph = at ? dechunk::clamp_p(pr) : 0.0f;
      const float a = opens ? dechunk::kReset : (at ? 1.0f - ph : 1.0f);
      for (int col = lane * W; col < p.d; col += 32 * W) {
        float h[W], z[W];
        load_f32<W>(p.state + s * p.state_stride + col, h);
        if (at) load<T, W>(p.z + s * p.z_stride + col, z);
        else zero(z);
TL_UNROLL
        for (int i = 0; i < W; ++i) h[i] = dechunk::advance(a, h[i], ph * z[i]);
        store_f32<W>(p.state + s * p.state_stride + col, h);
        store_out<T, W>(p.out + s * p.out_stride + col, h, p.residual ? p.residual + s * p.residual_stride + col : nullptr);
      }
    });
  }
};

}  // namespace tokenless::bottleneck::detail
