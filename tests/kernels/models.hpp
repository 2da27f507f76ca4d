#pragma once
// The assembled decoder (blocks::DecoderLayer and tokenless-run's device
// model) on the four families' golden fixtures, shared by the emu and gpu
// tiers:
//   * the prompt's logits in bf16 against the truth (the plain decoder in
//     double) within 4x transformers' own bf16 error, the naive
//     same-precision run (tests/fixtures/models/*/logits_bf16.npy);
//   * every greedy step, teacher forced on transformers' bf16 greedy ids
//     with the cache: the same id exactly, except at a near tie (a top-2
//     margin within twice the two runs' logit errors), where transformers'
//     id must still rank within that of the top;
//   * generation with the cache equal to generation without it (each step
//     a fresh prefill of the whole sequence): logits within the tolerance,
//     ids exactly but at a near tie of the kernels' own logits;
//   * bad input: the layer's argument checks, a prefill into a cache that is
//     not empty and a cache too small, named by read_status();
//   * the layer's training forward (its saved state) and backward against
//     the double reference (reference/decoder.hpp) at the naive
//     same-precision tolerance: the output pair, dL/d(input stream) and every
//     weight's fp32 gradient, written and accumulated; varlen sequences,
//     causal and windowed, head dims 64 and 96 with partial rotation, first
//     layer and not, bf16; bit-identical reruns.
#include "../support/margin.hpp"
#include "../support/testbed.hpp"

#include <tokenless/models/llama.cuh>

#include <tokenless/blocks/decoder.cuh>
#include <tokenless/blocks/policy.hpp>
#include <tokenless/io/model_config.hpp>
#include <tokenless/io/model_weights.hpp>
#include <tokenless/heads/multi_token.cuh>
#include <tokenless/reference/decoder.hpp>
#include <tokenless/reference/multi_token.hpp>
#include <tokenless/reference/transformer.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace tlt::models_tests {

namespace bk = tokenless::blocks;
namespace io = tokenless::io;
using tokenless::StatusCode;
using Bf16 = __nv_bfloat16;
// The fixtures' head dims only (64; Phi-3's 96): a third less of the
// attention core to compile here than every supported dim.
using FixtureDims = tokenless::attention::HeadDims<64, 96>;
using Model = tokenless::models::LlamaModel<Bf16, FixtureDims>;
template <class T>
using LayerOf = bk::DecoderLayer<T, bk::NormThenCast, bk::RopeHalf, bk::Silu, FixtureDims>;
template <class T>
using LayerBackwardOf = bk::DecoderLayerBackward<T, bk::NormThenCast, bk::RopeHalf, bk::Silu, FixtureDims>;

inline const std::string kFixtures = std::string(TOKENLESS_SOURCE_DIR) + "/tests/fixtures/models/";

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A float32 .npy, C order.
inline std::vector<float> read_npy(const std::string& path) {
  const std::string b = slurp(path);
  REQUIRE(b.size() > 10);
  REQUIRE(b.compare(1, 5, "NUMPY") == 0);
  const std::size_t header =
      static_cast<unsigned char>(b[8]) | static_cast<std::size_t>(static_cast<unsigned char>(b[9])) << 8;
  REQUIRE(b.find("'<f4'") != std::string::npos);
  std::vector<float> v((b.size() - 10 - header) / 4);
  std::memcpy(v.data(), b.data() + 10 + header, v.size() * 4);
  return v;
}

inline double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}

struct Family {
  io::ModelWeights<float> w;
  nlohmann::json expected;
  std::vector<std::int32_t> prompt;
};

inline Family load(const std::string& name) {
  Family f;
  const std::string dir = kFixtures + name;
  REQUIRE_OK(io::load_weights(dir, &f.w));
  f.expected = nlohmann::json::parse(slurp(dir + "/expected.json"));
  f.prompt = f.expected["prompt"].get<std::vector<std::int32_t>>();
  return f;
}

inline void check_family(const std::string& name) {
  CAPTURE(name);
  Family f = load(name);
  const io::ModelConfig& c = f.w.config;
  const int V = c.vocab;
  const auto n = static_cast<std::int64_t>(f.prompt.size());
  const int steps = static_cast<int>(f.expected["generated_bf16"].size());
  std::unique_ptr<Model> m;
  REQUIRE_OK(Model::create(f.w, n + steps, n + steps + 1, &m));

  // The prompt's logits against the truth, at transformers' own bf16 error.
  REQUIRE_OK(m->prefill(f.prompt));
  std::vector<float> got;
  REQUIRE_OK(m->logits(n, got));
  REQUIRE_OK(m->read_status());
  tokenless::reference::HostDecoderT<double> truth_d(f.w, [](double v) { return v; });
  const std::vector<double> truth = truth_d.forward(f.prompt);
  double scale = 0;
  for (double v : truth) scale = std::max(scale, std::fabs(v));
  const auto hf16 = read_npy(kFixtures + name + "/logits_bf16.npy");
  REQUIRE(hf16.size() == got.size());
  const double e16 = max_abs_diff(got, truth), n16 = max_abs_diff(hf16, truth);
  const double bound = 4 * n16 + 4 * 3.9e-3 * scale;
  INFO("bf16 kernels " << e16 << ", transformers bf16 " << n16 << ", scale " << scale);
  CHECK(e16 <= bound);

  // Two bf16 runs' logits differ by at most their two errors against the
  // truth: a step whose top-2 margin exceeds twice that picks the same id in
  // both, and any other step must at least rank the other run's id within it.
  const double tie = e16 + n16;
  const auto want = f.expected["generated_bf16"].get<std::vector<std::int32_t>>();
  const auto hf_margins = f.expected["greedy_margins_bf16"].get<std::vector<double>>();
  REQUIRE(static_cast<int>(want.size()) == steps);

  // Teacher forced on transformers' bf16 greedy ids, with the cache: every
  // step's choice agrees with transformers' (exactly where it is not a near tie).
  std::vector<float> row(got.end() - V, got.end());
  for (int i = 0; i < steps; ++i) {
    CAPTURE(i);
    const auto best = static_cast<std::int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
    if (hf_margins[static_cast<std::size_t>(i)] > 2 * tie) {
      CHECK(best == want[static_cast<std::size_t>(i)]);
    } else {
      CHECK(row[static_cast<std::size_t>(want[static_cast<std::size_t>(i)])] >= row[static_cast<std::size_t>(best)] - 2 * tie);
    }
    if (i + 1 == steps) break;
    REQUIRE_OK(m->write_ids(n + i, {want[static_cast<std::size_t>(i)]}));
    REQUIRE_OK(m->decode());
    REQUIRE_OK(m->logits(1, row));
  }
  REQUIRE_OK(m->read_status());

  // Free-running greedy with the cache, and the same without it (a step as a
  // fresh prefill of the sequence so far, through the prefill kernels): the
  // logits agree within the tolerance and the ids exactly, but at a near tie
  // of the two paths' own logits.
  REQUIRE_OK(m->prefill(f.prompt));
  std::vector<std::vector<float>> cached{std::vector<float>(got.end() - V, got.end())};
  for (int i = 1; i < steps; ++i) {
    REQUIRE_OK(m->decode());
    REQUIRE_OK(m->logits(1, row));
    cached.push_back(row);
  }
  REQUIRE_OK(m->read_status());
  std::vector<std::int32_t> gen;
  REQUIRE_OK(m->ids(n, n + steps, gen));
  std::vector<std::int32_t> seq = f.prompt;
  seq.insert(seq.end(), gen.begin(), gen.end());
  // The first, a middle and the last step (each a prefill of the whole sequence so far).
  for (const int i : {0, steps / 2, steps - 1}) {
    CAPTURE(i);
    const std::vector<std::int32_t> ctx(seq.begin(), seq.begin() + n + i);
    REQUIRE_OK(m->prefill(ctx));
    std::vector<float> all;
    REQUIRE_OK(m->logits(n + i, all));
    std::vector<std::int32_t> next;
    REQUIRE_OK(m->ids(n + i, n + i + 1, next));
    const auto& c_row = cached[static_cast<std::size_t>(i)];
    double diff = 0;
    for (int v = 0; v < V; ++v) diff = std::max(diff, std::fabs(double(all[(n + i - 1) * V + v]) - c_row[v]));
    CHECK(diff <= tie);
    if (tlt::top2_margin(c_row.data(), V) > 2 * diff) CHECK(next[0] == gen[static_cast<std::size_t>(i)]);
  }
}

