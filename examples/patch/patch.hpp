#pragma once
// tokenless-patch: patches a file's bytes the way BLT does, on the GPU or on
// the CPU SIMT executor, and shows the patches (text, JSON or an SVG plot).
//
// FILE's bytes form one sequence, with ids = byte + 4 and no BOS added.
// Entropies come from --entropies (raw little-endian float32, one per byte,
// e.g. BLT's own entropy model's) or from a byte n-gram model built on the
// device from --train FILE or from the input itself.
#include <tokenless/tokenless.cuh>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
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
    "                       [--device auto|cpu|gpu] FILE\n"
    "  Without --threshold, entropy mode calibrates the threshold on the device so that\n"
    "  patches average --target-patch-size bytes (default 4.5). topk is BLT's threshold=None:\n"
    "  the n / patch-size - 2 bytes of highest entropy start patches.\n";

struct Options {
  std::string mode = "entropy";
  std::optional<float> threshold;
  std::optional<float> threshold_add;
  int patch_size = 4;
  int max_patch_length = 0;
  float target_patch_size = 4.5f;
  std::string entropies_file, train_file, plot_file, format = "text", device = "auto", file;
  bool include_next_token = false;
};

inline bool read_file(const std::string& path, std::vector<std::uint8_t>& out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  out.assign(std::istreambuf_iterator<char>(f), {});
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
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const char* v = nullptr;
    float x = 0;
    if (a == "--help" || a == "-h") {
      std::printf("%s", kUsage);
      return -1;
    } else if (a == "--include-next-token") {
      o.include_next_token = true;
    } else if (a == "--mode" || a == "--format" || a == "--device" || a == "--entropies" || a == "--train" || a == "--plot") {
      if (!(v = need(i))) return 2;
      (a == "--mode" ? o.mode : a == "--format" ? o.format : a == "--device" ? o.device
       : a == "--entropies" ? o.entropies_file : a == "--train" ? o.train_file : o.plot_file) = v;
    } else if (a == "--threshold" || a == "--threshold-add" || a == "--patch-size" || a == "--max-patch-length" ||
               a == "--target-patch-size") {
      if (!(v = need(i))) return 2;
      if (!number(v, x)) {
        std::fprintf(stderr, "tokenless-patch: %s expects a number, got '%s'\n", a.c_str(), v);
        return 2;
      }
      if (a == "--threshold") o.threshold = x;
      else if (a == "--threshold-add") o.threshold_add = x;
      else if (a == "--patch-size") o.patch_size = static_cast<int>(x);
      else if (a == "--max-patch-length") o.max_patch_length = static_cast<int>(x);
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
  if (o.device != "auto" && o.device != "cpu" && o.device != "gpu") {
    std::fprintf(stderr, "tokenless-patch: --device is auto, cpu or gpu, not '%s'\n", o.device.c_str());
    return 2;
  }
  return 0;
}

struct Result {
  std::vector<float> entropies;
  std::vector<std::int32_t> lengths;
  float threshold = NAN;
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
struct Buf {
  T* p = nullptr;
  explicit Buf(std::size_t n) { cudaMalloc(&p, std::max<std::size_t>(n, 1) * sizeof(T)); }
  ~Buf() { cudaFree(p); }
};

template <class Rule>
int run_rule(const Rule& rule, const Options& o, const std::int32_t* d_cu, const float* d_e, const std::int32_t* d_tok,
             std::int64_t n, Result& r) {
  using Op = pt::Patcher<Rule, float>;
  const std::int64_t n_pos = n + (o.include_next_token ? 1 : 0);
  Buf<std::uint8_t> flags(n_pos);
  Buf<std::int32_t> ids(n_pos), off(2), starts(n_pos), lens(n_pos);
  typename Op::Arguments a;
  a.rule = rule;
  a.entropies_in = d_e;
  a.tokens = d_tok;
  a.n_total = n;
  a.cu_seqlens = d_cu;
  a.num_seqs = 1;
  a.include_next_token = o.include_next_token;
  a.max_patch_length = o.max_patch_length;
  a.flags = flags.p;
  a.patch_ids = ids.p;
  a.patch_offsets = off.p;
  a.patch_starts = starts.p;
  a.patch_lengths = lens.p;
  a.capacity = n_pos;
  Buf<unsigned char> ws(Op::workspace_size(a));
  PATCH_TRY(Op::run(a, {ws.p, Op::workspace_size(a)}));
  PATCH_TRY(Op::read_status(a, {ws.p, Op::workspace_size(a)}));
  std::int32_t count[2];
  cudaMemcpy(count, off.p, sizeof count, cudaMemcpyDeviceToHost);
  r.lengths.resize(static_cast<std::size_t>(count[1]));
  cudaMemcpy(r.lengths.data(), lens.p, r.lengths.size() * sizeof(std::int32_t), cudaMemcpyDeviceToHost);
  return 0;
}

inline void print_text(const Options& o, const std::vector<std::uint8_t>& bytes, const Result& r, const char* device) {
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
    std::printf("mode %s, threshold %.6g%s, entropies from %s\n", o.mode.c_str(), static_cast<double>(r.threshold),
                o.threshold ? "" : " (calibrated)", r.source.c_str());
  } else if (o.mode == "topk") {
    std::printf("mode topk, patch size %d (k = n / %d - 2), entropies from %s\n", o.patch_size, o.patch_size,
                r.source.c_str());
  } else {
    std::printf("mode %s\n", o.mode.c_str());
  }
  std::printf("%s: %.3f ms, %.3g MB/s\n", device, r.ms, r.ms > 0 ? bytes.size() / (r.ms * 1e3) : 0.0);
}

inline void print_json(const Options& o, const std::vector<std::uint8_t>& bytes, const Result& r) {
  std::printf("{\"file\": \"%s\", \"bytes\": %zu, \"mode\": \"%s\", ", o.file.c_str(), bytes.size(), o.mode.c_str());
  if (std::isfinite(r.threshold)) std::printf("\"threshold\": %.9g, ", static_cast<double>(r.threshold));
  std::printf("\"include_next_token\": %s, \"patch_lengths\": [", o.include_next_token ? "true" : "false");
  for (std::size_t k = 0; k < r.lengths.size(); ++k) std::printf(k ? ", %d" : "%d", r.lengths[k]);
  std::printf("], \"entropies\": [");
  for (std::size_t k = 0; k < r.entropies.size(); ++k) std::printf(k ? ", %.6g" : "%.6g", static_cast<double>(r.entropies[k]));
  std::printf("]}\n");
}

// Entropy per byte, the threshold line and the patch boundaries, like BLT's figure.
inline bool write_svg(const std::string& path, const std::vector<std::uint8_t>& bytes, const Result& r) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) return false;
  const std::size_t n = r.entropies.size();
  const double step = 14, left = 50, top = 20, height = 240;
  const double width = left + step * static_cast<double>(std::max<std::size_t>(n, 1)) + 20;
  float hmax = 1e-6f;
  for (float h : r.entropies)
    if (std::isfinite(h)) hmax = std::max(hmax, h);
  if (std::isfinite(r.threshold)) hmax = std::max(hmax, r.threshold);
  hmax *= 1.1f;
  auto y = [&](double h) { return top + height * (1.0 - h / hmax); };
  std::fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' font-family='monospace' font-size='11'>\n",
               width, top + height + 40);
  std::fprintf(f, "<rect width='100%%' height='100%%' fill='white'/>\n");
  std::fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='black'/>\n", left, top, left, top + height);
  std::fprintf(f, "<text x='4' y='%.1f'>%.2f</text><text x='4' y='%.1f'>0</text>\n", top + 10, static_cast<double>(hmax),
               top + height);
  std::size_t pos = 0;
  for (std::size_t k = 0; k < r.lengths.size(); ++k) {  // patch boundaries
    const double x = left + step * static_cast<double>(pos);
    std::fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#bbb'/>\n", x, top, x, top + height);
    pos += static_cast<std::size_t>(r.lengths[k]);
  }
  std::fprintf(f, "<polyline fill='none' stroke='#1f77b4' stroke-width='1.5' points='");
  for (std::size_t i = 0; i < n; ++i)
    if (std::isfinite(r.entropies[i])) std::fprintf(f, "%.1f,%.1f ", left + step * (i + 0.5), y(r.entropies[i]));
  std::fprintf(f, "'/>\n");
  if (std::isfinite(r.threshold)) {
    std::fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#d62728' stroke-dasharray='6,4'/>\n", left,
                 y(r.threshold), width - 20, y(r.threshold));
    std::fprintf(f, "<text x='%.1f' y='%.1f' fill='#d62728'>threshold %.3f</text>\n", width - 140, y(r.threshold) - 4,
                 static_cast<double>(r.threshold));
  }
  for (std::size_t i = 0; i < bytes.size() && i < n; ++i) {
    const unsigned char c = bytes[i];
    if (c > 32 && c < 127 && c != '<' && c != '>' && c != '&' && c != '\'')
      std::fprintf(f, "<text x='%.1f' y='%.1f'>%c</text>\n", left + step * i + 3, top + height + 16, c);
  }
  std::fprintf(f, "</svg>\n");
  std::fclose(f);
  return true;
}

