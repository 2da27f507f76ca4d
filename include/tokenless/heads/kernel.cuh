#pragma once
// The linear cross-entropy's kernels, around cuBLASLt's chunk GEMMs:
//   CheckLabelsKernel  labels in [0, V) or ignore_index; gates the GEMMs
//                      ({alpha, beta} = {0, 1} when a check failed)
//   RowStatsKernel     a warp a row of a logits chunk: the online max and
//                      sum of exp (merged into the row's running pair), Σ z
//                      for the smoothing, the label's logit
//   FinishKernel       per token: lse, logprob, loss, z-loss
//   ReduceKernel       one block, a fixed order: Σ loss, Σ z-loss, Σ weights
//   GradLogitsKernel   a warp a row: dz of a chunk, in the GEMMs' type
//   CastRowsKernel     the fp32 dH accumulator to T
// and DPO's: the pair check, sequence sums, the per-pair loss and margin
// gradient, the per-token gradient, the mean.
// NaN and Inf in a logit make its row's lse, loss and gradient NaN.
#include <tokenless/core/config.hpp>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/functional.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/varlen.hpp>
#include <tokenless/core/workspace.hpp>
#include <tokenless/core/warp.cuh>
#include <tokenless/heads/policy.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>

namespace tokenless::heads::detail {

inline constexpr int kCheckLabels = kFirstOperationCheck;

// Max that keeps a NaN (torch.max's rule), so that a NaN logit poisons its row.
struct NanMax {
  TL_HOST_DEVICE float operator()(float a, float b) const { return (a > b || a != a) ? a : b; }
};

// A chunk of logits: rows [row0, row0 + rows) of the tokens, columns
// [col0, col0 + cols) of the vocabulary, fp32, `ld` apart.
template <class T>
struct Chunk {
  const float* logits;
  std::int64_t ld;
  std::int64_t rows, row0;
  int cols;
  std::int64_t col0;
  const T* bias;  // [V], optional: added here (cuBLASLt's fp32-output GEMM takes no epilogue)
  TL_DEVICE float z(std::int64_t r, int j) const {
    const float v = logits[r * ld + j];
    return bias ? v + to_float(bias[col0 + j]) : v;
  }
};

struct CheckLabelsKernel {
  struct Params {
    const std::int32_t* labels;
    std::int64_t n, vocab;
    std::int32_t ignore_index;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  static constexpr bool kReportsStatus = true;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.n, [&](std::int64_t i) {
      const std::int32_t y = p.labels[i];
      if (y != p.ignore_index && (y < 0 || y >= p.vocab)) device_fail(p.status, kCheckLabels, i);
    });
  }
};

// After the checks: the GEMMs' {alpha, beta} pairs, {0, 1} (D untouched)
// on a failure: [0, 1] written outputs, [2, 3] the weight gradient's first
// chunk (accumulated or written), [4, 5] later chunks (added).
struct GateKernel {
  struct Params {
    float* scalars;
    bool accumulate;
    const DeviceStatus* status;
  };
  static constexpr int kThreads = 32;
  static constexpr bool kReportsStatus = true;
  TL_DEVICE void operator()(const Params& p) const {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const bool ok = device_ok(p.status);
    p.scalars[0] = ok ? 1.0f : 0.0f;
    p.scalars[1] = ok ? 0.0f : 1.0f;
    p.scalars[2] = ok ? 1.0f : 0.0f;
    p.scalars[3] = ok && !p.accumulate ? 0.0f : 1.0f;
    p.scalars[4] = ok ? 1.0f : 0.0f;  // {1, 1}: later chunks add
    p.scalars[5] = 1.0f;
  }
};

// Running per-row state over the vocabulary's chunks: max, Σ exp(z − max),
// Σ z, the label's z.
struct RowState {
  float* max;
  float* sum;
  float* sum_z;
  float* z_label;
};

