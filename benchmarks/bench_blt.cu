// Assembled BLT on the kernels (models/blt.cuh), bf16, BLT-1B's shape with
// random weights (transformers' BltConfig defaults: entropy model 14 layers
// of d 768; local encoder 1 layer and decoder 9 layers of d 1024, heads of
// 64; global 25 layers of d 2048, heads of 128; k 2; n-grams 3–8 with one
// hash function; the encoder's FFN 2730, which the kernels pad to 2736 with
// zeros), with one change: the hash tables hold 50,002 rows (a byte
// gathers 6 rows whatever their count; 500,002 would add 5.6 GB). The
// threshold is set so that patches of about 4.5 bytes form on text-like
// bytes, as BLT's are.
//   * BM_BltPrefill/n: a prompt of n bytes through every model, the caches
//     filled: bytes/s and patches;
//   * BM_BltDecode/1024: a cached step a byte after a 1024-byte prompt (the
//     local models' rows, and at a patch boundary one global step): bytes/s,
//     and the global steps' share of the time (the steps with a global step
//     against those without).
// The second argument is the batch: B prompts as one varlen batch (a
// prefill of B n bytes; a step of B bytes, one a stream, with one global step
// over every stream's completed patches); bytes/s count all of them.
// Each checks its result once: the cached step's logits equal the uncached
// forward's last row within bf16's tolerance, the logits are finite.
// Side by side: benchmarks/torch/blt_eager.py (transformers' BltForCausalLM
// on the same shape: its forward, its uncached and cached generation).
#include "harness.cuh"

#include <tokenless/models/blt.cuh>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace {

namespace io = tokenless::io;
namespace models = tokenless::models;
using B16 = __nv_bfloat16;
using Model = models::BltModel<B16, models::BltEncoder1B, tokenless::attention::HeadDims<64, 128>>;

constexpr std::int64_t kMaxBytes = 4096 + 512;      // batch 1
constexpr std::int64_t kMaxBatchBytes = 1024 + 512;  // batch 16: 1024-byte prompts

io::BltStackConfig stack(int d, int heads, int layers, int ffn, int window, float theta) {
  io::BltStackConfig s;
  s.hidden = d;
  s.heads = s.kv_heads = heads;
  s.head_dim = d / heads;
  s.layers = layers;
  s.intermediate = ffn;
  s.window = window;
  s.rope.theta = theta;
  s.max_positions = 0;
  return s;
}

io::BltConfig blt1b() {
  io::BltConfig c;
  c.patcher = stack(768, 12, 14, 2048, 512, 1e4f);
  c.encoder = stack(1024, 16, 1, 2730, 512, 5e5f);
  c.global = stack(2048, 16, 25, 5632, 0, 5e5f);
  c.decoder = stack(1024, 16, 9, 2816, 0, 5e5f);
  c.k = 2;
  c.threshold = 1.335442066192627f;
  c.ngrams = {3, 4, 5, 6, 7, 8};
  c.hash_functions = 1;
  c.hash_vocab = 50002;
  c.encoder_cross_all = false;
  c.decoder_cross_all = true;
  c.global_projection = false;  // k · 1024 = 2048
  return c;
}

// Uniform in [-scale/2, scale/2) (a trained model's magnitudes: 1/sqrt(d)), fast.
void fill(std::vector<float>& v, std::size_t n, std::uint64_t seed, float scale) {
  v.resize(n);
  std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (auto& e : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    e = (static_cast<float>(x >> 40) * (1.0f / 16777216.0f) - 0.5f) * scale;
  }
}

io::BltWeights<float> random_weights(const io::BltConfig& c) {
  io::BltWeights<float> w;
  w.config = c;
  std::uint64_t seed = 1;
  auto mat = [&](std::vector<float>& v, std::int64_t rows, std::int64_t cols) {
    fill(v, static_cast<std::size_t>(rows * cols), seed++, 2.0f / std::sqrt(static_cast<float>(cols)));
  };
  auto norm = [&](std::vector<float>& v, int d) { v.assign(static_cast<std::size_t>(d), 1.0f); };
  auto layers = [&](const io::BltStackConfig& s, std::vector<io::BltLayerWeights<float>>& out) {
    out.resize(static_cast<std::size_t>(s.layers));
    for (auto& l : out) {
      norm(l.attn_norm, s.hidden);
      mat(l.wqkv, s.qkv_dim(), s.hidden);
      mat(l.wo, s.hidden, s.q_dim());
      norm(l.mlp_norm, s.hidden);
      mat(l.w_gate_up, 2 * s.intermediate, s.hidden);
      mat(l.w_down, s.hidden, s.intermediate);
    }
  };
  auto cross = [&](const io::BltStackConfig& s, io::BltCrossWeights<float>& x) {
    norm(x.q_norm, s.hidden);
    norm(x.kv_norm, s.hidden);
    mat(x.wq, s.q_dim(), s.hidden);
    mat(x.wkv, 2 * s.kv_dim(), s.hidden);
    mat(x.wo, s.hidden, s.q_dim());
  };
  const int V = c.vocab, Dp = c.patcher.hidden, De = c.encoder.hidden, Dg = c.global.hidden, Dd = c.decoder.hidden;
  fill(w.patcher_embed, static_cast<std::size_t>(V) * Dp, seed++, 1.0f);
  norm(w.patcher_norm, Dp);
  mat(w.patcher_head, V, Dp);
  layers(c.patcher, w.patcher_layers);
  fill(w.byte_embed, static_cast<std::size_t>(V) * De, seed++, 1.0f);
  fill(w.hash_embed, static_cast<std::size_t>(c.tables()) * c.hash_vocab * De, seed++, 0.2f);
  mat(w.encoder_projection, std::int64_t{c.k} * De, De);
  layers(c.encoder, w.encoder_layers);
  w.encoder_cross.resize(1);
  cross(c.encoder, w.encoder_cross[0]);
  layers(c.global, w.global_layers);
  mat(w.decoder_projection, std::int64_t{c.k} * Dd, Dg);
  layers(c.decoder, w.decoder_layers);
  w.decoder_cross.resize(static_cast<std::size_t>(c.decoder.layers));
  for (auto& x : w.decoder_cross) cross(c.decoder, x);
  norm(w.decoder_norm, Dd);
  mat(w.lm_head, V, Dd);
  return w;
}

