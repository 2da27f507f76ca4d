#pragma once
// Cosine router and ratio loss schedules: a warp per position (its lanes
// stride over d), a block per ratio group, one thread for the loss. Every
// output element has exactly one writer, so nothing needs atomics and the
// results are run-to-run deterministic.
#include <tokenless/core/block.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/functional.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/warp.cuh>
#include <tokenless/router/policy.hpp>

#include <cstdint>

namespace tokenless::router::detail {

inline constexpr int kRouterWarps = 8;
inline constexpr int kRatioThreads = 256;

struct CosTerms {
  float dot, nq, nk;
};

template <class T>
TL_DEVICE TL_FORCEINLINE CosTerms cos_terms(const T* q, const T* k, int d, int lane) {
  float dot = 0, qq = 0, kk = 0;
  for (int c = lane; c < d; c += 32) {
    const float a = to_float(q[c]), b = to_float(k[c]);
    dot += a * b;
    qq += a * a;
    kk += b * b;
  }
  return {warp::reduce(dot, Sum{}), sqrtf(warp::reduce(qq, Sum{})), sqrtf(warp::reduce(kk, Sum{}))};
}

TL_DEVICE TL_FORCEINLINE float cos_of(const CosTerms& c) {
  return c.dot / (fmaxf(c.nq, kNormalizeEps) * fmaxf(c.nk, kNormalizeEps));
}

template <class T>
struct ForwardKernel {
  struct Params {
    const T* q;
    const T* k;
    VarlenBatch batch;
    int d;
    float* prob;
    std::uint8_t* boundary;  // optional
    DeviceStatus* status;
  };
  static constexpr int kThreads = kRouterWarps * 32;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.batch.total, [&](std::int64_t t, int lane) {
      float prob = 1.0f;
      if (!p.batch.is_start(t)) prob = prob_from_cos(cos_of(cos_terms(p.q + (t - 1) * p.d, p.k + t * p.d, p.d, lane)));
      if (lane == 0) {
        p.prob[t] = prob;
        if (p.boundary) p.boundary[t] = is_boundary(prob);
      }
    });
  }
};

// dp/dq_{t-1} and dp/dk_t through normalize and the clamp (whose gradient is
// 1 inside [0, 1], bounds included, as torch.clamp's). Every q and k row gets
// exactly one writer, so no atomics: q rows of sequence ends and k rows of
// sequence starts get zeros.
template <class T>
struct BackwardKernel {
  struct Params {
    const T* q;
    const T* k;
    const float* grad_prob;
    VarlenBatch batch;
    int d;
    float* grad_q;
    float* grad_k;
    DeviceStatus* status;
  };
  static constexpr int kThreads = kRouterWarps * 32;
  TL_DEVICE void operator()(const Params& p) const {
    const int d = p.d;
    const std::int64_t n = p.batch.total;
    work::warp_items(n, [&](std::int64_t t, int lane) {
      float* gk = p.grad_k + t * d;
      if (t == n - 1)
        for (int c = lane; c < d; c += 32) p.grad_q[t * d + c] = 0.0f;
      if (p.batch.is_start(t)) {
        for (int c = lane; c < d; c += 32) {
          gk[c] = 0.0f;
          if (t > 0) p.grad_q[(t - 1) * d + c] = 0.0f;
        }
        return;
      }
      const T* qr = p.q + (t - 1) * d;
      const T* kr = p.k + t * d;
      const CosTerms s = cos_terms(qr, kr, d, lane);
      const float mq = fmaxf(s.nq, kNormalizeEps), mk = fmaxf(s.nk, kNormalizeEps);
      const float cos = s.dot / (mq * mk);
      const float raw = 0.5f * (1.0f - cos);
      const float g = (raw >= 0.0f && raw <= 1.0f) ? -0.5f * p.grad_prob[t] : 0.0f;  // dL/dcos
      float* gq = p.grad_q + (t - 1) * d;
      for (int c = lane; c < d; c += 32) {
        const float qh = to_float(qr[c]) / mq, kh = to_float(kr[c]) / mk;
        // d cos / d q = (k^ - cos q^) / ||q|| when ||q|| > eps; k^ / eps otherwise (normalize is then q / eps).
        gq[c] = g * (s.nq > kNormalizeEps ? (kh - cos * qh) / s.nq : kh / kNormalizeEps);
        gk[c] = g * (s.nk > kNormalizeEps ? (qh - cos * kh) / s.nk : qh / kNormalizeEps);
      }
    });
  }
};

