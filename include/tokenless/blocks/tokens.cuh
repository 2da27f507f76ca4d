#pragma once
// Token ids in and out of a model, on the device (no host sync between
// decode steps: the next id is written where the next step's embedding
// reads it).
//
//   Embedding<T>          out[t] = table[ids[t]]; an id outside [0, vocab)
//                         is reported by read_status() and nothing is written
//   EmbeddingBackward<T>  grad_table[id] (+)= Σ_{t: ids[t] = id} dL/dout[t] in
//                         fp32, deterministic (the tokens sorted by id, each
//                         run summed in token order); rows of ids absent from
//                         the batch are not touched (accumulate into a zeroed
//                         table for a fresh gradient)
//   Argmax<T>             ids[r] = argmax of row r (torch.argmax's rule: the
//                         first of equal maxima, NaN largest): greedy decoding
#include <tokenless/blocks/norm.cuh>
#include <tokenless/blocks/tokens_kernel.cuh>
#include <tokenless/core/device_algorithms.cuh>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/workspace.hpp>

#include <cstdint>

namespace tokenless::blocks {

namespace detail {
// read_status() of an operation whose device check is the ids'.
inline Status read_ids_status(const char* op, const std::int32_t* ids, std::int64_t vocab, Workspace ws,
                              cudaStream_t stream) {
  DeviceFailure f;
  TL_RETURN_IF_ERROR(read_device_status(status_of(ws), f, stream));
  if (f.check == 0) return Status::ok();
  if (f.check != kCheckTokenId) return Status::error(StatusCode::internal, "%s: unknown device check %d", op, f.check);
  std::int32_t id = 0;
  TL_CUDA_TRY(cudaMemcpyAsync(&id, ids + f.index, sizeof id, cudaMemcpyDeviceToHost, stream));
  TL_CUDA_TRY(cudaStreamSynchronize(stream));
  char expected[64];
  std::snprintf(expected, sizeof expected, "ids in [0, %lld) (nothing was written)", static_cast<long long>(vocab));
  return device_failure(op, StatusCode::invalid_argument, "ids", expected, "ids[%lld] = %d",
                        static_cast<long long>(f.index), id);
}
}  // namespace detail

template <StorageFloat T>
struct Embedding {
  static constexpr const char* kName = "blocks::Embedding";
  struct Arguments {
    const T* table = nullptr;        // [vocab, d]: model.embed_tokens.weight
    const std::int32_t* ids = nullptr;  // [n], device
    std::int64_t n = 0, vocab = 0;
    int d = 0;
    T* out = nullptr;                // [n, d]
    std::int64_t out_stride = 0;     // 0: packed
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::positive("n", a.n));
    TL_RETURN_IF_ERROR(check::positive("vocab", a.vocab));
    TL_RETURN_IF_ERROR(check::fits_int32("vocab", a.vocab));
    TL_RETURN_IF_ERROR(detail::check_dims(a.n, a.d));
    TL_RETURN_IF_ERROR(check::not_null({{"table", a.table}, {"ids", a.ids}}));
    return detail::check_row("out", a.out, a.out_stride, a.d);
  }
  static std::size_t workspace_size(const Arguments&) { return kStatusBytes; }
  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<Embedding>(a, ws));
    DeviceStatus* status = status_of(ws);
    TL_RETURN_IF_ERROR(reset_device_status(status, stream));
    TL_RETURN_IF_ERROR(launch<detail::CheckIdsKernel>({a.ids, a.n, a.vocab, status},
                                                      grid_for(a.n, detail::CheckIdsKernel::kThreads, 8), stream));
    const std::int64_t os = detail::or_packed(a.out_stride, a.d);
    const bool vec = detail::vectorizable<T>(a.d, {{a.table, a.d}, {a.out, os}});
    return detail::dispatch_width<T>(vec, [&](auto w) {
      using K = detail::EmbedKernel<T, decltype(w)::value>;
      return launch<K>({a.table, a.ids, a.n, a.d, a.out, os, status}, detail::row_grid(a.n), stream);
    });
  }
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    return detail::read_ids_status(kName, a.ids, a.vocab, ws, stream);
  }
};

