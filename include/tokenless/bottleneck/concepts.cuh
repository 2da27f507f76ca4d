#pragma once
// CoCoMix's sparse concepts (facebookresearch/RAM, projects/cocomix), as
// operations a model assembles with blas::Gemm for its dense projections:
//
//   SaeNormalize<T>          x -> (x - mean) / (std + 1e-5) - pre_bias, mean and
//                            unbiased std per row (the SAE's LN; CoCoMix's too)
//   TopK<A, T>               a dense row -> its top k (index, value) pairs, A
//                            on the kept values (TopKRelu: the SAE; TopKRaw:
//                            the concept logits' mask)
//   SparseDecode<T>          Σ_j v_j W[idx_j] + bias + pre_bias, then
//                            × std + mean: the SAE's decode, and CoCoMix's
//                            compression as a gather over k rows instead of
//                            a dense GEMM over the dictionary
//   ConceptLoss<T>           λ · mean over rows of mean_j CE(z, label_j), with
//                            dL/dz in the same pass
//   Mix<M, T>                interleave (slot 2t: h_t, 2t+1: c_t) or add
//   ColumnSum<T>             Σ over rows (bias gradients), in a fixed order
//
// and their backwards. The dictionary is taken row-major by latent, [L, d]:
// W_dec^T for the SAE's decoder (nn.Linear(L, d).weight is [d, L]),
// compress_layer.weight^T for CoCoMix's compression; transpose it once at
// load. Codes are int32 indices and fp32 values, k a row, `code_stride`
// apart. fp32 arithmetic; no atomics anywhere: the dictionary's gradient
// adds each latent's codes in row order after a stable sort by index.
#include <tokenless/bottleneck/concepts_kernel.cuh>
#include <tokenless/bottleneck/pool.cuh>
#include <tokenless/core/device_algorithms.cuh>

#include <cstdint>
#include <cstdio>

namespace tokenless::bottleneck {

namespace detail {

inline Status check_dims(std::int64_t rows, int d) {
  TL_RETURN_IF_ERROR(check::positive("rows", rows));
  TL_RETURN_IF_ERROR(check::positive("d", d));
  return check::fits_int32("rows", rows);
}
inline Status check_dictionary(std::int64_t dictionary) {
  TL_RETURN_IF_ERROR(check::positive("dictionary", dictionary));
  return check::fits_int32("dictionary", dictionary);  // int32 indices
}
inline Status check_k(int k, std::int64_t dictionary, bool topk) {
  if (k < 1 || k > dictionary || (topk && k > kMaxTopK)) {
    return Status::argument(StatusCode::invalid_argument, "k",
                            topk ? "1 <= k <= min(dictionary, 128)" : "1 <= k <= dictionary", "%d (dictionary %lld)", k,
                            static_cast<long long>(dictionary));
  }
  return Status::ok();
}
inline Status check_stride(const char* name, std::int64_t stride, std::int64_t at_least) {
  if (stride >= at_least) return Status::ok();
  return Status::argument(StatusCode::invalid_argument, name, "a stride that keeps rows apart", "%lld for rows of %lld",
                          static_cast<long long>(stride), static_cast<long long>(at_least));
}
inline std::int64_t or_k(std::int64_t stride, int k) { return stride ? stride : k; }

inline Status index_failure(const char* op, const char* what, const DeviceFailure& f, std::int64_t limit) {
  if (f.check == 0) return Status::ok();
  if (f.check == kCheckIndex) {
    char expected[96];
    std::snprintf(expected, sizeof expected, "indices within [0, %lld) (nothing was written)",
                  static_cast<long long>(limit));
    return device_failure(op, StatusCode::invalid_argument, what, expected, "entry %lld outside",
                          static_cast<long long>(f.index));
  }
  return Status::error(StatusCode::internal, "%s: unknown device check %d", op, f.check);
}

}  // namespace detail

// ------------------------------------------------------------------ normalisation
template <StorageFloat T>
struct SaeNormalize {
  static constexpr const char* kName = "bottleneck::SaeNormalize";
  struct Arguments {
    const T* x = nullptr;  // [rows, d]
    std::int64_t rows = 0;
    int d = 0;
    const float* pre_bias = nullptr;  // [d], optional
    std::int64_t x_stride = 0, out_stride = 0;
    T* out = nullptr;       // [rows, d]
    float* mean = nullptr;  // [rows]
    float* std = nullptr;   // [rows]: unbiased
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_dims(a.rows, a.d));
    TL_RETURN_IF_ERROR(check::not_null({{"x", a.x}, {"out", a.out}, {"mean", a.mean}, {"std", a.std}}));
    TL_RETURN_IF_ERROR(detail::check_stride("x_stride", detail::or_packed(a.x_stride, a.d), a.d));
    return detail::check_stride("out_stride", detail::or_packed(a.out_stride, a.d), a.d);
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    return launch<detail::NormalizeKernel<T>>({a.x, detail::or_packed(a.x_stride, a.d), a.rows, a.d, a.pre_bias, a.out,
                                               detail::or_packed(a.out_stride, a.d), a.mean, a.std},
                                              detail::segment_grid(a.rows), stream);
  }
};

