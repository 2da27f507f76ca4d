// Host tier: the cuBLASLt wrapper's validation and descriptor building, which
// need no device. The GEMM itself is checked in the gpu tier.
#include <doctest/doctest.h>
#include <tokenless/core/cublaslt.hpp>

#include <string>

#if defined(TOKENLESS_HAS_CUBLASLT)
using namespace tokenless;
using blas::Gemm;

namespace {
Gemm::Arguments valid() {
  static float a[6 * 4], b[4 * 5], d[6 * 5], bias[5];
  Gemm::Arguments g;
  g.dtype = DType::f32;
  g.m = 6;
  g.n = 5;
  g.k = 4;
  g.a = a;
  g.lda = 4;
  g.b = b;
  g.ldb = 5;
  g.d = d;
  g.ldd = 5;
  g.bias = bias;
  g.epilogue = blas::Epilogue::bias;
  return g;
}
bool mentions(const Status& s, const char* needle) { return std::string(s.message()).find(needle) != std::string::npos; }
}  // namespace

TEST_CASE("cuBLASLt GEMM: can_implement names the bad argument") {
  static_assert(Operation<Gemm>);
  CHECK(Gemm::can_implement(valid()).is_ok());
  auto g = valid();
  g.k = 0;
  CHECK(mentions(Gemm::can_implement(g), "'k'"));
  g = valid();
  g.lda = 3;
  CHECK(Gemm::can_implement(g).code() == StatusCode::shape_mismatch);
  g = valid();
  g.trans_b = true;  // B stored [n, k] = [5, 4] needs ldb >= 4: 5 is fine
  CHECK(Gemm::can_implement(g).is_ok());
  g.ldb = 3;
  CHECK(mentions(Gemm::can_implement(g), "'ldb'"));
  g = valid();
  g.bias = nullptr;
  CHECK(Gemm::can_implement(g).code() == StatusCode::null_pointer);
  g = valid();
  g.epilogue = blas::Epilogue::gelu;
  CHECK(mentions(Gemm::can_implement(g), "'bias'"));  // given but ignored
  g = valid();
  g.dtype = DType::i32;
  CHECK(Gemm::can_implement(g).code() == StatusCode::unsupported);
  g = valid();
  g.alpha = std::nanf("");
  CHECK(mentions(Gemm::can_implement(g), "'alpha'"));
  g = valid();
  g.dtype = DType::bf16;
  g.allow_tf32 = true;
  CHECK(mentions(Gemm::can_implement(g), "'allow_tf32'"));
}

TEST_CASE("cuBLASLt GEMM: descriptors build without a device; the handle fails cleanly without one") {
  for (auto t : {DType::f32, DType::f16, DType::bf16}) {
    auto g = valid();
    g.dtype = t;
    for (auto epi : {blas::Epilogue::bias, blas::Epilogue::bias_gelu}) {
      g.epilogue = epi;
      blas::detail::MatmulDescs desc;
      CHECK(Gemm::describe(g, 1 << 20, desc).is_ok());
    }
  }
  blas::LtHandle h;
  Status s = blas::LtHandle::create(h);
  if (device_available()) {
    CHECK(s.is_ok());
  } else {
    CHECK(s.code() == StatusCode::cublas_error);
    CHECK(mentions(s, "cublasLtCreate"));
    auto g = valid();
    g.handle = &h;
    CHECK(Gemm::run(g, {}, nullptr).code() == StatusCode::null_pointer);  // no handle: refused, nothing launched
  }
}
#else
TEST_CASE("cuBLASLt wrapper is compiled out without the CUDA toolkit") { CHECK(true); }
#endif
