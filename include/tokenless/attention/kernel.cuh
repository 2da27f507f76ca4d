#pragma once
// The attention core's schedule: FlashAttention-2 tiling on mma.sync
// (m16n8k16, fp32 accumulation), with the variant's hooks deciding which key
// tiles are loaded and which are masked (attention/policy.hpp).
//
// Blocks of 4 warps; a warp owns 16 query rows (forward, dQ) or 16 keys
// (dK/dV). Shared-memory rows are padded by 16 bytes, so the 8 rows an
// ldmatrix reads fall in distinct banks. Rows past a sequence's end are
// zero-filled, so that masked products never meet garbage (0 x NaN).
//
// Three kernels for the backward, none with atomics, so every gradient is
// bit-identical from run to run: the row dot products D = rowsum(dO * O),
// dQ by query tile (walking the keys as the forward does) and dK/dV by key
// tile (walking the queries, every head of the GQA group in turn).
#include <tokenless/attention/policy.hpp>
#include <tokenless/core/async_copy.cuh>
#include <tokenless/core/config.hpp>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/launch.cuh>
#include <tokenless/core/mma.cuh>
#include <tokenless/core/varlen.hpp>
#include <tokenless/core/vec.hpp>

#include <cmath>
#include <cstdint>

namespace tokenless::attention::detail {

static_assert(kTuningSm80 == kTuningSm90, "the attention kernels are instantiated once for every architecture");

inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

template <int D>
struct Traits {
  static_assert(D % 16 == 0, "head dims are multiples of 16 (the mma k step)");
  static constexpr int kThreads = 128;  // 4 warps
  static constexpr int kBlockQ = kTuningSm90.block_q;
  static constexpr int kBlockK = kTuningSm90.block_k;
  static constexpr int kBwdBlockQ = D <= 64 ? kTuningSm90.bwd_block_q_small : kTuningSm90.bwd_block_q_large;
  static constexpr int kStride = D + 8;  // a shared-memory row, in elements
  static_assert(kBlockQ == 16 * (kThreads / 32) && kBlockK % 16 == 0 && kBwdBlockQ % 16 == 0,
                "a warp owns 16 rows of a tile");
};

// What every attention kernel reads.
template <class V, class T>
struct Problem {
  const T* q;
  const T* k;
  const T* v;
  std::int64_t q_stride, k_stride, v_stride;  // elements between positions
  VarlenBatch q_batch, k_batch;
  int heads, group;  // query heads; query heads per key/value head
  float scale;       // softmax scale
  typename V::Params variant;
};

template <class V, class T>
TL_DEVICE TL_FORCEINLINE SeqView view_of(const Problem<V, T>& pr, std::int64_t b) {
  SeqView s;
  s.b = b;
  s.q_start = pr.q_batch.start(b);
  s.k_start = pr.k_batch.start(b);
  s.q_len = static_cast<int>(pr.q_batch.start(b + 1) - s.q_start);
  s.k_len = static_cast<int>(pr.k_batch.start(b + 1) - s.k_start);
  return s;
}

// Tiles of `rows` over a batch: sequence b owns tile indices
// [start(b) / rows + b, start(b + 1) / rows + b + 1), at least as many as it
// needs, so the grid is known on the host (total / rows + num_seqs) without
// reading cu_seqlens. Blocks past a sequence's end return.
inline std::int64_t tile_count(const VarlenBatch& bt, int rows) { return bt.total / rows + bt.num_seqs; }
TL_DEVICE TL_FORCEINLINE bool find_tile(const VarlenBatch& bt, int rows, std::int64_t t, std::int64_t& b, int& lo) {
  std::int64_t a = 0, z = bt.num_seqs;  // the last b whose first tile index is <= t
  while (z - a > 1) {
    const std::int64_t mid = (a + z) / 2;
    if (bt.start(mid) / rows + mid <= t) a = mid;
    else z = mid;
  }
  b = a;
  lo = static_cast<int>((t - (bt.start(a) / rows + a)) * rows);
  return lo < bt.length(a);
}

TL_DEVICE TL_FORCEINLINE Range clip(Range r, int n) { return {imax(r.lo, 0), imin(r.hi, n)}; }

// Rows [first, first + kRows) of a [positions, stride] matrix (already offset
// to its head) into a padded shared tile; rows at and past `valid` are zero.
template <int D, int kRows, class T>
TL_DEVICE TL_FORCEINLINE void load_rows(T* smem, const T* g, std::int64_t stride, std::int64_t first, int valid) {
  constexpr int kChunks = D / 8;
  for (int c = static_cast<int>(threadIdx.x); c < kRows * kChunks; c += Traits<D>::kThreads) {
    const int r = c / kChunks, ch = c % kChunks;
    T* dst = smem + r * Traits<D>::kStride + ch * 8;
    if (r < valid) {
      async::copy16(dst, g + (first + r) * stride + ch * 8);
    } else {
      *reinterpret_cast<Vec<std::uint32_t, 4>*>(dst) = Vec<std::uint32_t, 4>{};
    }
  }
}

// Fragments from padded shared tiles (core/mma.cuh has the layouts).
// A: rows [r0, r0 + 16), columns [c0, c0 + 16) of a row-major tile.
template <int D, class T>
TL_DEVICE TL_FORCEINLINE mma::FragA load_a(const T* smem, int r0, int c0) {
  const int lane = static_cast<int>(threadIdx.x & 31u);
  mma::FragA a;
  mma::ldmatrix_x4(a.x, smem + (r0 + (lane & 15)) * Traits<D>::kStride + c0 + (lane >> 4) * 8);
  return a;
}
// B for two n tiles from a tile stored [n][k]: n in [n0, n0 + 16), k in [k0, k0 + 16).
template <int D, class T>
TL_DEVICE TL_FORCEINLINE void load_b_nk(const T* smem, int n0, int k0, mma::FragB (&b)[2]) {
  const int lane = static_cast<int>(threadIdx.x & 31u), i = lane >> 3;
  std::uint32_t r[4];
  mma::ldmatrix_x4(r, smem + (n0 + (i >> 1) * 8 + (lane & 7)) * Traits<D>::kStride + k0 + (i & 1) * 8);
  b[0] = {{r[0], r[1]}};
  b[1] = {{r[2], r[3]}};
}
// B for two n tiles from a tile stored [k][n] (transposed on the way).
template <int D, class T>
TL_DEVICE TL_FORCEINLINE void load_b_kn(const T* smem, int k0, int n0, mma::FragB (&b)[2]) {
  const int lane = static_cast<int>(threadIdx.x & 31u), i = lane >> 3;
  std::uint32_t r[4];
  mma::ldmatrix_x4_trans(r, smem + (k0 + (i & 1) * 8 + (lane & 7)) * Traits<D>::kStride + n0 + (i >> 1) * 8);
  b[0] = {{r[0], r[1]}};
  b[1] = {{r[2], r[3]}};
}
// Two accumulator tiles (columns [16kk, 16kk + 16)) as the A operand of the
// next product: the C layout of a row pair is the A layout.
template <class T>
TL_DEVICE TL_FORCEINLINE mma::FragA to_a(const mma::FragC& lo, const mma::FragC& hi) {
  return {{mma::pack<T>(lo.x[0], lo.x[1]), mma::pack<T>(lo.x[2], lo.x[3]), mma::pack<T>(hi.x[0], hi.x[1]),
           mma::pack<T>(hi.x[2], hi.x[3])}};
}

// C (rows of 16, n columns) += A (16 x kK, from shared rows) · B (from a [n][k] tile).
template <int D, int kN, int kK, class T>
TL_DEVICE TL_FORCEINLINE void gemm_nk(mma::FragC (&c)[kN / 8], const T* a_smem, int a_row, const T* b_smem) {
TL_UNROLL
  for (int ks = 0; ks < kK / 16; ++ks) {
    const mma::FragA a = load_a<D>(a_smem, a_row, ks * 16);
TL_UNROLL
    for (int np = 0; np < kN / 16; ++np) {
      mma::FragB b[2];
      load_b_nk<D>(b_smem, np * 16, ks * 16, b);
      mma::mma_16816<T>(c[2 * np], a, b[0]);
      mma::mma_16816<T>(c[2 * np + 1], a, b[1]);
    }
  }
}
// C (16 x kN) += P (16 x kK, accumulator tiles) · B (from a [k][n] tile).
template <int D, int kN, int kK, class T>
TL_DEVICE TL_FORCEINLINE void gemm_pk(mma::FragC (&c)[kN / 8], const mma::FragC (&p)[kK / 8], const T* b_smem) {
TL_UNROLL
  for (int kk = 0; kk < kK / 16; ++kk) {
    const mma::FragA a = to_a<T>(p[2 * kk], p[2 * kk + 1]);
TL_UNROLL
    for (int np = 0; np < kN / 16; ++np) {
      mma::FragB b[2];
      load_b_kn<D>(b_smem, kk * 16, np * 16, b);
      mma::mma_16816<T>(c[2 * np], a, b[0]);
      mma::mma_16816<T>(c[2 * np + 1], a, b[1]);
    }
  }
}

// The scaled, transformed score of a pair, and whether the pair is visible.
template <class V>
TL_DEVICE TL_FORCEINLINE float score(const typename V::Params& vp, float raw, float scale) {
  if constexpr (HasTransform<V>) return V::transform(vp, raw * scale);
  else return raw * scale;
}
template <class V>
TL_DEVICE TL_FORCEINLINE bool pair_visible(const typename V::Params& vp, const SeqView& s, Range row, int i, int j) {
  if constexpr (HasRowKeys<V>) return j >= row.lo && j < row.hi;
  else return V::visible(vp, s, i, j);
}
template <class V>
TL_DEVICE TL_FORCEINLINE Range row_range(const typename V::Params& vp, const SeqView& s, int i) {
  if (i >= s.q_len) return {0, 0};
  if constexpr (HasRowKeys<V>) return V::row_keys(vp, s, i);
  else return {0, 0};  // unused: the per-element hook decides
}

TL_DEVICE TL_FORCEINLINE float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
TL_DEVICE TL_FORCEINLINE float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// ------------------------------------------------------------------ query tiles
// A block's query tile (blockIdx.x) and head (blockIdx.y), its rows' warp
// layout, and the keys any of its queries may see.
struct QueryTile {
  SeqView s;
  int h, hk, q_lo, q_hi;
  Range keys;
  int row0;  // the rows of this thread's x[0..1] and, 8 on, of x[2..3]
};
template <class V, class T>
TL_DEVICE TL_FORCEINLINE bool query_tile(const Problem<V, T>& pr, int rows, QueryTile& t) {
  std::int64_t b;
  if (!find_tile(pr.q_batch, rows, blockIdx.x, b, t.q_lo)) return false;  // block-uniform
  t.s = view_of(pr, b);
  t.h = static_cast<int>(blockIdx.y);
  t.hk = t.h / pr.group;
  t.q_hi = imin(t.q_lo + rows, t.s.q_len);
  t.keys = clip(V::key_range(pr.variant, t.s, t.q_lo, t.q_hi), t.s.k_len);
  t.row0 = t.q_lo + static_cast<int>(threadIdx.x >> 5) * 16 + static_cast<int>((threadIdx.x & 31u) >> 2);
  return true;
}

// ------------------------------------------------------------------ forward
// A warp's 16 rows under the online softmax: running max (base 2), sum and
// the unnormalised output, in the accumulator layout (x[0..1] row g, x[2..3]
// row g + 8).
template <int D>
struct RowState {
  float m[2] = {-INFINITY, -INFINITY};
  float l[2] = {0.0f, 0.0f};
  mma::FragC acc[D / 8] = {};
};

// Keys [k0, k0 + kn) of the tiles the caller loaded (K landed, V possibly
// in flight) for a warp's 16 rows, whose queries are q[2] with visible
// ranges rows[2]. `full`: no pair of the tile is masked. Ends with V read,
// after a barrier every thread of the block reaches.
template <class V, class T, int D, int kBK>
TL_DEVICE TL_FORCEINLINE void attend_tile(const typename V::Params& vp, const SeqView& s, float scale,
                                          const mma::FragA (&qf)[D / 16], const T* sk, const T* sv, int k0, int kn,
                                          bool full, const int (&q)[2], const Range (&rows)[2], RowState<D>& st) {
  const int col = 2 * static_cast<int>(threadIdx.x & 3u);
  mma::FragC sc[kBK / 8] = {};
TL_UNROLL
  for (int ks = 0; ks < D / 16; ++ks) {
TL_UNROLL
    for (int np = 0; np < kBK / 16; ++np) {
      mma::FragB bb[2];
      load_b_nk<D>(sk, np * 16, ks * 16, bb);
      mma::mma_16816<T>(sc[2 * np], qf[ks], bb[0]);
      mma::mma_16816<T>(sc[2 * np + 1], qf[ks], bb[1]);
    }
  }
TL_UNROLL
  for (int j = 0; j < kBK / 8; ++j) {
TL_UNROLL
    for (int e = 0; e < 4; ++e) {
      float x = score<V>(vp, sc[j].x[e], scale) * kLog2e;
      if (!full) {
        const int key = k0 + 8 * j + col + (e & 1), r = e >> 1;
        if (key >= k0 + kn || !pair_visible<V>(vp, s, rows[r], q[r], key)) x = -INFINITY;
      }
      sc[j].x[e] = x;
    }
  }
  // Online softmax, in base 2; a row that has seen no visible key keeps
  // m = -inf and uses 0 as its reference, so exp2 never sees inf - inf.
TL_UNROLL
  for (int r = 0; r < 2; ++r) {
    float mx = -INFINITY;
TL_UNROLL
    for (int j = 0; j < kBK / 8; ++j) mx = fmaxf(mx, fmaxf(sc[j].x[2 * r], sc[j].x[2 * r + 1]));
    const float m_new = fmaxf(st.m[r], quad_max(mx));
    const float ref = m_new == -INFINITY ? 0.0f : m_new;
    const float alpha = exp2f(st.m[r] - ref);
    float sum = 0.0f;
TL_UNROLL
    for (int j = 0; j < kBK / 8; ++j) {
      sc[j].x[2 * r] = exp2f(sc[j].x[2 * r] - ref);
      sc[j].x[2 * r + 1] = exp2f(sc[j].x[2 * r + 1] - ref);
      sum += sc[j].x[2 * r] + sc[j].x[2 * r + 1];
    }
    st.l[r] = st.l[r] * alpha + quad_sum(sum);
    st.m[r] = m_new;
TL_UNROLL
    for (int j = 0; j < D / 8; ++j) {
      st.acc[j].x[2 * r] *= alpha;
      st.acc[j].x[2 * r + 1] *= alpha;
    }
  }
  async::wait<0>();
  __syncthreads();
  gemm_pk<D, D, kBK>(st.acc, sc, sv);
}

// Row r's normaliser and LSE: a row that saw no key gives 0 and -inf.
template <int D>
TL_DEVICE TL_FORCEINLINE float row_inverse(const RowState<D>& st, int r) {
  return st.l[r] > 0.0f ? 1.0f / st.l[r] : 0.0f;
}
template <int D>
TL_DEVICE TL_FORCEINLINE float row_lse(const RowState<D>& st, int r) {
  return st.l[r] > 0.0f ? (st.m[r] + log2f(st.l[r])) * kLn2 : -INFINITY;
}

// Row r (0: g, 1: g + 8) of accumulator tiles times `scale`, as 16-bit
// pairs from o (the lane's first column), 8 columns a tile.
template <class T, int N>
TL_DEVICE TL_FORCEINLINE void store_pairs(T* o, const mma::FragC (&acc)[N], int r, float scale) {
TL_UNROLL
  for (int j = 0; j < N; ++j) {
    *reinterpret_cast<std::uint32_t*>(o + 8 * j) = mma::pack<T>(acc[j].x[2 * r] * scale, acc[j].x[2 * r + 1] * scale);
  }
}

// Row r of the warp's output, normalised.
template <class T, int D>
TL_DEVICE TL_FORCEINLINE void store_row(T* o, const RowState<D>& st, int r) {
  store_pairs<T>(o, st.acc, r, row_inverse(st, r));
}

template <class V, class T, int D>
struct ForwardKernel {
  using Tr = Traits<D>;
  static constexpr int kThreads = Tr::kThreads, kBQ = Tr::kBlockQ, kBK = Tr::kBlockK, kS = Tr::kStride;
  struct Params {
    Problem<V, T> pr;
    T* out;
    std::int64_t out_stride;
    float* lse;  // [heads, q_batch.total], natural log; optional
    DeviceStatus* status;
  };
  static constexpr std::size_t kSmemBytes = static_cast<std::size_t>(kBQ + 2 * kBK) * kS * sizeof(T);

