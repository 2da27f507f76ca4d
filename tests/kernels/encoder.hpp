#pragma once
// Byte + hash n-gram embedding: forward and backward against the host
// reference, varlen and padded batches, both table layouts, every dtype,
// deterministic mode bit-stability, and bad input. Shared by emu and gpu tiers.
#include "../support/encoder_arguments.hpp"
#include "../support/testbed.hpp"

#include <tokenless/tokenless.cuh>

#include <cstring>
#include <numeric>

namespace tlt::encoder_tests {

namespace enc = tokenless::encoder;
using tokenless::to_float;

// Small enough to run on the executor, with collisions (V = 97) so that the
// backward really accumulates.
template <class Layout>
using TestPolicy = enc::HashEmbeddingPolicy<enc::BltIds, enc::NGrams<2, 3, 5>, 2, Layout>;
constexpr std::int64_t kV = 97;

template <class IdT>
std::vector<IdT> make_ids(std::int64_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<IdT> ids(static_cast<std::size_t>(n));
  // Text-like bytes: few distinct values, so n-grams repeat.
  for (auto& x : ids) x = static_cast<IdT>(std::is_same_v<IdT, std::uint8_t> ? 97 + rng() % 6 : 4 + rng() % 256);
  return ids;
}

template <class P, class T>
struct Model {
  static constexpr int K = P::tables;
  int d;
  std::vector<T> byte_table;
  std::vector<T> fused;  // K * V rows; separate tables are views into it
  tlt::DeviceBuffer<T> d_byte, d_fused;

  explicit Model(int dim)
      : d(dim),
        byte_table(tlt::random_values<T>(static_cast<std::size_t>(P::ids::kVocab) * dim, 11)),
        fused(tlt::random_values<T>(static_cast<std::size_t>(K * kV) * dim, 12)),
        d_byte(byte_table),
        d_fused(fused) {}

