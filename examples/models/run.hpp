#pragma once
// tokenless-run: loads a Hugging Face checkpoint (LlamaForCausalLM,
// MistralForCausalLM, MixtralForCausalLM, Phi3ForCausalLM; save_pretrained's
// layout or the Hub's) and continues a prompt of token ids greedily.
//
//   tokenless-run --model DIR (--ids FILE | --ids-list 1,2,3) [--max-new-tokens N]
//                 [--logits OUT.npy] [--device auto|gpu|cpu|emu] [--dtype fp32|bf16]
//                 [--format text|json] [--ignore-eos] [--speculative K]
//
// It prints the generated ids (text: one line; json: one object with
// "generated", "tokens_per_second" and more). --logits writes the prompt's
// logits as a float32 .npy [n_prompt, vocab]. --device cpu runs the plain
// C++ decoder (reference/transformer.hpp); --device gpu the library's
// kernels (device_model.hpp), and --device emu the same kernels on the CPU
// SIMT executor (the tokenless-run-cpu build; tokenless-run hands over to it).
// --speculative K (the kernels' path, a checkpoint with DeepSeek-V3-style
// multi-token modules, num_nextn_predict_layers): the first module drafts K
// tokens a step and the model verifies them in one forward; the ids are the
// greedy ones, and the acceptance counts are reported.
#include "device_model.hpp"

#include <tokenless/io/model_config.hpp>
#include <tokenless/io/model_weights.hpp>
#include <tokenless/reference/transformer.hpp>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
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
    "                     [--format text|json] [--ignore-eos] [--speculative K]\n"
    "  Greedy continuation of a prompt of token ids with a Llama 3, Mistral, Mixtral or Phi-3\n"
    "  checkpoint (config.json and model.safetensors, or shards with their index). --logits\n"
    "  writes the prompt's logits as float32 .npy [n, vocab]. Generation stops after N new\n"
    "  tokens (default 16) or at the config's eos_token_id (unless --ignore-eos).\n"
    "  --device: gpu runs the library's kernels (bf16), cpu the plain C++ decoder (fp32 or\n"
    "  bf16), emu the kernels on the CPU SIMT executor (slow; it checks the kernels without a\n"
    "  GPU); auto is gpu where there is one, else cpu. --dtype defaults to bf16 on gpu and\n"
    "  emu (the attention kernels store 16-bit values), fp32 on cpu. --speculative K (1-15, gpu\n"
    "  or emu): self-speculative decoding with the checkpoint's multi-token module drafting K\n"
    "  tokens a step (num_nextn_predict_layers); the same ids, with acceptance counts.\n";

