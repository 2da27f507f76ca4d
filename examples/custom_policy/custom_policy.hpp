#pragma once
// A user-defined boundary policy: start a patch after every sentence end
// ('.', '!', '?') or newline, and cap patches at 16 bytes. Any struct with
// needs_entropies / needs_tokens and a starts(view, p) rule plugs into the
// patcher, the streaming patcher and the compile-time checks.
#include <tokenless/tokenless.cuh>

#include <cstdio>
#include <string>
#include <vector>

namespace custom_policy {

struct SentencePatches {
  static constexpr bool needs_entropies = false;
  static constexpr bool needs_tokens = true;
  // Position p starts a patch when byte p - 1 (an id: byte + 4) ends a sentence.
  template <class View>
  TL_HOST_DEVICE bool starts(const View& v, std::int64_t p) const {
    const std::int32_t b = v.token(p - 1) - 4;
    return b == '.' || b == '!' || b == '?' || b == '\n';
  }
};
static_assert(tokenless::patcher::BoundaryPolicy<SentencePatches>);

inline int main() {
  namespace pt = tokenless::patcher;
  const std::string text = "Bytes in. Patches out! Does a policy need entropies? Not this one.\nA very long sentence gets split.";
  std::vector<std::int32_t> ids;
  for (unsigned char c : text) ids.push_back(c + 4);
  const std::int64_t n = static_cast<std::int64_t>(ids.size());
  const std::int32_t cu[2] = {0, static_cast<std::int32_t>(n)};
  std::int32_t *d_ids, *d_cu, *d_pid, *d_off, *d_start, *d_len;
  std::uint8_t* d_flags;
  cudaMalloc(&d_ids, n * 4);
  cudaMalloc(&d_cu, 8);
  cudaMalloc(&d_pid, n * 4);
  cudaMalloc(&d_off, 8);
  cudaMalloc(&d_start, n * 4);
  cudaMalloc(&d_len, n * 4);
  cudaMalloc(&d_flags, n);
  cudaMemcpy(d_ids, ids.data(), n * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(d_cu, cu, 8, cudaMemcpyHostToDevice);

  using Op = pt::Patcher<SentencePatches>;
  Op::Arguments a;
  a.tokens = d_ids;
  a.batch = {d_cu, 1, n};
  a.max_patch_length = 16;
  a.flags = d_flags;
  a.patch_ids = d_pid;
  a.patch_offsets = d_off;
  a.patch_starts = d_start;
  a.patch_lengths = d_len;
  a.capacity = n;
  void* ws = nullptr;
  cudaMalloc(&ws, Op::workspace_size(a));
  tokenless::Status s = Op::run(a, {ws, Op::workspace_size(a)});
  if (s) s = Op::read_status(a, {ws, Op::workspace_size(a)});
  if (!s) {
    std::fprintf(stderr, "%s\n", s.message());
    return 1;
  }
  std::int32_t off[2];
  cudaMemcpy(off, d_off, 8, cudaMemcpyDeviceToHost);
  std::vector<std::int32_t> len(static_cast<std::size_t>(off[1]));
  cudaMemcpy(len.data(), d_len, len.size() * 4, cudaMemcpyDeviceToHost);
  std::size_t pos = 0;
  for (std::int32_t l : len) {
    std::string piece = text.substr(pos, static_cast<std::size_t>(l));
    for (auto& c : piece)
      if (c == '\n') c = '/';
    std::printf("[%s]", piece.c_str());
    pos += static_cast<std::size_t>(l);
  }
  std::printf("\n%d patches (backend: %s)\n", off[1], tokenless::backend_name());
  for (void* p : {static_cast<void*>(d_ids), static_cast<void*>(d_cu), static_cast<void*>(d_pid),
                  static_cast<void*>(d_off), static_cast<void*>(d_start), static_cast<void*>(d_len),
                  static_cast<void*>(d_flags), ws})
    cudaFree(p);
  return pos == text.size() ? 0 : 1;
}

}  // namespace custom_policy
