// The backbone blocks' benchmarks: RMSNorm fused with the residual add,
// forward (h = residual + x written in place, y, inv_rms) and backward
// (dL/dh with the residual path, the weight's gradient), bf16 at Llama-3-8B's
// width (d 4096) over 4K and 16K tokens. Memory-bound: bytes are the rows
// read and written once. The side by side is transformers' LlamaRMSNorm
// with the add, eager and torch.compile (benchmarks/torch/blocks_eager.py).
#include "harness.cuh"

#include <tokenless/blocks/norm.cuh>

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

}  // namespace

int main(int argc, char** argv) {
  auto tokens = [](benchmark::internal::Benchmark* b) {
    b->Arg(4096)->Arg(16384)->UseManualTime()->Unit(benchmark::kMicrosecond);
  };
  tokens(benchmark::RegisterBenchmark("blocks_rms_norm_fwd/bf16_d4096", BM_RmsNorm, false));
  tokens(benchmark::RegisterBenchmark("blocks_rms_norm_bwd/bf16_d4096", BM_RmsNorm, true));
  return tlb::run_main(argc, argv, "tokenless_bench_blocks.json");
}
