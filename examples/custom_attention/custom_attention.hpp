#pragma once
// A user-defined attention variant: a prefix LM (T5/UniLM), where the first
// `prefix` positions of every sequence see each other bidirectionally and
// the rest are causal. One struct, one hook: row_keys gives the contiguous
// keys a query sees, and MonotoneRows derives the key ranges, tile tests and
// per-element mask the core needs (policy.hpp lists every hook).
#include <tokenless/tokenless.cuh>

#include <cmath>
#include <cstdio>
#include <vector>

namespace custom_attention {

namespace at = tokenless::attention;

struct PrefixLM : at::MonotoneRows<PrefixLM> {
  static constexpr const char* kName = "prefix_lm";
  struct Params {
    int prefix = 0;
  };
  TL_HOST_DEVICE static at::Range row_keys(const Params& p, const at::SeqView& s, int i) {
    return {0, at::imin(s.k_len, at::imax(i + 1, p.prefix))};
  }
};
static_assert(at::Variant<PrefixLM>);

inline int main() {
  using T = __nv_bfloat16;
  const int heads = 2, d = 64, prefix = 24;
  const std::vector<std::int32_t> cu = {0, 40, 100};  // two sequences
  const std::int64_t n = cu.back();
  std::vector<T> q(n * heads * d), k(n * heads * d), v(n * heads * d);
  for (std::size_t i = 0; i < q.size(); ++i) {
    q[i] = tokenless::from_float<T>(std::sin(0.37f * static_cast<float>(i)));
    k[i] = tokenless::from_float<T>(std::cos(0.11f * static_cast<float>(i)));
    v[i] = tokenless::from_float<T>(std::sin(0.05f * static_cast<float>(i) + 1.0f));
  }
  tokenless::DeviceBuffer<T> dq(q.size()), dk(k.size()), dv(v.size()), out(q.size());
  tokenless::DeviceBuffer<std::int32_t> dcu(cu.size());
  if (!dq.upload(q) || !dk.upload(k) || !dv.upload(v) || !dcu.upload(cu)) return 1;

  using Op = at::Forward<PrefixLM, T, at::HeadDims<64>>;
  Op::Arguments a;
  a.q = dq.get();
  a.k = dk.get();
  a.v = dv.get();
  a.q_batch = a.k_batch = tokenless::VarlenBatch::packed(dcu.get(), 2, n);
  a.heads = a.kv_heads = heads;
  a.head_dim = d;
  a.variant = {prefix};
  a.out = out.get();
  tokenless::DeviceBuffer<unsigned char> ws(Op::workspace_size(a));
  tokenless::Status s = Op::run(a, {ws.get(), ws.size()});
  if (s) s = Op::read_status(a, {ws.get(), ws.size()});
  if (!s) {
    std::printf("prefix LM attention failed: %s\n", s.message());
    return 1;
  }

  // Against the reference, with the mask written out as the rule says.
  namespace ref = tokenless::reference::attention;
  auto widen = [](const std::vector<T>& x) {
    std::vector<double> r(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) r[i] = tokenless::to_float(x[i]);
    return r;
  };
  std::vector<double> want, lse;
  ref::forward({cu, cu, heads, heads, d}, [&](std::int64_t, int i, int j) { return j <= i || j < prefix; }, widen(q),
               widen(k), widen(v), want, lse);
  std::vector<T> got(q.size());
  if (!out.download(got.data(), got.size())) return 1;
  double err = 0;
  for (std::size_t i = 0; i < got.size(); ++i) err = std::fmax(err, std::fabs(tokenless::to_float(got[i]) - want[i]));
  std::printf("prefix LM (prefix %d) over sequences of 40 and 60 on %s: max |error| %.4f against the reference\n",
              prefix, tokenless::backend_name(), err);
  return err < 0.03 ? 0 : 1;
}

}  // namespace custom_attention
