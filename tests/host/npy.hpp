#pragma once
// The host tier's fixture readers: a file's bytes, and a .npy of float32 or
// float64 (C order) as double.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace tlt {

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline std::vector<double> read_npy(const std::string& path) {
  const std::string b = slurp(path);
  REQUIRE(b.size() > 10);
  REQUIRE(b.compare(1, 5, "NUMPY") == 0);
  const std::size_t header = static_cast<unsigned char>(b[8]) | static_cast<std::size_t>(static_cast<unsigned char>(b[9])) << 8;
  const bool f8 = b.find("'<f8'") != std::string::npos;
  REQUIRE((f8 || b.find("'<f4'") != std::string::npos));
  const std::size_t size = f8 ? 8 : 4, count = (b.size() - 10 - header) / size;
  std::vector<double> v(count);
  for (std::size_t i = 0; i < count; ++i) {
    if (f8) {
      std::memcpy(&v[i], b.data() + 10 + header + i * 8, 8);
    } else {
      float f;
      std::memcpy(&f, b.data() + 10 + header + i * 4, 4);
      v[i] = f;
    }
  }
  return v;
}

}  // namespace tlt
