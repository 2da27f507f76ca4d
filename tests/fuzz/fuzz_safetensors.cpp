// libFuzzer target: the safetensors parser on arbitrary bytes. Every input
// must parse or get a Status; what parses must lie inside the input, and
// converting every float tensor must read only its own bytes (ASan checks).
//   bash tests/fuzz/run_fuzz.sh BUILD_DIR [RUNS]   (tests/fuzz/README.md)
#include <tokenless/io/safetensors.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  tokenless::io::SafetensorsFile f;
  if (!tokenless::io::SafetensorsFile::parse(data, size, &f)) return 0;
  for (const auto& t : f.tensors()) {
    if (t.data < data || t.data + t.bytes > data + size) std::abort();
    if (t.type == tokenless::io::TensorType::kOther || t.numel() > (1 << 20)) continue;
    std::vector<float> out(static_cast<std::size_t>(t.numel()));
    if (!tokenless::io::convert(t, out.data())) std::abort();
  }
  return 0;
}
