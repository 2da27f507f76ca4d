#pragma once
// Testbed<Op>: how every test drives an operation (after CUTLASS's testbeds).
// It sizes and allocates the workspace, runs, reads the device-side status,
// and runs bad-input matrices: every case must get the expected Status (from
// run(), or for what only the device sees, from read_status()) and leave
// every watched output exactly as it was.
#include "support.hpp"

#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tlt {

template <class Op>
concept HasReadStatus = requires(const typename Op::Arguments& a, tokenless::Workspace w) {
  { Op::read_status(a, w, cudaStream_t{}) } -> std::same_as<tokenless::Status>;
};

template <tokenless::Operation Op>
class Testbed {
 public:
  using Arguments = typename Op::Arguments;

  // One case of a bad-input matrix: a change to good arguments, the code it
  // must get and a piece of the message.
  struct Bad {
    std::string what;
    std::function<void(Arguments&)> change;
    tokenless::StatusCode code;
    std::string needle;
  };

  // Fills `buf` with `byte` and watches it: reject() checks it is untouched.
  template <class T>
  Testbed& watch(DeviceBuffer<T>& buf, int byte = 0xff) {
    buf.fill_bytes(byte);
    auto snapshot = std::make_shared<std::vector<unsigned char>>(bytes_of(buf));
    watched_.push_back([&buf, snapshot] { return bytes_of(buf) == *snapshot; });
    return *this;
  }

  // The workspace of the last run.
  tokenless::Workspace workspace() const { return {ws_.get(), ws_bytes_}; }

  // Runs with a workspace of workspace_size(a) bytes; returns run()'s Status
  // or, when it launched, the device-side status.
  tokenless::Status run(const Arguments& a, cudaStream_t stream = nullptr) {
    prepare(a);
    tokenless::Status s = Op::run(a, workspace(), stream);
    if (!s) return s;
    if constexpr (HasReadStatus<Op>) return Op::read_status(a, workspace(), stream);
    else return s;
  }

  // Runs and requires success, on the host and on the device.
  void run_ok(const Arguments& a, cudaStream_t stream = nullptr) { REQUIRE_OK(run(a, stream)); }

  // Every case must be refused with its code and message, and write nothing.
  void reject(const Arguments& good, std::initializer_list<Bad> cases) {
    REQUIRE_OK(Op::can_implement(good));
    for (const Bad& c : cases) {
      CAPTURE(c.what);
      Arguments b = good;
      c.change(b);
      const tokenless::Status s = run(b);
      INFO("status: " << s.message());
      CHECK(s.code() == c.code);
      CHECK(std::string(s.message()).find(c.needle) != std::string::npos);
      for (std::size_t i = 0; i < watched_.size(); ++i) {
        CAPTURE(i);
        CHECK(watched_[i]());  // watched output i keeps its sentinels
      }
    }
  }

 private:
  void prepare(const Arguments& a) {
    ws_bytes_ = Op::workspace_size(a);
    if (ws_.size() < ws_bytes_) ws_ = DeviceBuffer<unsigned char>(ws_bytes_);
  }
  template <class T>
  static std::vector<unsigned char> bytes_of(const DeviceBuffer<T>& buf) {
    const std::vector<T> h = buf.download();
    std::vector<unsigned char> b(h.size() * sizeof(T));
    if (!b.empty()) std::memcpy(b.data(), h.data(), b.size());
    return b;
  }

  DeviceBuffer<unsigned char> ws_;
  std::size_t ws_bytes_ = 0;
  std::vector<std::function<bool()>> watched_;
};

}  // namespace tlt
