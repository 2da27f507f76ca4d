#pragma once
// Reduction operators with their identities, usable on host and device.
// NaN propagates through Max and Min as it does through torch.max/min.
#include <tokenless/core/config.hpp>

#include <limits>

namespace tokenless {

struct Sum {
  template <class T>
  TL_HOST_DEVICE static constexpr T identity() { return T(0); }
  template <class T>
  TL_HOST_DEVICE T operator()(T a, T b) const { return a + b; }
};

struct Max {
  template <class T>
  TL_HOST_DEVICE static constexpr T identity() {
    return std::numeric_limits<T>::has_infinity ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::lowest();
  }
  template <class T>
  TL_HOST_DEVICE T operator()(T a, T b) const {
    if (a != a) return a;  // NaN wins
    if (b != b) return b;
    return a < b ? b : a;
  }
};

struct Min {
  template <class T>
  TL_HOST_DEVICE static constexpr T identity() {
    return std::numeric_limits<T>::has_infinity ? std::numeric_limits<T>::infinity() : std::numeric_limits<T>::max();
  }
  template <class T>
  TL_HOST_DEVICE T operator()(T a, T b) const {
    if (a != a) return a;
    if (b != b) return b;
    return b < a ? b : a;
  }
};

// A value with its position: the selection primitives reduce these.
template <class T>
struct ValueIndex {
  T value;
  int index;
};

// Largest value, first index on ties, NaN counts as largest (torch.argmax).
// Operates on ValueIndex pairs; index < 0 marks the identity.
struct ArgMax {
  template <class P>
  TL_HOST_DEVICE static constexpr P identity() {
    return {std::numeric_limits<decltype(P::value)>::lowest(), -1};
  }
  template <class T>
  TL_HOST_DEVICE ValueIndex<T> operator()(ValueIndex<T> a, ValueIndex<T> b) const {
    if (a.index < 0) return b;
    if (b.index < 0) return a;
    const bool a_nan = a.value != a.value, b_nan = b.value != b.value;
    if (a_nan || b_nan) {
      if (a_nan && b_nan) return a.index <= b.index ? a : b;
      return a_nan ? a : b;
    }
    if (a.value != b.value) return a.value > b.value ? a : b;
    return a.index <= b.index ? a : b;
  }
};

}  // namespace tokenless