// One layer's arguments on the llama fixture's shape, with buffers of its size.
struct LayerCase {
  using Layer = LayerOf<Bf16>;
  static constexpr std::int64_t kTokens = 4, kCapacity = 8;
  bk::DecoderShape shape{.hidden = 256, .heads = 4, .kv_heads = 2, .head_dim = 64, .ffn = 256};
  tokenless::blas::LtHandle handle;
  DeviceBuffer<Bf16> norm{std::vector<Bf16>(256, tokenless::from_float<Bf16>(1.0f))};
  DeviceBuffer<Bf16> wqkv{random_values<Bf16>(512 * 256, 1, -0.1f, 0.1f)}, wo{random_values<Bf16>(256 * 256, 2, -0.1f, 0.1f)};
  DeviceBuffer<Bf16> wgu{random_values<Bf16>(512 * 256, 3, -0.1f, 0.1f)}, wd{random_values<Bf16>(256 * 256, 4, -0.1f, 0.1f)};
  DeviceBuffer<Bf16> x{random_values<Bf16>(kTokens * 256, 5)}, delta{static_cast<std::size_t>(kTokens * 256)};
  DeviceBuffer<Bf16> kc{static_cast<std::size_t>(kCapacity * 128)}, vc{static_cast<std::size_t>(kCapacity * 128)};
  DeviceBuffer<float> inv_freq{std::vector<float>(32, 0.5f)};
  DeviceBuffer<std::int32_t> len{std::vector<std::int32_t>{0}};
  Layer::Arguments args() {
    REQUIRE_OK(tokenless::blas::LtHandle::create(handle));
    Layer::Arguments a;
    a.handle = &handle;
    a.shape = shape;
    a.w = {norm.get(), wqkv.get(), wo.get(), norm.get(), wgu.get(), wd.get(), nullptr};
    a.inv_freq = inv_freq.get();
    a.batch = tokenless::VarlenBatch::uniform(1, kTokens);
    a.x = x.get();
    a.delta = delta.get();
    a.first = true;
    a.k_cache = kc.get();
    a.v_cache = vc.get();
    a.cache_len = len.get();
    a.capacity = kCapacity;
    return a;
  }
};

inline void check_layer_bad_input() {
  LayerCase lc;
  Testbed<LayerCase::Layer> tb;
  const auto good = lc.args();
  using A = LayerCase::Layer::Arguments;
  tb.reject(good, {
      {"no weight", [](A& a) { a.w.wo = nullptr; }, StatusCode::null_pointer, "w.wo"},
      {"hidden not a multiple of 8", [](A& a) { a.shape.hidden = 252; }, StatusCode::unsupported, "shape.hidden"},
      {"decode without a cache", [](A& a) { a.attend = bk::Attend::decode; a.k_cache = nullptr; },
       StatusCode::null_pointer, "k_cache"},
      {"an unsupported head dim", [](A& a) { a.shape.head_dim = 32; a.shape.heads = 8; a.shape.kv_heads = 4; },
       StatusCode::unsupported, "head_dim"},
      {"no handle", [](A& a) { a.handle = nullptr; }, StatusCode::null_pointer, "handle"},
      {"delta is x", [](A& a) { a.delta = a.x; }, StatusCode::invalid_argument, "delta"},
      {"a Mixtral shape without a router", [](A& a) { a.shape.experts = 4; a.shape.top_k = 2; },
       StatusCode::null_pointer, "w.router"},
  });
  // Device-side: a prefill into a cache that is not empty is named.
  tb.run_ok(good);
  CHECK(lc.len.download()[0] == LayerCase::kTokens);
  const tokenless::Status again = tb.run(good);
  CHECK(again.code() == StatusCode::invalid_argument);
  CHECK(std::string(again.message()).find("cache_len") != std::string::npos);
  // A decode step past the capacity is refused by the append, the cache unchanged.
  auto d = good;
  d.attend = bk::Attend::decode;
  d.first = false;
  d.batch = tokenless::VarlenBatch::uniform(1, 4);
  d.max_queries = 4;
  lc.len.upload(std::vector<std::int32_t>{6});
  const tokenless::Status full = tb.run(d);
  CHECK(full.code() == StatusCode::capacity_too_small);
  CHECK(lc.len.download()[0] == 6);
}

