#pragma once
// The operation protocol every tokenless operation follows (after CUTLASS):
//
//   struct Op {
//     struct Arguments { ... };                        // pointers, shapes, scalars
//     static Status can_implement(const Arguments&);   // every check, no side effects
//     static std::size_t workspace_size(const Arguments&);
//     static Status run(const Arguments&, Workspace, cudaStream_t);
//   };
//
// run() repeats can_implement(), so bad input is rejected with nothing
// written; it never allocates and never synchronises with the host.
#include <tokenless/core/config.hpp>
#include <tokenless/core/status.hpp>
#include <tokenless/core/workspace.hpp>

#include <concepts>
#include <cstddef>

namespace tokenless {

template <class Op>
concept Operation = requires(const typename Op::Arguments& args, Workspace ws, cudaStream_t stream) {
  { Op::can_implement(args) } -> std::same_as<Status>;
  { Op::workspace_size(args) } -> std::convertible_to<std::size_t>;
  { Op::run(args, ws, stream) } -> std::same_as<Status>;
};

// The checks every run() starts with: the operation's own, then the
// workspace (run() repeats them, so bad input is refused before anything is
// touched).
template <class Op>
Status check_run(const typename Op::Arguments& a, const Workspace& ws) {
  TL_RETURN_IF_ERROR(Op::can_implement(a));
  return check_workspace(ws, Op::workspace_size(a));
}

}  // namespace tokenless
