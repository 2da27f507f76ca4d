// GPU only: production shapes, too large for the CPU executor. BLT-1B's
// encoder at d = 1024 over 64K bytes (vector gathers, 16-byte atomics on
// Hopper, every column chunk), and the patcher over 256K rows of bf16 logits
// (many staged tiles per block), and the patcher's tile passes over 12M
// positions. Same tolerance rule as the shared cases.
#include "../support/encoder_arguments.hpp"
#include "../support/patch_buffers.hpp"
#include "../support/testbed.hpp"

#include <tokenless/tokenless.cuh>

#include <cstring>

namespace {

namespace enc = tokenless::encoder;
namespace pt = tokenless::patcher;
namespace ref = tokenless::reference;
using tlt::DeviceBuffer;

std::vector<std::uint8_t> text_like(std::int64_t n, std::uint64_t seed) {
  // Words from a small alphabet: n-grams repeat, so gradient rows collide.
  std::mt19937_64 rng(seed);
  std::vector<std::uint8_t> b(static_cast<std::size_t>(n));
  for (auto& x : b) x = rng() % 6 == 0 ? ' ' : static_cast<std::uint8_t>('a' + rng() % 12);
  return b;
}

template <class T>
std::vector<float> to_floats(const std::vector<T>& v) {
  std::vector<float> f(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) f[i] = tokenless::to_float(v[i]);
  return f;
}

// Each sequence's patches (from the device's offsets and lengths) against
// BLT's rule on that sequence alone.
inline void check_against_blt(const DeviceBuffer<std::int32_t>& off, const DeviceBuffer<std::int32_t>& lens,
                              const std::vector<std::int32_t>& cu, const std::vector<float>& e,
                              const ref::BltEntropyOptions& opt) {
  const auto o = off.download();
  const auto l = lens.download();
  REQUIRE(o.size() == cu.size());
  for (std::size_t b = 0; b + 1 < cu.size(); ++b) {
    CAPTURE(b);
    const std::vector<float> eb(e.begin() + cu[b], e.begin() + cu[b + 1]);
    const std::vector<std::int64_t> have(l.begin() + o[b], l.begin() + o[b + 1]);
    CHECK(have == ref::blt_entropy_patch_lengths(eb, opt));
  }
}

// A batch with the given offsets and an entropy per byte from gen(rng), on
// the host and on the device.
struct EntropyBatch {
  std::vector<std::int32_t> cu;
  std::int64_t n, B;
  std::vector<float> e;
  DeviceBuffer<float> d_e;
  DeviceBuffer<std::int32_t> d_cu;
  template <class Gen>
  EntropyBatch(std::vector<std::int32_t> offsets, std::uint64_t seed, Gen gen)
      : cu(std::move(offsets)), n(cu.back()), B(static_cast<std::int64_t>(cu.size()) - 1), e(fill(n, seed, gen)),
        d_e(e), d_cu(cu) {}
  template <class Gen>
  static std::vector<float> fill(std::int64_t n, std::uint64_t seed, Gen gen) {
    std::vector<float> v(static_cast<std::size_t>(n));
    std::mt19937_64 rng(seed);
    for (auto& x : v) x = gen(rng);
    return v;
  }
};

}  // namespace

