#pragma once
// tokenless-patch: patches a file's bytes the way BLT does, and shows the
// patches (text, JSON or an SVG plot).
//
// FILE's bytes form one sequence, with ids = byte + 4 and no BOS added.
// Entropies come from --entropies (raw little-endian float32, one per byte,
// e.g. BLT's own entropy model's) or from a byte n-gram model built from
// --train FILE or from the input itself; only the entropy modes build it.
//
// Where it runs: on the GPU when there is one (--device gpu), otherwise on
// the CPU through the plain C++ path, the host references (--device cpu). The
// CPU SIMT executor (--device emu) runs the kernels themselves, slowly: it is
// for checking and debugging them, not for users.
#include "../handover.hpp"
#include <tokenless/tokenless.cuh>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace patch_cli {

namespace pt = tokenless::patcher;

inline const char* kUsage =
    "usage: tokenless-patch [--mode entropy|monotonic|topk|static|space|byte] [--threshold T]\n"
    "                       [--threshold-add A] [--patch-size S] [--max-patch-length M]\n"
    "                       [--target-patch-size X] [--entropies FILE] [--train FILE]\n"
    "                       [--include-next-token] [--format text|json] [--plot OUT.svg]\n"
    "                       [--plot-range A:B] [--device auto|gpu|cpu|emu] FILE\n"
    "  Without --threshold, entropy mode calibrates the threshold so that patches average\n"
    "  --target-patch-size bytes (default 4.5). topk is BLT's threshold=None: the\n"
    "  n / patch-size - 2 bytes of highest entropy start patches. --plot draws bytes\n"
    "  [A, B) (default 0:2000). --device auto uses the GPU when there is one, else the CPU;\n"
    "  emu runs the kernels on the CPU SIMT executor (slow; for debugging kernels).\n";

struct Options {
  std::string mode = "entropy";
  std::optional<float> threshold;
  std::optional<float> threshold_add;
  int patch_size = 4;
  int max_patch_length = 0;
  float target_patch_size = 4.5f;
  std::string entropies_file, train_file, plot_file, format = "text", device = "auto", file;
  std::int64_t plot_begin = 0, plot_end = 2000;
  bool include_next_token = false;
  std::vector<std::string> given;  // the flags given, for the warnings about flags that do not apply
  bool has(const char* flag) const { return std::find(given.begin(), given.end(), flag) != given.end(); }
};

// Reads a whole file; on failure `why` says what went wrong (a directory,
// a missing file, a read error), and nothing throws.
inline bool read_file(const std::string& path, std::vector<std::uint8_t>& out, std::string& why) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    why = "it is a directory";
    return false;
  }
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) {
    why = std::strerror(errno);
    return false;
  }
  out.clear();
  unsigned char chunk[1 << 16];
  std::size_t got = 0;
  while ((got = std::fread(chunk, 1, sizeof chunk, f)) > 0) out.insert(out.end(), chunk, chunk + got);
  const bool failed = std::ferror(f) != 0;
  if (failed) why = std::strerror(errno);
  std::fclose(f);
  return !failed;
}

// Integers are parsed as integers: no fraction, no exponent, in range.
inline bool parse_int(const char* s, long long lo, long long hi, long long& v, std::string& why) {
  char* end = nullptr;
  errno = 0;
  v = std::strtoll(s, &end, 10);
  if (end == s || *end != '\0') {
    why = "an integer";
    return false;
  }
  if (errno == ERANGE || v < lo || v > hi) {
    why = "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
    return false;
  }
  return true;
}

