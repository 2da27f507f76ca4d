// Host tier: status, workspace, tensor views, argument checks, device queries.
#include <doctest/doctest.h>
#include <tokenless/tokenless.hpp>

#include <cmath>
#include <limits>
#include <string>

using namespace tokenless;

namespace {
Status fails_early(bool fail, int& reached) {
  TL_RETURN_IF_ERROR(fail ? Status::error(StatusCode::internal, "boom %d", 7) : Status::ok());
  ++reached;
  return Status::ok();
}
bool contains(const Status& s, const char* needle) { return std::string(s.message()).find(needle) != std::string::npos; }
}  // namespace

TEST_CASE("Status carries a code and a message naming argument, expectation and value") {
  Status ok;
  CHECK(ok.is_ok());
  CHECK(std::string(ok.message()) == "ok");
  Status s = Status::argument(StatusCode::shape_mismatch, "ld", "a row stride >= cols", "%d", 3);
  CHECK_FALSE(s.is_ok());
  CHECK(s.code() == StatusCode::shape_mismatch);
  CHECK(std::string(s.message()) == "argument 'ld': expected a row stride >= cols, got 3");
  std::string big(1000, 'x');
  Status t = Status::error(StatusCode::internal, "%s", big.c_str());
  CHECK(std::string(t.message()).size() == Status::kMessageBytes - 1);  // truncated, terminated
  int reached = 0;
  CHECK(fails_early(true, reached).code() == StatusCode::internal);
  CHECK(reached == 0);
  CHECK(fails_early(false, reached).is_ok());
  CHECK(reached == 1);
}

TEST_CASE("workspace layout carves 256-byte aligned regions") {
  WorkspaceLayout l;
  CHECK(l.add(10) == 0);
  CHECK(l.add(1) == 256);
  CHECK(l.add_array<float>(100) == 512);
  CHECK(l.bytes() == 1024);
  alignas(256) static unsigned char buf[1024];
  CHECK(check_workspace({buf, 1024}, 1024).is_ok());
  CHECK(check_workspace({nullptr, 0}, 0).is_ok());
  CHECK(check_workspace({nullptr, 0}, 16).code() == StatusCode::null_pointer);
  CHECK(check_workspace({buf + 8, 1000}, 16).code() == StatusCode::misaligned);
  Status small = check_workspace({buf, 100}, 512);
  CHECK(small.code() == StatusCode::workspace_too_small);
  CHECK(contains(small, "512 needed"));
}

TEST_CASE("tensor views: strides, indexing, contiguity") {
  float data[24];
  for (int i = 0; i < 24; ++i) data[i] = static_cast<float>(i);
  auto v = TensorView<float, 3>::contiguous(data, {2, 3, 4});
  CHECK(v.numel() == 24);
  CHECK(v.stride(0) == 12);
  CHECK(v.stride(2) == 1);
  CHECK(v(1, 2, 3) == 23.0f);
  CHECK(v.is_contiguous());
  TensorView<float, 2> col = TensorView<float, 2>::contiguous(data, {6, 4});
  std::swap(col.extents[0], col.extents[1]);
  std::swap(col.strides[0], col.strides[1]);  // transposed view
  CHECK_FALSE(col.is_contiguous());
  CHECK(col(3, 5) == 23.0f);
}

TEST_CASE("argument checks") {
  int x = 0;
  CHECK(check::not_null("p", &x).is_ok());
  CHECK(contains(check::not_null("p", nullptr), "'p'"));
  CHECK(check::aligned("p", reinterpret_cast<char*>(&x) + 1, 4).code() == StatusCode::misaligned);
  CHECK(check::positive("n", 0).code() == StatusCode::empty);
  CHECK(check::positive("n", -1).code() == StatusCode::invalid_argument);
  CHECK(check::fits_int32("n", std::int64_t{1} << 31).code() == StatusCode::overflow);
  CHECK(check::fits_int32("n", (std::int64_t{1} << 31) - 1).is_ok());
  CHECK(check::product_fits_int32("n", 1 << 16, 1 << 15).code() == StatusCode::overflow);
  CHECK(check::product_fits_int32("n", 1 << 16, (1 << 15) - 1).is_ok());
  CHECK(check::finite("theta", std::nanf("")).code() == StatusCode::invalid_argument);
  CHECK(check::finite("theta", std::numeric_limits<float>::infinity()).code() == StatusCode::invalid_argument);
  CHECK(check::equal("d", 3, 4).code() == StatusCode::shape_mismatch);
}

TEST_CASE("device queries never crash without a driver") {
  const bool available = device_available();
  MESSAGE("backend " << backend_name() << ", device available: " << available);
  DeviceProperties p;
  Status s = device_properties(p);
  if (available) {
    CHECK(s.is_ok());
    CHECK(p.compute_capability() >= 70);
  } else {
    CHECK(s.code() == StatusCode::no_device);
  }
  CHECK(device_available() == available);  // cached, and stable
}
