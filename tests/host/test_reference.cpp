// Host tier: the host references against values worked out by hand.
#include <doctest/doctest.h>
#include <tokenless/tokenless.hpp>

#include <cmath>
#include <vector>

using namespace tokenless;
namespace rr = tokenless::row_reduce;

TEST_CASE("reference row_reduce: sums, squares and max by hand, with a row stride") {
  const std::vector<float> x = {1, -2, 3, 99,  //
                                4, 5, -6, 99};  // column 3 lies outside the view (ld 4, cols 3)
  auto s = reference::row_reduce<rr::SumPolicy>(x.data(), 2, 3, 4);
  auto q = reference::row_reduce<rr::SumSquaresPolicy>(x.data(), 2, 3, 4);
  auto m = reference::row_reduce<rr::MaxPolicy>(x.data(), 2, 3, 4);
  CHECK(s == std::vector<double>{2, 3});
  CHECK(q == std::vector<double>{14, 77});
  CHECK(m == std::vector<double>{3, 5});
  auto n = reference::row_reduce_naive<rr::SumPolicy>(x.data(), 2, 3, 4);
  CHECK(n == std::vector<float>{2, 3});
}

TEST_CASE("reference row_reduce backward: gradient of each policy") {
  const std::vector<float> x = {1, 7, 7, -1};
  const std::vector<float> g = {0.5f};
  CHECK(reference::row_reduce_backward<rr::SumPolicy>(x.data(), g.data(), 1, 4, 4) ==
        std::vector<float>{0.5f, 0.5f, 0.5f, 0.5f});
  CHECK(reference::row_reduce_backward<rr::SumSquaresPolicy>(x.data(), g.data(), 1, 4, 4) ==
        std::vector<float>{1, 7, 7, -1});
  // Ties: the first maximal element takes the whole gradient.
  CHECK(reference::row_reduce_backward<rr::MaxPolicy>(x.data(), g.data(), 1, 4, 4) ==
        std::vector<float>{0, 0.5f, 0, 0});
  const std::vector<float> with_nan = {1, std::nanf(""), 9, 2};
  CHECK(reference::row_reduce_backward<rr::MaxPolicy>(with_nan.data(), g.data(), 1, 4, 4) ==
        std::vector<float>{0, 0.5f, 0, 0});
}

TEST_CASE("row_reduce policies satisfy the concept and tuning is chosen by compute capability") {
  static_assert(rr::Policy<rr::SumPolicy> && rr::Policy<rr::SumSquaresPolicy> && rr::Policy<rr::MaxPolicy>);
  static_assert(rr::tuning_for(80) == rr::kTuningSm80);
  static_assert(rr::tuning_for(90) == rr::kTuningSm90);
  static_assert(rr::tuning_for(100) == rr::kTuningSm90);
  CHECK(rr::is_max_policy<rr::MaxPolicy>);
  CHECK_FALSE(rr::is_max_policy<rr::SumPolicy>);
}
