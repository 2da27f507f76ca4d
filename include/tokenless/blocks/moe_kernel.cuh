#pragma once
// Mixtral-style MoE's schedule.
//
// Grouped GEMM: the rows of A fall into groups (experts) by device-side
// offsets, a VarlenBatch (offsets = cu_seqlens). A block computes a 64 x 64
// tile of C = A · B[g]ᵀ for one group, B[g] the group's [n, k] weight (an
// nn.Linear's layout). The grid has total / 64 + groups row tiles, at least
// as many as the groups need whatever their sizes (attention's tile_count):
// no count is read on the host. 16-bit types use mma.sync m16n8k16 (a warp
// 16 rows, 64-wide k steps through padded shared tiles); fp32 uses a SIMT
// tile (a thread 4 rows x 8 columns).
//
// Routing: a warp a token (softmax over the experts in fp32, top-k by value,
// lower expert first on ties, renormalised); dispatch by a stable radix sort
// of (expert, token·k + slot); combine a warp a token, reading its k rows.
// No atomics anywhere: every run gives the same bits.
#include <tokenless/attention/kernel.cuh>
#include <tokenless/blocks/policy.hpp>
#include <tokenless/core/async_copy.cuh>
#include <tokenless/core/config.hpp>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/mma.cuh>
#include <tokenless/core/varlen.hpp>
#include <tokenless/core/warp.cuh>

#include <cstdint>