  template <class Tables, class Ptr>
  Tables tables(Ptr base) const {
    Tables t;
    if constexpr (requires { t.fused; }) {
      t.fused = base;
      t.use_default_offsets(kV);
    } else {
      for (int i = 0; i < K; ++i) t.table[i] = base + static_cast<std::int64_t>(i) * kV * d;
    }
    return t;
  }
};

struct BatchSpec {
  std::vector<std::int32_t> cu;  // empty: padded
  std::int64_t seq_len = 0;
  std::int64_t n = 0;
};

// The batch a spec describes, with its offsets at `cu` on the device.
inline tokenless::VarlenBatch as_batch(const BatchSpec& spec, const std::int32_t* cu) {
  if (spec.cu.empty()) return tokenless::VarlenBatch::uniform(spec.n / spec.seq_len, spec.seq_len);
  return {cu, static_cast<std::int64_t>(spec.cu.size()) - 1, spec.n};
}

inline BatchSpec varlen_spec() {
  // Includes an empty sequence and a single-byte one.
  return {{0, 7, 7, 8, 40, 73}, 0, 73};
}
inline BatchSpec padded_spec() { return {{}, 24, 72}; }

template <class P, class T, class IdT>
void forward_case(int d, const BatchSpec& spec) {
  CAPTURE(d);
  CAPTURE(spec.n);
  using Op = enc::HashEmbeddingForward<P, T, IdT>;
  Model<P, T> m(d);
  auto ids = make_ids<IdT>(spec.n, 5);
  DeviceBuffer<IdT> d_ids(ids);
  DeviceBuffer<std::int32_t> d_cu(spec.cu);
  DeviceBuffer<T> out(static_cast<std::size_t>(spec.n * d));
  typename Op::Arguments a;
  a.ids = d_ids.get();
  a.batch = as_batch(spec, d_cu.get());
  a.byte_table = m.d_byte.get();
  a.hash_tables = m.template tables<typename Op::Tables>(static_cast<const T*>(m.d_fused.get()));
  a.hash_vocab = kV;
  a.d = d;
  a.scale = 0.5f;
  a.output = out.get();
  Testbed<Op>().run_ok(a);
  auto got_t = out.download();
  std::vector<float> got(got_t.size());
  for (std::size_t i = 0; i < got.size(); ++i) got[i] = to_float(got_t[i]);

  const auto starts = tokenless::reference::sequence_starts(spec.n, spec.cu, spec.seq_len);
  const auto host_tables = m.template tables<typename Op::Tables>(static_cast<const T*>(m.fused.data()));
  auto truth = tokenless::reference::hash_embedding_forward<P, double>(ids.data(), spec.n, starts, m.byte_table.data(),
                                                                      host_tables, kV, d, 0.5f);
  auto naive = tokenless::reference::hash_embedding_forward<P, float>(ids.data(), spec.n, starts, m.byte_table.data(),
                                                                     host_tables, kV, d, 0.5f);
  for (auto& x : naive) x = tokenless::round_trip<T>(x);
  // Same summation order as the naive loop; the output rounding to T dominates.
  check_accuracy(got, naive, truth, 1.0, tokenless::dtype_traits<T>::unit_roundoff);
}

template <class P, class T, class IdT, class GradT = float>
void backward_case(int d, const BatchSpec& spec, bool deterministic, bool accumulate = true) {
  CAPTURE(d);
  CAPTURE(deterministic);
  CAPTURE(accumulate);
  using Op = enc::HashEmbeddingBackward<P, T, IdT, GradT>;
  constexpr int K = P::tables;
  auto ids = make_ids<IdT>(spec.n, 7);
  auto g = tlt::random_values<T>(static_cast<std::size_t>(spec.n * d), 8);
  DeviceBuffer<IdT> d_ids(ids);
  DeviceBuffer<std::int32_t> d_cu(spec.cu);
  DeviceBuffer<T> d_g(g);
  DeviceBuffer<GradT> gb(static_cast<std::size_t>(P::ids::kVocab) * d), gt(static_cast<std::size_t>(K * kV) * d);
  auto a = backward_arguments<Op>(d_ids.get(), as_batch(spec, d_cu.get()), d_g.get(), gb.get(), gt.get(), kV, d);
  a.scale = 0.5f;
  a.deterministic = deterministic;
  a.accumulate = accumulate;
  Testbed<Op> bed;

  auto run_once = [&] {
    // Assign mode must write every row: start from NaN (all-ones bytes), which
    // any row it missed would keep.
    gb.fill_bytes(accumulate ? 0 : 0xff);
    gt.fill_bytes(accumulate ? 0 : 0xff);
    bed.run_ok(a);
    std::vector<float> b;
    for (auto x : gb.download()) b.push_back(to_float(x));
    for (auto x : gt.download()) b.push_back(to_float(x));
    return b;
  };
  const auto got = run_once();

  const auto starts = tokenless::reference::sequence_starts(spec.n, spec.cu, spec.seq_len);
  std::vector<double> tb;
  std::vector<std::vector<double>> tt;
  std::vector<float> nb;
  std::vector<std::vector<float>> nt;
  tokenless::reference::hash_embedding_backward<P, double>(ids.data(), spec.n, starts, g.data(), kV, d, 0.5f, tb, tt);
  tokenless::reference::hash_embedding_backward<P, float>(ids.data(), spec.n, starts, g.data(), kV, d, 0.5f, nb, nt);
  for (int t = 0; t < K; ++t) {
    tb.insert(tb.end(), tt[t].begin(), tt[t].end());
    nb.insert(nb.end(), nt[t].begin(), nt[t].end());
  }
  // Atomics add in any order, the deterministic path in token order: both
  // within 2x the token-order fp32 loop's error. 16-bit tables: the fp32 loop
  // rounded once to GradT, as a framework's fp32-accumulate-then-cast gives.
  for (auto& x : nb) x = tokenless::round_trip<GradT>(x);
  check_accuracy(got, nb, tb, 2.0, tokenless::dtype_traits<GradT>::unit_roundoff);
  if (deterministic) {
    for (int rep = 0; rep < 2; ++rep) CHECK(run_once() == got);  // bit-identical
  }
}

// The sparse gradient: against the reference, and bit for bit the rows of
// the fresh dense gradient of the deterministic path; then too small a capacity.
template <class P, class T, class IdT, class GradT = float>
void sparse_backward_case(int d, const BatchSpec& spec) {
  CAPTURE(d);
  CAPTURE(spec.n);
  using Op = enc::HashEmbeddingSparseBackward<P, T, IdT, GradT>;
  using Dense = enc::HashEmbeddingBackward<P, T, IdT, GradT>;
  constexpr int K = P::tables;
  const std::int64_t n = spec.n, cap = n;
  auto ids = make_ids<IdT>(n, 7);
  auto g = tlt::random_values<T>(static_cast<std::size_t>(n * d), 8);
  DeviceBuffer<IdT> d_ids(ids);
  DeviceBuffer<std::int32_t> d_cu(spec.cu), counts(K + 1), rows(static_cast<std::size_t>((K + 1) * cap));
  DeviceBuffer<T> d_g(g);
  DeviceBuffer<GradT> values(static_cast<std::size_t>((K + 1) * cap * d));
  const tokenless::VarlenBatch batch = as_batch(spec, d_cu.get());
  typename Op::Arguments a;
  a.ids = d_ids.get();
  a.batch = batch;
  a.grad_output = d_g.get();
  a.hash_vocab = kV;
  a.d = d;
  a.scale = 0.5f;
  a.capacity = cap;
  a.counts = counts.get();
  a.rows = rows.get();
  a.values = values.get();
  Testbed<Op> tb;
  auto run_once = [&](const typename Op::Arguments& args) {
    for (auto* b : {&counts, &rows}) b->fill_bytes(0xff);
    values.fill_bytes(0xff);  // NaN: a slot written that should not be shows
    return tb.run(args);
  };
  REQUIRE_OK(run_once(a));
  const auto got_counts = counts.download();
  const auto got_rows = rows.download();
  const auto got_values = values.download();

  const auto starts = tokenless::reference::sequence_starts(n, spec.cu, spec.seq_len);
  const auto truth = tokenless::reference::hash_embedding_sparse_backward<P, double>(ids.data(), n, starts, g.data(), kV, d, 0.5f);
  const auto naive = tokenless::reference::hash_embedding_sparse_backward<P, float>(ids.data(), n, starts, g.data(), kV, d, 0.5f);

  // The fresh dense gradient of the deterministic path, for the bitwise comparison.
  DeviceBuffer<GradT> gb(static_cast<std::size_t>(P::ids::kVocab) * d), gt(static_cast<std::size_t>(K * kV) * d);
  auto da = backward_arguments<Dense>(d_ids.get(), batch, d_g.get(), gb.get(), gt.get(), kV, d);
  da.scale = 0.5f;
  da.deterministic = true;
  da.accumulate = false;
  Testbed<Dense>().run_ok(da);
  const auto dense_byte = gb.download();
  const auto dense_hash = gt.download();

  std::int64_t most = 0;
  for (int t = 0; t <= K; ++t) {
    CAPTURE(t);
    const auto& want_rows = truth.rows[static_cast<std::size_t>(t)];
    const auto m = static_cast<std::int64_t>(want_rows.size());
    most = std::max(most, m);
    REQUIRE(got_counts[static_cast<std::size_t>(t)] == m);
    std::vector<float> have, naive_t;
    std::vector<double> truth_t;
    bool same_as_dense = true;
    for (std::int64_t u = 0; u < m; ++u) {
      const std::int64_t row = got_rows[static_cast<std::size_t>(t * cap + u)];
      CHECK(row == want_rows[static_cast<std::size_t>(u)]);
      for (int c = 0; c < d; ++c) {
        const GradT x = got_values[static_cast<std::size_t>((t * cap + u) * d + c)];
        have.push_back(to_float(x));
        naive_t.push_back(tokenless::round_trip<GradT>(naive.values[static_cast<std::size_t>(t)][static_cast<std::size_t>(u * d + c)]));
        truth_t.push_back(truth.values[static_cast<std::size_t>(t)][static_cast<std::size_t>(u * d + c)]);
        const GradT y = t == 0 ? dense_byte[static_cast<std::size_t>(row * d + c)]
                               : dense_hash[static_cast<std::size_t>(((t - 1) * kV + row) * d + c)];
        same_as_dense = same_as_dense && std::memcmp(&x, &y, sizeof x) == 0;
      }
    }
    CHECK(same_as_dense);
    check_accuracy(have, naive_t, truth_t, 2.0, tokenless::dtype_traits<GradT>::unit_roundoff);
    // Slots past the count stay untouched.
    for (std::int64_t u = m; u < cap; ++u) CHECK(got_rows[static_cast<std::size_t>(t * cap + u)] == -1);
  }
  REQUIRE_OK(run_once(a));
  const auto again = values.download();  // bit-identical from run to run (NaN sentinels included)
  CHECK(std::memcmp(again.data(), got_values.data(), again.size() * sizeof(GradT)) == 0);

  // One row too few for the fullest table: reported, and nothing written.
  Testbed<Op> bad;
  bad.watch(counts).watch(rows).watch(values);
  bad.reject(a, {{"capacity one short", [&](auto& b) { b.capacity = most - 1; }, tokenless::StatusCode::capacity_too_small,
                  "touched " + std::to_string(most) + " rows"}});
}

template <class Layout, class T>
void all_cases() {
  using P = TestPolicy<Layout>;
  const int s = scale_down();
  forward_case<P, T, std::uint8_t>(64, padded_spec());
  forward_case<P, T, std::int32_t>(64, varlen_spec());
  forward_case<P, T, std::uint8_t>(35, varlen_spec());  // d not a multiple of the vector width: scalar path
  forward_case<P, T, std::uint8_t>(320 / s, padded_spec());  // several column chunks
  backward_case<P, T, std::uint8_t>(64, padded_spec(), false);
  backward_case<P, T, std::int32_t>(35, varlen_spec(), false);
  backward_case<P, T, std::uint8_t>(64, varlen_spec(), true);
  backward_case<P, T, std::int32_t>(35, padded_spec(), true);
  // 16-bit gradient tables (the deterministic path only).
  backward_case<P, T, std::uint8_t, __nv_bfloat16>(64, varlen_spec(), true);
  backward_case<P, T, std::int32_t, __half>(35, padded_spec(), true);
  // Column chunks of 1, 2 and 4 vectors per lane on the deterministic path
  // (rows summed several at a time, in token order). Not in the small
  // (TSan) runs: they add no new sharing between threads.
  if (s == 1) {
    backward_case<P, T, std::uint8_t>(200, padded_spec(), true);
    backward_case<P, T, std::int32_t, __nv_bfloat16>(320, varlen_spec(), true, false);
  }
  // A fresh gradient (accumulate = false): every row written, untouched ones zero.
  backward_case<P, T, std::uint8_t>(64, varlen_spec(), false, false);
  backward_case<P, T, std::int32_t>(64, padded_spec(), true, false);
  backward_case<P, T, std::uint8_t, __nv_bfloat16>(35, varlen_spec(), true, false);
  // The sparse gradient: vector and scalar paths, fp32 and 16-bit values.
  sparse_backward_case<P, T, std::uint8_t>(64, varlen_spec());
  sparse_backward_case<P, T, std::int32_t, __nv_bfloat16>(35, padded_spec());
  if (s == 1) sparse_backward_case<P, T, std::uint8_t, __half>(200, padded_spec());
}

// The dtype sweep is the largest compile of the test tiers, so each dtype may
// go to a translation unit of its own: TLT_ENCODER_PART 1, 2, 3 is fp32,
// fp16, bf16, and 0 the other cases; undefined, all of them.
#ifndef TLT_ENCODER_PART
#define TLT_ENCODER_PART -1
#endif
// The two layouts differ in where a row lives, not in how threads share
// work: under TSan (fp32 only) and under ASan for fp16 (whose fp32 sweep
// covers the separate tables' indexing) one layout runs, halving those units'
// build and run.
template <class T>
void dtype_sweep() {
#if defined(__SANITIZE_THREAD__) || (defined(__SANITIZE_ADDRESS__) && TLT_ENCODER_PART == 2)
  all_cases<enc::FusedTable, T>();
#else
  all_cases<enc::SeparateTables, T>();
  all_cases<enc::FusedTable, T>();
#endif
}
#define TLT_ENCODER_PART_IS(k) (TLT_ENCODER_PART < 0 || TLT_ENCODER_PART == (k))

#if TLT_ENCODER_PART_IS(0)
TEST_CASE("hash embedding: deterministic backward with runs longer than a reduction chunk") {
  // Few distinct bytes: the byte table's rows get runs of ~800 tokens, which
  // cross many of the deterministic reduction's chunks (reduce_chunk: 32 to
  // 1024 positions, smaller for fewer positions). Thread mode (TSan) takes a
  // quarter of the positions: runs of ~200, still across several chunks.
  const BatchSpec spec = scale_down() > 1 ? BatchSpec{{}, 625, 1250} : BatchSpec{{}, 1250, 5000};
  backward_case<TestPolicy<enc::SeparateTables>, float, std::uint8_t>(8, spec, true);
  sparse_backward_case<TestPolicy<enc::SeparateTables>, float, std::uint8_t>(8, spec);
  // Thread mode (TSan): the same kernels at other table layouts and gradient types follow.
  if (scale_down() > 1) return;
  backward_case<TestPolicy<enc::FusedTable>, __nv_bfloat16, std::uint8_t>(16, spec, true);
  backward_case<TestPolicy<enc::SeparateTables>, float, std::uint8_t, __nv_bfloat16>(8, spec, true);
  backward_case<TestPolicy<enc::FusedTable>, float, std::uint8_t, __nv_bfloat16>(16, spec, true, false);
}

#endif

#if TLT_ENCODER_PART_IS(1)
TEST_CASE("hash embedding: forward and backward match the reference (fp32)") { dtype_sweep<float>(); }
#endif
#if TLT_ENCODER_PART_IS(2)
TEST_CASE("hash embedding: forward and backward match the reference (fp16)") { dtype_sweep<__half>(); }
#endif
#if TLT_ENCODER_PART_IS(3)
TEST_CASE("hash embedding: forward and backward match the reference (bf16)") { dtype_sweep<__nv_bfloat16>(); }
#endif

#if TLT_ENCODER_PART_IS(0)
TEST_CASE("hash embedding: the BLT-1B policy (6 tables, n = 3..8, one hash function) on a sentence") {
  using P = enc::Blt1B;
  using T = __nv_bfloat16;
  using Op = enc::HashEmbeddingForward<P, T, std::uint8_t>;
  const std::string text = "Daenerys Targaryen is in Game of Thrones, a fantasy epic by George R.R. Martin.";
  const std::vector<std::uint8_t> bytes(text.begin(), text.end());
  const std::int64_t n = static_cast<std::int64_t>(bytes.size()), V = 1009;  // BLT-1B's V is 500,002; any V works
  const int d = 32;
  auto byte_table = tlt::random_values<T>(static_cast<std::size_t>(P::ids::kVocab) * d, 1);
  auto fused = tlt::random_values<T>(static_cast<std::size_t>(P::tables * V) * d, 2);
  DeviceBuffer<std::uint8_t> d_ids(bytes);
  DeviceBuffer<T> d_byte(byte_table), d_fused(fused), out(static_cast<std::size_t>(n * d));
  typename Op::Arguments a;
  a.ids = d_ids.get();
  a.batch = tokenless::VarlenBatch::uniform(1, n);
  a.byte_table = d_byte.get();
  for (int t = 0; t < P::tables; ++t) a.hash_tables.table[t] = d_fused.get() + t * V * d;
  a.hash_vocab = V;
  a.d = d;
  a.output = out.get();
  Testbed<Op>().run_ok(a);
  auto got_t = out.download();
  std::vector<float> got(got_t.size());
  for (std::size_t i = 0; i < got.size(); ++i) got[i] = to_float(got_t[i]);
  typename Op::Tables host;
  for (int t = 0; t < P::tables; ++t) host.table[t] = fused.data() + t * V * d;
  const std::vector<std::int64_t> starts(static_cast<std::size_t>(n), 0);
  auto truth = tokenless::reference::hash_embedding_forward<P, double>(bytes.data(), n, starts, byte_table.data(), host,
                                                                      V, d, 1.0f);
  auto naive = tokenless::reference::hash_embedding_forward<P, float>(bytes.data(), n, starts, byte_table.data(), host,
                                                                     V, d, 1.0f);
  for (auto& x : naive) x = tokenless::round_trip<T>(x);
  check_accuracy(got, naive, truth, 1.0, tokenless::dtype_traits<T>::unit_roundoff);
}

// Backward arguments for one padded sequence of 4 int32 ids, the hash
// tables back to back in one buffer.
template <class Bwd, class T, class G>
typename Bwd::Arguments four_token_backward(const std::int32_t* ids, const T* grad_out, G* grad_byte, G* grad_tables,
                                            int d) {
  return backward_arguments<Bwd>(ids, tokenless::VarlenBatch::uniform(1, 4), grad_out, grad_byte, grad_tables, kV, d);
}

TEST_CASE("hash embedding: bad input is rejected and nothing is written") {
  using P = TestPolicy<enc::SeparateTables>;
  using T = float;
  using Op = enc::HashEmbeddingForward<P, T, std::int32_t>;
  const int d = 16;
  Model<P, T> m(d);
  std::vector<std::int32_t> ids = {5, 6, 8, 7};
  DeviceBuffer<std::int32_t> d_ids(ids), bad_ids(std::vector<std::int32_t>{5, 6, 300, 7});  // 300: outside BLT's 260 ids
  DeviceBuffer<std::int32_t> cu(std::vector<std::int32_t>{0, 2, 3});
  DeviceBuffer<T> out(4 * d);
  typename Op::Arguments a;
  a.ids = d_ids.get();
  a.batch = tokenless::VarlenBatch::uniform(1, 4);
  a.byte_table = m.d_byte.get();
  a.hash_tables = m.template tables<typename Op::Tables>(static_cast<const T*>(m.d_fused.get()));
  a.hash_vocab = kV;
  a.d = d;
  a.output = out.get();
  using Code = tokenless::StatusCode;
  Testbed<Op> tb;
  tb.watch(out, 0x7f);
  tb.reject(a, {
      // Only the device sees these: run() launches, read_status() reports.
      {"id 300", [&](auto& b) { b.ids = bad_ids.get(); }, Code::invalid_argument, "300 at position 2 (vocab 260)"},
      {"cu ends short", [&](auto& b) { b.batch = {cu.get(), 2, 4}; }, Code::invalid_argument, "cu[2] = 3"},
      {"bad id and bad cu: the batch is reported", [&](auto& b) {
         b.ids = bad_ids.get();
         b.batch = {cu.get(), 2, 4};
       }, Code::invalid_argument, "batch.cu_seqlens"},
      // The host sees these.
      {"no vocab", [](auto& b) { b.hash_vocab = 0; }, Code::invalid_argument, "'hash_vocab'"},
      {"no table 3", [](auto& b) { b.hash_tables.table[3] = nullptr; }, Code::null_pointer, "table 3"},
      {"no byte table", [](auto& b) { b.byte_table = nullptr; }, Code::null_pointer, "'byte_table'"},
      {"empty batch", [](auto& b) { b.batch.total = 0; }, Code::empty, "total 0"},
      {"no d", [](auto& b) { b.d = 0; }, Code::empty, "'d'"},
      {"unequal lengths", [](auto& b) { b.batch.num_seqs = 3; }, Code::shape_mismatch, "total a multiple of num_seqs"},
      {"NaN scale", [](auto& b) { b.scale = std::nanf(""); }, Code::invalid_argument, "'scale'"},
  });
  CHECK(Op::run(a, {}).code() == tokenless::StatusCode::null_pointer);  // int32 ids need the status record
  const auto before = out.download();
  tb.run_ok(a);
  CHECK(out.download() != before);  // the valid run writes
  d_ids.upload({5, 6, 300, 7});     // the backward cases below see the bad id
  // 16-bit gradient tables take the deterministic path only.
  {
    using Bwd = enc::HashEmbeddingBackward<P, T, std::int32_t, __nv_bfloat16>;
    DeviceBuffer<__nv_bfloat16> gbt(static_cast<std::size_t>(P::ids::kVocab) * d), gtt(static_cast<std::size_t>(P::tables * kV) * d);
    DeviceBuffer<T> go(static_cast<std::size_t>(4 * d));
    DeviceBuffer<std::int32_t> gi(std::vector<std::int32_t>{5, 6, 7, 8});
    auto g = four_token_backward<Bwd>(gi.get(), go.get(), gbt.get(), gtt.get(), d);
    const tokenless::Status st = Bwd::can_implement(g);
    CHECK(st.code() == tokenless::StatusCode::unsupported);
    CHECK(std::string(st.message()).find("16-bit gradient tables") != std::string::npos);
    g.deterministic = true;
    CHECK(Bwd::can_implement(g).is_ok());
    // The deterministic path writes rows without atomics: tables must not overlap.
    auto tied = g;
    tied.grad_hash_tables.table[1] = tied.grad_hash_tables.table[0];
    const tokenless::Status ts = Bwd::can_implement(tied);
    CHECK(ts.code() == tokenless::StatusCode::invalid_argument);
    CHECK(std::string(ts.message()).find("overlapping table 0 and table 1") != std::string::npos);
    tied = g;
    tied.grad_hash_tables.table[2] = gbt.get() + d;  // inside the byte table
    CHECK(std::string(Bwd::can_implement(tied).message()).find("overlapping byte table") != std::string::npos);
  }
  // A fresh-gradient backward over a bad id writes nothing either: its
  // zeroing waits for the device-side checks.
  for (const bool deterministic : {false, true}) {
    CAPTURE(deterministic);
    using Bwd = enc::HashEmbeddingBackward<P, T, std::int32_t>;
    DeviceBuffer<float> gbt(static_cast<std::size_t>(P::ids::kVocab) * d), gtt(static_cast<std::size_t>(P::tables * kV) * d);
    DeviceBuffer<T> go(std::vector<T>(static_cast<std::size_t>(4 * d), 1.0f));
    DeviceBuffer<std::int32_t> good_ids(std::vector<std::int32_t>{5, 6, 8, 7});
    auto g = four_token_backward<Bwd>(good_ids.get(), go.get(), gbt.get(), gtt.get(), d);
    g.deterministic = deterministic;
    g.accumulate = false;
    Testbed<Bwd> bt;
    bt.watch(gbt, 0x7f).watch(gtt, 0x7f);
    bt.reject(g, {{"id 300", [&](auto& b) { b.ids = d_ids.get(); }, Code::invalid_argument, "300 at position 2"}});
  }
  // The sparse gradient: missing outputs and capacity are refused; a bad id
  // (d_ids still holds 300) is reported and nothing is written.
  {
    using Sparse = enc::HashEmbeddingSparseBackward<P, T, std::int32_t>;
    constexpr int K = P::tables;
    const std::int64_t cap = 4;
    DeviceBuffer<std::int32_t> counts(K + 1), rows(static_cast<std::size_t>((K + 1) * cap));
    DeviceBuffer<float> values(static_cast<std::size_t>((K + 1) * cap * d));
    DeviceBuffer<T> go(std::vector<T>(static_cast<std::size_t>(4 * d), 1.0f));
    DeviceBuffer<std::int32_t> good_ids(std::vector<std::int32_t>{5, 6, 8, 7});
    typename Sparse::Arguments sa;
    sa.ids = good_ids.get();
    sa.batch = tokenless::VarlenBatch::uniform(1, 4);
    sa.grad_output = go.get();
    sa.hash_vocab = kV;
    sa.d = d;
    sa.capacity = cap;
    sa.counts = counts.get();
    sa.rows = rows.get();
    sa.values = values.get();
    Testbed<Sparse> st;
    st.watch(counts, 0x7f).watch(rows, 0x7f).watch(values, 0x7f);
    st.reject(sa, {{"no capacity", [](auto& b) { b.capacity = 0; }, Code::empty, "'capacity'"},
                   {"no values", [](auto& b) { b.values = nullptr; }, Code::null_pointer, "'values'"},
                   {"no rows", [](auto& b) { b.rows = nullptr; }, Code::null_pointer, "'rows'"},
                   {"no counts", [](auto& b) { b.counts = nullptr; }, Code::null_pointer, "'counts'"},
                   {"no grad_output", [](auto& b) { b.grad_output = nullptr; }, Code::null_pointer, "'grad_output'"},
                   {"id 300", [&](auto& b) { b.ids = d_ids.get(); }, Code::invalid_argument, "300 at position 2"}});
    DeviceBuffer<unsigned char> sws(Sparse::workspace_size(sa));
    CHECK(Sparse::run(sa, {sws.get(), Sparse::workspace_size(sa) - 1}).code() == Code::workspace_too_small);
  }
}

#endif

}  // namespace tlt::encoder_tests
