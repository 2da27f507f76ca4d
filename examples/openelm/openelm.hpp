#pragma once
// Building a model with OpenELM's layer-wise scaling from the library's
// decoder layers: blocks::openelm_layers() gives each layer its head count
// and FFN width, and each layer is a blocks::DecoderLayer of its own shape,
// with random weights. The example prefills a prompt, decodes a few tokens
// with the KV cache, and checks that every decoded step's hidden state
// equals the last row of a prefill of the same tokens.
//
//   openelm [PRESET]   PRESET: OpenELM-270M, -450M, -1_1B, -3B (on a GPU);
//                      default: a 4-layer OpenELM-shaped toy (d 256, heads of 64)
#include <tokenless/blocks/decoder.cuh>
#include <tokenless/blocks/openelm.hpp>
#include <tokenless/core/device_buffer.cuh>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace openelm_example {

namespace bk = tokenless::blocks;
using T = __nv_bfloat16;
using Layer = bk::DecoderLayer<T>;
template <class U>
using Buf = tokenless::DeviceBuffer<U>;

#define ELM_TRY(expr)                                              \
  do {                                                             \
    const tokenless::Status s_ = (expr);                           \
    if (!s_) {                                                     \
      std::fprintf(stderr, "openelm: %s\n", s_.message());         \
      return 1;                                                    \
    }                                                              \
  } while (0)

inline std::vector<T> random_bf16(std::size_t n, std::uint32_t seed, float scale, float offset = 0.0f) {
  std::vector<T> v(n);
  std::uint32_t x = seed * 2654435761u + 1u;
  for (auto& e : v) {
    x = x * 1664525u + 1013904223u;
    e = tokenless::from_float<T>(offset + scale * (static_cast<float>(x >> 8) * (1.0f / 16777216.0f) - 0.5f));
  }
  return v;
}

struct LayerBuffers {
  Buf<T> attn_norm, wqkv, wo, mlp_norm, gate_up, down, k_cache, v_cache;
};

inline tokenless::Status upload(Buf<T>& b, const std::vector<T>& h) {
  TL_RETURN_IF_ERROR(b.allocate(h.size()));
  return b.upload(h);
}