  TL_DEVICE void operator()(const Params& p) const {
    const Problem<V, T>& pr = p.pr;
    QueryTile t;
    if (!query_tile(pr, kBQ, t)) return;
    const auto& [s, h, hk, q_lo, q_hi, keys, row0] = t;

    T* sq = dynamic_smem<T>();
    T* sk = sq + kBQ * kS;
    T* sv = sk + kBK * kS;
    load_rows<D, kBQ>(sq, pr.q + h * D, pr.q_stride, s.q_start + q_lo, q_hi - q_lo);
    async::commit();

    const int warp = static_cast<int>(threadIdx.x >> 5), lane = static_cast<int>(threadIdx.x & 31u);
    const int q[2] = {row0, row0 + 8};
    const Range rows[2] = {row_range<V>(pr.variant, s, q[0]), row_range<V>(pr.variant, s, q[1])};

    async::wait<0>();
    __syncthreads();
    mma::FragA qf[D / 16];
TL_UNROLL
    for (int ks = 0; ks < D / 16; ++ks) qf[ks] = load_a<D>(sq, warp * 16, ks * 16);

    RowState<D> st;
    for (int k0 = keys.lo; k0 < keys.hi; k0 += kBK) {
      const int kn = imin(kBK, s.k_len - k0);
      __syncthreads();  // every warp is done with the previous tile
      load_rows<D, kBK>(sk, pr.k + hk * D, pr.k_stride, s.k_start + k0, kn);
      async::commit();
      load_rows<D, kBK>(sv, pr.v + hk * D, pr.v_stride, s.k_start + k0, kn);
      async::commit();
      async::wait<1>();  // K has landed; V may still be in flight
      __syncthreads();
      const bool full = kn == kBK && k0 + kBK <= keys.hi && V::tile_full(pr.variant, s, q_lo, q_hi, k0, k0 + kBK);
      attend_tile<V, T, D, kBK>(pr.variant, s, pr.scale, qf, sk, sv, k0, kn, full, q, rows, st);
    }

    // Epilogue: a row that saw no key writes zeros and an LSE of -inf.
TL_UNROLL
    for (int r = 0; r < 2; ++r) {
      if (q[r] >= q_hi) continue;
      store_row<T, D>(p.out + (s.q_start + q[r]) * p.out_stride + h * D + 2 * (lane & 3), st, r);
      if (p.lse && (lane & 3) == 0) p.lse[h * pr.q_batch.total + s.q_start + q[r]] = row_lse(st, r);
    }
  }
};

// ------------------------------------------------------------------ decode
// A few new queries per sequence (generation, or verifying drafts) against a
// KV cache: sequence b's keys are rows [b capacity, b capacity + len[b]) of
// the cache. GQA query packing: a block's 64 rows are (query, head) pairs of
// one key/value head's group, row r = query r / G, head hk G + r % G, so
// every key tile loaded serves the whole group. Split-KV (flash-decoding):
// grid.y splits the keys in chunks; each split writes its normalised
// partial output and LSE, and CombineKernel merges them.
template <class V, class T>
struct DecodeParams {
  const T* q;
  std::int64_t q_stride;
  VarlenBatch q_batch;  // the new queries of every sequence
  const T* k_cache;
  const T* v_cache;
  std::int64_t cache_stride, capacity;  // elements between positions; positions a sequence
  const std::int32_t* cache_len;        // [num_seqs], the new tokens included
  int heads, group, slabs, splits, split_keys;
  float scale;
  typename V::Params variant;
  T* out;
  std::int64_t out_stride;
  float* lse;       // [heads, q_batch.total]; optional
  float* part_out;  // [splits, q_batch.total, heads, D] fp32 (splits > 1)
  float* part_lse;  // [splits, q_batch.total, heads]
  DeviceStatus* status;
};

template <class V, class T, int D>
struct DecodeKernel {
  using Tr = Traits<D>;
  static constexpr int kThreads = Tr::kThreads, kRows = Tr::kBlockQ, kBK = Tr::kBlockK, kS = Tr::kStride;
  using Params = DecodeParams<V, T>;
  static constexpr std::size_t kSmemBytes = static_cast<std::size_t>(kRows + 2 * kBK) * kS * sizeof(T);

