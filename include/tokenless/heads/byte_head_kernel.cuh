#pragma once
// The byte head's kernel (policy.hpp has the semantics): a block takes 64
// rows of tokens and the whole vocabulary (up to 288 columns), so each row's
// logits end in one block and never reach memory.
//
//   1. the inverse rms of its rows (RmsNorm's loop: the same bits);
//   2. the logits: the normalised rows (cast to T as RmsNorm writes them)
//      times Wᵀ, over chunks of d: W's chunk by cp.async into a double
//      buffer, the rows' chunk through registers (normalised on the way into
//      shared memory); 8 warps, 2 down the rows by 4 across the vocabulary,
//      each 32 × 72 of fp32 accumulators (mma.sync m16n8k16 for fp16/bf16,
//      FMAs from shared memory for fp32);
//   3. the accumulators (+ bias) into a shared fp32 tile over the dead
//      buffers, then a warp a row: log-sum-exp, entropy, cross-entropy, dz,
//      the argmax or the sample.
// The vocabulary is padded to 288 columns (zero rows of W): at V = 260 a
// tenth of the tensor-core work is padding (to measure before shaping the
// tile to V).
#include <tokenless/blocks/kernel.cuh>
#include <tokenless/blocks/policy.hpp>
#include <tokenless/core/async_copy.cuh>
#include <tokenless/core/config.hpp>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/functional.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/launch.cuh>
#include <tokenless/core/mma.cuh>
#include <tokenless/core/vec.hpp>
#include <tokenless/core/warp.cuh>
#include <tokenless/heads/kernel.cuh>
#include <tokenless/heads/policy.hpp>

#include <cstdint>
#include <type_traits>

namespace tokenless::heads::detail {

// The tile (values, not semantics: kRows and the warp grid are untuned).
template <class T>
struct ByteTile {
  static constexpr int kThreads = 256;                // 8 warps: 2 down the rows x 4 across the vocabulary
  static constexpr int kRows = 64;                    // tokens a block
  static constexpr int kCols = kByteHeadMaxVocab;     // 288 = 4 warps x 9 n tiles of 8
  static constexpr int kNTiles = kCols / 4 / 8;       // 9 a warp
  static constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // elements in 16 bytes
  static constexpr int kK = 4 * kVec;                 // a chunk of d: 64-byte rows (32 for 16-bit, 16 for fp32)
  static constexpr int kStride = kK + kVec;           // + 16 bytes: ldmatrix's 8 rows land in distinct banks
  static constexpr int kZStride = kCols + 4;          // fp32 logits; + 4 spreads a fragment's rows over the banks
  static constexpr int kABytes = kRows * kStride * static_cast<int>(sizeof(T));
  static constexpr int kWBytes = kCols * kStride * static_cast<int>(sizeof(T));
  static constexpr int kPipeBytes = 2 * (kABytes + kWBytes);
  static constexpr int kZBytes = kRows * kZStride * 4;
  static constexpr int kUnionBytes = kPipeBytes > kZBytes ? kPipeBytes : kZBytes;
  static constexpr std::size_t kSmemBytes = static_cast<std::size_t>(kUnionBytes) + kRows * sizeof(float);
  static_assert(kRows * (kK / kVec) == kThreads, "one 16-byte vector of the rows' chunk a thread");
};

template <class T>
struct ByteHeadParams {
  const T* h;            // [n, d]
  const T* norm_weight;  // [d], optional: no norm without it
  float eps;
  const T* weight;       // [vocab, d]
  const T* bias;         // [vocab], optional
  std::int64_t n;
  int vocab, d;
  // cross-entropy (labels given)
  const std::int32_t* labels;
  const float* token_weights;  // optional
  CrossEntropyOptions o;
  const float* grad_loss;  // optional: dL/dloss, [1] or [n] (none): dz is written
  const float* totals;     // [3] (mean): Σ w
  float* loss_tok;         // [n]
  float* z_tok;            // [n], optional
  float* lse;              // [n], optional
  float* logprob;          // [n], optional
  T* grad_logits;          // [n, vocab], with grad_loss
  // the rest
  float* entropy;         // [n], optional
  float* inv_rms;         // [n], optional
  std::int32_t* next;     // [n], optional
  Sampling sampling;
  const std::int64_t* sample_offsets;  // [n], optional: row i's offset
  DeviceStatus* status;
};

template <class T, int W>
TL_DEVICE TL_FORCEINLINE void load_floats(const T* p, float (&v)[W]) {
  const Vec<T, W> x = *reinterpret_cast<const Vec<T, W>*>(p);
  TL_UNROLL
  for (int i = 0; i < W; ++i) v[i] = to_float(x.v[i]);
}

// The row pass: a warp a row of the block's fp32 logits. Lane l holds
// columns l + 32c (c < kPer); columns at and past vocab read as -inf.
template <class T>
struct ByteRow {
  static constexpr int kPer = (kByteHeadMaxVocab + 31) / 32;  // 9