// The training forward and the backward of one dense layer against the reference.
template <class T>
void check_layer_backward(const bk::DecoderShape& shape, std::vector<std::int32_t> cu, bool first, std::uint64_t seed) {
  namespace rd = tokenless::reference::decoder;
  using Layer = LayerOf<T>;
  using Bwd = LayerBackwardOf<T>;
  CAPTURE(shape.head_dim);
  CAPTURE(shape.window);
  CAPTURE(shape.rot_dim);
  CAPTURE(first);
  const std::int64_t n = cu.back();
  const int d = shape.hidden, F = shape.ffn;
  const auto sz = [](std::int64_t v) { return static_cast<std::size_t>(v); };
  const float ws = 1.0f / std::sqrt(static_cast<float>(d));
  auto norm_w = [&](std::uint64_t k) {
    auto v = random_values<T>(sz(d), seed + k, 0.8f, 1.2f);
    return v;
  };
  const auto h_attn_norm = norm_w(1), h_mlp_norm = norm_w(2);
  const auto h_wqkv = random_values<T>(sz(shape.qkv_dim() * d), seed + 3, -2 * ws, 2 * ws);
  const auto h_wo = random_values<T>(sz(d * shape.q_dim()), seed + 4, -ws, ws);
  const auto h_wgu = random_values<T>(sz(2 * F * d), seed + 5, -2 * ws, 2 * ws);
  const auto h_wd = random_values<T>(sz(d * F), seed + 6, -ws, ws);
  const auto h_x = random_values<T>(sz(n * d), seed + 7);
  const auto h_delta = random_values<T>(sz(n * d), seed + 8);
  const auto h_g = random_values<T>(sz(n * d), seed + 9);
  const int rot = shape.rot_dim ? shape.rot_dim : shape.head_dim;
  std::vector<float> inv_freq(sz(rot / 2));
  REQUIRE_OK(bk::rope_inv_freq({.theta = 10000.0f}, rot, inv_freq.data()));

  DeviceBuffer<T> attn_norm(h_attn_norm), mlp_norm(h_mlp_norm), wqkv(h_wqkv), wo(h_wo), wgu(h_wgu), wd(h_wd);
  DeviceBuffer<T> x(h_x), delta(h_delta), g(h_g), grad_in(sz(n * d));
  DeviceBuffer<float> freq(inv_freq);
  DeviceBuffer<std::int32_t> cu_d(cu);
  DeviceBuffer<T> h0(sz(n * d)), h1(sz(n * d)), qkv(sz(n * shape.qkv_dim())), o(sz(n * shape.q_dim())), mid(sz(n * d)),
      h2(sz(n * d)), gu(sz(n * 2 * F)), act(sz(n * F));
  DeviceBuffer<float> inv1(sz(n)), inv2(sz(n)), lse(sz(n * shape.heads));
  tokenless::blas::LtHandle handle;
  REQUIRE_OK(tokenless::blas::LtHandle::create(handle));
  typename Layer::Arguments a;
  a.handle = &handle;
  a.shape = shape;
  a.w = {attn_norm.get(), wqkv.get(), wo.get(), mlp_norm.get(), wgu.get(), wd.get(), nullptr};
  a.inv_freq = freq.get();
  a.batch = tokenless::VarlenBatch::packed(cu_d.get(), static_cast<std::int64_t>(cu.size()) - 1, n);
  a.x = x.get();
  a.delta = delta.get();
  a.first = first;
  a.saved = {first ? nullptr : h0.get(), inv1.get(), h1.get(), qkv.get(), o.get(), lse.get(), mid.get(), inv2.get(),
             h2.get(), gu.get(), act.get(), nullptr};
  Testbed<Layer> fwd;
  fwd.run_ok(a);
  CHECK(x.download() == h_x);  // the training forward leaves x as it was
  {  // The inference forward (x updated in place, no saved state) gives the same bits.
    DeviceBuffer<T> x2(h_x), delta2(h_delta);
    auto inf = a;
    inf.x = x2.get();
    inf.delta = delta2.get();
    inf.saved = {};
    Testbed<Layer>().run_ok(inf);
    CHECK(x2.download() == mid.download());
    CHECK(delta2.download() == delta.download());
  }

  // The reference: truth in double, naive with T's rounding where the kernels store.
  rd::Shape rs{cu, d, shape.heads, shape.kv_heads, shape.head_dim, shape.rot_dim, F, shape.window, shape.eps};
  const rd::Weights rw{widen(h_attn_norm), widen(h_wqkv), widen(h_wo), widen(h_mlp_norm), widen(h_wgu), widen(h_wd)};
  const auto identity = [](double v) { return v; };
  const auto round = round_d<T>();
  const std::vector<double> no;
  const auto tf = rd::forward(rs, rw, inv_freq, widen(h_x), first ? no : widen(h_delta), identity);
  const auto nf = rd::forward(rs, rw, inv_freq, widen(h_x), first ? no : widen(h_delta), round);
  const float u = tokenless::dtype_traits<T>::unit_roundoff;
  auto floats = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  {
    INFO("the stream after attention (mid)");
    check_accuracy(to_floats(mid.download()), floats(nf.mid), tf.mid, 4.0, u);
  }
  {
    INFO("the MLP's output (delta)");
    check_accuracy(to_floats(delta.download()), floats(nf.delta), tf.delta, 4.0, u);
  }

  // The backward: grads written, then accumulated onto themselves (twice the values).
  std::vector<DeviceBuffer<float>> gw;
  for (std::int64_t len : {std::int64_t{d}, shape.qkv_dim() * d, d * shape.q_dim(), std::int64_t{d}, 2 * F * std::int64_t{d},
                           std::int64_t{d} * F}) {
    gw.emplace_back(std::vector<float>(sz(len), 7.0f));
  }
  typename Bwd::Arguments b;
  b.forward = a;
  b.grad = g.get();
  b.grad_in = grad_in.get();
  b.grads = {gw[0].get(), gw[1].get(), gw[2].get(), gw[3].get(), gw[4].get(), gw[5].get(), nullptr};
  Testbed<Bwd> bwd;
  bwd.run_ok(b);
  const auto first_in = grad_in.download();
  std::vector<std::vector<float>> first_w;
  for (auto& v : gw) first_w.push_back(v.download());
  const auto tg = rd::backward(rs, rw, inv_freq, tf, widen(h_g), identity);
  const auto ng = rd::backward(rs, rw, inv_freq, nf, widen(h_g), round);
  {
    INFO("dL/d(input stream)");
    check_accuracy(to_floats(first_in), floats(ng.grad_in), tg.grad_in, 4.0, u);
  }
  const std::vector<const std::vector<double>*> truths{&tg.attn_norm, &tg.wqkv, &tg.wo, &tg.mlp_norm, &tg.w_gate_up,
                                                       &tg.w_down};
  const std::vector<const std::vector<double>*> naives{&ng.attn_norm, &ng.wqkv, &ng.wo, &ng.mlp_norm, &ng.w_gate_up,
                                                       &ng.w_down};
  const char* names[] = {"attn_norm", "wqkv", "wo", "mlp_norm", "w_gate_up", "w_down"};
  for (std::size_t i = 0; i < gw.size(); ++i) {
    INFO("the gradient of " << std::string(names[i]));
    check_accuracy(first_w[i], floats(*naives[i]), *truths[i], 4.0, u);
  }
  // Accumulated: the same values added to the first run's, bit-identical reruns.
  b.accumulate = true;
  bwd.run_ok(b);
  CHECK(grad_in.download() == first_in);
  for (std::size_t i = 0; i < gw.size(); ++i) {
    const auto twice = gw[i].download();
    bool same = true;
    for (std::size_t j = 0; j < twice.size(); ++j) same = same && twice[j] == first_w[i][j] + first_w[i][j];
    CHECK_MESSAGE(same, names[i]);
  }
}

