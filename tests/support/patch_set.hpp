#pragma once
// Patch lengths per sequence -> the patcher's outputs in both forms the
// attention variants take: CSR (offsets, starts within each sequence,
// lengths) and per-position global patch ids. Host-only (the host tier
// includes it too).
#include <tokenless/attention/policy.hpp>

#include <cstdint>
#include <utility>
#include <vector>

namespace tlt {

struct PatchSet {
  std::vector<std::vector<int>> lengths;  // per sequence
  std::vector<std::int32_t> cu_bytes, offsets, starts, lens, ids;
  explicit PatchSet(std::vector<std::vector<int>> l) : lengths(std::move(l)) {
    cu_bytes = {0};
    offsets = {0};
    for (const auto& seq : lengths) {
      int pos = 0;
      for (int len : seq) {
        starts.push_back(pos);
        lens.push_back(len);
        for (int t = 0; t < len; ++t) ids.push_back(static_cast<std::int32_t>(starts.size() - 1));
        pos += len;
      }
      cu_bytes.push_back(cu_bytes.back() + pos);
      offsets.push_back(static_cast<std::int32_t>(starts.size()));
    }
  }
  std::vector<std::int32_t> slots_cu(int k) const {
    std::vector<std::int32_t> cu = {0};
    for (const auto& seq : lengths) cu.push_back(cu.back() + static_cast<std::int32_t>(seq.size()) * k);
    return cu;
  }
  // Host views (the host tier calls the variants' hooks on them).
  tokenless::attention::Patches csr() const { return {offsets.data(), starts.data(), lens.data(), nullptr}; }
  tokenless::attention::Patches by_id() const { return {nullptr, nullptr, nullptr, ids.data()}; }
};

}  // namespace tlt
