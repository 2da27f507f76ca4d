#pragma once
// The examples' GPU builds hand `--device emu` to the CPU executor build
// beside them (tokenless-patch-cpu, tokenless-run-cpu, tokenless-train):
// the same command line, run by exec.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>

namespace tokenless_examples {

// This executable's own path (argv[0] may be a name found on PATH, or a link).
inline std::string self_path(const char* argv0) {
  std::error_code ec;
  const auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(argv0) : p.string();
}

// Runs `sibling` from this executable's folder with argv; returns (only when
// the exec failed) the path it tried.
inline std::string exec_sibling(char** argv, const char* sibling) {
  const std::string self = self_path(argv[0]);
  const std::string path = self.substr(0, self.find_last_of('/') + 1) + (sibling ? sibling : "?");
  execv(path.c_str(), argv);
  return path;
}

}  // namespace tokenless_examples