// bf16 only: the layer composes kernels whose fp16 paths their own tests
// cover (another storage type here would compile the attention core again).
TEST_CASE_TEMPLATE("models: the decoder layer's training forward and backward match the reference", T, __nv_bfloat16) {
  const bk::DecoderShape llama{.hidden = 128, .heads = 4, .kv_heads = 2, .head_dim = 64, .ffn = 128};
  check_layer_backward<T>(llama, {0, 5, 12}, true, 11);
  check_layer_backward<T>(llama, {0, 9}, false, 12);
  if (scale_down() > 1) return;
  bk::DecoderShape mistral = llama;
  mistral.window = 4;
  check_layer_backward<T>(mistral, {0, 3, 11}, false, 13);
  const bk::DecoderShape phi{.hidden = 96, .heads = 2, .kv_heads = 1, .head_dim = 96, .rot_dim = 64, .ffn = 64};
  check_layer_backward<T>(phi, {0, 7}, false, 14);
}

// Mixtral's layer: the training forward equals the inference forward bit for
// bit, and the backward (MoeBackward on the saved routing, checked against
// its reference in test_moe) gives finite gradients, bit-identical on a rerun.
inline void check_moe_layer_backward() {
  using T = __nv_bfloat16;
  using Layer = LayerOf<T>;
  using Bwd = LayerBackwardOf<T>;
  const bk::DecoderShape s{.hidden = 64, .heads = 2, .kv_heads = 1, .head_dim = 64, .ffn = 64, .experts = 4, .top_k = 2};
  const std::int64_t n = 10;
  const auto sz = [](std::int64_t v) { return static_cast<std::size_t>(v); };
  DeviceBuffer<T> norm(random_values<T>(64, 1, 0.8f, 1.2f)), wqkv(random_values<T>(sz(s.qkv_dim() * 64), 2, -0.2f, 0.2f));
  DeviceBuffer<T> wo(random_values<T>(sz(64 * s.q_dim()), 3, -0.2f, 0.2f)), router(random_values<T>(4 * 64, 4));
  DeviceBuffer<T> wgu(random_values<T>(4 * 128 * 64, 5, -0.2f, 0.2f)), wd(random_values<T>(4 * 64 * 64, 6, -0.2f, 0.2f));
  const auto hx = random_values<T>(sz(n * 64), 7), hdelta = random_values<T>(sz(n * 64), 8);
  DeviceBuffer<T> x(hx), delta(hdelta), x2(hx), delta2(hdelta), g(random_values<T>(sz(n * 64), 9)), grad_in(sz(n * 64));
  DeviceBuffer<float> freq(std::vector<float>(32, 0.25f)), inv1(sz(n)), inv2(sz(n)), lse(sz(n * 2));
  DeviceBuffer<T> h0(sz(n * 64)), h1(sz(n * 64)), qkv(sz(n * s.qkv_dim())), o(sz(n * s.q_dim())), mid(sz(n * 64)),
      h2(sz(n * 64));
  tokenless::blas::LtHandle handle;
  REQUIRE_OK(tokenless::blas::LtHandle::create(handle));
  Layer::Arguments a;
  a.handle = &handle;
  a.shape = s;
  a.w = {norm.get(), wqkv.get(), wo.get(), norm.get(), wgu.get(), wd.get(), router.get()};
  a.inv_freq = freq.get();
  a.batch = tokenless::VarlenBatch::uniform(2, n / 2);
  a.x = x2.get();
  a.delta = delta2.get();
  Testbed<Layer>().run_ok(a);  // inference
  DeviceBuffer<unsigned char> moe_state(Layer::moe_saved_bytes(a));
  a.x = x.get();
  a.delta = delta.get();
  a.saved = {h0.get(), inv1.get(), h1.get(), qkv.get(), o.get(), lse.get(), mid.get(), inv2.get(), h2.get(), nullptr,
             nullptr, moe_state.get()};
  Testbed<Layer>().run_ok(a);  // training
  CHECK(mid.download() == x2.download());
  CHECK(delta.download() == delta2.download());
  std::vector<DeviceBuffer<float>> gw;
  for (std::int64_t len : {std::int64_t{64}, s.qkv_dim() * 64, 64 * s.q_dim(), std::int64_t{64}, std::int64_t{4 * 128 * 64},
                           std::int64_t{4 * 64 * 64}, std::int64_t{4 * 64}}) {
    gw.emplace_back(sz(len));
  }
  Bwd::Arguments b;
  b.forward = a;
  b.grad = g.get();
  b.grad_in = grad_in.get();
  b.grads = {gw[0].get(), gw[1].get(), gw[2].get(), gw[3].get(), gw[4].get(), gw[5].get(), gw[6].get()};
  Testbed<Bwd> bwd;
  bwd.run_ok(b);
  const auto first = grad_in.download();
  std::vector<std::vector<float>> first_w;
  for (auto& v : gw) first_w.push_back(v.download());
  for (const auto& v : first_w) {
    double sum = 0;
    for (float f : v) {
      REQUIRE(std::isfinite(f));
      sum += std::fabs(f);
    }
    CHECK(sum > 0);
  }
  for (T v : first) REQUIRE(std::isfinite(tokenless::to_float(v)));
  bwd.run_ok(b);
  CHECK(grad_in.download() == first);
  for (std::size_t i = 0; i < gw.size(); ++i) CHECK(gw[i].download() == first_w[i]);
  // The backward refuses a forward that saved nothing.
  auto bad = b;
  bad.forward.saved = {};
  const tokenless::Status st = Bwd::can_implement(bad);
  CHECK(st.code() == StatusCode::invalid_argument);
  CHECK(std::string(st.message()).find("saved") != std::string::npos);
}

