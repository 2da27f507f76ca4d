#pragma once
// Helpers shared by the emu and gpu tiers: the same test source runs on the
// CPU executor (g++ with TOKENLESS_EMU) and on a GPU (nvcc).
#include <doctest/doctest.h>
// The core only: a case file includes its component's headers, so that
// nvcc compiles that component's kernels in its unit and not every other's
// (the whole library in every gpu-tier unit cost CI a minute and more).
#include <tokenless/core/config.hpp>
#include <tokenless/core/device.hpp>
#include <tokenless/core/device_buffer.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/status.hpp>
#include <tokenless/core/workspace.hpp>

#include <algorithm>
#include <functional>
#include <numeric>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace tlt {

#define REQUIRE_OK(expr)                                                   \
  do {                                                                     \
    ::tokenless::Status s_ = (expr);                                       \
    INFO("status: " << s_.message());                                      \
    REQUIRE(s_.is_ok());                                                   \
  } while (0)

#define CHECK_CUDA(expr)                                                   \
  do {                                                                     \
    cudaError_t e_ = (expr);                                               \
    INFO(#expr << ": " << cudaGetErrorName(e_));                           \
    REQUIRE(e_ == cudaSuccess);                                            \
  } while (0)

// Test sizes shrink under sanitizers and in thread mode, where every CUDA
// thread is an OS thread.
inline int scale_down() {
  static const int s = [] {
    const char* e = std::getenv("TOKENLESS_TEST_SMALL");
    return e && *e && *e != '0' ? 4 : 1;
  }();
  return s;
}

// Built with AddressSanitizer (GCC's macro; clang's feature test).
inline constexpr bool under_asan() {
#if defined(__SANITIZE_ADDRESS__)
  return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  return true;
#else
  return false;
#endif
#else
  return false;
#endif
}

// The library's DeviceBuffer, with every failure a test failure.
template <class T>
class DeviceBuffer : public tokenless::DeviceBuffer<T> {
  using Base = tokenless::DeviceBuffer<T>;

 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t n) : Base(n) { REQUIRE_OK(this->status()); }
  explicit DeviceBuffer(const std::vector<T>& h) : DeviceBuffer(h.size()) { upload(h); }
  void upload(const std::vector<T>& h) {
    REQUIRE(h.size() == this->size());
    REQUIRE_OK(Base::upload(h));
  }
  std::vector<T> download() const {
    std::vector<T> h(this->size());
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    REQUIRE_OK(Base::download(h.data(), h.size()));
    return h;
  }
  void fill_bytes(int v) { REQUIRE_OK(Base::fill_bytes(v)); }
};

template <class T>
std::vector<T> random_values(std::size_t n, std::uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) {
    if constexpr (std::is_integral_v<T>) x = static_cast<T>(dist(rng));
    else x = tokenless::from_float<T>(dist(rng));
  }
  return v;
}

// Storage values to double and float, and a double result rounded through T
// (the naive same-precision result of a computation that rounds only at the end).
template <class T>
std::vector<double> widen(const std::vector<T>& v) {
  std::vector<double> d(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) d[i] = tokenless::to_float(v[i]);
  return d;
}
template <class T>
std::vector<float> to_floats(const std::vector<T>& v) {
  std::vector<float> f(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) f[i] = tokenless::to_float(v[i]);
  return f;
}
template <class T>
std::vector<float> rounded(const std::vector<double>& v) {
  std::vector<float> f(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) f[i] = tokenless::round_trip<T>(static_cast<float>(v[i]));
  return f;
}

// Storing a value in T, as a function (for the references' `round` hooks).
template <class T>
std::function<double(double)> round_d() {
  return [](double v) { return static_cast<double>(tokenless::round_trip<T>(static_cast<float>(v))); };
}
template <class T>
std::function<float(float)> round_f() {
  return [](float v) { return tokenless::round_trip<T>(v); };
}

// The tolerance rule of the test tiers: the kernel's error against the
// double-precision reference may be at most `factor` times the error of a
// naive implementation at the same precision, plus a floor of a few units of
// roundoff of the result's magnitude (for the case where the naive loop is
// exact by luck).
struct Accuracy {
  double kernel_err = 0, naive_err = 0, scale = 0;
  std::size_t worst = 0;
  bool nan_mismatch = false;
};

inline Accuracy measure(const std::vector<float>& kernel, const std::vector<float>& naive,
                        const std::vector<double>& truth) {
  Accuracy a;
  for (std::size_t i = 0; i < truth.size(); ++i) {
    const bool tn = std::isnan(truth[i]);
    if (tn || std::isnan(kernel[i])) {
      a.nan_mismatch |= tn != std::isnan(kernel[i]);
      continue;
    }
    if (std::isinf(truth[i])) {
      a.nan_mismatch |= kernel[i] != truth[i];
      continue;
    }
    const double ke = std::fabs(kernel[i] - truth[i]);
    if (ke > a.kernel_err) {
      a.kernel_err = ke;
      a.worst = i;
    }
    a.naive_err = std::max(a.naive_err, std::fabs(naive[i] - truth[i]));
    a.scale = std::max(a.scale, std::fabs(truth[i]));
  }
  return a;
}

inline void check_accuracy(const std::vector<float>& kernel, const std::vector<float>& naive,
                           const std::vector<double>& truth, double factor, float unit_roundoff) {
  REQUIRE(kernel.size() == truth.size());
  const Accuracy a = measure(kernel, naive, truth);
  const double floor = 4.0 * unit_roundoff * a.scale;
  INFO("kernel error " << a.kernel_err << " (at " << a.worst << "), naive error " << a.naive_err << ", floor "
                       << floor << ", factor " << factor);
  CHECK_FALSE(a.nan_mismatch);
  CHECK(a.kernel_err <= factor * a.naive_err + floor);
}

}  // namespace tlt