template <StorageFloat T>
struct SaeNormalizeBackward {
  static constexpr const char* kName = "bottleneck::SaeNormalizeBackward";
  struct Arguments {
    const T* x = nullptr;
    const T* grad_out = nullptr;  // dL/dx̂
    const float* mean = nullptr;  // the forward's
    const float* std = nullptr;
    const float* grad_mean = nullptr;  // optional: the de-normalisation's (SparseDecodeBackward)
    const float* grad_std = nullptr;   // optional
    std::int64_t rows = 0;
    int d = 0;
    std::int64_t x_stride = 0, grad_out_stride = 0, grad_x_stride = 0;
    T* grad_x = nullptr;  // written
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_dims(a.rows, a.d));
    return check::not_null(
        {{"x", a.x}, {"grad_out", a.grad_out}, {"mean", a.mean}, {"std", a.std}, {"grad_x", a.grad_x}});
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    using detail::or_packed;
    return launch<detail::NormalizeBackwardKernel<T>>(
        {a.x, or_packed(a.x_stride, a.d), a.grad_out, or_packed(a.grad_out_stride, a.d), a.mean, a.std, a.grad_mean,
         a.grad_std, a.rows, a.d, a.grad_x, or_packed(a.grad_x_stride, a.d)},
        detail::segment_grid(a.rows), stream);
  }
};

// ------------------------------------------------------------------ top k
template <TopKActivation A, StorageFloat T>
struct TopK {
  static constexpr const char* kName = "bottleneck::TopK";
  struct Arguments {
    const T* x = nullptr;  // [rows, dictionary]
    std::int64_t rows = 0;
    std::int64_t dictionary = 0;
    int k = 0;
    std::int64_t x_stride = 0, code_stride = 0;  // 0: packed
    std::int32_t* idx = nullptr;  // [rows, k]: larger values first, equal ones by lower index
    float* val = nullptr;         // [rows, k]: A(value)
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::not_null({{"x", a.x}, {"idx", a.idx}, {"val", a.val}}));
    TL_RETURN_IF_ERROR(detail::check_dims(a.rows, 1));
    TL_RETURN_IF_ERROR(detail::check_dictionary(a.dictionary));
    TL_RETURN_IF_ERROR(detail::check_k(a.k, a.dictionary, true));
    TL_RETURN_IF_ERROR(detail::check_stride("x_stride", a.x_stride ? a.x_stride : a.dictionary, a.dictionary));
    return detail::check_stride("code_stride", detail::or_k(a.code_stride, a.k), a.k);
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    using K = detail::RowTopKKernel<A, T>;
    return launch<K>({a.x, a.x_stride ? a.x_stride : a.dictionary, a.rows, a.dictionary, a.k, a.idx, a.val,
                      detail::or_k(a.code_stride, a.k)},
                     grid_for(a.rows, 1, tuning_for(compute_capability()).blocks_per_sm), stream);
  }
};

