// The prediction heads' benchmarks, bf16:
//   * the fused linear cross-entropy at Llama 3's head (d 4096, V 128256)
//     over 4K to 32K tokens, the forward alone and the forward + backward
//     (dH, dW in fp32): FLOPs (2NVd forward; the backward recomputes the
//     logits and runs two GEMMs: 8NVd in all) and the fraction of the
//     measured bf16 GEMM peak; the workspace (all the memory it adds to the
//     inputs and outputs) as a counter.
//   * the byte head at BLT-1B's local decoder width (d 1024, V 260) over 16K
//     and 64K bytes: the entropy alone (the patcher's feed), the greedy next
//     byte, and the training forward (loss, entropy and dz); bytes moved (h
//     read once, the outputs written) and the fraction of copy bandwidth,
//     which is its target (a row's 520 FLOPs a byte of h sit near the ridge
//     of mma.sync on an H100), and of the bf16 peak.
// Checked once: two rows' lse against a host loop over the whole vocabulary
// (the byte head: two rows' entropy).
// Side by side: benchmarks/torch/heads_eager.py (PyTorch's linear +
// cross_entropy, Liger and Cut Cross-Entropy where they install).
#include "harness.cuh"

#include <tokenless/blocks/policy.hpp>
#include <tokenless/heads/byte_head.cuh>
#include <tokenless/heads/linear_cross_entropy.cuh>

#include <cmath>
#include <utility>
#include <vector>

namespace hd = tokenless::heads;

