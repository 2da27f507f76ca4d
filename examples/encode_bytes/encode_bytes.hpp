#pragma once
// Encodes a file's bytes with BLT-1B's hash n-gram embedding policy (6 tables,
// n = 3..8) and prints the shape, a checksum and the throughput, on the GPU or
// on the CPU SIMT executor. Tables are random (seeded): load BLT's trained
// tables into the same layout to get BLT's embeddings. Then one backward, as
// a training step would run it: the gradient of L = 1/2 |out|^2 (which is out
// itself) as a sparse gradient, the touched rows of each table.
//
//   encode_bytes [file] [--d 256] [--V 30000]
#include <tokenless/tokenless.cuh>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

namespace encode_bytes {

namespace enc = tokenless::encoder;
using P = enc::Blt1B;
using T = __nv_bfloat16;
using Fwd = enc::HashEmbeddingForward<P, T, std::uint8_t>;
using SparseBwd = enc::HashEmbeddingSparseBackward<P, T, std::uint8_t, T>;

// The backward of L = 1/2 |out|^2 as a sparse gradient: prints the rows each
// table touched and what that saves against dense gradient tables.
inline tokenless::Status sparse_backward(const std::uint8_t* d_ids, std::int64_t n, std::int64_t V, int d, const T* d_out) {
  constexpr int K = P::tables;
  SparseBwd::Arguments b;
  b.ids = d_ids;
  b.batch = tokenless::VarlenBatch::uniform(1, n);
  b.grad_output = d_out;  // dL/dout = out
  b.hash_vocab = V;
  b.d = d;
  b.capacity = std::min<std::int64_t>(n, std::max<std::int64_t>(V, P::ids::kVocab));  // always enough
  const std::size_t slots = static_cast<std::size_t>((K + 1) * b.capacity);
  tokenless::DeviceBuffer<std::int32_t> counts_d(K + 1), rows(slots);
  tokenless::DeviceBuffer<T> values(slots * static_cast<std::size_t>(d));
  tokenless::DeviceBuffer<unsigned char> ws(SparseBwd::workspace_size(b));
  for (const tokenless::Status* st : {&counts_d.status(), &rows.status(), &values.status(), &ws.status()})
    TL_RETURN_IF_ERROR(*st);
  b.counts = counts_d.get();
  b.rows = rows.get();
  b.values = values.get();
  tokenless::Status s = SparseBwd::run(b, {ws.get(), SparseBwd::workspace_size(b)});
  if (s) s = SparseBwd::read_status(b, {ws.get(), SparseBwd::workspace_size(b)});
  if (s) {
    std::int32_t counts[K + 1];
    TL_RETURN_IF_ERROR(counts_d.download(counts, K + 1));
    double touched = 0;
    std::printf("  backward sparse gradient, touched rows: byte table %d, hash tables", counts[0]);
    for (int t = 1; t <= K; ++t) {
      std::printf(" %d", counts[t]);
      touched += counts[t];
    }
    const double dense = static_cast<double>(K) * static_cast<double>(V);
    std::printf("\n           %.0f of %.0f hash rows (%.3f%%): %.1f MB of gradient instead of %.1f MB dense\n", touched,
                dense, 100.0 * touched / dense, (touched + counts[0]) * d * sizeof(T) / 1e6,
                (dense + P::ids::kVocab) * d * sizeof(T) / 1e6);
  }
  return s;
}

inline int main(int argc, char** argv) {
  std::string path;
  int d = 256;
  std::int64_t V = 30000;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--d") && i + 1 < argc) d = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--V") && i + 1 < argc) V = std::atoll(argv[++i]);
    else path = argv[i];
  }
  std::string text = "tokenless encodes bytes, not tokens: every byte gets its own embedding plus the hashed "
                     "n-grams that end at it, exactly as BLT computes them.";
  if (!path.empty()) {
    std::ifstream f(path, std::ios::binary);
    if (!f) {
      std::fprintf(stderr, "cannot open %s\n", path.c_str());
      return 2;
    }
    text.assign(std::istreambuf_iterator<char>(f), {});
  }
  if (!tokenless::device_available()) {
    std::printf("no CUDA device found\n");
    return 3;
  }
  const std::int64_t n = static_cast<std::int64_t>(text.size());
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<T> byte_table(static_cast<std::size_t>(P::ids::kVocab) * d), tables(static_cast<std::size_t>(P::tables * V) * d);
  for (auto& x : byte_table) x = tokenless::from_float<T>(normal(rng));
  for (auto& x : tables) x = tokenless::from_float<T>(normal(rng));

  // Every allocation and copy is checked.
  tokenless::DeviceBuffer<std::uint8_t> ids_buf(static_cast<std::size_t>(n));
  tokenless::DeviceBuffer<T> byte_buf(byte_table.size()), tables_buf(tables.size()),
      out_buf(static_cast<std::size_t>(n) * d);
  tokenless::Status s;
  for (const tokenless::Status* st : {&ids_buf.status(), &byte_buf.status(), &tables_buf.status(), &out_buf.status()})
    if (s && !*st) s = *st;
  if (s) s = ids_buf.upload(reinterpret_cast<const std::uint8_t*>(text.data()), static_cast<std::size_t>(n));
  if (s) s = byte_buf.upload(byte_table);
  if (s) s = tables_buf.upload(tables);
  if (!s) {
    std::fprintf(stderr, "encode_bytes: %s\n", s.message());
    return 1;
  }
  const std::uint8_t* d_ids = ids_buf.get();
  const T* d_byte = byte_buf.get();
  const T* d_tables = tables_buf.get();
  T* d_out = out_buf.get();

  Fwd::Arguments a;
  a.ids = d_ids;
  a.batch = tokenless::VarlenBatch::uniform(1, n);  // one sequence
  a.byte_table = d_byte;
  for (int t = 0; t < P::tables; ++t) a.hash_tables.table[t] = d_tables + t * V * d;
  a.hash_vocab = V;
  a.d = d;
  a.output = d_out;

  s = Fwd::run(a);  // warm-up and check
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  const int reps = tokenless::backend_name()[0] == 'c' ? 20 : 1;
  const auto t0 = std::chrono::steady_clock::now();
  cudaEventRecord(e0);
  for (int r = 0; r < reps && s; ++r) s = Fwd::run(a);
  cudaEventRecord(e1);
  cudaEventSynchronize(e1);
  const auto t1 = std::chrono::steady_clock::now();
  if (!s) {
    std::fprintf(stderr, "encode failed: %s\n", s.message());
    return 1;
  }
  float ms = 0;
  cudaEventElapsedTime(&ms, e0, e1);
  if (ms <= 0) ms = static_cast<float>(std::chrono::duration<double, std::milli>(t1 - t0).count());
  ms /= static_cast<float>(reps);

  std::vector<T> out(static_cast<std::size_t>(n) * d);
  if (const tokenless::Status ds = out_buf.download(out.data(), out.size()); !ds) {
    std::fprintf(stderr, "encode_bytes: %s\n", ds.message());
    return 1;
  }
  double checksum = 0;
  for (std::size_t i = 0; i < out.size(); ++i) checksum += tokenless::to_float(out[i]) * static_cast<double>(i % 7 + 1);
  // Bytes moved: ids, the gathered rows (byte + 6 tables) and the output.
  const double bytes = static_cast<double>(n) * (1.0 + (P::tables + 2.0) * d * sizeof(T));

  tokenless::DeviceProperties props;
  (void)tokenless::device_properties(props);
  std::printf("encode_bytes on %s (backend: %s)\n", props.name, tokenless::backend_name());
  std::printf("  policy   BLT-1B: ids = byte + 4, n-grams 3..8, 1 hash function, %d tables of %lld x %d (bf16)\n",
              P::tables, static_cast<long long>(V), d);
  std::printf("  input    %lld bytes\n", static_cast<long long>(n));
  std::printf("  output   [%lld, %d] bf16\n", static_cast<long long>(n), d);
  std::printf("  checksum %.6f\n", checksum);
  std::printf("  time     %.3f ms per forward: %.2f M bytes/s, %.2f GB/s moved\n", ms, n / (ms * 1e3),
              bytes / (ms * 1e6));
  if (const tokenless::Status bs = sparse_backward(d_ids, n, V, d, d_out); !bs) {
    std::fprintf(stderr, "backward failed: %s\n", bs.message());
    return 1;
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return 0;
}

}  // namespace encode_bytes
