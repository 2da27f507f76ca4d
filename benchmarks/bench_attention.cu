// Attention core benchmarks, the shapes issue 11 sets targets on:
//   * causal, head dims 128 and 64, S 1K-16K (16K tokens a batch), forward
//     and backward: fraction of the measured bf16 GEMM peak (targets: forward
//     >= 50%, backward >= 35%, faster than SDPA's flash backend);
//   * BLT-1B cross-attention, 8K-64K bytes, mean patch 4.5, k = 2, 16 heads
//     of 64, encoder (slots -> bytes) and decoder (bytes -> slots): memory-
//     bound, fraction of copy bandwidth (target >= 70%, and >= 5x
//     FlexAttention with create_block_mask);
//   * DLCM-like token -> concept, head dim 128, 8K-32K tokens, mean segment
//     4 (target >= 1.5x FlexAttention);
//   * decode at batch 1 with a 4K-32K cache (32 heads over 8 KV heads of
//     128): fraction of copy bandwidth over the cache (target >= 80%).
// FLOPs count the visible pairs only (causal: half the square), as
// FlashAttention reports them; the backward counts 2.5x the forward.
// Side by side: benchmarks/torch/attention_sdpa.py.
#include "harness.cuh"

#include <random>

namespace at = tokenless::attention;

