#pragma once
// cuBLASLt: an RAII handle and a row-major GEMM with bias and GELU epilogues,
// following the operation protocol.
//
//   D[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * D  (+ bias[n]) (then GELU)
//
// All matrices are row-major. trans_b = true reads B stored as [n, k], the
// layout of a Linear layer's weight. Storage fp32, fp16 or bf16; accumulation
// and scaling in fp32. With d_fp32, D is fp32 whatever A's and B's storage: a
// weight gradient accumulated (beta = 1) over chunks or layers in fp32, never
// rounded to 16 bits between them.
//
// Available where the CUDA runtime is (nvcc, or a host compiler with the
// toolkit); TOKENLESS_HAS_CUBLASLT says so. On the CPU executor the same Gemm
// runs as a host loop (the executor's device memory is host memory), so that
// operations built on it run on the CPU too: fp32 accumulation in k order,
// GELU as the tanh approximation cuBLASLt's epilogue uses, synchronous.
#include <tokenless/core/config.hpp>
#include <tokenless/core/device.hpp>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/status.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/workspace.hpp>

namespace tokenless::blas {
// Tuning: cuBLASLt's workspace. 32 MiB on Hopper, 4 MiB before it: the
// sizes NVIDIA's cuBLAS documentation recommends (untuned here).
struct Tuning {
  std::size_t workspace_bytes;
  friend constexpr bool operator==(const Tuning&, const Tuning&) = default;
};
inline constexpr Tuning kTuningSm90{std::size_t{32} << 20};
inline constexpr Tuning kTuningSm80{std::size_t{4} << 20};
constexpr Tuning tuning_for(int compute_capability) { return compute_capability >= 90 ? kTuningSm90 : kTuningSm80; }

}  // namespace tokenless::blas

#if defined(TOKENLESS_HAS_CUDA_RUNTIME) && !defined(TOKENLESS_BACKEND_EMU) && __has_include(<cublasLt.h>)
#define TOKENLESS_HAS_CUBLASLT 1
#include <cublasLt.h>

#include <cstdint>
#include <utility>

namespace tokenless::blas {

inline Status status_from_cublas(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return Status::ok();
  return Status::error(StatusCode::cublas_error, "%s failed: %s (%d)", what, cublasLtGetStatusName(s),
                       static_cast<int>(s));
}

#define TL_CUBLAS_TRY(expr)                                                          \
  do {                                                                               \
    cublasStatus_t tl_cublas_ = (expr);                                              \
    if (tl_cublas_ != CUBLAS_STATUS_SUCCESS) return ::tokenless::blas::status_from_cublas(tl_cublas_, #expr); \
  } while (0)

class LtHandle {
 public:
  LtHandle() = default;
  LtHandle(const LtHandle&) = delete;
  LtHandle& operator=(const LtHandle&) = delete;
  LtHandle(LtHandle&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  LtHandle& operator=(LtHandle&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  ~LtHandle() { reset(); }

  // Fails with a Status (not a crash) on a machine without a driver.
  static Status create(LtHandle& out) {
    out.reset();
    cublasLtHandle_t h = nullptr;
    TL_CUBLAS_TRY(cublasLtCreate(&h));
    out.h_ = h;
    return Status::ok();
  }
  cublasLtHandle_t get() const { return h_; }
  explicit operator bool() const { return h_ != nullptr; }

 private:
  void reset() {
    if (h_) cublasLtDestroy(h_);
    h_ = nullptr;
  }
  cublasLtHandle_t h_ = nullptr;
};

// RAII for the descriptors of one matmul.
namespace detail {
struct MatmulDescs {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~MatmulDescs() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};
inline cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::f16: return CUDA_R_16F;
    case DType::bf16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
  }
}
}  // namespace detail

}  // namespace tokenless::blas
#define TOKENLESS_HAS_BLAS 1
#elif defined(TOKENLESS_BACKEND_EMU)
#include <cmath>
#include <cstdint>
namespace tokenless::blas {
// The executor's stand-in: no library to initialise.
class LtHandle {
 public:
  static Status create(LtHandle& out) {
    out.ok_ = true;
    return Status::ok();
  }
  explicit operator bool() const { return ok_; }