template <class T>
struct RowStatsKernel {
  struct Params {
    Chunk<T> c;
    const std::int32_t* labels;  // of the whole batch
    RowState s;                  // indexed by the chunk's row (0 .. rows)
    bool first;                  // the first vocabulary chunk: start the state
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.c.rows, [&](std::int64_t r, int lane) {
      float mx = -INFINITY;
      for (int j = lane; j < p.c.cols; j += 32) mx = NanMax{}(mx, p.c.z(r, j));
      mx = warp::reduce(mx, NanMax{});
      float sum = 0.0f, sum_z = 0.0f;
      for (int j = lane; j < p.c.cols; j += 32) {
        const float z = p.c.z(r, j);
        sum += expf(z - mx);
        sum_z += z;
      }
      sum = warp::reduce(sum, Sum{});
      sum_z = warp::reduce(sum_z, Sum{});
      if (lane != 0) return;
      const std::int64_t y = p.labels[p.c.row0 + r] - p.c.col0;
      if (p.first) {
        p.s.max[r] = mx;
        p.s.sum[r] = sum;
        p.s.sum_z[r] = sum_z;
        p.s.z_label[r] = 0.0f;
      } else {
        const float m0 = p.s.max[r];
        const float m = NanMax{}(m0, mx);
        // exp(-inf - -inf) would be NaN: a side with nothing yet adds nothing.
        const float a = m0 == -INFINITY ? 0.0f : expf(m0 - m), b = mx == -INFINITY ? 0.0f : expf(mx - m);
        p.s.sum[r] = p.s.sum[r] * a + sum * b;
        p.s.max[r] = m;
        p.s.sum_z[r] += sum_z;
      }
      if (y >= 0 && y < p.c.cols) p.s.z_label[r] = p.c.z(r, static_cast<int>(y));
    });
  }
};

// Per token of the row chunk: lse, logprob, loss, z-loss (ignored tokens: 0).
struct FinishKernel {
  struct Params {
    RowState s;
    std::int64_t rows, row0, vocab;
    const std::int32_t* labels;
    const float* weights;  // optional
    CrossEntropyOptions o;
    float* lse;       // [N]
    float* logprob;   // [N], optional
    float* loss;      // [N]: the per-token loss (the output with none, else workspace)
    float* z_loss;    // [N], optional
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.rows, [&](std::int64_t r) {
      const std::int64_t i = p.row0 + r;
      const float lse = p.s.max[r] + logf(p.s.sum[r]);
      p.lse[i] = lse;
      const bool ignored = p.labels[i] == p.o.ignore_index;
      const float zy = p.s.z_label[r];
      if (p.logprob) p.logprob[i] = ignored ? 0.0f : zy - lse;
      const float w = ignored ? 0.0f : (p.weights ? p.weights[i] : 1.0f);
      const float eps = p.o.label_smoothing;
      const float ce = (1.0f - eps) * (lse - zy) + eps * (lse - p.s.sum_z[r] / static_cast<float>(p.vocab));
      const float zl = p.o.z_loss * lse * lse;
      p.loss[i] = ignored ? 0.0f : w * (ce + zl);
      if (p.z_loss) p.z_loss[i] = ignored ? 0.0f : w * zl;
    });
  }
};

