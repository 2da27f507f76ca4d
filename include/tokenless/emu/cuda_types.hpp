#pragma once
// Portable stand-ins for the CUDA types and qualifiers that kernel sources use.
//
// Used in two situations:
//  * the CPU SIMT executor (TOKENLESS_EMU), which never includes the toolkit's
//    headers so that its runtime functions can carry the CUDA names;
//  * plain host builds on a machine without the CUDA toolkit.
// Everything here mirrors the toolkit's spelling and numeric values so that
// the same kernel and test source compiles against either.
#if defined(__CUDACC__)
#error "tokenless/emu/cuda_types.hpp must not be compiled by nvcc"
#endif

#include <cstdint>
#include <cstring>
#include <cmath>

#ifndef __host__
#define __host__
#endif
#ifndef __device__
#define __device__
#endif
#ifndef __global__
#define __global__
#endif
#ifndef __forceinline__
#define __forceinline__ inline __attribute__((always_inline))
#endif
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#ifndef __align__
#define __align__(n) __attribute__((aligned(n)))
#endif
#ifndef __constant__
#define __constant__
#endif

// ---------------------------------------------------------------- vectors
struct uint3 { unsigned x, y, z; };
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return {x, y, z}; }
};

#define TOKENLESS_EMU_VEC2(T, name, al) \
  struct alignas(al) name { T x, y; };  \
  inline constexpr name make_##name(T a, T b) { return name{a, b}; }
#define TOKENLESS_EMU_VEC4(T, name, al) \
  struct alignas(al) name { T x, y, z, w; }; \
  inline constexpr name make_##name(T a, T b, T c, T d) { return name{a, b, c, d}; }
TOKENLESS_EMU_VEC2(float, float2, 8)
TOKENLESS_EMU_VEC4(float, float4, 16)
TOKENLESS_EMU_VEC2(int, int2, 8)
TOKENLESS_EMU_VEC4(int, int4, 16)
TOKENLESS_EMU_VEC2(unsigned, uint2, 8)
TOKENLESS_EMU_VEC4(unsigned, uint4, 16)
TOKENLESS_EMU_VEC2(double, double2, 16)
TOKENLESS_EMU_VEC2(long long, longlong2, 16)
#undef TOKENLESS_EMU_VEC2
#undef TOKENLESS_EMU_VEC4

// ---------------------------------------------------------------- errors
enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidPitchValue = 12,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorInsufficientDriver = 35,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchFailure = 719,
  cudaErrorNotSupported = 801,
  cudaErrorUnknown = 999,
};

inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidPitchValue: return "cudaErrorInvalidPitchValue";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    default: return "cudaErrorUnknown";
  }
}
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorLaunchFailure: return "unspecified launch failure (see tokenless::emu::last_report())";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidValue: return "invalid argument";
    default: return cudaGetErrorName(e);
  }
}

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
};

struct CUstream_st;
struct CUevent_st;
using cudaStream_t = CUstream_st*;
using cudaEvent_t = CUevent_st*;

// ---------------------------------------------------------------- 16-bit floats
namespace tokenless::emu::detail {
inline std::uint32_t f2u(float f) { std::uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float u2f(std::uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// IEEE binary32 -> binary16, round to nearest even, with subnormals, Inf and NaN.
inline std::uint16_t float_to_half_bits(float f) {
  std::uint32_t x = f2u(f);
  std::uint32_t sign = (x >> 16) & 0x8000u;
  std::uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) {  // Inf or NaN; keep NaN quiet
    return static_cast<std::uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u | ((absx >> 13) & 0x3ffu) : 0u));
  }
  if (absx >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to Inf
  if (absx < 0x38800000u) {  // result is subnormal or zero
    if (absx < 0x33000000u) return static_cast<std::uint16_t>(sign);  // below half of the smallest subnormal
    std::uint32_t mant = (absx & 0x7fffffu) | 0x800000u;
    int shift = 126 - static_cast<int>(absx >> 23);  // 14..24
    std::uint32_t q = mant >> shift;
    std::uint32_t rem = mant & ((1u << shift) - 1u);
    std::uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (q & 1u))) ++q;
    return static_cast<std::uint16_t>(sign | q);
  }
  std::uint32_t r = absx - 0x38000000u;  // rebias exponent 127 -> 15
  std::uint32_t q = r >> 13;
  std::uint32_t rem = r & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) ++q;
  return static_cast<std::uint16_t>(sign | q);
}