// One dense block's weights (bf16, on the device) and fp32 gradient buffers.
struct HeadBufs {
  using T = Bf16;
  std::vector<T> an, wqkv, wo, mn, wgu, wd;
  DeviceBuffer<T> d_an, d_wqkv, d_wo, d_mn, d_wgu, d_wd;
  std::vector<DeviceBuffer<float>> g;
  HeadBufs(const bk::DecoderShape& sh, std::uint64_t k, float ws)
      : an(random_values<T>(static_cast<std::size_t>(sh.hidden), k, 0.8f, 1.2f)),
        wqkv(random_values<T>(static_cast<std::size_t>(sh.qkv_dim() * sh.hidden), k + 1, -2 * ws, 2 * ws)),
        wo(random_values<T>(static_cast<std::size_t>(sh.hidden * sh.q_dim()), k + 2, -ws, ws)),
        mn(random_values<T>(static_cast<std::size_t>(sh.hidden), k + 3, 0.8f, 1.2f)),
        wgu(random_values<T>(static_cast<std::size_t>(2 * sh.ffn * sh.hidden), k + 4, -2 * ws, 2 * ws)),
        wd(random_values<T>(static_cast<std::size_t>(sh.hidden * sh.ffn), k + 5, -ws, ws)),
        d_an(an), d_wqkv(wqkv), d_wo(wo), d_mn(mn), d_wgu(wgu), d_wd(wd) {
    for (std::int64_t len : {std::int64_t{sh.hidden}, sh.qkv_dim() * sh.hidden, sh.hidden * sh.q_dim(),
                             std::int64_t{sh.hidden}, 2 * std::int64_t{sh.ffn} * sh.hidden,
                             std::int64_t{sh.hidden} * sh.ffn}) {
      g.emplace_back(std::vector<float>(static_cast<std::size_t>(len), 0.0f));
    }
  }
};

// Meta's parallel multi-token heads against the reference: the loss over the
// heads, each head's, dL/dz, every block's weight gradients, the shared norm's
// and head's; the workspace the same for one head as for three; bad input.
inline void check_multi_token_heads() {
  namespace rd = tokenless::reference::decoder;
  namespace hd = tokenless::heads;
  using T = Bf16;
  using Op = hd::MultiTokenHeads<T, bk::NormThenCast, bk::RopeHalf, bk::Silu, FixtureDims>;
  const bk::DecoderShape shape{.hidden = 128, .heads = 4, .kv_heads = 2, .head_dim = 64, .ffn = 128};
  const std::vector<std::int32_t> cu{0, 5, 12};
  const std::int64_t n = 12, V = 97;
  const int d = 128, F = 128, H = 3;
  const auto sz = [](std::int64_t v) { return static_cast<std::size_t>(v); };
  const float ws = 1.0f / std::sqrt(static_cast<float>(d));
  std::vector<float> inv_freq(32);
  REQUIRE_OK(bk::rope_inv_freq({.theta = 10000.0f}, 64, inv_freq.data()));
  std::vector<std::unique_ptr<HeadBufs>> hb;
  for (int i = 0; i < H; ++i) hb.push_back(std::make_unique<HeadBufs>(shape, 40 + 10 * i, ws));
  const auto h_z = random_values<T>(sz(n * d), 31);
  const auto h_norm = random_values<T>(sz(d), 32, 0.8f, 1.2f);
  const auto h_lm = random_values<T>(sz(V * d), 33, -2 * ws, 2 * ws);
  std::vector<std::int32_t> toks(sz(n));
  for (std::int64_t i = 0; i < n; ++i) toks[i] = static_cast<std::int32_t>((i * 37 + 11) % V);
  DeviceBuffer<T> z(h_z), norm(h_norm), lm(h_lm), grad_z(sz(n * d));
  DeviceBuffer<std::int32_t> cu_d(cu), tok_d(toks);
  DeviceBuffer<float> freq(inv_freq), loss(1), head_loss(sz(H)), g_norm(sz(d)), g_lm(sz(V * d));
  tokenless::blas::LtHandle handle;
  REQUIRE_OK(tokenless::blas::LtHandle::create(handle));
  Op::Arguments a;
  a.handle = &handle;
  a.shape = shape;
  a.n_heads = H;
  for (int i = 0; i < H; ++i) {
    const auto& b = *hb[static_cast<std::size_t>(i)];
    a.heads[i] = {b.d_an.get(), b.d_wqkv.get(), b.d_wo.get(), b.d_mn.get(), b.d_wgu.get(), b.d_wd.get(), nullptr};
    a.head_grads[i] = {b.g[0].get(), b.g[1].get(), b.g[2].get(), b.g[3].get(), b.g[4].get(), b.g[5].get(), nullptr};
  }
  a.inv_freq = freq.get();
  a.batch = tokenless::VarlenBatch::packed(cu_d.get(), 2, n);
  a.z = z.get();
  a.tokens = tok_d.get();
  a.norm = norm.get();
  a.lm_head = lm.get();
  a.vocab = V;
  a.loss = loss.get();
  a.head_loss = head_loss.get();
  a.grad_z = grad_z.get();
  a.grad_norm = g_norm.get();
  a.grad_lm_head = g_lm.get();
  {
    auto one = a;
    one.n_heads = 1;
    CHECK(Op::workspace_size(one) == Op::workspace_size(a));  // memory does not grow with the heads
  }
  Testbed<Op>().run_ok(a);

  rd::Shape rs{cu, d, shape.heads, shape.kv_heads, shape.head_dim, shape.rot_dim, F, shape.window, shape.eps};
  std::vector<rd::Weights> rw;
  for (const auto& b : hb) rw.push_back({widen(b->an), widen(b->wqkv), widen(b->wo), widen(b->mn), widen(b->wgu), widen(b->wd)});
  const hd::CrossEntropyOptions o{};
  const auto identity = [](double v) { return v; };
  namespace rm = tokenless::reference::multi_token;
  const auto t = rm::multi_token_heads(rs, rw, inv_freq, widen(h_z), toks, widen(h_norm), widen(h_lm), V, o, identity);
  const auto nv = rm::multi_token_heads(rs, rw, inv_freq, widen(h_z), toks, widen(h_norm), widen(h_lm), V, o, round_d<T>());
  const float u = tokenless::dtype_traits<T>::unit_roundoff;
  auto floats = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  {
    INFO("the loss over the heads, and each head's");
    check_accuracy(loss.download(), {static_cast<float>(nv.loss)}, {t.loss}, 4.0, u);
    check_accuracy(head_loss.download(), floats(nv.head_loss), t.head_loss, 4.0, u);
  }
  {
    INFO("dL/dz");
    check_accuracy(to_floats(grad_z.download()), floats(nv.grad_z), t.grad_z, 4.0, u);
  }
  {
    INFO("the shared norm's and head's gradients");
    check_accuracy(g_norm.download(), floats(nv.grad_norm), t.grad_norm, 4.0, u);
    check_accuracy(g_lm.download(), floats(nv.grad_lm_head), t.grad_lm_head, 4.0, u);
  }
  for (int i = 0; i < H; ++i) {
    CAPTURE(i);
    const auto& tg = t.head_grads[static_cast<std::size_t>(i)];
    const auto& ng = nv.head_grads[static_cast<std::size_t>(i)];
    const std::vector<const std::vector<double>*> tw{&tg.attn_norm, &tg.wqkv, &tg.wo, &tg.mlp_norm, &tg.w_gate_up, &tg.w_down};
    const std::vector<const std::vector<double>*> nw{&ng.attn_norm, &ng.wqkv, &ng.wo, &ng.mlp_norm, &ng.w_gate_up, &ng.w_down};
    for (std::size_t k = 0; k < tw.size(); ++k) {
      CAPTURE(k);
      check_accuracy(hb[static_cast<std::size_t>(i)]->g[k].download(), floats(*nw[k]), *tw[k], 4.0, u);
    }
  }
  // Bad input: refused with nothing written; a bad token named.
  Testbed<Op> bad;
  bad.watch(loss).watch(grad_z);
  bad.reject(a, {
      {"no heads", [](Op::Arguments& x) { x.n_heads = 0; }, StatusCode::invalid_argument, "n_heads"},
      {"nine heads", [](Op::Arguments& x) { x.n_heads = 9; }, StatusCode::unsupported, "1 to 8"},
      {"no per-token reduction", [](Op::Arguments& x) { x.options.reduction = hd::Reduction::none; },
       StatusCode::invalid_argument, "reduction"},
      {"a head without weights", [](Op::Arguments& x) { x.heads[1].wqkv = nullptr; }, StatusCode::null_pointer,
       "heads[1].wqkv"},
      {"no tokens", [](Op::Arguments& x) { x.tokens = nullptr; }, StatusCode::null_pointer, "tokens"},
  });
  std::vector<std::int32_t> bad_toks = toks;
  bad_toks[7] = static_cast<std::int32_t>(V);
  DeviceBuffer<std::int32_t> bad_d(bad_toks);
  a.tokens = bad_d.get();
  DeviceBuffer<unsigned char> wsb(Op::workspace_size(a));
  REQUIRE_OK(Op::run(a, {wsb.get(), wsb.size()}));
  const auto st = Op::read_status(a, {wsb.get(), wsb.size()});
  CHECK(st.code() == StatusCode::invalid_argument);
  CHECK(std::string(st.message()).find("tokens[7] = 97") != std::string::npos);
}

