#pragma once
// A safetensors reader: one file, or a checkpoint folder of shards.
//
// The format (Hugging Face's): an 8-byte little-endian header length N, N
// bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]},
// "__metadata__": {...}}, then the tensors' bytes, offsets counted from the
// end of the header. The JSON is parsed by nlohmann-json (Debian's
// nlohmann-json3-dev: link nlohmann_json::nlohmann_json), without exceptions;
// every field's type, every shape product and every offset is checked
// against the file's size before anything is read, so a corrupt or
// truncated file gets a Status that names the tensor and the problem, never
// a crash (tests/fuzz/ fuzzes parse() with libFuzzer).
//
//   SafetensorsFile::open(path)   maps the file (read-only, private) and parses it
//   SafetensorsFile::parse(p, n)  parses bytes already in memory (not copied)
//   Checkpoint::open(dir)         model.safetensors, or the shards named by
//                                 model.safetensors.index.json's weight_map
//   convert(tensor, T* out)       F32/F16/BF16 to float, __half or __nv_bfloat16 (host)
//
// Host code only, no CUDA: a model loader uploads what it converts.
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/status.hpp>

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tokenless::io {

// The format is little-endian; so are the hosts this reads on (x86-64, Arm).
static_assert(std::endian::native == std::endian::little, "the safetensors reader assumes a little-endian host");

// The dtypes a model's floats come in; other safetensors dtypes are listed
// (kOther, with their name) but cannot be converted.
enum class TensorType : std::uint8_t { kF32, kF16, kBF16, kOther };

struct TensorInfo {
  std::string name;
  TensorType type = TensorType::kOther;
  std::string dtype;  // as the file spells it ("BF16", "I64", ...)
  std::vector<std::int64_t> shape;
  const unsigned char* data = nullptr;  // into the mapped file
  std::size_t bytes = 0;
  const std::string* file = nullptr;    // the file it lives in, for messages

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (std::int64_t d : shape) n *= d;
    return n;
  }
};

namespace detail {

// Bytes per element of a safetensors dtype; 0 for a name the format does not have.
inline std::size_t dtype_bytes(std::string_view d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "I8" || d == "U8" || d == "BOOL" || d == "F8_E4M3" || d == "F8_E5M2") return 1;
  return 0;
}
inline TensorType type_of(std::string_view d) {
  if (d == "F32") return TensorType::kF32;
  if (d == "F16") return TensorType::kF16;
  if (d == "BF16") return TensorType::kBF16;
  return TensorType::kOther;
}

// A read-only private mapping, unmapped when the last owner goes.
class Mapping {
 public:
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (base_ && base_ != MAP_FAILED) ::munmap(base_, size_);
  }
  static Status map(const std::string& path, std::shared_ptr<Mapping>* out) {
    auto m = std::make_shared<Mapping>();
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::error(StatusCode::invalid_argument, "%s: cannot open: %s", path.c_str(), std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return Status::error(StatusCode::invalid_argument, "%s: not a regular file", path.c_str());
    }
    m->size_ = static_cast<std::size_t>(st.st_size);
    if (m->size_ > 0) {
      m->base_ = ::mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (m->base_ == MAP_FAILED) {
        const int e = errno;
        ::close(fd);
        return Status::error(StatusCode::invalid_argument, "%s: cannot map: %s", path.c_str(), std::strerror(e));
      }
    }
    ::close(fd);  // the mapping keeps the file
    *out = std::move(m);
    return Status::ok();
  }
  const unsigned char* data() const { return static_cast<const unsigned char*>(base_ == MAP_FAILED ? nullptr : base_); }
  std::size_t size() const { return size_; }

 private:
  void* base_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace detail

class SafetensorsFile {
 public:
  // The header may be at most this long (the format's own limit).
  static constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

