#pragma once
// A batch of sequences with their segments (patches, chunks) on the device,
// in both forms the bottleneck takes, and the reference's view of them.
#include "patch_set.hpp"
#include "support.hpp"

#include <tokenless/core/segments.hpp>
#include <tokenless/core/varlen.hpp>
#include <tokenless/reference/bottleneck.hpp>

#include <cstdint>
#include <utility>
#include <vector>

namespace tlt {

struct SegmentProblem {
  using Segments = tokenless::Segments;
  PatchSet ps;  // segment lengths per sequence
  std::vector<tokenless::reference::bottleneck::Segment> segs;
  DeviceBuffer<std::int32_t> cu, off, st, ln, ids;
  explicit SegmentProblem(std::vector<std::vector<int>> lengths)
      : ps(std::move(lengths)), segs(tokenless::reference::bottleneck::segments_from_lengths(ps.lengths)),
        cu(ps.cu_bytes), off(ps.offsets), st(ps.starts), ln(ps.lens),
        ids(ps.ids.empty() ? std::vector<std::int32_t>{0} : ps.ids) {}
  tokenless::VarlenBatch batch() const {
    return tokenless::VarlenBatch::packed(cu.get(), static_cast<std::int64_t>(ps.lengths.size()), total());
  }
  std::int64_t total() const { return ps.cu_bytes.back(); }
  std::int64_t count() const { return static_cast<std::int64_t>(segs.size()); }
  Segments segments(bool csr) const {
    return csr ? Segments{off.get(), st.get(), ln.get(), nullptr} : Segments{nullptr, nullptr, nullptr, ids.get()};
  }
};

}  // namespace tlt