namespace {

using B16 = __nv_bfloat16;

// Patch lengths with mean ~4.5 (1..8 uniform), as the patcher gives them.
struct Patches {
  std::vector<std::int32_t> offsets, starts, lengths;
  std::int64_t count = 0;
  Patches(std::int64_t bytes_per_seq, int seqs, std::uint32_t seed) {
    std::mt19937 rng(seed);
    offsets.push_back(0);
    for (int b = 0; b < seqs; ++b) {
      for (std::int64_t pos = 0; pos < bytes_per_seq;) {
        const std::int64_t len = std::min<std::int64_t>(bytes_per_seq - pos, 1 + rng() % 8);
        starts.push_back(static_cast<std::int32_t>(pos));
        lengths.push_back(static_cast<std::int32_t>(len));
        pos += len;
      }
      offsets.push_back(static_cast<std::int32_t>(starts.size()));
    }
    count = static_cast<std::int64_t>(starts.size());
  }
};

template <class T>
tlb::DeviceArray<T> upload(const std::vector<T>& h) {
  tlb::DeviceArray<T> d(h.size());
  TLB_CHECK_CUDA(cudaMemcpy(d.p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

// One forward (and optionally backward) of variant V on random q, k, v.
template <class V>
void run(benchmark::State& state, std::int64_t tq, std::int64_t tk, const tokenless::VarlenBatch& qb,
         const tokenless::VarlenBatch& kb, int heads, int kv_heads, int d, const typename V::Params& vp,
         bool backward, double visible_pairs) {
  tlb::DeviceArray<B16> q(tq * heads * d), k(tk * kv_heads * d), v(tk * kv_heads * d), o(tq * heads * d),
      go(tq * heads * d), gq(tq * heads * d), gk(tk * kv_heads * d), gv(tk * kv_heads * d);
  tlb::DeviceArray<float> lse(tq * heads);
  tlb::fill_random(q.p, q.n, 1);
  tlb::fill_random(k.p, k.n, 2);
  tlb::fill_random(v.p, v.n, 3);
  tlb::fill_random(go.p, go.n, 4);
  using Fwd = at::Forward<V, B16>;
  const typename Fwd::Arguments a{.q = q.p, .k = k.p, .v = v.p, .q_batch = qb, .k_batch = kb, .heads = heads,
                                  .kv_heads = kv_heads, .head_dim = d, .variant = vp, .out = o.p, .lse = lse.p};
  using Bwd = at::Backward<V, B16>;
  const typename Bwd::Arguments g{.q = q.p, .k = k.p, .v = v.p, .out = o.p, .grad_out = go.p, .lse = lse.p,
                                  .q_batch = qb, .k_batch = kb, .heads = heads, .kv_heads = kv_heads, .head_dim = d,
                                  .variant = vp, .grad_q = gq.p, .grad_k = gk.p, .grad_v = gv.p};
  const std::size_t ws_bytes = std::max(Fwd::workspace_size(a), Bwd::workspace_size(g));
  tlb::DeviceArray<unsigned char> ws(ws_bytes);
  const tokenless::Workspace w{ws.p, ws_bytes};
  // Check once: both run, no device-side failure, and the outputs are finite.
  if (auto s = Fwd::run(a, w); !s) return state.SkipWithError(s.message());
  if (auto s = Fwd::read_status(a, w); !s) return state.SkipWithError(s.message());
  if (backward) {
    if (auto s = Bwd::run(g, w); !s) return state.SkipWithError(s.message());
    if (auto s = Bwd::read_status(g, w); !s) return state.SkipWithError(s.message());
  }
  {
    std::vector<B16> h(std::min<std::size_t>(o.n, 1 << 20));
    TLB_CHECK_CUDA(cudaMemcpy(h.data(), (backward ? gq.p : o.p), h.size() * 2, cudaMemcpyDeviceToHost));
    for (B16 x : h) {
      if (!std::isfinite(tokenless::to_float(x))) return state.SkipWithError("non-finite output");
    }
  }
  const double fwd_flops = 4.0 * visible_pairs * heads * d;
  const double io = 2.0 * static_cast<double>(q.n + k.n + v.n + o.n) + 4.0 * static_cast<double>(lse.n);
  if (!backward) {
    const double t = tlb::time_iterations(state, [&] { (void)Fwd::run(a, w); });
    tlb::report(state, t, io, fwd_flops);
  } else {
    const double t = tlb::time_iterations(state, [&] { (void)Bwd::run(g, w); });
    tlb::report(state, t, 2.0 * io + 2.0 * static_cast<double>(q.n + k.n + v.n), 2.5 * fwd_flops);
  }
}

// Causal over 16K tokens a batch: B = 16K / S sequences of S.
void BM_Causal(benchmark::State& state, int d, bool backward) {
  const std::int64_t S = state.range(0), B = std::max<std::int64_t>(1, 16384 / S), heads = 2048 / d;
  const auto batch = tokenless::VarlenBatch::uniform(B, S);
  run<at::Causal>(state, B * S, B * S, batch, batch, static_cast<int>(heads), static_cast<int>(heads), d, {},
                  backward, static_cast<double>(B) * S * (S + 1) / 2.0);
}

// BLT-1B cross-attention: 16 heads of 64, k = 2, 4 sequences of N / 4 bytes.
void BM_BltCross(benchmark::State& state, bool encoder) {
  const std::int64_t n = state.range(0), seqs = 4, k = 2;
  Patches ps(n / seqs, static_cast<int>(seqs), 7);
  auto offsets = upload(ps.offsets), starts = upload(ps.starts), lengths = upload(ps.lengths);
  std::vector<std::int32_t> cu_bytes(seqs + 1), cu_slots(seqs + 1);
  for (std::int64_t b = 0; b <= seqs; ++b) {
    cu_bytes[b] = static_cast<std::int32_t>(b * (n / seqs));
    cu_slots[b] = ps.offsets[b] * static_cast<std::int32_t>(k);
  }
  auto d_bytes = upload(cu_bytes), d_slots = upload(cu_slots);
  const auto bytes = tokenless::VarlenBatch::packed(d_bytes.p, seqs, n);
  const auto slots = tokenless::VarlenBatch::packed(d_slots.p, seqs, ps.count * k);
  const at::Patches p{offsets.p, starts.p, lengths.p, nullptr};
  // Visible pairs: each slot sees its patch's bytes; each byte sees k slots.
  const double pairs = static_cast<double>(n) * k;
  if (encoder) {
    run<at::PatchesToBytes>(state, ps.count * k, n, slots, bytes, 16, 16, 64, {p, static_cast<int>(k), 1}, false, pairs);
  } else {
    run<at::BytesToPatches>(state, n, ps.count * k, bytes, slots, 16, 16, 64, {p, static_cast<int>(k), 1}, false,
                            pairs);
  }
}

// DLCM-like: tokens attend to the concepts that started at or before them.
void BM_Dlcm(benchmark::State& state) {
  const std::int64_t n = state.range(0), seqs = 1;
  Patches ps(n, 1, 9);  // mean segment 4.5
  auto offsets = upload(ps.offsets), starts = upload(ps.starts), lengths = upload(ps.lengths);
  std::vector<std::int32_t> cu_tokens = {0, static_cast<std::int32_t>(n)},
                            cu_concepts = {0, static_cast<std::int32_t>(ps.count)};
  auto d_tok = upload(cu_tokens), d_con = upload(cu_concepts);
  const double pairs = static_cast<double>(n) * static_cast<double>(ps.count) / 2.0;
  run<at::TokensToConcepts>(state, n, ps.count, tokenless::VarlenBatch::packed(d_tok.p, seqs, n),
                            tokenless::VarlenBatch::packed(d_con.p, seqs, ps.count), 16, 16, 128,
                            {{offsets.p, starts.p, lengths.p, nullptr}, at::ConceptVisibility::started}, false, pairs);
}

// Decode at batch 1: one new query, 32 heads over 8 KV heads of 128 (Llama
// 3 8B's attention), a cache of S tokens. Memory-bound: the bytes are the
// cache's K and V rows read once (target >= 80% of copy bandwidth).
void BM_Decode(benchmark::State& state) {
  const std::int64_t S = state.range(0), H = 32, Hk = 8, D = 128;
  tlb::DeviceArray<B16> q(H * D), kc(S * Hk * D), vc(S * Hk * D), o(H * D);
  tlb::fill_random(q.p, q.n, 1);
  tlb::fill_random(kc.p, kc.n, 2);
  tlb::fill_random(vc.p, vc.n, 3);
  auto len = upload(std::vector<std::int32_t>{static_cast<std::int32_t>(S)});
  using Op = at::Decode<at::Causal, B16>;
  const Op::Arguments a{.q = q.p, .q_batch = tokenless::VarlenBatch::uniform(1, 1), .k_cache = kc.p, .v_cache = vc.p,
                        .cache_len = len.p, .capacity = S, .heads = H, .kv_heads = Hk, .head_dim = D,
                        .max_queries = 1, .out = o.p};
  tlb::DeviceArray<unsigned char> ws(Op::workspace_size(a));
  const tokenless::Workspace w{ws.p, ws.n};
  if (auto s = Op::run(a, w); !s) return state.SkipWithError(s.message());
  if (auto s = Op::read_status(a, w); !s) return state.SkipWithError(s.message());
  const double t = tlb::time_iterations(state, [&] { (void)Op::run(a, w); });
  tlb::report(state, t, 2.0 * 2.0 * static_cast<double>(S * Hk * D), 4.0 * static_cast<double>(S * H * D));
  state.counters["splits"] = Op::plan(a).splits;
}

}  // namespace

int main(int argc, char** argv) {
  auto seq = [](benchmark::internal::Benchmark* b, std::int64_t lo, std::int64_t hi) {
    for (std::int64_t s = lo; s <= hi; s *= 2) b->Arg(s);
    b->UseManualTime()->Unit(benchmark::kMicrosecond);
  };
  for (int d : {128, 64}) {
    const std::string hd = std::to_string(d);
    seq(benchmark::RegisterBenchmark(("attention_causal_fwd/hd" + hd).c_str(), BM_Causal, d, false), 1024, 16384);
    seq(benchmark::RegisterBenchmark(("attention_causal_bwd/hd" + hd).c_str(), BM_Causal, d, true), 1024, 16384);
  }
  seq(benchmark::RegisterBenchmark("attention_blt_encoder_cross/blt1b", BM_BltCross, true), 8192, 65536);
  seq(benchmark::RegisterBenchmark("attention_blt_decoder_cross/blt1b", BM_BltCross, false), 8192, 65536);
  seq(benchmark::RegisterBenchmark("attention_dlcm_token_to_concept/hd128", BM_Dlcm), 8192, 32768);
  seq(benchmark::RegisterBenchmark("attention_decode/llama3_8b_batch1", BM_Decode), 4096, 32768);
  return tlb::run_main(argc, argv, "tokenless_bench_attention.json");
}