  TL_DEVICE static void run(const ByteHeadParams<T>& p, float* z_row, std::int64_t i, float rstd, int lane) {
    const int V = p.vocab;
    float z[kPer];
    TL_UNROLL
    for (int c = 0; c < kPer; ++c) {
      const int j = lane + 32 * c;
      z[c] = j < V ? z_row[j] : -INFINITY;
    }
    float m = -INFINITY;
    TL_UNROLL
    for (int c = 0; c < kPer; ++c) m = NanMax{}(m, z[c]);
    m = warp::reduce(m, NanMax{});
    // s = Σ e, t = Σ e (z − m): lse = m + ln s and the entropy ln s − t / s
    // (the patcher's formula, in nats); Σ z for the label smoothing.
    float s = 0.0f, t = 0.0f, sum_z = 0.0f;
    TL_UNROLL
    for (int c = 0; c < kPer; ++c) {
      if (lane + 32 * c >= V) continue;
      const float u = z[c] - m, e = expf(u);
      s += e;
      t = fmaf(e, u, t);
      sum_z += z[c];
    }
    s = warp::reduce(s, Sum{});
    t = warp::reduce(t, Sum{});
    sum_z = warp::reduce(sum_z, Sum{});
    const float ln_s = logf(s), lse = m + ln_s;
    if (lane == 0) {
      if (p.entropy) p.entropy[i] = ln_s - t / s;
      if (p.lse) p.lse[i] = lse;
      if (p.inv_rms) p.inv_rms[i] = rstd;
    }
    if (p.labels) cross_entropy(p, z, z_row, i, lse, sum_z, lane);
    if (p.next) pick(p, z, z_row, i, m, lane);
  }

  // The loss terms (FinishKernel's arithmetic) and, given dL/dloss, dz
  // (GradLogitsKernel's).
  TL_DEVICE static void cross_entropy(const ByteHeadParams<T>& p, const float (&z)[kPer], const float* z_row,
                                      std::int64_t i, float lse, float sum_z, int lane) {
    const int V = p.vocab;
    const std::int32_t y = p.labels[i];
    const bool ignored = y == p.o.ignore_index;
    const float w = ignored ? 0.0f : (p.token_weights ? p.token_weights[i] : 1.0f);
    const float eps = p.o.label_smoothing;
    if (lane == 0) {
      const float zy = ignored ? 0.0f : z_row[y];
      const float ce = (1.0f - eps) * (lse - zy) + eps * (lse - sum_z / static_cast<float>(V));
      const float zl = p.o.z_loss * lse * lse;
      p.loss_tok[i] = ignored ? 0.0f : w * (ce + zl);
      if (p.z_tok) p.z_tok[i] = ignored ? 0.0f : w * zl;
      if (p.logprob) p.logprob[i] = ignored ? 0.0f : zy - lse;
    }
    if (!p.grad_logits) return;
    float sc = 0.0f;
    if (!ignored) {
      const float g = p.o.reduction == Reduction::none ? p.grad_loss[i] : p.grad_loss[0];
      sc = g * w;
      if (p.o.reduction == Reduction::mean) sc /= p.totals[2];
    }
    const float keep = 1.0f - eps, spread = eps / static_cast<float>(V);
    const float zmul = 1.0f + 2.0f * p.o.z_loss * lse;
    T* dz = p.grad_logits + i * V;
    TL_UNROLL
    for (int c = 0; c < kPer; ++c) {
      const int j = lane + 32 * c;
      if (j >= V) continue;
      const float d = ignored ? 0.0f : sc * (expf(z[c] - lse) * zmul - (j == y ? keep : 0.0f) - spread);
      dz[j] = from_float<T>(d);
    }
  }

