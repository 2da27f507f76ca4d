#pragma once
// Host reference of the byte + hash n-gram embedding (BLT), forward and
// backward. Double accumulation gives the "truth"; the fp32 variant is what a
// naive same-precision implementation computes.
#include <tokenless/core/dtype.hpp>
#include <tokenless/encoder/policy.hpp>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace tokenless::reference {

// The id of a raw input element under the policy's convention.
template <class Ids, class IdT>
std::int32_t to_id(IdT v) {
  if constexpr (std::is_same_v<IdT, std::uint8_t>) return static_cast<std::int32_t>(v) + Ids::kOffset;
  else return static_cast<std::int32_t>(v);
}

// Start position of the sequence each token belongs to.
inline std::vector<std::int64_t> sequence_starts(std::int64_t n_tokens, const std::vector<std::int32_t>& cu_seqlens,
                                                 std::int64_t seq_len) {
  std::vector<std::int64_t> start(static_cast<std::size_t>(n_tokens));
  if (!cu_seqlens.empty()) {
    for (std::size_t b = 0; b + 1 < cu_seqlens.size(); ++b)
      for (std::int64_t i = cu_seqlens[b]; i < cu_seqlens[b + 1]; ++i) start[static_cast<std::size_t>(i)] = cu_seqlens[b];
  } else {
    for (std::int64_t i = 0; i < n_tokens; ++i) start[static_cast<std::size_t>(i)] = i / seq_len * seq_len;
  }
  return start;
}

// Bucket ids [tables][n_tokens].
template <class P, class IdT>
std::vector<std::vector<std::int64_t>> hash_buckets(const IdT* raw, std::int64_t n, const std::vector<std::int64_t>& start,
                                                    std::int64_t V) {
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) ids[static_cast<std::size_t>(i)] = to_id<typename P::ids>(raw[i]);
  std::vector<std::vector<std::int64_t>> b(P::tables, std::vector<std::int64_t>(static_cast<std::size_t>(n)));
  for (int t = 0; t < P::tables; ++t)
    for (std::int64_t i = 0; i < n; ++i)
      b[t][static_cast<std::size_t>(i)] = encoder::blt_ngram_bucket(ids.data(), i, start[static_cast<std::size_t>(i)],
                                                                   P::ngram_of(t), P::function_of(t), V);
  return b;
}

// out[i, :] = scale * (E_byte[id_i] + sum_t E_t[bucket_t(i)]), accumulated in Acc.
template <class P, class Acc, class T, class IdT, class Tables>
std::vector<Acc> hash_embedding_forward(const IdT* raw, std::int64_t n, const std::vector<std::int64_t>& start,
                                        const T* byte_table, const Tables& tables, std::int64_t V, int d, float scale) {
  auto buckets = hash_buckets<P>(raw, n, start, V);
  std::vector<Acc> out(static_cast<std::size_t>(n * d));
  std::vector<Acc> acc(static_cast<std::size_t>(d));
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t id = to_id<typename P::ids>(raw[i]);
    for (int c = 0; c < d; ++c) acc[c] = static_cast<Acc>(to_float(byte_table[id * d + c]));
    for (int t = 0; t < P::tables; ++t) {
      const T* row = tables.row(t, buckets[t][static_cast<std::size_t>(i)], d);
      for (int c = 0; c < d; ++c) acc[c] += static_cast<Acc>(to_float(row[c]));
    }
    for (int c = 0; c < d; ++c) out[static_cast<std::size_t>(i * d + c)] = acc[c] * static_cast<Acc>(scale);
  }
  return out;
}

// Gradients of the forward: grad_byte [vocab, d] and, per table t, [V, d]:
// sums over the tokens that gathered each row, times scale.
// Acc = double gives the truth; Acc = float the naive token-order loop.
template <class P, class Acc, class T, class IdT>
void hash_embedding_backward(const IdT* raw, std::int64_t n, const std::vector<std::int64_t>& start, const T* grad_out,
                             std::int64_t V, int d, float scale, std::vector<Acc>& grad_byte,
                             std::vector<std::vector<Acc>>& grad_tables) {
  auto buckets = hash_buckets<P>(raw, n, start, V);
  grad_byte.assign(static_cast<std::size_t>(P::ids::kVocab) * d, Acc(0));
  grad_tables.assign(P::tables, std::vector<Acc>(static_cast<std::size_t>(V) * d, Acc(0)));
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t id = to_id<typename P::ids>(raw[i]);
    for (int c = 0; c < d; ++c) {
      const Acc g = static_cast<Acc>(scale) * static_cast<Acc>(to_float(grad_out[i * d + c]));
      grad_byte[static_cast<std::size_t>(id * d + c)] += g;
      for (int t = 0; t < P::tables; ++t) {
        grad_tables[t][static_cast<std::size_t>(buckets[t][static_cast<std::size_t>(i)] * d + c)] += g;
      }
    }
  }
}

// The same gradients as a sparse gradient: for table 0 (the byte table) and
// tables 1..K, the rows some token gathered, ascending, and their rows of the
// dense gradient.
template <class Acc>
struct SparseGradient {
  std::vector<std::vector<std::int64_t>> rows;  // [tables + 1][touched]
  std::vector<std::vector<Acc>> values;         // [tables + 1][touched * d]
};

template <class P, class Acc, class T, class IdT>
SparseGradient<Acc> hash_embedding_sparse_backward(const IdT* raw, std::int64_t n, const std::vector<std::int64_t>& start,
                                                   const T* grad_out, std::int64_t V, int d, float scale) {
  std::vector<Acc> grad_byte;
  std::vector<std::vector<Acc>> grad_tables;
  hash_embedding_backward<P, Acc>(raw, n, start, grad_out, V, d, scale, grad_byte, grad_tables);
  const auto buckets = hash_buckets<P>(raw, n, start, V);
  SparseGradient<Acc> g;
  for (int t = 0; t <= P::tables; ++t) {
    std::vector<std::int64_t> rows(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i)
      rows[static_cast<std::size_t>(i)] = t == 0 ? to_id<typename P::ids>(raw[i]) : buckets[t - 1][static_cast<std::size_t>(i)];
    std::sort(rows.begin(), rows.end());
    rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
    const std::vector<Acc>& dense = t == 0 ? grad_byte : grad_tables[t - 1];
    std::vector<Acc> values;
    for (const std::int64_t r : rows) values.insert(values.end(), dense.begin() + r * d, dense.begin() + (r + 1) * d);
    g.rows.push_back(std::move(rows));
    g.values.push_back(std::move(values));
  }
  return g;
}

}  // namespace tokenless::reference
