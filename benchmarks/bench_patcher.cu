// Patcher benchmarks: the fused patcher from logits (V = 260; fp32 and bf16;
// a global threshold, and top-k),
// N from 64K to 64M bytes in 8 sequences. fp32 stops at 16M bytes: 64M rows of
// fp32 logits (67 GB) do not fit next to the outputs on an 80 GB device.
// Bytes counted: the logits read once, the entropies, flags, patch ids,
// starts and lengths written. Target: >= 85% of the measured copy bandwidth.
#include "harness.cuh"

#include <random>

namespace pt = tokenless::patcher;

namespace {

template <class Rule, class T>
void BM_Patcher(benchmark::State& state, Rule rule) {
  using Op = pt::Patcher<Rule, T>;
  const std::int64_t n = state.range(0), B = 8, V = 260;
  tlb::DeviceArray<T> logits(static_cast<std::size_t>(n * V));
  {
    // Rows cycle through a few distributions, so entropies vary.
    std::vector<T> row(static_cast<std::size_t>(64 * V));
    std::mt19937 rng(1);
    std::normal_distribution<float> nrm(0.0f, 1.0f);
    for (std::size_t i = 0; i < row.size(); ++i) row[i] = tokenless::from_float<T>(nrm(rng) * static_cast<float>(1 + (i / V) % 4));
    for (std::int64_t r = 0; r < n; r += 64)
      cudaMemcpy(logits.p + r * V, row.data(), std::min<std::int64_t>(64, n - r) * V * sizeof(T), cudaMemcpyHostToDevice);
  }
  std::vector<std::int32_t> cu(B + 1);
  for (std::int64_t b = 0; b <= B; ++b) cu[b] = static_cast<std::int32_t>(n * b / B);
  tlb::DeviceArray<std::int32_t> d_cu(cu.size()), ids(n), off(B + 1), starts(n), lens(n);
  tlb::DeviceArray<float> h(n);
  tlb::DeviceArray<std::uint8_t> flags(n);
  cudaMemcpy(d_cu.p, cu.data(), cu.size() * 4, cudaMemcpyHostToDevice);
  typename Op::Arguments a;
  a.rule = rule;
  a.logits = logits.p;
  a.vocab = static_cast<int>(V);
  a.batch = {d_cu.p, B, n};
  a.entropies = h.p;
  a.patches = {flags.p, ids.p, off.p, starts.p, lens.p, n};
  tlb::DeviceArray<unsigned char> ws(Op::workspace_size(a));
  const tokenless::Workspace w{ws.p, Op::workspace_size(a)};
  // Check once: lengths sum to n and statuses are clean.
  if (auto s = Op::run(a, w); !s) return state.SkipWithError(s.message());
  if (auto s = Op::read_status(a, w); !s) return state.SkipWithError(s.message());
  std::vector<std::int32_t> o(B + 1);
  cudaMemcpy(o.data(), off.p, o.size() * 4, cudaMemcpyDeviceToHost);
  std::vector<std::int32_t> l(static_cast<std::size_t>(o[B]));
  cudaMemcpy(l.data(), lens.p, l.size() * 4, cudaMemcpyDeviceToHost);
  std::int64_t sum = 0;
  for (auto x : l) sum += x;
  if (sum != n) return state.SkipWithError("patch lengths do not sum to n");
  const double t = tlb::time_iterations(state, [&] { (void)Op::run(a, w); });
  const double moved = static_cast<double>(n) * (V * sizeof(T) + 4 + 1 + 4) + static_cast<double>(o[B]) * 8;
  tlb::report(state, t, moved, static_cast<double>(n) * V * 4);
  state.counters["patches"] = o[B];
}

}  // namespace

int main(int argc, char** argv) {
  auto sizes = [](benchmark::internal::Benchmark* b, std::int64_t max) {
    for (std::int64_t n = 1 << 16; n <= max; n *= 4) b->Arg(n);
    b->UseManualTime()->Unit(benchmark::kMicrosecond);
  };
  using B = __nv_bfloat16;
  const pt::EntropyGlobal global{2.0f};
  sizes(benchmark::RegisterBenchmark("patcher/fp32_logits", BM_Patcher<pt::EntropyGlobal, float>, global),
        std::int64_t{1} << 24);
  sizes(benchmark::RegisterBenchmark("patcher/bf16_logits", BM_Patcher<pt::EntropyGlobal, B>, global),
        std::int64_t{1} << 26);
  // BLT's threshold=None: the per-sequence radix select adds eight passes over the entropies.
  sizes(benchmark::RegisterBenchmark("patcher/bf16_logits_topk", BM_Patcher<pt::EntropyTopK, B>, pt::EntropyTopK{4}),
        std::int64_t{1} << 26);
  return tlb::run_main(argc, argv, "tokenless_bench_patcher.json");
}
