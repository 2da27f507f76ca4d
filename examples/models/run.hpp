#pragma once
// tokenless-run: loads a Hugging Face checkpoint (LlamaForCausalLM,
// MistralForCausalLM, MixtralForCausalLM, Phi3ForCausalLM; save_pretrained's
// layout or the Hub's) and continues a prompt of token ids greedily.
//
//   tokenless-run --model DIR (--ids FILE | --ids-list 1,2,3) [--max-new-tokens N]
//                 [--logits OUT.npy] [--device auto|gpu|cpu|emu] [--dtype fp32|bf16]
//                 [--format text|json] [--ignore-eos]
//
// It prints the generated ids (text: one line; json: one object with
// "generated", "tokens_per_second" and more). --logits writes the prompt's
// logits as a float32 .npy [n_prompt, vocab]. --device cpu runs the plain
// C++ decoder (reference/transformer.hpp).
#include <tokenless/io/model_config.hpp>
#include <tokenless/io/model_weights.hpp>
#include <tokenless/reference/transformer.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace run_cli {

inline const char* kUsage =
    "usage: tokenless-run --model DIR (--ids FILE | --ids-list 1,2,3) [--max-new-tokens N]\n"
    "                     [--logits OUT.npy] [--device auto|gpu|cpu|emu] [--dtype fp32|bf16]\n"
    "                     [--format text|json] [--ignore-eos]\n"
    "  Greedy continuation of a prompt of token ids with a Llama 3, Mistral, Mixtral or Phi-3\n"
    "  checkpoint (config.json and model.safetensors, or shards with their index). --logits\n"
    "  writes the prompt's logits as float32 .npy [n, vocab]. Generation stops after N new\n"
    "  tokens (default 16) or at the config's eos_token_id (unless --ignore-eos).\n";

struct Options {
  std::string model, ids_file, ids_list, logits_file, device = "auto", dtype = "fp32", format = "text";
  int max_new_tokens = 16;
  bool ignore_eos = false;
};

inline int fail(const char* fmt, const char* a = "", const char* b = "") {
  std::fprintf(stderr, "tokenless-run: ");
  std::fprintf(stderr, fmt, a, b);
  std::fprintf(stderr, "\n");
  return 1;
}

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

// A float32 .npy [rows, cols] (format 1.0, little-endian, C order).
inline bool write_npy(const std::string& path, const std::vector<float>& v, std::int64_t rows, std::int64_t cols) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                       std::to_string(cols) + "), }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  if (!f) return false;
  const unsigned char magic[] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  f.write(reinterpret_cast<const char*>(magic), sizeof magic);
  const std::uint16_t len = static_cast<std::uint16_t>(header.size());
  f.put(static_cast<char>(len & 0xff));
  f.put(static_cast<char>(len >> 8));
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
  return static_cast<bool>(f);
}

inline std::int32_t argmax(const float* row, int n) {
  return static_cast<std::int32_t>(std::max_element(row, row + n) - row);  // the first of equal maxima, as torch
}

inline int parse_args(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](std::string& out) {
      if (i + 1 >= argc) return false;
      out = argv[++i];
      return true;
    };
    std::string v;
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return -1;
    } else if (a == "--ignore-eos") {
      o.ignore_eos = true;
    } else if (a == "--model" || a == "--ids" || a == "--ids-list" || a == "--logits" || a == "--device" ||
               a == "--dtype" || a == "--format" || a == "--max-new-tokens") {
      if (!value(v)) return fail("%s needs a value", a.c_str());
      if (a == "--model") o.model = v;
      else if (a == "--ids") o.ids_file = v;
      else if (a == "--ids-list") o.ids_list = v;
      else if (a == "--logits") o.logits_file = v;
      else if (a == "--device") o.device = v;
      else if (a == "--dtype") o.dtype = v;
      else if (a == "--format") o.format = v;
      else {
        char* end = nullptr;
        const long n = std::strtol(v.c_str(), &end, 10);
        if (*end != '\0' || n < 0 || n > 1 << 20) return fail("--max-new-tokens takes a count >= 0, not '%s'", v.c_str());
        o.max_new_tokens = static_cast<int>(n);
      }
    } else {
      std::fputs(kUsage, stderr);
      return fail("unknown argument '%s'", a.c_str());
    }
  }
  if (o.model.empty()) return fail("--model DIR is required");
  if (o.ids_file.empty() == o.ids_list.empty()) return fail("give exactly one of --ids FILE and --ids-list");
  if (o.device != "auto" && o.device != "gpu" && o.device != "cpu" && o.device != "emu") {
    return fail("--device is auto, gpu, cpu or emu, not '%s'", o.device.c_str());
  }
  if (o.dtype != "fp32" && o.dtype != "bf16") return fail("--dtype is fp32 or bf16, not '%s'", o.dtype.c_str());
  if (o.format != "text" && o.format != "json") return fail("--format is text or json, not '%s'", o.format.c_str());
  return 0;
}