// Returns 0 on success, else the exit code; messages go to stderr.
inline int parse(int argc, char** argv, Options& o) {
  auto need = [&](int& i) -> const char* {
    if (i + 1 >= argc) {
      std::fprintf(stderr, "tokenless-patch: %s needs a value\n%s", argv[i], kUsage);
      return nullptr;
    }
    return argv[++i];
  };
  auto number = [](const char* s, float& v) {
    char* end = nullptr;
    v = std::strtof(s, &end);
    return end && *end == '\0' && end != s;
  };
  auto integer = [&](const std::string& flag, const char* s, long long lo, long long hi, long long& v) {
    std::string why;
    if (parse_int(s, lo, hi, v, why)) return true;
    std::fprintf(stderr, "tokenless-patch: %s expects %s, got '%s'\n", flag.c_str(), why.c_str(), s);
    return false;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const char* v = nullptr;
    float x = 0;
    if (a.size() > 2 && a[0] == '-' && a[1] == '-') o.given.push_back(a);
    if (a == "--help" || a == "-h") {
      std::printf("%s", kUsage);
      return -1;
    } else if (a == "--include-next-token") {
      o.include_next_token = true;
    } else if (a == "--mode" || a == "--format" || a == "--device" || a == "--entropies" || a == "--train" || a == "--plot") {
      if (!(v = need(i))) return 2;
      (a == "--mode" ? o.mode : a == "--format" ? o.format : a == "--device" ? o.device
       : a == "--entropies" ? o.entropies_file : a == "--train" ? o.train_file : o.plot_file) = v;
    } else if (a == "--patch-size" || a == "--max-patch-length") {
      if (!(v = need(i))) return 2;
      long long k = 0;
      if (!integer(a, v, a == "--patch-size" ? 1 : 0, std::numeric_limits<std::int32_t>::max(), k)) return 2;
      (a == "--patch-size" ? o.patch_size : o.max_patch_length) = static_cast<int>(k);
    } else if (a == "--plot-range") {
      if (!(v = need(i))) return 2;
      const std::string r = v;
      const auto colon = r.find(':');
      long long lo = 0, hi = 0;
      if (colon == std::string::npos || !integer(a, r.substr(0, colon).c_str(), 0, std::numeric_limits<std::int64_t>::max(), lo) ||
          !integer(a, r.substr(colon + 1).c_str(), 0, std::numeric_limits<std::int64_t>::max(), hi) || hi <= lo) {
        std::fprintf(stderr, "tokenless-patch: --plot-range expects A:B with 0 <= A < B, got '%s'\n", v);
        return 2;
      }
      o.plot_begin = lo;
      o.plot_end = hi;
    } else if (a == "--threshold" || a == "--threshold-add" || a == "--target-patch-size") {
      if (!(v = need(i))) return 2;
      if (!number(v, x) || !std::isfinite(x)) {
        std::fprintf(stderr, "tokenless-patch: %s expects a finite number, got '%s'\n", a.c_str(), v);
        return 2;
      }
      if (a == "--threshold") o.threshold = x;
      else if (a == "--threshold-add") o.threshold_add = x;
      else o.target_patch_size = x;
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "tokenless-patch: unknown flag %s\n%s", a.c_str(), kUsage);
      return 2;
    } else if (o.file.empty()) {
      o.file = a;
    } else {
      std::fprintf(stderr, "tokenless-patch: more than one FILE (%s, %s)\n", o.file.c_str(), a.c_str());
      return 2;
    }
  }
  if (o.file.empty()) {
    std::fprintf(stderr, "tokenless-patch: no FILE given\n%s", kUsage);
    return 2;
  }
  const std::string modes[] = {"entropy", "monotonic", "topk", "static", "space", "byte"};
  if (std::find(std::begin(modes), std::end(modes), o.mode) == std::end(modes)) {
    std::fprintf(stderr, "tokenless-patch: unknown mode '%s'\n", o.mode.c_str());
    return 2;
  }
  if (o.format != "text" && o.format != "json") {
    std::fprintf(stderr, "tokenless-patch: --format is text or json, not '%s'\n", o.format.c_str());
    return 2;
  }
  if (o.device != "auto" && o.device != "cpu" && o.device != "gpu" && o.device != "emu") {
    std::fprintf(stderr, "tokenless-patch: --device is auto, gpu, cpu or emu, not '%s'\n", o.device.c_str());
    return 2;
  }
  // Flags that do not apply are said so, not silently ignored.
  auto warn = [&](const char* flag, const char* why) {
    if (o.has(flag)) std::fprintf(stderr, "tokenless-patch: warning: %s is ignored: %s\n", flag, why);
  };
  const bool threshold_mode = o.mode == "entropy" || o.mode == "monotonic";
  const std::string in_mode = "it does not apply to --mode " + o.mode;
  if (!threshold_mode) warn("--threshold", in_mode.c_str());
  if (o.mode != "entropy") warn("--threshold-add", in_mode.c_str());
  if (o.mode != "entropy") warn("--target-patch-size", in_mode.c_str());
  else if (o.threshold) warn("--target-patch-size", "--threshold is given, so nothing is calibrated");
  if (o.mode != "topk" && o.mode != "static") warn("--patch-size", in_mode.c_str());
  const bool uses_entropies = threshold_mode || o.mode == "topk";
  if (!uses_entropies) {
    warn("--entropies", in_mode.c_str());
    warn("--train", in_mode.c_str());
  } else if (!o.entropies_file.empty()) {
    warn("--train", "--entropies gives the entropies, so no model is trained");
  }
  if (o.plot_file.empty()) warn("--plot-range", "there is no --plot");
  return 0;
}