TEST_CASE("models: Meta's multi-token heads (memory-efficient order) match the reference") { check_multi_token_heads(); }

// DeepSeek-V3's two sequential modules against the reference: the loss over
// the depths, each depth's, dL/dh^0 (through both modules' hnorm paths),
// every module's gradients, the shared embedding's and head's; a bad token.
inline void check_mtp_modules() {
  namespace rd = tokenless::reference::decoder;
  namespace rm = tokenless::reference::multi_token;
  namespace hd = tokenless::heads;
  using T = Bf16;
  using Op = hd::MtpModules<T, bk::NormThenCast, bk::RopeHalf, bk::Silu, FixtureDims>;
  const bk::DecoderShape shape{.hidden = 128, .heads = 4, .kv_heads = 2, .head_dim = 64, .ffn = 128, .eps = 1e-6f};
  const std::vector<std::int32_t> cu{0, 6, 13};
  const std::int64_t n = 13, V = 89;
  const int d = 128, F = 128, D = 2;
  const auto sz = [](std::int64_t v) { return static_cast<std::size_t>(v); };
  const float ws = 1.0f / std::sqrt(static_cast<float>(d));
  std::vector<float> inv_freq(32);
  REQUIRE_OK(bk::rope_inv_freq({.theta = 10000.0f}, 64, inv_freq.data()));
  struct ModBufs {
    HeadBufs block;
    std::vector<T> en, hn, sn, eh;
    DeviceBuffer<T> d_en, d_hn, d_sn, d_eh;
    DeviceBuffer<float> g_en, g_hn, g_sn, g_eh;
    ModBufs(const bk::DecoderShape& sh, std::uint64_t k, float w)
        : block(sh, k, w),
          en(random_values<T>(static_cast<std::size_t>(sh.hidden), k + 6, 0.8f, 1.2f)),
          hn(random_values<T>(static_cast<std::size_t>(sh.hidden), k + 7, 0.8f, 1.2f)),
          sn(random_values<T>(static_cast<std::size_t>(sh.hidden), k + 8, 0.8f, 1.2f)),
          eh(random_values<T>(static_cast<std::size_t>(2 * sh.hidden * sh.hidden), k + 9, -w, w)),
          d_en(en), d_hn(hn), d_sn(sn), d_eh(eh),
          g_en(std::vector<float>(static_cast<std::size_t>(sh.hidden), 0.0f)),
          g_hn(std::vector<float>(static_cast<std::size_t>(sh.hidden), 0.0f)),
          g_sn(std::vector<float>(static_cast<std::size_t>(sh.hidden), 0.0f)),
          g_eh(std::vector<float>(static_cast<std::size_t>(2 * sh.hidden * sh.hidden), 0.0f)) {}
  };
  std::vector<std::unique_ptr<ModBufs>> mb;
  for (int k = 0; k < D; ++k) mb.push_back(std::make_unique<ModBufs>(shape, 70 + 20 * k, ws));
  const auto h_h0 = random_values<T>(sz(n * d), 61);
  const auto h_emb = random_values<T>(sz(V * d), 62);
  const auto h_lm = random_values<T>(sz(V * d), 63, -2 * ws, 2 * ws);
  std::vector<std::int32_t> toks(sz(n));
  for (std::int64_t i = 0; i < n; ++i) toks[i] = static_cast<std::int32_t>((i * 29 + 5) % V);
  toks[9] = toks[2];  // an embedding row touched twice
  DeviceBuffer<T> h0(h_h0), emb(h_emb), lm(h_lm), grad_h(sz(n * d));
  DeviceBuffer<std::int32_t> cu_d(cu), tok_d(toks);
  DeviceBuffer<float> freq(inv_freq), loss(1), mloss(sz(D)), g_emb(std::vector<float>(sz(V * d), 0.0f)), g_lm(sz(V * d));
  tokenless::blas::LtHandle handle;
  REQUIRE_OK(tokenless::blas::LtHandle::create(handle));
  Op::Arguments a;
  a.handle = &handle;
  a.shape = shape;
  a.depth = D;
  for (int k = 0; k < D; ++k) {
    auto& m = *mb[static_cast<std::size_t>(k)];
    auto& b = m.block;
    a.modules[k] = {m.d_en.get(), m.d_hn.get(), m.d_eh.get(), m.d_sn.get(),
                    {b.d_an.get(), b.d_wqkv.get(), b.d_wo.get(), b.d_mn.get(), b.d_wgu.get(), b.d_wd.get(), nullptr}};
    a.grads[k] = {m.g_en.get(), m.g_hn.get(), m.g_eh.get(), m.g_sn.get(),
                  {b.g[0].get(), b.g[1].get(), b.g[2].get(), b.g[3].get(), b.g[4].get(), b.g[5].get(), nullptr}};
  }
  a.inv_freq = freq.get();
  a.batch = tokenless::VarlenBatch::packed(cu_d.get(), 2, n);
  a.tokens = tok_d.get();
  a.hidden = h0.get();
  a.embed = emb.get();
  a.lm_head = lm.get();
  a.vocab = V;
  a.loss = loss.get();
  a.module_loss = mloss.get();
  a.grad_hidden = grad_h.get();
  a.grad_embed = g_emb.get();
  a.grad_lm_head = g_lm.get();
  Testbed<Op>().run_ok(a);

  rd::Shape rs{cu, d, shape.heads, shape.kv_heads, shape.head_dim, shape.rot_dim, F, shape.window, shape.eps};
  std::vector<rm::Module> mods;
  for (const auto& m : mb) {
    const auto& b = m->block;
    mods.push_back({widen(m->en), widen(m->hn), widen(m->eh), widen(m->sn),
                    {widen(b.an), widen(b.wqkv), widen(b.wo), widen(b.mn), widen(b.wgu), widen(b.wd)}});
  }
  const hd::CrossEntropyOptions o{};
  const auto identity = [](double v) { return v; };
  const auto t = rm::mtp_modules(rs, mods, inv_freq, widen(h_h0), toks, widen(h_emb), widen(h_lm), V, o, identity);
  const auto nv = rm::mtp_modules(rs, mods, inv_freq, widen(h_h0), toks, widen(h_emb), widen(h_lm), V, o, round_d<T>());
  const float u = tokenless::dtype_traits<T>::unit_roundoff;
  auto floats = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  {
    INFO("the loss over the depths, and each depth's");
    check_accuracy(loss.download(), {static_cast<float>(nv.loss)}, {t.loss}, 4.0, u);
    check_accuracy(mloss.download(), floats(nv.module_loss), t.module_loss, 4.0, u);
  }
  {
    INFO("dL/dh^0, the embedding's and the head's gradients");
    check_accuracy(to_floats(grad_h.download()), floats(nv.grad_hidden), t.grad_hidden, 4.0, u);
    check_accuracy(g_emb.download(), floats(nv.grad_embed), t.grad_embed, 4.0, u);
    check_accuracy(g_lm.download(), floats(nv.grad_lm_head), t.grad_lm_head, 4.0, u);
  }
  for (int k = 0; k < D; ++k) {
    CAPTURE(k);
    const auto& tg = t.grads[static_cast<std::size_t>(k)];
    const auto& ng = nv.grads[static_cast<std::size_t>(k)];
    auto& m = *mb[static_cast<std::size_t>(k)];
    check_accuracy(m.g_en.download(), floats(ng.enorm), tg.enorm, 4.0, u);
    check_accuracy(m.g_hn.download(), floats(ng.hnorm), tg.hnorm, 4.0, u);
    check_accuracy(m.g_eh.download(), floats(ng.eh_proj), tg.eh_proj, 4.0, u);
    check_accuracy(m.g_sn.download(), floats(ng.shared_norm), tg.shared_norm, 4.0, u);
    const std::vector<const std::vector<double>*> tw{&tg.block.attn_norm, &tg.block.wqkv, &tg.block.wo,
                                                     &tg.block.mlp_norm, &tg.block.w_gate_up, &tg.block.w_down};
    const std::vector<const std::vector<double>*> nw{&ng.block.attn_norm, &ng.block.wqkv, &ng.block.wo,
                                                     &ng.block.mlp_norm, &ng.block.w_gate_up, &ng.block.w_down};
    for (std::size_t w = 0; w < tw.size(); ++w) {
      CAPTURE(w);
      check_accuracy(m.block.g[w].download(), floats(*nw[w]), *tw[w], 4.0, u);
    }
  }
  Testbed<Op> bad;
  bad.watch(loss).watch(grad_h);
  bad.reject(a, {
      {"no modules", [](Op::Arguments& x) { x.depth = 0; }, StatusCode::invalid_argument, "depth"},
      {"five modules", [](Op::Arguments& x) { x.depth = 5; }, StatusCode::unsupported, "1 to 4"},
      {"a module without its norm", [](Op::Arguments& x) { x.modules[1].shared_norm = nullptr; },
       StatusCode::null_pointer, "modules[1].shared_norm"},
      {"no hidden states", [](Op::Arguments& x) { x.hidden = nullptr; }, StatusCode::null_pointer, "hidden"},
  });
  std::vector<std::int32_t> bad_toks = toks;
  bad_toks[4] = -3;
  DeviceBuffer<std::int32_t> bad_d(bad_toks);
  a.tokens = bad_d.get();
  DeviceBuffer<unsigned char> wsb(Op::workspace_size(a));
  REQUIRE_OK(Op::run(a, {wsb.get(), wsb.size()}));
  const auto st = Op::read_status(a, {wsb.get(), wsb.size()});
  CHECK(st.code() == StatusCode::invalid_argument);
  CHECK(std::string(st.message()).find("tokens[4] = -3") != std::string::npos);
}

