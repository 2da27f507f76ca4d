#pragma once
// RowReduce forward and backward against the host reference, for every
// policy and storage dtype the docs promise.
#include "../support/testbed.hpp"

#include <tokenless/tokenless.cuh>

#include <type_traits>

namespace tlt::row_reduce_tests {

namespace rr = tokenless::row_reduce;

template <class P, class T>
void forward_case(std::int64_t rows, std::int64_t cols, std::int64_t ld, std::size_t offset, std::uint64_t seed) {
  CAPTURE(rows);
  CAPTURE(cols);
  CAPTURE(ld);
  CAPTURE(offset);
  const std::size_t total = static_cast<std::size_t>(rows * ld) + offset;
  auto h = random_values<T>(total, seed, -2.0f, 2.0f);
  DeviceBuffer<T> in(h);
  DeviceBuffer<float> out(static_cast<std::size_t>(rows));
  typename rr::Forward<P, T>::Arguments args;
  args.input = in.get() + offset;  // an offset pointer forces the scalar path
  args.output = out.get();
  args.rows = rows;
  args.cols = cols;
  args.ld = ld;
  Testbed<rr::Forward<P, T>>().run_ok(args);
  auto got = out.download();
  auto truth = tokenless::reference::row_reduce<P>(h.data() + offset, rows, cols, ld);
  auto naive = tokenless::reference::row_reduce_naive<P>(h.data() + offset, rows, cols, ld);
  if constexpr (rr::is_max_policy<P>) {
    for (std::size_t r = 0; r < got.size(); ++r) CHECK(got[r] == static_cast<float>(truth[r]));  // exact
  } else {
    // Tree and sequential summation error both grow with cols; 2x the naive error covers the tree.
    check_accuracy(got, naive, truth, 2.0, tokenless::dtype_traits<float>::unit_roundoff);
  }
}

template <class P, class T>
void backward_case(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  auto h = random_values<T>(static_cast<std::size_t>(rows * cols), seed, -2.0f, 2.0f);
  if constexpr (rr::is_max_policy<P>) {
    if (cols > 3) {
      h[1] = h[3] = tokenless::from_float<T>(8.0f);  // tie: the first one takes the gradient
    }
  }
  auto g = random_values<float>(static_cast<std::size_t>(rows), seed + 1);
  DeviceBuffer<T> in(h), gin(static_cast<std::size_t>(rows * cols));
  DeviceBuffer<float> gout(g);
  typename rr::Backward<P, T>::Arguments args;
  args.input = in.get();
  args.grad_output = gout.get();
  args.grad_input = gin.get();
  args.rows = rows;
  args.cols = cols;
  Testbed<rr::Backward<P, T>>().run_ok(args);
  auto got = gin.download();
  auto want = tokenless::reference::row_reduce_backward<P>(h.data(), g.data(), rows, cols, cols);
  for (std::size_t i = 0; i < got.size(); ++i) {
    // One product rounded to T: exact up to T's rounding of the same float.
    CHECK(tokenless::to_float(got[i]) == tokenless::round_trip<T>(want[i]));
  }
}

template <class P, class T>
void all_shapes() {
  const int s = scale_down();
  forward_case<P, T>(7, 1000 / s, 1000 / s, 0, 1);     // vector path
  forward_case<P, T>(5, 333, 340, 0, 2);               // odd length, strided rows: scalar path
  forward_case<P, T>(3, 64, 64, 1, 3);                 // misaligned base: scalar path
  forward_case<P, T>(2, 1, 1, 0, 4);                   // one column
  forward_case<P, T>(1, 4096 / s, 4096 / s, 0, 5);
  backward_case<P, T>(4, 77, 6);
  backward_case<P, T>(3, 512 / s, 7);
}

TEST_CASE_TEMPLATE("row_reduce: forward and backward match the reference", T, float, __half, __nv_bfloat16) {
  // Thread mode (TSan): bf16 runs fp16's schedule (same element size and vector widths).
  if (std::is_same_v<T, __nv_bfloat16> && scale_down() > 1) return;
  all_shapes<rr::SumPolicy, T>();
  all_shapes<rr::SumSquaresPolicy, T>();
  all_shapes<rr::MaxPolicy, T>();
}

TEST_CASE("row_reduce: NaN and Inf propagate as in PyTorch") {
  std::vector<float> h = {1, 2, std::nanf(""), 4,  //
                          1, INFINITY, 3, 4,       //
                          -INFINITY, -INFINITY, -INFINITY, -INFINITY};
  DeviceBuffer<float> in(h), out(3);
  // Sum and max alike: NaN, +inf, -inf.
  auto check = [&]<class P>() {
    Testbed<rr::Forward<P, float>>().run_ok({in.get(), out.get(), 3, 4, 0});
    const auto r = out.download();
    CHECK(std::isnan(r[0]));
    CHECK(r[1] == INFINITY);
    CHECK(r[2] == -INFINITY);
  };
  check.template operator()<rr::SumPolicy>();
  check.template operator()<rr::MaxPolicy>();
}

TEST_CASE("row_reduce: bad input is rejected and nothing is written") {
  using Code = tokenless::StatusCode;
  {
    using Op = rr::Forward<rr::SumPolicy, float>;
    DeviceBuffer<float> in(64), out(4);
    Testbed<Op> tb;
    tb.watch(out, 0x7f);
    float* odd = reinterpret_cast<float*>(reinterpret_cast<char*>(out.get()) + 2);
    tb.reject({in.get(), out.get(), 4, 16, 0},
              {{"no input", [](auto& a) { a.input = nullptr; }, Code::null_pointer, "'input'"},
               {"no output", [](auto& a) { a.output = nullptr; }, Code::null_pointer, "'output'"},
               {"no rows", [](auto& a) { a.rows = 0; }, Code::empty, "'rows'"},
               {"negative cols", [](auto& a) { a.cols = -3; }, Code::invalid_argument, "'cols'"},
               {"ld < cols", [](auto& a) { a.ld = 8; }, Code::shape_mismatch, "'ld'"},
               {"cols over 32 bits", [](auto& a) { a.cols = a.ld = std::int64_t{1} << 33; }, Code::overflow, "'cols'"},
               {"misaligned output", [&](auto& a) { a.output = odd; }, Code::misaligned, "'output'"}});
  }
  {
    using Op = rr::Backward<rr::MaxPolicy, __nv_bfloat16>;
    DeviceBuffer<__nv_bfloat16> in(64), gin(64);
    DeviceBuffer<float> gout(4);
    Testbed<Op> tb;
    tb.watch(gin, 0x7f);
    tb.reject({in.get(), gout.get(), gin.get(), 4, 16, 0, 0},
              {{"no grad_output", [](auto& a) { a.grad_output = nullptr; }, Code::null_pointer, "'grad_output'"},
               {"no grad_input", [](auto& a) { a.grad_input = nullptr; }, Code::null_pointer, "'grad_input'"},
               {"ld_grad < cols", [](auto& a) { a.ld_grad = 3; }, Code::shape_mismatch, "'ld_grad'"},
               {"rows over 32 bits", [](auto& a) { a.rows = std::int64_t{1} << 31; }, Code::overflow, "'rows'"}});
  }
}

}  // namespace tlt::row_reduce_tests