  // The next id: greedy, or a draw from the nucleus at the temperature.
  TL_DEVICE static void pick(const ByteHeadParams<T>& p, const float (&z)[kPer], float* z_row, std::int64_t i, float m,
                             int lane) {
    const int V = p.vocab;
    const Sampling& sp = p.sampling;
    if (sp.temperature == 0.0f || !(m - m == 0.0f)) {  // greedy; also for a NaN or infinite max
      ValueIndex<float> best = ArgMax::identity<ValueIndex<float>>();
      TL_UNROLL
      for (int c = 0; c < kPer; ++c) {
        const int j = lane + 32 * c;
        if (j < V) best = ArgMax{}(best, ValueIndex<float>{z[c], j});
      }
      best = warp::reduce(best, ArgMax{});
      if (lane == 0) p.next[i] = best.index;
      return;
    }
    float e[kPer];
    float total = 0.0f;
    TL_UNROLL
    for (int c = 0; c < kPer; ++c) {
      const int j = lane + 32 * c;
      e[c] = j < V ? expf((z[c] - m) / sp.temperature) : 0.0f;
      total += e[c];
    }
    total = warp::reduce(total, Sum{});
    bool kept[kPer];
    TL_UNROLL
    for (int c = 0; c < kPer; ++c) kept[c] = lane + 32 * c < V;
    if (sp.top_p < 1.0f) {
      // The row's e in place of its logits (the loss pass has read them).
      __syncwarp();
      TL_UNROLL
      for (int c = 0; c < kPer; ++c) {
        if (lane + 32 * c < V) z_row[lane + 32 * c] = e[c];
      }
      __syncwarp();
      float ahead[kPer] = {};
      for (int k = 0; k < V; ++k) {
        const float ek = z_row[k];  // one address for the warp: a broadcast
        TL_UNROLL
        for (int c = 0; c < kPer; ++c) {
          if (ek > e[c] || (ek == e[c] && k < lane + 32 * c)) ahead[c] += ek;
        }
      }
      const float bound = sp.top_p * total;
      TL_UNROLL
      for (int c = 0; c < kPer; ++c) kept[c] = kept[c] && ahead[c] < bound;
    }
    float kept_total = 0.0f;
    TL_UNROLL
    for (int c = 0; c < kPer; ++c) kept_total += kept[c] ? e[c] : 0.0f;
    kept_total = warp::reduce(kept_total, Sum{});
    const std::uint64_t offset = p.sample_offsets ? static_cast<std::uint64_t>(p.sample_offsets[i]) : sp.offset;
    const float target = sample_uniform(sp.seed, offset, i) * kept_total;
    // In id order: column block c of 32, then the lanes in it.
    float run = 0.0f;
    int chosen = -1, last = -1;
    TL_UNROLL
    for (int c = 0; c < kPer; ++c) {
      const float v = kept[c] ? e[c] : 0.0f;
      const float incl = run + warp::inclusive_scan(v, Sum{});
      const unsigned hit = __ballot_sync(warp::kFullMask, kept[c] && incl > target);
      const unsigned any = __ballot_sync(warp::kFullMask, kept[c]);
      if (chosen < 0 && hit) chosen = 32 * c + __ffs(static_cast<int>(hit)) - 1;
      if (any) last = 32 * c + 31 - __clz(static_cast<int>(any));
      run = warp::broadcast(incl, 31);
    }
    if (lane == 0) p.next[i] = chosen >= 0 ? chosen : last;
  }
};

template <class P, class T>
struct ByteHeadKernel {
  using Tile = ByteTile<T>;
  using Params = ByteHeadParams<T>;
  static constexpr int kThreads = Tile::kThreads;
  // Two blocks an SM (the shared memory, 75 KiB, allows two on an A100 and
  // three on an H100): 128 registers, which the 72 accumulators fit.
  static constexpr int kMinBlocks = 2;
  static constexpr std::size_t kSmemBytes = Tile::kSmemBytes;
  static constexpr int kRows = Tile::kRows, kCols = Tile::kCols, kK = Tile::kK, kS = Tile::kStride,
                       kVec = Tile::kVec, kNT = Tile::kNTiles;