template <TopKActivation A, StorageFloat T>
struct TopKBackward {
  static constexpr const char* kName = "bottleneck::TopKBackward";
  struct Arguments {
    const std::int32_t* idx = nullptr;  // the forward's codes
    const float* val = nullptr;
    const float* grad_val = nullptr;  // [rows, code_stride]
    std::int64_t rows = 0;
    std::int64_t dictionary = 0;
    int k = 0;
    std::int64_t code_stride = 0, grad_x_stride = 0;
    bool accumulate = false;  // add into grad_x (e.g. the concept loss's dL/dz) instead of writing its rows
    T* grad_x = nullptr;      // [rows, dictionary]
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::not_null({{"idx", a.idx}, {"val", a.val}, {"grad_val", a.grad_val}, {"grad_x", a.grad_x}}));
    TL_RETURN_IF_ERROR(detail::check_dims(a.rows, 1));
    TL_RETURN_IF_ERROR(detail::check_dictionary(a.dictionary));
    return detail::check_k(a.k, a.dictionary, false);
  }
  static std::size_t workspace_size(const Arguments&) { return kStatusBytes; }
  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<TopKBackward>(a, ws));
    const std::int64_t cs = detail::or_k(a.code_stride, a.k);
    DeviceStatus* status = status_of(ws);
    TL_RETURN_IF_ERROR(reset_device_status(status, stream));
    TL_RETURN_IF_ERROR(launch<detail::CheckIndexKernel>({a.idx, a.rows, cs, a.k, a.dictionary, status},
                                                        grid_for(a.rows * a.k, 256, 8), stream));
    using K = detail::RowTopKBackwardKernel<A, T>;
    return launch<K>({{a.idx, a.val, cs, a.k}, a.grad_val, a.rows, a.dictionary, a.accumulate, a.grad_x,
                      a.grad_x_stride ? a.grad_x_stride : a.dictionary, status},
                     grid_for(a.rows, 1, tuning_for(compute_capability()).blocks_per_sm), stream);
  }
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    DeviceFailure f;
    TL_RETURN_IF_ERROR(read_device_status(status_of(ws), f, stream));
    return detail::index_failure(kName, "idx", f, a.dictionary);
  }
};

// The sparse decode's arguments (and the checks the attribution shares).
namespace detail {
template <class T>
struct SparseDecodeArguments {
  const std::int32_t* idx = nullptr;  // [rows, code_stride]
  const float* val = nullptr;
  std::int64_t rows = 0;
  int k = 0;
  const T* dict = nullptr;  // [dictionary, d], a row per latent
  std::int64_t dictionary = 0;
  int d = 0;
  const float* bias = nullptr;      // [d], optional (CoCoMix's compress_layer bias)
  const float* pre_bias = nullptr;  // [d], optional (the SAE's pre_bias)
  const float* mean = nullptr;      // [rows], optional with std: × std + mean
  const float* std = nullptr;
  std::int64_t code_stride = 0, dict_stride = 0, out_stride = 0;
  T* out = nullptr;  // [rows, d]
};
template <class T>
struct SparseDecodeBackwardArguments {
  const std::int32_t* idx = nullptr;
  const float* val = nullptr;
  std::int64_t rows = 0;
  int k = 0;
  const T* dict = nullptr;
  std::int64_t dictionary = 0;
  int d = 0;
  const float* bias = nullptr;
  const float* pre_bias = nullptr;
  const float* std = nullptr;  // optional: the forward de-normalised
  const T* grad_out = nullptr;
  std::int64_t code_stride = 0, dict_stride = 0, grad_out_stride = 0, grad_dict_stride = 0;
  float* grad_val = nullptr;   // [rows, code_stride], written
  float* grad_mean = nullptr;  // [rows], with std
  float* grad_std = nullptr;   // [rows], with std
  float* grad_dict = nullptr;  // [dictionary, d] fp32, optional
  bool accumulate_dict = false;  // add into grad_dict instead of writing it
  float* grad_bias = nullptr;    // [d] fp32, optional: Σ_r std_r g_r (pre_bias's gradient too)
  bool accumulate_bias = false;
};

template <class T, class A>
inline Status check_decode(const A& a, const T* rows_ptr, const char* rows_name, std::int64_t rows_stride) {
  TL_RETURN_IF_ERROR(check::not_null({{"idx", a.idx}, {"val", a.val}, {"dict", a.dict}, {rows_name, rows_ptr}}));
  TL_RETURN_IF_ERROR(check_dims(a.rows, a.d));
  TL_RETURN_IF_ERROR(check_dictionary(a.dictionary));
  TL_RETURN_IF_ERROR(check_k(a.k, a.dictionary, false));
  TL_RETURN_IF_ERROR(check_stride("code_stride", or_k(a.code_stride, a.k), a.k));
  TL_RETURN_IF_ERROR(check_stride("dict_stride", or_packed(a.dict_stride, a.d), a.d));
  return check_stride(rows_name, or_packed(rows_stride, a.d), a.d);
}
}  // namespace detail