// One block: totals[0] = Σ loss, totals[1] = Σ z-loss, totals[2] = Σ w over
// the tokens not ignored, in a fixed order (the same bits on every run).
// With out, the reduced loss (and z-loss) are written from them.
struct ReduceKernel {
  struct Params {
    const float* loss;     // [N], optional (the backward needs only the weights)
    const float* z_loss;   // [N], optional
    const std::int32_t* labels;
    const float* weights;  // optional
    std::int32_t ignore_index;
    std::int64_t n;
    Reduction reduction;
    float* totals;         // [3], workspace
    float* out;            // [1], optional: the loss
    float* out_z;          // [1], optional: the z-loss
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  struct SharedStorage {
    float part[3][kThreads / 32];
  };
  TL_DEVICE void operator()(const Params& p, SharedStorage& sh) const {
    if (blockIdx.x != 0) return;
    float a = 0.0f, b = 0.0f, c = 0.0f;
    // Each thread a contiguous run, then the warps' sums in order.
    const std::int64_t run = (p.n + kThreads - 1) / kThreads;
    const std::int64_t lo = threadIdx.x * run, hi = lo + run < p.n ? lo + run : p.n;
    for (std::int64_t i = lo; i < hi; ++i) {
      if (p.loss) a += p.loss[i];
      if (p.z_loss) b += p.z_loss[i];
      if (p.labels[i] != p.ignore_index) c += p.weights ? p.weights[i] : 1.0f;
    }
    a = warp::reduce(a, Sum{});
    b = warp::reduce(b, Sum{});
    c = warp::reduce(c, Sum{});
    const int w = static_cast<int>(threadIdx.x) >> 5;
    if ((threadIdx.x & 31u) == 0) {
      sh.part[0][w] = a;
      sh.part[1][w] = b;
      sh.part[2][w] = c;
    }
    __syncthreads();
    if (threadIdx.x != 0) return;
    float t[3] = {0.0f, 0.0f, 0.0f};
    for (int k = 0; k < 3; ++k) {
      for (int i = 0; i < kThreads / 32; ++i) t[k] += sh.part[k][i];
      p.totals[k] = t[k];
    }
    const float scale = p.reduction == Reduction::mean ? 1.0f / t[2] : 1.0f;  // no token: 0/0 = NaN, as torch
    if (p.out) p.out[0] = t[0] * scale;
    if (p.out_z) p.out_z[0] = t[1] * scale;
  }
};

// dz of a chunk, written as T for the GEMMs (zeros when a check failed, so
// that the gated GEMMs see no NaN).
template <class T>
struct GradLogitsKernel {
  struct Params {
    Chunk<T> c;
    const std::int32_t* labels;
    const float* weights;   // optional
    const float* lse;       // [N]
    const float* grad;      // [1] (mean, sum) or [N] (none): dL/dloss
    const float* totals;    // [3]: Σ w for mean
    CrossEntropyOptions o;
    std::int64_t vocab;
    T* dz;                  // [rows, cols], ld_dz apart
    std::int64_t ld_dz;
    const DeviceStatus* gate;
  };
  static constexpr int kThreads = 256;
  // ptxas's own heuristic held it to 32 registers and spilled on sm_80
  // (this commit's compile tier); two blocks an SM allow 128.
  static constexpr int kMinBlocks = 2;
  TL_DEVICE void operator()(const Params& p) const {
    const bool ok = device_ok(p.gate);
    work::warp_items(p.c.rows, [&](std::int64_t r, int lane) {
      const std::int64_t i = p.c.row0 + r;
      const std::int32_t y = ok ? p.labels[i] : 0;
      const bool ignored = !ok || y == p.o.ignore_index;
      float s = 0.0f;
      if (!ignored) {
        const float g = p.o.reduction == Reduction::none ? p.grad[i] : p.grad[0];
        s = g * (p.weights ? p.weights[i] : 1.0f);
        if (p.o.reduction == Reduction::mean) s /= p.totals[2];
      }
      const float lse = ok ? p.lse[i] : 0.0f;
      const float keep = 1.0f - p.o.label_smoothing, spread = p.o.label_smoothing / static_cast<float>(p.vocab);
      const float zmul = 1.0f + 2.0f * p.o.z_loss * lse;
      const std::int64_t yl = static_cast<std::int64_t>(y) - p.c.col0;
      for (int j = lane; j < p.c.cols; j += 32) {
        float d = 0.0f;
        if (!ignored) d = s * (expf(p.c.z(r, j) - lse) * zmul - (j == yl ? keep : 0.0f) - spread);
        p.dz[r * p.ld_dz + j] = from_float<T>(d);
      }
    });
  }
};

// out[0 .. n) = 0, unless a check failed (then nothing is written).
struct ZeroKernel {
  struct Params {
    float* out;
    std::int64_t n;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.n, [&](std::int64_t i) { p.out[i] = 0.0f; });
  }
};

// dH rows from the fp32 accumulator.
template <class T>
struct CastRowsKernel {
  struct Params {
    const float* acc;  // [rows, d]
    std::int64_t rows;
    int d;
    T* out;            // rows, `ld` apart
    std::int64_t ld;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.rows, [&](std::int64_t r, int lane) {
      for (int c = lane; c < p.d; c += 32) p.out[r * p.ld + c] = from_float<T>(p.acc[r * p.d + c]);
    });
  }
};

