#pragma once
// VarlenBatch: the batch of every operation over sequences of positions.
//
// A batch is `num_seqs` sequences packed end to end, `total` positions in
// all. Packed (varlen) batches give the offsets on the device, FlashAttention's
// cu_seqlens: sequence b owns positions [cu[b], cu[b + 1]). Without
// cu_seqlens the sequences have equal lengths, total / num_seqs each (a padded
// [B, L] batch).
//
// The one rule for every operation: the batch must not be empty (num_seqs > 0,
// total > 0), but a sequence may be (cu[b] == cu[b + 1]); it owns no position.
// Whether cu_seqlens is a valid prefix sum only the device can see: an
// operation checks it there, writes nothing when it is not, and read_status()
// names the entry (core/device_status.cuh).
#include <tokenless/core/config.hpp>
#include <tokenless/core/status.hpp>
#include <tokenless/core/validate.hpp>

#include <cstdint>

namespace tokenless {

struct VarlenBatch {
  const std::int32_t* cu_seqlens = nullptr;  // [num_seqs + 1], device; null: equal lengths
  std::int64_t num_seqs = 0;
  std::int64_t total = 0;                    // positions over all sequences (cu[num_seqs])

  static constexpr VarlenBatch packed(const std::int32_t* cu_seqlens, std::int64_t num_seqs, std::int64_t total) {
    return {cu_seqlens, num_seqs, total};
  }
  static constexpr VarlenBatch uniform(std::int64_t num_seqs, std::int64_t seq_len) {
    return {nullptr, num_seqs, num_seqs * seq_len};
  }

  TL_HOST_DEVICE constexpr bool varlen() const { return cu_seqlens != nullptr; }

  // Device side (cu_seqlens lives on the device).
  TL_HOST_DEVICE std::int64_t start(std::int64_t b) const {
    return cu_seqlens ? static_cast<std::int64_t>(cu_seqlens[b]) : b * (total / num_seqs);
  }
  TL_HOST_DEVICE std::int64_t length(std::int64_t b) const { return start(b + 1) - start(b); }

  // The sequence that owns position `pos`, when every sequence has `extra`
  // more positions than bytes (the patcher's include_next_token): sequence b
  // then starts at start(b) + b * extra. Empty sequences own nothing, so the
  // search lands on the last sequence that starts at or before pos.
  TL_HOST_DEVICE std::int64_t seq_of(std::int64_t pos, int extra = 0) const {
    if (!cu_seqlens) return pos / (total / num_seqs + extra);
    std::int64_t lo = 0, hi = num_seqs;  // first(lo) <= pos < first(hi)
    while (hi - lo > 1) {
      const std::int64_t mid = (lo + hi) / 2;
      if (cu_seqlens[mid] + mid * extra <= pos) lo = mid;
      else hi = mid;
    }
    return lo;
  }
  // Whether `pos` is the first position of its sequence.
  TL_HOST_DEVICE bool is_start(std::int64_t pos) const { return start(seq_of(pos)) == pos; }
};

namespace check {
// The host-side checks of a batch whose positions a kernel indexes with
// 32-bit integers (after `extra` positions per sequence).
inline Status batch(const char* name, const VarlenBatch& b, int extra = 0) {
  if (b.num_seqs <= 0) {
    return Status::argument(b.num_seqs == 0 ? StatusCode::empty : StatusCode::invalid_argument, name,
                            "num_seqs > 0 (a non-empty batch)", "num_seqs %lld", static_cast<long long>(b.num_seqs));
  }
  if (b.total <= 0) {
    return Status::argument(b.total == 0 ? StatusCode::empty : StatusCode::invalid_argument, name,
                            "total > 0 (a non-empty batch)", "total %lld", static_cast<long long>(b.total));
  }
  if (b.num_seqs >= (std::int64_t{1} << 31) || b.total + b.num_seqs * extra >= (std::int64_t{1} << 31)) {
    return Status::argument(StatusCode::overflow, name, "positions that fit 32-bit indexing",
                            "total %lld over %lld sequences", static_cast<long long>(b.total),
                            static_cast<long long>(b.num_seqs));
  }
  if (!b.varlen() && b.total % b.num_seqs != 0) {
    return Status::argument(StatusCode::shape_mismatch, name,
                            "total a multiple of num_seqs (equal lengths without cu_seqlens)", "total %lld, num_seqs %lld",
                            static_cast<long long>(b.total), static_cast<long long>(b.num_seqs));
  }
  return Status::ok();
}
}  // namespace check

}  // namespace tokenless