// ------------------------------------------------------------------ the SAE encode
// latents = A(top k of x̂ W_enc^T + latent_bias) as codes, the GEMM and the
// selection fused (concepts_kernel.cuh): the dense [rows, dictionary] row is
// never written. x̂ is SaeNormalize's output. d a multiple of 64; rows of x̂
// and W_enc 16-byte aligned (cp.async).
template <TopKActivation A, mma::TensorCoreType T>
struct SaeEncode {
  static constexpr const char* kName = "bottleneck::SaeEncode";
  struct Arguments {
    const T* x = nullptr;  // [rows, d]: x̂
    std::int64_t rows = 0;
    int d = 0;
    const T* w_enc = nullptr;  // [dictionary, d]: encoder.weight as nn.Linear stores it
    std::int64_t dictionary = 0;
    const float* latent_bias = nullptr;  // [dictionary], optional
    int k = 0;
    std::int64_t x_stride = 0, w_stride = 0, code_stride = 0;
    std::int32_t* idx = nullptr;  // [rows, k], as TopK orders them
    float* val = nullptr;
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::not_null({{"x", a.x}, {"w_enc", a.w_enc}, {"idx", a.idx}, {"val", a.val}}));
    TL_RETURN_IF_ERROR(detail::check_dims(a.rows, a.d));
    TL_RETURN_IF_ERROR(detail::check_dictionary(a.dictionary));
    TL_RETURN_IF_ERROR(detail::check_k(a.k, a.dictionary, true));
    if (a.d % detail::kEncodeDepth != 0) {
      return Status::argument(StatusCode::unsupported, "d", "a multiple of 64 (the encode's k step)", "%d", a.d);
    }
    const std::int64_t xs = detail::or_packed(a.x_stride, a.d), ws = detail::or_packed(a.w_stride, a.d);
    TL_RETURN_IF_ERROR(detail::check_stride("x_stride", xs, a.d));
    TL_RETURN_IF_ERROR(detail::check_stride("w_stride", ws, a.d));
    if (xs % 8 != 0 || ws % 8 != 0) {
      return Status::argument(StatusCode::misaligned, "x_stride, w_stride", "multiples of 8 elements (16-byte rows)",
                              "%lld, %lld", static_cast<long long>(xs), static_cast<long long>(ws));
    }
    TL_RETURN_IF_ERROR(check::aligned("x", a.x, 16));
    TL_RETURN_IF_ERROR(check::aligned("w_enc", a.w_enc, 16));
    return detail::check_stride("code_stride", detail::or_k(a.code_stride, a.k), a.k);
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    using K = detail::SaeEncodeKernel<A, T>;
    const std::size_t smem = detail::encode_smem_bytes(a.k);
    TL_RETURN_IF_ERROR(set_max_dynamic_smem<K>(smem));
    const std::int64_t blocks = (a.rows + detail::kEncodeRows - 1) / detail::kEncodeRows;
    return launch<K>({a.x, detail::or_packed(a.x_stride, a.d), a.rows, a.d, a.w_enc, detail::or_packed(a.w_stride, a.d),
                      a.dictionary, a.latent_bias, a.k, a.idx, a.val, detail::or_k(a.code_stride, a.k)},
                     grid_for(blocks, 1, 2), stream, smem);
  }
};