namespace tokenless::blocks::detail {

inline constexpr int kGemmTile = 64;      // rows and columns of a block's C tile
inline constexpr int kMoeMaxExperts = 256;
inline constexpr int kMoeMaxTopK = 8;

// A group's row tiles (attention's mapping): tile t of the grid belongs to
// group g with rows [lo, lo + 64) of it, or to none (the block returns).
TL_DEVICE TL_FORCEINLINE bool group_tile(const VarlenBatch& groups, std::int64_t t, std::int64_t& g, int& lo) {
  return attention::detail::find_tile(groups, kGemmTile, t, g, lo);
}

template <class T>
struct GemmParams {
  const T* a;  // [m, k] rows lda apart
  std::int64_t lda;
  const T* b;  // groups x [n, k] (or [k, n] when B is k-major), rows ldb apart, groups b_stride apart
  std::int64_t ldb, b_stride;
  T* c;  // [m, n] rows ldc apart
  std::int64_t ldc;
  VarlenBatch groups;  // the row offsets (a single group: uniform(1, m))
  int n, k;
  DeviceStatus* status;  // optional: offsets checked on the device (null: made by the library)
  bool accumulate = false;  // C = round(C + A·B) instead of round(A·B)
};

// Tile loads: rows [0, rows) x columns [c0, c0 + 64) of g into a padded
// 64 x 72 tile; what lies past `rows` or past `cols` is zero (cols is a
// multiple of 8: whole 16-byte chunks).
template <class T>
TL_DEVICE TL_FORCEINLINE void load_tile(T* s, const T* g, std::int64_t ld, int rows, int c0, int cols) {
  constexpr int kS = attention::detail::Traits<kGemmTile>::kStride;
  for (int c = static_cast<int>(threadIdx.x); c < kGemmTile * (kGemmTile / 8); c += 128) {
    const int r = c / (kGemmTile / 8), ch = (c % (kGemmTile / 8)) * 8;
    T* dst = s + r * kS + ch;
    if (r < rows && c0 + ch < cols) async::copy16(dst, g + r * ld + c0 + ch);
    else *reinterpret_cast<Vec<std::uint32_t, 4>*>(dst) = Vec<std::uint32_t, 4>{};
  }
}

// A (16 rows from m0, 16 k from k0) from a tile stored [k][m]: ldmatrix
// .trans of the four 8 x 8 blocks in the A fragment's order (core/mma.cuh).
template <class T>
TL_DEVICE TL_FORCEINLINE mma::FragA load_a_km(const T* smem, int m0, int k0) {
  constexpr int kS = attention::detail::Traits<kGemmTile>::kStride;
  const int lane = static_cast<int>(threadIdx.x & 31u), i = lane >> 3;
  mma::FragA a;
  mma::ldmatrix_x4_trans(a.x, smem + (k0 + (i >> 1) * 8 + (lane & 7)) * kS + m0 + (i & 1) * 8);
  return a;
}

// Stores a warp's 16 x 64 accumulator rows into C (optionally adding C).
template <class C>
TL_DEVICE TL_FORCEINLINE void store_tile(C* c, std::int64_t ldc, const mma::FragC (&acc)[kGemmTile / 8], int warp,
                                         int rows, int cols, bool accumulate) {
  const int lane = static_cast<int>(threadIdx.x & 31u), gr = lane >> 2, t = lane & 3;
TL_UNROLL
  for (int j = 0; j < kGemmTile / 8; ++j) {
TL_UNROLL
    for (int i = 0; i < 4; ++i) {
      const int r = warp * 16 + gr + (i >= 2 ? 8 : 0), col = j * 8 + 2 * t + (i & 1);
      if (r < rows && col < cols) {
        C* o = c + r * ldc + col;
        *o = from_float<C>(accumulate ? to_float(*o) + acc[j].x[i] : acc[j].x[i]);
      }
    }
  }
}

// Tensor cores: a 64 x 64 tile of C = A · Bᵀ (B stored [n][k], kBKN false:
// the forward) or C = A · B (B stored [k][n], kBKN true: the data gradient),
// 4 warps of 16 rows, k in steps of 64.
template <class T, bool kBKN>
struct GroupedGemmKernel {
  using Tr = attention::detail::Traits<kGemmTile>;
  static constexpr int kS = Tr::kStride;
  struct Params : GemmParams<T> {};
  static constexpr int kThreads = Tr::kThreads;
  static_assert(kThreads == 128 && kGemmTile == 16 * (kThreads / 32), "a warp owns 16 rows");
  struct SharedStorage {
    T a[kGemmTile * kS];
    T b[kGemmTile * kS];
  };
  TL_DEVICE void operator()(const Params& p, SharedStorage& s) const {
    std::int64_t g;
    int lo;
    if (!group_tile(p.groups, blockIdx.x, g, lo)) return;
    const std::int64_t row0 = p.groups.start(g) + lo;
    const int rows = attention::imin(kGemmTile, static_cast<int>(p.groups.length(g)) - lo);
    const int n0 = static_cast<int>(blockIdx.y) * kGemmTile, cols = attention::imin(kGemmTile, p.n - n0);
    const T* a = p.a + row0 * p.lda;
    const T* b = p.b + g * p.b_stride + (kBKN ? n0 : static_cast<std::int64_t>(n0) * p.ldb);
    const int warp = static_cast<int>(threadIdx.x) >> 5;
    mma::FragC acc[kGemmTile / 8];
TL_UNROLL
    for (int j = 0; j < kGemmTile / 8; ++j) acc[j] = {};
    for (int k0 = 0; k0 < p.k; k0 += kGemmTile) {
      load_tile(s.a, a, p.lda, rows, k0, p.k);
      if constexpr (kBKN) load_tile(s.b, b + static_cast<std::int64_t>(k0) * p.ldb, p.ldb, p.k - k0, 0, cols);
      else load_tile(s.b, b, p.ldb, cols, k0, p.k);
      async::commit();
      async::wait<0>();
      __syncthreads();
      if constexpr (kBKN) {
TL_UNROLL
        for (int ks = 0; ks < kGemmTile / 16; ++ks) {
          const mma::FragA fa = attention::detail::load_a<kGemmTile>(s.a, warp * 16, ks * 16);
TL_UNROLL
          for (int np = 0; np < kGemmTile / 16; ++np) {
            mma::FragB fb[2];
            attention::detail::load_b_kn<kGemmTile>(s.b, ks * 16, np * 16, fb);
            mma::mma_16816<T>(acc[2 * np], fa, fb[0]);
            mma::mma_16816<T>(acc[2 * np + 1], fa, fb[1]);
          }
        }
      } else {
        attention::detail::gemm_nk<kGemmTile, kGemmTile, kGemmTile, T>(acc, s.a, warp * 16, s.b);
      }
      __syncthreads();
    }
    store_tile(p.c + row0 * p.ldc + n0, p.ldc, acc, warp, rows, cols, p.accumulate);
  }
};

template <class T>
struct WgradParams {
  const T* y;  // [m, n]
  std::int64_t ldy;
  const T* x;  // [m, k]
  std::int64_t ldx;
  float* w;    // groups x [n, k], groups n·k apart
  VarlenBatch groups;
  int n, k;
  int tiles_n;  // row tiles of W a group
  bool accumulate;
};

// The weight gradient of a grouped GEMM: W[g] (+)= Yᵀ · X over the group's
// rows, Y [m, n] and X [m, k] both grouped, W[g] [n, k] in fp32. A block a
// 64 x 64 tile of one group's W, the rows in steps of 64 (in order: the same
// bits on every run).
template <class T>
struct GroupedWgradKernel {
  using Tr = attention::detail::Traits<kGemmTile>;
  static constexpr int kS = Tr::kStride;
  struct Params : WgradParams<T> {};
  static constexpr int kThreads = Tr::kThreads;
  struct SharedStorage {
    T y[kGemmTile * kS];
    T x[kGemmTile * kS];
  };
  TL_DEVICE void operator()(const Params& p, SharedStorage& s) const {
    const int g = static_cast<int>(blockIdx.x) / p.tiles_n;
    const int n0 = (static_cast<int>(blockIdx.x) % p.tiles_n) * kGemmTile, k0 = static_cast<int>(blockIdx.y) * kGemmTile;
    const int rows_n = attention::imin(kGemmTile, p.n - n0), cols_k = attention::imin(kGemmTile, p.k - k0);
    const std::int64_t first = p.groups.start(g), count = p.groups.length(g);
    const int warp = static_cast<int>(threadIdx.x) >> 5;
    mma::FragC acc[kGemmTile / 8];
TL_UNROLL
    for (int j = 0; j < kGemmTile / 8; ++j) acc[j] = {};
    for (std::int64_t r0 = 0; r0 < count; r0 += kGemmTile) {
      const int rows = static_cast<int>(count - r0 < kGemmTile ? count - r0 : kGemmTile);
      // Y's rows [r][n0..] and X's rows [r][k0..]: both k-major for this product.
      load_tile(s.y, p.y + (first + r0) * p.ldy, p.ldy, rows, n0, p.n);
      load_tile(s.x, p.x + (first + r0) * p.ldx, p.ldx, rows, k0, p.k);
      async::commit();
      async::wait<0>();
      __syncthreads();
TL_UNROLL
      for (int ks = 0; ks < kGemmTile / 16; ++ks) {
        const mma::FragA fa = load_a_km(s.y, warp * 16, ks * 16);
TL_UNROLL
        for (int np = 0; np < kGemmTile / 16; ++np) {
          mma::FragB fb[2];
          attention::detail::load_b_kn<kGemmTile>(s.x, ks * 16, np * 16, fb);
          mma::mma_16816<T>(acc[2 * np], fa, fb[0]);
          mma::mma_16816<T>(acc[2 * np + 1], fa, fb[1]);
        }
      }
      __syncthreads();
    }
    store_tile(p.w + (static_cast<std::int64_t>(g) * p.n + n0) * p.k + k0, p.k, acc, warp, rows_n, cols_k,
               p.accumulate);
  }
};

// fp32: the same tiles on the SIMT cores, k in steps of 32, a thread 4 rows
// (16 row groups) by 8 columns (8 column groups, strided by 8), fmaf in k
// order. kBKN as GroupedGemmKernel's.
template <bool kBKN>
struct GroupedGemmF32Kernel {
  static constexpr int kK = 32;
  struct Params : GemmParams<float> {};
  static constexpr int kThreads = 128;
  struct SharedStorage {
    float a[kGemmTile][kK + 1];
    float b[kGemmTile][kK + 1];  // [n][k] whatever B's layout
  };
  TL_DEVICE void operator()(const Params& p, SharedStorage& s) const {
    std::int64_t g;
    int lo;
    if (!group_tile(p.groups, blockIdx.x, g, lo)) return;
    const std::int64_t row0 = p.groups.start(g) + lo;
    const int rows = attention::imin(kGemmTile, static_cast<int>(p.groups.length(g)) - lo);
    const int n0 = static_cast<int>(blockIdx.y) * kGemmTile, cols = attention::imin(kGemmTile, p.n - n0);
    const float* a = p.a + row0 * p.lda;
    const float* b = p.b + g * p.b_stride;
    const int tr = static_cast<int>(threadIdx.x) / 8, tc = static_cast<int>(threadIdx.x) % 8;
    float acc[4][8] = {};
    for (int k0 = 0; k0 < p.k; k0 += kK) {
      for (int c = static_cast<int>(threadIdx.x); c < kGemmTile * kK; c += kThreads) {
        const int r = c / kK, kk = c % kK;
        const bool kin = k0 + kk < p.k;
        s.a[r][kk] = r < rows && kin ? a[r * p.lda + k0 + kk] : 0.0f;
        const std::int64_t bi = kBKN ? static_cast<std::int64_t>(k0 + kk) * p.ldb + n0 + r
                                     : static_cast<std::int64_t>(n0 + r) * p.ldb + k0 + kk;
        s.b[r][kk] = r < cols && kin ? b[bi] : 0.0f;
      }
      __syncthreads();
      for (int kk = 0; kk < kK; ++kk) {
TL_UNROLL
        for (int i = 0; i < 4; ++i) {
          const float av = s.a[tr * 4 + i][kk];
TL_UNROLL
          for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(av, s.b[tc + 8 * j][kk], acc[i][j]);
        }
      }
      __syncthreads();
    }
TL_UNROLL
    for (int i = 0; i < 4; ++i) {
TL_UNROLL
      for (int j = 0; j < 8; ++j) {
        const int r = tr * 4 + i, col = tc + 8 * j;
        if (r < rows && col < cols) {
          float* o = p.c + (row0 + r) * p.ldc + n0 + col;
          *o = p.accumulate ? *o + acc[i][j] : acc[i][j];
        }
      }
    }
  }
};

// fp32's weight gradient: GroupedWgradKernel's tiles on the SIMT cores,
// the rows in steps of 32, a thread 4 x 8 of the tile.
struct GroupedWgradF32Kernel {
  static constexpr int kR = 32;
  struct Params : WgradParams<float> {};
  static constexpr int kThreads = 128;
  struct SharedStorage {
    float y[kR][kGemmTile + 1];
    float x[kR][kGemmTile + 1];
  };
  TL_DEVICE void operator()(const Params& p, SharedStorage& s) const {
    const int g = static_cast<int>(blockIdx.x) / p.tiles_n;
    const int n0 = (static_cast<int>(blockIdx.x) % p.tiles_n) * kGemmTile, k0 = static_cast<int>(blockIdx.y) * kGemmTile;
    const int rows_n = attention::imin(kGemmTile, p.n - n0), cols_k = attention::imin(kGemmTile, p.k - k0);
    const std::int64_t first = p.groups.start(g), count = p.groups.length(g);
    const int tr = static_cast<int>(threadIdx.x) / 8, tc = static_cast<int>(threadIdx.x) % 8;
    float acc[4][8] = {};
    for (std::int64_t r0 = 0; r0 < count; r0 += kR) {
      for (int c = static_cast<int>(threadIdx.x); c < kR * kGemmTile; c += kThreads) {
        const int r = c / kGemmTile, col = c % kGemmTile;
        const bool rin = r0 + r < count;
        s.y[r][col] = rin && col < rows_n ? p.y[(first + r0 + r) * p.ldy + n0 + col] : 0.0f;
        s.x[r][col] = rin && col < cols_k ? p.x[(first + r0 + r) * p.ldx + k0 + col] : 0.0f;
      }
      __syncthreads();
      for (int r = 0; r < kR; ++r) {
TL_UNROLL
        for (int i = 0; i < 4; ++i) {
          const float yv = s.y[r][tr * 4 + i];
TL_UNROLL
          for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(yv, s.x[r][tc + 8 * j], acc[i][j]);
        }
      }
      __syncthreads();
    }
TL_UNROLL
    for (int i = 0; i < 4; ++i) {
TL_UNROLL
      for (int j = 0; j < 8; ++j) {
        const int r = tr * 4 + i, col = tc + 8 * j;
        if (r < rows_n && col < cols_k) {
          float* o = p.w + (static_cast<std::int64_t>(g) * p.n + n0 + r) * p.k + k0 + col;
          *o = p.accumulate ? *o + acc[i][j] : acc[i][j];
        }
      }
    }
  }
};

// ------------------------------------------------------------------ routing

inline constexpr int kMoePerLane = kMoeMaxExperts / 32;

// A row's softmax over the experts in fp32, lane-strided: p[q] is expert
// lane + 32q's probability (0 past the experts).
template <class T>
TL_DEVICE TL_FORCEINLINE void row_softmax(const T* row, int experts, int lane, float (&p)[kMoePerLane]) {
  float mx = -INFINITY;
TL_UNROLL
  for (int q = 0; q < kMoePerLane; ++q) {
    const int e = lane + 32 * q;
    p[q] = e < experts ? to_float(row[e]) : -INFINITY;
    mx = fmaxf(mx, p[q]);
  }
  mx = warp::reduce(mx, Max{});
  float sum = 0.0f;
TL_UNROLL
  for (int q = 0; q < kMoePerLane; ++q) {
    p[q] = lane + 32 * q < experts ? expf(p[q] - mx) : 0.0f;
    sum += p[q];
  }
  sum = warp::reduce(sum, Sum{});
TL_UNROLL
  for (int q = 0; q < kMoePerLane; ++q) p[q] /= sum;
}

// The warp's next pick: the largest entry of p over the lanes (the lower
// expert first on ties), then marked taken (below every probability).
TL_DEVICE TL_FORCEINLINE void warp_pick(float (&p)[kMoePerLane], int experts, int lane, float& best, int& best_e) {
  best = -1.0f;
  best_e = 0x7fffffff;
TL_UNROLL
  for (int q = 0; q < kMoePerLane; ++q) {
    const int e = lane + 32 * q;
    if (e < experts && p[q] > best) {  // q ascending: the lower expert wins ties within a lane
      best = p[q];
      best_e = e;
    }
  }
TL_UNROLL
  for (int o = 16; o > 0; o >>= 1) {
    const float ob = warp::shfl_xor(best, o);
    const int oe = warp::shfl_xor(best_e, o);
    if (ob > best || (ob == best && oe < best_e)) {
      best = ob;
      best_e = oe;
    }
  }
TL_UNROLL
  for (int q = 0; q < kMoePerLane; ++q) {
    if (lane + 32 * q == best_e) p[q] = -2.0f;
  }
}

// A warp a token: p = softmax(logits) in fp32, the top k by value (lower
// expert first on ties), renormalised: weight[t, s], expert[t, s]; the sort's
// keys (the expert) and values (t·k + s).
template <class T>
struct RouteKernel {
  struct Params {
    const T* logits;  // [tokens, experts], rows `stride` apart
    std::int64_t stride;
    std::int64_t tokens;
    int experts, k;
    bool renormalize;
    std::int32_t* expert;  // [tokens, k]
    float* weight;         // [tokens, k]
    std::uint32_t* keys;   // [tokens, k]
    std::int32_t* slots;   // [tokens, k]
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.tokens, [&](std::int64_t t, int lane) {
      float prob[kMoePerLane];
      row_softmax(p.logits + t * p.stride, p.experts, lane, prob);
      // k rounds of the warp's pick; lane s keeps the s-th.
      float mine = 0.0f, total = 0.0f;
      int mine_e = 0;
      for (int s = 0; s < p.k; ++s) {
        float best;
        int best_e;
        warp_pick(prob, p.experts, lane, best, best_e);
        if (lane == s) {
          mine = best;
          mine_e = best_e;
        }
        total += best;
      }
      if (lane < p.k) {
        const std::int64_t i = t * p.k + lane;
        p.expert[i] = mine_e;
        p.weight[i] = p.renormalize ? mine / total : mine;
        p.keys[i] = static_cast<std::uint32_t>(mine_e);
        p.slots[i] = static_cast<std::int32_t>(i);
      }
    });
  }
};