template <StorageFloat T>
struct EmbeddingBackward {
  static constexpr const char* kName = "blocks::EmbeddingBackward";
  struct Arguments {
    const std::int32_t* ids = nullptr;  // [n], device
    const T* grad_out = nullptr;        // [n, d]
    std::int64_t n = 0, vocab = 0;
    int d = 0;
    std::int64_t grad_out_stride = 0;
    float* grad_table = nullptr;        // [vocab, d] fp32: the touched rows written or accumulated
    bool accumulate = true;
  };
  static int key_bits(std::int64_t vocab) {
    int b = 1;
    while (b < 31 && (std::int64_t{1} << b) < vocab) ++b;
    return b;
  }
  struct Layout {
    std::size_t keys_in, keys_out, tok_in, tok_out, sort, bytes, sort_bytes;
  };
  static Layout layout(const Arguments& a) {
    std::size_t sort_bytes = 0;
    (void)device::sort_pairs<std::uint32_t, std::int32_t>(nullptr, sort_bytes, nullptr, nullptr, nullptr, nullptr, a.n,
                                                          0, key_bits(a.vocab));
    WorkspaceLayout w;
    Layout l{};
    w.add(kStatusBytes);
    l.keys_in = w.add_array<std::uint32_t>(a.n);
    l.keys_out = w.add_array<std::uint32_t>(a.n);
    l.tok_in = w.add_array<std::int32_t>(a.n);
    l.tok_out = w.add_array<std::int32_t>(a.n);
    l.sort = w.add(sort_bytes);
    l.sort_bytes = sort_bytes;
    l.bytes = w.bytes();
    return l;
  }
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::positive("n", a.n));
    TL_RETURN_IF_ERROR(check::fits_int32("n", a.n));
    TL_RETURN_IF_ERROR(check::positive("vocab", a.vocab));
    TL_RETURN_IF_ERROR(check::fits_int32("vocab", a.vocab));
    TL_RETURN_IF_ERROR(detail::check_dims(a.n, a.d));
    TL_RETURN_IF_ERROR(check::not_null({{"ids", a.ids}, {"grad_table", a.grad_table}}));
    return detail::check_row("grad_out", a.grad_out, a.grad_out_stride, a.d);
  }
  static std::size_t workspace_size(const Arguments& a) { return layout(a).bytes; }
  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<EmbeddingBackward>(a, ws));
    const Layout l = layout(a);
    DeviceStatus* status = status_of(ws);
    TL_RETURN_IF_ERROR(reset_device_status(status, stream));
    TL_RETURN_IF_ERROR(launch<detail::CheckIdsKernel>({a.ids, a.n, a.vocab, status},
                                                      grid_for(a.n, detail::CheckIdsKernel::kThreads, 8), stream));
    auto* keys_in = ws.at<std::uint32_t>(l.keys_in);
    auto* tok_in = ws.at<std::int32_t>(l.tok_in);
    TL_RETURN_IF_ERROR(launch<detail::SortInputKernel>({a.ids, a.n, keys_in, tok_in, status},
                                                       grid_for(a.n, detail::SortInputKernel::kThreads, 8), stream));
    std::size_t sort_bytes = l.sort_bytes;
    TL_RETURN_IF_ERROR(device::sort_pairs(ws.at<void>(l.sort), sort_bytes, keys_in, ws.at<std::uint32_t>(l.keys_out),
                                          tok_in, ws.at<std::int32_t>(l.tok_out), a.n, 0, key_bits(a.vocab), stream));
    return launch<detail::EmbedGradKernel<T>>(
        {reinterpret_cast<const std::int32_t*>(ws.at<std::uint32_t>(l.keys_out)), ws.at<std::int32_t>(l.tok_out), a.n,
         a.d, a.grad_out, detail::or_packed(a.grad_out_stride, a.d), a.accumulate, a.grad_table, status},
        detail::row_grid(a.n), stream);
  }
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    return detail::read_ids_status(kName, a.ids, a.vocab, ws, stream);
  }
};

template <StorageFloat T>
struct Argmax {
  static constexpr const char* kName = "blocks::Argmax";
  struct Arguments {
    const T* x = nullptr;      // [rows, cols]: logits
    std::int64_t rows = 0;
    int cols = 0;              // the vocabulary
    std::int64_t stride = 0;   // 0: packed
    std::int32_t* out = nullptr;   // ids[r · out_stride]
    std::int64_t out_stride = 1;
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_dims(a.rows, a.cols));
    TL_RETURN_IF_ERROR(detail::check_row("x", a.x, a.stride, a.cols));
    TL_RETURN_IF_ERROR(check::not_null("out", a.out));
    return check::positive("out_stride", a.out_stride);
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    using K = detail::ArgmaxKernel<T>;
    return launch<K>({a.x, detail::or_packed(a.stride, a.cols), a.rows, a.cols, a.out, a.out_stride},
                     grid_for(a.rows, 1, 8), stream);
  }
};

}  // namespace tokenless::blocks