// Parameters a stack's step reads (its layers' matrices).
double stack_params(const io::BltStackConfig& s) {
  return static_cast<double>(s.layers) *
         (double(s.qkv_dim()) * s.hidden + double(s.hidden) * s.q_dim() + 3.0 * s.intermediate * s.hidden);
}
// A byte's local parameters (entropy model with its head, encoder, decoder
// with its cross-attentions and head) and a patch's global ones.
double local_params(const io::BltConfig& c) {
  const auto& d = c.decoder;
  const double cross = (double(d.q_dim()) + 2.0 * d.kv_dim() + d.q_dim()) * d.hidden;
  return stack_params(c.patcher) + 260.0 * c.patcher.hidden + stack_params(c.encoder) + stack_params(d) +
         d.layers * cross + 260.0 * d.hidden;
}
double global_params(const io::BltConfig& c) {
  const auto& e = c.encoder;
  const double slots = double(c.k) * e.hidden * e.hidden + (2.0 * e.q_dim() + 2.0 * e.kv_dim()) * e.hidden;
  return stack_params(c.global) + slots + double(c.k) * c.decoder.hidden * c.global.hidden;
}

// Text-like bytes (the CPU side by side's), BOS first, as BLT ids.
std::vector<std::int32_t> text_ids(std::int64_t n) {
  const std::string t =
      "Byte-level models read raw bytes. A patcher groups them into patches where the next byte is hard "
      "to predict, and a large global transformer runs once a patch, so compute follows information. ";
  std::vector<std::int32_t> ids{1};
  for (std::int64_t i = 1; i < n; ++i) ids.push_back(static_cast<unsigned char>(t[static_cast<std::size_t>(i - 1) % t.size()]) + 4);
  return ids;
}

// The models (batch 1, and 16 of shorter sequences), made once on the same
// weights; the threshold set for patches of about 4.5 bytes.
Model* model(benchmark::State& state, std::int64_t batch) {
  static std::unique_ptr<Model> one, many;
  static std::string error;
  static bool tried = false;
  if (!tried) {
    tried = true;
    const io::BltWeights<float> w = random_weights(blt1b());
    if (auto s = Model::create(w, kMaxBytes, &one); !s) {
      error = s.message();
    } else if (auto s1 = Model::create(w, kMaxBatchBytes, &many, 16); !s1) {
      error = s1.message();
      one.reset();
    } else if (auto s2 = one->forward(text_ids(4096)); !s2) {
      error = s2.message();
      one.reset();
    } else {
      std::vector<float> h;
      (void)one->entropies(h);
      std::sort(h.begin() + 1, h.end());
      const float threshold = h[static_cast<std::size_t>(static_cast<double>(h.size()) * (1.0 - 1.0 / 4.5))];
      (void)one->set_threshold(threshold);
      (void)many->set_threshold(threshold);
    }
  }
  Model* m = batch == 1 ? one.get() : batch == 16 && one ? many.get() : nullptr;
  if (!m) state.SkipWithError(error.empty() ? "batch 1 or 16" : error.c_str());
  return m;
}

// B prompts of n bytes each (the same text at B offsets).
std::vector<std::vector<std::int32_t>> prompts(std::int64_t n, std::int64_t batch) {
  std::vector<std::vector<std::int32_t>> p;
  for (std::int64_t b = 0; b < batch; ++b) {
    auto ids = text_ids(n + 37 * b);
    ids.erase(ids.begin() + 1, ids.begin() + 1 + 37 * b);
    p.push_back(std::move(ids));
  }
  return p;
}
std::int64_t all_patches(const Model* m) {
  std::int64_t p = 0;
  for (std::int64_t b = 0; b < m->batch(); ++b) p += m->patches(b);
  return p;
}
std::int64_t all_global_steps(const Model* m) {
  std::int64_t p = 0;
  for (std::int64_t b = 0; b < m->batch(); ++b) p += m->global_steps(b);
  return p;
}