// After the sort: the expert offsets (offsets[e] = the first sorted entry
// of expert e or later), where each (token, slot) went, and its row of x.
struct DispatchKernel {
  struct Params {
    const std::uint32_t* keys;   // [n] sorted experts
    const std::int32_t* slots;   // [n] t·k + s, in sorted order
    std::int64_t n;
    int experts;
    std::int32_t* offsets;       // [experts + 1]
    std::int32_t* position;      // [n]: position[t·k + s] = sorted index
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.n + 1, [&](std::int64_t i) {
      // Experts in (prev, cur] start at i.
      const int prev = i == 0 ? -1 : static_cast<int>(p.keys[i - 1]);
      const int cur = i == p.n ? p.experts : static_cast<int>(p.keys[i]);
      for (int e = prev + 1; e <= cur; ++e) p.offsets[e] = static_cast<std::int32_t>(i);
      if (i < p.n) p.position[p.slots[i]] = static_cast<std::int32_t>(i);
    });
  }
};

// x_perm[i] = x[slots[i] / k]: a warp a sorted row, 16-byte vectors.
template <class T, int W>
struct GatherRowsKernel {
  struct Params {
    const T* x;
    std::int64_t x_stride;
    const std::int32_t* slots;
    std::int64_t n;
    int k, d;
    T* out;  // [n, d] packed
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.n, [&](std::int64_t i, int lane) {
      const std::int64_t t = p.slots[i] / p.k;  // 32-bit operands: n < 2^31
      for (int c = lane * W; c < p.d; c += 32 * W) {
        *reinterpret_cast<Vec<T, W>*>(p.out + i * p.d + c) = *reinterpret_cast<const Vec<T, W>*>(p.x + t * p.x_stride + c);
      }
    });
  }
};