TEST_CASE("scale: BLT-1B encoder, d = 1024, 64K bytes in 4 sequences, forward and both backwards") {
  using P = enc::Blt1B;
  using T = __nv_bfloat16;
  constexpr int K = P::tables;
  const std::int64_t V = 20011, n = 65536;
  const int d = 1024;
  const std::vector<std::int32_t> cu = {0, 1000, 17000, 40001, 65536};
  const auto bytes = text_like(n, 1);
  const auto byte_table = tlt::random_values<T>(static_cast<std::size_t>(P::ids::kVocab) * d, 2);
  const auto hash = tlt::random_values<T>(static_cast<std::size_t>(K * V) * d, 3);
  const auto starts = ref::sequence_starts(n, cu, 0);
  DeviceBuffer<std::uint8_t> d_ids(bytes);
  DeviceBuffer<std::int32_t> d_cu(cu);
  DeviceBuffer<T> d_byte(byte_table), d_hash(hash);
  const tokenless::VarlenBatch batch{d_cu.get(), static_cast<std::int64_t>(cu.size()) - 1, n};

  SUBCASE("forward") {
    using Op = enc::HashEmbeddingForward<P, T, std::uint8_t>;
    DeviceBuffer<T> out(static_cast<std::size_t>(n * d));
    out.fill_bytes(0xff);  // NaN: an unwritten element fails the check
    typename Op::Arguments a;
    a.ids = d_ids.get();
    a.batch = batch;
    a.byte_table = d_byte.get();
    for (int t = 0; t < K; ++t) a.hash_tables.table[t] = d_hash.get() + t * V * d;
    a.hash_vocab = V;
    a.d = d;
    a.output = out.get();
    tlt::Testbed<Op>().run_ok(a);
    const auto got = to_floats(out.download());
    typename Op::Tables host;
    for (int t = 0; t < K; ++t) host.table[t] = hash.data() + t * V * d;
    const auto truth = ref::hash_embedding_forward<P, double>(bytes.data(), n, starts, byte_table.data(), host, V, d, 1.0f);
    auto naive = ref::hash_embedding_forward<P, float>(bytes.data(), n, starts, byte_table.data(), host, V, d, 1.0f);
    for (auto& x : naive) x = tokenless::round_trip<T>(x);
    tlt::check_accuracy(got, naive, truth, 1.0, tokenless::dtype_traits<T>::unit_roundoff);
  }

  SUBCASE("backward: atomics and the deterministic path") {
    using Op = enc::HashEmbeddingBackward<P, T, std::uint8_t>;
    const auto g = tlt::random_values<T>(static_cast<std::size_t>(n * d), 4);
    DeviceBuffer<T> d_g(g);
    DeviceBuffer<float> gb(static_cast<std::size_t>(P::ids::kVocab) * d), gt(static_cast<std::size_t>(K * V) * d);
    auto a = tlt::backward_arguments<Op>(d_ids.get(), batch, d_g.get(), gb.get(), gt.get(), V, d);
    std::vector<double> tb;
    std::vector<std::vector<double>> tt;
    std::vector<float> nb;
    std::vector<std::vector<float>> nt;
    ref::hash_embedding_backward<P, double>(bytes.data(), n, starts, g.data(), V, d, 1.0f, tb, tt);
    ref::hash_embedding_backward<P, float>(bytes.data(), n, starts, g.data(), V, d, 1.0f, nb, nt);
    for (int t = 0; t < K; ++t) {
      tb.insert(tb.end(), tt[t].begin(), tt[t].end());
      nb.insert(nb.end(), nt[t].begin(), nt[t].end());
    }
    auto run_once = [&](bool deterministic) {
      a.deterministic = deterministic;
      gb.fill_bytes(0);
      gt.fill_bytes(0);
      tlt::Testbed<Op>().run_ok(a);
      auto b = gb.download();
      auto t = gt.download();
      b.insert(b.end(), t.begin(), t.end());
      return b;
    };
    for (bool deterministic : {false, true}) {
      CAPTURE(deterministic);
      const auto got = run_once(deterministic);
      // Byte rows collect thousands of tokens: the order of fp32 additions
      // differs from the token-order loop, within 2x its error.
      tlt::check_accuracy(got, nb, tb, 2.0, tokenless::dtype_traits<float>::unit_roundoff);
      if (deterministic) CHECK(run_once(true) == got);
    }

    // bf16 gradient tables (deterministic path): fp32 sums rounded once per row.
    using Op16 = enc::HashEmbeddingBackward<P, T, std::uint8_t, __nv_bfloat16>;
    DeviceBuffer<__nv_bfloat16> gb16(static_cast<std::size_t>(P::ids::kVocab) * d), gt16(static_cast<std::size_t>(K * V) * d);
    auto a16 = tlt::backward_arguments<Op16>(d_ids.get(), batch, d_g.get(), gb16.get(), gt16.get(), V, d);
    a16.deterministic = true;
    auto run16 = [&](bool accumulate = true) {
      a16.accumulate = accumulate;
      gb16.fill_bytes(accumulate ? 0 : 0xff);  // a fresh gradient must overwrite the NaNs
      gt16.fill_bytes(accumulate ? 0 : 0xff);
      tlt::Testbed<Op16>().run_ok(a16);
      auto b = to_floats(gb16.download());
      const auto t = to_floats(gt16.download());
      b.insert(b.end(), t.begin(), t.end());
      return b;
    };
    const auto got16 = run16();
    for (auto& x : nb) x = tokenless::round_trip<__nv_bfloat16>(x);
    tlt::check_accuracy(got16, nb, tb, 2.0, tokenless::dtype_traits<__nv_bfloat16>::unit_roundoff);
    CHECK(run16() == got16);
    // A fresh gradient (accumulate = false, what PyTorch gives a .grad of
    // None) equals accumulating into zeros, bit for bit.
    CHECK(run16(false) == got16);

    // The sparse gradient in bf16: each touched row equals that row of the
    // fresh dense gradient (got16), bit for bit, and the rows are exactly
    // those some token gathered.
    using Sparse = enc::HashEmbeddingSparseBackward<P, T, std::uint8_t, __nv_bfloat16>;
    const std::int64_t cap = std::min<std::int64_t>(n, std::max<std::int64_t>(V, P::ids::kVocab));  // always enough
    DeviceBuffer<std::int32_t> counts(K + 1), rows(static_cast<std::size_t>((K + 1) * cap));
    DeviceBuffer<__nv_bfloat16> values(static_cast<std::size_t>((K + 1) * cap * d));
    const typename Sparse::Arguments sa{d_ids.get(), batch,        d_g.get(),  V,          d, 1.0f,
                                        cap,         counts.get(), rows.get(), values.get()};
    tlt::Testbed<Sparse>().run_ok(sa);
    const auto got_counts = counts.download();
    const auto got_rows = rows.download();
    const auto got_values = to_floats(values.download());
    const auto buckets = ref::hash_buckets<P>(bytes.data(), n, starts, V);
    for (int t = 0; t <= K; ++t) {
      CAPTURE(t);
      std::vector<std::int64_t> want(static_cast<std::size_t>(n));
      for (std::int64_t i = 0; i < n; ++i)
        want[static_cast<std::size_t>(i)] = t == 0 ? bytes[static_cast<std::size_t>(i)] + 4 : buckets[t - 1][static_cast<std::size_t>(i)];
      std::sort(want.begin(), want.end());
      want.erase(std::unique(want.begin(), want.end()), want.end());
      REQUIRE(got_counts[static_cast<std::size_t>(t)] == static_cast<std::int32_t>(want.size()));
      const std::int64_t base = t == 0 ? 0 : P::ids::kVocab + (t - 1) * V;  // table t's first row in got16
      std::int64_t mismatches = 0;
      for (std::size_t u = 0; u < want.size(); ++u) {
        const std::int64_t row = got_rows[static_cast<std::size_t>(t * cap) + u];
        if (row != want[u]) ++mismatches;
        for (int c = 0; c < d; ++c) {
          const float x = got_values[(static_cast<std::size_t>(t * cap) + u) * d + c];
          const float y = got16[static_cast<std::size_t>((base + row) * d + c)];
          if (std::memcmp(&x, &y, sizeof x) != 0) ++mismatches;
        }
      }
      CHECK(mismatches == 0);
    }
  }
}

