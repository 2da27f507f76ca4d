#pragma once
// Non-owning tensor views with 64-bit extents and strides (in elements).
#include <tokenless/core/config.hpp>

#include <cstdint>
#include <initializer_list>

namespace tokenless {

template <class T, int Rank>
struct TensorView {
  static_assert(Rank >= 1 && Rank <= 6, "TensorView supports ranks 1 to 6");
  using element_type = T;
  static constexpr int rank = Rank;

  T* data = nullptr;
  std::int64_t extents[Rank] = {};
  std::int64_t strides[Rank] = {};

  // Row-major view over contiguous memory.
  static TensorView contiguous(T* ptr, std::initializer_list<std::int64_t> ext) {
    TensorView v;
    v.data = ptr;
    int i = 0;
    for (std::int64_t e : ext) {
      if (i < Rank) v.extents[i] = e;
      ++i;
    }
    std::int64_t s = 1;
    for (int d = Rank - 1; d >= 0; --d) {
      v.strides[d] = s;
      s *= v.extents[d];
    }
    return v;
  }

  TL_HOST_DEVICE std::int64_t extent(int d) const { return extents[d]; }
  TL_HOST_DEVICE std::int64_t stride(int d) const { return strides[d]; }

  TL_HOST_DEVICE std::int64_t numel() const {
    std::int64_t n = 1;
    for (int d = 0; d < Rank; ++d) n *= extents[d];
    return n;
  }

  TL_HOST_DEVICE bool is_contiguous() const {
    std::int64_t s = 1;
    for (int d = Rank - 1; d >= 0; --d) {
      if (extents[d] != 1 && strides[d] != s) return false;
      s *= extents[d];
    }
    return true;
  }

  template <class... I>
  TL_HOST_DEVICE T& operator()(I... idx) const {
    static_assert(sizeof...(I) == Rank, "index count must equal the view's rank");
    const std::int64_t ix[] = {static_cast<std::int64_t>(idx)...};
    std::int64_t off = 0;
    for (int d = 0; d < Rank; ++d) off += ix[d] * strides[d];
    return data[off];
  }
};

}  // namespace tokenless