  static Status open(const std::string& path, SafetensorsFile* out) {
    std::shared_ptr<detail::Mapping> m;
    TL_RETURN_IF_ERROR(detail::Mapping::map(path, &m));
    SafetensorsFile f;
    f.path_ = std::make_shared<std::string>(path);
    TL_RETURN_IF_ERROR(f.parse_into(m->data(), m->size()));
    f.mapping_ = std::move(m);
    *out = std::move(f);
    return Status::ok();
  }
  // Parses `size` bytes at `p`, which must outlive the returned file.
  static Status parse(const void* p, std::size_t size, SafetensorsFile* out, const std::string& name = "<memory>") {
    SafetensorsFile f;
    f.path_ = std::make_shared<std::string>(name);
    TL_RETURN_IF_ERROR(f.parse_into(static_cast<const unsigned char*>(p), size));
    *out = std::move(f);
    return Status::ok();
  }

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(std::string_view name) const {
    const auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &tensors_[it->second];
  }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return *path_; }

 private:
  Status fail(const char* what, const std::string& tensor = {}) const {
    if (tensor.empty()) return Status::error(StatusCode::invalid_argument, "%s: %s", path_->c_str(), what);
    return Status::error(StatusCode::invalid_argument, "%s: tensor '%s': %s", path_->c_str(), tensor.c_str(), what);
  }

  Status parse_into(const unsigned char* p, std::size_t size) {
    if (size < 8 || !p) return fail("truncated: shorter than the 8-byte header length");
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = n << 8 | p[i];  // little-endian
    if (n > kMaxHeaderBytes) return fail("header length over the format's 100 MB limit");
    if (n > size - 8) return fail("truncated: the header runs past the end of the file");
    const unsigned char* data = p + 8 + n;
    const std::size_t data_bytes = size - 8 - static_cast<std::size_t>(n);
    using nlohmann::json;
    const json h = json::parse(p + 8, p + 8 + n, nullptr, /*allow_exceptions=*/false);
    if (h.is_discarded()) return fail("the header is not valid JSON");
    if (!h.is_object()) return fail("the header is not a JSON object");
    for (const auto& [name, v] : h.items()) {
      if (name == "__metadata__") {
        if (!v.is_object()) return fail("__metadata__ is not an object");
        for (const auto& [k, s] : v.items()) {
          if (!s.is_string()) return fail("__metadata__ values must be strings");
          metadata_[k] = s.get_ref<const std::string&>();
        }
        continue;
      }
      if (!v.is_object()) return fail("its entry is not an object", name);
      const auto dt = v.find("dtype"), sh = v.find("shape"), off = v.find("data_offsets");
      if (dt == v.end() || !dt->is_string()) return fail("no \"dtype\" string", name);
      if (sh == v.end() || !sh->is_array()) return fail("no \"shape\" array", name);
      if (off == v.end() || !off->is_array() || off->size() != 2) return fail("no \"data_offsets\" pair", name);
      TensorInfo t;
      t.name = name;
      t.dtype = dt->get_ref<const std::string&>();
      t.type = detail::type_of(t.dtype);
      t.file = path_.get();
      const std::size_t elem = detail::dtype_bytes(t.dtype);
      if (elem == 0) return fail("an unknown dtype", name);
      // The element count, checked against overflow before it multiplies.
      std::uint64_t count = 1;
      for (const auto& d : *sh) {
        if (!d.is_number_unsigned()) return fail("a shape entry that is not a non-negative integer", name);
        const std::uint64_t e = d.get<std::uint64_t>();
        if (e > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) ||
            (e != 0 && count > std::numeric_limits<std::uint64_t>::max() / e))
          return fail("a shape whose element count overflows", name);
        count *= e;
        t.shape.push_back(static_cast<std::int64_t>(e));
      }
      if (count > std::numeric_limits<std::uint64_t>::max() / elem) return fail("a byte size that overflows", name);
      const auto& b = (*off)[0];
      const auto& e = (*off)[1];
      if (!b.is_number_unsigned() || !e.is_number_unsigned()) return fail("data_offsets that are not non-negative integers", name);
      const std::uint64_t begin = b.get<std::uint64_t>(), end = e.get<std::uint64_t>();
      if (begin > end || end > data_bytes) return fail("data_offsets outside the file (truncated?)", name);
      if (end - begin != count * elem) return fail("data_offsets whose length is not shape x dtype size", name);
      t.data = data + begin;
      t.bytes = static_cast<std::size_t>(end - begin);
      index_[name] = tensors_.size();
      tensors_.push_back(std::move(t));
    }
    return Status::ok();
  }

  std::shared_ptr<std::string> path_;
  std::shared_ptr<detail::Mapping> mapping_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint folder as save_pretrained writes it (and the Hub serves it):
