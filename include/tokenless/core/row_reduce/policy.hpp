#pragma once
// RowReduce semantics: what is reduced (policy types) and how the schedule is
// tuned per compute capability (values).
#include <tokenless/core/config.hpp>
#include <tokenless/core/functional.hpp>

#include <concepts>

namespace tokenless::row_reduce {

// out[r] = Combine over c of transform(x[r, c]); d/dx of transform for backward.
struct SumPolicy {
  static constexpr const char* name = "sum";
  using Combine = Sum;
  TL_HOST_DEVICE static float transform(float x) { return x; }
  TL_HOST_DEVICE static float transform_grad(float) { return 1.0f; }
};

struct SumSquaresPolicy {
  static constexpr const char* name = "sum_squares";
  using Combine = Sum;
  TL_HOST_DEVICE static float transform(float x) { return x * x; }
  TL_HOST_DEVICE static float transform_grad(float x) { return 2.0f * x; }
};

// Backward sends the gradient to the first maximal element (torch.max(dim)).
struct MaxPolicy {
  static constexpr const char* name = "max";
  using Combine = Max;
  TL_HOST_DEVICE static float transform(float x) { return x; }
  TL_HOST_DEVICE static float transform_grad(float) { return 1.0f; }
};

template <class P>
concept Policy = requires(float x) {
  { P::name } -> std::convertible_to<const char*>;
  { P::transform(x) } -> std::same_as<float>;
  { P::transform_grad(x) } -> std::same_as<float>;
  { typename P::Combine{}(x, x) } -> std::same_as<float>;
  { P::Combine::template identity<float>() } -> std::same_as<float>;
};

template <class P>
inline constexpr bool is_max_policy = std::same_as<typename P::Combine, Max>;

// Tuning is values: a block per row, `block_threads` threads, loads of
// `vector_bytes` when the row's alignment allows.
struct Tuning {
  int block_threads;
  int vector_bytes;
  friend constexpr bool operator==(const Tuning&, const Tuning&) = default;
};
// Untuned (no measurement yet): more threads per row where the SM has more
// bandwidth to cover; 16-byte loads everywhere.
inline constexpr Tuning kTuningSm80{256, 16};
inline constexpr Tuning kTuningSm90{512, 16};

constexpr Tuning tuning_for(int compute_capability) {
  return compute_capability >= 90 ? kTuningSm90 : kTuningSm80;
}

}  // namespace tokenless::row_reduce
