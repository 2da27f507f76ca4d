#pragma once
// Host reference of the patcher, written the way BLT's patcher.py computes it
// (shifted masks, first_ids, lengths from start ids, split_large_numbers), so
// that it checks the per-position rules of patcher/policy.hpp independently.
// One sequence at a time: batches never bleed into each other.
#include <tokenless/core/dtype.hpp>

#include <tokenless/entropy_model/policy.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <optional>
#include <unordered_map>
#include <vector>

namespace tokenless::reference {

// H = -sum softmax(l) log softmax(l), natural log, per row of [rows, V] logits,
// in double (the truth) or float (a naive same-precision loop).
template <class Acc, class T>
std::vector<Acc> entropies_from_logits(const T* logits, std::int64_t rows, int V) {
  std::vector<Acc> h(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* x = logits + r * V;
    Acc m = -INFINITY;
    for (int v = 0; v < V; ++v) m = std::max<Acc>(m, to_float(x[v]));
    Acc s = 0;
    for (int v = 0; v < V; ++v) s += std::exp(static_cast<Acc>(to_float(x[v])) - m);
    const Acc log_s = std::log(s);
    Acc acc = 0;
    for (int v = 0; v < V; ++v) {
      const Acc logp = static_cast<Acc>(to_float(x[v])) - m - log_s;
      acc += std::exp(logp) * logp;
    }
    bool nan = false;
    for (int v = 0; v < V; ++v) nan |= std::isnan(to_float(x[v]));
    h[static_cast<std::size_t>(r)] = nan ? static_cast<Acc>(NAN) : -acc;
  }
  return h;
}

enum class EntropyMode { global, monotonic, combined };

struct BltEntropyOptions {
  EntropyMode mode = EntropyMode::global;
  std::optional<float> threshold = 1.335442066192627f;  // nullopt: top-k by patch_size
  float threshold_add = 0.0f;
  int patch_size = 4;
  bool include_next_token = false;
  int max_patch_length = 0;  // 0: no cap
};

inline std::vector<std::int64_t> lengths_from_starts(const std::vector<std::int64_t>& starts, std::int64_t seq_len_next) {
  std::vector<std::int64_t> lengths;
  for (std::size_t k = 0; k < starts.size(); ++k) {
    const std::int64_t end = k + 1 < starts.size() ? starts[k + 1] : seq_len_next;
    if (end - starts[k] > 0) lengths.push_back(end - starts[k]);  // BLT's zero padding dropped
  }
  return lengths;
}

inline std::vector<std::int64_t> split_large(const std::vector<std::int64_t>& lengths, int m) {
  if (m <= 0) return lengths;
  std::vector<std::int64_t> out;
  for (std::int64_t l : lengths) {
    while (l > m) {
      out.push_back(m);
      l -= m;
    }
    out.push_back(l);
  }
  return out;
}

// BLT's find_entropy_patch_start_ids + patch_lengths_from_start_ids for one sequence.
inline std::vector<std::int64_t> blt_entropy_patch_lengths(const std::vector<float>& entropies,
                                                           const BltEntropyOptions& o) {
  const std::int64_t n = static_cast<std::int64_t>(entropies.size());
  std::vector<std::int64_t> starts = {0, 1};
  const std::vector<float> e(entropies.begin() + std::min<std::int64_t>(1, n), entropies.end());  // entropies[1:]
  const std::int64_t m = static_cast<std::int64_t>(e.size());
  std::vector<std::int64_t> picked;
  if (!o.threshold) {
    const std::int64_t k = std::max<std::int64_t>(0, n / o.patch_size - 2);
    std::vector<std::int64_t> idx(static_cast<std::size_t>(m));
    std::iota(idx.begin(), idx.end(), 0);
    // Largest first, NaN above everything (as torch.topk ranks it); ties,
    // -0 against +0 included, by lower index (torch leaves their order unspecified).
    std::stable_sort(idx.begin(), idx.end(), [&](std::int64_t a, std::int64_t b) {
      const bool na = std::isnan(e[a]), nb = std::isnan(e[b]);
      if (na || nb) return na && !nb;
      return e[a] > e[b];
    });
    idx.resize(static_cast<std::size_t>(std::min(k, m)));
    std::sort(idx.begin(), idx.end());
    picked = idx;
  } else {
    std::vector<bool> mask(static_cast<std::size_t>(m), false);
    const float t = *o.threshold;
    if (m > 0) {
      if (o.mode == EntropyMode::global) {
        for (std::int64_t i = 0; i < m; ++i) mask[i] = e[i] > t;
      } else {
        std::vector<bool> init(static_cast<std::size_t>(m), false);
        init[0] = true;
        mask[0] = true;
        for (std::int64_t i = 1; i < m; ++i) {
          const float diff = e[i] - e[i - 1];
          mask[i] = o.mode == EntropyMode::monotonic ? diff > t : (diff > o.threshold_add) && (e[i] > t) && !init[i - 1];
        }
      }
    }
    if (!o.include_next_token && !mask.empty()) mask.pop_back();
    for (std::size_t i = 0; i < mask.size(); ++i)
      if (mask[i]) picked.push_back(static_cast<std::int64_t>(i));
  }
  for (std::int64_t i : picked) starts.push_back(i + 2);
  return split_large(lengths_from_starts(starts, n + (o.include_next_token ? 1 : 0)), o.max_patch_length);
}

inline std::vector<std::int64_t> blt_static_patch_lengths(std::int64_t n, int patch_size, bool include_next_token,
                                                          int max_patch_length = 0) {
  const std::int64_t total = n + (include_next_token ? 1 : 0);
  std::vector<std::int64_t> l(static_cast<std::size_t>((total + patch_size - 1) / patch_size), patch_size);
  if (total % patch_size) l.back() = total % patch_size;
  return split_large(l, max_patch_length);
}

inline std::vector<std::int64_t> blt_byte_patch_lengths(std::int64_t n, bool include_next_token) {
  return std::vector<std::int64_t>(static_cast<std::size_t>(n + (include_next_token ? 1 : 0)), 1);
}

// BLT's find_space_patch_start_ids on BLT ids (byte + 4).
inline std::vector<std::int64_t> blt_space_patch_lengths(const std::vector<std::int32_t>& tokens, bool include_next_token,
                                                         int max_patch_length = 0) {
  const std::int64_t n = static_cast<std::int64_t>(tokens.size());
  auto sep = [](std::int32_t id) {
    const std::int32_t b = id - 4;
    return b < '0' || ('9' < b && b < 'A') || ('Z' < b && b < 'a') || ('z' < b && b < 0x80) || 0xC0 <= b;
  };
  std::vector<bool> end(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) end[i] = sep(tokens[i]);
  std::vector<bool> shifted = end;
  for (std::int64_t i = 1; i < n; ++i) shifted[i] = end[i] && !end[i - 1];
  for (std::int64_t i = 0; i < n; ++i) shifted[i] = shifted[i] || tokens[i] < 4;
  std::vector<std::int64_t> starts = {0, 1};
  for (std::int64_t i = 1; i < n; ++i)
    if (shifted[i]) starts.push_back(i + 1);
  return split_large(lengths_from_starts(starts, n + (include_next_token ? 1 : 0)), max_patch_length);
}

}  // namespace tokenless::reference

