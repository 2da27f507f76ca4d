#pragma once
// The device buffers of a patcher's CSR outputs, for n_pos positions in B
// sequences and `capacity` patches.
#include "support.hpp"

#include <tokenless/tokenless.cuh>

namespace tlt {

struct PatchBuffers {
  DeviceBuffer<std::uint8_t> flags;
  DeviceBuffer<std::int32_t> ids, offsets, starts, lengths;
  std::int64_t capacity;
  PatchBuffers(std::int64_t n_pos, std::int64_t B, std::int64_t cap)
      : flags(n_pos), ids(n_pos), offsets(B + 1), starts(cap), lengths(cap), capacity(cap) {}
  tokenless::patcher::PatchOutputs outputs() const {
    return {flags.get(), ids.get(), offsets.get(), starts.get(), lengths.get(), capacity};
  }
};

}  // namespace tlt