inline bool uses_entropies(const Options& o) { return o.mode == "entropy" || o.mode == "monotonic" || o.mode == "topk"; }

struct Result {
  std::vector<float> entropies;  // empty for the modes that use none
  std::vector<std::int32_t> lengths;
  float threshold = NAN;
  const char* threshold_source = "";
  double ms = 0;
  std::string source;
};

#define PATCH_TRY(expr)                                                    \
  do {                                                                     \
    tokenless::Status s_ = (expr);                                         \
    if (!s_) {                                                             \
      std::fprintf(stderr, "tokenless-patch: %s\n", s_.message());         \
      return 1;                                                            \
    }                                                                      \
  } while (0)

template <class T>
using Buf = tokenless::DeviceBuffer<T>;

// A device buffer of n elements, or an error message and exit code 1.
#define PATCH_BUF(T, name, n) \
  Buf<T> name(n);             \
  PATCH_TRY(name.status())

// ------------------------------------------------------------------ the device path (GPU or executor)
template <class Rule>
int run_rule(const Rule& rule, const Options& o, const std::int32_t* d_cu, const float* d_e, const std::int32_t* d_tok,
             std::int64_t n, Result& r) {
  using Op = pt::Patcher<Rule, float>;
  const std::int64_t n_pos = n + (o.include_next_token ? 1 : 0);
  PATCH_BUF(std::uint8_t, flags, n_pos);
  PATCH_BUF(std::int32_t, ids, n_pos);
  PATCH_BUF(std::int32_t, off, 2);
  PATCH_BUF(std::int32_t, starts, n_pos);
  PATCH_BUF(std::int32_t, lens, n_pos);
  typename Op::Arguments a;
  a.rule = rule;
  a.entropies_in = d_e;
  a.tokens = d_tok;
  a.batch = {d_cu, 1, n};
  a.include_next_token = o.include_next_token;
  a.max_patch_length = o.max_patch_length;
  a.patches = {flags.get(), ids.get(), off.get(), starts.get(), lens.get(), n_pos};
  PATCH_BUF(unsigned char, ws, Op::workspace_size(a));
  PATCH_TRY(Op::run(a, {ws.get(), Op::workspace_size(a)}));
  PATCH_TRY(Op::read_status(a, {ws.get(), Op::workspace_size(a)}));
  std::int32_t count[2];
  PATCH_TRY(off.download(count, 2));
  r.lengths.resize(static_cast<std::size_t>(count[1]));
  PATCH_TRY(lens.download(r.lengths.data(), r.lengths.size()));
  return 0;
}

inline constexpr float kBltThreshold = 1.335442066192627f;  // BLT's default

