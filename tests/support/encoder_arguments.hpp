#pragma once
// The backward's arguments as every encoder test sets them: the gradient
// tables carved from one buffer (separate tables or one fused table).
#include <tokenless/tokenless.cuh>

#include <cstdint>

namespace tlt {

template <class Op, class IdT, class T, class G>
typename Op::Arguments backward_arguments(const IdT* ids, tokenless::VarlenBatch batch, const T* grad_output,
                                          G* grad_byte, G* grad_tables, std::int64_t V, int d) {
  typename Op::Arguments a;
  a.ids = ids;
  a.batch = batch;
  a.grad_output = grad_output;
  a.grad_byte_table = grad_byte;
  if constexpr (requires { a.grad_hash_tables.fused; }) {
    a.grad_hash_tables.fused = grad_tables;
    a.grad_hash_tables.use_default_offsets(V);
  } else {
    for (int t = 0; t < Op::K; ++t) a.grad_hash_tables.table[t] = grad_tables + static_cast<std::int64_t>(t) * V * d;
  }
  a.hash_vocab = V;
  a.d = d;
  return a;
}

}  // namespace tlt
