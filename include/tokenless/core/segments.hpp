#pragma once
// Segments: the patcher's outputs as every consumer of patches (the
// attention core's BLT and DLCM variants, the concept bottleneck) takes them,
// in either of its two forms (patcher::PatchOutputs):
//   * CSR: offsets [num_seqs + 1] (sequence b owns segments [off[b],
//     off[b+1])), starts (within each sequence) and lengths;
//   * ids: the global segment id of every position (never decreasing).
// The helpers read device arrays (and host ones, in host tests). Local
// helpers take a sequence b whose `bytes` positions start at `first` in the
// batch, and work in positions and segment indices local to it; global ones
// take the batch and work in its positions and global segment ids.
#include <tokenless/core/config.hpp>
#include <tokenless/core/varlen.hpp>

#include <cstdint>

namespace tokenless {

struct Segments {
  const std::int32_t* offsets = nullptr;  // [num_seqs + 1]: sequence b owns segments [off[b], off[b+1])
  const std::int32_t* starts = nullptr;   // start of each segment, within its sequence
  const std::int32_t* lengths = nullptr;
  const std::int32_t* ids = nullptr;      // or: [positions] global segment id of every position

  TL_HOST_DEVICE bool csr() const { return starts != nullptr; }

  // ---------------------------------------------------------------- local
  // Segments of sequence b (ids: from its first and last position).
  TL_HOST_DEVICE int count(std::int64_t b, std::int64_t first, int bytes) const {
    if (csr()) return offsets[b + 1] - offsets[b];
    return bytes > 0 && ids ? ids[first + bytes - 1] - ids[first] + 1 : 0;
  }
  // First position of local segment p (0 <= p < count).
  TL_HOST_DEVICE int begin(std::int64_t b, std::int64_t first, int bytes, int p) const {
    if (csr()) return starts[offsets[b] + p];
    return ids ? static_cast<int>(search(first, first + bytes, ids[first] + p) - first) : 0;
  }
  // One past its last position.
  TL_HOST_DEVICE int end(std::int64_t b, std::int64_t first, int bytes, int p) const {
    if (csr()) return starts[offsets[b] + p] + lengths[offsets[b] + p];
    return ids ? static_cast<int>(search(first, first + bytes, ids[first] + p + 1) - first) : 0;
  }
  // The local segment of local position j.
  TL_HOST_DEVICE int id_of(std::int64_t b, std::int64_t first, int /*bytes*/, int j) const {
    // (`ids &&`: neither form given is refused by the operations' checks;
    // the test keeps GCC's -Warray-bounds from following a null ids into
    // inlined host code.)
    if (!csr()) return ids ? ids[first + j] - ids[first] : 0;
    return last_start_at_or_before(offsets[b], offsets[b + 1], j) - offsets[b];
  }

  // ---------------------------------------------------------------- global
  // Segments of the whole batch (device-side: the count never leaves it).
  TL_HOST_DEVICE std::int64_t total(const VarlenBatch& batch) const {
    if (csr()) return offsets[batch.num_seqs];
    return ids ? ids[batch.total - 1] + 1 : 0;
  }
  // Positions [lo, hi) of global segment p of the batch.
  TL_HOST_DEVICE void positions(const VarlenBatch& batch, std::int64_t p, std::int64_t& lo, std::int64_t& hi) const {
    if (csr()) {
      const std::int64_t a = sequence_of(batch.num_seqs, p);
      lo = batch.start(a) + starts[p];
      hi = lo + lengths[p];
      return;
    }
    lo = ids ? search(0, batch.total, static_cast<std::int32_t>(p)) : 0;
    hi = ids ? search(lo, batch.total, static_cast<std::int32_t>(p + 1)) : 0;
  }
  // The sequence that owns CSR segment p: the last b with off[b] <= p
  // (empty sequences before it share its offset).
  TL_HOST_DEVICE std::int64_t sequence_of(std::int64_t num_seqs, std::int64_t p) const {
    std::int64_t a = 0, z = num_seqs;
    while (z - a > 1) {
      const std::int64_t mid = (a + z) / 2;
      if (offsets[mid] <= p) a = mid;
      else z = mid;
    }
    return a;
  }
  // The global segment of batch position pos.
  TL_HOST_DEVICE std::int64_t segment_of(const VarlenBatch& batch, std::int64_t pos) const {
    if (!csr()) return ids ? ids[pos] : 0;
    const std::int64_t b = batch.seq_of(pos);
    return last_start_at_or_before(offsets[b], offsets[b + 1], static_cast<int>(pos - batch.start(b)));
  }

 private:
  // The first position in [lo, hi) whose id is >= target (ids never decrease).
  TL_HOST_DEVICE std::int64_t search(std::int64_t lo, std::int64_t hi, std::int32_t target) const {
    while (lo < hi) {
      const std::int64_t mid = (lo + hi) / 2;
      if (ids[mid] < target) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
  // The last CSR segment in [a, z) starting at or before local position j
  // (the first when none does).
  TL_HOST_DEVICE int last_start_at_or_before(int a, int z, int j) const {
    int lo = a, hi = z;
    while (hi - lo > 1) {
      const int mid = (lo + hi) / 2;
      if (starts[mid] <= j) lo = mid;
      else hi = mid;
    }
    return lo;
  }
};

}  // namespace tokenless