inline int main(int argc, char** argv, const char* cpu_sibling) {
  Options o;
  if (int rc = parse(argc, argv, o)) return rc < 0 ? 0 : rc;
  const bool on_cpu = std::strcmp(tokenless::backend_name(), "emu") == 0;
  if (!on_cpu && (o.device == "cpu" || (o.device == "auto" && !tokenless::device_available()))) {
    // Same arguments, on the CPU executor: the sibling binary built next to this one.
    if (cpu_sibling) {
      const std::string self = argv[0];
      const std::string sibling = self.substr(0, self.find_last_of('/') + 1) + cpu_sibling;
      execv(sibling.c_str(), argv);
    }
    std::fprintf(stderr, "tokenless-patch: %s, and the CPU build (%s) was not found\n",
                 o.device == "cpu" ? "--device cpu asked for the CPU" : "no CUDA device",
                 cpu_sibling ? cpu_sibling : "?");
    return 1;
  }
  if (!on_cpu && o.device == "gpu" && !tokenless::device_available()) {
    std::fprintf(stderr, "tokenless-patch: --device gpu, but no CUDA device is available\n");
    return 1;
  }
  if (on_cpu && o.device == "gpu") {
    std::fprintf(stderr, "tokenless-patch: this build runs on the CPU executor; use tokenless-patch for the GPU\n");
    return 2;
  }

  std::vector<std::uint8_t> bytes;
  if (!read_file(o.file, bytes)) {
    std::fprintf(stderr, "tokenless-patch: cannot read %s: %s\n", o.file.c_str(), std::strerror(errno));
    return 2;
  }
  if (bytes.empty()) {
    std::fprintf(stderr, "tokenless-patch: %s is empty: nothing to patch\n", o.file.c_str());
    return 2;
  }
  const std::int64_t n = static_cast<std::int64_t>(bytes.size());
  Result r;
  std::vector<float> given;
  if (!o.entropies_file.empty()) {
    std::vector<std::uint8_t> raw;
    if (!read_file(o.entropies_file, raw)) {
      std::fprintf(stderr, "tokenless-patch: cannot read %s: %s\n", o.entropies_file.c_str(), std::strerror(errno));
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
  std::vector<std::uint8_t> train;
  if (!o.train_file.empty() && !read_file(o.train_file, train)) {
    std::fprintf(stderr, "tokenless-patch: cannot read %s: %s\n", o.train_file.c_str(), std::strerror(errno));
    return 2;
  }

  std::vector<std::int32_t> tokens(bytes.size());
  for (std::size_t i = 0; i < bytes.size(); ++i) tokens[i] = bytes[i] + 4;
  const std::int32_t cu[2] = {0, static_cast<std::int32_t>(n)};
  Buf<std::uint8_t> d_bytes(bytes.size()), d_train(train.size());
  Buf<std::int32_t> d_tok(tokens.size()), d_cu(2);
  Buf<float> d_e(bytes.size()), d_theta(1);
  cudaMemcpy(d_bytes.p, bytes.data(), bytes.size(), cudaMemcpyHostToDevice);
  cudaMemcpy(d_tok.p, tokens.data(), tokens.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(d_cu.p, cu, sizeof cu, cudaMemcpyHostToDevice);
  if (!train.empty()) cudaMemcpy(d_train.p, train.data(), train.size(), cudaMemcpyHostToDevice);

  const auto t0 = std::chrono::steady_clock::now();
  if (!given.empty()) {
    cudaMemcpy(d_e.p, given.data(), given.size() * 4, cudaMemcpyHostToDevice);
    r.source = o.entropies_file;
  } else {
    pt::NGramEntropy::Arguments m;
    m.train = train.empty() ? d_bytes.p : d_train.p;
    m.n_train = train.empty() ? n : static_cast<std::int64_t>(train.size());
    m.text = d_bytes.p;
    m.n = n;
    m.entropies = d_e.p;
    Buf<unsigned char> ws(pt::NGramEntropy::workspace_size(m));
    PATCH_TRY(pt::NGramEntropy::run(m, {ws.p, pt::NGramEntropy::workspace_size(m)}));
    r.source = train.empty() ? "a byte 1- to 4-gram model of the input itself (leave-one-out)" : "a byte 1- to 4-gram model of " + o.train_file;
  }
  const bool entropy_mode = o.mode == "entropy" || o.mode == "monotonic";
  if (entropy_mode) {
    if (o.threshold) {
      r.threshold = *o.threshold;
    } else if (o.mode == "monotonic") {
      r.threshold = 1.335442066192627f;  // BLT's default
    } else {
      pt::Calibrate::Arguments c;
      c.entropies = d_e.p;
      c.n_total = n;
      c.cu_seqlens = d_cu.p;
      c.num_seqs = 1;
      c.include_next_token = o.include_next_token;
      c.target_patch_size = o.target_patch_size;
      c.threshold = d_theta.p;
      Buf<unsigned char> ws(pt::Calibrate::workspace_size(c));
      PATCH_TRY(pt::Calibrate::run(c, {ws.p, pt::Calibrate::workspace_size(c)}));
      cudaMemcpy(&r.threshold, d_theta.p, sizeof(float), cudaMemcpyDeviceToHost);
    }
  }
  int rc = 0;
  if (o.mode == "entropy" && o.threshold_add) rc = run_rule(pt::EntropyCombined{r.threshold, *o.threshold_add}, o, d_cu.p, d_e.p, d_tok.p, n, r);
  else if (o.mode == "entropy") rc = run_rule(pt::EntropyGlobal{r.threshold}, o, d_cu.p, d_e.p, d_tok.p, n, r);
  else if (o.mode == "monotonic") rc = run_rule(pt::EntropyMonotonic{r.threshold}, o, d_cu.p, d_e.p, d_tok.p, n, r);
  else if (o.mode == "topk") rc = run_rule(pt::EntropyTopK{o.patch_size}, o, d_cu.p, d_e.p, d_tok.p, n, r);
  else if (o.mode == "static") rc = run_rule(pt::StaticPatches{o.patch_size}, o, d_cu.p, d_e.p, d_tok.p, n, r);
  else if (o.mode == "space") rc = run_rule(pt::SpacePatches{}, o, d_cu.p, d_e.p, d_tok.p, n, r);
  else rc = run_rule(pt::BytePatches{}, o, d_cu.p, d_e.p, d_tok.p, n, r);
  if (rc) return rc;
  cudaDeviceSynchronize();
  r.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  r.entropies.resize(bytes.size());
  cudaMemcpy(r.entropies.data(), d_e.p, bytes.size() * 4, cudaMemcpyDeviceToHost);

  if (!o.plot_file.empty() && !write_svg(o.plot_file, bytes, r)) {
    std::fprintf(stderr, "tokenless-patch: cannot write %s\n", o.plot_file.c_str());
    return 2;
  }
  tokenless::DeviceProperties props;
  (void)tokenless::device_properties(props);
  if (o.format == "json") print_json(o, bytes, r);
  else print_text(o, bytes, r, props.name);
  return 0;
}

}  // namespace patch_cli