// Rows whose position is 0 set to zero (DeepSeek-V3's multi-token module
// masks the embedding there); a warp a row.
template <class T>
struct ZeroFirstRowsKernel {
  struct Params {
    const std::int32_t* positions;  // [rows]
    std::int64_t rows;
    int d;
    T* x;                           // rows, `ld` apart
    std::int64_t ld;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.rows, [&](std::int64_t r, int lane) {
      if (p.positions[r] != 0) return;
      for (int c = lane; c < p.d; c += 32) p.x[r * p.ld + c] = from_float<T>(0.0f);
    });
  }
};

// ------------------------------------------------------------------ multi-token heads
inline constexpr int kCheckTokens = kFirstOperationCheck + 2;

// Head `ahead`'s targets from the tokens: row t of a sequence takes the token
// `ahead` positions on, or ignore_index past the sequence's end. A token
// outside the vocabulary is named (the trunk's embedding refuses it first)
// and its rows are ignored.
struct ShiftLabelsKernel {
  struct Params {
    const std::int32_t* tokens;  // [batch.total]
    VarlenBatch batch;
    int ahead;                   // 1: the next token
    std::int64_t vocab;
    std::int32_t ignore_index;
    std::int32_t* labels;        // [batch.total]
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  static constexpr bool kReportsStatus = true;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.batch.total, [&](std::int64_t t) {
      const std::int64_t e = p.batch.start(p.batch.seq_of(t) + 1);
      std::int32_t y = p.ignore_index;
      if (t + p.ahead < e) {
        y = p.tokens[t + p.ahead];
        if (y < 0 || y >= p.vocab) {
          device_fail(p.status, kCheckTokens, t + p.ahead);
          y = p.ignore_index;
        }
      }
      p.labels[t] = y;
    });
  }
};

// dst = src, elementwise, unless a check failed.
template <class U>
struct CopyKernel {
  struct Params {
    const U* src;
    std::int64_t n;
    U* dst;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.n, [&](std::int64_t i) { p.dst[i] = p.src[i]; });
  }
};

// DeepSeek-V3's depth-k inputs from the tokens: row t's id is the token k
// on and its target the token k + 1 on (within its sequence); a row with no
// token k on gets position 0's masked embedding (id 0, position "0") and no
// target. Positions are the rows' places in their sequences.
struct ShiftModuleKernel {
  struct Params {
    const std::int32_t* tokens;  // [batch.total]
    VarlenBatch batch;
    int k;                       // depth (1: the first module)
    std::int64_t vocab;
    std::int32_t ignore_index;
    std::int32_t* ids;           // [batch.total]
    std::int32_t* positions;     // [batch.total]
    std::int32_t* labels;        // [batch.total]
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  static constexpr bool kReportsStatus = true;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.batch.total, [&](std::int64_t t) {
      const std::int64_t s = p.batch.seq_of(t), b = p.batch.start(s), e = p.batch.start(s + 1);
      auto token = [&](std::int64_t at) {
        const std::int32_t y = p.tokens[at];
        if (y < 0 || y >= p.vocab) {
          device_fail(p.status, kCheckTokens, at);
          return -1;
        }
        return y;
      };
      const std::int32_t x = t + p.k < e ? token(t + p.k) : -1;
      const std::int32_t y = t + p.k + 1 < e ? token(t + p.k + 1) : -1;
      p.ids[t] = x < 0 ? 0 : x;
      p.positions[t] = x < 0 ? 0 : static_cast<std::int32_t>(t - b);
      p.labels[t] = y < 0 ? p.ignore_index : y;
    });
  }
};

// acc (+)= x, elementwise (x in T, acc fp32).
template <class T>
struct AccumulateKernel {
  struct Params {
    const T* x;
    std::int64_t n;
    bool first;  // write instead of add
    float* acc;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.n, [&](std::int64_t i) {
      const float v = to_float(p.x[i]);
      p.acc[i] = p.first ? v : p.acc[i] + v;
    });
  }
};

// out[0] = scale · Σ x[0 .. n), in order.
struct ScaledSumKernel {
  struct Params {
    const float* x;
    int n;
    float scale;
    float* out;
  };
  static constexpr int kThreads = 32;
  TL_DEVICE void operator()(const Params& p) const {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    float s = 0.0f;
    for (int i = 0; i < p.n; ++i) s += p.x[i];
    p.out[0] = s * p.scale;
  }
};