void BM_BltPrefill(benchmark::State& state) {
  const std::int64_t n = state.range(0), B = state.range(1);
  Model* m = model(state, B);
  if (!m) return;
  const auto ids = prompts(n, B);
  if (auto s = m->prefill(ids); !s) return state.SkipWithError(s.message());
  {  // checked once: finite logits
    std::vector<float> logits;
    (void)m->logits(logits);
    for (float v : logits) {
      if (!std::isfinite(v)) return state.SkipWithError("the prefill's logits are not finite");
    }
  }
  const double sec = tlb::time_iterations(state, [&] { (void)m->prefill(ids); });
  // FLOPs: 2 a parameter a byte (local) or a patch (global), attention left out (windows of 512).
  const io::BltConfig& c = m->config();
  const double flops = 2.0 * (local_params(c) * double(n * B) + global_params(c) * double(all_patches(m)));
  tlb::report(state, sec, 2.0 * (local_params(c) + global_params(c)), flops);
  state.counters["bytes_per_s"] = sec > 0 ? static_cast<double>(n * B) / sec : 0.0;
  state.counters["patches"] = static_cast<double>(all_patches(m));
}

void BM_BltDecode(benchmark::State& state) {
  const std::int64_t ctx = state.range(0), B = state.range(1);
  Model* m = model(state, B);
  if (!m) return;
  auto seqs = prompts(ctx, B);
  if (auto s = m->prefill(seqs); !s) return state.SkipWithError(s.message());
  std::vector<std::int32_t> next;
  {  // checked once: a cached step's logits are the uncached forward's last rows
    (void)m->next(next);
    if (auto s = m->step(next); !s) return state.SkipWithError(s.message());
    std::vector<float> step, whole;
    for (std::int64_t b = 0; b < B; ++b) seqs[b].push_back(next[b]);
    std::vector<std::vector<float>> rows(static_cast<std::size_t>(B));
    for (std::int64_t b = 0; b < B; ++b) (void)m->logits(b, rows[b]);
    (void)m->forward(seqs);
    double err = 0, scale = 0;
    for (std::int64_t b = 0; b < B; ++b) {
      (void)m->logits(b, whole);
      for (int v = 0; v < 260; ++v) {
        err = std::max(err, std::fabs(double(rows[b][v]) - whole[whole.size() - 260 + v]));
        scale = std::max(scale, std::fabs(double(whole[whole.size() - 260 + v])));
      }
    }
    if (!(err <= 8 * std::ldexp(1.0, -8) * scale + 1e-3)) return state.SkipWithError("a cached step differs from the rerun");
    for (auto& q : seqs) q.pop_back();
    if (auto s = m->prefill(seqs); !s) return state.SkipWithError(s.message());
  }
  const std::int64_t cap = B == 1 ? kMaxBytes : kMaxBatchBytes;
  double with = 0, without = 0;
  std::int64_t n_with = 0, n_without = 0, global = 0;
  (void)m->next(next);
  for (auto _ : state) {
    if (m->length() + 1 > cap) {
      state.PauseTiming();
      (void)m->prefill(seqs);
      (void)m->next(next);
      state.ResumeTiming();
    }
    const std::int64_t g0 = all_global_steps(m);
    const auto t0 = std::chrono::steady_clock::now();
    (void)m->step(next);
    (void)m->next(next);  // synchronises: the bytes a user reads
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.SetIterationTime(s);
    global += all_global_steps(m) - g0;
    if (all_global_steps(m) > g0) with += s, ++n_with;
    else without += s, ++n_without;
  }
  const double total = with + without, steps = static_cast<double>(n_with + n_without);
  // The global's share: the steps with a global step against those without
  // (batch 16 has one nearly every step: its share is not separable so).
  const double extra = n_with && n_without ? (with / n_with - without / n_without) * n_with : 0.0;
  // Bytes: the weights a step reads (bf16), the global's once a step that has one; the caches' reads left out.
  const io::BltConfig& c = m->config();
  const double per_step = 2.0 * (local_params(c) + (steps > 0 ? n_with / steps : 0.0) * global_params(c));
  tlb::report(state, steps > 0 ? total / steps : 0.0, per_step, 0);
  state.counters["bytes_per_s"] = total > 0 ? steps * double(B) / total : 0.0;
  state.counters["patches_per_byte"] = steps > 0 ? double(global) / (steps * double(B)) : 0.0;
  state.counters["global_share"] = total > 0 ? extra / total : 0.0;
}

}  // namespace

BENCHMARK(BM_BltPrefill)->Args({1024, 1})->Args({4096, 1})->Args({1024, 16})->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BltDecode)->Args({1024, 1})->Args({1024, 16})->Iterations(256)->UseManualTime()->Unit(benchmark::kMicrosecond);

int main(int argc, char** argv) { return tlb::run_main(argc, argv, "bench_blt.json"); }
