#pragma once
// Status: the error channel of every operation. No exceptions, no allocation:
// the message lives in a fixed buffer and names the argument, what was
// expected and what was seen.
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>

namespace tokenless {

enum class StatusCode : std::uint8_t {
  ok = 0,
  invalid_argument,    // a value outside its domain (NaN threshold, id out of vocab, ...)
  null_pointer,
  misaligned,
  shape_mismatch,
  empty,               // an empty batch or zero-length dimension where work is required
  overflow,            // a size that does not fit the kernel's index type
  unsupported,         // valid, but not implemented by this kernel (vocab over a kernel's limit, ...)
  workspace_too_small,
  capacity_too_small,  // an output's capacity (patches, touched rows) is less than the batch needs
  no_device,
  cuda_error,
  cublas_error,
  internal,
};

inline constexpr const char* to_string(StatusCode c) {
  switch (c) {
    case StatusCode::ok: return "ok";
    case StatusCode::invalid_argument: return "invalid argument";
    case StatusCode::null_pointer: return "null pointer";
    case StatusCode::misaligned: return "misaligned pointer";
    case StatusCode::shape_mismatch: return "shape mismatch";
    case StatusCode::empty: return "empty input";
    case StatusCode::overflow: return "size overflow";
    case StatusCode::unsupported: return "unsupported";
    case StatusCode::workspace_too_small: return "workspace too small";
    case StatusCode::capacity_too_small: return "capacity too small";
    case StatusCode::no_device: return "no device";
    case StatusCode::cuda_error: return "CUDA error";
    case StatusCode::cublas_error: return "cuBLAS error";
    case StatusCode::internal: return "internal error";
  }
  return "?";
}

class [[nodiscard]] Status {
 public:
  static constexpr std::size_t kMessageBytes = 256;

  constexpr Status() = default;

  static Status ok() { return Status(); }

  // printf-style message; truncated to kMessageBytes - 1 characters.
  static Status error(StatusCode code, const char* fmt, ...) __attribute__((format(printf, 2, 3))) {
    Status s;
    s.code_ = code;
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(s.message_, kMessageBytes, fmt, ap);
    va_end(ap);
    return s;
  }

  // "argument 'name': expected <expected>, got <seen>"
  static Status argument(StatusCode code, const char* name, const char* expected, const char* seen_fmt, ...)
      __attribute__((format(printf, 4, 5))) {
    char seen[128];
    va_list ap;
    va_start(ap, seen_fmt);
    std::vsnprintf(seen, sizeof seen, seen_fmt, ap);
    va_end(ap);
    return error(code, "argument '%s': expected %s, got %s", name, expected, seen);
  }

  constexpr bool is_ok() const { return code_ == StatusCode::ok; }
  constexpr explicit operator bool() const { return is_ok(); }
  constexpr StatusCode code() const { return code_; }
  const char* message() const { return code_ == StatusCode::ok ? "ok" : message_; }

 private:
  StatusCode code_ = StatusCode::ok;
  char message_[kMessageBytes] = {};
};

}  // namespace tokenless

// Returns from the enclosing function when the expression yields a failed
// Status (variadic: template arguments may hold commas).
#define TL_RETURN_IF_ERROR(...)                        \
  do {                                                 \
    ::tokenless::Status tl_status_ = (__VA_ARGS__);    \
    if (!tl_status_.is_ok()) return tl_status_;        \
  } while (0)