namespace {

using B16 = __nv_bfloat16;
constexpr int kD = 4096;
constexpr std::int64_t kV = 128256;

void BM_LinearCrossEntropy(benchmark::State& state, bool backward) {
  const std::int64_t n = state.range(0);
  tlb::DeviceArray<B16> h(n * kD), w(kV * kD), dh(n * kD);
  tlb::DeviceArray<std::int32_t> labels(n);
  tlb::DeviceArray<float> loss(1), lse(n), g(1), dw(kV * kD);
  tlb::fill_random(h.p, h.n, 1, 2.0f);
  tlb::fill_random(w.p, w.n, 2, 2.0f / std::sqrt(static_cast<float>(kD)));
  {
    std::vector<std::int32_t> hl(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) hl[i] = static_cast<std::int32_t>((i * 7919) % kV);
    TLB_CHECK_CUDA(cudaMemcpy(labels.p, hl.data(), hl.size() * 4, cudaMemcpyHostToDevice));
    const float one = 1.0f;
    TLB_CHECK_CUDA(cudaMemcpy(g.p, &one, 4, cudaMemcpyHostToDevice));
  }
  tokenless::blas::LtHandle handle;
  if (auto s = tokenless::blas::LtHandle::create(handle); !s) return state.SkipWithError(s.message());
  hd::LinearCrossEntropy<B16>::Arguments a;
  a.handle = &handle;
  a.h = h.p;
  a.weight = w.p;
  a.labels = labels.p;
  a.n = n;
  a.vocab = kV;
  a.d = kD;
  a.loss = loss.p;
  a.lse = lse.p;
  hd::LinearCrossEntropyBackward<B16>::Arguments b;
  b.forward = a;
  b.grad_loss = g.p;
  b.grad_h = dh.p;
  b.grad_weight = dw.p;
  using F = hd::LinearCrossEntropy<B16>;
  using Bw = hd::LinearCrossEntropyBackward<B16>;
  const std::size_t bytes = std::max(F::workspace_size(a), Bw::workspace_size(b));
  tlb::DeviceArray<unsigned char> ws(bytes);
  const tokenless::Workspace wsv{ws.p, ws.n};
  if (auto s = F::run(a, wsv); !s) return state.SkipWithError(s.message());
  if (auto s = F::read_status(a, wsv); !s) return state.SkipWithError(s.message());
  {  // Check once: rows 0 and n-1's lse against a host loop (fp64 over the bf16 inputs).
    std::vector<B16> hh(kD), ww(static_cast<std::size_t>(kV * kD));
    std::vector<float> got(static_cast<std::size_t>(n));
    TLB_CHECK_CUDA(cudaMemcpy(ww.data(), w.p, ww.size() * 2, cudaMemcpyDeviceToHost));
    TLB_CHECK_CUDA(cudaMemcpy(got.data(), lse.p, got.size() * 4, cudaMemcpyDeviceToHost));
    for (const std::int64_t r : {std::int64_t{0}, n - 1}) {
      TLB_CHECK_CUDA(cudaMemcpy(hh.data(), h.p + r * kD, kD * 2, cudaMemcpyDeviceToHost));
      std::vector<double> z(static_cast<std::size_t>(kV));
      double mx = -INFINITY;
      for (std::int64_t j = 0; j < kV; ++j) {
        double acc = 0;
        for (int k = 0; k < kD; ++k) acc += double(tokenless::to_float(hh[k])) * tokenless::to_float(ww[j * kD + k]);
        z[j] = acc;
        mx = std::max(mx, acc);
      }
      double s = 0;
      for (double v : z) s += std::exp(v - mx);
      const double want = mx + std::log(s);
      if (!(std::fabs(got[r] - want) <= 1e-3 * (1.0 + std::fabs(want)))) {
        return state.SkipWithError("the lse differs from a host loop");
      }
    }
  }
  const double nvd = 2.0 * static_cast<double>(n) * kV * kD;
  double sec = 0;
  if (!backward) {
    sec = tlb::time_iterations(state, [&] { (void)F::run(a, wsv); });
    tlb::report(state, sec, 2.0 * (static_cast<double>(n) + kV) * kD, nvd);
  } else {
    sec = tlb::time_iterations(state, [&] {
      (void)F::run(a, wsv);
      (void)Bw::run(b, wsv);
    });
    tlb::report(state, sec, 2.0 * (2.0 * n + 3.0 * kV) * kD, 4.0 * nvd);
  }
  state.counters["workspace_MiB"] = static_cast<double>(bytes) / (1 << 20);
}

enum class ByteMode { entropy, greedy, train };

void BM_ByteHead(benchmark::State& state, ByteMode mode) {
  constexpr int kDb = 1024, kVb = 260;
  const std::int64_t n = state.range(0);
  using Op = hd::ByteHead<tokenless::blocks::NormThenCast, B16>;
  tlb::DeviceArray<B16> h(n * kDb), g(kDb), w(kVb * kDb), dz(mode == ByteMode::train ? n * kVb : 1);
  tlb::DeviceArray<std::int32_t> labels(n), next(n);
  tlb::DeviceArray<float> ent(n), loss(1), gl(1);
  tlb::fill_random(h.p, h.n, 3, 2.0f);
  tlb::fill_random(g.p, g.n, 4, 1.0f);
  tlb::fill_random(w.p, w.n, 5, 3.0f / std::sqrt(static_cast<float>(kDb)));
  {
    std::vector<std::int32_t> hl(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) hl[i] = static_cast<std::int32_t>((i * 131) % kVb);
    TLB_CHECK_CUDA(cudaMemcpy(labels.p, hl.data(), hl.size() * 4, cudaMemcpyHostToDevice));
    const float one = 1.0f;
    TLB_CHECK_CUDA(cudaMemcpy(gl.p, &one, 4, cudaMemcpyHostToDevice));
  }
  Op::Arguments a;
  a.h = h.p;
  a.norm_weight = g.p;
  a.weight = w.p;
  a.n = n;
  a.vocab = kVb;
  a.d = kDb;
  double out_bytes = 0;
  if (mode == ByteMode::entropy || mode == ByteMode::train) {
    a.entropy = ent.p;
    out_bytes += 4.0 * n;
  }
  if (mode == ByteMode::greedy) {
    a.next = next.p;
    out_bytes += 4.0 * n;
  }
  if (mode == ByteMode::train) {
    a.labels = labels.p;
    a.loss = loss.p;
    a.grad_loss = gl.p;
    a.grad_logits = dz.p;
    out_bytes += 4.0 * n + 2.0 * n * kVb;  // labels read, dz written
  }
  tlb::DeviceArray<unsigned char> ws(Op::workspace_size(a));
  const tokenless::Workspace wsv{ws.p, ws.n};
  a.entropy = ent.p;  // the check reads it (every mode's first run)
  if (auto s = Op::run(a, wsv); !s) return state.SkipWithError(s.message());
  if (auto s = Op::read_status(a, wsv); !s) return state.SkipWithError(s.message());
  {  // Check once: rows 0 and n-1's entropy against a host loop (RMSNorm, fp64 logits).
    std::vector<B16> hh(kDb), gg(kDb), ww(static_cast<std::size_t>(kVb * kDb));
    std::vector<float> got(static_cast<std::size_t>(n));
    TLB_CHECK_CUDA(cudaMemcpy(ww.data(), w.p, ww.size() * 2, cudaMemcpyDeviceToHost));
    TLB_CHECK_CUDA(cudaMemcpy(gg.data(), g.p, gg.size() * 2, cudaMemcpyDeviceToHost));
    TLB_CHECK_CUDA(cudaMemcpy(got.data(), ent.p, got.size() * 4, cudaMemcpyDeviceToHost));
    for (const std::int64_t r : {std::int64_t{0}, n - 1}) {
      TLB_CHECK_CUDA(cudaMemcpy(hh.data(), h.p + r * kDb, kDb * 2, cudaMemcpyDeviceToHost));
      double ss = 0;
      for (int k = 0; k < kDb; ++k) ss += double(tokenless::to_float(hh[k])) * tokenless::to_float(hh[k]);
      const double inv = 1.0 / std::sqrt(ss / kDb + 1e-5);
      std::vector<double> z(kVb);
      double mx = -INFINITY;
      for (int j = 0; j < kVb; ++j) {
        double acc = 0;
        for (int k = 0; k < kDb; ++k) {
          acc += double(tokenless::to_float(gg[k])) * tokenless::to_float(hh[k]) * inv * tokenless::to_float(ww[j * kDb + k]);
        }
        z[j] = acc;
        mx = std::max(mx, acc);
      }
      double s = 0, t = 0;
      for (double v : z) {
        s += std::exp(v - mx);
        t += std::exp(v - mx) * (v - mx);
      }
      const double want = std::log(s) - t / s;
      if (!(std::fabs(got[r] - want) <= 2e-2 * (1.0 + want))) {  // bf16 rounding of the normed row
        return state.SkipWithError("the entropy differs from a host loop");
      }
    }
  }
  if (mode == ByteMode::greedy) a.entropy = nullptr;
  const double sec = tlb::time_iterations(state, [&] { (void)Op::run(a, wsv); });
  tlb::report(state, sec, 2.0 * n * kDb + 2.0 * (kVb + 1) * kDb + out_bytes, 2.0 * n * kVb * kDb);
}

}  // namespace

int main(int argc, char** argv) {
  for (const bool bwd : {false, true}) {
    benchmark::RegisterBenchmark(bwd ? "heads_linear_ce_fwd_bwd/bf16_llama3" : "heads_linear_ce_fwd/bf16_llama3",
                                 BM_LinearCrossEntropy, bwd)
        ->Arg(4096)
        ->Arg(8192)
        ->Arg(16384)
        ->Arg(32768)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
  const std::pair<const char*, ByteMode> byte_modes[] = {{"heads_byte_entropy/bf16_blt1b", ByteMode::entropy},
                                                         {"heads_byte_greedy/bf16_blt1b", ByteMode::greedy},
                                                         {"heads_byte_train_fwd/bf16_blt1b", ByteMode::train}};
  for (const auto& [name, mode] : byte_modes) {
    benchmark::RegisterBenchmark(name, BM_ByteHead, mode)->Arg(16384)->Arg(65536)->UseManualTime()->Unit(
        benchmark::kMicrosecond);
  }
  return tlb::run_main(argc, argv, "tokenless_bench_heads.json");
}