 private:
  bool ok_ = false;
};
}  // namespace tokenless::blas
#define TOKENLESS_HAS_BLAS 1
#endif

#if defined(TOKENLESS_HAS_BLAS)
namespace tokenless::blas {

enum class Epilogue { none, bias, gelu, bias_gelu };

namespace detail {
inline std::size_t dtype_bytes(DType t) { return t == DType::f32 ? 4 : 2; }
}  // namespace detail

struct Gemm {
  struct Arguments {
    const LtHandle* handle = nullptr;
    DType dtype = DType::bf16;      // storage of A, B, D and bias
    std::int64_t m = 0, n = 0, k = 0;
    const void* a = nullptr;        // [m, k], or [k, m] when trans_a
    std::int64_t lda = 0;
    bool trans_a = false;
    const void* b = nullptr;        // [k, n], or [n, k] when trans_b
    std::int64_t ldb = 0;
    bool trans_b = false;
    void* d = nullptr;              // [m, n]
    std::int64_t ldd = 0;
    const void* bias = nullptr;     // [n], with Epilogue::bias or bias_gelu
    Epilogue epilogue = Epilogue::none;
    float alpha = 1.0f;
    float beta = 0.0f;              // beta != 0 accumulates into D
    bool d_fp32 = false;            // D (and the C it accumulates) in fp32, A and B in dtype
    bool allow_tf32 = false;        // fp32 only: let tensor cores round inputs to TF32
    // Optional: {alpha, beta} in device memory, read when the GEMM runs (alpha
    // and beta above are then ignored). An operation whose inputs are checked
    // on the device gates its GEMMs this way: {0, 1} on a failed check leaves
    // D as it was (the A operand zeroed, so that no NaN reaches it).
    const float* device_scalars = nullptr;
  };

  // The workspace cuBLASLt may use: the one tuning value of a GEMM (cuBLASLt's
  // heuristic picks the algorithm).
  static std::size_t workspace_size(const Arguments&) { return tuning_for(compute_capability()).workspace_bytes; }

