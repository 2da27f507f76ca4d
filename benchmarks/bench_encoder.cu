// Byte encoder benchmarks: BLT-1B (6 tables of 500,002 x 1024, bf16) and a
// small configuration, N from 4K to 1M bytes. Forward, backward with atomics,
// deterministic backward. Bytes counted: the ids, every gathered (or
// scattered) row and the output (or gradient input), as the issue asks; a
// second fraction counts the L2-resident byte table once. Targets: forward >= 85%
// and atomic backward >= 50% of the measured copy bandwidth.
#include "harness.cuh"

#include <tokenless/reference/hash_embedding.hpp>

#include <cmath>

#include <map>
#include <memory>
#include <random>
#include <tuple>
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
  Tables(const Config& c, int K)
      : byte(static_cast<std::size_t>(260) * c.d), hash(static_cast<std::size_t>(K) * c.V * c.d) {
    tlb::fill_random(byte.p, byte.n, 1);
    tlb::fill_random(hash.p, hash.n, 2);
  }
};

// Tables are large (BLT-1B: 6 GB of bf16, 12 GB of fp32 gradients): one set per
// configuration, type and role (weights or gradients), kept across the sizes.
enum class Role { weights, gradients };

template <class T>
Tables<T>& tables_for(const Config& c, int K, Role role = Role::weights) {
  static std::map<std::tuple<std::int64_t, int, Role>, std::unique_ptr<Tables<T>>> cache;
  auto& slot = cache[{c.V, c.d, role}];
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

// A backward's inputs: BLT-like ids of text and a random gradient.
template <class T>
struct BackwardInputs {
  tlb::DeviceArray<std::uint8_t> ids;
  tlb::DeviceArray<T> grad;
  BackwardInputs(std::int64_t n, int d) : ids(static_cast<std::size_t>(n)), grad(static_cast<std::size_t>(n) * d) {
    const auto bytes = text_bytes<void>(n);
    cudaMemcpy(ids.p, bytes.data(), bytes.size(), cudaMemcpyHostToDevice);
    tlb::fill_random(grad.p, grad.n, 3);
  }
};

// The first 64 tokens against the host reference (fp32 accumulation, output rounded to T).
template <class P, class T>
const char* check_forward(Tables<T>& tables, const Config& c, const std::vector<std::uint8_t>& bytes, const T* out) {
  const std::int64_t n = std::min<std::int64_t>(64, static_cast<std::int64_t>(bytes.size()));
  std::vector<T> byte_table(tables.byte.n), got(static_cast<std::size_t>(n * c.d));
  cudaMemcpy(byte_table.data(), tables.byte.p, byte_table.size() * sizeof(T), cudaMemcpyDeviceToHost);
  cudaMemcpy(got.data(), out, got.size() * sizeof(T), cudaMemcpyDeviceToHost);
  const auto buckets = tokenless::reference::hash_buckets<P>(bytes.data(), n, std::vector<std::int64_t>(n, 0), c.V);
  for (std::int64_t i = 0; i < n; ++i) {
    std::vector<float> want(static_cast<std::size_t>(c.d));
    for (int k = 0; k < c.d; ++k) want[k] = tokenless::to_float(byte_table[(bytes[i] + 4) * c.d + k]);
    for (int t = 0; t < P::tables; ++t) {
      const std::int64_t b = buckets[t][i];
      std::vector<T> row(static_cast<std::size_t>(c.d));
      cudaMemcpy(row.data(), tables.hash.p + (t * c.V + b) * c.d, c.d * sizeof(T), cudaMemcpyDeviceToHost);
      for (int k = 0; k < c.d; ++k) want[k] += tokenless::to_float(row[k]);
    }
    for (int k = 0; k < c.d; ++k) {
      const float g = tokenless::to_float(got[i * c.d + k]);
      if (std::fabs(g - want[k]) > 1e-2f * (1.0f + std::fabs(want[k]))) return "forward differs from the host reference";
    }
  }
  return nullptr;
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
  a.batch = tokenless::VarlenBatch::uniform(1, n);
  a.byte_table = tables.byte.p;
  for (int t = 0; t < P::tables; ++t) a.hash_tables.table[t] = tables.hash.p + t * c.V * c.d;
  a.hash_vocab = c.V;
  a.d = c.d;
  a.output = out.p;
  // Check once: the first tokens against the host reference, on the real tables.
  if (auto s = Op::run(a); !s) return state.SkipWithError(s.message());
  if (const char* e = check_forward<P, T>(tables, c, bytes, out.p)) return state.SkipWithError(e);
  const double t = tlb::time_iterations(state, [&] { (void)Op::run(a); });
  // As the issue counts: the ids, every gathered row and the output. The byte
  // table's 260 rows stay in L2, so this can pass 100%; the compulsory count
  // takes the byte table once (and still assumes every hash row misses).
  const double moved = static_cast<double>(n) * (1.0 + (P::tables + 2.0) * c.d * sizeof(T));
  const double compulsory = moved - static_cast<double>(n - 260) * c.d * sizeof(T);
  tlb::report(state, t, moved, static_cast<double>(n) * (P::tables + 1) * c.d);
  state.counters["frac_copy_bw_compulsory"] = compulsory / t / tlb::peaks().copy_bytes_per_s;
}

template <class P, class T, class G>
const char* check_backward(Tables<G>& grads, const Config& c, const T* g, std::int64_t n) {
  const int col = c.d / 2;
  std::vector<T> gcol(static_cast<std::size_t>(n));
  cudaMemcpy2D(gcol.data(), sizeof(T), g + col, c.d * sizeof(T), sizeof(T), n, cudaMemcpyDeviceToHost);
  double want = 0;
  for (auto v : gcol) want += tokenless::to_float(v);
  auto column_sum = [&](const G* table, std::int64_t rows) {
    std::vector<G> v(static_cast<std::size_t>(rows));
    cudaMemcpy2D(v.data(), sizeof(G), table + col, c.d * sizeof(G), sizeof(G), rows, cudaMemcpyDeviceToHost);
    double sum = 0;
    for (G x : v) sum += tokenless::to_float(x);
    return sum;
  };
  // 16-bit tables round every touched row once: a random walk of n roundings.
  const double per_row = sizeof(G) == 4 ? 1e-3 : 4e-3;
  const double tol = per_row * (1.0 + std::sqrt(static_cast<double>(n)));
  // (Negated, so that a NaN left in a row fails too.)
  if (!(std::fabs(column_sum(grads.byte.p, 260) - want) <= tol)) return "byte-table gradient sums differ";
  for (int t = 0; t < P::tables; ++t)
    if (!(std::fabs(column_sum(grads.hash.p + t * c.V * c.d, c.V) - want) <= tol)) return "hash-table gradient sums differ";
  return nullptr;
}

template <class P, class T, class G = float>
void BM_Backward(benchmark::State& state, Config c, bool deterministic, bool accumulate = true) {
  using Op = enc::HashEmbeddingBackward<P, T, std::uint8_t, G>;
  const std::int64_t n = state.range(0);
  Tables<G>& grads = tables_for<G>(c, P::tables, Role::gradients);
  const BackwardInputs<T> in(n, c.d);
  const auto& ids = in.ids;
  const auto& g = in.grad;
  typename Op::Arguments a;
  a.ids = ids.p;
  a.batch = tokenless::VarlenBatch::uniform(1, n);
  a.grad_output = g.p;
  a.grad_byte_table = grads.byte.p;
  for (int t = 0; t < P::tables; ++t) a.grad_hash_tables.table[t] = grads.hash.p + t * c.V * c.d;
  a.hash_vocab = c.V;
  a.d = c.d;
  a.deterministic = deterministic;
  a.accumulate = accumulate;
  tlb::DeviceArray<unsigned char> ws(Op::workspace_size(a));
  const tokenless::Workspace w{ws.p, Op::workspace_size(a)};
  // Check once: every token adds its gradient to every table exactly once, so
  // each table's column sums equal the gradient's column sums. A fresh
  // gradient starts from NaN everywhere, which any row it missed would keep.
  cudaMemset(grads.byte.p, accumulate ? 0 : 0xff, grads.byte.n * sizeof(G));
  cudaMemset(grads.hash.p, accumulate ? 0 : 0xff, grads.hash.n * sizeof(G));
  if (auto s = Op::run(a, w); !s) return state.SkipWithError(s.message());
  if (const char* e = check_backward<P, T, G>(grads, c, g.p, n)) return state.SkipWithError(e);
  const double t = tlb::time_iterations(state, [&] { (void)Op::run(a, w); });
  const double flops = static_cast<double>(n) * (P::tables + 1) * c.d;
  if (!accumulate && deterministic) {
    // A fresh gradient by sort: the ids, each gradient row read once per
    // table, and every row of every table written once (no row is read).
    const double rows = 260.0 + static_cast<double>(P::tables) * c.V;
    const double moved = static_cast<double>(n) * (1.0 + (P::tables + 1.0) * c.d * sizeof(T)) + rows * c.d * sizeof(G);
    tlb::report(state, t, moved, flops);
    state.counters["frac_copy_bw_compulsory"] = moved / t / tlb::peaks().copy_bytes_per_s;
    return;
  }
  // The ids and gradient rows read; every scattered gradient row read and written.
  const double moved = static_cast<double>(n) * (1.0 + c.d * sizeof(T) + (P::tables + 1.0) * c.d * 2.0 * sizeof(G));
  const double compulsory = moved - static_cast<double>(n - 260) * c.d * 2.0 * sizeof(G);
  tlb::report(state, t, moved, flops);
  state.counters["frac_copy_bw_compulsory"] = compulsory / t / tlb::peaks().copy_bytes_per_s;
}

// The sparse gradient: the touched rows of each table and their sums.
template <class P, class T, class G>
void BM_SparseBackward(benchmark::State& state, Config c) {
  using Op = enc::HashEmbeddingSparseBackward<P, T, std::uint8_t, G>;
  constexpr int K = P::tables;
  const std::int64_t n = state.range(0), cap = std::min<std::int64_t>(n, std::max<std::int64_t>(c.V, 260));
  const BackwardInputs<T> in(n, c.d);
  const auto& ids = in.ids;
  const auto& g = in.grad;
  tlb::DeviceArray<std::int32_t> counts(K + 1), rows(static_cast<std::size_t>((K + 1) * cap));
  tlb::DeviceArray<G> values(static_cast<std::size_t>((K + 1) * cap) * c.d);
  typename Op::Arguments a;
  a.ids = ids.p;
  a.batch = tokenless::VarlenBatch::uniform(1, n);
  a.grad_output = g.p;
  a.hash_vocab = c.V;
  a.d = c.d;
  a.capacity = cap;
  a.counts = counts.p;
  a.rows = rows.p;
  a.values = values.p;
  tlb::DeviceArray<unsigned char> ws(Op::workspace_size(a));
  const tokenless::Workspace w{ws.p, Op::workspace_size(a)};
  if (auto s = Op::run(a, w); !s) return state.SkipWithError(s.message());
  if (auto s = Op::read_status(a, w); !s) return state.SkipWithError(s.message());
  // Check once: every token adds its gradient to one row of every table, so
  // each table's column sums over its touched rows equal the gradient's.
  std::vector<std::int32_t> touched(K + 1);
  cudaMemcpy(touched.data(), counts.p, touched.size() * sizeof(std::int32_t), cudaMemcpyDeviceToHost);
  const int col = c.d / 2;
  std::vector<T> gcol(static_cast<std::size_t>(n));
  cudaMemcpy2D(gcol.data(), sizeof(T), g.p + col, c.d * sizeof(T), sizeof(T), n, cudaMemcpyDeviceToHost);
  double want = 0;
  for (auto v : gcol) want += tokenless::to_float(v);
  const double tol = (sizeof(G) == 4 ? 1e-3 : 4e-3) * (1.0 + std::sqrt(static_cast<double>(n)));
  double touched_rows = 0;
  for (int t = 0; t <= K; ++t) {
    std::vector<G> v(static_cast<std::size_t>(touched[t]));
    cudaMemcpy2D(v.data(), sizeof(G), values.p + t * cap * c.d + col, c.d * sizeof(G), sizeof(G), v.size(),
                 cudaMemcpyDeviceToHost);
    double sum = 0;
    for (G x : v) sum += tokenless::to_float(x);
    if (!(std::fabs(sum - want) <= tol)) return state.SkipWithError("sparse gradient column sums differ");
    touched_rows += touched[t];
  }
  const double t = tlb::time_iterations(state, [&] { (void)Op::run(a, w); });
  // The ids, each gradient row read once per table, each touched row's id and gradient written once.
  const double moved = static_cast<double>(n) * (1.0 + (K + 1.0) * c.d * sizeof(T)) +
                       touched_rows * (sizeof(std::int32_t) + static_cast<double>(c.d) * sizeof(G));
  tlb::report(state, t, moved, static_cast<double>(n) * (K + 1) * c.d);
  state.counters["touched_rows"] = touched_rows;
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
  sizes(RegisterBenchmark("encoder_backward_deterministic_bf16_grads/blt1b_bf16",
                          [](benchmark::State& s) { BM_Backward<enc::Blt1B, B, B>(s, kBlt1B, true); }));
  sizes(RegisterBenchmark("encoder_backward_atomic/small_bf16",
                          [](benchmark::State& s) { BM_Backward<enc::Blt1B, B>(s, kSmall, false); }));
  // What PyTorch's backward gives a bf16 nn.Embedding whose .grad is None: a
  // fresh dense bf16 gradient (accumulate = false), deterministic.
  sizes(RegisterBenchmark("encoder_backward_fresh_bf16_grads/blt1b_bf16",
                          [](benchmark::State& s) { BM_Backward<enc::Blt1B, B, B>(s, kBlt1B, true, false); }));
  sizes(RegisterBenchmark("encoder_backward_fresh_bf16_grads/small_bf16",
                          [](benchmark::State& s) { BM_Backward<enc::Blt1B, B, B>(s, kSmall, true, false); }));
  sizes(RegisterBenchmark("encoder_backward_fresh_atomic/small_bf16",
                          [](benchmark::State& s) { BM_Backward<enc::Blt1B, B>(s, kSmall, false, false); }));
  // A sparse gradient (touched rows only): nothing proportional to the tables' size.
  sizes(RegisterBenchmark("encoder_backward_sparse_bf16_grads/blt1b_bf16",
                          [](benchmark::State& s) { BM_SparseBackward<enc::Blt1B, B, B>(s, kBlt1B); }));
  return tlb::run_main(argc, argv, "tokenless_bench_encoder.json");
}