// ------------------------------------------------------------------ DPO
inline constexpr int kCheckPairs = kFirstOperationCheck + 1;

// Every pair's two sequences in [0, S) and different.
struct CheckPairsKernel {
  struct Params {
    const std::int32_t* chosen;
    const std::int32_t* rejected;
    std::int64_t pairs, seqs;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  static constexpr bool kReportsStatus = true;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.pairs, [&](std::int64_t k) {
      const std::int32_t c = p.chosen[k], r = p.rejected[k];
      if (c < 0 || c >= p.seqs || r < 0 || r >= p.seqs || c == r) device_fail(p.status, kCheckPairs, k);
    });
  }
};

// A sequence's log-prob: the sum of its tokens' (a warp a sequence, a fixed order).
struct SeqSumKernel {
  struct Params {
    const float* logprob;
    VarlenBatch seqs;
    float* out;  // [S]
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.seqs.num_seqs, [&](std::int64_t s, int lane) {
      float acc = 0.0f;
      for (std::int64_t i = p.seqs.start(s) + lane; i < p.seqs.start(s + 1); i += 32) acc += p.logprob[i];
      acc = warp::reduce(acc, Sum{});
      if (lane == 0) p.out[s] = acc;
    });
  }
};

// Per pair: the margin x = β((π_c − ref_c) − (π_r − ref_r)), its loss
// softplus(−x) = −log σ(x) (stably), the rewards, and dL/dx = −σ(−x) / P.
struct PairKernel {
  struct Params {
    const float* seq_logprob;  // [S]
    const float* ref_logprob;  // [S]
    const std::int32_t* chosen;
    const std::int32_t* rejected;
    std::int64_t pairs;
    float beta;
    float* pair_loss;       // [P]
    float* dx;              // [P]
    float* chosen_reward;   // [P], optional
    float* rejected_reward; // [P], optional
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.pairs, [&](std::int64_t k) {
      const std::int32_t c = p.chosen[k], r = p.rejected[k];
      const float rc = p.beta * (p.seq_logprob[c] - p.ref_logprob[c]);
      const float rr = p.beta * (p.seq_logprob[r] - p.ref_logprob[r]);
      const float x = rc - rr;
      // softplus(−x) = max(−x, 0) + log1p(exp(−|x|)); σ(−x) = exp(−softplus(x)).
      p.pair_loss[k] = fmaxf(-x, 0.0f) + log1pf(expf(-fabsf(x)));
      const float sig = x >= 0.0f ? expf(-x) / (1.0f + expf(-x)) : 1.0f / (1.0f + expf(x));
      p.dx[k] = -sig / static_cast<float>(p.pairs);
      if (p.chosen_reward) p.chosen_reward[k] = rc;
      if (p.rejected_reward) p.rejected_reward[k] = rr;
    });
  }
};

// dL/dπ_s = β Σ_pairs (dx where s is chosen − dx where s is rejected), in
// pair order (a thread a sequence: no atomics); then each token's
// dL/d(token loss) = −dL/dπ_s (its loss is −log-prob), a warp a sequence.
struct DpoGradKernel {
  struct Params {
    const std::int32_t* chosen;
    const std::int32_t* rejected;
    const float* dx;
    std::int64_t pairs;
    float beta;
    VarlenBatch seqs;
    float* grad_token_loss;  // [N]
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.seqs.num_seqs, [&](std::int64_t s, int lane) {
      float g = 0.0f;  // every lane the same sum, in the same order
      for (std::int64_t k = 0; k < p.pairs; ++k) {
        if (p.chosen[k] == s) g += p.dx[k];
        if (p.rejected[k] == s) g -= p.dx[k];
      }
      g *= p.beta;
      for (std::int64_t i = p.seqs.start(s) + lane; i < p.seqs.start(s + 1); i += 32) p.grad_token_loss[i] = -g;
    });
  }
};

