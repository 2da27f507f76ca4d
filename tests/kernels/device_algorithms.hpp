#pragma once
// The device-wide facade (CUB on the GPU, host code on the executor).
#include "../support/support.hpp"

#include <tokenless/tokenless.cuh>

namespace tlt::device_algorithms_tests {

TEST_CASE("device facade: scans, reduce and stable pair sort") {
  const std::int64_t n = 1000;
  std::vector<int> h(n);
  std::mt19937 rng(3);
  for (auto& x : h) x = static_cast<int>(rng() % 100) - 50;
  DeviceBuffer<int> in(h), out(n), one(1);

  std::size_t bytes = 0;
  REQUIRE_OK(tokenless::device::exclusive_sum(nullptr, bytes, in.get(), out.get(), n));
  DeviceBuffer<unsigned char> ws(std::max<std::size_t>(bytes, 1));
  REQUIRE_OK(tokenless::device::exclusive_sum(ws.get(), bytes, in.get(), out.get(), n));
  auto e = out.download();
  int run = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    CHECK(e[i] == run);
    run += h[i];
  }

  bytes = 0;
  REQUIRE_OK(tokenless::device::inclusive_sum(nullptr, bytes, in.get(), out.get(), n));
  DeviceBuffer<unsigned char> ws2(std::max<std::size_t>(bytes, 1));
  REQUIRE_OK(tokenless::device::inclusive_sum(ws2.get(), bytes, in.get(), out.get(), n));
  auto inc = out.download();
  CHECK(inc.back() == run);

  bytes = 0;
  REQUIRE_OK(tokenless::device::inclusive_max(nullptr, bytes, in.get(), out.get(), n));
  DeviceBuffer<unsigned char> ws_max(std::max<std::size_t>(bytes, 1));
  REQUIRE_OK(tokenless::device::inclusive_max(ws_max.get(), bytes, in.get(), out.get(), n));
  auto mx = out.download();
  int best = h[0];
  for (std::int64_t i = 0; i < n; ++i) {
    best = std::max(best, h[i]);
    CHECK(mx[i] == best);
  }

  bytes = 0;
  REQUIRE_OK(tokenless::device::reduce_sum(nullptr, bytes, in.get(), one.get(), n));
  DeviceBuffer<unsigned char> ws3(std::max<std::size_t>(bytes, 1));
  REQUIRE_OK(tokenless::device::reduce_sum(ws3.get(), bytes, in.get(), one.get(), n));
  CHECK(one.download()[0] == run);

  // Keys with many duplicates; values record the original position, so a
  // stable sort leaves them increasing within each key.
  std::vector<unsigned> keys(n), vals(n);
  for (std::int64_t i = 0; i < n; ++i) {
    keys[i] = static_cast<unsigned>(rng() % 37);
    vals[i] = static_cast<unsigned>(i);
  }
  DeviceBuffer<unsigned> kin(keys), kout(n), vin(vals), vout(n);
  bytes = 0;
  REQUIRE_OK(tokenless::device::sort_pairs(nullptr, bytes, kin.get(), kout.get(), vin.get(), vout.get(), n, 0, 6));
  DeviceBuffer<unsigned char> ws4(std::max<std::size_t>(bytes, 1));
  REQUIRE_OK(tokenless::device::sort_pairs(ws4.get(), bytes, kin.get(), kout.get(), vin.get(), vout.get(), n, 0, 6));
  auto ko = kout.download();
  auto vo = vout.download();
  for (std::int64_t i = 1; i < n; ++i) {
    CHECK(ko[i - 1] <= ko[i]);
    if (ko[i - 1] == ko[i]) CHECK(vo[i - 1] < vo[i]);
  }
  for (std::int64_t i = 0; i < n; ++i) CHECK(keys[vo[i]] == ko[i]);

  std::size_t b = 0;
  tokenless::Status s = tokenless::device::sort_pairs(nullptr, b, kin.get(), kout.get(), vin.get(), vout.get(), n, 4, 2);
  CHECK(s.code() == tokenless::StatusCode::invalid_argument);
  s = tokenless::device::exclusive_sum(nullptr, b, in.get(), out.get(), std::int64_t{1} << 40);
  CHECK(s.code() == tokenless::StatusCode::overflow);
}

}  // namespace tlt::device_algorithms_tests