inline int run_device(const Options& o, const std::vector<std::uint8_t>& bytes, const std::vector<std::uint8_t>& train,
                      const std::vector<float>& given, Result& r) {
  const std::int64_t n = static_cast<std::int64_t>(bytes.size());
  std::vector<std::int32_t> tokens(bytes.size());
  for (std::size_t i = 0; i < bytes.size(); ++i) tokens[i] = bytes[i] + 4;
  const std::vector<std::int32_t> cu = {0, static_cast<std::int32_t>(n)};
  PATCH_BUF(std::uint8_t, d_bytes, bytes.size());
  PATCH_BUF(std::uint8_t, d_train, train.size());
  PATCH_BUF(std::int32_t, d_tok, tokens.size());
  PATCH_BUF(std::int32_t, d_cu, 2);
  PATCH_BUF(float, d_e, bytes.size());
  PATCH_BUF(float, d_theta, 1);
  PATCH_TRY(d_bytes.upload(bytes));
  PATCH_TRY(d_tok.upload(tokens));
  PATCH_TRY(d_cu.upload(cu));
  PATCH_TRY(d_train.upload(train));
  const auto t0 = std::chrono::steady_clock::now();
  if (uses_entropies(o)) {
    if (!given.empty()) {
      PATCH_TRY(d_e.upload(given));
    } else {
      namespace em = tokenless::entropy_model;
      em::NGramEntropy::Arguments m;
      m.train = train.empty() ? d_bytes.get() : d_train.get();
      m.n_train = train.empty() ? n : static_cast<std::int64_t>(train.size());
      m.text = d_bytes.get();
      m.n = n;
      m.entropies = d_e.get();
      PATCH_BUF(unsigned char, ws, em::NGramEntropy::workspace_size(m));
      PATCH_TRY(em::NGramEntropy::run(m, {ws.get(), em::NGramEntropy::workspace_size(m)}));
    }
  }
  if (o.mode == "entropy" || o.mode == "monotonic") {
    if (o.threshold) {
      r.threshold = *o.threshold;
    } else if (o.mode == "monotonic") {
      r.threshold = kBltThreshold;
    } else {
      pt::Calibrate::Arguments c;
      c.entropies = d_e.get();
      c.batch = {d_cu.get(), 1, n};
      c.include_next_token = o.include_next_token;
      c.target_patch_size = o.target_patch_size;
      c.threshold = d_theta.get();
      PATCH_BUF(unsigned char, ws, pt::Calibrate::workspace_size(c));
      PATCH_TRY(pt::Calibrate::run(c, {ws.get(), pt::Calibrate::workspace_size(c)}));
      PATCH_TRY(d_theta.download(&r.threshold, 1));
    }
  }
  int rc = 0;
  if (o.mode == "entropy" && o.threshold_add) rc = run_rule(pt::EntropyCombined{r.threshold, *o.threshold_add}, o, d_cu.get(), d_e.get(), d_tok.get(), n, r);
  else if (o.mode == "entropy") rc = run_rule(pt::EntropyGlobal{r.threshold}, o, d_cu.get(), d_e.get(), d_tok.get(), n, r);
  else if (o.mode == "monotonic") rc = run_rule(pt::EntropyMonotonic{r.threshold}, o, d_cu.get(), d_e.get(), d_tok.get(), n, r);
  else if (o.mode == "topk") rc = run_rule(pt::EntropyTopK{o.patch_size}, o, d_cu.get(), d_e.get(), d_tok.get(), n, r);
  else if (o.mode == "static") rc = run_rule(pt::StaticPatches{o.patch_size}, o, d_cu.get(), d_e.get(), d_tok.get(), n, r);
  else if (o.mode == "space") rc = run_rule(pt::SpacePatches{}, o, d_cu.get(), d_e.get(), d_tok.get(), n, r);
  else rc = run_rule(pt::BytePatches{}, o, d_cu.get(), d_e.get(), d_tok.get(), n, r);
  if (rc) return rc;
  if (uses_entropies(o)) {
    r.entropies.resize(bytes.size());
    PATCH_TRY(d_e.download(r.entropies.data(), r.entropies.size()));
  }
  r.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return 0;
}