// ------------------------------------------------------------------ attribution labels
// CoCoMix's training labels: the top num_labels (K_attr, 4 in CoCoMix) of
// (g · W_dec) ⊙ latents over the dictionary, latents being the SAE's codes
// (distinct indices a row, zero elsewhere): an inactive latent scores 0, so
// when fewer than K_attr attributions are positive the lowest-index zeros
// fill in (torch.topk's choice among them is unspecified). Labels in
// TopK's order; their scores optional.
template <StorageFloat T>
struct AttributionLabels {
  static constexpr const char* kName = "bottleneck::AttributionLabels";
  struct Arguments {
    const std::int32_t* idx = nullptr;  // the SAE's codes
    const float* val = nullptr;
    std::int64_t rows = 0;
    int k = 0;
    const T* grad = nullptr;  // [rows, d]: dL/dh at the SAE's input
    const T* dict = nullptr;  // [dictionary, d]: W_dec^T
    std::int64_t dictionary = 0;
    int d = 0;
    int num_labels = 4;
    std::int64_t code_stride = 0, grad_stride = 0, dict_stride = 0, label_stride = 0;
    std::int32_t* labels = nullptr;  // [rows, num_labels]
    float* scores = nullptr;         // [rows, num_labels], optional
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_decode<T>(a, a.grad, "grad", a.grad_stride));
    TL_RETURN_IF_ERROR(check::not_null("labels", a.labels));
    if (a.k > detail::kMaxTopK) return detail::check_k(a.k, a.dictionary, true);
    if (a.num_labels < 1 || a.num_labels > detail::kMaxAttrLabels || a.num_labels > a.dictionary) {
      return Status::argument(StatusCode::invalid_argument, "num_labels", "1 <= K_attr <= min(16, dictionary)", "%d",
                              a.num_labels);
    }
    return detail::check_stride("label_stride", detail::or_k(a.label_stride, a.num_labels), a.num_labels);
  }
  static std::size_t workspace_size(const Arguments&) { return kStatusBytes; }
  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<AttributionLabels>(a, ws));
    using detail::or_packed;
    const std::int64_t cs = detail::or_k(a.code_stride, a.k), gs = or_packed(a.grad_stride, a.d),
                       ds = or_packed(a.dict_stride, a.d);
    DeviceStatus* status = status_of(ws);
    TL_RETURN_IF_ERROR(reset_device_status(status, stream));
    TL_RETURN_IF_ERROR(launch<detail::CheckIndexKernel>({a.idx, a.rows, cs, a.k, a.dictionary, status},
                                                        grid_for(a.rows * a.k, 256, 8), stream));
    return detail::dispatch_width<T>(detail::vectorizable<T>(a.d, {{a.grad, gs}, {a.dict, ds}}), [&](auto w) {
      using K = detail::AttributionKernel<T, decltype(w)::value>;
      return launch<K>({{a.idx, a.val, cs, a.k}, a.rows, a.grad, gs, a.dict, ds, a.dictionary, a.d, a.num_labels,
                        a.labels, detail::or_k(a.label_stride, a.num_labels), a.scores, status},
                       detail::segment_grid(a.rows), stream);
    });
  }
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    DeviceFailure f;
    TL_RETURN_IF_ERROR(read_device_status(status_of(ws), f, stream));
    return detail::index_failure(kName, "idx", f, a.dictionary);
  }
};

// ------------------------------------------------------------------ sparse decode

template <StorageFloat T>
struct SparseDecode {
  static constexpr const char* kName = "bottleneck::SparseDecode";
  using Arguments = detail::SparseDecodeArguments<T>;
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_decode<T>(a, a.out, "out", a.out_stride));
    if ((a.mean == nullptr) != (a.std == nullptr)) {
      return Status::argument(StatusCode::invalid_argument, "mean, std", "both or neither", "one of them");
    }
    return Status::ok();
  }
  static std::size_t workspace_size(const Arguments&) { return kStatusBytes; }
  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<SparseDecode>(a, ws));
    using detail::or_packed;
    const std::int64_t cs = detail::or_k(a.code_stride, a.k), ds = or_packed(a.dict_stride, a.d),
                       os = or_packed(a.out_stride, a.d);
    DeviceStatus* status = status_of(ws);
    TL_RETURN_IF_ERROR(reset_device_status(status, stream));
    TL_RETURN_IF_ERROR(launch<detail::CheckIndexKernel>({a.idx, a.rows, cs, a.k, a.dictionary, status},
                                                        grid_for(a.rows * a.k, 256, 8), stream));
    return detail::dispatch_width<T>(detail::vectorizable<T>(a.d, {{a.dict, ds}, {a.out, os}}), [&](auto w) {
      using K = detail::SparseDecodeKernel<T, decltype(w)::value>;
      return launch<K>({{a.idx, a.val, cs, a.k}, a.rows, a.dict, ds, a.d, a.bias, a.pre_bias, a.mean, a.std, a.out, os,
                        status},
                       detail::segment_grid(a.rows), stream);
    });
  }
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    DeviceFailure f;
    TL_RETURN_IF_ERROR(read_device_status(status_of(ws), f, stream));
    return detail::index_failure(kName, "idx", f, a.dictionary);
  }
};

