// The safetensors reader: values of every float dtype, metadata, sharded
// checkpoints through the index, messages that name a missing tensor or a
// wrong shape, and corrupt files (every truncation, bad JSON, wrong types,
// offsets outside the file, overflowing shapes) refused with a Status.
// tests/fuzz/ fuzzes the same parser with libFuzzer.
#include "../support/safetensors_writer.hpp"
#include "require_ok.hpp"

#include <tokenless/io/safetensors.hpp>

#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace io = tokenless::io;
using tokenless::StatusCode;


namespace {

std::vector<tlt::RawTensor> sample_tensors() {
  const std::vector<float> f32{1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-3f};
  const std::vector<std::uint16_t> bf16{0x3fc0, 0xc000, 0x7f80};  // 1.5, -2, +inf
  const std::vector<std::uint16_t> f16{0x3e00, 0xc000, 0x3555};   // 1.5, -2, 0.333...
  const std::vector<std::int64_t> i64{7, -8};
  return {{"model.embed.weight", "F32", {2, 3}, tlt::bytes_of_values(f32)},
          {"model.norm.weight", "BF16", {3}, tlt::bytes_of_values(bf16)},
          {"lm_head.weight", "F16", {3, 1}, tlt::bytes_of_values(f16)},
          {"position_ids", "I64", {2}, tlt::bytes_of_values(i64)},
          {"empty", "F32", {0, 4}, {}}};
}

std::string temp_dir(const char* tag) {
  const auto d = std::filesystem::temp_directory_path() /
                 (std::string("tokenless_io_") + tag + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d.string();
}

}  // namespace

TEST_CASE("io: a safetensors file's tensors, values and metadata") {
  const auto bytes = tlt::safetensors_bytes(sample_tensors(), {{"format", "pt"}});
  io::SafetensorsFile f;
  REQUIRE_OK(io::SafetensorsFile::parse(bytes.data(), bytes.size(), &f));
  CHECK(f.tensors().size() == 5);
  CHECK(f.metadata().at("format") == "pt");
  const io::TensorInfo* e = f.find("model.embed.weight");
  REQUIRE(e);
  CHECK(e->type == io::TensorType::kF32);
  CHECK(e->shape == std::vector<std::int64_t>{2, 3});
  std::vector<float> v(6);
  REQUIRE_OK(io::convert(*e, v.data()));
  CHECK(v == std::vector<float>{1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-3f});
  std::vector<float> b(3), h(3);
  REQUIRE_OK(io::convert(*f.find("model.norm.weight"), b.data()));
  CHECK(b[0] == 1.5f);
  CHECK(b[1] == -2.0f);
  CHECK(std::isinf(b[2]));
  REQUIRE_OK(io::convert(*f.find("lm_head.weight"), h.data()));
  CHECK(h[0] == 1.5f);
  CHECK(h[1] == -2.0f);
  CHECK(h[2] == doctest::Approx(1.0 / 3).epsilon(1e-3));
  // To bf16 storage: one rounding of each value.
  std::vector<__nv_bfloat16> as_bf16(6);
  REQUIRE_OK(io::convert(*e, as_bf16.data()));
  CHECK(tokenless::to_float(as_bf16[2]) == 3.25f);
  // An integer tensor is listed but not converted, with a message naming it.
  const auto s = io::convert(*f.find("position_ids"), v.data());
  CHECK(s.code() == StatusCode::unsupported);
  CHECK(std::string(s.message()).find("position_ids") != std::string::npos);
  CHECK(f.find("empty")->numel() == 0);
  CHECK(f.find("nope") == nullptr);
}

TEST_CASE("io: checkpoints, single-file and sharded, name what is missing or misshapen") {
  const auto ts = sample_tensors();
  const std::string one = temp_dir("one");
  tlt::write_file(one + "/model.safetensors", tlt::safetensors_bytes(ts));
  io::Checkpoint c;
  REQUIRE_OK(io::Checkpoint::open(one, &c));
  CHECK(c.tensors().size() == 5);
  const io::TensorInfo* t = nullptr;
  REQUIRE_OK(c.get("model.embed.weight", {2, 3}, &t));
  auto s = c.get("model.embed.weight", {3, 2}, &t);
  CHECK(s.code() == StatusCode::shape_mismatch);
  CHECK(std::string(s.message()).find("model.embed.weight") != std::string::npos);
  CHECK(std::string(s.message()).find("[2, 3]") != std::string::npos);
  s = c.get("model.layers.0.mlp.up_proj.weight", {1}, &t);
  CHECK(std::string(s.message()).find("missing tensor 'model.layers.0.mlp.up_proj.weight'") != std::string::npos);

  // Two shards and an index, as save_pretrained writes them.
  const std::string sh = temp_dir("sharded");
  tlt::write_file(sh + "/model-00001-of-00002.safetensors", tlt::safetensors_bytes({ts[0], ts[1]}));
  tlt::write_file(sh + "/model-00002-of-00002.safetensors", tlt::safetensors_bytes({ts[2]}));
  const nlohmann::json index = {{"metadata", {{"total_size", 42}}},
                                {"weight_map",
                                 {{"model.embed.weight", "model-00001-of-00002.safetensors"},
                                  {"model.norm.weight", "model-00001-of-00002.safetensors"},
                                  {"lm_head.weight", "model-00002-of-00002.safetensors"}}}};
  tlt::write_file(sh + "/model.safetensors.index.json", index.dump());
  REQUIRE_OK(io::Checkpoint::open(sh, &c));
  REQUIRE_OK(c.get("lm_head.weight", {3, 1}, &t));
  std::vector<float> v(3);
  REQUIRE_OK(io::convert(*t, v.data()));
  CHECK(v[0] == 1.5f);
  // An index that points at a shard without the tensor, or out of the folder.
  nlohmann::json bad = index;
  bad["weight_map"]["lm_head.weight"] = "model-00001-of-00002.safetensors";
  tlt::write_file(sh + "/model.safetensors.index.json", bad.dump());
  s = io::Checkpoint::open(sh, &c);
  CHECK(s.code() == StatusCode::invalid_argument);
  CHECK(std::string(s.message()).find("lm_head.weight") != std::string::npos);
  bad["weight_map"]["lm_head.weight"] = "../model.safetensors";
  tlt::write_file(sh + "/model.safetensors.index.json", bad.dump());
  CHECK(std::string(io::Checkpoint::open(sh, &c).message()).find("outside the folder") != std::string::npos);
  tlt::write_file(sh + "/model.safetensors.index.json", std::string("{\"weight_map\": 3"));
  CHECK(io::Checkpoint::open(sh, &c).code() == StatusCode::invalid_argument);
  // No checkpoint at all.
  s = io::Checkpoint::open(temp_dir("none"), &c);
  CHECK(std::string(s.message()).find("model.safetensors") != std::string::npos);
  std::filesystem::remove_all(one);
  std::filesystem::remove_all(sh);
}

TEST_CASE("io: every truncation of a file is refused, never read past") {
  const auto bytes = tlt::safetensors_bytes(sample_tensors());
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    CAPTURE(n);
    // A fresh copy of exactly n bytes, so that a read past it is a heap overflow (ASan) or garbage.
    std::vector<unsigned char> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    io::SafetensorsFile f;
    CHECK(io::SafetensorsFile::parse(cut.data(), cut.size(), &f).code() == StatusCode::invalid_argument);
  }
}