// out[t] = Σ_s weight[t, s] · y[position[t·k + s]] in fp32, rounded once
// (no weights: a plain sum, the backward's dL/dx).
template <class T, int W>
struct CombineKernel {
  struct Params {
    const T* y;  // [n, d] packed, in sorted order
    const float* weight;
    const std::int32_t* position;
    std::int64_t tokens;
    int k, d;
    T* out;
    std::int64_t out_stride;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.tokens, [&](std::int64_t t, int lane) {
      for (int c = lane * W; c < p.d; c += 32 * W) {
        float acc[W] = {};
        for (int s = 0; s < p.k; ++s) {
          const float w = p.weight ? p.weight[t * p.k + s] : 1.0f;
          const Vec<T, W> y = *reinterpret_cast<const Vec<T, W>*>(p.y + p.position[t * p.k + s] * std::int64_t{p.d} + c);
TL_UNROLL
          for (int i = 0; i < W; ++i) acc[i] = fmaf(w, to_float(y.v[i]), acc[i]);
        }
        Vec<T, W> o;
TL_UNROLL
        for (int i = 0; i < W; ++i) o.v[i] = from_float<T>(acc[i]);
        *reinterpret_cast<Vec<T, W>*>(p.out + t * p.out_stride + c) = o;
      }
    });
  }
};

