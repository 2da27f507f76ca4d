#pragma once
// Storage dtypes: fp32, fp16 and bf16 storage, always accumulated in fp32.
// The traits work in host code, device code and on the CPU executor.
#include <tokenless/core/config.hpp>

#include <concepts>
#include <cstdint>
#include <type_traits>

namespace tokenless {

enum class DType : std::uint8_t { f32, f16, bf16, i32, i64, u8 };

inline constexpr const char* to_string(DType d) {
  switch (d) {
    case DType::f32: return "fp32";
    case DType::f16: return "fp16";
    case DType::bf16: return "bf16";
    case DType::i32: return "int32";
    case DType::i64: return "int64";
    case DType::u8: return "uint8";
  }
  return "?";
}

template <class T>
struct dtype_traits;  // specialised for every storage type below

template <>
struct dtype_traits<float> {
  static constexpr DType id = DType::f32;
  static constexpr const char* name = "fp32";
  // Unit roundoff u = 2^-p: a correctly rounded result is within a factor (1 + u).
  static constexpr float unit_roundoff = 5.9604645e-08f;  // 2^-24
  TL_HOST_DEVICE static float to_float(float v) { return v; }
  TL_HOST_DEVICE static float from_float(float v) { return v; }
};

template <>
struct dtype_traits<__half> {
  static constexpr DType id = DType::f16;
  static constexpr const char* name = "fp16";
  static constexpr float unit_roundoff = 4.8828125e-04f;  // 2^-11
  TL_HOST_DEVICE static float to_float(__half v) { return __half2float(v); }
  TL_HOST_DEVICE static __half from_float(float v) { return __float2half_rn(v); }
};

template <>
struct dtype_traits<__nv_bfloat16> {
  static constexpr DType id = DType::bf16;
  static constexpr const char* name = "bf16";
  static constexpr float unit_roundoff = 3.90625e-03f;  // 2^-8
  TL_HOST_DEVICE static float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
  TL_HOST_DEVICE static __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }
};

// A floating-point storage type the library's kernels accept.
template <class T>
concept StorageFloat = std::same_as<T, float> || std::same_as<T, __half> || std::same_as<T, __nv_bfloat16>;

template <StorageFloat T>
TL_HOST_DEVICE inline float to_float(T v) {
  return dtype_traits<T>::to_float(v);
}

template <StorageFloat T>
TL_HOST_DEVICE inline T from_float(float v) {
  return dtype_traits<T>::from_float(v);
}

// Rounds a float through T and back: what storing in T does to a value.
template <StorageFloat T>
TL_HOST_DEVICE inline float round_trip(float v) {
  return to_float<T>(from_float<T>(v));
}

}  // namespace tokenless