template <StorageFloat T>
struct SparseDecodeBackward {
  static constexpr const char* kName = "bottleneck::SparseDecodeBackward";
  using Arguments = detail::SparseDecodeBackwardArguments<T>;
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_decode<T>(a, a.grad_out, "grad_out", a.grad_out_stride));
    TL_RETURN_IF_ERROR(check::not_null("grad_val", a.grad_val));
    if (a.std) TL_RETURN_IF_ERROR(check::not_null({{"grad_mean", a.grad_mean}, {"grad_std", a.grad_std}}));
    TL_RETURN_IF_ERROR(check::product_fits_int32("rows * k", a.rows, a.k));
    if (a.grad_dict) {
      TL_RETURN_IF_ERROR(detail::check_stride("grad_dict_stride", detail::or_packed(a.grad_dict_stride, a.d), a.d));
    }
    return Status::ok();
  }
  // The bits the sort needs for indices below the dictionary's size.
  static int key_bits(std::int64_t dictionary) {
    int b = 1;
    while (b < 31 && (std::int64_t{1} << b) < dictionary) ++b;
    return b;
  }
  // Workspace: the status record, then the sort: keys and entries in and out, and CUB's own.
  struct Layout {
    std::size_t keys_in, keys_out, ent_in, ent_out, sort, bytes, sort_bytes;
  };
  static Layout layout(const Arguments& a) {
    const std::int64_t n = a.rows * a.k;
    std::size_t sort_bytes = 0;
    (void)device::sort_pairs<std::uint32_t, std::int32_t>(nullptr, sort_bytes, nullptr, nullptr, nullptr, nullptr, n, 0,
                                                          key_bits(a.dictionary));
    WorkspaceLayout w;
    Layout l{};
    w.add(kStatusBytes);
    l.keys_in = w.add_array<std::uint32_t>(n);
    l.keys_out = w.add_array<std::uint32_t>(n);
    l.ent_in = w.add_array<std::int32_t>(n);
    l.ent_out = w.add_array<std::int32_t>(n);
    l.sort = w.add(sort_bytes);
    l.sort_bytes = sort_bytes;
    l.bytes = w.bytes();
    return l;
  }
  static std::size_t workspace_size(const Arguments& a) { return a.grad_dict ? layout(a).bytes : kStatusBytes; }
  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<SparseDecodeBackward>(a, ws));
    using detail::or_packed;
    const std::int64_t cs = detail::or_k(a.code_stride, a.k), ds = or_packed(a.dict_stride, a.d),
                       gs = or_packed(a.grad_out_stride, a.d), gds = or_packed(a.grad_dict_stride, a.d);
    DeviceStatus* status = status_of(ws);
    TL_RETURN_IF_ERROR(reset_device_status(status, stream));
    TL_RETURN_IF_ERROR(launch<detail::CheckIndexKernel>({a.idx, a.rows, cs, a.k, a.dictionary, status},
                                                        grid_for(a.rows * a.k, 256, 8), stream));
    const bool vec = detail::vectorizable<T>(a.d, {{a.dict, ds}, {a.grad_out, gs}});
    TL_RETURN_IF_ERROR(detail::dispatch_width<T>(vec, [&](auto w) {
      using K = detail::SparseDecodeGradKernel<T, decltype(w)::value>;
      return launch<K>({{a.idx, a.val, cs, a.k}, a.rows, a.dict, ds, a.d, a.bias, a.pre_bias, a.std, a.grad_out, gs,
                        a.grad_val, a.grad_mean, a.grad_std, status},
                       detail::segment_grid(a.rows), stream);
    }));
    if (a.grad_bias) {
      TL_RETURN_IF_ERROR(launch<detail::ColumnSumKernel<T>>(
          {a.grad_out, gs, a.rows, a.d, a.std, a.accumulate_bias, a.grad_bias, status},
          dim3(static_cast<unsigned>((a.d + 31) / 32)), stream));
    }
    if (!a.grad_dict) return Status::ok();
    // The dictionary's gradient: the codes sorted by index, a warp a run.
    const Layout l = layout(a);
    const std::int64_t n = a.rows * a.k;
    auto* keys_in = ws.at<std::uint32_t>(l.keys_in);
    auto* ent_in = ws.at<std::int32_t>(l.ent_in);
    TL_RETURN_IF_ERROR(launch<detail::GatherCodesKernel>({a.idx, a.rows, cs, a.k, keys_in, ent_in, status},
                                                         grid_for(n, 256, 8), stream));
    std::size_t sort_bytes = l.sort_bytes;
    TL_RETURN_IF_ERROR(device::sort_pairs(ws.at<void>(l.sort), sort_bytes, keys_in, ws.at<std::uint32_t>(l.keys_out),
                                          ent_in, ws.at<std::int32_t>(l.ent_out), n, 0, key_bits(a.dictionary), stream));
    if (!a.accumulate_dict) {
      TL_RETURN_IF_ERROR(launch<detail::ZeroRowsKernel>({a.grad_dict, a.dictionary, gds, a.d, status},
                                                        grid_for(a.dictionary * a.d, 256, 8), stream));
    }
    return detail::dispatch_width<T>(vec, [&](auto w) {
      using K = detail::DictGradKernel<T, decltype(w)::value>;
      return launch<K>({ws.at<std::uint32_t>(l.keys_out), ws.at<std::int32_t>(l.ent_out), n, {a.idx, a.val, cs, a.k},
                        a.std, a.grad_out, gs, a.d, a.grad_dict, gds, status},
                       detail::segment_grid(n), stream);
    });
  }
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    DeviceFailure f;
    TL_RETURN_IF_ERROR(read_device_status(status_of(ws), f, stream));
    return detail::index_failure(kName, "idx", f, a.dictionary);
  }
};

