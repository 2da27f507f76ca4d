#pragma once
// The multi-tensor apply's plan (after apex's and PyTorch's fused
// optimizers): the tensors a step updates, each cut into chunks of kChunk
// elements, in one table the kernels walk, so that a step over a model's
// hundreds of tensors is a few launches. The moments (and an fp32 master
// copy) are flat buffers over all tensors, tensor i's elements at
// offset(i). A plan is built once on the host; its image is copied to
// device memory the caller owns (bytes() of it), and view() names it.
//
//   std::vector<optim::TensorRef> t = {{w.get(), g.get(), n, true}, ...};
//   optim::Plan plan;
//   TL_RETURN_IF_ERROR(optim::Plan::build(t, &plan));
//   table.upload(plan.image());          // a buffer of plan.bytes()
//   optim::PlanView v = plan.view(table.get());
#include <tokenless/core/status.hpp>
#include <tokenless/optim/policy.hpp>

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

namespace tokenless::optim {

// One tensor: its parameter and gradient (device pointers, in the
// operation's dtypes), its element count, and whether it is decayed.
struct TensorRef {
  void* param = nullptr;
  const void* grad = nullptr;
  std::int64_t numel = 0;
  bool decay = true;
};

// The device table (plain data).
struct TensorEntry {
  void* param;
  const void* grad;
  std::int64_t offset;  // its first element in the flat moments and master
  std::int64_t numel;
  float decay;          // 1 or 0
  std::int32_t pad;
};
struct ChunkEntry {
  std::int32_t tensor;
  std::int32_t pad;
  std::int64_t start;  // within the tensor
};

struct PlanView {
  const TensorEntry* tensors = nullptr;  // device
  const ChunkEntry* chunks = nullptr;    // device
  std::int64_t num_tensors = 0, num_chunks = 0;
  std::int64_t total = 0;  // elements over all tensors
};

class Plan {
 public:
  static Status build(const std::vector<TensorRef>& refs, Plan* out) {
    if (refs.empty()) return Status::argument(StatusCode::invalid_argument, "tensors", "at least one", "none");
    Plan p;
    std::int64_t offset = 0;
    for (std::size_t i = 0; i < refs.size(); ++i) {
      const TensorRef& r = refs[i];
      if (!r.param || !r.grad) {
        return Status::error(StatusCode::null_pointer, "optim::Plan: tensor %zu has a null %s", i, r.param ? "grad" : "param");
      }
      if (r.numel <= 0) {
        return Status::error(StatusCode::invalid_argument, "optim::Plan: tensor %zu has %lld elements (expected > 0)", i,
                             static_cast<long long>(r.numel));
      }
      p.tensors_.push_back({r.param, r.grad, offset, r.numel, r.decay ? 1.0f : 0.0f, 0});
      for (std::int64_t s = 0; s < r.numel; s += kChunk) p.chunks_.push_back({static_cast<std::int32_t>(i), 0, s});
      offset += r.numel;
      if (p.chunks_.size() > 0x7fffffffu) {
        return Status::error(StatusCode::invalid_argument, "optim::Plan: more than 2^31 - 1 chunks of %d elements", kChunk);
      }
    }
    p.total_ = offset;
    *out = std::move(p);
    return Status::ok();
  }

  std::int64_t num_tensors() const { return static_cast<std::int64_t>(tensors_.size()); }
  std::int64_t num_chunks() const { return static_cast<std::int64_t>(chunks_.size()); }
  std::int64_t total() const { return total_; }
  std::int64_t offset(std::size_t i) const { return tensors_[i].offset; }
  // The device image: the tensor entries, then (at chunk_offset()) the chunks.
  std::size_t chunk_offset() const { return (tensors_.size() * sizeof(TensorEntry) + 15) / 16 * 16; }
  std::size_t bytes() const { return chunk_offset() + chunks_.size() * sizeof(ChunkEntry); }
  std::vector<unsigned char> image() const {
    std::vector<unsigned char> b(bytes(), 0);
    std::memcpy(b.data(), tensors_.data(), tensors_.size() * sizeof(TensorEntry));
    std::memcpy(b.data() + chunk_offset(), chunks_.data(), chunks_.size() * sizeof(ChunkEntry));
    return b;
  }
  // The plan at `device` (bytes() of it, holding image()).
  PlanView view(const void* device) const {
    const auto* base = static_cast<const unsigned char*>(device);
    return {reinterpret_cast<const TensorEntry*>(base), reinterpret_cast<const ChunkEntry*>(base + chunk_offset()),
            num_tensors(), num_chunks(), total_};
  }

 private:
  std::vector<TensorEntry> tensors_;
  std::vector<ChunkEntry> chunks_;
  std::int64_t total_ = 0;
};

}  // namespace tokenless::optim
