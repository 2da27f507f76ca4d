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

// A tuning: a small value type, compared by value. One with a block size
// names it block_threads, and it must be positive.
template <class T>
concept TuningValue = std::is_trivially_copyable_v<T> && std::equality_comparable<T>;

template <class T>
constexpr bool valid_block(const T& t) {
  if constexpr (requires { t.block_threads; }) return t.block_threads > 0 && t.block_threads % 32 == 0;
  else return true;
}

// A selector: constexpr, defined for every architecture the library builds.
template <auto Select>
concept TuningSelector = requires {
  { Select(80) } -> TuningValue;
  { Select(90) } -> TuningValue;
} && valid_block(Select(80)) && valid_block(Select(90));

}  // namespace tokenless
