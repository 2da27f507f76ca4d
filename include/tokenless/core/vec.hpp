#pragma once
// An aligned group of N elements, loaded and stored as one vector access.
#include <tokenless/core/config.hpp>

namespace tokenless {

template <class T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

// Elements per 16-byte access.
template <class T>
inline constexpr int kVec16 = 16 / static_cast<int>(sizeof(T));

}  // namespace tokenless
