#pragma once
// Workspace: operations never allocate. They report how many bytes they need
// (workspace_size) and carve the caller's buffer at 256-byte alignment.
#include <tokenless/core/status.hpp>

#include <cstddef>
#include <cstdint>

namespace tokenless {

inline constexpr std::size_t kWorkspaceAlignment = 256;

constexpr std::size_t align_up(std::size_t n, std::size_t a) { return (n + a - 1) / a * a; }

// Builds a workspace layout: each add() returns the offset of a new region.
class WorkspaceLayout {
 public:
  constexpr std::size_t add(std::size_t bytes) {
    std::size_t offset = align_up(total_, kWorkspaceAlignment);
    total_ = offset + bytes;
    return offset;
  }
  template <class T>
  constexpr std::size_t add_array(std::int64_t count) {
    return add(static_cast<std::size_t>(count) * sizeof(T));
  }
  // Total bytes, rounded up so that layouts can be concatenated.
  constexpr std::size_t bytes() const { return align_up(total_, kWorkspaceAlignment); }

 private:
  std::size_t total_ = 0;
};

struct Workspace {
  void* ptr = nullptr;
  std::size_t bytes = 0;

  template <class T>
  T* at(std::size_t offset) const {
    return reinterpret_cast<T*>(static_cast<unsigned char*>(ptr) + offset);
  }
};

// The checks every run() does before touching its workspace.
inline Status check_workspace(const Workspace& ws, std::size_t needed) {
  if (needed == 0) return Status::ok();
  if (ws.ptr == nullptr) {
    return Status::argument(StatusCode::null_pointer, "workspace", "a device buffer", "nullptr (%zu bytes needed)",
                            needed);
  }
  if (reinterpret_cast<std::uintptr_t>(ws.ptr) % kWorkspaceAlignment != 0) {
    return Status::argument(StatusCode::misaligned, "workspace", "256-byte alignment", "%p", ws.ptr);
  }
  if (ws.bytes < needed) {
    return Status::argument(StatusCode::workspace_too_small, "workspace", "at least workspace_size(args) bytes",
                            "%zu bytes (%zu needed)", ws.bytes, needed);
  }
  return Status::ok();
}

}  // namespace tokenless
