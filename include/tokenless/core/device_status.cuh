#pragma once
// One device-side status for every operation.
//
// What only the device can see (an id outside the vocabulary, a cu_seqlens
// that is not a prefix sum, more patches than the capacity) is recorded in a
// DeviceStatus in the operation's workspace. The rule for every operation:
//
//   * run() resets the record, its first kernels check, and every later
//     kernel whose Params carry `status` returns at once when a check failed
//     (the kernel layer does this, core/kernel.cuh): nothing is written,
//     except what an operation documents (the patcher's entropies from logits);
//   * the smallest check, then the smallest index, wins, whatever the order
//     in which threads ran, so the report is deterministic;
//   * read_status() synchronises the stream and turns the record into a
//     Status that names the operation, the argument and the values seen. It
//     is for tests and debugging, never on the hot path.
#include <tokenless/core/config.hpp>
#include <tokenless/core/device.hpp>
#include <tokenless/core/status.hpp>
#include <tokenless/core/varlen.hpp>
#include <tokenless/core/workspace.hpp>

#include <cstdarg>
#include <cstdint>
#include <cstdio>

namespace tokenless {

struct DeviceStatus {
  unsigned long long first;  // kDeviceOk, or check << 40 | index: the first failure
  long long required;        // capacity checks: how much was needed
  long long detail;          // what the check adds (which table, ...)
};

inline constexpr unsigned long long kDeviceOk = ~0ull;
inline constexpr int kCheckIndexBits = 40;
// Check ids order the failures. Core's: the batch's offsets. Operations
// number theirs from kFirstOperationCheck.
inline constexpr int kCheckBatch = 1;
inline constexpr int kFirstOperationCheck = 2;

TL_DEVICE TL_FORCEINLINE bool device_ok(const DeviceStatus* s) { return s == nullptr || s->first == kDeviceOk; }

TL_DEVICE TL_FORCEINLINE void device_fail(DeviceStatus* s, int check, std::int64_t index) {
  atomicMin(&s->first, static_cast<unsigned long long>(check) << kCheckIndexBits | static_cast<unsigned long long>(index));
}

// The record leads the workspace of every operation with device-side
// checks: its first kStatusBytes.
inline constexpr std::size_t kStatusBytes = align_up(sizeof(DeviceStatus), kWorkspaceAlignment);
inline DeviceStatus* status_of(Workspace ws) { return ws.at<DeviceStatus>(0); }

// What the host reads back: check 0 means every check passed.
struct DeviceFailure {
  int check = 0;
  std::int64_t index = 0;
  std::int64_t required = 0;
  std::int64_t detail = 0;
};

// Marks the record "ok" (all bits set) before the checks run.
inline Status reset_device_status(DeviceStatus* s, cudaStream_t stream) {
  TL_CUDA_TRY(cudaMemsetAsync(s, 0xff, sizeof(DeviceStatus), stream));
  return Status::ok();
}

// Reads the record; synchronises `stream`.
inline Status read_device_status(const DeviceStatus* s, DeviceFailure& out, cudaStream_t stream) {
  out = {};
  if (!s) return Status::ok();
  DeviceStatus h{};
  TL_CUDA_TRY(cudaMemcpyAsync(&h, s, sizeof h, cudaMemcpyDeviceToHost, stream));
  TL_CUDA_TRY(cudaStreamSynchronize(stream));
  if (h.first == kDeviceOk) return Status::ok();
  out.check = static_cast<int>(h.first >> kCheckIndexBits);
  out.index = static_cast<std::int64_t>(h.first & ((1ull << kCheckIndexBits) - 1));
  out.required = h.required;
  out.detail = h.detail;
  return Status::ok();
}

// "<operation>: argument '<name>': expected <expected>, got <seen>", the
// form of every device-side failure.
inline Status device_failure(const char* op, StatusCode code, const char* name, const char* expected,
                             const char* seen_fmt, ...) __attribute__((format(printf, 5, 6)));
inline Status device_failure(const char* op, StatusCode code, const char* name, const char* expected,
                             const char* seen_fmt, ...) {
  char seen[160];
  va_list ap;
  va_start(ap, seen_fmt);
  std::vsnprintf(seen, sizeof seen, seen_fmt, ap);
  va_end(ap);
  return Status::error(code, "%s: argument '%s': expected %s, got %s", op, name, expected, seen);
}

// The batch check's failure, with the offending entry and its predecessor.
inline Status batch_failure(const char* op, const VarlenBatch& b, std::int64_t index, cudaStream_t stream,
                            const char* name = "batch.cu_seqlens") {
  std::int32_t cur = 0, prev = 0;
  TL_CUDA_TRY(cudaMemcpyAsync(&cur, b.cu_seqlens + index, sizeof cur, cudaMemcpyDeviceToHost, stream));
  if (index > 0) TL_CUDA_TRY(cudaMemcpyAsync(&prev, b.cu_seqlens + index - 1, sizeof prev, cudaMemcpyDeviceToHost, stream));
  TL_CUDA_TRY(cudaStreamSynchronize(stream));
  char expected[96];
  std::snprintf(expected, sizeof expected, "0 = cu[0] <= cu[1] <= ... <= cu[%lld] = total (%lld) (nothing was written)",
                static_cast<long long>(b.num_seqs), static_cast<long long>(b.total));
  if (index == 0) return device_failure(op, StatusCode::invalid_argument, name, expected, "cu[0] = %d", cur);
  if (cur < prev) {
    return device_failure(op, StatusCode::invalid_argument, name, expected, "cu[%lld] = %d after cu[%lld] = %d",
                          static_cast<long long>(index), cur, static_cast<long long>(index - 1), prev);
  }
  return device_failure(op, StatusCode::invalid_argument, name, expected, "cu[%lld] = %d",
                        static_cast<long long>(index), cur);
}

// read_status() of an operation whose only device-side check is its batch's.
inline Status read_batch_status(const char* op, const VarlenBatch& batch, Workspace ws, cudaStream_t stream) {
  DeviceFailure f;
  TL_RETURN_IF_ERROR(read_device_status(status_of(ws), f, stream));
  if (f.check == kCheckBatch) return batch_failure(op, batch, f.index, stream);
  if (f.check != 0) return Status::error(StatusCode::internal, "%s: unknown device check %d", op, f.check);
  return Status::ok();
}

}  // namespace tokenless