TEST_CASE("models: DeepSeek-V3's sequential multi-token modules match the reference") { check_mtp_modules(); }

// A DeepSeek-V3-style module for a fixture model that has none: random input
// norms and projection, the model's last layer as its block. Its drafts
// seldom agree with the model; forced drafts give every acceptance length.
inline void add_random_module(io::ModelWeights<float>& w, std::uint64_t seed) {
  const int d = w.config.hidden;
  io::MtpWeights<float> m;
  m.enorm = random_values<float>(static_cast<std::size_t>(d), seed, 0.5f, 1.5f);
  m.hnorm = random_values<float>(static_cast<std::size_t>(d), seed + 1, 0.5f, 1.5f);
  m.shared_norm = random_values<float>(static_cast<std::size_t>(d), seed + 2, 0.5f, 1.5f);
  const float s = 1.0f / std::sqrt(2.0f * static_cast<float>(d));
  m.eh_proj = random_values<float>(static_cast<std::size_t>(2 * d * d), seed + 3, -s, s);
  m.layer = w.layers.back();
  w.mtp.push_back(std::move(m));
  w.config.mtp_modules = 1;
}

// Self-speculative decoding gives exactly the greedy ids: with the module's
// drafts, and with forced drafts whose first wrong one sits at every place.
inline void check_speculative(const std::string& name) {
  using tokenless::StatusCode;
  CAPTURE(name);
  Family f = load(name);
  add_random_module(f.w, 17);
  const auto n = static_cast<std::int64_t>(f.prompt.size());
  const int steps = 14, K = 3;
  std::unique_ptr<Model> m;
  REQUIRE_OK(Model::create(f.w, n, n + steps + K + 2, &m, K));
  REQUIRE(m->has_mtp());
  REQUIRE_OK(m->prefill(f.prompt));
  for (int i = 1; i < steps; ++i) REQUIRE_OK(m->decode());
  std::vector<std::int32_t> greedy;
  REQUIRE_OK(m->ids(n, n + steps, greedy));

  std::vector<unsigned long long> before, after;
  REQUIRE_OK(m->acceptance(before));
  REQUIRE_OK(m->prefill(f.prompt));
  int have = 1, calls = 0;  // ids[n] came with the prefill
  while (have < steps) {
    int made = 0;
    REQUIRE_OK(m->speculate(K, &made));
    CHECK(made >= 1);
    CHECK(made <= K + 1);
    have += made;
    ++calls;
  }
  REQUIRE_OK(m->read_status());
  std::vector<std::int32_t> spec;
  REQUIRE_OK(m->ids(n, n + steps, spec));
  CHECK(spec == greedy);
  REQUIRE_OK(m->acceptance(after));
  unsigned long long counted = 0;
  for (std::size_t a = 0; a < after.size(); ++a) counted += after[a] - before[a];
  CHECK(counted == static_cast<unsigned long long>(calls));

  // Forced drafts: the first wrong one at w (w = K: all right); a = w.
  const int V = f.w.config.vocab;
  REQUIRE_OK(m->acceptance(before));
  REQUIRE_OK(m->prefill(f.prompt));
  have = 1;
  std::vector<unsigned long long> want(static_cast<std::size_t>(K + 1), 0ull);
  for (int s = 0; have + K < steps; ++s) {
    const int wrong = s % (K + 1);
    std::vector<std::int32_t> drafts(greedy.begin() + have, greedy.begin() + have + K);
    if (wrong < K) drafts[wrong] = (drafts[wrong] + 1) % V;
    int made = 0;
    REQUIRE_OK(m->speculate(K, &made, &drafts));
    CHECK(made == wrong + 1);
    ++want[wrong];
    have += made;
  }
  std::vector<std::int32_t> forced;
  REQUIRE_OK(m->ids(n, n + have, forced));
  CHECK(forced == std::vector<std::int32_t>(greedy.begin(), greedy.begin() + have));
  REQUIRE_OK(m->acceptance(after));
  for (int a = 0; a <= K; ++a) CHECK(after[a] - before[a] == want[a]);

  // Bad input: refused, nothing run.
  const auto code = [&](int k, const std::vector<std::int32_t>* fd = nullptr) {
    int made = 0;
    return m->speculate(k, &made, fd).code();
  };
  CHECK(code(0) == StatusCode::invalid_argument);
  CHECK(code(K + 1) == StatusCode::invalid_argument);
  const std::vector<std::int32_t> two{1, 2};
  CHECK(code(K, &two) == StatusCode::shape_mismatch);
  REQUIRE_OK(m->prefill(f.prompt));
  REQUIRE_OK(m->decode());
  CHECK(code(K) == StatusCode::invalid_argument);  // the module's cache is behind after a plain decode
  std::unique_ptr<Model> small;
  REQUIRE_OK(Model::create(f.w, n, n + K, &small, K));  // K + 1 more do not fit
  REQUIRE_OK(small->prefill(f.prompt));
  int made = 0;
  CHECK(small->speculate(K, &made).code() == StatusCode::capacity_too_small);
}

TEST_CASE("models: self-speculative decoding gives the greedy ids (a module's drafts, forced drafts)") {
  check_speculative("llama");
  if (scale_down() == 1 && !under_asan()) check_speculative("mistral");  // a window (Mixtral: 16 s here)
}

TEST_CASE("models: Mixtral's decoder layer trains through the MoE (training forward = inference, a deterministic backward)") {
  check_moe_layer_backward();
}

TEST_CASE("models: the kernels' decoder on every family's fixture (bf16, cached and uncached greedy)") {
  for (const char* family : {"llama", "mistral", "mixtral", "phi3"}) {
    if (scale_down() > 1 && std::strcmp(family, "llama") != 0) continue;
    // Under ASan, the dense and the MoE model (a window and heads of 96 run
    // there in the layer tests): the four models took minutes at its speed.
    if (under_asan() && std::strcmp(family, "mistral") == 0) continue;
    if (under_asan() && std::strcmp(family, "phi3") == 0) continue;
    check_family(family);
  }
}

TEST_CASE("models: the decoder layer refuses bad input and names device-side failures") { check_layer_bad_input(); }

}  // namespace tlt::models_tests
