#pragma once
// Argument checks shared by every can_implement(): each returns a Status that
// names the argument, the expectation and what was seen.
#include <tokenless/core/status.hpp>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>

namespace tokenless::check {

inline Status not_null(const char* name, const void* p) {
  if (p) return Status::ok();
  return Status::argument(StatusCode::null_pointer, name, "a non-null pointer", "nullptr");
}

// The first null pointer of a list of named arguments.
struct Named {
  const char* name;
  const void* p;
};
inline Status not_null(std::initializer_list<Named> args) {
  for (const Named& a : args) TL_RETURN_IF_ERROR(not_null(a.name, a.p));
  return Status::ok();
}

inline Status aligned(const char* name, const void* p, std::size_t bytes) {
  if (reinterpret_cast<std::uintptr_t>(p) % bytes == 0) return Status::ok();
  return Status::argument(StatusCode::misaligned, name, "a pointer aligned to the element/vector width",
                          "%p (needs %zu-byte alignment)", p, bytes);
}

inline Status positive(const char* name, std::int64_t v) {
  if (v > 0) return Status::ok();
  return Status::argument(v == 0 ? StatusCode::empty : StatusCode::invalid_argument, name, "a value > 0", "%lld",
                          static_cast<long long>(v));
}

// Sizes a kernel indexes with 32-bit integers.
inline Status fits_int32(const char* name, std::int64_t v) {
  if (v >= 0 && v <= std::numeric_limits<std::int32_t>::max()) return Status::ok();
  return Status::argument(StatusCode::overflow, name, "a size that fits 32-bit indexing (<= 2147483647)", "%lld",
                          static_cast<long long>(v));
}

inline Status product_fits_int32(const char* name, std::int64_t a, std::int64_t b) {
  if (a >= 0 && b >= 0 && (a == 0 || b <= std::numeric_limits<std::int32_t>::max() / a)) return Status::ok();
  return Status::argument(StatusCode::overflow, name, "a product that fits 32-bit indexing", "%lld x %lld",
                          static_cast<long long>(a), static_cast<long long>(b));
}

inline Status finite(const char* name, float v) {
  if (std::isfinite(v)) return Status::ok();
  return Status::argument(StatusCode::invalid_argument, name, "a finite value", "%g", static_cast<double>(v));
}

inline Status equal(const char* name, std::int64_t seen, std::int64_t expected) {
  if (seen == expected) return Status::ok();
  return Status::error(StatusCode::shape_mismatch, "argument '%s': expected %lld, got %lld", name,
                       static_cast<long long>(expected), static_cast<long long>(seen));
}

}  // namespace tokenless::check