// ------------------------------------------------------------------ the concept loss
template <StorageFloat T>
struct ConceptLoss {
  static constexpr const char* kName = "bottleneck::ConceptLoss";
  struct Arguments {
    const T* logits = nullptr;  // [rows, dictionary]: W_z h + b
    std::int64_t rows = 0;
    std::int64_t dictionary = 0;
    const std::int32_t* labels = nullptr;  // [rows, label_stride]: K_attr labels a row
    int num_labels = 0;
    float weight = 0.1f;  // λ (CoCoMix's lam_concept)
    std::int64_t logits_stride = 0, label_stride = 0, grad_stride = 0;
    float* loss = nullptr;      // one float: λ · mean over rows and labels of the CE
    T* grad_logits = nullptr;   // [rows, dictionary], optional: dL/dz written
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::not_null({{"logits", a.logits}, {"labels", a.labels}, {"loss", a.loss}}));
    TL_RETURN_IF_ERROR(detail::check_dims(a.rows, 1));
    TL_RETURN_IF_ERROR(detail::check_dictionary(a.dictionary));
    TL_RETURN_IF_ERROR(check::positive("num_labels", a.num_labels));
    TL_RETURN_IF_ERROR(check::finite("weight", a.weight));
    return detail::check_stride("label_stride", detail::or_k(a.label_stride, a.num_labels), a.num_labels);
  }
  static std::size_t workspace_size(const Arguments& a) {
    return kStatusBytes + align_up(static_cast<std::size_t>(a.rows) * sizeof(float), kWorkspaceAlignment);
  }
  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<ConceptLoss>(a, ws));
    const std::int64_t ls = detail::or_k(a.label_stride, a.num_labels);
    DeviceStatus* status = status_of(ws);
    float* row_loss = ws.at<float>(kStatusBytes);
    TL_RETURN_IF_ERROR(reset_device_status(status, stream));
    TL_RETURN_IF_ERROR(launch<detail::CheckIndexKernel>({a.labels, a.rows, ls, a.num_labels, a.dictionary, status},
                                                        grid_for(a.rows * a.num_labels, 256, 8), stream));
    const float scale = a.weight / static_cast<float>(a.rows);
    TL_RETURN_IF_ERROR(launch<detail::ConceptLossKernel<T>>(
        {a.logits, a.logits_stride ? a.logits_stride : a.dictionary, a.rows, a.dictionary, a.labels, ls, a.num_labels,
         scale, row_loss, a.grad_logits, a.grad_stride ? a.grad_stride : a.dictionary, status},
        grid_for(a.rows, 1, tuning_for(compute_capability()).blocks_per_sm), stream));
    return launch<detail::LossTotalKernel>({row_loss, a.rows, scale, a.loss, status}, dim3(1), stream);
  }
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    DeviceFailure f;
    TL_RETURN_IF_ERROR(read_device_status(status_of(ws), f, stream));
    return detail::index_failure(kName, "labels", f, a.dictionary);
  }
};

