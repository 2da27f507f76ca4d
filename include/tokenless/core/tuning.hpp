#pragma once
// Tuning is values (after CUB's tuning policies): each operation has a
// `Tuning` struct and a constexpr selector `tuning_for(compute_capability)`,
// with a comment on every value saying where it came from (a measurement,
// its device and commit, or "untuned"). Semantics never depend on tuning:
// results are the same for every tuning (bit for bit where an operation is
// deterministic). The CPU executor reports a settable compute capability
// (TOKENLESS_EMU_CC, emu::Options), so the emu tier runs every tuning.
#include <concepts>
#include <type_traits>

namespace tokenless {

// A tuning: a small value type, compared by value, with the block size of
// its main kernel.
template <class T>
concept TuningValue = std::is_trivially_copyable_v<T> && std::equality_comparable<T> && requires(const T& t) {
  { t.block_threads } -> std::convertible_to<int>;
};

// A selector: constexpr, defined for every architecture the library builds.
template <auto Select>
concept TuningSelector = requires {
  { Select(80) } -> TuningValue;
  { Select(90) } -> TuningValue;
} && (Select(80).block_threads > 0) && (Select(90).block_threads > 0);

}  // namespace tokenless