  // Rows [row0, row0 + rows) of h, columns [k0, k0 + kK): this thread's
  // 16-byte vector, normalised and cast as RmsNorm writes it (zeros past
  // the rows or d).
  TL_DEVICE static Vec<T, kVec> load_a(const Params& p, std::int64_t row0, int rows, int k0, const float* rstd) {
    const int r = static_cast<int>(threadIdx.x) / (kK / kVec), col = k0 + static_cast<int>(threadIdx.x) % (kK / kVec) * kVec;
    Vec<T, kVec> out;
    if (r >= rows || col >= p.d) {
      TL_UNROLL
      for (int e = 0; e < kVec; ++e) out.v[e] = from_float<T>(0.0f);
      return out;
    }
    out = *reinterpret_cast<const Vec<T, kVec>*>(p.h + (row0 + r) * p.d + col);
    if (!p.norm_weight) return out;
    float g[kVec];
    load_floats<T, kVec>(p.norm_weight + col, g);
    const float inv = rstd[r];
    TL_UNROLL
    for (int e = 0; e < kVec; ++e) out.v[e] = from_float<T>(P::template apply<T>(to_float(out.v[e]) * inv, g[e]));
    return out;
  }
  TL_DEVICE static void store_a(T* sa, const Vec<T, kVec>& v) {
    const int r = static_cast<int>(threadIdx.x) / (kK / kVec), ch = static_cast<int>(threadIdx.x) % (kK / kVec);
    *reinterpret_cast<Vec<T, kVec>*>(sa + r * kS + ch * kVec) = v;
  }
  // W's rows [0, vocab), columns [k0, k0 + kK), into a buffer (zeros past d).
  TL_DEVICE static void load_w(const Params& p, T* sw, int k0) {
    for (int v = static_cast<int>(threadIdx.x); v < p.vocab * (kK / kVec); v += kThreads) {
      const int row = v / (kK / kVec), ch = v % (kK / kVec), col = k0 + ch * kVec;
      T* dst = sw + row * kS + ch * kVec;
      if (col < p.d) {
        async::copy16(dst, p.weight + static_cast<std::int64_t>(row) * p.d + col);
      } else {
        *reinterpret_cast<Vec<std::uint32_t, 4>*>(dst) = Vec<std::uint32_t, 4>{};
      }
    }
  }

  // One chunk: acc += A_chunk · W_chunkᵀ for this warp's 32 x 72.
  TL_DEVICE static void compute(const T* sa, const T* sw, int wr, int wc, int lane, mma::FragC (&acc)[2][kNT]) {
    if constexpr (mma::TensorCoreType<T>) {
      // The odd ninth n tile: one ldmatrix gives its B for both k steps.
      std::uint32_t last[4];
      mma::ldmatrix_x4(last, sw + (wc * 72 + 64 + (lane & 7)) * kS + (lane >> 3) * 8);
      TL_UNROLL_N(1)  // one k step's fragments live at a time (unrolled, sm_80 spilled at 128 registers)
      for (int ks = 0; ks < kK / 16; ++ks) {
        mma::FragA a[2];
        TL_UNROLL
        for (int mt = 0; mt < 2; ++mt) {
          mma::ldmatrix_x4(a[mt].x, sa + (wr * 32 + mt * 16 + (lane & 15)) * kS + ks * 16 + (lane >> 4) * 8);
        }
        TL_UNROLL
        for (int q = 0; q < 4; ++q) {
          const int i = lane >> 3;
          std::uint32_t r[4];
          mma::ldmatrix_x4(r, sw + (wc * 72 + q * 16 + (i >> 1) * 8 + (lane & 7)) * kS + ks * 16 + (i & 1) * 8);
          const mma::FragB b0{{r[0], r[1]}}, b1{{r[2], r[3]}};
          TL_UNROLL
          for (int mt = 0; mt < 2; ++mt) {
            mma::mma_16816<T>(acc[mt][2 * q], a[mt], b0);
            mma::mma_16816<T>(acc[mt][2 * q + 1], a[mt], b1);
          }
        }
        const mma::FragB b{{ks == 0 ? last[0] : last[2], ks == 0 ? last[1] : last[3]}};  // no indexing: registers
        TL_UNROLL
        for (int mt = 0; mt < 2; ++mt) mma::mma_16816<T>(acc[mt][8], a[mt], b);
      }
    } else {
      // fp32: the same fragments, by FMAs from shared memory (k in order).
      const int g = lane >> 2, t = lane & 3;
      for (int k = 0; k < kK; ++k) {
        float av[2][2];
        TL_UNROLL
        for (int mt = 0; mt < 2; ++mt) {
          av[mt][0] = sa[(wr * 32 + mt * 16 + g) * kS + k];
          av[mt][1] = sa[(wr * 32 + mt * 16 + g + 8) * kS + k];
        }
        TL_UNROLL
        for (int nt = 0; nt < kNT; ++nt) {
          const int col = wc * 72 + nt * 8 + 2 * t;
          const float b0 = sw[col * kS + k], b1 = sw[(col + 1) * kS + k];
          TL_UNROLL
          for (int mt = 0; mt < 2; ++mt) {
            mma::FragC& c = acc[mt][nt];
            c.x[0] = fmaf(av[mt][0], b0, c.x[0]);
            c.x[1] = fmaf(av[mt][0], b1, c.x[1]);
            c.x[2] = fmaf(av[mt][1], b0, c.x[2]);
            c.x[3] = fmaf(av[mt][1], b1, c.x[3]);
          }
        }
      }
    }
  }

