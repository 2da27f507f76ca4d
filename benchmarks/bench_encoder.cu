// Byte encoder benchmarks: BLT-1B (6 tables of 500,002 x 1024, bf16) and a
// small configuration, N from 4K to 1M bytes. Forward, backward with atomics,
// deterministic backward. Bytes counted: the ids, every gathered (or
// scattered) row and the output (or gradient input). Targets: forward >= 85%
// and atomic backward >= 50% of the measured copy bandwidth.
#include "harness.cuh"

#include <map>
#include <memory>
#include <random>
#include <utility>

namespace enc = tokenless::encoder;

namespace {

struct Config {
  std::int64_t V;
  int d;
};
constexpr Config kBlt1B{500002, 1024};
constexpr Config kSmall{30000, 256};

template <class T>
struct Tables {
  tlb::DeviceArray<T> byte, hash;
  tlb::DeviceArray<float> gbyte, ghash;
  Tables(const Config& c, int K)
      : byte(static_cast<std::size_t>(260) * c.d),
        hash(static_cast<std::size_t>(K) * c.V * c.d),
        gbyte(static_cast<std::size_t>(260) * c.d),
        ghash(static_cast<std::size_t>(K) * c.V * c.d) {
    cudaMemset(byte.p, 0, byte.n * sizeof(T));
    cudaMemset(hash.p, 0, hash.n * sizeof(T));
  }
};

// Tables are large (BLT-1B: 6 GB of bf16, 12 GB of fp32 gradients): one set per
// configuration, kept across the benchmark's sizes.
template <class T>
Tables<T>& tables_for(const Config& c, int K) {
  static std::map<std::pair<std::int64_t, int>, std::unique_ptr<Tables<T>>> cache;
  auto& slot = cache[{c.V, c.d}];
  if (!slot) slot = std::make_unique<Tables<T>>(c, K);
  return *slot;
}

template <class P>
std::vector<std::uint8_t> text_bytes(std::int64_t n) {
  std::mt19937 rng(7);
  std::vector<std::uint8_t> b(static_cast<std::size_t>(n));
  for (auto& x : b) x = static_cast<std::uint8_t>(32 + rng() % 95);
  return b;
}

template <class P, class T>
void BM_Forward(benchmark::State& state, Config c) {
  using Op = enc::HashEmbeddingForward<P, T, std::uint8_t>;
  const std::int64_t n = state.range(0);
  Tables<T>& tables = tables_for<T>(c, P::tables);
  auto bytes = text_bytes<P>(n);
  tlb::DeviceArray<std::uint8_t> ids(bytes.size());
  tlb::DeviceArray<T> out(static_cast<std::size_t>(n) * c.d);
  cudaMemcpy(ids.p, bytes.data(), bytes.size(), cudaMemcpyHostToDevice);
  typename Op::Arguments a;
  a.ids = ids.p;
  a.n_tokens = n;
  a.batch = {nullptr, 1, n};
  a.byte_table = tables.byte.p;
  for (int t = 0; t < P::tables; ++t) a.hash_tables.table[t] = tables.hash.p + t * c.V * c.d;
  a.hash_vocab = c.V;
  a.d = c.d;
  a.output = out.p;
  // Check once: tables are zero, so the output must be zero.
  if (auto s = Op::run(a); !s) return state.SkipWithError(s.message());
  std::vector<T> h(std::min<std::size_t>(out.n, 4096));
  cudaMemcpy(h.data(), out.p, h.size() * sizeof(T), cudaMemcpyDeviceToHost);
  for (auto v : h)
    if (tokenless::to_float(v) != 0.0f) return state.SkipWithError("forward of zero tables is not zero");
  const double t = tlb::time_iterations(state, [&] { (void)Op::run(a); });
  const double moved = static_cast<double>(n) * (1.0 + (P::tables + 2.0) * c.d * sizeof(T));
  tlb::report(state, t, moved, static_cast<double>(n) * (P::tables + 1) * c.d);
}

template <class P, class T>
void BM_Backward(benchmark::State& state, Config c, bool deterministic) {
  using Op = enc::HashEmbeddingBackward<P, T, std::uint8_t>;
  const std::int64_t n = state.range(0);
  Tables<T>& tables = tables_for<T>(c, P::tables);
  auto bytes = text_bytes<P>(n);
  tlb::DeviceArray<std::uint8_t> ids(bytes.size());
  tlb::DeviceArray<T> g(static_cast<std::size_t>(n) * c.d);
  cudaMemcpy(ids.p, bytes.data(), bytes.size(), cudaMemcpyHostToDevice);
  cudaMemset(g.p, 0, g.n * sizeof(T));
  typename Op::Arguments a;
  a.ids = ids.p;
  a.n_tokens = n;
  a.batch = {nullptr, 1, n};
  a.grad_output = g.p;
  a.grad_byte_table = tables.gbyte.p;
  for (int t = 0; t < P::tables; ++t) a.grad_hash_tables.table[t] = tables.ghash.p + t * c.V * c.d;
  a.hash_vocab = c.V;
  a.d = c.d;
  a.deterministic = deterministic;
  tlb::DeviceArray<unsigned char> ws(Op::workspace_size(a));
  const tokenless::Workspace w{ws.p, Op::workspace_size(a)};
  if (auto s = Op::run(a, w); !s) return state.SkipWithError(s.message());
  const double t = tlb::time_iterations(state, [&] { (void)Op::run(a, w); });
  // Gradient rows read; every touched table row read and written (atomics).
  const double moved = static_cast<double>(n) * (1.0 + c.d * sizeof(T) + (P::tables + 1.0) * c.d * 2.0 * sizeof(float));
  tlb::report(state, t, moved, static_cast<double>(n) * (P::tables + 1) * c.d);
}

void sizes(benchmark::internal::Benchmark* b) {
  for (std::int64_t n = 4096; n <= (1 << 20); n *= 4) b->Arg(n);
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

}  // namespace

int main(int argc, char** argv) {
  using B = __nv_bfloat16;
  using benchmark::RegisterBenchmark;
  sizes(RegisterBenchmark("encoder_forward/blt1b_bf16", [](benchmark::State& s) { BM_Forward<enc::Blt1B, B>(s, kBlt1B); }));
  sizes(RegisterBenchmark("encoder_forward/small_bf16", [](benchmark::State& s) { BM_Forward<enc::Blt1B, B>(s, kSmall); }));
  sizes(RegisterBenchmark("encoder_forward/small_fp32", [](benchmark::State& s) { BM_Forward<enc::Blt1B, float>(s, kSmall); }));
  sizes(RegisterBenchmark("encoder_backward_atomic/blt1b_bf16",
                          [](benchmark::State& s) { BM_Backward<enc::Blt1B, B>(s, kBlt1B, false); }));
  sizes(RegisterBenchmark("encoder_backward_deterministic/blt1b_bf16",
                          [](benchmark::State& s) { BM_Backward<enc::Blt1B, B>(s, kBlt1B, true); }));
  sizes(RegisterBenchmark("encoder_backward_atomic/small_bf16",
                          [](benchmark::State& s) { BM_Backward<enc::Blt1B, B>(s, kSmall, false); }));
  return tlb::run_main(argc, argv, "tokenless_bench_encoder.json");
}