  TL_DEVICE void operator()(const Params& p) const {
    const int G = p.group, kv_heads = p.heads / G;
    const std::int64_t item = blockIdx.x;
    const int slab = static_cast<int>(item % p.slabs);
    const int hk = static_cast<int>((item / p.slabs) % kv_heads);
    const std::int64_t b = item / p.slabs / kv_heads;
    const int split = static_cast<int>(blockIdx.y);
    SeqView s;
    s.b = b;
    s.q_start = p.q_batch.start(b);
    s.q_len = static_cast<int>(p.q_batch.start(b + 1) - s.q_start);
    s.k_start = b * p.capacity;
    s.k_len = p.cache_len[b];
    const int r0 = slab * kRows, n_rows = G * s.q_len;
    if (r0 >= n_rows) return;  // block-uniform
    const int i_lo = r0 / G, i_hi = imin(s.q_len, (r0 + kRows - 1) / G + 1);  // the slab's queries
    const Range all = clip(V::key_range(p.variant, s, i_lo, i_hi), s.k_len);
    const Range keys = intersect(all, {split * p.split_keys, (split + 1) * p.split_keys});

    T* sq = dynamic_smem<T>();
    T* sk = sq + kRows * kS;
    T* sv = sk + kBK * kS;
    // Q rows gathered from (query, head) pairs.
    for (int c = static_cast<int>(threadIdx.x); c < kRows * (D / 8); c += kThreads) {
      const int r = c / (D / 8), ch = c % (D / 8), row = r0 + r;
      T* dst = sq + r * kS + ch * 8;
      if (row < n_rows) {
        async::copy16(dst, p.q + (s.q_start + row / G) * p.q_stride + (hk * G + row % G) * D + ch * 8);
      } else {
        *reinterpret_cast<Vec<std::uint32_t, 4>*>(dst) = Vec<std::uint32_t, 4>{};
      }
    }
    async::commit();

    const int warp = static_cast<int>(threadIdx.x >> 5), lane = static_cast<int>(threadIdx.x & 31u);
    const int rr[2] = {r0 + warp * 16 + (lane >> 2), r0 + warp * 16 + (lane >> 2) + 8};
    const int q[2] = {imin(rr[0], n_rows - 1) / G, imin(rr[1], n_rows - 1) / G};
    const Range rows[2] = {rr[0] < n_rows ? row_range<V>(p.variant, s, q[0]) : Range{},
                           rr[1] < n_rows ? row_range<V>(p.variant, s, q[1]) : Range{}};
    async::wait<0>();
    __syncthreads();
    mma::FragA qf[D / 16];
TL_UNROLL
    for (int ks = 0; ks < D / 16; ++ks) qf[ks] = load_a<D>(sq, warp * 16, ks * 16);

    RowState<D> st;
    for (int k0 = keys.lo; k0 < keys.hi; k0 += kBK) {
      const int kn = imin(kBK, keys.hi - k0);  // the split's end masks like the sequence's
      __syncthreads();
      load_rows<D, kBK>(sk, p.k_cache + hk * D, p.cache_stride, s.k_start + k0, kn);
      async::commit();
      load_rows<D, kBK>(sv, p.v_cache + hk * D, p.cache_stride, s.k_start + k0, kn);
      async::commit();
      async::wait<1>();
      __syncthreads();
      const bool full = kn == kBK && V::tile_full(p.variant, s, i_lo, i_hi, k0, k0 + kBK);
      attend_tile<V, T, D, kBK>(p.variant, s, p.scale, qf, sk, sv, k0, kn, full, q, rows, st);
    }

TL_UNROLL
    for (int r = 0; r < 2; ++r) {
      if (rr[r] >= n_rows) continue;
      const std::int64_t pos = s.q_start + rr[r] / G;
      const int h = hk * G + rr[r] % G;
      if (p.splits == 1) {
        store_row<T, D>(p.out + pos * p.out_stride + h * D + 2 * (lane & 3), st, r);
        if (p.lse && (lane & 3) == 0) p.lse[h * p.q_batch.total + pos] = row_lse(st, r);
      } else {
        const std::int64_t at = (split * p.q_batch.total + pos) * p.heads + h;
        const float inv = row_inverse(st, r);
        float* o = p.part_out + at * D + 2 * (lane & 3);
TL_UNROLL
        for (int j = 0; j < D / 8; ++j) {
          o[8 * j] = st.acc[j].x[2 * r] * inv;
          o[8 * j + 1] = st.acc[j].x[2 * r + 1] * inv;
        }
        if ((lane & 3) == 0) p.part_lse[at] = row_lse(st, r);
      }
    }
  }
};

// Merges the splits' partial outputs by their LSEs: a warp per (query, head).
// A split that saw no key (LSE -inf) weighs 0; a row with none writes zeros.
template <class T>
struct CombineKernel {
  struct Params {
    const float* part_out;
    const float* part_lse;
    std::int64_t positions;
    int heads, head_dim, splits;
    T* out;
    std::int64_t out_stride;
    float* lse;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.positions * p.heads, [&](std::int64_t item, int lane) {
      const std::int64_t pos = item / p.heads;
      const int h = static_cast<int>(item % p.heads);
      const std::int64_t stride = p.positions * p.heads;  // between splits
      float m = -INFINITY;
      for (int sp = 0; sp < p.splits; ++sp) m = fmaxf(m, p.part_lse[sp * stride + item]);
      const float ref = m == -INFINITY ? 0.0f : m;
      float total = 0.0f;
      for (int sp = 0; sp < p.splits; ++sp) total += expf(p.part_lse[sp * stride + item] - ref);
      const float inv = total > 0.0f ? 1.0f / total : 0.0f;
      for (int d = lane; d < p.head_dim; d += 32) {
        float acc = 0.0f;
        for (int sp = 0; sp < p.splits; ++sp) {
          const float w = expf(p.part_lse[sp * stride + item] - ref);
          if (w > 0.0f) acc += w * p.part_out[(sp * stride + item) * p.head_dim + d];
        }
        p.out[pos * p.out_stride + h * p.head_dim + d] = from_float<T>(acc * inv);
      }
      if (p.lse && lane == 0) p.lse[h * p.positions + pos] = total > 0.0f ? ref + logf(total) : -INFINITY;
    });
  }
};