TEST_CASE_TEMPLATE("scale: the patcher over 256K rows of logits in 8 sequences", T, __nv_bfloat16, float) {
  using Op = pt::Patcher<pt::EntropyGlobal, T>;
  const int V = 260;
  const std::vector<std::int32_t> cu = {0, 1, 5000, 70000, 70001, 131072, 200000, 250000, 262144};
  const std::int64_t n = cu.back(), B = static_cast<std::int64_t>(cu.size()) - 1;
  std::vector<T> logits(static_cast<std::size_t>(n * V));
  {
    std::mt19937_64 rng(5);
    std::normal_distribution<float> nrm(0.0f, 1.0f);
    for (std::int64_t r = 0; r < n; ++r) {
      const float temp = 0.5f + static_cast<float>(r % 7);  // entropies spread around the threshold
      for (int v = 0; v < V; ++v) logits[static_cast<std::size_t>(r * V + v)] = tokenless::from_float<T>(nrm(rng) * temp);
    }
  }
  DeviceBuffer<T> d_logits(logits);
  DeviceBuffer<std::int32_t> d_cu(cu);
  DeviceBuffer<float> h(n);
  tlt::PatchBuffers out(n, B, n);
  h.fill_bytes(0xff);
  typename Op::Arguments a;
  a.rule.threshold = 3.0f;
  a.logits = d_logits.get();
  a.vocab = V;
  a.batch = {d_cu.get(), B, n};
  a.entropies = h.get();
  a.patches = out.outputs();
  tlt::Testbed<Op>().run_ok(a);
  const auto got = h.download();
  const auto truth = ref::entropies_from_logits<double>(logits.data(), n, V);
  const auto naive = ref::entropies_from_logits<float>(logits.data(), n, V);
  tlt::check_accuracy(got, naive, truth, 4.0, tokenless::dtype_traits<float>::unit_roundoff);
  ref::BltEntropyOptions opt;
  opt.threshold = 3.0f;
  check_against_blt(out.offsets, out.lengths, cu, got, opt);
}

