#pragma once
// Writes a safetensors file (the format safetensors.hpp reads: an 8-byte
// little-endian header length, the JSON header with each tensor's dtype,
// shape and data_offsets, padded with spaces to 8 bytes, then the data),
// from fp32 host tensors stored as F32, BF16 or F16 (round to nearest even).
// A save_pretrained folder made atomically: save_folder_atomic writes every
// file into a fresh sibling directory, then swaps it with the target in one
// rename (renameat2 RENAME_EXCHANGE where the target exists), so that an
// interrupted save leaves the old folder or the new one, never half of one.
//
//   std::vector<io::WriteTensor> t = {{"w", "BF16", {2, 3}, data}};
//   TL_RETURN_IF_ERROR(io::write_safetensors(path, t));
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/status.hpp>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

namespace tokenless::io {

struct WriteTensor {
  std::string name;
  std::string dtype;  // "F32", "BF16" or "F16"
  std::vector<std::int64_t> shape;
  const float* data = nullptr;
};

inline Status write_safetensors(const std::string& path, const std::vector<WriteTensor>& tensors,
                                const std::map<std::string, std::string>& metadata = {{"format", "pt"}}) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  std::vector<std::uint64_t> sizes;
  for (const auto& t : tensors) {
    if (t.dtype != "F32" && t.dtype != "BF16" && t.dtype != "F16") {
      return Status::error(StatusCode::unsupported, "%s: tensor '%s' as %s (F32, BF16, F16)", path.c_str(),
                           t.name.c_str(), t.dtype.c_str());
    }
    std::uint64_t n = 1;
    for (auto d : t.shape) n *= static_cast<std::uint64_t>(d);
    if (n > 0 && !t.data) return Status::error(StatusCode::null_pointer, "%s: tensor '%s' has no data", path.c_str(), t.name.c_str());
    const std::uint64_t bytes = n * (t.dtype == "F32" ? 4 : 2);
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    sizes.push_back(n);
    offset += bytes;
  }
  std::string text = header.dump();
  while (text.size() % 8) text += ' ';
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return Status::error(StatusCode::invalid_argument, "%s: cannot write: %s", path.c_str(), std::strerror(errno));
  const std::uint64_t len = text.size();
  unsigned char le[8];
  for (int i = 0; i < 8; ++i) le[i] = static_cast<unsigned char>(len >> (8 * i));
  f.write(reinterpret_cast<const char*>(le), 8);
  f.write(text.data(), static_cast<std::streamsize>(text.size()));
  std::vector<unsigned char> buf;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    const std::uint64_t n = sizes[i];
    if (t.dtype == "F32") {
      f.write(reinterpret_cast<const char*>(t.data), static_cast<std::streamsize>(n * 4));
      continue;
    }
    buf.resize(static_cast<std::size_t>(n * 2));
    for (std::uint64_t e = 0; e < n; ++e) {
      std::uint16_t bits;
      if (t.dtype == "BF16") {
        const __nv_bfloat16 h = from_float<__nv_bfloat16>(t.data[e]);
        std::memcpy(&bits, &h, 2);
      } else {
        const __half h = from_float<__half>(t.data[e]);
        std::memcpy(&bits, &h, 2);
      }
      buf[2 * e] = static_cast<unsigned char>(bits & 0xff);
      buf[2 * e + 1] = static_cast<unsigned char>(bits >> 8);
    }
    f.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(buf.size()));
  }
  f.flush();
  if (!f) return Status::error(StatusCode::invalid_argument, "%s: write failed: %s", path.c_str(), std::strerror(errno));
  return Status::ok();
}

// Can a folder be saved at `dir`: its parent exists and is writable, and dir
// is a directory or absent. Checked before a run's first step.
inline Status check_save_target(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p = fs::absolute(fs::path(dir), ec);
  if (ec || dir.empty()) return Status::error(StatusCode::invalid_argument, "--save '%s': not a path", dir.c_str());
  const fs::path parent = p.parent_path();
  if (!fs::is_directory(parent, ec)) {
    return Status::error(StatusCode::invalid_argument, "--save %s: the directory %s does not exist", dir.c_str(),
                         parent.c_str());
  }
  if (::access(parent.c_str(), W_OK | X_OK) != 0) {
    return Status::error(StatusCode::invalid_argument, "--save %s: %s is not writable", dir.c_str(), parent.c_str());
  }
  if (fs::exists(p, ec) && !fs::is_directory(p, ec)) {
    return Status::error(StatusCode::invalid_argument, "--save %s: exists and is not a directory", dir.c_str());
  }
  return Status::ok();
}

// write(tmp) fills a fresh sibling directory; it then replaces `dir` whole.
inline Status save_folder_atomic(const std::string& dir, const std::function<Status(const std::string&)>& write) {
  namespace fs = std::filesystem;
  TL_RETURN_IF_ERROR(check_save_target(dir));
  std::error_code ec;
  const fs::path target = fs::absolute(fs::path(dir), ec).lexically_normal();
  const fs::path clean = target.filename().empty() ? target.parent_path() : target;
  std::random_device rd;
  const fs::path tmp = clean.parent_path() / ("." + clean.filename().string() + ".tmp-" + std::to_string(rd()));
  if (!fs::create_directory(tmp, ec)) {
    return Status::error(StatusCode::invalid_argument, "--save %s: cannot create %s: %s", dir.c_str(), tmp.c_str(),
                         ec.message().c_str());
  }
  Status s = write(tmp.string());
  if (s.is_ok()) {
    // Every file reaches the disk before the rename makes the folder visible.
    for (const auto& e : fs::directory_iterator(tmp, ec)) {
      const int fd = ::open(e.path().c_str(), O_RDONLY);
      if (fd >= 0) {
        ::fsync(fd);
        ::close(fd);
      }
    }
    if (fs::exists(clean, ec)) {
      if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, clean.c_str(), RENAME_EXCHANGE) != 0) {
        s = Status::error(StatusCode::invalid_argument, "--save %s: cannot replace it: %s", dir.c_str(),
                          std::strerror(errno));
      }
    } else if (::rename(tmp.c_str(), clean.c_str()) != 0) {
      s = Status::error(StatusCode::invalid_argument, "--save %s: cannot rename into place: %s", dir.c_str(),
                        std::strerror(errno));
    }
  }
  fs::remove_all(tmp, ec);  // the old folder after an exchange, or the partial one after a failure
  return s;
}

}  // namespace tokenless::io