// The decode's device-side checks, a thread per sequence: at most
// max_queries new queries, and new_queries <= len <= capacity.
struct DecodeCheckKernel {
  struct Params {
    VarlenBatch q_batch;
    const std::int32_t* cache_len;
    std::int64_t capacity;
    int max_queries;
    DeviceStatus* status;
    int check;
  };
  static constexpr int kThreads = 256;
  static constexpr bool kReportsStatus = true;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.q_batch.num_seqs, [&](std::int64_t b) {
      const std::int64_t n = p.q_batch.length(b), len = p.cache_len[b];
      if (n > p.max_queries || len < n || len > p.capacity) device_fail(p.status, p.check, b);
    });
  }
};

// ------------------------------------------------------------------ backward
// D_i = sum_d dO[i, d] O[i, d] for every query and head (fp32), a warp each.
template <class T>
struct RowDotKernel {
  struct Params {
    const T* out;
    const T* grad_out;
    std::int64_t out_stride, grad_stride;
    std::int64_t positions;
    int heads, head_dim;
    float* dot;  // [heads, positions]
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.positions * p.heads, [&](std::int64_t item, int lane) {
      const std::int64_t pos = item / p.heads;
      const int h = static_cast<int>(item % p.heads);
      const T* o = p.out + pos * p.out_stride + h * p.head_dim;
      const T* g = p.grad_out + pos * p.grad_stride + h * p.head_dim;
      float sum = 0.0f;
      for (int d = lane; d < p.head_dim; d += 32) sum += to_float(o[d]) * to_float(g[d]);
TL_UNROLL
      for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      if (lane == 0) p.dot[h * p.positions + pos] = sum;
    });
  }
};