// model.safetensors, or shards listed by model.safetensors.index.json.
class Checkpoint {
 public:
  static Status open(const std::string& dir, Checkpoint* out) {
    Checkpoint c;
    const std::string index = dir + "/model.safetensors.index.json";
    std::string text;
    if (read_text(index, &text)) {
      using nlohmann::json;
      const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.is_object()) {
        return Status::error(StatusCode::invalid_argument, "%s: not a JSON object", index.c_str());
      }
      const auto wm = j.find("weight_map");
      if (wm == j.end() || !wm->is_object()) {
        return Status::error(StatusCode::invalid_argument, "%s: no \"weight_map\" object", index.c_str());
      }
      std::map<std::string, std::size_t> shard_of_file;
      for (const auto& [name, f] : wm->items()) {
        if (!f.is_string()) {
          return Status::error(StatusCode::invalid_argument, "%s: weight_map['%s'] is not a file name", index.c_str(),
                               name.c_str());
        }
        const std::string& file = f.get_ref<const std::string&>();
        if (file.find('/') != std::string::npos || file == "." || file == "..") {
          return Status::error(StatusCode::invalid_argument, "%s: weight_map['%s'] names a file outside the folder: %s",
                               index.c_str(), name.c_str(), file.c_str());
        }
        if (!shard_of_file.count(file)) {
          SafetensorsFile s;
          TL_RETURN_IF_ERROR(SafetensorsFile::open(dir + "/" + file, &s));
          shard_of_file[file] = c.shards_.size();
          c.shards_.push_back(std::move(s));
        }
        const TensorInfo* t = c.shards_[shard_of_file[file]].find(name);
        if (!t) {
          return Status::error(StatusCode::invalid_argument, "%s: the index puts tensor '%s' in %s, which lacks it",
                               index.c_str(), name.c_str(), file.c_str());
        }
        c.tensors_[name] = t;
      }
    } else {
      SafetensorsFile s;
      TL_RETURN_IF_ERROR(SafetensorsFile::open(dir + "/model.safetensors", &s));
      c.shards_.push_back(std::move(s));
      for (const TensorInfo& t : c.shards_[0].tensors()) c.tensors_[t.name] = &t;
    }
    *out = std::move(c);
    return Status::ok();
  }

  const TensorInfo* find(std::string_view name) const {
    const auto it = tensors_.find(std::string(name));
    return it == tensors_.end() ? nullptr : it->second;
  }
  // The tensor `name` with exactly `shape`: a missing tensor or another
  // shape gets a message that names both.
  Status get(std::string_view name, std::initializer_list<std::int64_t> shape, const TensorInfo** out) const {
    const TensorInfo* t = find(name);
    if (!t) return Status::error(StatusCode::invalid_argument, "checkpoint: missing tensor '%.*s'",
                                 static_cast<int>(name.size()), name.data());
    if (!std::equal(t->shape.begin(), t->shape.end(), shape.begin(), shape.end())) {
      return Status::error(StatusCode::shape_mismatch, "checkpoint: tensor '%s' has shape %s, expected %s",
                           t->name.c_str(), shape_string(t->shape).c_str(),
                           shape_string(std::vector<std::int64_t>(shape)).c_str());
    }
    *out = t;
    return Status::ok();
  }
  const std::map<std::string, const TensorInfo*>& tensors() const { return tensors_; }

  static std::string shape_string(const std::vector<std::int64_t>& s) {
    std::string o = "[";
    for (std::size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
    return o + "]";
  }
  // The whole of a small text file (config.json, the index); false when absent.
  static bool read_text(const std::string& path, std::string* out) {
    std::shared_ptr<detail::Mapping> m;
    if (!detail::Mapping::map(path, &m)) return false;
    out->assign(reinterpret_cast<const char*>(m->data()), m->size());
    return true;
  }

 private:
  std::vector<SafetensorsFile> shards_;  // SafetensorsFile is cheap to move: tensors point into the mapping
  std::map<std::string, const TensorInfo*> tensors_;
};

// The tensor's elements as T (float, __half or __nv_bfloat16), on the host:
// the value of each element rounded once to T.
template <class T>
Status convert(const TensorInfo& t, T* out) {
  const std::int64_t n = t.numel();
  switch (t.type) {
    case TensorType::kF32:
      for (std::int64_t i = 0; i < n; ++i) {
        float v;
        std::memcpy(&v, t.data + 4 * i, 4);
        out[i] = from_float<T>(v);
      }
      return Status::ok();
    case TensorType::kBF16:
      for (std::int64_t i = 0; i < n; ++i) {
        std::uint32_t bits = static_cast<std::uint32_t>(t.data[2 * i]) | static_cast<std::uint32_t>(t.data[2 * i + 1]) << 8;
        bits <<= 16;
        float v;
        std::memcpy(&v, &bits, 4);
        out[i] = from_float<T>(v);
      }
      return Status::ok();
    case TensorType::kF16:
      for (std::int64_t i = 0; i < n; ++i) {
        __half h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = from_float<T>(to_float(h));
      }
      return Status::ok();
    case TensorType::kOther: break;
  }
  return Status::error(StatusCode::unsupported, "%s: tensor '%s': dtype %s is not F32, F16 or BF16",
                       t.file ? t.file->c_str() : "?", t.name.c_str(), t.dtype.c_str());
}

}  // namespace tokenless::io
