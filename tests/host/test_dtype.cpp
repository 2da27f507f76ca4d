// Host tier: 16-bit float conversions. Compiled twice: against the CUDA
// toolkit's cuda_fp16.h/cuda_bf16.h, and against tokenless's portable types
// (TOKENLESS_NO_CUDA_HEADERS), so both satisfy the same expectations.
#include <doctest/doctest.h>
#include <tokenless/core/dtype.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

using namespace tokenless;

namespace {
std::uint16_t bits(__half h) {
  std::uint16_t u;
  std::memcpy(&u, &h, 2);
  return u;
}
std::uint16_t bits(__nv_bfloat16 h) {
  std::uint16_t u;
  std::memcpy(&u, &h, 2);
  return u;
}
template <class T>
T from_bits(std::uint16_t u) {
  T h;
  std::memcpy(static_cast<void*>(&h), &u, 2);
  return h;
}
float f32(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace

TEST_CASE_TEMPLATE("every 16-bit pattern survives a round trip through fp32", T, __half, __nv_bfloat16) {
  for (std::uint32_t u = 0; u < 65536; ++u) {
    const T h = from_bits<T>(static_cast<std::uint16_t>(u));
    const float f = to_float(h);
    const T back = from_float<T>(f);
    if (std::isnan(f)) {
      CHECK(std::isnan(to_float(back)));
    } else {
      CHECK(bits(back) == u);
    }
  }
}

TEST_CASE("fp16 rounding: nearest even, overflow to Inf, subnormals") {
  CHECK(bits(from_float<__half>(1.0f)) == 0x3c00);
  CHECK(bits(from_float<__half>(65504.0f)) == 0x7bff);
  CHECK(bits(from_float<__half>(65519.99f)) == 0x7bff);
  CHECK(bits(from_float<__half>(65520.0f)) == 0x7c00);  // halfway to the next binade rounds to Inf
  CHECK(bits(from_float<__half>(1.0f + std::ldexp(1.0f, -11))) == 0x3c00);  // tie -> even
  CHECK(bits(from_float<__half>(1.0f + 3 * std::ldexp(1.0f, -11))) == 0x3c02);  // tie -> even (up)
  CHECK(bits(from_float<__half>(std::ldexp(1.0f, -24))) == 0x0001);  // smallest subnormal
  CHECK(bits(from_float<__half>(std::ldexp(1.0f, -25))) == 0x0000);  // tie with zero -> even (zero)
  CHECK(bits(from_float<__half>(std::ldexp(1.5f, -25))) == 0x0001);
  CHECK(bits(from_float<__half>(-0.0f)) == 0x8000);
  CHECK(bits(from_float<__half>(-std::numeric_limits<float>::infinity())) == 0xfc00);
  CHECK(std::isnan(to_float(from_float<__half>(std::nanf("")))));
  CHECK(to_float(from_bits<__half>(0x0001)) == std::ldexp(1.0f, -24));
}

TEST_CASE("bf16 rounding: nearest even on the upper 16 bits") {
  CHECK(bits(from_float<__nv_bfloat16>(1.0f)) == 0x3f80);
  CHECK(bits(from_float<__nv_bfloat16>(f32(0x3f808000u))) == 0x3f80);  // tie -> even
  CHECK(bits(from_float<__nv_bfloat16>(f32(0x3f818000u))) == 0x3f82);  // tie -> even (up)
  CHECK(bits(from_float<__nv_bfloat16>(f32(0x3f808001u))) == 0x3f81);
  CHECK(bits(from_float<__nv_bfloat16>(f32(0x7f7fffffu))) == 0x7f80);  // FLT_MAX rounds to Inf
  CHECK(std::isnan(to_float(from_float<__nv_bfloat16>(std::nanf("")))));
  CHECK(round_trip<__nv_bfloat16>(3.14159f) == 3.140625f);
}

TEST_CASE("dtype traits") {
  CHECK(dtype_traits<float>::id == DType::f32);
  CHECK(dtype_traits<__half>::id == DType::f16);
  CHECK(dtype_traits<__nv_bfloat16>::id == DType::bf16);
  CHECK(dtype_traits<__half>::unit_roundoff == std::ldexp(1.0f, -11));
  CHECK(dtype_traits<__nv_bfloat16>::unit_roundoff == std::ldexp(1.0f, -8));
  static_assert(StorageFloat<float> && StorageFloat<__half> && StorageFloat<__nv_bfloat16>);
  static_assert(!StorageFloat<double> && !StorageFloat<int>);
}
