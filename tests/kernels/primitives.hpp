#pragma once
// Warp and block primitives against host computations. Shared by the emu and
// gpu tiers. Integer data makes the expected values exact.
#include "../support/support.hpp"

#include <tokenless/tokenless.cuh>

namespace tlt::primitives {

template <class T>
__global__ void warp_kernel(const T* in, T* sum, T* inc, T* exc, T* total, int* prefix, int* count, T* bcast) {
  namespace w = tokenless::warp;
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  T v = in[i];
  sum[i] = w::reduce(v, tokenless::Sum{});
  inc[i] = w::inclusive_scan(v, tokenless::Sum{});
  T t;
  exc[i] = w::exclusive_scan(v, tokenless::Sum{}, T(0), t);
  total[i] = t;
  int c;
  prefix[i] = w::prefix_count(v > T(0), c);
  count[i] = c;
  bcast[i] = w::broadcast(v, 7);
}

template <int kBlock>
__global__ void block_kernel(const int* in, int* sum, int* maxv, int* exc, int* inc, int* total, float* amax_v,
                             int* amax_i, const float* fin) {
  using R = tokenless::block::Reduce<int, kBlock>;
  using S = tokenless::block::Scan<int, kBlock>;
  using A = tokenless::block::ArgMaxReduce<float, kBlock>;
  __shared__ typename R::TempStorage rs;
  __shared__ typename S::TempStorage ss;
  __shared__ typename A::TempStorage as;
  const unsigned i = blockIdx.x * kBlock + threadIdx.x;
  const int v = in[i];
  const int s = R::reduce(v, tokenless::Sum{}, rs);
  const int m = R::reduce(v, tokenless::Max{}, rs);  // reuses the storage back to back
  int tot;
  const int e = S::exclusive(v, tokenless::Sum{}, 0, tot, ss);
  int tot2;
  const int n = S::inclusive(v, tokenless::Sum{}, 0, tot2, ss);
  const auto am = A::reduce({fin[i], static_cast<int>(threadIdx.x)}, as);
  sum[i] = s;
  maxv[i] = m;
  exc[i] = e;
  inc[i] = n;
  total[i] = tot == tot2 ? tot : -1;
  if (threadIdx.x == 0) {
    amax_v[blockIdx.x] = am.value;
    amax_i[blockIdx.x] = am.index;
  }
}

template <class T>
void run_warp_case() {
  const int blocks = 3, threads = 64, n = blocks * threads;
  std::vector<T> h(n);
  std::mt19937 rng(7);
  for (auto& x : h) x = static_cast<T>(static_cast<int>(rng() % 19) - 9);
  DeviceBuffer<T> in(h), sum(n), inc(n), exc(n), total(n), bcast(n);
  DeviceBuffer<int> prefix(n), count(n);
  REQUIRE_OK(tokenless::launch(warp_kernel<T>, {dim3(blocks), dim3(threads)}, in.get(), sum.get(), inc.get(),
                               exc.get(), total.get(), prefix.get(), count.get(), bcast.get()));
  auto hs = sum.download(), hi = inc.download(), he = exc.download(), ht = total.download(), hb = bcast.download();
  auto hp = prefix.download(), hc = count.download();
  for (int w = 0; w < n / 32; ++w) {
    T s = 0, run = 0;
    int pos = 0, before = 0;
    for (int l = 0; l < 32; ++l) {
      s += h[w * 32 + l];
      pos += h[w * 32 + l] > T(0);
    }
    for (int l = 0; l < 32; ++l) {
      const int i = w * 32 + l;
      CHECK(hs[i] == s);
      CHECK(he[i] == run);
      run += h[i];
      CHECK(hi[i] == run);
      CHECK(ht[i] == s);
      CHECK(hp[i] == before);
      before += h[i] > T(0);
      CHECK(hc[i] == pos);
      CHECK(hb[i] == h[w * 32 + 7]);
    }
  }
}

template <int kBlock>
void run_block_case() {
  const int blocks = 3, n = blocks * kBlock;
  std::vector<int> h(n);
  std::vector<float> f(n);
  std::mt19937 rng(11 + kBlock);
  for (auto& x : h) x = static_cast<int>(rng() % 201) - 100;
  for (auto& x : f) x = static_cast<float>(static_cast<int>(rng() % 50));  // ties on purpose
  f[kBlock + 5] = std::nanf("");                                          // NaN wins in block 1
  DeviceBuffer<int> in(h), sum(n), maxv(n), exc(n), inc(n), total(n), amax_i(blocks);
  DeviceBuffer<float> fin(f), amax_v(blocks);
  REQUIRE_OK(tokenless::launch(block_kernel<kBlock>, {dim3(blocks), dim3(kBlock)}, in.get(), sum.get(), maxv.get(),
                               exc.get(), inc.get(), total.get(), amax_v.get(), amax_i.get(), fin.get()));
  auto hs = sum.download(), hm = maxv.download(), he = exc.download(), hi = inc.download(), ht = total.download();
  auto av = amax_v.download();
  auto ai = amax_i.download();
  for (int b = 0; b < blocks; ++b) {
    int s = 0, m = h[b * kBlock], run = 0;
    int best = -1;
    for (int t = 0; t < kBlock; ++t) {
      s += h[b * kBlock + t];
      m = std::max(m, h[b * kBlock + t]);
    }
    for (int t = 0; t < kBlock; ++t) {
      const float v = f[b * kBlock + t];
      if (best < 0) best = t;
      else if (std::isnan(f[b * kBlock + best])) break;
      else if (std::isnan(v) || v > f[b * kBlock + best]) best = t;
    }
    for (int t = 0; t < kBlock; ++t) {
      const int i = b * kBlock + t;
      CHECK(hs[i] == s);
      CHECK(hm[i] == m);
      CHECK(he[i] == run);
      run += h[i];
      CHECK(hi[i] == run);
      CHECK(ht[i] == s);
    }
    CHECK(ai[b] == best);
    if (std::isnan(f[b * kBlock + best])) CHECK(std::isnan(av[b]));
    else CHECK(av[b] == f[b * kBlock + best]);
  }
}

TEST_CASE("warp primitives: reduce, scans, prefix count, broadcast") {
  run_warp_case<int>();
  run_warp_case<float>();
  run_warp_case<long long>();
}

TEST_CASE("block primitives: reduce, scan, argmax") {
  run_block_case<32>();
  run_block_case<128>();
  run_block_case<256>();
  run_block_case<1024>();
}

}  // namespace tlt::primitives