// ------------------------------------------------------------------ mixing
template <MixPolicy M, StorageFloat T>
struct Mix {
  static constexpr const char* kName = "bottleneck::Mix";
  struct Arguments {
    const T* h = nullptr;  // [rows, d]: the hidden states
    const T* c = nullptr;  // [rows, d]: the continuous concepts
    std::int64_t rows = 0;
    int d = 0;
    std::int64_t h_stride = 0, c_stride = 0;
    T* out = nullptr;  // interleave: [2 rows, d]; add: [rows, d] (packed)
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::not_null({{"h", a.h}, {"c", a.c}, {"out", a.out}}));
    return detail::check_dims(a.rows, a.d);
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    using detail::or_packed;
    const std::int64_t hs = or_packed(a.h_stride, a.d), ccs = or_packed(a.c_stride, a.d),
                       os = std::int64_t{M::kRowsPerToken} * a.d;
    const bool vec = detail::vectorizable<T>(a.d, {{a.h, hs}, {a.c, ccs}, {a.out, a.d}});
    return detail::dispatch_width<T>(vec, [&](auto w) {
      using K = detail::MixKernel<M, T, decltype(w)::value>;
      return launch<K>({a.h, hs, a.c, ccs, a.rows, a.d, a.out, os}, detail::segment_grid(a.rows), stream);
    });
  }
};

template <MixPolicy M, StorageFloat T>
struct MixBackward {
  static constexpr const char* kName = "bottleneck::MixBackward";
  struct Arguments {
    const T* grad_out = nullptr;  // as Mix's out
    std::int64_t rows = 0;
    int d = 0;
    std::int64_t grad_h_stride = 0, grad_c_stride = 0;
    T* grad_h = nullptr;
    T* grad_c = nullptr;
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::not_null({{"grad_out", a.grad_out}, {"grad_h", a.grad_h}, {"grad_c", a.grad_c}}));
    return detail::check_dims(a.rows, a.d);
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    using detail::or_packed;
    const std::int64_t gs = std::int64_t{M::kRowsPerToken} * a.d, hs = or_packed(a.grad_h_stride, a.d),
                       ccs = or_packed(a.grad_c_stride, a.d);
    const bool vec = detail::vectorizable<T>(a.d, {{a.grad_out, a.d}, {a.grad_h, hs}, {a.grad_c, ccs}});
    return detail::dispatch_width<T>(vec, [&](auto w) {
      using K = detail::MixBackwardKernel<M, T, decltype(w)::value>;
      return launch<K>({a.grad_out, gs, a.rows, a.d, a.grad_h, hs, a.grad_c, ccs}, detail::segment_grid(a.rows),
                       stream);
    });
  }
};

// ------------------------------------------------------------------ column sums
template <StorageFloat T>
struct ColumnSum {
  static constexpr const char* kName = "bottleneck::ColumnSum";
  struct Arguments {
    const T* x = nullptr;  // [rows, d]
    std::int64_t rows = 0;
    int d = 0;
    const float* row_scale = nullptr;  // [rows], optional
    std::int64_t x_stride = 0;
    bool accumulate = false;
    float* out = nullptr;  // [d]
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::not_null({{"x", a.x}, {"out", a.out}}));
    return detail::check_dims(a.rows, a.d);
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    return launch<detail::ColumnSumKernel<T>>(
        {a.x, detail::or_packed(a.x_stride, a.d), a.rows, a.d, a.row_scale, a.accumulate, a.out, nullptr},
        dim3(static_cast<unsigned>((a.d + 31) / 32)), stream);
  }
};

}  // namespace tokenless::bottleneck