TEST_CASE("io: corrupt headers get a clear Status") {
  auto with_header = [](const std::string& h, std::size_t data_bytes = 16) {
    std::vector<unsigned char> out(8);
    for (int i = 0; i < 8; ++i) out[i] = static_cast<unsigned char>(static_cast<std::uint64_t>(h.size()) >> (8 * i));
    out.insert(out.end(), h.begin(), h.end());
    out.resize(out.size() + data_bytes, 0);
    return out;
  };
  struct Case {
    const char* header;
    const char* needle;
  };
  const Case cases[] = {
      {"not json", "not valid JSON"},
      {"[1, 2]", "not a JSON object"},
      {R"({"a": 3})", "'a': its entry is not an object"},
      {R"({"a": {"shape": [2], "data_offsets": [0, 8]}})", "no \"dtype\""},
      {R"({"a": {"dtype": "F32", "data_offsets": [0, 8]}})", "no \"shape\""},
      {R"({"a": {"dtype": "F32", "shape": [2]}})", "no \"data_offsets\""},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}})", "no \"data_offsets\""},
      {R"({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}})", "unknown dtype"},
      {R"({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", "shape entry"},
      {R"({"a": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}})", "shape entry"},
      {R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296, 4294967296], "data_offsets": [0, 8]}})",
       "overflows"},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", "outside the file"},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 24]}})", "outside the file"},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 12]}})", "not shape x dtype size"},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [-1, 8]}})", "data_offsets"},
      {R"({"__metadata__": {"k": 1}})", "must be strings"},
      {R"({"__metadata__": []})", "not an object"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.header);
    const auto b = with_header(c.header);
    io::SafetensorsFile f;
    const auto s = io::SafetensorsFile::parse(b.data(), b.size(), &f);
    CHECK(s.code() == StatusCode::invalid_argument);
    CHECK(std::string(s.message()).find(c.needle) != std::string::npos);
  }
  // A header length past the file, and past the format's limit.
  std::vector<unsigned char> b(16, 0);
  b[0] = 100;
  io::SafetensorsFile f;
  CHECK(std::string(io::SafetensorsFile::parse(b.data(), b.size(), &f).message()).find("past the end") !=
        std::string::npos);
  b[0] = 0;
  b[7] = 1;
  CHECK(std::string(io::SafetensorsFile::parse(b.data(), b.size(), &f).message()).find("100 MB") != std::string::npos);
}

TEST_CASE("io: random byte flips never crash the parser") {
  const auto bytes = tlt::safetensors_bytes(sample_tensors(), {{"format", "pt"}});
  std::mt19937_64 rng(20261202);
  for (int trial = 0; trial < 20000; ++trial) {
    std::vector<unsigned char> m = bytes;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < flips; ++i) m[rng() % m.size()] ^= static_cast<unsigned char>(1u << (rng() % 8));
    io::SafetensorsFile f;
    const auto s = io::SafetensorsFile::parse(m.data(), m.size(), &f);
    if (!s) continue;
    for (const auto& t : f.tensors()) {  // whatever parsed lies inside the buffer
      CHECK(t.data >= m.data());
      CHECK(t.data + t.bytes <= m.data() + m.size());
    }
  }
}