  static Status can_implement(const Arguments& a) {
    if (a.dtype != DType::f32 && a.dtype != DType::f16 && a.dtype != DType::bf16) {
      return Status::argument(StatusCode::unsupported, "dtype", "fp32, fp16 or bf16", "%s", to_string(a.dtype));
    }
    TL_RETURN_IF_ERROR(check::positive("m", a.m));
    TL_RETURN_IF_ERROR(check::positive("n", a.n));
    TL_RETURN_IF_ERROR(check::positive("k", a.k));
    TL_RETURN_IF_ERROR(check::not_null({{"a", a.a}, {"b", a.b}, {"d", a.d}}));
    const std::size_t eb = detail::dtype_bytes(a.dtype);
    TL_RETURN_IF_ERROR(check::aligned("a", a.a, eb));
    TL_RETURN_IF_ERROR(check::aligned("b", a.b, eb));
    TL_RETURN_IF_ERROR(check::aligned("d", a.d, a.d_fp32 ? sizeof(float) : eb));
    const std::int64_t a_cols = a.trans_a ? a.m : a.k;
    const std::int64_t b_cols = a.trans_b ? a.k : a.n;
    if (a.lda < a_cols) {
      return Status::argument(StatusCode::shape_mismatch, "lda", "at least the row length of A", "%lld (row length %lld)",
                              static_cast<long long>(a.lda), static_cast<long long>(a_cols));
    }
    if (a.ldb < b_cols) {
      return Status::argument(StatusCode::shape_mismatch, "ldb", "at least the row length of B", "%lld (row length %lld)",
                              static_cast<long long>(a.ldb), static_cast<long long>(b_cols));
    }
    if (a.ldd < a.n) {
      return Status::argument(StatusCode::shape_mismatch, "ldd", "at least n", "%lld (n %lld)",
                              static_cast<long long>(a.ldd), static_cast<long long>(a.n));
    }
    const bool wants_bias = a.epilogue == Epilogue::bias || a.epilogue == Epilogue::bias_gelu;
    if (a.d_fp32 && a.epilogue != Epilogue::none) {
      return Status::argument(StatusCode::unsupported, "epilogue", "none with d_fp32 (a gradient's GEMM)", "an epilogue");
    }
    if (wants_bias) {
      TL_RETURN_IF_ERROR(check::not_null("bias", a.bias));
      TL_RETURN_IF_ERROR(check::aligned("bias", a.bias, eb));
    } else if (a.bias) {
      return Status::argument(StatusCode::invalid_argument, "bias", "nullptr with an epilogue without bias",
                              "a pointer (epilogue ignores it)");
    }
    if (a.allow_tf32 && a.dtype != DType::f32) {
      return Status::argument(StatusCode::invalid_argument, "allow_tf32", "false for 16-bit storage", "true");
    }
    TL_RETURN_IF_ERROR(check::finite("alpha", a.alpha));
    TL_RETURN_IF_ERROR(check::finite("beta", a.beta));
    return Status::ok();
  }

  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    if (!a.handle || !*a.handle) {
      return Status::argument(StatusCode::null_pointer, "handle", "a created LtHandle", "none");
    }
    if (ws.ptr && reinterpret_cast<std::uintptr_t>(ws.ptr) % kWorkspaceAlignment != 0) {
      return Status::argument(StatusCode::misaligned, "workspace", "256-byte alignment", "%p", ws.ptr);
    }
#if defined(TOKENLESS_HAS_CUBLASLT)
    detail::MatmulDescs desc;
    TL_RETURN_IF_ERROR(describe(a, ws.ptr ? ws.bytes : 0, desc));
    cublasLtMatmulHeuristicResult_t heur{};
    int found = 0;
    TL_CUBLAS_TRY(cublasLtMatmulAlgoGetHeuristic(a.handle->get(), desc.op, desc.a, desc.b, desc.d, desc.d, desc.pref,
                                                 1, &heur, &found));
    if (found == 0) return Status::error(StatusCode::unsupported, "cuBLASLt found no algorithm for this GEMM");
    // Row-major D = A B is column-major D^T = B^T A^T: cuBLASLt's A is our B.
    const float* alpha = a.device_scalars ? a.device_scalars : &a.alpha;
    const float* beta = a.device_scalars ? a.device_scalars + 1 : &a.beta;
    TL_CUBLAS_TRY(cublasLtMatmul(a.handle->get(), desc.op, alpha, a.b, desc.a, a.a, desc.b, beta, a.d, desc.d, a.d,
                                 desc.d, &heur.algo, ws.ptr, ws.ptr ? ws.bytes : 0, stream));
    return Status::ok();
#else
    (void)stream;
    switch (a.dtype) {
      case DType::f16: a.d_fp32 ? host_gemm<__half, float>(a) : host_gemm<__half, __half>(a); break;
      case DType::bf16: a.d_fp32 ? host_gemm<__nv_bfloat16, float>(a) : host_gemm<__nv_bfloat16, __nv_bfloat16>(a); break;
      default: host_gemm<float, float>(a); break;
    }
    return Status::ok();
#endif
  }

#if !defined(TOKENLESS_HAS_CUBLASLT)
  // The executor's GEMM: a host loop over the operands in place.
  template <class T, class TD>
  static void host_gemm(const Arguments& a) {
    const T* A = static_cast<const T*>(a.a);
    const T* B = static_cast<const T*>(a.b);
    const T* bias = static_cast<const T*>(a.bias);
    TD* D = static_cast<TD*>(a.d);
    const bool with_bias = a.epilogue == Epilogue::bias || a.epilogue == Epilogue::bias_gelu;
    const bool gelu = a.epilogue == Epilogue::gelu || a.epilogue == Epilogue::bias_gelu;
    const float alpha = a.device_scalars ? a.device_scalars[0] : a.alpha;  // "device" memory is the host's here
    const float beta = a.device_scalars ? a.device_scalars[1] : a.beta;
    for (std::int64_t i = 0; i < a.m; ++i) {
      for (std::int64_t j = 0; j < a.n; ++j) {
        float acc = 0.0f;
        for (std::int64_t k = 0; k < a.k; ++k) {
          const float x = to_float(a.trans_a ? A[k * a.lda + i] : A[i * a.lda + k]);
          const float y = to_float(a.trans_b ? B[j * a.ldb + k] : B[k * a.ldb + j]);
          acc += x * y;
        }
        float v = alpha * acc + (beta != 0.0f ? beta * to_float(D[i * a.ldd + j]) : 0.0f);
        if (with_bias) v += to_float(bias[j]);
        if (gelu) v = 0.5f * v * (1.0f + std::tanh(0.7978845608f * (v + 0.044715f * v * v * v)));
        D[i * a.ldd + j] = from_float<TD>(v);
      }
    }
  }
#endif

#if defined(TOKENLESS_HAS_CUBLASLT)
  // Builds the descriptors; needs no device, so it is testable anywhere.
  static Status describe(const Arguments& a, std::size_t workspace_bytes, detail::MatmulDescs& desc) {
    const cudaDataType_t t = detail::cuda_type(a.dtype);
    const cublasComputeType_t compute = a.allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    TL_CUBLAS_TRY(cublasLtMatmulDescCreate(&desc.op, compute, CUDA_R_32F));
    const cublasOperation_t op_lt_a = a.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt A = our B
    const cublasOperation_t op_lt_b = a.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    TL_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_lt_a, sizeof op_lt_a));
    TL_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_lt_b, sizeof op_lt_b));
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
    switch (a.epilogue) {
      case Epilogue::none: epi = CUBLASLT_EPILOGUE_DEFAULT; break;
      case Epilogue::bias: epi = CUBLASLT_EPILOGUE_BIAS; break;
      case Epilogue::gelu: epi = CUBLASLT_EPILOGUE_GELU; break;
      case Epilogue::bias_gelu: epi = CUBLASLT_EPILOGUE_GELU_BIAS; break;
    }
    TL_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    if (a.device_scalars) {
      const cublasLtPointerMode_t mode = CUBLASLT_POINTER_MODE_DEVICE;
      TL_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_POINTER_MODE, &mode, sizeof mode));
    }
    if (a.bias) {
      TL_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &a.bias, sizeof a.bias));
      TL_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &t, sizeof t));
    }
    // Column-major views of the row-major operands.
    const std::uint64_t lt_a_rows = static_cast<std::uint64_t>(a.trans_b ? a.k : a.n);
    const std::uint64_t lt_a_cols = static_cast<std::uint64_t>(a.trans_b ? a.n : a.k);
    const std::uint64_t lt_b_rows = static_cast<std::uint64_t>(a.trans_a ? a.m : a.k);
    const std::uint64_t lt_b_cols = static_cast<std::uint64_t>(a.trans_a ? a.k : a.m);
    TL_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&desc.a, t, lt_a_rows, lt_a_cols, a.ldb));
    TL_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&desc.b, t, lt_b_rows, lt_b_cols, a.lda));
    TL_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&desc.d, a.d_fp32 ? CUDA_R_32F : t, static_cast<std::uint64_t>(a.n),
                                             static_cast<std::uint64_t>(a.m), a.ldd));
    TL_CUBLAS_TRY(cublasLtMatmulPreferenceCreate(&desc.pref));
    TL_CUBLAS_TRY(cublasLtMatmulPreferenceSetAttribute(desc.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                       &workspace_bytes, sizeof workspace_bytes));
    return Status::ok();
  }
#endif
};

}  // namespace tokenless::blas
#endif
