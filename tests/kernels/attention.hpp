#pragma once
// The attention core: the tensor-core primitives' fragment layouts, then
// every variant forward and backward against the double-precision reference
// (tolerance: a small multiple of a naive implementation that rounds P and
// dS to the storage type as the kernels do), bit-stable gradients, prefill
// against decode-shaped calls, and bad input. Shared by the emu and gpu
// tiers; TLT_ATTENTION_PART (0: primitives and core variants, 1: BLT and
// DLCM variants, 2: head dims, GQA and bad input, 3: decoding, 4: the race
// detector's cases and the KV cache) splits it into units.
#include "../support/testbed.hpp"

#include <tokenless/attention/attention.cuh>
#include <tokenless/attention/decode.cuh>
#include <tokenless/reference/attention.hpp>

#include "../support/patch_set.hpp"

#include <cstring>

namespace tlt::attention_tests {

namespace at = tokenless::attention;
namespace ref = tokenless::reference::attention;
using tokenless::VarlenBatch;

template <class T>
double round_to(double x) {
  return tokenless::to_float(tokenless::from_float<T>(static_cast<float>(x)));
}

// A kernel's output against the truth, at the tolerance rule's factor 4 of
// the naive same-precision error (support.hpp).
template <class T>
void check_output(const char* what, const std::vector<T>& got, const std::vector<double>& naive,
                  const std::vector<double>& truth) {
  INFO(what);
  check_accuracy(to_floats(got), rounded<T>(naive), truth, 4.0, tokenless::dtype_traits<T>::unit_roundoff);
}
// LSEs agree to fp32 roundoff of the scores; -inf (no visible key) exactly.
inline void check_lse(const std::vector<float>& got, const std::vector<double>& truth) {
  for (std::size_t i = 0; i < truth.size(); ++i) {
    CAPTURE(i);
    if (std::isinf(truth[i])) CHECK(got[i] == -INFINITY);
    else CHECK(std::fabs(got[i] - truth[i]) <= 1e-4 * std::max(1.0, std::fabs(truth[i])));
  }
}
template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// One problem: sequences, heads, head dim; uniform = the padded [B, S] form.
struct Shape {
  std::vector<std::int32_t> cu_q, cu_k;
  int heads = 2, kv_heads = 1, d = 64;
  bool uniform = false;
  double soft_cap = 0;
  float scale = 0;  // the softmax scale given (0: the default, 1 / sqrt(d))
  std::int64_t seqs() const { return static_cast<std::int64_t>(cu_q.size()) - 1; }
};

// Runs forward and backward of variant V on `sh` and checks both against the
// reference under `mask`; returns the forward's output for further checks.
template <class V, class T, class HD = at::HeadDims<64>>
std::vector<T> check_variant(const Shape& sh, const typename V::Params& vp, const ref::Mask& mask, std::uint64_t seed,
                             bool backward = true) {
  const int H = sh.heads, Hk = sh.kv_heads, D = sh.d;
  const std::int64_t tq = sh.cu_q.back(), tk = sh.cu_k.back();
  const auto qh = random_values<T>(static_cast<std::size_t>(tq * H * D), seed, -2.0f, 2.0f);
  const auto kh = random_values<T>(static_cast<std::size_t>(tk * Hk * D), seed + 1, -2.0f, 2.0f);
  const auto vh = random_values<T>(static_cast<std::size_t>(tk * Hk * D), seed + 2);
  const auto goh = random_values<T>(static_cast<std::size_t>(tq * H * D), seed + 3);
  DeviceBuffer<T> q(qh), k(kh), v(vh), out(static_cast<std::size_t>(tq * H * D)), go(goh);
  DeviceBuffer<float> lse(static_cast<std::size_t>(H * tq));
  DeviceBuffer<std::int32_t> cuq(sh.cu_q), cuk(sh.cu_k);
  const VarlenBatch qb = sh.uniform ? VarlenBatch::uniform(sh.seqs(), tq / sh.seqs())
                                    : VarlenBatch::packed(cuq.get(), sh.seqs(), tq);
  const VarlenBatch kb = sh.uniform ? VarlenBatch::uniform(sh.seqs(), tk / sh.seqs())
                                    : VarlenBatch::packed(sh.cu_q == sh.cu_k ? cuq.get() : cuk.get(), sh.seqs(), tk);

  using Fwd = at::Forward<V, T, HD>;
  Testbed<Fwd>().run_ok({.q = q.get(), .k = k.get(), .v = v.get(), .q_batch = qb, .k_batch = kb, .heads = H,
                         .kv_heads = Hk, .head_dim = D, .scale = sh.scale, .variant = vp, .out = out.get(),
                         .lse = lse.get()});

  // The reference takes the scale in double: the kernels' fp32 scale, widened.
  ref::Shape rs{sh.cu_q, sh.cu_k, H, Hk, D, static_cast<double>(sh.scale), sh.soft_cap};
  const auto qd = widen(qh), kd = widen(kh), vd = widen(vh), god = widen(goh);
  std::vector<double> o_true, lse_true, o_naive, lse_naive;
  ref::forward(rs, mask, qd, kd, vd, o_true, lse_true);
  ref::forward(rs, mask, qd, kd, vd, o_naive, lse_naive, round_to<T>);
  const auto o_got = out.download();
  check_output("forward output", o_got, o_naive, o_true);
  check_lse(lse.download(), lse_true);
  for (std::size_t i = 0; i < lse_true.size(); ++i) {
    if (!std::isinf(lse_true[i])) continue;  // no visible key: a zero row
    const std::int64_t h = static_cast<std::int64_t>(i) / tq, pos = static_cast<std::int64_t>(i) % tq;
    for (int c = 0; c < D; ++c) CHECK(tokenless::to_float(o_got[(pos * H + h) * D + c]) == 0.0f);
  }
  if (!backward) return o_got;

  DeviceBuffer<T> gq(static_cast<std::size_t>(tq * H * D)), gk(static_cast<std::size_t>(tk * Hk * D)),
      gv(static_cast<std::size_t>(tk * Hk * D));
  using Bwd = at::Backward<V, T, HD>;
  const typename Bwd::Arguments g{.q = q.get(), .k = k.get(), .v = v.get(), .out = out.get(), .grad_out = go.get(),
                                  .lse = lse.get(), .q_batch = qb, .k_batch = kb, .heads = H, .kv_heads = Hk,
                                  .head_dim = D, .scale = sh.scale, .variant = vp, .grad_q = gq.get(),
                                  .grad_k = gk.get(), .grad_v = gv.get()};
  Testbed<Bwd> bed;
  bed.run_ok(g);
  std::vector<double> dq_true, dk_true, dv_true, dq_naive, dk_naive, dv_naive;
  ref::backward(rs, mask, qd, kd, vd, god, dq_true, dk_true, dv_true);
  ref::backward(rs, mask, qd, kd, vd, god, dq_naive, dk_naive, dv_naive, round_to<T>);
  const auto dq = gq.download(), dk = gk.download(), dv = gv.download();
  check_output("dQ", dq, dq_naive, dq_true);
  check_output("dK", dk, dk_naive, dk_true);
  check_output("dV", dv, dv_naive, dv_true);
  // No atomics: a second run gives the same bits.
  bed.run_ok(g);
  CHECK(same_bits(dq, gq.download()));
  CHECK(same_bits(dk, gk.download()));
  CHECK(same_bits(dv, gv.download()));
  return o_got;
}

// Local-position masks from the reference rules.
inline ref::Mask causal_mask(const Shape& sh) {
  return [&sh](std::int64_t b, int i, int j) {
    return ref::causal(i, j, sh.cu_q[b + 1] - sh.cu_q[b], sh.cu_k[b + 1] - sh.cu_k[b]);
  };
}
inline ref::Mask window_mask(const Shape& sh, int w) {
  return [&sh, w](std::int64_t b, int i, int j) {
    return ref::window(i, j, sh.cu_q[b + 1] - sh.cu_q[b], sh.cu_k[b + 1] - sh.cu_k[b], w);
  };
}

// ------------------------------------------------------------------ decoding from a KV cache
// A cache of capacity `cap` whose sequence b holds lens[b] tokens, the last
// n_new[b] of them new; the queries are the new tokens'. Checks Decode
// against the reference (the cache rows packed, the variant's rule bottom-
// right aligned) and returns its output.
template <class V, class T, class HD = at::HeadDims<64>>
std::vector<T> check_decode(const std::vector<int>& lens, const std::vector<int>& n_new, int cap, int H, int Hk, int D,
                            const typename V::Params& vp, std::function<bool(int, int, int, int)> rule,
                            int num_splits, std::uint64_t seed, std::vector<T>* q_out = nullptr,
                            std::vector<T>* kc_out = nullptr, std::vector<T>* vc_out = nullptr, float scale = 0) {
  const int B = static_cast<int>(lens.size());
  std::vector<std::int32_t> cu_q = {0}, cu_k = {0};
  for (int b = 0; b < B; ++b) {
    cu_q.push_back(cu_q.back() + n_new[b]);
    cu_k.push_back(cu_k.back() + lens[b]);
  }
  const std::int64_t tq = cu_q.back();
  const auto qh = random_values<T>(static_cast<std::size_t>(tq * H * D), seed, -2.0f, 2.0f);
  const auto kc = random_values<T>(static_cast<std::size_t>(B) * cap * Hk * D, seed + 1, -2.0f, 2.0f);
  const auto vc = random_values<T>(static_cast<std::size_t>(B) * cap * Hk * D, seed + 2);
  DeviceBuffer<T> q(qh), k(kc), v(vc), out(static_cast<std::size_t>(tq * H * D));
  DeviceBuffer<float> lse(static_cast<std::size_t>(H * tq));
  DeviceBuffer<std::int32_t> d_cu(cu_q), d_len(std::vector<std::int32_t>(lens.begin(), lens.end()));
  using Op = at::Decode<V, T, HD>;
  Testbed<Op>().run_ok({.q = q.get(), .q_batch = VarlenBatch::packed(d_cu.get(), B, tq), .k_cache = k.get(),
                        .v_cache = v.get(), .cache_len = d_len.get(), .capacity = cap, .heads = H, .kv_heads = Hk,
                        .head_dim = D, .num_splits = num_splits, .scale = scale, .variant = vp, .out = out.get(),
                        .lse = lse.get()});

  // The reference over the packed cache rows.
  std::vector<double> kd, vd;
  for (int b = 0; b < B; ++b) {
    for (int j = 0; j < lens[b]; ++j) {
      for (int c = 0; c < Hk * D; ++c) {
        kd.push_back(tokenless::to_float(kc[(static_cast<std::size_t>(b) * cap + j) * Hk * D + c]));
        vd.push_back(tokenless::to_float(vc[(static_cast<std::size_t>(b) * cap + j) * Hk * D + c]));
      }
    }
  }
  ref::Shape rs{cu_q, cu_k, H, Hk, D, static_cast<double>(scale)};
  auto mask = [&](std::int64_t b, int i, int j) { return rule(i, j, n_new[b], lens[b]); };
  std::vector<double> o_true, lse_true, o_naive, lse_naive;
  ref::forward(rs, mask, widen(qh), kd, vd, o_true, lse_true);
  ref::forward(rs, mask, widen(qh), kd, vd, o_naive, lse_naive, round_to<T>);
  const auto got = out.download();
  check_output("decode output", got, o_naive, o_true);
  check_lse(lse.download(), lse_true);
  if (q_out) *q_out = qh;
  if (kc_out) *kc_out = kc;
  if (vc_out) *vc_out = vc;
  return got;
}

inline bool causal_rule(int i, int j, int lq, int lk) { return ref::causal(i, j, lq, lk); }

#if !defined(TLT_ATTENTION_PART) || TLT_ATTENTION_PART == 0
// ------------------------------------------------------------------ primitives
// One warp: C = A B through ldmatrix (A row-major, B from [n][k] and from
// [k][n] storage) and mma.sync, against the host product. On a GPU this pins
// the documented fragment layouts to the hardware's.
template <class T>
__global__ void mma_layout_kernel(const T* a, const T* b_nk, const T* b_kn, float* c_nk, float* c_kn) {
  namespace d = tokenless::attention::detail;
  constexpr int S = d::Traits<64>::kStride;
  __shared__ __align__(16) T sa[16 * S];
  __shared__ __align__(16) T sb[16 * S];
  __shared__ __align__(16) T sbt[16 * S];
  for (int i = static_cast<int>(threadIdx.x); i < 16 * 16; i += 32) {
    sa[(i / 16) * S + i % 16] = a[i];
    sb[(i / 16) * S + i % 16] = b_nk[i];
    sbt[(i / 16) * S + i % 16] = b_kn[i];
  }
  __syncthreads();
  const tokenless::mma::FragA fa = d::load_a<64>(sa, 0, 0);
  tokenless::mma::FragB fb[2], fbt[2];
  d::load_b_nk<64>(sb, 0, 0, fb);
  d::load_b_kn<64>(sbt, 0, 0, fbt);
  const int lane = static_cast<int>(threadIdx.x), g = lane / 4, t = lane % 4;
  for (int n = 0; n < 2; ++n) {
    tokenless::mma::FragC c{}, ct{};
    tokenless::mma::mma_16816<T>(c, fa, fb[n]);
    tokenless::mma::mma_16816<T>(ct, fa, fbt[n]);
    for (int e = 0; e < 4; ++e) {
      const int row = g + 8 * (e >> 1), col = 8 * n + 2 * t + (e & 1);
      c_nk[row * 16 + col] = c.x[e];
      c_kn[row * 16 + col] = ct.x[e];
    }
  }
}

template <class T>
void check_mma_layouts() {
  std::vector<T> a(256), bnk(256), bkn(256);
  std::mt19937 rng(11);
  for (int i = 0; i < 256; ++i) {
    a[i] = tokenless::from_float<T>(static_cast<float>(static_cast<int>(rng() % 9) - 4));
    bnk[i] = tokenless::from_float<T>(static_cast<float>(static_cast<int>(rng() % 9) - 4));
    bkn[i] = tokenless::from_float<T>(static_cast<float>(static_cast<int>(rng() % 9) - 4));
  }
  DeviceBuffer<T> da(a), db(bnk), dbt(bkn);
  DeviceBuffer<float> c(256), ct(256);
  REQUIRE_OK(tokenless::launch(mma_layout_kernel<T>, {dim3(1), dim3(32)}, da.get(), db.get(), dbt.get(), c.get(),
                               ct.get()));
  const auto hc = c.download(), hct = ct.download();
  for (int r = 0; r < 16; ++r) {
    for (int n = 0; n < 16; ++n) {
      float want = 0, want_t = 0;  // small integers: exact in any order
      for (int k = 0; k < 16; ++k) {
        want += tokenless::to_float(a[r * 16 + k]) * tokenless::to_float(bnk[n * 16 + k]);
        want_t += tokenless::to_float(a[r * 16 + k]) * tokenless::to_float(bkn[k * 16 + n]);
      }
      CAPTURE(r);
      CAPTURE(n);
      CHECK(hc[r * 16 + n] == want);
      CHECK(hct[r * 16 + n] == want_t);
    }
  }
}

TEST_CASE("attention: mma.sync and ldmatrix follow the PTX fragment layouts") {
  check_mma_layouts<__nv_bfloat16>();
  check_mma_layouts<__half>();
}

// ------------------------------------------------------------------ full, causal, window, documents
TEST_CASE("attention: full and causal, varlen with sequences of length 1, forward and backward") {
  Shape sh{{0, 70, 71, 200, 201}, {0, 70, 71, 200, 201}, 2, 1, 64};
  check_variant<at::Full, __nv_bfloat16>(sh, {}, [](std::int64_t, int, int) { return true; }, 101);
  check_variant<at::Causal, __nv_bfloat16>(sh, {}, causal_mask(sh), 102);
  check_variant<at::Causal, __half>(sh, {}, causal_mask(sh), 103);
}

TEST_CASE("attention: the padded [B, S] form, and causal with fewer queries than keys (bottom-right)") {
  Shape padded{{0, 96, 192}, {0, 96, 192}, 2, 2, 64, true};
  check_variant<at::Causal, __nv_bfloat16>(padded, {}, causal_mask(padded), 111);
  // Queries 1, 5 and 16 against caches of 130, 64 and 17 keys.
  Shape dec{{0, 1, 6, 22}, {0, 130, 194, 211}, 4, 1, 64};
  check_variant<at::Causal, __nv_bfloat16>(dec, {}, causal_mask(dec), 112);
}

TEST_CASE("attention: sliding window, small and spanning tiles") {
  Shape sh{{0, 150, 151, 230}, {0, 150, 151, 230}, 2, 1, 64};
  check_variant<at::SlidingWindow, __nv_bfloat16>(sh, {5}, window_mask(sh, 5), 121);
  check_variant<at::SlidingWindow, __half>(sh, {70}, window_mask(sh, 70), 122);
}

TEST_CASE("attention: documents within padded rows, and BLT's local block-causal window") {
  // Two rows of 100; documents [0,30) [30,100) | [100,101) [101,200).
  Shape sh{{0, 100, 200}, {0, 100, 200}, 2, 1, 64, true};
  const std::vector<std::int32_t> docs = {0, 30, 100, 101, 200};
  DeviceBuffer<std::int32_t> d_docs(docs);
  const VarlenBatch db = VarlenBatch::packed(d_docs.get(), 4, 200);
  auto doc_of = [docs](std::int64_t pos) {
    int d = 0;
    while (docs[d + 1] <= pos) ++d;
    return d;
  };
  auto same_doc = [&sh, doc_of](std::int64_t b, int i, int j) { return doc_of(sh.cu_q[b] + i) == doc_of(sh.cu_k[b] + j); };
  check_variant<at::Documents<at::Causal>, __nv_bfloat16>(
      sh, {db, {}}, [&](std::int64_t b, int i, int j) { return same_doc(b, i, j) && ref::causal(i, j, 100, 100); }, 131);
  check_variant<at::LocalBlockCausal, __nv_bfloat16>(
      sh, {db, {16}}, [&](std::int64_t b, int i, int j) { return same_doc(b, i, j) && ref::window(i, j, 100, 100, 16); },
      132);
}

TEST_CASE("attention: soft-capped causal scores, forward and backward") {
  Shape sh{{0, 80, 130}, {0, 80, 130}, 2, 1, 64};
  sh.soft_cap = 2.0;
  check_variant<at::SoftCap<at::Causal>, __nv_bfloat16>(sh, {2.0f, {}}, causal_mask(sh), 141);
}

// A mutation audit found that no test gave a scale other than the default:
// reading the caller's scale as a factor on 1/√d went unseen. 0.3 (not
// 1/√64 = 0.125) against the reference at 0.3, forward and backward; and a
// scale's effect is real: the outputs differ from the default's.
TEST_CASE("attention: an explicit softmax scale, forward and backward") {
  Shape sh{{0, 70, 130}, {0, 70, 130}, 2, 1, 64};
  sh.scale = 0.3f;
  const auto scaled = check_variant<at::Causal, __nv_bfloat16>(sh, {}, causal_mask(sh), 151);
  sh.scale = 0;
  const auto plain = check_variant<at::Causal, __nv_bfloat16>(sh, {}, causal_mask(sh), 151, /*backward=*/false);
  CHECK(!same_bits(scaled, plain));
}

TEST_CASE("attention: the last rows of a prefill equal the decode-shaped call, bit for bit") {
  // Prefill: 100 queries over 100 keys. Decode: the last 3 queries over the same keys.
  const int H = 4, Hk = 2, D = 64, n = 100, last = 3;
  const auto qh = random_values<__nv_bfloat16>(n * H * D, 151, -2.0f, 2.0f);
  const auto kh = random_values<__nv_bfloat16>(n * Hk * D, 152, -2.0f, 2.0f);
  const auto vh = random_values<__nv_bfloat16>(n * Hk * D, 153);
  DeviceBuffer<__nv_bfloat16> q(qh), k(kh), v(vh), out(n * H * D), out_last(last * H * D);
  using Fwd = at::Forward<at::Causal, __nv_bfloat16, at::HeadDims<64>>;
  Fwd::Arguments a{.q = q.get(), .k = k.get(), .v = v.get(), .q_batch = VarlenBatch::uniform(1, n),
                   .k_batch = VarlenBatch::uniform(1, n), .heads = H, .kv_heads = Hk, .head_dim = D, .out = out.get()};
  Testbed<Fwd>().run_ok(a);
  a.q = q.get() + (n - last) * H * D;
  a.q_batch = VarlenBatch::uniform(1, last);
  a.out = out_last.get();
  Testbed<Fwd>().run_ok(a);
  const auto full = out.download(), tail = out_last.download();
  CHECK(same_bits(std::vector<__nv_bfloat16>(full.begin() + (n - last) * H * D, full.end()), tail));
}
#endif

#if !defined(TLT_ATTENTION_PART) || TLT_ATTENTION_PART == 1
// ------------------------------------------------------------------ BLT and DLCM
// Random patch lengths of 1..max over sequences of the given byte counts.
inline std::vector<std::vector<int>> random_lengths(const std::vector<int>& bytes, int max_len, std::uint64_t seed) {
  std::mt19937 rng(static_cast<std::uint32_t>(seed));
  std::vector<std::vector<int>> out;
  for (int n : bytes) {
    std::vector<int> seq;
    for (int left = n; left > 0;) {
      const int len = std::min(left, 1 + static_cast<int>(rng() % static_cast<unsigned>(max_len)));
      seq.push_back(len);
      left -= len;
    }
    out.push_back(seq);
  }
  return out;
}

TEST_CASE("attention: BLT encoder cross-attention (slots to bytes), CSR and ids inputs, windows") {
  // A one-byte sequence, a sequence of one-byte patches and long ones.
  const PatchSet ps(random_lengths({1, 90, 140}, 9, 7));
  const int k = 2;
  DeviceBuffer<std::int32_t> off(ps.offsets), st(ps.starts), ln(ps.lens), ids(ps.ids);
  Shape sh{ps.slots_cu(k), ps.cu_bytes, 2, 2, 64};
  for (int w : {1, 3}) {
    CAPTURE(w);
    auto mask = [&](std::int64_t b, int s, int j) {
      const auto enc = ref::encoder_patch_ids(ps.lengths[b], sh.cu_k[b + 1] - sh.cu_k[b]);
      return ref::encoder_cross(enc, s, j, k, w);
    };
    check_variant<at::PatchesToBytes, __nv_bfloat16>(sh, {{off.get(), st.get(), ln.get(), nullptr}, k, w}, mask, 200 + w);
    check_variant<at::PatchesToBytes, __half>(sh, {{nullptr, nullptr, nullptr, ids.get()}, k, w}, mask, 210 + w, w == 1);
  }
}

TEST_CASE("attention: BLT decoder cross-attention (bytes to slots), windows") {
  const PatchSet ps(random_lengths({1, 90, 140}, 9, 8));
  const int k = 2;
  DeviceBuffer<std::int32_t> off(ps.offsets), st(ps.starts), ln(ps.lens), ids(ps.ids);
  Shape sh{ps.cu_bytes, ps.slots_cu(k), 2, 1, 64};
  for (int w : {1, 2}) {
    CAPTURE(w);
    auto mask = [&](std::int64_t b, int i, int s) {
      const auto dec = ref::decoder_patch_ids(ps.lengths[b], sh.cu_q[b + 1] - sh.cu_q[b]);
      return ref::decoder_cross(dec, i, s, k, w);
    };
    check_variant<at::BytesToPatches, __nv_bfloat16>(sh, {{off.get(), st.get(), ln.get(), nullptr}, k, w}, mask, 220 + w);
    check_variant<at::BytesToPatches, __half>(sh, {{nullptr, nullptr, nullptr, ids.get()}, k, w}, mask, 230 + w, false);
  }
}

TEST_CASE("attention: DLCM token-to-concept, started and completed segments") {
  const PatchSet ps(random_lengths({3, 100, 77}, 7, 9));
  DeviceBuffer<std::int32_t> off(ps.offsets), st(ps.starts), ln(ps.lens), ids(ps.ids);
  std::vector<std::int32_t> cu_concepts = {0};
  for (const auto& seq : ps.lengths) cu_concepts.push_back(cu_concepts.back() + static_cast<std::int32_t>(seq.size()));
  Shape sh{ps.cu_bytes, cu_concepts, 2, 1, 64};
  auto bounds = [&](std::int64_t b, bool end) {
    std::vector<int> v;
    int pos = 0;
    for (int len : ps.lengths[b]) {
      v.push_back(end ? pos + len : pos);
      pos += len;
    }
    return v;
  };
  check_variant<at::TokensToConcepts, __nv_bfloat16>(
      sh, {{off.get(), st.get(), ln.get(), nullptr}, at::ConceptVisibility::started},
      [&](std::int64_t b, int t, int c) { return ref::concept_started(bounds(b, false), t, c); }, 241);
  // Strict: a token inside the first segment sees nothing (zeros, LSE -inf).
  check_variant<at::TokensToConcepts, __half>(
      sh, {{nullptr, nullptr, nullptr, ids.get()}, at::ConceptVisibility::completed},
      [&](std::int64_t b, int t, int c) { return ref::concept_completed(bounds(b, true), t, c); }, 242);
}

#endif

#if !defined(TLT_ATTENTION_PART) || TLT_ATTENTION_PART == 2
// ------------------------------------------------------------------ head dims, GQA, bad input
TEST_CASE("attention: head dims 96 and 128, GQA ratios 1, 4 and 8") {
  // Each call instantiates only its head dim (the compile tier builds every
  // operation for all three), so the unit stays quick to build.
  Shape s96{{0, 40, 105}, {0, 40, 105}, 4, 1, 96};
  check_variant<at::Causal, __nv_bfloat16, at::HeadDims<96>>(s96, {}, causal_mask(s96), 301);
  Shape s128{{0, 1, 77}, {0, 1, 77}, 8, 1, 128};
  check_variant<at::Causal, __half, at::HeadDims<128>>(s128, {}, causal_mask(s128), 302);
  Shape g1{{0, 33, 50}, {0, 33, 50}, 2, 2, 128};
  check_variant<at::Full, __nv_bfloat16, at::HeadDims<128>>(g1, {}, [](std::int64_t, int, int) { return true; }, 303);
  Shape g4{{0, 70}, {0, 70}, 4, 1, 64};
  check_variant<at::SlidingWindow, __half, at::HeadDims<64>>(g4, {20}, window_mask(g4, 20), 304);
}

TEST_CASE("attention: q, k and v inside a fused QKV projection's output, gradients into a fused buffer") {
  // qkv [N, (H + 2 Hk) D]: the strided call must equal the packed one bit for bit.
  using T = __nv_bfloat16;
  const int H = 4, Hk = 2, D = 64, W = (H + 2 * Hk) * D;
  const std::vector<std::int32_t> cu = {0, 37, 100};
  const std::int64_t n = cu.back();
  const auto qkv_h = random_values<T>(static_cast<std::size_t>(n * W), 321, -2.0f, 2.0f);
  const auto go_h = random_values<T>(static_cast<std::size_t>(n * H * D), 322);
  std::vector<T> qh, kh, vh;
  for (std::int64_t t = 0; t < n; ++t) {
    qh.insert(qh.end(), qkv_h.begin() + t * W, qkv_h.begin() + t * W + H * D);
    kh.insert(kh.end(), qkv_h.begin() + t * W + H * D, qkv_h.begin() + t * W + (H + Hk) * D);
    vh.insert(vh.end(), qkv_h.begin() + t * W + (H + Hk) * D, qkv_h.begin() + (t + 1) * W);
  }
  DeviceBuffer<T> qkv(qkv_h), q(qh), k(kh), v(vh), go(go_h), out(n * H * D), out_f(n * W), dqkv(n * W),
      dq(n * H * D), dk(n * Hk * D), dv(n * Hk * D);
  DeviceBuffer<float> lse(H * n), lse_f(H * n);
  DeviceBuffer<std::int32_t> d_cu(cu);
  // Row t of a fused [n, width] buffer, at column `at`, equals row t of a packed [n, w] one.
  auto same_rows = [n](const auto& packed, int w, const auto& fused, int width, int at) {
    for (std::int64_t t = 0; t < n; ++t) {
      CAPTURE(t);
      CHECK(std::memcmp(packed.data() + t * w, fused.data() + t * width + at, w * sizeof(T)) == 0);
    }
  };
  const VarlenBatch batch = VarlenBatch::packed(d_cu.get(), 2, n);
  using Fwd = at::Forward<at::Causal, T, at::HeadDims<64>>;
  Testbed<Fwd>().run_ok({.q = q.get(), .k = k.get(), .v = v.get(), .q_batch = batch, .k_batch = batch, .heads = H,
                         .kv_heads = Hk, .head_dim = D, .out = out.get(), .lse = lse.get()});
  const T* fq = qkv.get();
  const T* fk = qkv.get() + H * D;
  const T* fv = qkv.get() + (H + Hk) * D;
  Testbed<Fwd>().run_ok({.q = fq, .k = fk, .v = fv, .q_batch = batch, .k_batch = batch, .heads = H, .kv_heads = Hk,
                         .head_dim = D, .q_stride = W, .k_stride = W, .v_stride = W, .out_stride = W,
                         .out = out_f.get(), .lse = lse_f.get()});
  same_rows(out.download(), H * D, out_f.download(), W, 0);
  CHECK(lse.download() == lse_f.download());

  using Bwd = at::Backward<at::Causal, T, at::HeadDims<64>>;
  Testbed<Bwd>().run_ok({.q = q.get(), .k = k.get(), .v = v.get(), .out = out.get(), .grad_out = go.get(),
                         .lse = lse.get(), .q_batch = batch, .k_batch = batch, .heads = H, .kv_heads = Hk,
                         .head_dim = D, .grad_q = dq.get(), .grad_k = dk.get(), .grad_v = dv.get()});
  Testbed<Bwd>().run_ok({.q = fq, .k = fk, .v = fv, .out = out_f.get(), .grad_out = go.get(), .lse = lse.get(),
                         .q_batch = batch, .k_batch = batch, .heads = H, .kv_heads = Hk, .head_dim = D,
                         .q_stride = W, .k_stride = W, .v_stride = W, .out_stride = W, .grad_q_stride = W,
                         .grad_k_stride = W, .grad_v_stride = W, .grad_q = dqkv.get(), .grad_k = dqkv.get() + H * D,
                         .grad_v = dqkv.get() + (H + Hk) * D});
  const auto fused = dqkv.download();
  same_rows(dq.download(), H * D, fused, W, 0);
  same_rows(dk.download(), Hk * D, fused, W, H * D);
  same_rows(dv.download(), Hk * D, fused, W, (H + Hk) * D);
}

TEST_CASE("attention: bad input gets a clear Status and writes nothing") {
  using T = __nv_bfloat16;
  using Fwd = at::Forward<at::SlidingWindow, T, at::HeadDims<64>>;
  const int H = 4, Hk = 2, D = 64;
  const std::vector<std::int32_t> cu = {0, 10, 30}, bad_cu = {0, 20, 10, 30};
  DeviceBuffer<std::int32_t> d_cu(cu), d_bad(bad_cu);
  DeviceBuffer<T> q(30 * H * D), k(30 * Hk * D), v(30 * Hk * D), out(30 * H * D);
  q.fill_bytes(0);
  k.fill_bytes(0);
  v.fill_bytes(0);
  DeviceBuffer<float> lse(H * 30);
  const VarlenBatch batch = VarlenBatch::packed(d_cu.get(), 2, 30);
  const Fwd::Arguments a{.q = q.get(), .k = k.get(), .v = v.get(), .q_batch = batch, .k_batch = batch, .heads = H,
                         .kv_heads = Hk, .head_dim = D, .variant = {8}, .out = out.get(), .lse = lse.get()};
  using Bad = Testbed<Fwd>::Bad;
  using tokenless::StatusCode;
  Testbed<Fwd> bed;
  bed.watch(out).watch(lse);
  bed.reject(a, {
      Bad{"head dim 80", [](auto& x) { x.head_dim = 80; }, StatusCode::unsupported, "head_dim"},
      Bad{"heads not a multiple of kv_heads", [](auto& x) { x.kv_heads = 3; }, StatusCode::invalid_argument, "kv_heads"},
      Bad{"window 0", [](auto& x) { x.variant.window = 0; }, StatusCode::empty, "variant.window"},
      Bad{"window < 0", [](auto& x) { x.variant.window = -2; }, StatusCode::invalid_argument, "variant.window"},
      Bad{"mismatched batches", [&](auto& x) { x.k_batch = VarlenBatch::packed(d_bad.get(), 3, 30); },
          StatusCode::shape_mismatch, "k_batch.num_seqs"},
      Bad{"empty batch", [](auto& x) { x.q_batch.num_seqs = 0; }, StatusCode::empty, "q_batch"},
      Bad{"null q", [](auto& x) { x.q = nullptr; }, StatusCode::null_pointer, "'q'"},
      Bad{"null out", [](auto& x) { x.out = nullptr; }, StatusCode::null_pointer, "'out'"},
      Bad{"misaligned k", [&](auto& x) { x.k = k.get() + 1; }, StatusCode::misaligned, "'k'"},
      Bad{"overlapping rows", [](auto& x) { x.q_stride = 64; }, StatusCode::invalid_argument, "'q'"},
      Bad{"stride not 16-byte", [](auto& x) { x.v_stride = 132; }, StatusCode::invalid_argument, "'v'"},
      Bad{"NaN scale", [](auto& x) { x.scale = NAN; }, StatusCode::invalid_argument, "scale"},
      Bad{"cu_seqlens not a prefix sum (device)",
          [&](auto& x) { x.q_batch = x.k_batch = VarlenBatch::packed(d_bad.get(), 3, 30); },
          StatusCode::invalid_argument, "q_batch.cu_seqlens"},
      Bad{"key cu_seqlens not a prefix sum (device)",
          [&](auto& x) {
            x.q_batch = VarlenBatch::uniform(3, 10);
            x.k_batch = VarlenBatch::packed(d_bad.get(), 3, 30);
          },
          StatusCode::invalid_argument, "k_batch.cu_seqlens"},
  });

  // The cross-attention variants: k and the window.
  using Enc = at::Forward<at::PatchesToBytes, T, at::HeadDims<64>>;
  DeviceBuffer<std::int32_t> ids(std::vector<std::int32_t>(30, 0));
  const Enc::Arguments e{.q = q.get(), .k = k.get(), .v = v.get(), .q_batch = batch, .k_batch = batch, .heads = H,
                         .kv_heads = Hk, .head_dim = D, .variant = {{nullptr, nullptr, nullptr, ids.get()}, 2, 1},
                         .out = out.get()};
  Testbed<Enc> enc;
  enc.watch(out);
  using EBad = Testbed<Enc>::Bad;
  enc.reject(e, {
      EBad{"k 0", [](auto& x) { x.variant.k = 0; }, StatusCode::empty, "variant.k"},
      EBad{"k < 0", [](auto& x) { x.variant.k = -1; }, StatusCode::invalid_argument, "variant.k"},
      EBad{"window 0", [](auto& x) { x.variant.window = 0; }, StatusCode::empty, "variant.window"},
      EBad{"no patches", [](auto& x) { x.variant.patches.ids = nullptr; }, StatusCode::null_pointer, "variant.patches"},
      EBad{"starts without offsets", [&](auto& x) { x.variant.patches.starts = ids.get(); }, StatusCode::null_pointer,
           "variant.patches.offsets"},
  });

  // Documents: their offsets are checked on the device too.
  using Doc = at::Forward<at::LocalBlockCausal, T, at::HeadDims<64>>;
  const Doc::Arguments dd{.q = q.get(), .k = k.get(), .v = v.get(), .q_batch = batch, .k_batch = batch, .heads = H,
                          .kv_heads = Hk, .head_dim = D, .variant = {batch, {4}}, .out = out.get()};
  Testbed<Doc> doc;
  doc.watch(out);
  using DBad = Testbed<Doc>::Bad;
  doc.reject(dd, {
      DBad{"documents not a prefix sum (device)",
           [&](auto& x) { x.variant.docs = VarlenBatch::packed(d_bad.get(), 3, 30); }, StatusCode::invalid_argument,
           "variant.docs.cu_seqlens"},
      DBad{"documents over other positions", [&](auto& x) { x.variant.docs = VarlenBatch::uniform(2, 16); },
           StatusCode::shape_mismatch, "variant.docs.total"},
      DBad{"not self-attention", [&](auto& x) { x.k_batch = VarlenBatch::uniform(2, 15); }, StatusCode::shape_mismatch,
           "self-attention"},
  });
}
#endif


#if !defined(TLT_ATTENTION_PART) || TLT_ATTENTION_PART == 3
// ------------------------------------------------------------------ decoding
TEST_CASE("attention decode: 1 to 16 new queries, GQA 1, 4 and 8, split-KV, against the reference") {
  // Caches of 1, 100, 300 and 17 tokens (capacity 320), 1, 5, 16 and 3 new queries.
  const std::vector<int> lens = {1, 100, 300, 17}, n_new = {1, 5, 16, 3};
  for (int splits : {1, 0, 3}) {
    CAPTURE(splits);
    check_decode<at::Causal, __nv_bfloat16>(lens, n_new, 320, 4, 4, 64, {}, causal_rule, splits, 401);
    check_decode<at::Causal, __half>(lens, n_new, 320, 8, 2, 64, {}, causal_rule, splits, 402);
    check_decode<at::Causal, __nv_bfloat16>(lens, n_new, 320, 8, 1, 64, {}, causal_rule, splits, 403);
  }
  // Mistral's sliding window, and head dim 128.
  check_decode<at::SlidingWindow, __nv_bfloat16>(lens, n_new, 320, 4, 1, 64, {40},
                                                 [](int i, int j, int lq, int lk) { return ref::window(i, j, lq, lk, 40); },
                                                 0, 404);
  check_decode<at::Causal, __half, at::HeadDims<128>>({700}, {2}, 768, 4, 1, 128, {}, causal_rule, 0, 405);
}

TEST_CASE("attention decode: an explicit softmax scale against the reference at that scale") {
  const std::vector<int> lens = {1, 100, 37}, n_new = {1, 4, 2};
  for (int splits : {1, 3}) {
    CAPTURE(splits);
    check_decode<at::Causal, __nv_bfloat16>(lens, n_new, 128, 4, 2, 64, {}, causal_rule, splits, 411, nullptr, nullptr,
                                            nullptr, 0.3f);
  }
}

TEST_CASE("attention decode: the last rows of a prefill equal the decode results") {
  using T = __nv_bfloat16;
  const std::vector<int> lens = {70, 130}, n_new = {4, 16};
  const int cap = 160, H = 4, Hk = 2, D = 64;
  std::vector<T> qh, kc, vc;
  const auto dec = check_decode<at::Causal, T>(lens, n_new, cap, H, Hk, D, {}, causal_rule, 1, 411, &qh, &kc, &vc);
  // Prefill each whole sequence (queries for every position: the new ones
  // are the decode's, the rest random), keys and values the cache rows.
  for (int b = 0, q0 = 0; b < 2; q0 += n_new[b], ++b) {
    const int n = lens[b];
    auto qf = random_values<T>(static_cast<std::size_t>(n) * H * D, 412 + b, -2.0f, 2.0f);
    std::copy(qh.begin() + static_cast<std::ptrdiff_t>(q0) * H * D, qh.begin() + static_cast<std::ptrdiff_t>(q0 + n_new[b]) * H * D,
              qf.begin() + static_cast<std::ptrdiff_t>(n - n_new[b]) * H * D);
    const std::vector<T> kf(kc.begin() + static_cast<std::ptrdiff_t>(b) * cap * Hk * D,
                            kc.begin() + (static_cast<std::ptrdiff_t>(b) * cap + n) * Hk * D);
    const std::vector<T> vf(vc.begin() + static_cast<std::ptrdiff_t>(b) * cap * Hk * D,
                            vc.begin() + (static_cast<std::ptrdiff_t>(b) * cap + n) * Hk * D);
    DeviceBuffer<T> q(qf), k(kf), v(vf), out(static_cast<std::size_t>(n) * H * D);
    using Fwd = at::Forward<at::Causal, T, at::HeadDims<64>>;
    Testbed<Fwd>().run_ok({.q = q.get(), .k = k.get(), .v = v.get(), .q_batch = VarlenBatch::uniform(1, n),
                           .k_batch = VarlenBatch::uniform(1, n), .heads = H, .kv_heads = Hk, .head_dim = D,
                           .out = out.get()});
    const auto pre = out.download();
    for (int i = 0; i < n_new[b] * H * D; ++i) {
      const float x = tokenless::to_float(pre[static_cast<std::size_t>(n - n_new[b]) * H * D + i]);
      const float y = tokenless::to_float(dec[static_cast<std::size_t>(q0) * H * D + i]);
#if defined(TOKENLESS_BACKEND_EMU)
      CHECK(x == y);  // the same tiles and arithmetic, row by row: bit for bit
#else
      // Two kernels: the compiler may contract differently, within a unit of bf16.
      CHECK(std::fabs(x - y) <= 2 * tokenless::dtype_traits<T>::unit_roundoff * std::max(1.0f, std::fabs(x)));
#endif
    }
  }
}

TEST_CASE("attention decode: bad input gets a clear Status and writes nothing") {
  using T = __nv_bfloat16;
  using Op = at::Decode<at::Causal, T, at::HeadDims<64>>;
  const int H = 4, Hk = 2, D = 64, cap = 32;
  DeviceBuffer<T> q(8 * H * D), kc(2 * cap * Hk * D), vc(2 * cap * Hk * D), out(8 * H * D);
  q.fill_bytes(0);
  kc.fill_bytes(0);
  vc.fill_bytes(0);
  DeviceBuffer<std::int32_t> cu(std::vector<std::int32_t>{0, 3, 8}), len(std::vector<std::int32_t>{10, 20}),
      short_len(std::vector<std::int32_t>{10, 4}), long_len(std::vector<std::int32_t>{33, 20});
  const Op::Arguments a{.q = q.get(), .q_batch = VarlenBatch::packed(cu.get(), 2, 8), .k_cache = kc.get(),
                        .v_cache = vc.get(), .cache_len = len.get(), .capacity = cap, .heads = H, .kv_heads = Hk,
                        .head_dim = D, .out = out.get()};
  using Bad = Testbed<Op>::Bad;
  using tokenless::StatusCode;
  Testbed<Op> bed;
  bed.watch(out);
  bed.reject(a, {
      Bad{"17 queries a sequence", [](auto& x) { x.max_queries = 17; }, StatusCode::unsupported, "max_queries"},
      Bad{"more new queries than max_queries (device)", [](auto& x) { x.max_queries = 4; }, StatusCode::invalid_argument,
          "sequence 1: 5 new queries, cache_len 20"},
      Bad{"a cache shorter than its new queries (device)", [&](auto& x) { x.cache_len = short_len.get(); },
          StatusCode::invalid_argument, "sequence 1: 5 new queries, cache_len 4"},
      Bad{"a cache past its capacity (device)", [&](auto& x) { x.cache_len = long_len.get(); },
          StatusCode::invalid_argument, "sequence 0: 3 new queries, cache_len 33"},
      Bad{"null cache_len", [](auto& x) { x.cache_len = nullptr; }, StatusCode::null_pointer, "cache_len"},
      Bad{"capacity 0", [](auto& x) { x.capacity = 0; }, StatusCode::empty, "capacity"},
      Bad{"head dim 80", [](auto& x) { x.head_dim = 80; }, StatusCode::unsupported, "head_dim"},
      Bad{"misaligned cache", [&](auto& x) { x.v_cache = vc.get() + 4; }, StatusCode::misaligned, "v_cache"},
  });
}
#endif

#if !defined(TLT_ATTENTION_PART) || TLT_ATTENTION_PART == 4
// ------------------------------------------------------------------ the race detector's cases, the KV cache
// The ThreadSanitizer build of the emu tier compiles this part alone (in
// thread mode the other parts' cases take a minute or more each).
// Small enough for thread mode under ThreadSanitizer (emu.tsan.attention):
// every kernel of the core once, a query tile over two key tiles, a key tile
// over several query steps, GQA, and a decode over two key splits.
TEST_CASE("attention: one small causal problem, forward, backward and decode (the race detector's case)") {
  Shape sh{{0, 70, 100}, {0, 70, 100}, 2, 1, 64};
  check_variant<at::Causal, __nv_bfloat16>(sh, {}, causal_mask(sh), 100);
  check_decode<at::Causal, __nv_bfloat16>({90}, {2}, 128, 2, 1, 64, {}, causal_rule, 2, 101);
}

TEST_CASE("attention KV cache: append, roll back rejected drafts, append again, and bad input") {
  using T = __nv_bfloat16;
  const int B = 3, cap = 24, Hk = 2, D = 64, row = Hk * D;
  DeviceBuffer<T> kc(static_cast<std::size_t>(B) * cap * row), vc(static_cast<std::size_t>(B) * cap * row);
  kc.fill_bytes(0);
  vc.fill_bytes(0);
  DeviceBuffer<std::int32_t> len(std::vector<std::int32_t>(B, 0));
  std::vector<std::vector<T>> host_k(B), host_v(B);  // what each cache should hold
  std::vector<int> host_len(B, 0);
  using Op = at::KvCacheAppend<T>;
  Testbed<Op> bed;
  auto append = [&](const std::vector<std::int32_t>& counts, std::uint64_t seed) {
    std::vector<std::int32_t> cu = {0};
    for (int c : counts) cu.push_back(cu.back() + c);
    const auto kn = random_values<T>(static_cast<std::size_t>(cu.back()) * row, seed);
    const auto vn = random_values<T>(static_cast<std::size_t>(cu.back()) * row, seed + 1);
    DeviceBuffer<T> dk(kn), dv(vn);
    DeviceBuffer<std::int32_t> dcu(cu);
    bed.run_ok({dk.get(), dv.get(), VarlenBatch::packed(dcu.get(), B, cu.back()), kc.get(), vc.get(), len.get(), cap,
                Hk, D});
    for (int b = 0; b < B; ++b) {
      host_k[b].resize(static_cast<std::size_t>(host_len[b]) * row);
      host_v[b].resize(static_cast<std::size_t>(host_len[b]) * row);
      host_k[b].insert(host_k[b].end(), kn.begin() + static_cast<std::ptrdiff_t>(cu[b]) * row,
                       kn.begin() + static_cast<std::ptrdiff_t>(cu[b + 1]) * row);
      host_v[b].insert(host_v[b].end(), vn.begin() + static_cast<std::ptrdiff_t>(cu[b]) * row,
                       vn.begin() + static_cast<std::ptrdiff_t>(cu[b + 1]) * row);
      host_len[b] += counts[b];
    }
  };
  auto check_cache = [&] {
    const auto l = len.download();
    const auto k = kc.download(), v = vc.download();
    for (int b = 0; b < B; ++b) {
      CAPTURE(b);
      REQUIRE(l[b] == host_len[b]);
      CHECK(std::memcmp(k.data() + static_cast<std::size_t>(b) * cap * row, host_k[b].data(),
                        static_cast<std::size_t>(host_len[b]) * row * sizeof(T)) == 0);
      CHECK(std::memcmp(v.data() + static_cast<std::size_t>(b) * cap * row, host_v[b].data(),
                        static_cast<std::size_t>(host_len[b]) * row * sizeof(T)) == 0);
    }
  };
  append({5, 0, 17}, 501);  // prompts, one sequence empty
  append({3, 3, 3}, 503);   // three drafts each
  check_cache();
  // Verification kept 1, 3 and 0 of the drafts.
  const std::vector<std::int32_t> drop = {2, 0, 3};
  DeviceBuffer<std::int32_t> d_drop(drop);
  at::KvCacheRollback::Arguments r{len.get(), d_drop.get(), B};
  Testbed<at::KvCacheRollback> rb;
  rb.run_ok(r);
  for (int b = 0; b < B; ++b) host_len[b] -= drop[b];
  append({1, 1, 1}, 505);
  check_cache();  // lengths 5, 4, 18; the rejected rows overwritten

  // Bad input: a sequence past its capacity, a drop past its length; nothing changes.
  using tokenless::StatusCode;
  const auto kn = random_values<T>(static_cast<std::size_t>(10) * row, 507);
  DeviceBuffer<T> dk(kn), dv(kn);
  DeviceBuffer<std::int32_t> dcu(std::vector<std::int32_t>{0, 0, 3, 10});
  Op::Arguments a{dk.get(), dv.get(), VarlenBatch::packed(dcu.get(), B, 10), kc.get(), vc.get(), len.get(), cap, Hk, D};
  const auto k_before = kc.download();
  const auto len_before = len.download();
  tokenless::Status s = bed.run(a);  // sequence 2: 18 + 7 > 24
  CHECK(s.code() == StatusCode::capacity_too_small);
  CHECK(std::string(s.message()).find("sequence 2: cache_len 18 + 7 new tokens") != std::string::npos);
  CHECK(kc.download() == k_before);
  CHECK(len.download() == len_before);
  DeviceBuffer<std::int32_t> big(std::vector<std::int32_t>{0, 5, 0});
  s = rb.run({len.get(), big.get(), B});
  CHECK(s.code() == StatusCode::invalid_argument);
  CHECK(std::string(s.message()).find("drop[1] = 5 with cache_len 4") != std::string::npos);
  CHECK(len.download() == len_before);
  CHECK(at::KvCacheRollback::can_implement({nullptr, big.get(), B}).code() == StatusCode::null_pointer);
  a.kv_heads = 0;
  CHECK(Op::can_implement(a).code() == StatusCode::empty);
}

#endif

}  // namespace tlt::attention_tests