template <class V, class T>
struct BackwardParams {
  Problem<V, T> pr;
  const T* grad_out;
  std::int64_t grad_out_stride;
  const float* lse;  // [heads, q_batch.total]
  const float* dot;  // [heads, q_batch.total]
  T* grad;           // dQ, or dK
  T* grad_v;         // dV (dK/dV pass)
  std::int64_t grad_stride, grad_v_stride;
  DeviceStatus* status;
};

// The LSE in base 2 with "no visible key" (-inf) turned into +inf, so that
// exp2(score - lse) is 0 for such a row instead of NaN.
TL_DEVICE TL_FORCEINLINE float lse_base2(float lse) { return lse == -INFINITY ? INFINITY : lse * kLog2e; }

// dQ by query tile.
template <class V, class T, int D>
struct GradQKernel {
  using Tr = Traits<D>;
  static constexpr int kThreads = Tr::kThreads, kBQ = Tr::kBlockQ, kBK = Tr::kBlockK, kS = Tr::kStride;
  using Params = BackwardParams<V, T>;
  static constexpr std::size_t kSmemBytes = static_cast<std::size_t>(2 * kBQ + 2 * kBK) * kS * sizeof(T);

  TL_DEVICE void operator()(const Params& p) const {
    const Problem<V, T>& pr = p.pr;
    QueryTile t;
    if (!query_tile(pr, kBQ, t)) return;
    const auto& [s, h, hk, q_lo, q_hi, keys, row0] = t;

    T* sq = dynamic_smem<T>();
    T* sdo = sq + kBQ * kS;
    T* sk = sdo + kBQ * kS;
    T* sv = sk + kBK * kS;
    load_rows<D, kBQ>(sq, pr.q + h * D, pr.q_stride, s.q_start + q_lo, q_hi - q_lo);
    load_rows<D, kBQ>(sdo, p.grad_out + h * D, p.grad_out_stride, s.q_start + q_lo, q_hi - q_lo);
    async::commit();

    const int warp = static_cast<int>(threadIdx.x >> 5), col = 2 * static_cast<int>(threadIdx.x & 3u);
    const Range rows[2] = {row_range<V>(pr.variant, s, row0), row_range<V>(pr.variant, s, row0 + 8)};
    float lse2[2], dot[2];
TL_UNROLL
    for (int r = 0; r < 2; ++r) {
      const int row = row0 + 8 * r;
      const std::int64_t at = h * pr.q_batch.total + s.q_start + row;
      lse2[r] = row < q_hi ? lse_base2(p.lse[at]) : INFINITY;
      dot[r] = row < q_hi ? p.dot[at] : 0.0f;
    }

    mma::FragC dq[D / 8] = {};
    for (int k0 = keys.lo; k0 < keys.hi; k0 += kBK) {
      const int kn = imin(kBK, s.k_len - k0);
      __syncthreads();
      load_rows<D, kBK>(sk, pr.k + hk * D, pr.k_stride, s.k_start + k0, kn);
      load_rows<D, kBK>(sv, pr.v + hk * D, pr.v_stride, s.k_start + k0, kn);
      async::commit();
      async::wait<0>();
      __syncthreads();

      mma::FragC sc[kBK / 8] = {}, dp[kBK / 8] = {};
      gemm_nk<D, kBK, D>(sc, sq, warp * 16, sk);
      gemm_nk<D, kBK, D>(dp, sdo, warp * 16, sv);
      const bool full = kn == kBK && k0 + kBK <= keys.hi && V::tile_full(pr.variant, s, q_lo, q_hi, k0, k0 + kBK);
TL_UNROLL
      for (int j = 0; j < kBK / 8; ++j) {
TL_UNROLL
        for (int e = 0; e < 4; ++e) {
          const int r = e >> 1, key = k0 + 8 * j + col + (e & 1);
          const float y = score<V>(pr.variant, sc[j].x[e], pr.scale);
          float prob = exp2f(y * kLog2e - lse2[r]);
          if (!full && (key >= k0 + kn || !pair_visible<V>(pr.variant, s, rows[r], row0 + 8 * r, key))) prob = 0.0f;
          float ds = prob * (dp[j].x[e] - dot[r]);
          if constexpr (HasTransform<V>) ds *= V::transform_grad(pr.variant, y);
          sc[j].x[e] = ds * pr.scale;
        }
      }
      gemm_pk<D, D, kBK>(dq, sc, sk);
    }

TL_UNROLL
    for (int r = 0; r < 2; ++r) {
      const int row = row0 + 8 * r;
      if (row >= q_hi) continue;
      store_pairs<T>(p.grad + (s.q_start + row) * p.grad_stride + h * D + col, dq, r, 1.0f);
    }
  }
};