namespace tokenless::reference {

// Calibration's threshold, by its definition: with the global rule a batch
// gets base = sum min(2, positions) patches plus one per rule entropy above θ,
// so the smallest θ with at most positions / target_size patches is the
// (c + 1)-th largest rule entropy, c = floor(target - base); θ = (smallest) - 1
// when every rule entropy may fire, 0 when there is none. NaN never fires.
inline float calibrated_threshold(const std::vector<float>& entropies, const std::vector<std::int32_t>& cu,
                                  bool include_next_token, float target_size) {
  const int inc = include_next_token ? 1 : 0;
  std::vector<float> rule;
  double base = 0, positions = 0;
  for (std::size_t b = 0; b + 1 < cu.size(); ++b) {
    const std::int64_t n = cu[b + 1] - cu[b], m = n + inc;
    base += static_cast<double>(std::min<std::int64_t>(m, 2));
    positions += static_cast<double>(m);
    for (std::int64_t local = 1; local + 1 < m && local < n; ++local) {
      const float h = entropies[static_cast<std::size_t>(cu[b] + local)];
      if (h == h) rule.push_back(h);
    }
  }
  if (rule.empty()) return 0.0f;
  std::sort(rule.begin(), rule.end(), [](float x, float y) { return x > y; });
  const double room = positions / static_cast<double>(target_size) - base;
  const double c = room < 0 ? 0.0 : std::floor(room);
  if (c >= static_cast<double>(rule.size())) return rule.back() - 1.0f;
  return rule[static_cast<std::size_t>(c)];
}

// The byte n-gram context model of entropy_model/ngram.cuh, on the host, in
// double precision. Fast enough for the CLI's CPU path (megabytes in
// seconds): counts are 32-bit, and a position's entropy depends only on its
// last `order` bytes (and, leaving one out, the next byte), so each distinct
// context is computed once.
struct NGramReferenceConfig {
  int order = 4;
  std::int64_t buckets = 1 << 16;
  double alpha = 0.5, beta = 2.0;
};

inline std::uint32_t ngram_context_hash(const std::uint8_t* bytes, std::int64_t end, int order, std::int64_t buckets) {
  return entropy_model::context_hash(bytes, end, order, buckets);
}

inline std::vector<double> ngram_entropies(const std::vector<std::uint8_t>& train, const std::vector<std::uint8_t>& text,
                                           const NGramReferenceConfig& c, bool leave_one_out) {
  std::vector<std::uint32_t> ck(static_cast<std::size_t>(c.buckets) * 256, 0), c1(256 * 256, 0);
  for (std::size_t i = 0; i + 1 < train.size(); ++i) {
    c1[train[i] * 256ull + train[i + 1]] += 1;
    for (int k = 2; k <= c.order; ++k)
      ck[ngram_context_hash(train.data(), static_cast<std::int64_t>(i), k, c.buckets) * 256ull + train[i + 1]] += 1;
  }
  std::unordered_map<std::uint64_t, double> memo[257];  // by the next byte left out (+1; 0: none)
  std::vector<double> h(text.size()), p(256);
  for (std::size_t i = 0; i < text.size(); ++i) {
    const int own = leave_one_out && i + 1 < text.size() ? text[i + 1] : -1;
    std::uint64_t context = 0;  // the last `order` bytes, missing ones 0, as the hash reads them
    for (int j = c.order - 1; j >= 0; --j) {
      const std::int64_t at = static_cast<std::int64_t>(i) - j;
      context = context << 8 | (at >= 0 ? text[static_cast<std::size_t>(at)] : 0u);
    }
    auto& seen = memo[own + 1];
    if (auto it = seen.find(context); it != seen.end()) {
      h[i] = it->second;
      continue;
    }
    const std::uint32_t* r1 = &c1[text[i] * 256ull];
    double total = 0;
    for (int v = 0; v < 256; ++v) total += r1[v] - (v == own);
    for (int v = 0; v < 256; ++v) p[v] = (r1[v] - (v == own) + c.alpha) / (total + 256 * c.alpha);
    for (int k = 2; k <= c.order; ++k) {
      const std::uint32_t* rk = &ck[ngram_context_hash(text.data(), static_cast<std::int64_t>(i), k, c.buckets) * 256ull];
      total = 0;
      for (int v = 0; v < 256; ++v) total += rk[v] - (v == own);
      for (int v = 0; v < 256; ++v) p[v] = (rk[v] - (v == own) + c.beta * p[v]) / (total + c.beta);
    }
    double e = 0;
    for (int v = 0; v < 256; ++v) e -= p[v] * std::log(p[v]);
    h[i] = e;
    seen.emplace(context, e);
  }
  return h;
}

}  // namespace tokenless::reference
