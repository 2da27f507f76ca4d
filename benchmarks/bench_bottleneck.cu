// Concept bottleneck benchmarks: segment pooling (max, BLT's; mean, DLCM's)
// and replication, forward and backward, bf16, d = 1024 (BLT-1B's local
// width), 64K to 4M positions in 8 sequences, patches of 1-8 bytes (mean
// 4.5). Memory-bound: bytes are the rows read and written once (max's
// backward reads x twice more). Target: >= 85% of the measured copy
// bandwidth, and >= 3x PyTorch's scatter_reduce / index_select
// (benchmarks/torch/bottleneck_eager.py).
//
// H-Net's dechunk, forward (with the fp32 residual and the states the
// backward needs) and backward, at the same shapes with chunks for patches.
// Bytes are what it must move once: forward z, residual, out and states;
// backward grad_out, z, states, grad_z, p and grad_p (it reads grad_out and
// the states twice). Target: >= 80% of the copy bandwidth; PyTorch's
// sequential loop and mamba_ssm's scan in benchmarks/torch/dechunk_eager.py.
//
// CoCoMix's concepts at GPT-2's d 768 and 2048, dictionary 32768, k 32, 4K
// and 16K tokens: the top 32 of the concept logits (bytes: the logits once),
// compression by gather with the de-normalisation (bytes: the codes, the k
// gathered rows a token, the output), its backward (the same reads, plus the
// dictionary's gradient runs), and the concept loss with its gradient
// (bytes: the logits read, dL/dz written). Targets: compression >= 70% of
// the copy bandwidth and >= 3x CoCoMix's dense GEMM over the masked logits
// (benchmarks/torch/concepts_eager.py).
//
// The SAE encode fused with its GEMM (d 768, dictionary 32768, k 32): its
// FLOPs and fraction of the matrix peak, and, as its own row, the encoder
// GEMM alone through cuBLASLt (x̂ W_enc^T into a dense [T, 32768]): the
// target is <= 1.15x the GEMM's time.
//
// BLT's patch slots: amax pooling into the D -> 2D projection (BLT-1B's
// encoder, k = 2), forward and backward, at the pooling's shapes: bytes and
// FLOPs of the pooling and the GEMMs (side by side: scatter_reduce + linear
// in benchmarks/torch/bottleneck_eager.py).
#include "harness.cuh"

#include <tokenless/bottleneck/concepts.cuh>
#include <tokenless/bottleneck/dechunk.cuh>
#include <tokenless/bottleneck/project.cuh>

#include <random>

namespace bn = tokenless::bottleneck;