// ------------------------------------------------------------------ the CPU path (host references)
inline int run_host(const Options& o, const std::vector<std::uint8_t>& bytes, const std::vector<std::uint8_t>& train,
                    const std::vector<float>& given, Result& r) {
  namespace ref = tokenless::reference;
  const std::int64_t n = static_cast<std::int64_t>(bytes.size());
  const auto t0 = std::chrono::steady_clock::now();
  if (uses_entropies(o)) {
    if (!given.empty()) {
      r.entropies = given;
    } else {
      const auto h = ref::ngram_entropies(train.empty() ? bytes : train, bytes, ref::NGramReferenceConfig{}, train.empty());
      r.entropies.assign(h.begin(), h.end());
    }
  }
  if (o.mode == "entropy" || o.mode == "monotonic") {
    if (o.threshold) r.threshold = *o.threshold;
    else if (o.mode == "monotonic") r.threshold = kBltThreshold;
    else r.threshold = ref::calibrated_threshold(r.entropies, {0, static_cast<std::int32_t>(n)}, o.include_next_token,
                                                 o.target_patch_size);
  }
  std::vector<std::int64_t> lengths;
  if (uses_entropies(o)) {
    ref::BltEntropyOptions e;
    e.include_next_token = o.include_next_token;
    e.max_patch_length = o.max_patch_length;
    e.patch_size = o.patch_size;
    if (o.mode == "topk") e.threshold = std::nullopt;
    else e.threshold = r.threshold;
    if (o.mode == "monotonic") e.mode = ref::EntropyMode::monotonic;
    else if (o.threshold_add) {
      e.mode = ref::EntropyMode::combined;
      e.threshold_add = *o.threshold_add;
    }
    lengths = ref::blt_entropy_patch_lengths(r.entropies, e);
  } else if (o.mode == "static") {
    lengths = ref::blt_static_patch_lengths(n, o.patch_size, o.include_next_token, o.max_patch_length);
  } else if (o.mode == "byte") {
    lengths = ref::split_large(ref::blt_byte_patch_lengths(n, o.include_next_token), o.max_patch_length);
  } else {
    std::vector<std::int32_t> tokens(bytes.size());
    for (std::size_t i = 0; i < bytes.size(); ++i) tokens[i] = bytes[i] + 4;
    lengths = ref::blt_space_patch_lengths(tokens, o.include_next_token, o.max_patch_length);
  }
  r.lengths.assign(lengths.begin(), lengths.end());
  r.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return 0;
}

// ------------------------------------------------------------------ output
inline void print_text(const Options& o, const std::vector<std::uint8_t>& bytes, const Result& r, const char* where) {
  const bool color = isatty(STDOUT_FILENO);
  std::size_t pos = 0;
  for (std::size_t k = 0; k < r.lengths.size(); ++k) {
    std::fputs(color ? (k % 2 ? "\x1b[48;5;153m" : "\x1b[48;5;223m") : "[", stdout);
    for (std::int32_t j = 0; j < r.lengths[k]; ++j, ++pos) {
      if (pos < bytes.size()) std::fputc(bytes[pos], stdout);
      else std::fputs(color ? "\xe2\x90\x84" : "<next>", stdout);  // the next token's position
    }
    std::fputs(color ? "\x1b[0m" : "]", stdout);
  }
  std::int32_t longest = 0;
  for (auto l : r.lengths) longest = std::max(longest, l);
  const double mean = r.lengths.empty() ? 0 : static_cast<double>(pos) / r.lengths.size();
  std::printf("\n\nbytes %zu, patches %zu, mean patch length %.2f, max %d\n", bytes.size(), r.lengths.size(), mean, longest);
  if (o.mode == "entropy" || o.mode == "monotonic") {
    std::printf("mode %s, threshold %.6g (%s), entropies from %s\n", o.mode.c_str(), static_cast<double>(r.threshold),
                r.threshold_source, r.source.c_str());
  } else if (o.mode == "topk") {
    std::printf("mode topk, patch size %d (k = n / %d - 2), entropies from %s\n", o.patch_size, o.patch_size,
                r.source.c_str());
  } else {
    std::printf("mode %s\n", o.mode.c_str());
  }
  std::printf("%s: %.3f ms, %.3g MB/s\n", where, r.ms, r.ms > 0 ? bytes.size() / (r.ms * 1e3) : 0.0);
}

// JSON from a JSON library: NaN and Inf entropies become null, file names are escaped.
inline void print_json(const Options& o, const std::vector<std::uint8_t>& bytes, const Result& r) {
  nlohmann::ordered_json j;
  j["file"] = o.file;
  j["bytes"] = bytes.size();
  j["mode"] = o.mode;
  if (std::isfinite(r.threshold)) j["threshold"] = r.threshold;
  j["include_next_token"] = o.include_next_token;
  j["patch_lengths"] = r.lengths;
  auto& e = j["entropies"] = nlohmann::ordered_json::array();
  for (float h : r.entropies) {
    if (std::isfinite(h)) e.push_back(h);
    else e.push_back(nullptr);
  }
  std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str());
}