  TL_DEVICE void operator()(const Params& p) const {
    unsigned char* smem = dynamic_smem<unsigned char>();
    T* sa = reinterpret_cast<T*>(smem);                         // [2][kRows][kS]
    T* sw = reinterpret_cast<T*>(smem + 2 * Tile::kABytes);     // [2][kCols][kS]
    float* sz = reinterpret_cast<float*>(smem);                 // [kRows][kZStride], after the main loop
    float* rstd = reinterpret_cast<float*>(smem + Tile::kUnionBytes);  // [kRows]
    const int tid = static_cast<int>(threadIdx.x), lane = tid & 31, warp_i = tid >> 5;
    const std::int64_t row0 = static_cast<std::int64_t>(blockIdx.x) * kRows;
    const int rows = static_cast<int>(p.n - row0 < kRows ? p.n - row0 : kRows);

    // W's padding rows stay zero in both buffers (the copies never reach them).
    for (int v = tid; v < 2 * (kCols - p.vocab) * (kS / kVec); v += kThreads) {
      const int b = v / ((kCols - p.vocab) * (kS / kVec)), rest = v % ((kCols - p.vocab) * (kS / kVec));
      T* dst = sw + b * kCols * kS + (p.vocab + rest / (kS / kVec)) * kS + rest % (kS / kVec) * kVec;
      *reinterpret_cast<Vec<std::uint32_t, 4>*>(dst) = Vec<std::uint32_t, 4>{};
    }
    // 1. The inverse rms, a warp a row (RmsNorm's vector loop and order).
    for (int r = warp_i; r < kRows; r += kThreads / 32) {
      if (r >= rows || !p.norm_weight) {
        if (lane == 0) rstd[r] = 1.0f;
        continue;
      }
      const T* x = p.h + (row0 + r) * p.d;
      float sum = 0.0f;
      for (int c = lane * kVec; c < p.d; c += 32 * kVec) {
        float v[kVec];
        load_floats<T, kVec>(x + c, v);
        TL_UNROLL
        for (int e = 0; e < kVec; ++e) sum = fmaf(v[e], v[e], sum);
      }
      sum = warp::reduce(sum, Sum{});
      if (lane == 0) rstd[r] = blocks::detail::inv_root(sum, p.d, p.eps);
    }
    __syncthreads();

    // 2. The logits.
    const int wr = warp_i / 4, wc = warp_i % 4;
    mma::FragC acc[2][kNT];
    TL_UNROLL
    for (int mt = 0; mt < 2; ++mt) {
      TL_UNROLL
      for (int nt = 0; nt < kNT; ++nt) acc[mt][nt] = mma::FragC{{0.0f, 0.0f, 0.0f, 0.0f}};
    }
    const int chunks = (p.d + kK - 1) / kK;
    load_w(p, sw, 0);
    async::commit();
    store_a(sa, load_a(p, row0, rows, 0, rstd));
    for (int c = 0; c < chunks; ++c) {
      const int buf = c & 1;
      // The next chunk into the other buffers, which the last iteration's
      // barrier freed: W's in flight during this compute, the rows' stored
      // straight away (holding them across the compute spilled registers).
      if (c + 1 < chunks) {
        load_w(p, sw + (buf ^ 1) * kCols * kS, (c + 1) * kK);
        async::commit();
        store_a(sa + (buf ^ 1) * kRows * kS, load_a(p, row0, rows, (c + 1) * kK, rstd));
        async::wait<1>();  // this chunk's W has landed; the next may be in flight
      } else {
        async::wait<0>();
      }
      __syncthreads();
      compute(sa + buf * kRows * kS, sw + buf * kCols * kS, wr, wc, lane, acc);
      __syncthreads();
    }

    // 3. The logits (+ bias) into the shared tile over the dead buffers.
    {
      const int g = lane >> 2, t = lane & 3;
      TL_UNROLL
      for (int mt = 0; mt < 2; ++mt) {
        TL_UNROLL
        for (int nt = 0; nt < kNT; ++nt) {
          const int col = wc * 72 + nt * 8 + 2 * t;
          TL_UNROLL
          for (int e = 0; e < 4; ++e) {
            const int r = wr * 32 + mt * 16 + g + (e >> 1) * 8, j = col + (e & 1);
            if (j < p.vocab) sz[r * Tile::kZStride + j] = acc[mt][nt].x[e] + (p.bias ? to_float(p.bias[j]) : 0.0f);
          }
        }
      }
    }
    __syncthreads();
    for (int r = warp_i; r < rows; r += kThreads / 32) {
      ByteRow<T>::run(p, sz + r * Tile::kZStride, row0 + r, rstd[r], lane);
    }
  }
};

}  // namespace tokenless::heads::detail
