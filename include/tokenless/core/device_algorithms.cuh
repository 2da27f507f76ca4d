#pragma once
// Device-wide algorithms behind a thin facade, two-phase like CUB: call with
// workspace == nullptr to learn workspace_bytes, then call again with a
// buffer of that size.
//
// Scans and reductions are tokenless's own kernels (core/scan.cuh), so they
// run on both backends with a fixed order of operations. The radix sort is
// CUB's under nvcc and a host implementation on the CPU executor (CUB cannot
// even size its workspace without a device).
#include <tokenless/core/config.hpp>
#include <tokenless/core/device.hpp>
#include <tokenless/core/status.hpp>
#include <tokenless/core/validate.hpp>

#include <cstdint>
#include <type_traits>

#include <tokenless/core/functional.hpp>
#include <tokenless/core/scan.cuh>

#if defined(TOKENLESS_BACKEND_CUDA)
#include <cub/device/device_radix_sort.cuh>
#elif defined(TOKENLESS_BACKEND_EMU)
#include <algorithm>
#include <numeric>
#include <vector>
#else
#error "tokenless/core/device_algorithms.cuh needs nvcc, or a host compiler with TOKENLESS_EMU defined"
#endif

namespace tokenless::device {

namespace detail {
#if defined(TOKENLESS_BACKEND_EMU)
// The executor's sort needs no workspace, but asks for some so callers
// exercise the same two-phase path as on the GPU.
inline constexpr std::size_t kEmuWorkspaceBytes = 256;
inline Status emu_workspace(void* ws, std::size_t& bytes, bool& size_query) {
  size_query = ws == nullptr;
  if (size_query) {
    bytes = kEmuWorkspaceBytes;
    return Status::ok();
  }
  if (bytes < kEmuWorkspaceBytes) {
    return Status::argument(StatusCode::workspace_too_small, "workspace_bytes", "the size the query returned",
                            "%zu", bytes);
  }
  return Status::ok();
}
#endif
inline Status check_items(std::int64_t n) { return check::fits_int32("num_items", n); }
inline Status check_workspace(std::size_t given, std::size_t needed) {
  if (given >= needed) return Status::ok();
  return Status::argument(StatusCode::workspace_too_small, "workspace_bytes", "the size the query returned",
                          "%zu (%zu needed)", given, needed);
}

// The two-phase protocol of the scans and reductions: answer the size query,
// or check the buffer and run.
template <class T, class Run>
Status two_phase(void* workspace, std::size_t& workspace_bytes, std::int64_t n, Run&& run) {
  TL_RETURN_IF_ERROR(check_items(n));
  const std::size_t needed = scan::detail::workspace_bytes<T>(n);
  if (!workspace) {
    workspace_bytes = needed;
    return Status::ok();
  }
  TL_RETURN_IF_ERROR(check_workspace(workspace_bytes, needed));
  return run();
}
}  // namespace detail

template <class T>
Status exclusive_sum(void* workspace, std::size_t& workspace_bytes, const T* in, T* out, std::int64_t n,
                     cudaStream_t stream = nullptr) {
  return detail::two_phase<T>(workspace, workspace_bytes, n, [&] { return scan::detail::run<false>(workspace, in, out, n, Sum{}, T{}, stream); });
}

template <class T>
Status inclusive_sum(void* workspace, std::size_t& workspace_bytes, const T* in, T* out, std::int64_t n,
                     cudaStream_t stream = nullptr) {
  return detail::two_phase<T>(workspace, workspace_bytes, n, [&] { return scan::detail::run<true>(workspace, in, out, n, Sum{}, T{}, stream); });
}

// out[i] = max(in[0..i]).
template <class T>
Status inclusive_max(void* workspace, std::size_t& workspace_bytes, const T* in, T* out, std::int64_t n,
                     cudaStream_t stream = nullptr) {
  return detail::two_phase<T>(workspace, workspace_bytes, n, [&] { return scan::detail::run<true>(workspace, in, out, n, Max{}, Max::identity<T>(), stream); });
}

// out[0] = sum of in[0..n), in a fixed order: run-to-run deterministic.
template <class T>
Status reduce_sum(void* workspace, std::size_t& workspace_bytes, const T* in, T* out, std::int64_t n,
                  cudaStream_t stream = nullptr) {
  return detail::two_phase<T>(workspace, workspace_bytes, n, [&] { return scan::detail::reduce(workspace, in, out, n, Sum{}, T{}, stream); });
}

// Stable radix sort of (key, value) pairs by key bits [begin_bit, end_bit).
// Signed keys sort in numeric order and must use the full bit range.
template <class K, class V>
Status sort_pairs(void* workspace, std::size_t& workspace_bytes, const K* keys_in, K* keys_out, const V* values_in,
                  V* values_out, std::int64_t n, int begin_bit = 0, int end_bit = static_cast<int>(sizeof(K) * 8),
                  cudaStream_t stream = nullptr) {
  static_assert(std::is_integral_v<K>, "sort_pairs sorts integer keys");
  TL_RETURN_IF_ERROR(detail::check_items(n));
  if (begin_bit < 0 || end_bit > static_cast<int>(sizeof(K) * 8) || begin_bit >= end_bit) {
    return Status::error(StatusCode::invalid_argument, "argument 'bits': expected 0 <= begin_bit < end_bit <= %d, got [%d, %d)",
                         static_cast<int>(sizeof(K) * 8), begin_bit, end_bit);
  }
  if (std::is_signed_v<K> && (begin_bit != 0 || end_bit != static_cast<int>(sizeof(K) * 8))) {
    return Status::error(StatusCode::unsupported, "sort_pairs: signed keys must use the full bit range");
  }
#if defined(TOKENLESS_BACKEND_CUDA)
  TL_CUDA_TRY(cub::DeviceRadixSort::SortPairs(workspace, workspace_bytes, keys_in, keys_out, values_in, values_out,
                                              static_cast<int>(n), begin_bit, end_bit, stream));
  return Status::ok();
#else
  (void)stream;
  bool query;
  TL_RETURN_IF_ERROR(detail::emu_workspace(workspace, workspace_bytes, query));
  if (query || n == 0) return Status::ok();
  using U = std::make_unsigned_t<K>;
  const int width = end_bit - begin_bit;
  const U mask = width >= static_cast<int>(sizeof(K) * 8) ? static_cast<U>(~U{0})
                                                          : static_cast<U>((U{1} << width) - 1);
  auto digit = [&](K k) -> U {
    if constexpr (std::is_signed_v<K>) return static_cast<U>(static_cast<U>(k) ^ (U{1} << (sizeof(K) * 8 - 1)));
    else return static_cast<U>((static_cast<U>(k) >> begin_bit) & mask);
  };
  std::vector<std::int64_t> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), std::int64_t{0});
  std::stable_sort(idx.begin(), idx.end(),
                   [&](std::int64_t a, std::int64_t b) { return digit(keys_in[a]) < digit(keys_in[b]); });
  std::vector<K> k(static_cast<std::size_t>(n));
  std::vector<V> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    k[static_cast<std::size_t>(i)] = keys_in[idx[static_cast<std::size_t>(i)]];
    v[static_cast<std::size_t>(i)] = values_in[idx[static_cast<std::size_t>(i)]];
  }
  std::copy(k.begin(), k.end(), keys_out);
  std::copy(v.begin(), v.end(), values_out);
  return Status::ok();
#endif
}

}  // namespace tokenless::device