// Entropy per byte, the threshold line and the patch boundaries over bytes
// [begin, end), like BLT's figure.
inline bool write_svg(const std::string& path, const std::vector<std::uint8_t>& bytes, const Result& r,
                      std::int64_t begin, std::int64_t end) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) return false;
  const std::int64_t count = std::max<std::int64_t>(end - begin, 1);
  const double step = 14, left = 50, top = 20, height = 240;
  const double width = left + step * static_cast<double>(count) + 20;
  float hmax = 1e-6f;
  for (std::int64_t i = begin; i < end && i < static_cast<std::int64_t>(r.entropies.size()); ++i)
    if (std::isfinite(r.entropies[i])) hmax = std::max(hmax, r.entropies[i]);
  if (std::isfinite(r.threshold)) hmax = std::max(hmax, r.threshold);
  hmax *= 1.1f;
  auto y = [&](double h) { return top + height * (1.0 - h / hmax); };
  auto x_of = [&](std::int64_t i) { return left + step * static_cast<double>(i - begin); };
  std::fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' font-family='monospace' font-size='11'>\n",
               width, top + height + 40);
  std::fprintf(f, "<rect width='100%%' height='100%%' fill='white'/>\n");
  std::fprintf(f, "<text x='4' y='12'>bytes %lld to %lld of %zu</text>\n", static_cast<long long>(begin),
               static_cast<long long>(end), bytes.size());
  std::fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='black'/>\n", left, top, left, top + height);
  std::fprintf(f, "<text x='4' y='%.1f'>%.2f</text><text x='4' y='%.1f'>0</text>\n", top + 10, static_cast<double>(hmax),
               top + height);
  std::int64_t pos = 0;
  for (std::size_t k = 0; k < r.lengths.size() && pos < end; ++k) {  // patch boundaries
    if (pos >= begin) std::fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#bbb'/>\n", x_of(pos), top, x_of(pos), top + height);
    pos += r.lengths[k];
  }
  std::fprintf(f, "<polyline fill='none' stroke='#1f77b4' stroke-width='1.5' points='");
  for (std::int64_t i = begin; i < end && i < static_cast<std::int64_t>(r.entropies.size()); ++i)
    if (std::isfinite(r.entropies[i])) std::fprintf(f, "%.1f,%.1f ", x_of(i) + step / 2, y(r.entropies[i]));
  std::fprintf(f, "'/>\n");
  if (std::isfinite(r.threshold)) {
    std::fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#d62728' stroke-dasharray='6,4'/>\n", left,
                 y(r.threshold), width - 20, y(r.threshold));
    std::fprintf(f, "<text x='%.1f' y='%.1f' fill='#d62728'>threshold %.3f</text>\n", width - 140, y(r.threshold) - 4,
                 static_cast<double>(r.threshold));
  }
  for (std::int64_t i = begin; i < end && i < static_cast<std::int64_t>(bytes.size()); ++i) {
    const unsigned char c = bytes[static_cast<std::size_t>(i)];
    if (c > 32 && c < 127 && c != '<' && c != '>' && c != '&' && c != '\'')
      std::fprintf(f, "<text x='%.1f' y='%.1f'>%c</text>\n", x_of(i) + 3, top + height + 16, c);
  }
  std::fprintf(f, "</svg>\n");
  std::fclose(f);
  return true;
}


