#pragma once
// RowReduce launch API: the worked example of the operation protocol
// (docs/architecture.md walks through it).
//
//   out[r] = reduce over c of transform(x[r, c])   for r < rows, c < cols
//
// NaN and Inf propagate as in PyTorch: a NaN anywhere in a row makes the sum
// and the max NaN.
#include <tokenless/core/device.hpp>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/row_reduce/kernel.cuh>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/workspace.hpp>

namespace tokenless::row_reduce {

namespace detail {
inline Status check_shape(std::int64_t rows, std::int64_t cols, std::int64_t ld, const char* ld_name) {
  TL_RETURN_IF_ERROR(check::positive("rows", rows));
  TL_RETURN_IF_ERROR(check::positive("cols", cols));
  TL_RETURN_IF_ERROR(check::fits_int32("rows", rows));  // one block per row: grid.x
  TL_RETURN_IF_ERROR(check::fits_int32("cols", cols));
  if (ld < cols) return Status::argument(StatusCode::shape_mismatch, ld_name, "a row stride >= cols", "%lld (cols %lld)",
                                         static_cast<long long>(ld), static_cast<long long>(cols));
  return Status::ok();
}
}  // namespace detail

// Calls f.template operator()<kT>() with the device's tuning: one
// instantiation per distinct tuning value.
template <class F>
Status with_tuning(F&& f) {
  if (tuning_for(compute_capability()) == kTuningSm90) return f.template operator()<kTuningSm90>();
  return f.template operator()<kTuningSm80>();
}

template <Policy P, StorageFloat T>
struct Forward {
  struct Arguments {
    const T* input = nullptr;   // [rows, ld], row-major
    float* output = nullptr;    // [rows]
    std::int64_t rows = 0;
    std::int64_t cols = 0;
    std::int64_t ld = 0;        // row stride in elements; 0 means cols
  };

  static std::int64_t stride(const Arguments& a) { return a.ld ? a.ld : a.cols; }

  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::not_null({{"input", a.input}, {"output", a.output}}));
    TL_RETURN_IF_ERROR(check::aligned("input", a.input, sizeof(T)));
    TL_RETURN_IF_ERROR(check::aligned("output", a.output, sizeof(float)));
    return detail::check_shape(a.rows, a.cols, stride(a), "ld");
  }

  static std::size_t workspace_size(const Arguments&) { return 0; }

  static Status run(const Arguments& a, Workspace ws = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<Forward>(a, ws));
    return with_tuning([&]<Tuning kT>() { return dispatch<kT>(a, stream); });
  }

 private:
  template <Tuning kT>
  static Status dispatch(const Arguments& a, cudaStream_t stream) {
    constexpr int kVec = kT.vector_bytes / static_cast<int>(sizeof(T));
    const std::int64_t ld = stride(a);
    const bool vectorizable = a.cols % kVec == 0 && ld % kVec == 0 &&
                              reinterpret_cast<std::uintptr_t>(a.input) % kT.vector_bytes == 0;
    const dim3 grid(static_cast<unsigned>(a.rows));  // a block per row
    if (vectorizable) {
      return launch<ForwardKernel<P, T, kT.block_threads, kVec>>({a.input, a.output, a.cols, ld}, grid, stream);
    }
    return launch<ForwardKernel<P, T, kT.block_threads, 1>>({a.input, a.output, a.cols, ld}, grid, stream);
  }
};

template <Policy P, StorageFloat T>
struct Backward {
  struct Arguments {
    const T* input = nullptr;        // the forward input [rows, ld]
    const float* grad_output = nullptr;  // [rows]
    T* grad_input = nullptr;         // [rows, ld_grad]
    std::int64_t rows = 0;
    std::int64_t cols = 0;
    std::int64_t ld = 0;             // 0 means cols
    std::int64_t ld_grad = 0;        // 0 means cols
  };

  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(
        check::not_null({{"input", a.input}, {"grad_output", a.grad_output}, {"grad_input", a.grad_input}}));
    TL_RETURN_IF_ERROR(check::aligned("input", a.input, sizeof(T)));
    TL_RETURN_IF_ERROR(check::aligned("grad_output", a.grad_output, sizeof(float)));
    TL_RETURN_IF_ERROR(check::aligned("grad_input", a.grad_input, sizeof(T)));
    TL_RETURN_IF_ERROR(detail::check_shape(a.rows, a.cols, a.ld ? a.ld : a.cols, "ld"));
    return detail::check_shape(a.rows, a.cols, a.ld_grad ? a.ld_grad : a.cols, "ld_grad");
  }

  static std::size_t workspace_size(const Arguments&) { return 0; }

  static Status run(const Arguments& a, Workspace ws = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<Backward>(a, ws));
    return with_tuning([&]<Tuning kT>() { return dispatch<kT>(a, stream); });
  }

 private:
  template <Tuning kT>
  static Status dispatch(const Arguments& a, cudaStream_t stream) {
    return launch<BackwardKernel<P, T, kT.block_threads>>(
        {a.input, a.grad_output, a.grad_input, a.cols, a.ld ? a.ld : a.cols, a.ld_grad ? a.ld_grad : a.cols},
        dim3(static_cast<unsigned>(a.rows)), stream);
  }
};

}  // namespace tokenless::row_reduce