inline float half_bits_to_float(std::uint16_t h) {
  std::uint32_t sign = (static_cast<std::uint32_t>(h) & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return u2f(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0) return u2f(sign);
    float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  return u2f(sign | ((exp + 112u) << 23) | (mant << 13));
}

inline std::uint16_t float_to_bf16_bits(float f) {
  std::uint32_t x = f2u(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  std::uint32_t lsb = (x >> 16) & 1u;
  x += 0x7fffu + lsb;
  return static_cast<std::uint16_t>(x >> 16);
}
inline float bf16_bits_to_float(std::uint16_t b) { return u2f(static_cast<std::uint32_t>(b) << 16); }
}  // namespace tokenless::emu::detail

#define TOKENLESS_EMU_FLOAT16(Name, TO_BITS, FROM_BITS)                                    \
  struct alignas(2) Name {                                                                \
    std::uint16_t __x;                                                                    \
    Name() = default;                                                                     \
    Name(float f) : __x(tokenless::emu::detail::TO_BITS(f)) {}                            \
    Name(double d) : Name(static_cast<float>(d)) {}                                       \
    Name(int i) : Name(static_cast<float>(i)) {}                                          \
    operator float() const { return tokenless::emu::detail::FROM_BITS(__x); }             \
    Name& operator+=(Name o) { return *this = Name(float(*this) + float(o)); }            \
    Name& operator-=(Name o) { return *this = Name(float(*this) - float(o)); }            \
    Name& operator*=(Name o) { return *this = Name(float(*this) * float(o)); }            \
    Name& operator/=(Name o) { return *this = Name(float(*this) / float(o)); }            \
  };                                                                                      \
  inline Name operator+(Name a, Name b) { return Name(float(a) + float(b)); }             \
  inline Name operator-(Name a, Name b) { return Name(float(a) - float(b)); }             \
  inline Name operator*(Name a, Name b) { return Name(float(a) * float(b)); }             \
  inline Name operator/(Name a, Name b) { return Name(float(a) / float(b)); }             \
  inline Name operator-(Name a) { Name r = a; r.__x ^= 0x8000u; return r; }               \
  inline bool operator==(Name a, Name b) { return float(a) == float(b); }                 \
  inline bool operator!=(Name a, Name b) { return float(a) != float(b); }                 \
  inline bool operator<(Name a, Name b) { return float(a) < float(b); }                   \
  inline bool operator>(Name a, Name b) { return float(a) > float(b); }                   \
  inline bool operator<=(Name a, Name b) { return float(a) <= float(b); }                 \
  inline bool operator>=(Name a, Name b) { return float(a) >= float(b); }

TOKENLESS_EMU_FLOAT16(__half, float_to_half_bits, half_bits_to_float)
TOKENLESS_EMU_FLOAT16(__nv_bfloat16, float_to_bf16_bits, bf16_bits_to_float)
#undef TOKENLESS_EMU_FLOAT16

struct alignas(4) __half2 { __half x, y; };
struct alignas(4) __nv_bfloat162 { __nv_bfloat16 x, y; };

inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline float __half2float(__half h) { return float(h); }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return float(b); }
inline __half __hadd(__half a, __half b) { return a + b; }
inline __half __hmul(__half a, __half b) { return a * b; }
inline __nv_bfloat16 __hadd(__nv_bfloat16 a, __nv_bfloat16 b) { return a + b; }
inline __nv_bfloat16 __hmul(__nv_bfloat16 a, __nv_bfloat16 b) { return a * b; }
inline __half2 __floats2half2_rn(float a, float b) { return {__half(a), __half(b)}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__nv_bfloat16(a), __nv_bfloat16(b)}; }
inline float2 __half22float2(__half2 h) { return {float(h.x), float(h.y)}; }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return {float(h.x), float(h.y)}; }
inline __half __ushort_as_half(unsigned short u) { __half h; h.__x = u; return h; }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { __nv_bfloat16 h; h.__x = u; return h; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