struct Options {
  std::string model, ids_file, ids_list, logits_file, device = "auto", dtype = "auto", format = "text";
  int max_new_tokens = 16;
  int speculative = 0;  // drafts a step (0: plain greedy decoding)
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
               a == "--dtype" || a == "--format" || a == "--max-new-tokens" || a == "--speculative") {
      if (!value(v)) return fail("%s needs a value", a.c_str());
      if (a == "--model") o.model = v;
      else if (a == "--ids") o.ids_file = v;
      else if (a == "--ids-list") o.ids_list = v;
      else if (a == "--logits") o.logits_file = v;
      else if (a == "--device") o.device = v;
      else if (a == "--dtype") o.dtype = v;
      else if (a == "--format") o.format = v;
      else if (a == "--speculative") {
        char* end = nullptr;
        const long k = std::strtol(v.c_str(), &end, 10);
        if (*end != '\0' || k < 1 || k > tokenless::heads::kMaxDraft) {
          return fail("--speculative takes 1 to 15 drafts a step, not '%s'", v.c_str());
        }
        o.speculative = static_cast<int>(k);
      } else {
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
  if (o.dtype != "auto" && o.dtype != "fp32" && o.dtype != "bf16") {
    return fail("--dtype is fp32 or bf16, not '%s'", o.dtype.c_str());
  }
  if (o.format != "text" && o.format != "json") return fail("--format is text or json, not '%s'", o.format.c_str());
  return 0;
}

struct Result {
  std::vector<float> logits;  // the prompt's [n, vocab]
  std::vector<std::int32_t> generated;
  double prefill_s = 0, decode_s = 0;
  std::vector<unsigned long long> acceptance;  // --speculative: steps that accepted a drafts, by a
};

// --device cpu: the plain C++ decoder.
inline int run_host(const Options& o, tokenless::io::ModelWeights<float>& w, const std::vector<std::int32_t>& prompt,
                    Result& r) {
  const auto& c = w.config;
  std::function<float(float)> round = [](float v) { return v; };
  if (o.dtype == "bf16") {
    round = [](float v) { return tokenless::round_trip<__nv_bfloat16>(v); };
    for (auto* t : {&w.embed, &w.norm, &w.lm_head}) for (auto& v : *t) v = round(v);
    for (auto& l : w.layers)
      for (auto* t : {&l.attn_norm, &l.wqkv, &l.wo, &l.mlp_norm, &l.w_gate_up, &l.w_down, &l.router})
        for (auto& v : *t) v = round(v);
  }
  tokenless::reference::HostDecoder d(w, round);
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  r.logits = d.forward(prompt);
  const auto t1 = clock::now();
  std::int32_t next = argmax(r.logits.data() + (prompt.size() - 1) * static_cast<std::size_t>(c.vocab), c.vocab);
  for (int i = 0; i < o.max_new_tokens; ++i) {
    r.generated.push_back(next);
    if ((!o.ignore_eos && next == c.eos) || i + 1 == o.max_new_tokens) break;
    const std::vector<float> step = d.forward({next});
    next = argmax(step.data(), c.vocab);
  }
  r.prefill_s = std::chrono::duration<double>(t1 - t0).count();
  r.decode_s = std::chrono::duration<double>(clock::now() - t1).count();
  return 0;
}

// --speculative K: a step drafts K ids and keeps a + 1 of them (the greedy
// ones); the host reads the accepted count each step, and the new ids only
// to stop at the end-of-sequence id.
template <class Model>
int run_speculative(const Options& o, const tokenless::io::ModelWeights<float>& w,
                    const std::vector<std::int32_t>& prompt, Model& m, Result& r) {
  const auto n = static_cast<std::int64_t>(prompt.size());
  using clock = std::chrono::steady_clock;
  std::vector<unsigned long long> before;
  if (const auto s = m.acceptance(before); !s) return fail("%s", s.message());
  const auto t0 = clock::now();
  if (const auto s = m.prefill(prompt); !s) return fail("%s", s.message());
  if (const auto s = m.logits(n, r.logits); !s) return fail("%s", s.message());  // synchronises
  const auto t1 = clock::now();
  int have = 1;  // ids[n], the prefill's
  bool eos = !o.ignore_eos && [&] {
    std::vector<std::int32_t> id;
    return m.ids(n, n + 1, id) && id[0] == w.config.eos;
  }();
  while (have < o.max_new_tokens && !eos) {
    int made = 0;
    if (const auto s = m.speculate(o.speculative, &made); !s) return fail("%s", s.message());
    if (!o.ignore_eos) {
      std::vector<std::int32_t> ids;
      if (const auto s = m.ids(n + have, n + have + made, ids); !s) return fail("%s", s.message());
      for (int j = 0; j < made && !eos; ++j) {
        if (ids[j] == w.config.eos) {
          eos = true;
          made = j + 1;
        }
      }
    }
    have += made;
  }
  have = std::min(have, o.max_new_tokens);
  if (const auto s = m.ids(n, n + have, r.generated); !s) return fail("%s", s.message());
  const auto t2 = clock::now();
  if (const auto s = m.read_status(); !s) return fail("%s", s.message());
  if (const auto s = m.acceptance(r.acceptance); !s) return fail("%s", s.message());
  r.prefill_s = std::chrono::duration<double>(t1 - t0).count();
  r.decode_s = std::chrono::duration<double>(t2 - t1).count();
  return 0;
}

// --device gpu or emu: the library's kernels (device_model.hpp), bf16. The
// greedy ids stay on the device; the host reads each one only to stop at the
// end-of-sequence id (with --ignore-eos, once at the end).
inline int run_device(const Options& o, const tokenless::io::ModelWeights<float>& w,
                      const std::vector<std::int32_t>& prompt, Result& r) {
  using Model = DeviceModel<__nv_bfloat16>;
  const auto n = static_cast<std::int64_t>(prompt.size());
  std::unique_ptr<Model> m;
  const int K = o.speculative;
  if (K > 0 && w.mtp.empty()) {
    return fail("--speculative: the checkpoint has no multi-token module (num_nextn_predict_layers in config.json)");
  }
  if (const auto s = Model::create(w, n, n + o.max_new_tokens + K + 2, &m, K); !s) return fail("%s", s.message());
  if (K > 0) return run_speculative(o, w, prompt, *m, r);
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  if (const auto s = m->prefill(prompt); !s) return fail("%s", s.message());
  if (const auto s = m->logits(n, r.logits); !s) return fail("%s", s.message());  // synchronises
  const auto t1 = clock::now();
  const int eos = w.config.eos;
  int made = 0;
  for (int i = 0; i < o.max_new_tokens; ++i) {
    ++made;
    if (!o.ignore_eos) {
      std::vector<std::int32_t> id;
      if (const auto s = m->ids(n + i, n + i + 1, id); !s) return fail("%s", s.message());
      if (id[0] == eos) break;
    }
    if (i + 1 == o.max_new_tokens) break;
    if (const auto s = m->decode(); !s) return fail("%s", s.message());
  }
  if (const auto s = m->ids(n, n + made, r.generated); !s) return fail("%s", s.message());
  const auto t2 = clock::now();
  if (const auto s = m->read_status(); !s) return fail("%s", s.message());
  r.prefill_s = std::chrono::duration<double>(t1 - t0).count();
  r.decode_s = std::chrono::duration<double>(t2 - t1).count();
  return 0;
}

// This binary's path (argv[0] when /proc is missing).
inline std::string self_path(const char* argv0) {
  std::error_code ec;
  const auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(argv0) : p.string();
}

// emu_sibling: in the GPU build, the executor build beside it (--device emu
// runs that); null in the executor build itself.
inline int main(int argc, char** argv, const char* emu_sibling) {
  Options o;
  if (const int r = parse_args(argc, argv, o)) return r < 0 ? 0 : r;
  const bool executor_build = std::strcmp(tokenless::backend_name(), "emu") == 0;
  if (o.device == "emu" && !executor_build) {
    const std::string self = self_path(argv[0]);
    const std::string sibling = self.substr(0, self.find_last_of('/') + 1) + (emu_sibling ? emu_sibling : "?");
    execv(sibling.c_str(), argv);
    return fail("--device emu runs the CPU executor build, but %s cannot run: %s", sibling.c_str(), std::strerror(errno));
  }
  if (o.device == "gpu" && (executor_build || !tokenless::device_available())) {
    return fail("--device gpu, but %s",
                executor_build ? "this build runs on the CPU; use tokenless-run" : "no CUDA device is available");
  }
  const bool on_device =
      o.device == "emu" || o.device == "gpu" || (o.device == "auto" && !executor_build && tokenless::device_available());
  if (o.dtype == "auto") o.dtype = on_device ? "bf16" : "fp32";
  if (on_device && o.dtype != "bf16") {
    return fail("--dtype %s: the kernels run bf16 (their attention stores 16-bit values); use --dtype bf16, or "
                "--device cpu for fp32", o.dtype.c_str());
  }
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
  if (o.speculative > 0 && !on_device) {
    return fail("--speculative runs on the kernels' path: --device gpu or emu");
  }
  Result r;
  const int rc = on_device ? run_device(o, w, prompt, r) : run_host(o, w, prompt, r);
  if (rc) return rc;
  if (!o.logits_file.empty() &&
      !write_npy(o.logits_file, r.logits, static_cast<std::int64_t>(prompt.size()), c.vocab)) {
    return fail("--logits %s: cannot write", o.logits_file.c_str());
  }
  const double tps = r.decode_s > 0 ? static_cast<double>(r.generated.size()) / r.decode_s : 0.0;
  const char* device = on_device ? (executor_build ? "emu" : "gpu") : "cpu";
  if (o.format == "json") {
    nlohmann::json j = {{"model", tokenless::io::to_string(c.family)},
                        {"device", device},
                        {"dtype", o.dtype},
                        {"prompt_tokens", prompt.size()},
                        {"generated", r.generated},
                        {"prefill_ms", r.prefill_s * 1e3},
                        {"tokens_per_second", tps}};
    if (o.speculative > 0) {
      j["speculative"] = o.speculative;
      j["acceptance"] = r.acceptance;  // steps by accepted drafts, 0..K
    }
    std::printf("%s\n", j.dump().c_str());
  } else {
    for (std::size_t i = 0; i < r.generated.size(); ++i) std::printf("%s%d", i ? " " : "", r.generated[i]);
    std::printf("\n");
    std::fprintf(stderr, "%zu tokens, %.1f tokens/s (%s, %s)\n", r.generated.size(), tps, device, o.dtype.c_str());
    if (o.speculative > 0) {
      unsigned long long steps = 0, accepted = 0;
      for (std::size_t a = 0; a < r.acceptance.size(); ++a) {
        steps += r.acceptance[a];
        accepted += a * r.acceptance[a];
      }
      std::fprintf(stderr, "speculative: %llu steps of %d drafts, %.2f accepted a step\n", steps, o.speculative,
                   steps ? static_cast<double>(accepted) / static_cast<double>(steps) : 0.0);
    }
  }
  return 0;
}

}  // namespace run_cli