inline int main(int argc, char** argv) {
  Options o;
  if (const int r = parse_args(argc, argv, o)) return r < 0 ? 0 : r;
  std::string text = o.ids_list;
  if (!o.ids_file.empty()) {
    std::ifstream f(o.ids_file);
    if (!f) return fail("--ids %s: cannot read: %s", o.ids_file.c_str(), std::strerror(errno));
    std::stringstream ss;
    ss << f.rdbuf();
    text = ss.str();
  }
  std::vector<std::int32_t> prompt;
  std::string bad;
  if (!parse_ids(text, prompt, bad)) return fail("the prompt holds '%s', not a token id", bad.c_str());
  if (prompt.empty()) return fail("the prompt is empty");
  tokenless::io::ModelWeights<float> w;
  if (const auto s = tokenless::io::load_weights(o.model, &w); !s) return fail("%s", s.message());
  const auto& c = w.config;
  for (std::int32_t id : prompt) {
    if (id >= c.vocab) {
      return fail("the prompt holds id %s, outside the vocabulary", std::to_string(id).c_str());
    }
  }
  if (o.device == "gpu" || o.device == "emu") {
    return fail("--device %s: the kernel path of tokenless-run is not built yet (issue 13); use --device cpu",
                o.device.c_str());
  }
  std::function<float(float)> round = [](float v) { return v; };
  if (o.dtype == "bf16") round = [](float v) { return tokenless::round_trip<__nv_bfloat16>(v); };
  if (o.dtype == "bf16") {
    for (auto* t : {&w.embed, &w.norm, &w.lm_head}) for (auto& v : *t) v = round(v);
    for (auto& l : w.layers)
      for (auto* t : {&l.attn_norm, &l.wqkv, &l.wo, &l.mlp_norm, &l.w_gate_up, &l.w_down, &l.router})
        for (auto& v : *t) v = round(v);
  }
  tokenless::reference::HostDecoder d(w, round);
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const std::vector<float> logits = d.forward(prompt);
  const auto t1 = clock::now();
  if (!o.logits_file.empty() &&
      !write_npy(o.logits_file, logits, static_cast<std::int64_t>(prompt.size()), c.vocab)) {
    return fail("--logits %s: cannot write", o.logits_file.c_str());
  }
  std::vector<std::int32_t> generated;
  std::int32_t next = argmax(logits.data() + (prompt.size() - 1) * static_cast<std::size_t>(c.vocab), c.vocab);
  for (int i = 0; i < o.max_new_tokens; ++i) {
    generated.push_back(next);
    if ((!o.ignore_eos && next == c.eos) || i + 1 == o.max_new_tokens) break;
    const std::vector<float> step = d.forward({next});
    next = argmax(step.data(), c.vocab);
  }
  const auto t2 = clock::now();
  const double decode_s = std::chrono::duration<double>(t2 - t1).count();
  const double tps = decode_s > 0 ? static_cast<double>(generated.size()) / decode_s : 0.0;
  if (o.format == "json") {
    nlohmann::json j = {{"model", tokenless::io::to_string(c.family)},
                        {"device", "cpu"},
                        {"dtype", o.dtype},
                        {"prompt_tokens", prompt.size()},
                        {"generated", generated},
                        {"prefill_ms", std::chrono::duration<double, std::milli>(t1 - t0).count()},
                        {"tokens_per_second", tps}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    for (std::size_t i = 0; i < generated.size(); ++i) std::printf("%s%d", i ? " " : "", generated[i]);
    std::printf("\n");
    std::fprintf(stderr, "%zu tokens, %.1f tokens/s (cpu, %s)\n", generated.size(), tps, o.dtype.c_str());
  }
  return 0;
}

}  // namespace run_cli