inline int main(int argc, char** argv) {
  bk::OpenElmConfig c{4, 256, 64, 2, {0.5, 1.0}, {0.5, 4.0}};
  if (argc > 1 && !bk::OpenElmConfig::preset(argv[1], &c)) {
    std::fprintf(stderr, "openelm: unknown preset '%s' (OpenELM-270M, -450M, -1_1B, -3B)\n", argv[1]);
    return 2;
  }
  std::vector<bk::DecoderShape> shapes;
  ELM_TRY(bk::openelm_layers(c, &shapes));
  std::printf("%s: %d layers, d %d\nlayer  heads  kv  ffn\n", argc > 1 ? argv[1] : "OpenELM-shaped toy", c.layers,
              c.model_dim);
  for (std::size_t l = 0; l < shapes.size(); ++l) {
    std::printf("%5zu  %5d  %2d  %d\n", l, shapes[l].heads, shapes[l].kv_heads, shapes[l].ffn);
  }

  const std::int64_t prompt = 12, steps = 3, capacity = prompt + steps + 1, d = c.model_dim;
  tokenless::blas::LtHandle handle;
  ELM_TRY(tokenless::blas::LtHandle::create(handle));
  std::vector<LayerBuffers> layers(shapes.size());
  for (std::size_t l = 0; l < shapes.size(); ++l) {
    const bk::DecoderShape& s = shapes[l];
    const float w = 1.0f / std::sqrt(static_cast<float>(d));
    const auto seed = static_cast<std::uint32_t>(10 * l);
    ELM_TRY(upload(layers[l].attn_norm, random_bf16(d, seed + 1, 0.2f, 1.0f)));
    ELM_TRY(upload(layers[l].wqkv, random_bf16(s.qkv_dim() * d, seed + 2, 2 * w)));
    ELM_TRY(upload(layers[l].wo, random_bf16(d * s.q_dim(), seed + 3, 2 * w)));
    ELM_TRY(upload(layers[l].mlp_norm, random_bf16(d, seed + 4, 0.2f, 1.0f)));
    ELM_TRY(upload(layers[l].gate_up, random_bf16(2 * std::int64_t{s.ffn} * d, seed + 5, 2 * w)));
    ELM_TRY(upload(layers[l].down, random_bf16(d * s.ffn, seed + 6, 2.0f / std::sqrt(static_cast<float>(s.ffn)))));
    ELM_TRY(layers[l].k_cache.allocate(static_cast<std::size_t>(capacity * s.kv_dim())));
    ELM_TRY(layers[l].v_cache.allocate(static_cast<std::size_t>(capacity * s.kv_dim())));
  }
  std::vector<float> inv_freq(static_cast<std::size_t>(c.head_dim / 2));
  ELM_TRY(bk::rope_inv_freq({.theta = c.rope_theta}, c.head_dim, inv_freq.data()));
  Buf<float> freq(inv_freq.size());
  ELM_TRY(freq.upload(inv_freq));
  const std::int64_t max_tokens = prompt + steps;
  const auto embeddings = random_bf16(static_cast<std::size_t>(max_tokens * d), 99, 2.0f);
  Buf<T> x(static_cast<std::size_t>(max_tokens * d)), delta(static_cast<std::size_t>(max_tokens * d));
  Buf<std::int32_t> len(shapes.size());

  // One workspace for every layer and step: the largest plan.
  auto args = [&](std::size_t l, std::int64_t tokens, bk::Attend attend) {
    Layer::Arguments a;
    a.handle = &handle;
    a.shape = shapes[l];
    a.w = {layers[l].attn_norm.get(), layers[l].wqkv.get(), layers[l].wo.get(), layers[l].mlp_norm.get(),
           layers[l].gate_up.get(), layers[l].down.get(), nullptr};
    a.inv_freq = freq.get();
    a.batch = tokenless::VarlenBatch::uniform(1, tokens);
    a.x = x.get();
    a.delta = delta.get();
    a.first = l == 0;
    a.attend = attend;
    a.k_cache = layers[l].k_cache.get();
    a.v_cache = layers[l].v_cache.get();
    a.cache_len = len.get() + l;
    a.capacity = capacity;
    a.max_queries = 1;
    return a;
  };
  std::size_t ws_bytes = 0;
  for (std::size_t l = 0; l < shapes.size(); ++l) {
    ws_bytes = std::max({ws_bytes, Layer::workspace_size(args(l, max_tokens, bk::Attend::prefill)),
                         Layer::workspace_size(args(l, 1, bk::Attend::decode))});
  }
  Buf<unsigned char> ws(ws_bytes);
  // The stack over `tokens` embeddings starting at `at`; returns the last row's x + delta.
  auto stack = [&](std::int64_t at, std::int64_t tokens, bk::Attend attend, std::vector<float>& last) -> tokenless::Status {
    TL_RETURN_IF_ERROR(x.upload(embeddings.data() + at * d, static_cast<std::size_t>(tokens * d)));
    for (std::size_t l = 0; l < shapes.size(); ++l) {
      const auto a = args(l, tokens, attend);
      TL_RETURN_IF_ERROR(Layer::run(a, {ws.get(), ws_bytes}));
      TL_RETURN_IF_ERROR(Layer::read_status(a, {ws.get(), ws_bytes}));
    }
    std::vector<T> xs(static_cast<std::size_t>(d)), ds(static_cast<std::size_t>(d));
    TL_CUDA_TRY(cudaMemcpy(xs.data(), x.get() + (tokens - 1) * d, d * sizeof(T), cudaMemcpyDeviceToHost));
    TL_CUDA_TRY(cudaMemcpy(ds.data(), delta.get() + (tokens - 1) * d, d * sizeof(T), cudaMemcpyDeviceToHost));
    last.resize(static_cast<std::size_t>(d));
    for (std::int64_t i = 0; i < d; ++i) last[i] = tokenless::to_float(xs[i]) + tokenless::to_float(ds[i]);
    return tokenless::Status::ok();
  };
  // Prefill, then decode step by step; each step against a fresh prefill of all its tokens.
  std::vector<float> got, want;
  ELM_TRY(len.fill_bytes(0));
  ELM_TRY(stack(0, prompt, bk::Attend::prefill, got));
  double worst = 0;
  for (std::int64_t s = 0; s < steps; ++s) {
    ELM_TRY(stack(prompt + s, 1, bk::Attend::decode, got));
    std::vector<std::int32_t> saved(shapes.size());
    ELM_TRY(len.download(saved.data(), saved.size()));
    ELM_TRY(len.fill_bytes(0));
    ELM_TRY(stack(0, prompt + s + 1, bk::Attend::prefill, want));
    for (std::int64_t i = 0; i < d; ++i) {
      worst = std::max(worst, std::fabs(double(got[i]) - want[i]) / (1.0 + std::fabs(double(want[i]))));
    }
    ELM_TRY(len.upload(saved));  // back to the decode's cache (same rows)
  }
  std::printf("%lld-token prompt, %lld decode steps through %d layers of OpenELM's shapes: decode vs prefill %.2e\n",
              static_cast<long long>(prompt), static_cast<long long>(steps), c.layers, worst);
  if (!(worst < 0.05)) {
    std::printf("FAILED: the decode path differs from the prefill\n");
    return 1;
  }
  std::printf("ok\n");
  return 0;
}

}  // namespace openelm_example
