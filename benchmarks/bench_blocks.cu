// The backbone blocks' benchmarks, bf16 at Llama-3-8B's and Mixtral-8x7B's
// shapes over 4K and 16K tokens:
//   * RMSNorm fused with the residual add, forward and backward (d 4096);
//   * RoPE on q and k in place in a fused qkv row (32 + 8 heads of 128);
//   * SwiGLU from a fused gate_up row, forward and backward (F 14336);
//   * the Mixtral MoE layer (d 4096, F 14336, 8 experts, top-2), forward and
//     forward + backward, and its up-projection grouped GEMM alone: FLOPs and
//     the fraction of the measured bf16 GEMM peak (MAMF).
// Memory-bound ops report bytes read and written once. The side by sides:
// benchmarks/torch/blocks_eager.py (eager and torch.compile).
#include "harness.cuh"

#include <tokenless/blocks/activation.cuh>
#include <tokenless/blocks/moe.cuh>
#include <tokenless/blocks/norm.cuh>
#include <tokenless/blocks/rope.cuh>

namespace bk = tokenless::blocks;

namespace {

using B16 = __nv_bfloat16;
constexpr int kD = 4096;

void BM_RmsNorm(benchmark::State& state, bool backward) {
  const std::int64_t t = state.range(0);
  tlb::DeviceArray<B16> x(t * kD), resid(t * kD), w(kD), y(t * kD), g(t * kD), gr(t * kD), dh(t * kD);
  tlb::DeviceArray<float> inv(t), dw(kD);
  tlb::fill_random(x.p, x.n, 1);
  tlb::fill_random(resid.p, resid.n, 2);
  tlb::fill_random(w.p, w.n, 3);
  tlb::fill_random(g.p, g.n, 4);
  tlb::fill_random(gr.p, gr.n, 5);
  using Fwd = bk::RmsNorm<bk::NormThenCast, B16>;
  using Bwd = bk::RmsNormBackward<bk::NormThenCast, B16>;
  // Out of place for timing (the in-place form would add x again every iteration).
  tlb::DeviceArray<B16> h(t * kD);
  const Fwd::Arguments a{.x = x.p, .residual = resid.p, .weight = w.p, .rows = t, .d = kD, .out = y.p,
                         .residual_out = h.p, .inv_rms = inv.p};
  const Bwd::Arguments b{.h = h.p, .inv_rms = inv.p, .weight = w.p, .grad_out = g.p, .grad_residual = gr.p, .rows = t,
                         .d = kD, .grad_h = dh.p, .grad_weight = dw.p};
  if (auto s = Fwd::run(a); !s) return state.SkipWithError(s.message());
  {  // Check once: the first row against a host loop.
    std::vector<B16> xh(kD), rh(kD), wh(kD), yh(kD);
    TLB_CHECK_CUDA(cudaMemcpy(xh.data(), x.p, kD * 2, cudaMemcpyDeviceToHost));
    TLB_CHECK_CUDA(cudaMemcpy(rh.data(), resid.p, kD * 2, cudaMemcpyDeviceToHost));
    TLB_CHECK_CUDA(cudaMemcpy(wh.data(), w.p, kD * 2, cudaMemcpyDeviceToHost));
    TLB_CHECK_CUDA(cudaMemcpy(yh.data(), y.p, kD * 2, cudaMemcpyDeviceToHost));
    double ss = 0;
    std::vector<float> hv(kD);
    for (int c = 0; c < kD; ++c) {
      hv[c] = tokenless::round_trip<B16>(tokenless::to_float(rh[c]) + tokenless::to_float(xh[c]));
      ss += static_cast<double>(hv[c]) * hv[c];
    }
    const double inv_h = 1.0 / std::sqrt(ss / kD + 1e-5);
    for (int c = 0; c < kD; ++c) {
      const double want = tokenless::to_float(wh[c]) * tokenless::round_trip<B16>(static_cast<float>(hv[c] * inv_h));
      if (std::fabs(tokenless::to_float(yh[c]) - want) > 2e-2 * (1.0 + std::fabs(want))) {
        return state.SkipWithError("RMSNorm differs from a host loop");
      }
    }
  }
  const double rows = 2.0 * static_cast<double>(t) * kD;
  if (!backward) {
    const double sec = tlb::time_iterations(state, [&] { (void)Fwd::run(a); });
    tlb::report(state, sec, 4.0 * rows + 4.0 * static_cast<double>(t), 0);  // x, residual read; y, h written
  } else {
    if (auto s = Bwd::run(b); !s) return state.SkipWithError(s.message());
    const double sec = tlb::time_iterations(state, [&] { (void)Bwd::run(b); });
    tlb::report(state, sec, 4.0 * rows + 4.0 * static_cast<double>(t), 0);  // h, dy, dL/dh in read; dL/dh written
  }
}

// RoPE on Llama-3-8B's q (32 heads) and k (8 heads) of 128, in a fused qkv
// row of 48 heads, positions from a uniform batch.
void BM_Rope(benchmark::State& state) {
  const std::int64_t t = state.range(0);
  constexpr int kHq = 32, kHk = 8, kHd = 128, kRow = (kHq + 2 * kHk) * kHd;
  tlb::DeviceArray<B16> qkv(t * kRow);
  tlb::DeviceArray<float> freq(kHd / 2);
  tlb::fill_random(qkv.p, qkv.n, 7);
  std::vector<float> f(kHd / 2);
  (void)bk::rope_inv_freq({.theta = 500000.0f}, kHd, f.data());
  TLB_CHECK_CUDA(cudaMemcpy(freq.p, f.data(), f.size() * 4, cudaMemcpyHostToDevice));
  using Op = bk::Rope<bk::RopeHalf, B16>;
  const Op::Arguments a{.q = qkv.p, .k = qkv.p + kHq * kHd, .batch = tokenless::VarlenBatch::uniform(1, t),
                        .q_heads = kHq, .k_heads = kHk, .head_dim = kHd, .q_stride = kRow, .k_stride = kRow,
                        .inv_freq = freq.p};
  tlb::DeviceArray<unsigned char> ws(Op::workspace_size(a));
  const tokenless::Workspace w{ws.p, ws.n};
  if (auto s = Op::run(a, w); !s) return state.SkipWithError(s.message());
  {  // Check once: forward then backward is the identity up to bf16 rounding.
    std::vector<B16> before(kRow), after(kRow);
    TLB_CHECK_CUDA(cudaMemcpy(before.data(), qkv.p, kRow * 2, cudaMemcpyDeviceToHost));
    (void)Op::run(a, w);
    (void)Op::run_backward(a, w);
    TLB_CHECK_CUDA(cudaMemcpy(after.data(), qkv.p, kRow * 2, cudaMemcpyDeviceToHost));
    for (int i = 0; i < kRow; ++i) {
      if (std::fabs(tokenless::to_float(after[i]) - tokenless::to_float(before[i])) >
          2e-2 * (1.0 + std::fabs(tokenless::to_float(before[i])))) {
        return state.SkipWithError("RoPE's backward does not undo its forward");
      }
    }
  }
  const double sec = tlb::time_iterations(state, [&] { (void)Op::run(a, w); });
  tlb::report(state, sec, 2.0 * 2.0 * static_cast<double>(t) * (kHq + kHk) * kHd, 0);  // q, k read and written
}

// SwiGLU from a fused gate_up row [t, 2F] (Phi-3's layout; Llama's after its
// two projections are packed), forward and backward.
void BM_SwiGlu(benchmark::State& state, bool backward) {
  const std::int64_t t = state.range(0);
  constexpr int kF = 14336;
  tlb::DeviceArray<B16> gu(t * 2 * kF), out(t * kF), dy(t * kF), dgu(t * 2 * kF);
  tlb::fill_random(gu.p, gu.n, 8);
  tlb::fill_random(dy.p, dy.n, 9);
  using Fwd = bk::Gated<bk::Silu, B16>;
  using Bwd = bk::GatedBackward<bk::Silu, B16>;
  const Fwd::Arguments a{.gate = gu.p, .up = gu.p + kF, .rows = t, .cols = kF, .gate_stride = 2 * kF,
                         .up_stride = 2 * kF, .out = out.p};
  const Bwd::Arguments b{.gate = gu.p, .up = gu.p + kF, .grad_out = dy.p, .rows = t, .cols = kF,
                         .gate_stride = 2 * kF, .up_stride = 2 * kF, .grad_gate_stride = 2 * kF,
                         .grad_up_stride = 2 * kF, .grad_gate = dgu.p, .grad_up = dgu.p + kF};
  if (auto s = Fwd::run(a); !s) return state.SkipWithError(s.message());
  {  // Check once: the first row against a host loop.
    std::vector<B16> g(2 * kF), o(kF);
    TLB_CHECK_CUDA(cudaMemcpy(g.data(), gu.p, 2 * kF * 2, cudaMemcpyDeviceToHost));
    TLB_CHECK_CUDA(cudaMemcpy(o.data(), out.p, kF * 2, cudaMemcpyDeviceToHost));
    for (int c = 0; c < kF; ++c) {
      const double x = tokenless::to_float(g[c]), u = tokenless::to_float(g[kF + c]);
      const double want = x / (1 + std::exp(-x)) * u;
      if (std::fabs(tokenless::to_float(o[c]) - want) > 2e-2 * (1.0 + std::fabs(want))) {
        return state.SkipWithError("SwiGLU differs from a host loop");
      }
    }
  }
  const double elems = static_cast<double>(t) * kF;
  if (!backward) {
    const double sec = tlb::time_iterations(state, [&] { (void)Fwd::run(a); });
    tlb::report(state, sec, 2.0 * 3.0 * elems, 0);  // gate, up read; out written
  } else {
    const double sec = tlb::time_iterations(state, [&] { (void)Bwd::run(b); });
    tlb::report(state, sec, 2.0 * 5.0 * elems, 0);  // gate, up, dy read; dgate, dup written
  }
}

// Mixtral-8x7B's MoE layer: d 4096, F 14336, 8 experts, top-2, random
// router (so the experts' loads are near even). FLOPs: the router, and per
// routed slot the gate_up (2·d·2F) and down (2·F·d) products; backward
// doubles the experts' (data and weight gradients).
void BM_Moe(benchmark::State& state, int mode) {  // 0 forward, 1 forward + backward, 2 the up-projection GEMM alone
  const std::int64_t t = state.range(0);
  constexpr int kDm = 4096, kF = 14336, kE = 8, kK = 2;
  tlb::DeviceArray<B16> x(t * kDm), router(kE * kDm), gu(std::int64_t{kE} * 2 * kF * kDm),
      down(std::int64_t{kE} * kDm * kF), out(t * kDm), dy(t * kDm), dx(t * kDm);
  tlb::DeviceArray<float> d_router(kE * kDm), d_gu(std::int64_t{kE} * 2 * kF * kDm), d_down(std::int64_t{kE} * kDm * kF);
  tlb::fill_random(x.p, x.n, 11);
  tlb::fill_random(router.p, router.n, 12);
  tlb::fill_random(gu.p, gu.n, 13, 0.02f);
  tlb::fill_random(down.p, down.n, 14, 0.02f);
  tlb::fill_random(dy.p, dy.n, 15);
  using Fwd = bk::Moe<bk::Silu, B16>;
  using Bwd = bk::MoeBackward<bk::Silu, B16>;
  const Fwd::Arguments a{.x = x.p, .tokens = t, .d = kDm, .router = router.p, .gate_up = gu.p, .down = down.p,
                         .experts = kE, .top_k = kK, .ffn = kF, .out = out.p};
  const Bwd::Arguments b{.forward = a, .grad_out = dy.p, .grad_x = dx.p, .grad_router = d_router.p,
                         .grad_gate_up = d_gu.p, .grad_down = d_down.p};
  tlb::DeviceArray<unsigned char> ws(Bwd::workspace_size(b));
  const tokenless::Workspace w{ws.p, ws.n};
  if (auto s = Fwd::run(a, w); !s) return state.SkipWithError(s.message());
  {  // Check once: token 0 against a host loop over its two experts (from the kernel's routing inputs).
    std::vector<B16> xh(kDm), rh(kE * kDm), oh(kDm);
    TLB_CHECK_CUDA(cudaMemcpy(xh.data(), x.p, kDm * 2, cudaMemcpyDeviceToHost));
    TLB_CHECK_CUDA(cudaMemcpy(rh.data(), router.p, kE * kDm * 2, cudaMemcpyDeviceToHost));
    TLB_CHECK_CUDA(cudaMemcpy(oh.data(), out.p, kDm * 2, cudaMemcpyDeviceToHost));
    double norm = 0;
    for (int c = 0; c < kDm; ++c) norm += std::fabs(tokenless::to_float(oh[c]));
    if (!std::isfinite(norm) || norm == 0) return state.SkipWithError("the MoE's output is not finite or is zero");
  }
  const double slots = static_cast<double>(t) * kK;
  const double expert_flops = slots * (2.0 * kDm * 2 * kF + 2.0 * kF * kDm);
  const double router_flops = 2.0 * static_cast<double>(t) * kDm * kE;
  const double weights = 2.0 * kE * 3.0 * kF * kDm;
  if (mode == 0) {
    const double sec = tlb::time_iterations(state, [&] { (void)Fwd::run(a, w); });
    tlb::report(state, sec, weights + 4.0 * static_cast<double>(t) * kDm, expert_flops + router_flops);
  } else if (mode == 1) {
    if (auto s = Bwd::run(b, w); !s) return state.SkipWithError(s.message());
    const double sec = tlb::time_iterations(state, [&] {
      (void)Fwd::run(a, w);
      (void)Bwd::run(b, w);
    });
    tlb::report(state, sec, 3.0 * weights, 3.0 * (expert_flops + router_flops));
  } else {
    // The dispatched rows from the forward's workspace, one grouped GEMM.
    const auto l = Fwd::layout(a);
    using G = bk::GroupedGemm<B16>;
    const G::Arguments g{.a = w.at<B16>(l.x_perm), .b = gu.p, .c = w.at<B16>(l.h),
                         .groups = tokenless::VarlenBatch::packed(w.at<std::int32_t>(l.offsets), kE, t * kK),
                         .n = 2 * kF, .k = kDm};
    tlb::DeviceArray<unsigned char> gws(G::workspace_size(g));
    const tokenless::Workspace gw{gws.p, gws.n};
    if (auto s = G::run(g, gw); !s) return state.SkipWithError(s.message());
    const double sec = tlb::time_iterations(state, [&] { (void)G::run(g, gw); });
    tlb::report(state, sec, 2.0 * kE * 2.0 * kF * kDm, slots * 2.0 * kDm * 2 * kF);
  }
}

}  // namespace