TEST_CASE("scale: top-k patching over 4M entropies in 5 sequences, with ties, against BLT's rule") {
  using Op = pt::Patcher<pt::EntropyTopK, float>;
  // Quantised: thousands of keys tie on entropy and are ranked by position.
  const EntropyBatch in({0, 7, 1000000, 1000001, 3500000, 4194304}, 6,
                        [](std::mt19937_64& rng) { return static_cast<float>(rng() % 4096) / 1024.0f; });
  const std::int64_t n = in.n, B = in.B;
  tlt::PatchBuffers out(n + B, B, n + B);
  for (int ps : {2, 5}) {
    CAPTURE(ps);
    typename Op::Arguments a;
    a.rule.patch_size = ps;
    a.entropies_in = in.d_e.get();
    a.batch = {in.d_cu.get(), B, n};
    a.include_next_token = true;
    a.patches = out.outputs();
    tlt::Testbed<Op>().run_ok(a);
    ref::BltEntropyOptions opt;
    opt.threshold = std::nullopt;
    opt.patch_size = ps;
    opt.include_next_token = true;
    check_against_blt(out.offsets, out.lengths, in.cu, in.e, opt);
  }
}

TEST_CASE("scale: 12M positions with a cap, across 3,000 tiles and three chunks of the tile scan") {
  // Sparse rule starts and a cap, so patches and cap pieces run through many
  // tiles and the carried rule start crosses the tile scan's chunks.
  using Op = pt::Patcher<pt::EntropyMonotonic, float>;
  const EntropyBatch in({0, 3, 4096, 5000000, 5000001, 12000000}, 8, [](std::mt19937_64& rng) {
    return rng() % 20000 == 0 ? 4.0f : 0.25f * static_cast<float>(rng() % 4);
  });
  const std::int64_t n = in.n, B = in.B;
  tlt::PatchBuffers out(n + B, B, n + B);
  for (const auto& [cap, inc] : {std::pair{0, false}, std::pair{9, true}, std::pair{100000, true}}) {
    {
      CAPTURE(cap);
      CAPTURE(inc);
      typename Op::Arguments a;
      a.rule.threshold = 1.0f;
      a.entropies_in = in.d_e.get();
      a.batch = {in.d_cu.get(), B, n};
      a.include_next_token = inc;
      a.max_patch_length = cap;
      a.patches = out.outputs();
      tlt::Testbed<Op>().run_ok(a);
      ref::BltEntropyOptions opt;
      opt.mode = ref::EntropyMode::monotonic;
      opt.threshold = 1.0f;
      opt.include_next_token = inc;
      opt.max_patch_length = cap;
      check_against_blt(out.offsets, out.lengths, in.cu, in.e, opt);
      // Patch ids step by one exactly at flagged positions.
      const auto f = out.flags.download();
      const auto id = out.ids.download();
      std::int64_t bad = 0;
      for (std::size_t p = 1; p < id.size(); ++p) bad += id[p] - id[p - 1] != f[p];
      CHECK(bad == 0);
    }
  }
}