// ------------------------------------------------------------------ the load-balancing loss

// Per block: Σ_rows p[r, e] and the count of rows that picked e, a warp's
// rows in order, the warps added in order: partial[block][2][experts].
template <class T>
struct BalanceKernel {
  struct Params {
    const T* logits;
    std::int64_t stride;
    std::int64_t rows;
    int experts, k;
    std::int64_t per_block;  // rows a block takes
    float* partial;          // [gridDim.x, 2, experts]
  };
  static constexpr int kThreads = 256;
  static constexpr int kWarps = kThreads / 32;
  struct SharedStorage {
    float part[kWarps][2][kMoeMaxExperts];
  };
  TL_DEVICE void operator()(const Params& p, SharedStorage& s) const {
    const int lane = static_cast<int>(threadIdx.x) & 31, w = static_cast<int>(threadIdx.x) >> 5;
    float prob[kMoePerLane] = {}, count[kMoePerLane] = {};
    const std::int64_t b0 = blockIdx.x * p.per_block, b1 = b0 + p.per_block < p.rows ? b0 + p.per_block : p.rows;
    for (std::int64_t r = b0 + w; r < b1; r += kWarps) {
      float v[kMoePerLane];
      row_softmax(p.logits + r * p.stride, p.experts, lane, v);
TL_UNROLL
      for (int q = 0; q < kMoePerLane; ++q) prob[q] += v[q];
      // The top k, as the router picks them.
      for (int sel = 0; sel < p.k; ++sel) {
        float best;
        int best_e;
        warp_pick(v, p.experts, lane, best, best_e);
TL_UNROLL
        for (int q = 0; q < kMoePerLane; ++q) count[q] += lane + 32 * q == best_e ? 1.0f : 0.0f;
      }
    }
TL_UNROLL
    for (int q = 0; q < kMoePerLane; ++q) {
      const int e = lane + 32 * q;
      if (e < p.experts) {
        s.part[w][0][e] = prob[q];
        s.part[w][1][e] = count[q];
      }
    }
    __syncthreads();
    for (int i = static_cast<int>(threadIdx.x); i < 2 * p.experts; i += kThreads) {
      const int which = i / p.experts, e = i % p.experts;
      float t = 0.0f;
      for (int v = 0; v < kWarps; ++v) t += s.part[v][which][e];
      p.partial[(static_cast<std::int64_t>(blockIdx.x) * 2 + which) * p.experts + e] = t;
    }
  }
};

