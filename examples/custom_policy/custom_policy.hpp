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
  const std::vector<std::int32_t> cu = {0, static_cast<std::int32_t>(n)};
  // Every allocation and copy is checked: a failure prints its Status.
  auto check = [](const tokenless::Status& st) {
    if (!st) std::fprintf(stderr, "%s\n", st.message());
    return st.is_ok();
  };
  tokenless::DeviceBuffer<std::int32_t> d_ids(ids.size()), d_cu(2), d_pid(ids.size()), d_off(2), d_start(ids.size()),
      d_len(ids.size());
  tokenless::DeviceBuffer<std::uint8_t> d_flags(ids.size());
  for (const tokenless::Status* st : {&d_ids.status(), &d_cu.status(), &d_pid.status(), &d_off.status(),
                                      &d_start.status(), &d_len.status(), &d_flags.status()})
    if (!check(*st)) return 1;
  if (!check(d_ids.upload(ids)) || !check(d_cu.upload(cu))) return 1;

  using Op = pt::Patcher<SentencePatches>;
  Op::Arguments a;
  a.tokens = d_ids.get();
  a.batch = {d_cu.get(), 1, n};
  a.max_patch_length = 16;
  a.patches = {d_flags.get(), d_pid.get(), d_off.get(), d_start.get(), d_len.get(), n};
  tokenless::DeviceBuffer<unsigned char> ws(Op::workspace_size(a));
  if (!check(ws.status())) return 1;
  tokenless::Status s = Op::run(a, {ws.get(), Op::workspace_size(a)});
  if (s) s = Op::read_status(a, {ws.get(), Op::workspace_size(a)});
  if (!check(s)) return 1;
  std::int32_t off[2];
  if (!check(d_off.download(off, 2))) return 1;
  std::vector<std::int32_t> len(static_cast<std::size_t>(off[1]));
  if (!check(d_len.download(len.data(), len.size()))) return 1;
  std::size_t pos = 0;
  for (std::int32_t l : len) {
    std::string piece = text.substr(pos, static_cast<std::size_t>(l));
    for (auto& c : piece)
      if (c == '\n') c = '/';
    std::printf("[%s]", piece.c_str());
    pos += static_cast<std::size_t>(l);
  }
  std::printf("\n%d patches (backend: %s)\n", off[1], tokenless::backend_name());
  return pos == text.size() ? 0 : 1;
}

}  // namespace custom_policy
