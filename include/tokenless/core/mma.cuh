#pragma once
// Tensor-core warp primitives (sm_80 and later): mma.sync m16n8k16 with fp16
// or bf16 operands and fp32 accumulation, and ldmatrix, in the fragment
// layouts of the PTX ISA. With g = lane / 4 and t = lane % 4:
//
//   A (16 x 16, row-major), 4 registers of 2 halves:
//     x[0] = A[g][2t, 2t+1]     x[1] = A[g+8][2t, 2t+1]
//     x[2] = A[g][2t+8, 2t+9]   x[3] = A[g+8][2t+8, 2t+9]
//   B (16 x 8, k x n, "col"), 2 registers:
//     x[0] = B[2t, 2t+1][g]     x[1] = B[2t+8, 2t+9][g]
//   C, D (16 x 8, fp32):
//     x[0], x[1] = C[g][2t, 2t+1]   x[2], x[3] = C[g+8][2t, 2t+1]
//
//   ldmatrix .x4: lanes 8i..8i+7 give the 16-byte rows of 8x8 matrix i; the
//     lane receives in r[i] row g, halves 2t and 2t+1 (with .trans: rows 2t
//     and 2t+1 of column g), the lower-indexed half in the low 16 bits.
//
// On the CPU executor each is a warp collective that rebuilds the matrices
// from exactly these layouts and multiplies in fp32 in k order (the GPU's
// order within a k step is unspecified, so tests allow for roundoff), so a
// kernel's fragment bookkeeping is checked without a GPU.
#include <tokenless/core/config.hpp>
#include <tokenless/core/dtype.hpp>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace tokenless::mma {

struct FragA {
  std::uint32_t x[4];
};
struct FragB {
  std::uint32_t x[2];
};
struct FragC {
  float x[4];
};

// The 16-bit types the tensor-core path takes.
template <class T>
concept TensorCoreType = std::same_as<T, __half> || std::same_as<T, __nv_bfloat16>;

// Two values rounded to T and packed, `lo` in the low half.
template <TensorCoreType T>
TL_HOST_DEVICE TL_FORCEINLINE std::uint32_t pack(float lo, float hi) {
  const T a = from_float<T>(lo), b = from_float<T>(hi);
  std::uint16_t ua, ub;
  std::memcpy(&ua, &a, 2);
  std::memcpy(&ub, &b, 2);
  return static_cast<std::uint32_t>(ua) | static_cast<std::uint32_t>(ub) << 16;
}

template <TensorCoreType T>
TL_HOST_DEVICE TL_FORCEINLINE float unpack(std::uint32_t v, int half) {
  const std::uint16_t u = static_cast<std::uint16_t>(half ? v >> 16 : v & 0xffffu);
  T x;
  std::memcpy(&x, &u, 2);
  return to_float<T>(x);
}

#if defined(TOKENLESS_BACKEND_EMU)
namespace detail {
template <class T>
struct MmaOperands {
  FragC* c;
  const FragA* a;
  const FragB* b;
};
template <class T>
inline void mma_compute(void* const* lanes) {
  float A[16][16], B[16][8], C[16][8];
  for (int l = 0; l < 32; ++l) {
    const auto& o = *static_cast<const MmaOperands<T>*>(lanes[l]);
    const int g = l / 4, t = l % 4;
    for (int h = 0; h < 2; ++h) {
      A[g][2 * t + h] = unpack<T>(o.a->x[0], h);
      A[g + 8][2 * t + h] = unpack<T>(o.a->x[1], h);
      A[g][2 * t + 8 + h] = unpack<T>(o.a->x[2], h);
      A[g + 8][2 * t + 8 + h] = unpack<T>(o.a->x[3], h);
      B[2 * t + h][g] = unpack<T>(o.b->x[0], h);
      B[2 * t + 8 + h][g] = unpack<T>(o.b->x[1], h);
      C[g][2 * t + h] = o.c->x[h];
      C[g + 8][2 * t + h] = o.c->x[2 + h];
    }
  }
  for (int l = 0; l < 32; ++l) {
    const auto& o = *static_cast<const MmaOperands<T>*>(lanes[l]);
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < 4; ++i) {
      const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
      float acc = C[row][col];
      for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
      o.c->x[i] = acc;
    }
  }
}
struct LdmatrixOperands {
  const std::uint16_t* row;
  std::uint32_t* r;
};
template <bool kTrans>
inline void ldmatrix_compute(void* const* lanes) {
  std::uint16_t M[4][8][8];
  for (int l = 0; l < 32; ++l) {
    const auto& o = *static_cast<const LdmatrixOperands*>(lanes[l]);
    std::memcpy(M[l / 8][l % 8], o.row, 16);
  }
  for (int l = 0; l < 32; ++l) {
    const auto& o = *static_cast<const LdmatrixOperands*>(lanes[l]);
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < 4; ++i) {
      const std::uint16_t lo = kTrans ? M[i][2 * t][g] : M[i][g][2 * t];
      const std::uint16_t hi = kTrans ? M[i][2 * t + 1][g] : M[i][g][2 * t + 1];
      o.r[i] = static_cast<std::uint32_t>(lo) | static_cast<std::uint32_t>(hi) << 16;
    }
  }
}
}  // namespace detail
#endif

// c += a · b over one 16 x 8 x 16 tile; every lane of the warp calls it.
template <TensorCoreType T>
TL_DEVICE TL_FORCEINLINE void mma_16816(FragC& c, const FragA& a, const FragB& b) {
#if defined(TOKENLESS_BACKEND_CUDA)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c.x[0]), "+f"(c.x[1]), "+f"(c.x[2]), "+f"(c.x[3])
        : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b.x[0]), "r"(b.x[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c.x[0]), "+f"(c.x[1]), "+f"(c.x[2]), "+f"(c.x[3])
        : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b.x[0]), "r"(b.x[1]));
  }
#else
  __trap();  // the tensor-core path needs sm_80
#endif
#else
  detail::MmaOperands<T> o{&c, &a, &b};
  emu::warp_compute(std::is_same_v<T, __nv_bfloat16> ? "mma.sync.m16n8k16.bf16" : "mma.sync.m16n8k16.f16", &o,
                    &detail::mma_compute<T>);
#endif
}

// Four 8x8 matrices of 16-bit values from shared memory; `row` is this lane's
// 16-byte-aligned row (see the layout above).
TL_DEVICE TL_FORCEINLINE void ldmatrix_x4(std::uint32_t (&r)[4], const void* row) {
#if defined(TOKENLESS_BACKEND_CUDA)
  const auto s = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
#else
  detail::LdmatrixOperands o{static_cast<const std::uint16_t*>(row), r};
  emu::warp_compute("ldmatrix.x4", &o, &detail::ldmatrix_compute<false>);
#endif
}

// The same, transposed: lane receives column g, rows 2t and 2t+1.
TL_DEVICE TL_FORCEINLINE void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* row) {
#if defined(TOKENLESS_BACKEND_CUDA)
  const auto s = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
#else
  detail::LdmatrixOperands o{static_cast<const std::uint16_t*>(row), r};
  emu::warp_compute("ldmatrix.x4.trans", &o, &detail::ldmatrix_compute<true>);
#endif
}

}  // namespace tokenless::mma
