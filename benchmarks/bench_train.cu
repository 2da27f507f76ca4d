// The kernels' whole training step (models/llama_train.cuh) on Llama 3.2
// 1B's shape (d 2048, 16 layers, 32 heads of 64 with 8 KV heads, FFN 8192,
// vocab 128,256, the head tied to the embedding; 1.24B parameters), random
// weights (normal-ish, std 0.02), bf16 storage with fp32 gradients, moments
// and masters: a step is A = 1 micro-batch of B × L tokens through the
// forward, the backward and AdamW with clipping, its losses read back (as a
// trainer does each step).
//
// FLOPs a step: 3 × the forward's matrix products (the backward does two
// for each of the forward's: dX and dW) — 2 × tokens × (the 16 layers'
// projections + the head) — plus the causal attention's, QKᵀ and PV over
// half of an L × L square a head, 3.5 × the forward's (the backward
// recomputes the probabilities). The figure is the fraction of the measured
// bf16 GEMM peak (MFU). Checked once: the first step's loss is about
// ln(vocab), as a model of near-zero logits gives, and its norm is finite.
// Side by side: benchmarks/torch/train_eager.py (transformers'
// LlamaForCausalLM, autocast bf16 over fp32 weights, fused AdamW; eager and
// torch.compile).
#include "harness.cuh"

#include <tokenless/io/model_config.hpp>
#include <tokenless/io/model_weights.hpp>
#include <tokenless/models/llama_train.cuh>

#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

namespace {

namespace io = tokenless::io;
namespace models = tokenless::models;
using Trainer = models::LlamaTrainer<__nv_bfloat16, tokenless::attention::HeadDims<64>>;

io::ModelConfig llama_1b() {
  io::ModelConfig c;
  c.family = io::Family::kLlama;
  c.vocab = 128256;
  c.hidden = 2048;
  c.layers = 16;
  c.heads = 32;
  c.kv_heads = 8;
  c.head_dim = 64;
  c.rot_dim = 64;
  c.intermediate = 8192;
  c.rms_eps = 1e-5f;
  c.rope.theta = 500000.0f;
  c.rope.type = tokenless::blocks::RopeType::kLlama3;
  c.rope.factor = 32.0f;
  c.rope.original_max_position = 8192.0f;
  c.tie_embeddings = true;
  c.max_positions = 131072;
  return c;
}

// Random weights on the host: a hash of the index, uniform with std 0.02
// (the norms 1), never zeros.
io::ModelWeights<float> random_weights(const io::ModelConfig& c) {
  io::ModelWeights<float> w = io::allocate_weights(c);
  std::uint64_t seed = 1;
  auto fill = [&](std::vector<float>& v, bool norm) {
    if (norm) {
      std::fill(v.begin(), v.end(), 1.0f);
      return;
    }
    std::uint64_t s = seed++ * 0x9E3779B97F4A7C15ull;
    for (auto& x : v) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      x = (static_cast<float>(s >> 40) * (1.0f / 16777216.0f) - 0.5f) * 0.0693f;  // std 0.02
    }
  };
  fill(w.embed, false);
  fill(w.norm, true);
  for (auto& l : w.layers) {
    fill(l.attn_norm, true);
    fill(l.mlp_norm, true);
    fill(l.wqkv, false);
    fill(l.wo, false);
    fill(l.w_gate_up, false);
    fill(l.w_down, false);
  }
  w.lm_head = w.embed;
  return w;
}

double step_flops(const io::ModelConfig& c, std::int64_t B, std::int64_t L) {
  const double d = c.hidden, T = static_cast<double>(B * L);
  const double layer = d * c.qkv_dim() + double(c.q_dim()) * d + 3.0 * d * c.intermediate;
  const double forward = 2.0 * T * (c.layers * layer + double(c.vocab) * d);
  const double attention = c.layers * 2.0 * 2.0 * B * (double(L) * L / 2) * c.q_dim();  // QKᵀ and PV, causal
  return 3.0 * forward + 3.5 * attention;
}

void BM_LlamaTrainStep(benchmark::State& state) {
  const int B = static_cast<int>(state.range(0)), L = static_cast<int>(state.range(1));
  const io::ModelConfig c = llama_1b();
  static const io::ModelWeights<float> w = random_weights(c);
  std::unique_ptr<Trainer> t;
  if (auto s = Trainer::create(w, B, L, 1, &t); !s) return state.SkipWithError(s.message());
  std::vector<std::int32_t> data(static_cast<std::size_t>(B) * L * 64 + 1);
  std::uint32_t h = 7;
  for (auto& id : data) {
    h = h * 1664525u + 1013904223u;
    id = static_cast<std::int32_t>((h >> 8) % static_cast<std::uint32_t>(c.vocab));
  }
  tokenless::optim::AdamWHyper hyper;
  hyper.lr = 3e-4;
  hyper.beta2 = 0.95;
  hyper.weight_decay = 0.1;
  hyper.max_norm = 1.0;
  {  // checked once
    models::TrainStep r;
    if (auto s = t->step(data, 0, hyper, &r); !s) return state.SkipWithError(s.message());
    if (!(std::fabs(r.loss - std::log(double(c.vocab))) < 0.5) || !std::isfinite(r.grad_norm) || r.skipped) {
      return state.SkipWithError("the first step's loss is not about ln(vocab), or its norm is not finite");
    }
  }
  std::int64_t s = 1;
  const double sec = tlb::time_iterations(state, [&] { (void)t->step(data, s++, hyper, nullptr); });
  // Bytes: the weights read by the forward and twice by the backward, the
  // optimizer's 30 an element (bench_optim.cu); activations not counted.
  std::int64_t params = 0;
  io::ModelWeights<float> shapes = io::allocate_weights(c);
  models::for_each_trained(shapes, [&](std::vector<float>& x, int) { params += static_cast<std::int64_t>(x.size()); });
  tlb::report(state, sec, (3.0 * 2 + 30.0) * static_cast<double>(params), step_flops(c, B, L));
  state.counters["tokens_per_s"] = sec > 0 ? double(B) * L / sec : 0.0;
  state.counters["device_bytes"] = static_cast<double>(t->device_bytes());
}

}  // namespace

BENCHMARK(BM_LlamaTrainStep)->Args({8, 1024})->Args({4, 2048})->Iterations(10)->UseManualTime()->Unit(
    benchmark::kMillisecond);

int main(int argc, char** argv) { return tlb::run_main(argc, argv, "bench_train.json"); }