// Generation: p for each stream's new position from its previous q.
template <class T>
struct StepKernel {
  struct Params {
    const T* q_prev;
    const T* k_new;
    const std::uint8_t* first;  // optional
    std::int64_t streams;
    int d;
    float* prob;
    std::uint8_t* boundary;  // optional
  };
  static constexpr int kThreads = kRouterWarps * 32;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.streams, [&](std::int64_t b, int lane) {
      float prob = 1.0f;
      if (!(p.first && p.first[b])) prob = prob_from_cos(cos_of(cos_terms(p.q_prev + b * p.d, p.k_new + b * p.d, p.d, lane)));
      if (lane == 0) {
        p.prob[b] = prob;
        if (p.boundary) p.boundary[b] = is_boundary(prob);
      }
    });
  }
};

// A block per group (a sequence, or the whole batch): sums of boundaries and
// p, and the group's size, in a fixed order.
struct RatioSumsKernel {
  struct Params {
    const float* prob;
    const std::uint8_t* boundary;
    VarlenBatch batch;
    bool per_sequence;
    float* sums;  // [groups, 3]
    DeviceStatus* status;
  };
  static constexpr int kThreads = kRatioThreads;
  using R = block::Reduce<float, kThreads>;
  using SharedStorage = typename R::TempStorage;
  TL_DEVICE void operator()(const Params& p, SharedStorage& smem) const {
    const std::int64_t groups = p.per_sequence ? p.batch.num_seqs : 1;
    work::block_items(groups, [&](std::int64_t g) {
      const std::int64_t begin = p.per_sequence ? p.batch.start(g) : 0;
      const std::int64_t end = p.per_sequence ? p.batch.start(g + 1) : p.batch.total;
      float f = 0, s = 0;
      for (std::int64_t t = begin + threadIdx.x; t < end; t += kThreads) {
        f += p.boundary[t] ? 1.0f : 0.0f;
        s += p.prob[t];
      }
      f = R::reduce(f, Sum{}, smem);
      s = R::reduce(s, Sum{}, smem);
      if (threadIdx.x == 0) {
        p.sums[g * 3 + 0] = f;
        p.sums[g * 3 + 1] = s;
        p.sums[g * 3 + 2] = static_cast<float>(end - begin);
      }
      __syncthreads();  // the reduction storage is reused by the next group
    });
  }
};

// The loss (one thread, fixed order), averaged over the non-empty groups,
// whose count the gradient needs too.
struct RatioLossKernel {
  struct Params {
    const float* sums;
    std::int64_t groups;
    float R;
    float* loss;
    float* used;  // non-empty groups
    DeviceStatus* status;
  };
  static constexpr int kThreads = 32;
  TL_DEVICE void operator()(const Params& p) const {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    float total = 0, used = 0;
    for (std::int64_t g = 0; g < p.groups; ++g) {
      const float N = p.sums[g * 3 + 2];
      if (N == 0.0f) continue;  // an empty sequence has no F or G
      total += ratio_loss_value(p.sums[g * 3] / N, p.sums[g * 3 + 1] / N, p.R);
      used += 1.0f;
    }
    *p.loss = total / used;
    *p.used = used;
  }
};

// dL/dp per position: dL/dG of its group over the group's size and the groups used.
struct RatioGradKernel {
  struct Params {
    const float* sums;
    VarlenBatch batch;
    bool per_sequence;
    float R, grad_scale;
    const float* used;
    float* grad_prob;
    DeviceStatus* status;
  };
  static constexpr int kThreads = kRatioThreads;
  TL_DEVICE void operator()(const Params& p) const {
    const float used = *p.used;
    work::thread_items(p.batch.total, [&](std::int64_t t) {
      const std::int64_t g = p.per_sequence ? p.batch.seq_of(t) : 0;
      const float N = p.sums[g * 3 + 2];
      p.grad_prob[t] = p.grad_scale * ratio_loss_grad(p.sums[g * 3] / N, p.R) / (N * used);
    });
  }
};

}  // namespace tokenless::router::detail