// One block: the mean of the pairs' losses, in a fixed order.
struct MeanKernel {
  struct Params {
    const float* x;
    std::int64_t n;
    float* out;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  struct SharedStorage {
    float part[kThreads / 32];
  };
  TL_DEVICE void operator()(const Params& p, SharedStorage& sh) const {
    if (blockIdx.x != 0) return;
    const std::int64_t run = (p.n + kThreads - 1) / kThreads;
    const std::int64_t lo = threadIdx.x * run, hi = lo + run < p.n ? lo + run : p.n;
    float a = 0.0f;
    for (std::int64_t i = lo; i < hi; ++i) a += p.x[i];
    a = warp::reduce(a, Sum{});
    if ((threadIdx.x & 31u) == 0) sh.part[threadIdx.x >> 5] = a;
    __syncthreads();
    if (threadIdx.x != 0) return;
    float t = 0.0f;
    for (int i = 0; i < kThreads / 32; ++i) t += sh.part[i];
    p.out[0] = t / static_cast<float>(p.n);
  }
};

// Self-speculative decoding's acceptance, a thread a sequence: the longest
// prefix of the drafts that the verifier's greedy ids agree with, the
// accepted tokens and the bonus one, the cache positions to drop. Counts are
// integers: the histogram is the same whatever the atomics' order.
struct AcceptKernel {
  struct Params {
    const std::int32_t* draft;     // [batch, k], draft_stride apart
    std::int64_t draft_stride;
    const std::int32_t* verified;  // [batch, k + 1], verified_stride apart
    std::int64_t verified_stride;
    std::int64_t batch;
    int k;
    std::int32_t* accepted;        // [batch], optional
    std::int32_t* out;             // [batch, ...], out_stride apart: accepted + 1 tokens
    std::int64_t out_stride;
    std::int32_t* drop;            // [batch], optional: k - accepted
    unsigned long long* histogram;  // [k + 1], optional, added to
  };
  static constexpr int kThreads = 128;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.batch, [&](std::int64_t b) {
      const std::int32_t* d = p.draft + b * p.draft_stride;
      const std::int32_t* v = p.verified + b * p.verified_stride;
      int a = 0;
      while (a < p.k && d[a] == v[a]) ++a;
      std::int32_t* o = p.out + b * p.out_stride;
      for (int j = 0; j < a; ++j) o[j] = d[j];
      o[a] = v[a];  // the verifier's own next token after the accepted ones
      if (p.accepted) p.accepted[b] = a;
      if (p.drop) p.drop[b] = p.k - a;
      if (p.histogram) atomicAdd(p.histogram + a, 1ull);
    });
  }
};

// The cross-entropy options every head takes, checked on the host.
inline Status check_options(const CrossEntropyOptions& o) {
  if (!(o.label_smoothing >= 0.0f && o.label_smoothing <= 1.0f)) {
    return Status::argument(StatusCode::invalid_argument, "options.label_smoothing", "a value in [0, 1]", "%g",
                            static_cast<double>(o.label_smoothing));
  }
  if (!(o.z_loss >= 0.0f) || !std::isfinite(o.z_loss)) {
    return Status::argument(StatusCode::invalid_argument, "options.z_loss", "a finite coefficient >= 0", "%g",
                            static_cast<double>(o.z_loss));
  }
  return Status::ok();
}

// After a run: a failed label check named with the label that failed it.
inline Status read_labels_status(const char* op, const std::int32_t* labels, std::int64_t vocab, std::int32_t ignore,
                                 Workspace ws, cudaStream_t stream) {
  DeviceFailure f;
  TL_RETURN_IF_ERROR(read_device_status(status_of(ws), f, stream));
  if (f.check == 0) return Status::ok();
  if (f.check != kCheckLabels) return Status::error(StatusCode::internal, "%s: unknown device check %d", op, f.check);
  std::int32_t y = 0;
  TL_CUDA_TRY(cudaMemcpyAsync(&y, labels + f.index, sizeof y, cudaMemcpyDeviceToHost, stream));
  TL_CUDA_TRY(cudaStreamSynchronize(stream));
  char expected[96];
  std::snprintf(expected, sizeof expected, "labels in [0, %lld) or ignore_index (%d) (nothing was written)",
                static_cast<long long>(vocab), ignore);
  return device_failure(op, StatusCode::invalid_argument, "labels", expected, "labels[%lld] = %d",
                        static_cast<long long>(f.index), y);
}


}  // namespace tokenless::heads::detail
