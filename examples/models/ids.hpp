#pragma once
// Token ids as the command-line tools read them (tokenless-run --ids,
// tokenless-train --ids): non-negative integers separated by commas or
// whitespace.
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace run_cli {

// Integers separated by commas or whitespace; false (and `bad`) on anything else.
inline bool parse_ids(const std::string& text, std::vector<std::int32_t>& ids, std::string& bad) {
  std::string tok;
  auto flush = [&]() {
    if (tok.empty()) return true;
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(tok.c_str(), &end, 10);
    if (*end != '\0' || errno != 0 || v < 0 || v > 0x7fffffff) {
      bad = tok;
      return false;
    }
    ids.push_back(static_cast<std::int32_t>(v));
    tok.clear();
    return true;
  };
  for (char ch : text) {
    if (ch == ',' || std::isspace(static_cast<unsigned char>(ch))) {
      if (!flush()) return false;
    } else {
      tok += ch;
    }
  }
  return flush();
}

}  // namespace run_cli