namespace {

using B16 = __nv_bfloat16;
constexpr int kD = 1024;

struct Batch {
  std::int64_t n = 0, segments = 0;
  tlb::DeviceArray<std::int32_t> cu, offsets, starts, lengths;
  explicit Batch(std::int64_t positions)
      : n(positions), cu(9), offsets(9), starts(positions), lengths(positions) {
    std::vector<std::int32_t> c(9), o(9), s, l;
    std::mt19937 rng(5);
    for (int b = 0; b < 8; ++b) {
      c[b + 1] = static_cast<std::int32_t>(n * (b + 1) / 8);
      o[b] = static_cast<std::int32_t>(s.size());
      for (std::int32_t pos = 0; pos < c[b + 1] - c[b];) {
        const std::int32_t len = std::min<std::int32_t>(c[b + 1] - c[b] - pos, 1 + static_cast<std::int32_t>(rng() % 8));
        s.push_back(pos);
        l.push_back(len);
        pos += len;
      }
    }
    o[8] = static_cast<std::int32_t>(s.size());
    segments = o[8];
    cudaMemcpy(cu.p, c.data(), 9 * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(offsets.p, o.data(), 9 * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(starts.p, s.data(), s.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(lengths.p, l.data(), l.size() * 4, cudaMemcpyHostToDevice);
  }
  tokenless::VarlenBatch batch() const { return tokenless::VarlenBatch::packed(cu.p, 8, n); }
  tokenless::Segments segs() const { return {offsets.p, starts.p, lengths.p, nullptr}; }
};

// Runs once (checking the status), then times.
template <class Op>
void time_op(benchmark::State& state, const typename Op::Arguments& a, double bytes) {
  tlb::DeviceArray<unsigned char> ws(Op::workspace_size(a));
  const tokenless::Workspace w{ws.p, ws.n};
  if (auto s = Op::run(a, w); !s) return state.SkipWithError(s.message());
  if (auto s = Op::read_status(a, w); !s) return state.SkipWithError(s.message());
  const double t = tlb::time_iterations(state, [&] { (void)Op::run(a, w); });
  tlb::report(state, t, bytes, 0);
}

template <class P>
void BM_Pool(benchmark::State& state, bool backward) {
  Batch bt(state.range(0));
  tlb::DeviceArray<B16> x(bt.n * kD), pooled(bt.segments * kD), dx(bt.n * kD);
  tlb::fill_random(x.p, x.n, 1);
  tlb::fill_random(pooled.p, pooled.n, 2);
  const double rows = 2.0 * kD * static_cast<double>(bt.n), segs = 2.0 * kD * static_cast<double>(bt.segments);
  if (!backward) {
    time_op<bn::SegmentPool<P, B16>>(state, {.x = x.p, .batch = bt.batch(), .segments = bt.segs(),
                                             .capacity = bt.segments, .d = kD, .out = pooled.p},
                                     rows + segs);
  } else {
    const double reads_x = bn::routes_to_arg<P>() ? 2.0 * rows : 0.0;
    time_op<bn::SegmentPoolBackward<P, B16>>(state, {.x = x.p, .grad_out = pooled.p, .batch = bt.batch(),
                                                     .segments = bt.segs(), .capacity = bt.segments, .d = kD,
                                                     .grad_x = dx.p},
                                             segs + rows + reads_x);
  }
}

void BM_PatchSlots(benchmark::State& state, bool backward) {
  Batch bt(state.range(0));
  tokenless::blas::LtHandle h;
  if (auto s = tokenless::blas::LtHandle::create(h); !s) return state.SkipWithError(s.message());
  const std::int64_t out_f = 2 * kD;
  tlb::DeviceArray<B16> x(bt.n * kD), w(out_f * kD), slots(bt.segments * out_f), dx(bt.n * kD), dw(out_f * kD);
  tlb::fill_random(x.p, x.n, 31);
  tlb::fill_random(w.p, w.n, 32);
  using Fwd = bn::PoolProject<bn::PoolMax, B16>;
  using Bwd = bn::PoolProjectBackward<bn::PoolMax, B16>;
  const Fwd::Arguments a{.handle = &h, .x = x.p, .batch = bt.batch(), .segments = bt.segs(), .capacity = bt.segments,
                         .d = kD, .weight = w.p, .out_features = out_f, .out = slots.p};
  const Bwd::Arguments g{.handle = &h, .x = x.p, .grad_out = slots.p, .batch = bt.batch(), .segments = bt.segs(),
                         .capacity = bt.segments, .d = kD, .weight = w.p, .out_features = out_f, .grad_x = dx.p,
                         .grad_weight = dw.p};
  tlb::DeviceArray<unsigned char> ws(std::max(Fwd::workspace_size(a), Bwd::workspace_size(g)));
  const tokenless::Workspace wsp{ws.p, ws.n};
  if (auto s = Fwd::run(a, wsp); !s) return state.SkipWithError(s.message());
  if (auto s = Fwd::read_status(a, wsp); !s) return state.SkipWithError(s.message());
  {  // Check once: finite slots.
    std::vector<B16> hs(std::min<std::size_t>(slots.n, 1 << 20));
    TLB_CHECK_CUDA(cudaMemcpy(hs.data(), slots.p, hs.size() * 2, cudaMemcpyDeviceToHost));
    for (B16 v : hs) {
      if (!std::isfinite(tokenless::to_float(v))) return state.SkipWithError("non-finite slots");
    }
  }
  const double p = static_cast<double>(bt.segments), gemm = 2.0 * p * kD * out_f;
  const double io = 2.0 * static_cast<double>(bt.n) * kD + 2.0 * p * out_f + 2.0 * kD * out_f;
  if (!backward) {
    const double t = tlb::time_iterations(state, [&] { (void)Fwd::run(a, wsp); });
    tlb::report(state, t, io, gemm);
  } else {
    if (auto s = Bwd::run(g, wsp); !s) return state.SkipWithError(s.message());
    const double t = tlb::time_iterations(state, [&] { (void)Bwd::run(g, wsp); });
    tlb::report(state, t, 2.0 * io + 2.0 * static_cast<double>(bt.n) * kD, 2.0 * gemm);
  }
}

void BM_Replicate(benchmark::State& state, bool backward) {
  Batch bt(state.range(0));
  tlb::DeviceArray<B16> per_pos(bt.n * kD), per_seg(bt.segments * kD);
  tlb::fill_random(per_pos.p, per_pos.n, 3);
  tlb::fill_random(per_seg.p, per_seg.n, 4);
  const double bytes = 2.0 * kD * static_cast<double>(bt.n + bt.segments);
  if (!backward) {
    time_op<bn::Replicate<B16>>(state, {.src = per_seg.p, .batch = bt.batch(), .segments = bt.segs(),
                                        .capacity = bt.segments, .d = kD, .shift = 1, .out = per_pos.p},
                                bytes);
  } else {
    time_op<bn::ReplicateBackward<B16>>(state, {.grad_out = per_pos.p, .batch = bt.batch(), .segments = bt.segs(),
                                                .capacity = bt.segments, .d = kD, .shift = 1,
                                                .grad_src = per_seg.p},
                                        bytes);
  }
}

// The router's p: 1 at a sequence start, (0.5, 1) at other chunk starts,
// [0, 0.5] elsewhere.
std::vector<float> router_probs(const Batch& bt, std::vector<std::int32_t>& chunk_start) {
  std::vector<std::int32_t> cu(9), off(9), st(static_cast<std::size_t>(bt.segments));
  TLB_CHECK_CUDA(cudaMemcpy(cu.data(), bt.cu.p, 9 * 4, cudaMemcpyDeviceToHost));
  TLB_CHECK_CUDA(cudaMemcpy(off.data(), bt.offsets.p, 9 * 4, cudaMemcpyDeviceToHost));
  TLB_CHECK_CUDA(cudaMemcpy(st.data(), bt.starts.p, st.size() * 4, cudaMemcpyDeviceToHost));
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> p(static_cast<std::size_t>(bt.n));
  for (auto& v : p) v = 0.5f * u(rng);
  chunk_start.assign(st.size(), 0);
  for (int b = 0; b < 8; ++b) {
    for (std::int32_t c = off[b]; c < off[b + 1]; ++c) {
      chunk_start[c] = cu[b] + st[c];
      p[chunk_start[c]] = c == off[b] ? 1.0f : 0.5f + 0.49f * u(rng) + 1e-3f;
    }
  }
  return p;
}

// The first sequence's first 512 positions against a sequential fp32 loop.
const char* check_dechunk(const std::vector<float>& p, const std::vector<std::int32_t>& chunk_start,
                          const B16* z, const float* residual, const B16* out) {
  const std::size_t rows = 512;
  std::vector<B16> zh(rows * kD), oh(rows * kD);
  std::vector<float> rh(rows * kD);
  TLB_CHECK_CUDA(cudaMemcpy(zh.data(), z, zh.size() * 2, cudaMemcpyDeviceToHost));
  TLB_CHECK_CUDA(cudaMemcpy(oh.data(), out, oh.size() * 2, cudaMemcpyDeviceToHost));
  TLB_CHECK_CUDA(cudaMemcpy(rh.data(), residual, rh.size() * 4, cudaMemcpyDeviceToHost));
  std::vector<float> h(kD, 0.0f);
  std::size_t c = 0;
  for (std::size_t t = 0; t < rows; ++t) {
    if (c < chunk_start.size() && chunk_start[c] == static_cast<std::int32_t>(t)) {
      const float ph = std::min(std::max(p[t], 1e-4f), 1.0f - 1e-4f);
      for (int j = 0; j < kD; ++j) h[j] = ph * tokenless::to_float(zh[c * kD + j]) + (1.0f - ph) * h[j];
      ++c;
    }
    for (int j = 0; j < kD; ++j) {
      const float want = h[j] + rh[t * kD + j], got = tokenless::to_float(oh[t * kD + j]);
      if (!(std::fabs(got - want) <= 1e-2f * (1.0f + std::fabs(want)))) return "dechunk differs from a sequential loop";
    }
  }
  return nullptr;
}

void BM_Dechunk(benchmark::State& state, bool backward) {
  Batch bt(state.range(0));
  std::vector<std::int32_t> chunk_start;
  const std::vector<float> ph = router_probs(bt, chunk_start);
  tlb::DeviceArray<B16> z(bt.segments * kD), out(bt.n * kD), dz(bt.segments * kD);
  tlb::DeviceArray<float> prob(bt.n), residual(bt.n * kD), states(bt.segments * kD), dp(bt.n);
  tlb::fill_random(z.p, z.n, 5);
  tlb::fill_random(residual.p, residual.n, 6);
  TLB_CHECK_CUDA(cudaMemcpy(prob.p, ph.data(), ph.size() * 4, cudaMemcpyHostToDevice));
  using Fwd = bn::Dechunk<B16>;
  using Bwd = bn::DechunkBackward<B16>;
  const Fwd::Arguments a{.z = z.p, .prob = prob.p, .batch = bt.batch(), .segments = bt.segs(),
                         .capacity = bt.segments, .d = kD, .residual = residual.p, .out = out.p, .states = states.p};
  // The forward's output serves as the gradient: random enough, never zero.
  const Bwd::Arguments g{.grad_out = out.p, .z = z.p, .prob = prob.p, .states = states.p, .batch = bt.batch(),
                         .segments = bt.segs(), .capacity = bt.segments, .d = kD, .grad_z = dz.p, .grad_prob = dp.p};
  tlb::DeviceArray<unsigned char> ws(std::max(Fwd::workspace_size(a), Bwd::workspace_size(g)));
  const tokenless::Workspace w{ws.p, ws.n};
  // Check once: no failure, the forward against a sequential loop, the backward finite.
  if (auto s = Fwd::run(a, w); !s) return state.SkipWithError(s.message());
  if (auto s = Fwd::read_status(a, w); !s) return state.SkipWithError(s.message());
  if (const char* e = check_dechunk(ph, chunk_start, z.p, residual.p, out.p)) return state.SkipWithError(e);
  if (backward) {
    if (auto s = Bwd::run(g, w); !s) return state.SkipWithError(s.message());
    if (auto s = Bwd::read_status(g, w); !s) return state.SkipWithError(s.message());
    std::vector<float> h(static_cast<std::size_t>(bt.n));
    TLB_CHECK_CUDA(cudaMemcpy(h.data(), dp.p, h.size() * 4, cudaMemcpyDeviceToHost));
    for (float x : h) {
      if (!std::isfinite(x)) return state.SkipWithError("non-finite dL/dp");
    }
  }
  const double n = static_cast<double>(bt.n) * kD, c = static_cast<double>(bt.segments) * kD;
  if (!backward) {
    const double t = tlb::time_iterations(state, [&] { (void)Fwd::run(a, w); });
    tlb::report(state, t, 2.0 * c + 4.0 * n + 2.0 * n + 4.0 * c, 0);
  } else {
    const double t = tlb::time_iterations(state, [&] { (void)Bwd::run(g, w); });
    tlb::report(state, t, 2.0 * n + 2.0 * c + 4.0 * c + 2.0 * c + 8.0 * static_cast<double>(bt.n), 0);
  }
}

constexpr std::int64_t kDict = 32768;
constexpr int kTopK = 32;

// Codes as the top 32 of random logits, on the device.
struct Concepts {
  std::int64_t t;
  int d;
  tlb::DeviceArray<B16> logits, dict, out, grad, dz;
  tlb::DeviceArray<std::int32_t> idx;
  tlb::DeviceArray<float> val, mean, std, gval, gmean, gstd, gdict;
  Concepts(std::int64_t tokens, int width)
      : t(tokens), d(width), logits(tokens * kDict), dict(kDict * width), out(tokens * width), grad(tokens * width),
        dz(tokens * kDict), idx(tokens * kTopK), val(tokens * kTopK), mean(tokens), std(tokens),
        gval(tokens * kTopK), gmean(tokens), gstd(tokens), gdict(kDict * width) {
    tlb::fill_random(logits.p, logits.n, 11);
    tlb::fill_random(dict.p, dict.n, 12);
    tlb::fill_random(grad.p, grad.n, 13);
    tlb::fill_random(mean.p, mean.n, 14);
    tlb::fill_random(std.p, std.n, 15);
  }
};

// The first row's top k against a host sort.
const char* check_topk(const Concepts& c) {
  std::vector<B16> row(kDict);
  std::vector<std::int32_t> got(kTopK);
  TLB_CHECK_CUDA(cudaMemcpy(row.data(), c.logits.p, kDict * 2, cudaMemcpyDeviceToHost));
  TLB_CHECK_CUDA(cudaMemcpy(got.data(), c.idx.p, kTopK * 4, cudaMemcpyDeviceToHost));
  std::vector<std::int32_t> order(kDict);
  for (std::int32_t i = 0; i < kDict; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
    return tokenless::to_float(row[a]) > tokenless::to_float(row[b]);
  });
  for (int j = 0; j < kTopK; ++j) {
    if (got[j] != order[j]) return "top k differs from a host sort";
  }
  return nullptr;
}

void BM_ConceptTopK(benchmark::State& state, int d) {
  Concepts c(state.range(0), d);
  using Op = bn::TopK<bn::TopKRaw, B16>;
  const Op::Arguments a{.x = c.logits.p, .rows = c.t, .dictionary = kDict, .k = kTopK, .idx = c.idx.p, .val = c.val.p};
  if (auto s = Op::run(a); !s) return state.SkipWithError(s.message());
  if (const char* e = check_topk(c)) return state.SkipWithError(e);
  const double t = tlb::time_iterations(state, [&] { (void)Op::run(a); });
  tlb::report(state, t, 2.0 * static_cast<double>(c.t) * kDict + 8.0 * static_cast<double>(c.t) * kTopK, 0);
}

void BM_Compress(benchmark::State& state, int d, bool backward) {
  Concepts c(state.range(0), d);
  if (auto s = bn::TopK<bn::TopKRaw, B16>::run(
          {.x = c.logits.p, .rows = c.t, .dictionary = kDict, .k = kTopK, .idx = c.idx.p, .val = c.val.p});
      !s) {
    return state.SkipWithError(s.message());
  }
  using Fwd = bn::SparseDecode<B16>;
  using Bwd = bn::SparseDecodeBackward<B16>;
  const Fwd::Arguments a{.idx = c.idx.p, .val = c.val.p, .rows = c.t, .k = kTopK, .dict = c.dict.p,
                         .dictionary = kDict, .d = d, .mean = c.mean.p, .std = c.std.p, .out = c.out.p};
  const Bwd::Arguments g{.idx = c.idx.p, .val = c.val.p, .rows = c.t, .k = kTopK, .dict = c.dict.p,
                         .dictionary = kDict, .d = d, .std = c.std.p, .grad_out = c.grad.p, .grad_val = c.gval.p,
                         .grad_mean = c.gmean.p, .grad_std = c.gstd.p, .grad_dict = c.gdict.p};
  tlb::DeviceArray<unsigned char> ws(std::max(Fwd::workspace_size(a), Bwd::workspace_size(g)));
  const tokenless::Workspace w{ws.p, ws.n};
  if (auto s = Fwd::run(a, w); !s) return state.SkipWithError(s.message());
  if (auto s = Fwd::read_status(a, w); !s) return state.SkipWithError(s.message());
  {  // Check once: the first token against a host gather.
    std::vector<std::int32_t> ih(kTopK);
    std::vector<float> vh(kTopK), mh(1), sh(1);
    std::vector<B16> oh(d), wrow(d);
    TLB_CHECK_CUDA(cudaMemcpy(ih.data(), c.idx.p, kTopK * 4, cudaMemcpyDeviceToHost));
    TLB_CHECK_CUDA(cudaMemcpy(vh.data(), c.val.p, kTopK * 4, cudaMemcpyDeviceToHost));
    TLB_CHECK_CUDA(cudaMemcpy(mh.data(), c.mean.p, 4, cudaMemcpyDeviceToHost));
    TLB_CHECK_CUDA(cudaMemcpy(sh.data(), c.std.p, 4, cudaMemcpyDeviceToHost));
    TLB_CHECK_CUDA(cudaMemcpy(oh.data(), c.out.p, d * 2, cudaMemcpyDeviceToHost));
    std::vector<float> want(d, 0.0f);
    for (int j = 0; j < kTopK; ++j) {
      TLB_CHECK_CUDA(cudaMemcpy(wrow.data(), c.dict.p + std::int64_t{ih[j]} * d, d * 2, cudaMemcpyDeviceToHost));
      for (int x = 0; x < d; ++x) want[x] += vh[j] * tokenless::to_float(wrow[x]);
    }
    for (int x = 0; x < d; ++x) {
      const float wv = want[x] * sh[0] + mh[0];
      if (!(std::fabs(tokenless::to_float(oh[x]) - wv) <= 1e-2f * (1.0f + std::fabs(wv)))) {
        return state.SkipWithError("compression differs from a host gather");
      }
    }
  }
  const double codes = 8.0 * static_cast<double>(c.t) * kTopK, rows = 2.0 * static_cast<double>(c.t) * kTopK * d,
               io = 2.0 * static_cast<double>(c.t) * d;
  if (!backward) {
    const double t = tlb::time_iterations(state, [&] { (void)Fwd::run(a, w); });
    tlb::report(state, t, codes + rows + io, 2.0 * static_cast<double>(c.t) * kTopK * d);
  } else {
    if (auto s = Bwd::run(g, w); !s) return state.SkipWithError(s.message());
    if (auto s = Bwd::read_status(g, w); !s) return state.SkipWithError(s.message());
    const double t = tlb::time_iterations(state, [&] { (void)Bwd::run(g, w); });
    // dL/dv reads the rows and g; the dictionary's gradient writes it whole (fp32) and reads g per code.
    tlb::report(state, t, codes + rows + io + 4.0 * kDict * d + 2.0 * static_cast<double>(c.t) * kTopK * d,
                4.0 * static_cast<double>(c.t) * kTopK * d);
  }
}

void BM_ConceptLoss(benchmark::State& state) {
  Concepts c(state.range(0), 768);
  tlb::DeviceArray<std::int32_t> labels(c.t * 4);
  {
    std::vector<std::int32_t> h(static_cast<std::size_t>(c.t * 4));
    for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<std::int32_t>((i * 7919) % kDict);
    TLB_CHECK_CUDA(cudaMemcpy(labels.p, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
  }
  tlb::DeviceArray<float> loss(1);
  using Op = bn::ConceptLoss<B16>;
  const Op::Arguments a{.logits = c.logits.p, .rows = c.t, .dictionary = kDict, .labels = labels.p, .num_labels = 4,
                        .weight = 0.1f, .loss = loss.p, .grad_logits = c.dz.p};
  tlb::DeviceArray<unsigned char> ws(Op::workspace_size(a));
  const tokenless::Workspace w{ws.p, ws.n};
  if (auto s = Op::run(a, w); !s) return state.SkipWithError(s.message());
  if (auto s = Op::read_status(a, w); !s) return state.SkipWithError(s.message());
  float lh = 0;
  TLB_CHECK_CUDA(cudaMemcpy(&lh, loss.p, 4, cudaMemcpyDeviceToHost));
  // Logits in [-0.5, 0.5): the CE is within 0.5 of log(32768) (λ = 0.1).
  if (!(std::fabs(lh / 0.1f - std::log(32768.0f)) < 0.6f)) return state.SkipWithError("implausible concept loss");
  const double t = tlb::time_iterations(state, [&] { (void)Op::run(a, w); });
  tlb::report(state, t, 4.0 * static_cast<double>(c.t) * kDict, 0);
}

void BM_SaeEncode(benchmark::State& state, bool gemm_only) {
  const std::int64_t t = state.range(0);
  const int d = 768;
  tlb::DeviceArray<B16> x(t * d), w(kDict * d), dense(gemm_only ? t * kDict : 1);
  tlb::DeviceArray<std::int32_t> idx(t * kTopK);
  tlb::DeviceArray<float> val(t * kTopK), bias(kDict);
  tlb::fill_random(x.p, x.n, 21);
  tlb::fill_random(w.p, w.n, 22);
  tlb::fill_random(bias.p, bias.n, 23);
  const double flops = 2.0 * static_cast<double>(t) * kDict * d;
  const double io = 2.0 * static_cast<double>(t) * d + 2.0 * static_cast<double>(kDict) * d;
  if (gemm_only) {
    tokenless::blas::LtHandle h;
    if (auto s = tokenless::blas::LtHandle::create(h); !s) return state.SkipWithError(s.message());
    using G = tokenless::blas::Gemm;
    const G::Arguments a{.handle = &h, .dtype = tokenless::DType::bf16, .m = t, .n = kDict, .k = d, .a = x.p,
                         .lda = d, .b = w.p, .ldb = d, .trans_b = true, .d = dense.p, .ldd = kDict};
    tlb::DeviceArray<unsigned char> ws(G::workspace_size(a));
    const tokenless::Workspace wsp{ws.p, ws.n};
    if (auto s = G::run(a, wsp); !s) return state.SkipWithError(s.message());
    const double sec = tlb::time_iterations(state, [&] { (void)G::run(a, wsp); });
    tlb::report(state, sec, io + 2.0 * static_cast<double>(t) * kDict, flops);
    return;
  }
  using Op = bn::SaeEncode<bn::TopKRelu, B16>;
  const Op::Arguments a{.x = x.p, .rows = t, .d = d, .w_enc = w.p, .dictionary = kDict, .latent_bias = bias.p,
                        .k = kTopK, .idx = idx.p, .val = val.p};
  if (auto s = Op::run(a); !s) return state.SkipWithError(s.message());
  {  // Check once: the first row's codes against a host GEMM row and sort.
    std::vector<B16> xh(d), wh(static_cast<std::size_t>(kDict) * d);
    std::vector<float> bh(kDict), vh(kTopK);
    std::vector<std::int32_t> ih(kTopK);
    TLB_CHECK_CUDA(cudaMemcpy(xh.data(), x.p, d * 2, cudaMemcpyDeviceToHost));
    TLB_CHECK_CUDA(cudaMemcpy(wh.data(), w.p, wh.size() * 2, cudaMemcpyDeviceToHost));
    TLB_CHECK_CUDA(cudaMemcpy(bh.data(), bias.p, kDict * 4, cudaMemcpyDeviceToHost));
    TLB_CHECK_CUDA(cudaMemcpy(ih.data(), idx.p, kTopK * 4, cudaMemcpyDeviceToHost));
    TLB_CHECK_CUDA(cudaMemcpy(vh.data(), val.p, kTopK * 4, cudaMemcpyDeviceToHost));
    std::vector<float> pre(kDict);
    for (std::int64_t i = 0; i < kDict; ++i) {
      float a2 = bh[i];
      for (int c = 0; c < d; ++c) a2 += tokenless::to_float(xh[c]) * tokenless::to_float(wh[i * d + c]);
      pre[i] = a2;
    }
    std::vector<float> sorted = pre;
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    for (int j = 0; j < kTopK; ++j) {
      if (pre[ih[j]] < sorted[kTopK - 1] - 1e-3f) return state.SkipWithError("SAE encode: not a top k of the row");
    }
  }
  const double sec = tlb::time_iterations(state, [&] { (void)Op::run(a); });
  tlb::report(state, sec, io + 8.0 * static_cast<double>(t) * kTopK, flops);
}

}  // namespace

int main(int argc, char** argv) {
  auto sizes = [](benchmark::internal::Benchmark* b) {
    for (std::int64_t n = 1 << 16; n <= (1 << 22); n *= 4) b->Arg(n);
    b->UseManualTime()->Unit(benchmark::kMicrosecond);
  };
  sizes(benchmark::RegisterBenchmark("bottleneck_pool_max_fwd/bf16_d1024", BM_Pool<bn::PoolMax>, false));
  sizes(benchmark::RegisterBenchmark("bottleneck_pool_max_bwd/bf16_d1024", BM_Pool<bn::PoolMax>, true));
  sizes(benchmark::RegisterBenchmark("bottleneck_pool_mean_fwd/bf16_d1024", BM_Pool<bn::PoolMean>, false));
  sizes(benchmark::RegisterBenchmark("bottleneck_pool_mean_bwd/bf16_d1024", BM_Pool<bn::PoolMean>, true));
  sizes(benchmark::RegisterBenchmark("bottleneck_replicate_fwd/bf16_d1024", BM_Replicate, false));
  sizes(benchmark::RegisterBenchmark("bottleneck_replicate_bwd/bf16_d1024", BM_Replicate, true));
  sizes(benchmark::RegisterBenchmark("bottleneck_patch_slots_fwd/bf16_d1024_k2", BM_PatchSlots, false));
  sizes(benchmark::RegisterBenchmark("bottleneck_patch_slots_bwd/bf16_d1024_k2", BM_PatchSlots, true));
  sizes(benchmark::RegisterBenchmark("bottleneck_dechunk_fwd/bf16_d1024", BM_Dechunk, false));
  sizes(benchmark::RegisterBenchmark("bottleneck_dechunk_bwd/bf16_d1024", BM_Dechunk, true));
  auto tokens = [](benchmark::internal::Benchmark* b) {
    b->Arg(4096)->Arg(16384)->UseManualTime()->Unit(benchmark::kMicrosecond);
  };
  tokens(benchmark::RegisterBenchmark("bottleneck_concept_topk/bf16_L32768_k32", BM_ConceptTopK, 768));
  for (int d : {768, 2048}) {
    const std::string shape = "/bf16_d" + std::to_string(d) + "_L32768_k32";
    tokens(benchmark::RegisterBenchmark(("bottleneck_compress_fwd" + shape).c_str(), BM_Compress, d, false));
    tokens(benchmark::RegisterBenchmark(("bottleneck_compress_bwd" + shape).c_str(), BM_Compress, d, true));
  }
  tokens(benchmark::RegisterBenchmark("bottleneck_concept_loss/bf16_L32768_K4", BM_ConceptLoss));
  tokens(benchmark::RegisterBenchmark("bottleneck_concept_sae_encode/bf16_d768_L32768_k32", BM_SaeEncode, false));
  tokens(benchmark::RegisterBenchmark("bottleneck_concept_sae_gemm_only/bf16_d768_L32768", BM_SaeEncode, true));
  return tlb::run_main(argc, argv, "tokenless_bench_bottleneck.json");
}