// loss = experts · Σ_e (count_e / rows) · (Σ p_e / rows), the partials added
// in block order; one warp.
struct BalanceTotalKernel {
  struct Params {
    const float* partial;
    int blocks, experts;
    std::int64_t rows;
    float* loss;
  };
  static constexpr int kThreads = 32;
  TL_DEVICE void operator()(const Params& p) const {
    const int lane = static_cast<int>(threadIdx.x);
    float acc = 0.0f;
    for (int e = lane; e < p.experts; e += 32) {
      float prob = 0.0f, count = 0.0f;
      for (int b = 0; b < p.blocks; ++b) {
        prob += p.partial[(static_cast<std::int64_t>(b) * 2) * p.experts + e];
        count += p.partial[(static_cast<std::int64_t>(b) * 2 + 1) * p.experts + e];
      }
      const float n = static_cast<float>(p.rows);
      acc += (count / n) * (prob / n);
    }
    acc = warp::reduce(acc, Sum{});
    if (lane == 0) *p.loss = acc * static_cast<float>(p.experts);
  }
};

// ------------------------------------------------------------------ the backward

// A warp a sorted row i = (t, s): dL/dy[i] = w[t, s] · dL/dout[t] (rounded
// to T), and dL/dw[t, s] = <dL/dout[t], y[i]> in fp32.
template <class T>
struct ScatterGradKernel {
  struct Params {
    const T* grad_out;
    std::int64_t grad_out_stride;
    const T* y;  // [n, d] sorted
    const float* weight;
    const std::int32_t* slots;
    std::int64_t n;
    int k, d;
    T* grad_y;         // [n, d]
    float* grad_weight;  // [tokens, k]
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.n, [&](std::int64_t i, int lane) {
      const std::int32_t slot = p.slots[i];
      const std::int64_t t = slot / p.k;
      const float w = p.weight[slot];
      float dot = 0.0f;
      for (int c = lane; c < p.d; c += 32) {
        const float g = to_float(p.grad_out[t * p.grad_out_stride + c]);
        dot = fmaf(g, to_float(p.y[i * p.d + c]), dot);
        p.grad_y[i * p.d + c] = from_float<T>(w * g);
      }
      dot = warp::reduce(dot, Sum{});
      if (lane == 0) p.grad_weight[slot] = dot;
    });
  }
};