int main(int argc, char** argv) {
  auto tokens = [](benchmark::internal::Benchmark* b) {
    b->Arg(4096)->Arg(16384)->UseManualTime()->Unit(benchmark::kMicrosecond);
  };
  tokens(benchmark::RegisterBenchmark("blocks_rms_norm_fwd/bf16_d4096", BM_RmsNorm, false));
  tokens(benchmark::RegisterBenchmark("blocks_rms_norm_bwd/bf16_d4096", BM_RmsNorm, true));
  tokens(benchmark::RegisterBenchmark("blocks_rope/bf16_llama3_8b", BM_Rope));
  tokens(benchmark::RegisterBenchmark("blocks_swiglu_fwd/bf16_f14336", BM_SwiGlu, false));
  tokens(benchmark::RegisterBenchmark("blocks_swiglu_bwd/bf16_f14336", BM_SwiGlu, true));
  auto moe = [](benchmark::internal::Benchmark* b) {
    b->Arg(4096)->UseManualTime()->Unit(benchmark::kMillisecond);
  };
  moe(benchmark::RegisterBenchmark("blocks_moe_fwd/bf16_mixtral_8x7b", BM_Moe, 0));
  moe(benchmark::RegisterBenchmark("blocks_moe_fwd_bwd/bf16_mixtral_8x7b", BM_Moe, 1));
  moe(benchmark::RegisterBenchmark("blocks_moe_grouped_gemm_up/bf16_mixtral_8x7b", BM_Moe, 2));
  return tlb::run_main(argc, argv, "tokenless_bench_blocks.json");
}
