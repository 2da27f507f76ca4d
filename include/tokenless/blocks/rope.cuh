#pragma once
// Rotary position embedding (policy.hpp has the semantics), applied in
// place to a token's q heads and k heads in one launch: q and k may be the
// separate projections or views into one fused qkv row (Phi-3's qkv_proj;
// strides in elements between tokens).
//
//   Rope<L, T>::run          rotates by +angle (the forward)
//   Rope<L, T>::run_backward rotates by -angle: dL/dq and dL/dk through the
//                            rotation (it is orthogonal), also in place
//
// Positions: an explicit [tokens] array (transformers' position_ids), or
// each token's place in its sequence of `batch`, plus an optional offset
// per sequence: the KV cache's length before this step's tokens are
// appended (decode and chunked prefill). The frequency table comes from
// rope_inv_freq() (policy.hpp), uploaded once when the model is set up.
//
// Device-side check: a varlen batch's cu_seqlens (read_status() names the
// entry; nothing is rotated when it is bad).
#include <tokenless/blocks/policy.hpp>
#include <tokenless/blocks/rope_kernel.cuh>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/varlen.hpp>
#include <tokenless/core/workspace.hpp>

#include <cstdint>

namespace tokenless::blocks {

template <RopeLayout L, StorageFloat T>
struct Rope {
  static constexpr const char* kName = "blocks::Rope";
  static constexpr int kMaxRotDim = detail::kRopeMaxRotDim;
  struct Arguments {
    T* q = nullptr;  // [batch.total, q_heads, head_dim], rotated in place
    T* k = nullptr;  // [batch.total, k_heads, head_dim], optional, rotated in place
    VarlenBatch batch;
    int q_heads = 0, k_heads = 0, head_dim = 0;
    int rot_dim = 0;                         // the rotated features of each head (0: all of them)
    std::int64_t q_stride = 0, k_stride = 0;  // elements between tokens (0: packed heads)
    const float* inv_freq = nullptr;          // [rot_dim / 2], device
    const std::int32_t* positions = nullptr;  // [batch.total], device, optional
    const std::int32_t* offset = nullptr;     // [batch.num_seqs], device, optional (without positions)
  };
  static int rot_of(const Arguments& a) { return a.rot_dim ? a.rot_dim : a.head_dim; }
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::batch("batch", a.batch));
    TL_RETURN_IF_ERROR(check::positive("q_heads", a.q_heads));
    TL_RETURN_IF_ERROR(check::positive("head_dim", a.head_dim));
    TL_RETURN_IF_ERROR(check::not_null("q", a.q));
    TL_RETURN_IF_ERROR(check::not_null("inv_freq", a.inv_freq));
    if (a.k) TL_RETURN_IF_ERROR(check::positive("k_heads", a.k_heads));
    const int rot = rot_of(a);
    if (rot <= 0 || rot % 2 != 0 || rot > a.head_dim) {
      return Status::argument(StatusCode::invalid_argument, "rot_dim", "an even rot_dim in (0, head_dim]",
                              "%d (head_dim %d)", rot, a.head_dim);
    }
    if (rot > kMaxRotDim) {
      return Status::argument(StatusCode::unsupported, "rot_dim", "at most 256 rotated features a head", "%d", rot);
    }
    const std::int64_t q_row = std::int64_t{a.q_heads} * a.head_dim, k_row = std::int64_t{a.k_heads} * a.head_dim;
    if (a.q_stride && a.q_stride < q_row) {
      return Status::argument(StatusCode::invalid_argument, "q_stride", "a token stride >= q_heads * head_dim", "%lld",
                              static_cast<long long>(a.q_stride));
    }
    if (a.k && a.k_stride && a.k_stride < k_row) {
      return Status::argument(StatusCode::invalid_argument, "k_stride", "a token stride >= k_heads * head_dim", "%lld",
                              static_cast<long long>(a.k_stride));
    }
    if (a.positions && a.offset) {
      return Status::argument(StatusCode::invalid_argument, "offset", "null when positions are given",
                              "both positions and offset");
    }
    return Status::ok();
  }
  static std::size_t workspace_size(const Arguments&) { return kStatusBytes; }
  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) { return rotate(a, ws, stream, 1); }
  static Status run_backward(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    return rotate(a, ws, stream, -1);
  }
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    return read_batch_status(kName, a.batch, ws, stream);
  }

 private:
  static Status rotate(const Arguments& a, Workspace ws, cudaStream_t stream, float sign) {
    TL_RETURN_IF_ERROR(check_run<Rope>(a, ws));
    DeviceStatus* status = status_of(ws);
    // Explicit positions do not read the batch's offsets: nothing to check.
    TL_RETURN_IF_ERROR(a.positions ? reset_device_status(status, stream) : begin_checks(status, a.batch, stream));
    const std::int64_t qs = a.q_stride ? a.q_stride : std::int64_t{a.q_heads} * a.head_dim;
    const std::int64_t ks = a.k_stride ? a.k_stride : std::int64_t{a.k_heads} * a.head_dim;
    const int seq_len = a.batch.varlen() ? 0 : static_cast<int>(a.batch.total / a.batch.num_seqs);
    using K = detail::RopeKernel<L, T>;
    return launch<K>({a.q, qs, a.q_heads, a.k, ks, a.k ? a.k_heads : 0, a.head_dim, rot_of(a), a.inv_freq, a.positions,
                      a.batch, seq_len, a.offset, sign, status},
                     grid_for(a.batch.total, K::kThreads / 32, 8), stream);
  }
};

}  // namespace tokenless::blocks