// dK and dV by key tile, over every query head of the group.
template <class V, class T, int D>
struct GradKVKernel {
  using Tr = Traits<D>;
  static constexpr int kThreads = Tr::kThreads, kBQ = Tr::kBwdBlockQ, kBK = Tr::kBlockK, kS = Tr::kStride;
  // Without a minimum of blocks ptxas capped the D = 64 pass at 168
  // registers and spilled 44 bytes; one block per SM lets it keep dK, dV, S
  // and dP in registers (one block of 4 warps per SM is FlashAttention-2's
  // occupancy for this pass too).
  static constexpr int kMinBlocks = 1;
  using Params = BackwardParams<V, T>;
  static constexpr std::size_t kTileBytes = static_cast<std::size_t>(2 * kBK + 2 * kBQ) * kS * sizeof(T);
  static constexpr std::size_t kSmemBytes = kTileBytes + 4 * kBQ * sizeof(float);

  TL_DEVICE void operator()(const Params& p) const {
    const Problem<V, T>& pr = p.pr;
    std::int64_t b;
    int k_lo;
    if (!find_tile(pr.k_batch, kBK, blockIdx.x, b, k_lo)) return;
    const SeqView s = view_of(pr, b);
    const int hk = static_cast<int>(blockIdx.y);
    const int kn = imin(kBK, s.k_len - k_lo);

    T* sk = dynamic_smem<T>();
    T* sv = sk + kBK * kS;
    T* sq = sv + kBK * kS;
    T* sdo = sq + kBQ * kS;
    float* slse = reinterpret_cast<float*>(dynamic_smem<unsigned char>() + kTileBytes);
    float* sdot = slse + kBQ;
    int* srow_lo = reinterpret_cast<int*>(sdot + kBQ);
    int* srow_hi = srow_lo + kBQ;
    load_rows<D, kBK>(sk, pr.k + hk * D, pr.k_stride, s.k_start + k_lo, kn);
    load_rows<D, kBK>(sv, pr.v + hk * D, pr.v_stride, s.k_start + k_lo, kn);
    async::commit();

    const int warp = static_cast<int>(threadIdx.x >> 5), lane = static_cast<int>(threadIdx.x & 31u);
    const int key0 = k_lo + warp * 16 + (lane >> 2), col = 2 * (lane & 3);
    Range queries{0, s.q_len};
    if constexpr (HasQueryRange<V>) queries = clip(V::query_range(pr.variant, s, k_lo, k_lo + kn), s.q_len);

    mma::FragC dk[D / 8] = {}, dv[D / 8] = {};
    for (int h = hk * pr.group; h < (hk + 1) * pr.group; ++h) {
      for (int q0 = queries.lo; q0 < queries.hi; q0 += kBQ) {
        const int qn = imin(kBQ, s.q_len - q0);
        if constexpr (!HasQueryRange<V>) {
          const Range r = V::key_range(pr.variant, s, q0, q0 + qn);
          if (r.hi <= k_lo || r.lo >= k_lo + kn) continue;  // block-uniform
        }
        __syncthreads();  // the previous step is consumed
        load_rows<D, kBQ>(sq, pr.q + h * D, pr.q_stride, s.q_start + q0, qn);
        load_rows<D, kBQ>(sdo, p.grad_out + h * D, p.grad_out_stride, s.q_start + q0, qn);
        async::commit();
        for (int i = static_cast<int>(threadIdx.x); i < kBQ; i += kThreads) {
          const std::int64_t at = h * pr.q_batch.total + s.q_start + q0 + i;
          slse[i] = i < qn ? lse_base2(p.lse[at]) : INFINITY;
          sdot[i] = i < qn ? p.dot[at] : 0.0f;
          const Range r = row_range<V>(pr.variant, s, q0 + i);
          srow_lo[i] = r.lo;
          srow_hi[i] = r.hi;
        }
        async::wait<0>();
        __syncthreads();

        // S^T = K Q^T and dP^T = V dO^T, 16 keys a warp by kBQ queries.
        mma::FragC st[kBQ / 8] = {}, dpt[kBQ / 8] = {};
        gemm_nk<D, kBQ, D>(st, sk, warp * 16, sq);
        gemm_nk<D, kBQ, D>(dpt, sv, warp * 16, sdo);
        const bool full = qn == kBQ && kn == kBK && V::tile_full(pr.variant, s, q0, q0 + kBQ, k_lo, k_lo + kBK);
TL_UNROLL
        for (int j = 0; j < kBQ / 8; ++j) {
TL_UNROLL
          for (int e = 0; e < 4; ++e) {
            const int qi = 8 * j + col + (e & 1), key = key0 + 8 * (e >> 1);
            const float y = score<V>(pr.variant, st[j].x[e], pr.scale);
            float prob = exp2f(y * kLog2e - slse[qi]);
            if (!full && (key >= k_lo + kn ||
                          !pair_visible<V>(pr.variant, s, Range{srow_lo[qi], srow_hi[qi]}, q0 + qi, key))) {
              prob = 0.0f;
            }
            float ds = prob * (dpt[j].x[e] - sdot[qi]);
            if constexpr (HasTransform<V>) ds *= V::transform_grad(pr.variant, y);
            st[j].x[e] = prob;
            dpt[j].x[e] = ds * pr.scale;
          }
        }
        gemm_pk<D, D, kBQ>(dv, st, sdo);  // dV += P^T dO
        gemm_pk<D, D, kBQ>(dk, dpt, sq);  // dK += dS^T Q
      }
    }

TL_UNROLL
    for (int r = 0; r < 2; ++r) {
      const int key = key0 + 8 * r;
      if (key >= k_lo + kn) continue;
      store_pairs<T>(p.grad + (s.k_start + key) * p.grad_stride + hk * D + col, dk, r, 1.0f);
      store_pairs<T>(p.grad_v + (s.k_start + key) * p.grad_v_stride + hk * D + col, dv, r, 1.0f);
    }
  }
};

}  // namespace tokenless::attention::detail