// A warp a token: dL/dlogits through the renormalisation and the softmax,
// plus the load-balancing loss's gradient when asked:
//   dL/dp_j = (dw_j - Σ_s dw_s w_s) / Σ_s p_s   (j picked; renormalised)
//           = dw_j                              (picked; not renormalised)
//           + coef · f_j                        (the balance loss: f_j the
//                                                fraction routed to j)
//   dL/dlogit_e = p_e (dL/dp_e - Σ_j p_j dL/dp_j)
// written as T into rows `out_stride` apart, the padding up to it zeroed.
template <class T>
struct RouterBackwardKernel {
  struct Params {
    const T* logits;
    std::int64_t stride;
    std::int64_t tokens;
    int experts, k;
    bool renormalize;
    const std::int32_t* expert;
    const float* weight;       // renormalised (or not) top-k weights
    const float* grad_weight;  // dL/dw
    const float* fraction;     // optional [experts]: f_e of the balance loss
    float coef;                // scale · experts / rows of the balance loss
    T* grad_logits;
    std::int64_t out_stride;
  };
  static constexpr int kThreads = 256;
  static constexpr int kMinBlocks = 2;  // ptxas's own choice (48 registers) spilled
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.tokens, [&](std::int64_t t, int lane) {
      float v[kMoePerLane];
      row_softmax(p.logits + t * p.stride, p.experts, lane, v);
      // The picks (k <= 8, read by every lane): Σ dw · w.
      float dww = 0.0f;
      for (int s = 0; s < p.k; ++s) dww += p.grad_weight[t * p.k + s] * p.weight[t * p.k + s];
      float dp[kMoePerLane], dot = 0.0f;
TL_UNROLL
      for (int q = 0; q < kMoePerLane; ++q) {
        const int e = lane + 32 * q;
        dp[q] = e < p.experts && p.fraction ? p.coef * p.fraction[e] : 0.0f;
      }
      // Σ_s p_s over the picks, from the probabilities (the weights are renormalised).
      float psum = 0.0f;
      for (int s = 0; s < p.k; ++s) {
        const int e = p.expert[t * p.k + s];
        float pe = 0.0f;
TL_UNROLL
        for (int q = 0; q < kMoePerLane; ++q) pe = lane + 32 * q == e ? v[q] : pe;
        psum += warp::reduce(pe, Sum{});
      }
      for (int s = 0; s < p.k; ++s) {
        const int e = p.expert[t * p.k + s];
        const float dw = p.grad_weight[t * p.k + s];
        const float g = p.renormalize ? (dw - dww) / psum : dw;
TL_UNROLL
        for (int q = 0; q < kMoePerLane; ++q) dp[q] += lane + 32 * q == e ? g : 0.0f;
      }
TL_UNROLL
      for (int q = 0; q < kMoePerLane; ++q) dot = fmaf(v[q], dp[q], dot);
      dot = warp::reduce(dot, Sum{});
      for (int e = lane; e < p.out_stride; e += 32) {
        float g = 0.0f;
TL_UNROLL
        for (int q = 0; q < kMoePerLane; ++q) g = lane + 32 * q == e ? v[q] * (dp[q] - dot) : g;
        p.grad_logits[t * p.out_stride + e] = from_float<T>(e < p.experts ? g : 0.0f);
      }
    });
  }
};

// The fraction of routed slots per expert, f_e = count_e / rows, from the
// balance kernel's partials (for the loss's gradient).
struct BalanceFractionKernel {
  struct Params {
    const float* partial;
    int blocks, experts;
    std::int64_t rows;
    float* fraction;
  };
  static constexpr int kThreads = 32;
  TL_DEVICE void operator()(const Params& p) const {
    for (int e = static_cast<int>(threadIdx.x); e < p.experts; e += 32) {
      float count = 0.0f;
      for (int b = 0; b < p.blocks; ++b) count += p.partial[(static_cast<std::int64_t>(b) * 2 + 1) * p.experts + e];
      p.fraction[e] = count / static_cast<float>(p.rows);
    }
  }
};

}  // namespace tokenless::blocks::detail