// emu_sibling: in the GPU build, the name of the executor build beside it
// (--device emu runs that); null in the executor build itself.
inline int main(int argc, char** argv, const char* emu_sibling) {
  Options o;
  if (int rc = parse(argc, argv, o)) return rc < 0 ? 0 : rc;
  const bool executor_build = std::strcmp(tokenless::backend_name(), "emu") == 0;
  if (o.device == "emu" && !executor_build) {
    const std::string sibling = tokenless_examples::exec_sibling(argv, emu_sibling);
    std::fprintf(stderr, "tokenless-patch: --device emu runs the CPU executor build, but %s cannot run: %s\n",
                 sibling.c_str(), std::strerror(errno));
    return 1;
  }
  if (o.device == "gpu" && (executor_build || !tokenless::device_available())) {
    std::fprintf(stderr, "tokenless-patch: --device gpu, but %s\n",
                 executor_build ? "this build runs on the CPU; use tokenless-patch" : "no CUDA device is available");
    return 1;
  }
  const bool on_device = o.device == "emu" || (!executor_build && o.device != "cpu" && tokenless::device_available());

  std::vector<std::uint8_t> bytes, train;
  std::string why;
  if (!read_file(o.file, bytes, why)) {
    std::fprintf(stderr, "tokenless-patch: cannot read %s: %s\n", o.file.c_str(), why.c_str());
    return 2;
  }
  if (bytes.empty()) {
    std::fprintf(stderr, "tokenless-patch: %s is empty: nothing to patch\n", o.file.c_str());
    return 2;
  }
  if (bytes.size() >= (std::size_t{1} << 31) - 1) {
    std::fprintf(stderr, "tokenless-patch: %s has %zu bytes; at most 2^31 - 2 fit one sequence\n", o.file.c_str(),
                 bytes.size());
    return 2;
  }
  std::vector<float> given;
  const bool model = uses_entropies(o) && o.entropies_file.empty();
  if (uses_entropies(o) && !o.entropies_file.empty()) {
    std::vector<std::uint8_t> raw;
    if (!read_file(o.entropies_file, raw, why)) {
      std::fprintf(stderr, "tokenless-patch: cannot read %s: %s\n", o.entropies_file.c_str(), why.c_str());
      return 2;
    }
    if (raw.size() != bytes.size() * sizeof(float)) {
      std::fprintf(stderr,
                   "tokenless-patch: %s has %zu bytes, but %s needs one float32 per byte: %zu bytes\n",
                   o.entropies_file.c_str(), raw.size(), o.file.c_str(), bytes.size() * sizeof(float));
      return 2;
    }
    given.resize(bytes.size());
    std::memcpy(given.data(), raw.data(), raw.size());
  }
  if (model && !o.train_file.empty()) {
    if (!read_file(o.train_file, train, why)) {
      std::fprintf(stderr, "tokenless-patch: cannot read %s: %s\n", o.train_file.c_str(), why.c_str());
      return 2;
    }
    if (train.size() < 2) {
      std::fprintf(stderr, "tokenless-patch: --train %s has %zu bytes: nothing to train on (leave out --train to "
                   "model the input itself)\n", o.train_file.c_str(), train.size());
      return 2;
    }
  }

  Result r;
  if (!given.empty()) r.source = o.entropies_file;
  else if (model) r.source = train.empty() ? "a byte 1- to 4-gram model of the input itself (leave-one-out)"
                                           : "a byte 1- to 4-gram model of " + o.train_file;
  r.threshold_source = o.threshold ? "given" : o.mode == "monotonic" ? "BLT's default" : "calibrated";
  const int rc = on_device ? run_device(o, bytes, train, given, r) : run_host(o, bytes, train, given, r);
  if (rc) return rc;

  if (!o.plot_file.empty()) {
    const std::int64_t n = static_cast<std::int64_t>(bytes.size());
    const std::int64_t begin = std::min(o.plot_begin, n - 1), end = std::min(o.plot_end, n);
    if (!write_svg(o.plot_file, bytes, r, begin, end)) {
      std::fprintf(stderr, "tokenless-patch: cannot write %s\n", o.plot_file.c_str());
      return 2;
    }
    std::fprintf(stderr, "plot: bytes %lld to %lld of %lld%s\n", static_cast<long long>(begin),
                 static_cast<long long>(end), static_cast<long long>(n),
                 end - begin < n ? " (--plot-range A:B for others)" : "");
  }
  char where[300];
  if (on_device) {
    tokenless::DeviceProperties props;
    (void)tokenless::device_properties(props);
    std::snprintf(where, sizeof where, "%s", props.name);
  } else {
    std::snprintf(where, sizeof where, "CPU (plain C++ path)");
  }
  if (o.format == "json") print_json(o, bytes, r);
  else print_text(o, bytes, r, where);
  return 0;
}

}  // namespace patch_cli
