// tokenless-train: trains a Llama 3, Mistral, Mixtral or Phi-3 checkpoint on
// a file of token ids, or a BLT checkpoint on a file's bytes, with AdamW, and
// saves it as transformers loads it.
// The batches are fixed (docs/training.md), so a run is reproducible: the
// same data and options give the same bits.
//
//   tokenless-train --model DIR (--ids FILE | --bytes-file FILE) [--steps N] [--batch-size B] [--seq-len L]
//                   [--lr X] [--weight-decay W] [--betas B1,B2] [--eps E] [--clip C]
//                   [--schedule constant|cosine] [--warmup S] [--min-lr X] [--grad-accum A]
//                   [--seed S] [--device auto|cpu|gpu|emu] [--dtype fp32|bf16]
//                   [--checkpoint-layers] [--init random] [--save OUT_DIR] [--resume DIR]
//                   [--format text|json]
//
// --device cpu trains on the host path (models/llama_train_host.hpp, fp32);
// gpu and emu on the kernels (models/llama_train.cuh, bf16 with fp32
// masters). This header is both builds: tokenless-train (train.cpp: the host
// path and the CPU executor) and tokenless-train-gpu (train.cu: the GPU;
// --device emu there hands over to tokenless-train beside it).
#pragma once
#include "../handover.hpp"
#include "ids.hpp"

#include <tokenless/io/model_config.hpp>
#include <tokenless/io/model_weights.hpp>
#include <tokenless/io/safetensors.hpp>
#include <tokenless/io/safetensors_write.hpp>
#include <tokenless/core/config.hpp>
#include <tokenless/core/device.hpp>
#include <tokenless/models/llama_train.cuh>
#include <tokenless/models/blt_train_host.hpp>
#include <tokenless/models/llama_train_host.hpp>
#include <tokenless/io/blt_weights.hpp>
#include <tokenless/optim/policy.hpp>

#include <nlohmann/json.hpp>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace train_cli {

namespace io = tokenless::io;
namespace models = tokenless::models;
namespace optim = tokenless::optim;
using tokenless::Status;

const char* kUsage =
    "usage: tokenless-train --model DIR (--ids FILE | --bytes-file FILE) [--steps N] [--batch-size B] [--seq-len L]\n"
    "                       [--lr X] [--weight-decay W] [--betas B1,B2] [--eps E] [--clip C]\n"
    "                       [--schedule constant|cosine] [--warmup S] [--min-lr X] [--grad-accum A]\n"
    "                       [--seed S] [--device auto|cpu|gpu|emu] [--dtype fp32|bf16]\n"
    "                       [--checkpoint-layers] [--init random] [--save OUT_DIR] [--resume DIR]\n"
    "                       [--format text|json]\n"
    "  Trains a Llama 3, Mistral, Mixtral or Phi-3 checkpoint (config.json and safetensors) on\n"
    "  FILE's token ids (integers separated by whitespace or commas), or a BLT checkpoint on a file's\n"
    "  bytes (--bytes-file: id = byte + 4, no BOS; its entropy model frozen; the host path), with\n"
    "  AdamW as torch.optim.AdamW\n"
    "  (matrices decayed, norm weights not) and clip_grad_norm_ (--clip 0: none). Row r of step s,\n"
    "  micro-batch m, is the L + 1 ids from ((s*A + m)*B + r)*L, wrapping around the data; the loss\n"
    "  is the mean cross-entropy over the B*L predictions (plus Mixtral's router_aux_loss_coef x\n"
    "  load-balancing loss where output_router_logits is set). A non-finite gradient norm skips\n"
    "  the step. --save writes config.json, model.safetensors (the checkpoint's names and dtype),\n"
    "  the optimizer's moments and the step atomically; --resume DIR continues such a save up to\n"
    "  --steps in all. --checkpoint-layers recomputes each layer in the backward (less memory).\n"
    "  Defaults: 100 steps, B 4, L 128, A 1, lr 3e-4 (constant), wd 0.1, betas 0.9,0.95, eps 1e-8,\n"
    "  clip 1.0. --device cpu trains on the host path (fp32, OpenBLAS, threads); gpu on the kernels\n"
    "  (bf16 storage, fp32 gradients, moments and master weights; tokenless-train-gpu), emu the same\n"
    "  kernels on the CPU SIMT executor (slow: it checks them without a GPU). --dtype: fp32 on cpu,\n"
    "  bf16 on gpu and emu (the default picks it). --init random starts from DIR's config.json alone, as\n"
    "  transformers initialises it (every matrix normal(0, initializer_range), norms 1, the pad\n"
    "  row 0), seeded by --seed (default 0); nothing else in a run is random.\n"
    "  JSON (--format json): losses, grad_norms, lrs, skipped, tokens_per_second,\n"
    "  peak_memory_bytes. Text: a progress line a step on stderr.\n";

struct Options {
  std::string model, ids_file, bytes_file, save, resume, device = "auto", dtype = "auto", format = "text";
  int steps = 100, batch = 4, seq_len = 128, grad_accum = 1, warmup = 0;
  std::uint64_t seed = 0;
  double lr = 3e-4, weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, clip = 1.0, min_lr = 0.0;
  std::string schedule = "constant", init;
  bool checkpoint_layers = false;
};

int fail(const std::string& msg) {
  std::fprintf(stderr, "tokenless-train: %s\n", msg.c_str());
  return 1;
}

bool parse_int(const char* s, int lo, int* out) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s, &end, 10);
  if (*s == '\0' || *end != '\0' || errno || v < lo || v > 0x7fffffff) return false;
  *out = static_cast<int>(v);
  return true;
}
bool parse_double(const char* s, double* out) {
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s, &end);
  if (*s == '\0' || *end != '\0' || errno || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

// 0: go on; 1: a bad option (after a message); -1: --help.
int parse_args(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return -1;
    }
    if (a == "--checkpoint-layers") {
      o.checkpoint_layers = true;
      continue;
    }
    if (i + 1 >= argc) {
      fail(a + " needs a value\n" + kUsage);
      return 1;
    }
    const char* v = argv[++i];
    auto bad = [&](const char* what) {
      fail(a + " '" + v + "': " + what);
      return 1;
    };
    if (a == "--model") o.model = v;
    else if (a == "--ids") o.ids_file = v;
    else if (a == "--bytes-file") o.bytes_file = v;
    else if (a == "--save") o.save = v;
    else if (a == "--resume") o.resume = v;
    else if (a == "--steps") { if (!parse_int(v, 1, &o.steps)) return bad("not a step count >= 1"); }
    else if (a == "--batch-size") { if (!parse_int(v, 1, &o.batch)) return bad("not a batch size >= 1"); }
    else if (a == "--seq-len") { if (!parse_int(v, 1, &o.seq_len)) return bad("not a length >= 1"); }
    else if (a == "--grad-accum") { if (!parse_int(v, 1, &o.grad_accum)) return bad("not a count >= 1"); }
    else if (a == "--warmup") { if (!parse_int(v, 0, &o.warmup)) return bad("not a step count >= 0"); }
    else if (a == "--seed") {
      char* end = nullptr;
      errno = 0;
      o.seed = std::strtoull(v, &end, 10);
      if (*v == '\0' || *end != '\0' || errno || *v == '-') return bad("not a non-negative integer");
    }
    else if (a == "--lr") { if (!parse_double(v, &o.lr)) return bad("not a number"); }
    else if (a == "--min-lr") { if (!parse_double(v, &o.min_lr)) return bad("not a number"); }
    else if (a == "--weight-decay") { if (!parse_double(v, &o.weight_decay)) return bad("not a number"); }
    else if (a == "--eps") { if (!parse_double(v, &o.eps)) return bad("not a number"); }
    else if (a == "--clip") { if (!parse_double(v, &o.clip)) return bad("not a number"); }
    else if (a == "--betas") {
      const std::string s = v;
      const auto comma = s.find(',');
      if (comma == std::string::npos || !parse_double(s.substr(0, comma).c_str(), &o.beta1) ||
          !parse_double(s.substr(comma + 1).c_str(), &o.beta2)) {
        return bad("not two numbers B1,B2");
      }
    }
    else if (a == "--schedule") {
      o.schedule = v;
      if (o.schedule != "constant" && o.schedule != "cosine") return bad("not constant or cosine");
    }
    else if (a == "--device") {
      o.device = v;
      if (o.device != "auto" && o.device != "cpu" && o.device != "gpu" && o.device != "emu") return bad("not auto, cpu, gpu or emu");
    }
    else if (a == "--dtype") {
      o.dtype = v;
      if (o.dtype != "fp32" && o.dtype != "bf16" && o.dtype != "auto") return bad("not fp32, bf16 or auto");
    }
    else if (a == "--init") {
      o.init = v;
      if (o.init != "random") return bad("not random (without --init, DIR's weights)");
    }
    else if (a == "--format") {
      o.format = v;
      if (o.format != "text" && o.format != "json") return bad("not text or json");
    }
    else {
      fail("unknown option " + a + "\n" + kUsage);
      return 1;
    }
  }
  return 0;
}

bool read_file(const std::string& path, std::string* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::stringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return static_cast<bool>(f) || f.eof();
}

std::int64_t available_memory_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  long long kb = 0;
  std::string unit;
  while (f >> key >> kb >> unit) {
    if (key == "MemAvailable:") return kb * 1024;
  }
  return static_cast<std::int64_t>(sysconf(_SC_AVPHYS_PAGES)) * sysconf(_SC_PAGESIZE);
}

// The process's peak resident set: VmHWM (ru_maxrss would carry over the
// parent's across exec, a Python caller's hundreds of MiB).
std::int64_t peak_memory_bytes() {
  std::ifstream f("/proc/self/status");
  std::string key;
  while (f >> key) {
    if (key == "VmHWM:") {
      long long kb = 0;
      f >> kb;
      return kb * 1024;
    }
  }
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<std::int64_t>(u.ru_maxrss) * 1024;  // Linux: kilobytes
}

// The checkpoint's own dtype of each tensor (what a save writes back).
std::string dtype_of(const io::Checkpoint& ck, const std::string& name) {
  const io::TensorInfo* t = ck.find(name);
  if (!t || (t->dtype != "BF16" && t->dtype != "F16")) return "F32";
  return t->dtype;
}

struct Run {
  io::ModelWeights<float> w;
  bool blt = false;          // a BLT checkpoint (bw), trained on bytes
  io::BltWeights<float> bw;
  std::string config_text, generation_config;
  bool hub_moe = false;
  std::vector<std::string> dtypes;  // per parameter view
  std::int64_t start_step = 0;
};

Status load_model(const std::string& dir, Run* r) {
  TL_RETURN_IF_ERROR(io::load_weights(dir, &r->w));
  if (!io::Checkpoint::read_text(dir + "/config.json", &r->config_text)) {
    return Status::error(tokenless::StatusCode::invalid_argument, "%s/config.json: cannot read", dir.c_str());
  }
  io::Checkpoint::read_text(dir + "/generation_config.json", &r->generation_config);
  io::Checkpoint ck;
  TL_RETURN_IF_ERROR(io::Checkpoint::open(dir, &ck));
  r->hub_moe = r->w.config.family == io::Family::kMixtral && !ck.find("model.layers.0.mlp.experts.gate_up_proj");
  r->dtypes.clear();
  for (const auto& v : io::parameter_views(r->w, r->hub_moe)) r->dtypes.push_back(dtype_of(ck, v.name));
  return Status::ok();
}

// --init random: transformers' _init_weights for these models, from a
// seeded generator whose sequence the C++ standard fixes (mt19937_64) and
// Box-Muller, so that a seed gives the same model everywhere.
Status init_random(const std::string& dir, std::uint64_t seed, Run* r) {
  if (!io::Checkpoint::read_text(dir + "/config.json", &r->config_text)) {
    return Status::error(tokenless::StatusCode::invalid_argument, "%s/config.json: cannot read", dir.c_str());
  }
  io::ModelConfig c;
  TL_RETURN_IF_ERROR(io::ModelConfig::parse(r->config_text, &c));
  io::Checkpoint::read_text(dir + "/generation_config.json", &r->generation_config);
  const auto j = nlohmann::json::parse(r->config_text, nullptr, false);
  double std_dev = 0.02;
  if (j.contains("initializer_range") && j["initializer_range"].is_number()) std_dev = j["initializer_range"].get<double>();
  if (!(std_dev > 0) || !std::isfinite(std_dev)) {
    return Status::error(tokenless::StatusCode::invalid_argument, "%s/config.json: initializer_range %g", dir.c_str(), std_dev);
  }
  std::string dtype = "F32";
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (j.contains(key) && j[key].is_string()) {
      const std::string d = j[key].get<std::string>();
      if (d == "bfloat16") dtype = "BF16";
      if (d == "float16") dtype = "F16";
    }
  }
  r->w = io::allocate_weights(c);
  r->hub_moe = c.family == io::Family::kMixtral;  // the layout transformers' save_pretrained writes
  std::mt19937_64 gen(seed);
  auto uniform = [&] { return (static_cast<double>(gen() >> 11) + 0.5) * 0x1.0p-53; };  // (0, 1)
  auto normal = [&](std::vector<float>& v) {
    for (std::size_t i = 0; i < v.size(); i += 2) {
      const double radius = std::sqrt(-2.0 * std::log(uniform())), angle = 2.0 * 3.14159265358979323846 * uniform();
      v[i] = static_cast<float>(std_dev * radius * std::cos(angle));
      if (i + 1 < v.size()) v[i + 1] = static_cast<float>(std_dev * radius * std::sin(angle));
    }
  };
  auto ones = [](std::vector<float>& v) { std::fill(v.begin(), v.end(), 1.0f); };
  normal(r->w.embed);
  if (j.contains("pad_token_id") && j["pad_token_id"].is_number_integer()) {
    const auto pad = j["pad_token_id"].get<std::int64_t>();
    if (pad >= 0 && pad < c.vocab) std::fill_n(r->w.embed.begin() + pad * c.hidden, c.hidden, 0.0f);
  }
  for (auto& l : r->w.layers) {
    ones(l.attn_norm);
    ones(l.mlp_norm);
    normal(l.wqkv);
    normal(l.wo);
    normal(l.w_gate_up);
    normal(l.w_down);
    if (!l.router.empty()) normal(l.router);
  }
  ones(r->w.norm);
  if (c.tie_embeddings) r->w.lm_head = r->w.embed;
  else normal(r->w.lm_head);
  r->dtypes.assign(io::parameter_views(r->w, r->hub_moe).size(), dtype);
  return Status::ok();
}

// Either path behind one face: a step, and the state a save writes and a
// resume restores (weights: the fp32 masters; the moments; the counters).
struct Snapshot {
  io::ModelWeights<float> w, m, v;
  optim::State state{};
};
class Backend {
 public:
  virtual ~Backend() = default;
  virtual Status step(const std::vector<std::int32_t>& data, std::int64_t s, const Options& o,
                      const optim::AdamWHyper& h, models::TrainStep* r) = 0;
  virtual Status snapshot(Snapshot* out) = 0;
  virtual Status restore(const Snapshot& in) = 0;
  virtual std::int64_t skipped() const = 0;
  // The save and the resume (the Llama family's: snapshot() and restore()
  // around save_run and load_state; BLT's its own).
  virtual Status save(const std::string& dir, const Run& r, std::int64_t next_step, const Options& o);
  virtual Status resume(const std::string& dir, Run& r);
};

// The host path: the weights are trained in place (Run::w).
class HostBackend final : public Backend {
 public:
  HostBackend(io::ModelWeights<float>& w, bool hub_moe) : w_(w), hub_moe_(hub_moe) {}
  Status init(bool checkpoint_layers) { return t_.init(&w_, hub_moe_, checkpoint_layers); }
  models::LlamaHostTraining& training() { return t_; }
  Status step(const std::vector<std::int32_t>& data, std::int64_t s, const Options& o, const optim::AdamWHyper& h,
              models::TrainStep* r) override {
    return t_.step(data, s, o.batch, o.seq_len, o.grad_accum, h, r);
  }
  // The optimizer keeps its moments flat, tensor i (parameter view i) at offset(i).
  Status snapshot(Snapshot* out) override {
    out->w = w_;
    out->m = io::zeros_like(w_);
    out->v = io::zeros_like(w_);
    auto& opt = t_.optimizer();
    const auto mv = io::parameter_views(out->m, hub_moe_), vv = io::parameter_views(out->v, hub_moe_);
    for (std::size_t i = 0; i < mv.size(); ++i) {
      std::copy_n(opt.m().data() + opt.offset(i), mv[i].numel(), mv[i].data);
      std::copy_n(opt.v().data() + opt.offset(i), vv[i].numel(), vv[i].data);
    }
    out->state = opt.state();
    return Status::ok();
  }
  Status restore(const Snapshot& in) override {
    w_ = in.w;
    if (w_.config.tie_embeddings) w_.lm_head = w_.embed;
    auto& opt = t_.optimizer();
    auto m = in.m, v = in.v;
    const auto mv = io::parameter_views(m, hub_moe_), vv = io::parameter_views(v, hub_moe_);
    for (std::size_t i = 0; i < mv.size(); ++i) {
      std::copy_n(mv[i].data, mv[i].numel(), opt.m().data() + opt.offset(i));
      std::copy_n(vv[i].data, vv[i].numel(), opt.v().data() + opt.offset(i));
    }
    auto& st = opt.mutable_state();
    st.step = in.state.step;
    st.skipped = in.state.skipped;
    return Status::ok();
  }
  std::int64_t skipped() const override { return const_cast<models::LlamaHostTraining&>(t_).optimizer().state().skipped; }

 private:
  io::ModelWeights<float>& w_;
  bool hub_moe_;
  models::LlamaHostTraining t_;
};

// The kernels (gpu, or emu on the CPU executor), bf16.
using KernelTrainer = models::LlamaTrainer<__nv_bfloat16>;
class KernelBackend final : public Backend {
 public:
  Status init(const io::ModelWeights<float>& w, const Options& o) {
    config_ = w.config;
    return KernelTrainer::create(w, o.batch, o.seq_len, o.grad_accum, &t_, o.checkpoint_layers);
  }
  Status step(const std::vector<std::int32_t>& data, std::int64_t s, const Options&, const optim::AdamWHyper& h,
              models::TrainStep* r) override {
    return t_->step(data, s, h, r);
  }
  Status snapshot(Snapshot* out) override {
    io::ModelWeights<float> shapes = io::allocate_weights(config_);
    out->w = shapes;
    out->m = shapes;
    out->v = shapes;
    TL_RETURN_IF_ERROR(t_->weights(&out->w, &out->m, &out->v));
    out->state = t_->state();
    return Status::ok();
  }
  Status restore(const Snapshot& in) override {
    return t_->restore(in.w, in.m, in.v, in.state.step, in.state.skipped);
  }
  std::int64_t skipped() const override { return t_->state().skipped; }
  std::size_t device_bytes() const { return t_->device_bytes(); }

 private:
  io::ModelConfig config_;
  std::unique_ptr<KernelTrainer> t_;
};

// A save's tensors: the weights (every tensor of the checkpoint, in its own
// dtype), and per trained tensor its moments (and fp32 master where the
// checkpoint stores 16-bit weights) under the parameter's name.
struct SaveTensors {
  std::vector<io::WriteTensor> weights;
  std::vector<io::WriteTensor> state;
  bool masters = false;
  // A trained tensor: its weights (the fp32 master), moments and dtype.
  void trained(const io::ParamView& w, const float* m, const float* v, const std::string& dtype) {
    state.push_back({"exp_avg." + w.name, "F32", w.shape, m});
    state.push_back({"exp_avg_sq." + w.name, "F32", w.shape, v});
    if (dtype != "F32") {
      state.push_back({"master." + w.name, "F32", w.shape, w.data});
      masters = true;
    }
  }
};

// Writes a save atomically: model.safetensors, optimizer.safetensors, the
// config texts and trainer_state.json.
Status write_save(const std::string& dir, const SaveTensors& t, const Run& r, const optim::State& st,
                  std::int64_t next_step, const Options& o) {
  return io::save_folder_atomic(dir, [&](const std::string& tmp) -> Status {
    TL_RETURN_IF_ERROR(io::write_safetensors(tmp + "/model.safetensors", t.weights));
    TL_RETURN_IF_ERROR(io::write_safetensors(tmp + "/optimizer.safetensors", t.state));
    nlohmann::json j = {{"step", next_step},
                        {"optimizer_steps", st.step},
                        {"skipped", st.skipped},
                        {"fp32_masters", t.masters},
                        {"seed", o.seed},
                        {"options",
                         {{"batch_size", o.batch}, {"seq_len", o.seq_len}, {"grad_accum", o.grad_accum},
                          {"lr", o.lr}, {"schedule", o.schedule}, {"warmup", o.warmup}, {"min_lr", o.min_lr},
                          {"weight_decay", o.weight_decay}, {"betas", {o.beta1, o.beta2}}, {"eps", o.eps},
                          {"clip", o.clip}, {"steps", o.steps}, {"device", o.device}, {"dtype", o.dtype}}}};
    const std::vector<std::pair<std::string, std::string>> texts = {
        {"config.json", r.config_text}, {"generation_config.json", r.generation_config},
        {"trainer_state.json", j.dump(2) + "\n"}};
    for (const auto& [name, text] : texts) {
      if (text.empty()) continue;
      std::ofstream f(tmp + "/" + name, std::ios::binary);
      f << text;
      if (!f) return Status::error(tokenless::StatusCode::invalid_argument, "%s/%s: cannot write", tmp.c_str(), name.c_str());
    }
    return Status::ok();
  });
}

Status save_run(const std::string& dir, const Run& r, Snapshot& snap, std::int64_t next_step, const Options& o) {
  SaveTensors t;
  const auto views = io::parameter_views(snap.w, r.hub_moe);
  const auto mv = io::parameter_views(snap.m, r.hub_moe), vv = io::parameter_views(snap.v, r.hub_moe);
  for (std::size_t i = 0; i < views.size(); ++i) {
    t.weights.push_back({views[i].name, r.dtypes[i], views[i].shape, views[i].data});
    t.trained(views[i], mv[i].data, vv[i].data, r.dtypes[i]);
  }
  return write_save(dir, t, r, snap.state, next_step, o);
}

// --resume: trainer_state.json's counters (into st and r.start_step), and
// optimizer.safetensors' moments and masters of each trained view (masters
// over the view's data, which holds the save's weights).
Status read_state(const std::string& dir, const std::vector<io::ParamView>& views, const std::vector<float*>& m,
                  const std::vector<float*>& v, optim::State* st, Run& r) {
  std::string text;
  if (!io::Checkpoint::read_text(dir + "/trainer_state.json", &text)) {
    return Status::error(tokenless::StatusCode::invalid_argument,
                         "--resume %s: no trainer_state.json (not a tokenless-train save)", dir.c_str());
  }
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.contains("step") || !j.contains("optimizer_steps") || !j.contains("skipped")) {
    return Status::error(tokenless::StatusCode::invalid_argument, "--resume %s: trainer_state.json is malformed", dir.c_str());
  }
  io::SafetensorsFile f;
  TL_RETURN_IF_ERROR(io::SafetensorsFile::open(dir + "/optimizer.safetensors", &f));
  for (std::size_t i = 0; i < views.size(); ++i) {
    const struct {
      std::string prefix;
      float* dst;
    } parts[] = {{"exp_avg.", m[i]}, {"exp_avg_sq.", v[i]}, {"master.", views[i].data}};
    for (const auto& p : parts) {
      const io::TensorInfo* ti = f.find(p.prefix + views[i].name);
      if (!ti) {
        if (p.prefix == "master.") continue;  // an fp32 checkpoint is its own master
        return Status::error(tokenless::StatusCode::invalid_argument, "--resume %s: optimizer.safetensors lacks %s%s",
                             dir.c_str(), p.prefix.c_str(), views[i].name.c_str());
      }
      if (ti->numel() != views[i].numel()) {
        return Status::error(tokenless::StatusCode::invalid_argument, "--resume %s: %s%s has the wrong shape",
                             dir.c_str(), p.prefix.c_str(), views[i].name.c_str());
      }
      TL_RETURN_IF_ERROR(io::convert(*ti, p.dst));
    }
  }
  *st = {};
  st->step = j["optimizer_steps"].get<std::int64_t>();
  st->skipped = j["skipped"].get<std::int64_t>();
  r.start_step = j["step"].get<std::int64_t>();
  return Status::ok();
}

Status load_state(const std::string& dir, Run& r, Snapshot* snap) {
  snap->m = io::zeros_like(r.w);
  snap->v = io::zeros_like(r.w);
  const auto views = io::parameter_views(r.w, r.hub_moe);
  std::vector<float*> m, v;
  for (auto& x : io::parameter_views(snap->m, r.hub_moe)) m.push_back(x.data);
  for (auto& x : io::parameter_views(snap->v, r.hub_moe)) v.push_back(x.data);
  TL_RETURN_IF_ERROR(read_state(dir, views, m, v, &snap->state, r));
  if (r.w.config.tie_embeddings) r.w.lm_head = r.w.embed;
  snap->w = r.w;
  return Status::ok();
}

Status Backend::save(const std::string& dir, const Run& r, std::int64_t next_step, const Options& o) {
  Snapshot snap;
  TL_RETURN_IF_ERROR(snapshot(&snap));
  return save_run(dir, r, snap, next_step, o);
}
Status Backend::resume(const std::string& dir, Run& r) {
  Snapshot snap;
  TL_RETURN_IF_ERROR(load_state(dir, r, &snap));
  return restore(snap);
}

// BLT on the host path (models/blt_train_host.hpp): the weights (Run::bw)
// trained in place; a save holds every tensor, the frozen entropy model's
// too, so that from_pretrained loads it whole.
class BltBackend final : public Backend {
 public:
  explicit BltBackend(Run& r) : r_(r) {}
  Status init() { return t_.init(&r_.bw); }
  models::BltHostTraining& training() { return t_; }
  Status step(const std::vector<std::int32_t>& data, std::int64_t s, const Options& o, const optim::AdamWHyper& h,
              models::TrainStep* res) override {
    return t_.step(data, s, o.batch, o.seq_len, o.grad_accum, h, res);
  }
  Status snapshot(Snapshot*) override { return Status::error(tokenless::StatusCode::unsupported, "BLT: no snapshot"); }
  Status restore(const Snapshot&) override { return Status::error(tokenless::StatusCode::unsupported, "BLT: no restore"); }
  std::int64_t skipped() const override { return const_cast<models::BltHostTraining&>(t_).optimizer().state().skipped; }
  Status save(const std::string& dir, const Run& r, std::int64_t next_step, const Options& o) override {
    SaveTensors t;
    auto& w = const_cast<io::BltWeights<float>&>(r.bw);
    const auto all = io::blt_parameter_views(w, /*all=*/true);
    std::map<std::string, std::string> dtype;
    for (std::size_t i = 0; i < all.size(); ++i) {
      t.weights.push_back({all[i].name, r.dtypes[i], all[i].shape, all[i].data});
      dtype[all[i].name] = r.dtypes[i];
    }
    auto& opt = t_.optimizer();
    const auto& views = t_.views();
    for (std::size_t i = 0; i < views.size(); ++i) {
      t.trained(views[i], opt.m().data() + opt.offset(i), opt.v().data() + opt.offset(i), dtype[views[i].name]);
    }
    return write_save(dir, t, r, opt.state(), next_step, o);
  }
  Status resume(const std::string& dir, Run& r) override {
    auto& opt = t_.optimizer();
    const auto& views = t_.views();
    std::vector<float*> m, v;
    for (std::size_t i = 0; i < views.size(); ++i) {
      m.push_back(opt.m().data() + opt.offset(i));
      v.push_back(opt.v().data() + opt.offset(i));
    }
    optim::State st{};
    TL_RETURN_IF_ERROR(read_state(dir, views, m, v, &st, r));
    auto& s = opt.mutable_state();
    s.step = st.step;
    s.skipped = st.skipped;
    return Status::ok();
  }

 private:
  Run& r_;
  models::BltHostTraining t_;
};

// A BLT checkpoint (or, with --init random, its config alone).
Status load_blt(const std::string& dir, bool random, std::uint64_t seed, Run* r) {
  if (!io::Checkpoint::read_text(dir + "/config.json", &r->config_text)) {
    return Status::error(tokenless::StatusCode::invalid_argument, "%s/config.json: cannot read", dir.c_str());
  }
  io::Checkpoint::read_text(dir + "/generation_config.json", &r->generation_config);
  r->blt = true;
  r->dtypes.clear();
  if (!random) {
    TL_RETURN_IF_ERROR(io::load_blt_weights(dir, &r->bw));
    TL_RETURN_IF_ERROR(models::BltHost::check(r->bw.config));
    io::Checkpoint ck;
    TL_RETURN_IF_ERROR(io::Checkpoint::open(dir, &ck));
    for (const auto& v : io::blt_parameter_views(r->bw, /*all=*/true)) r->dtypes.push_back(dtype_of(ck, v.name));
    return Status::ok();
  }
  io::BltConfig c;
  TL_RETURN_IF_ERROR(io::BltConfig::parse(r->config_text, &c));
  TL_RETURN_IF_ERROR(models::BltHost::check(c));
  const auto j = nlohmann::json::parse(r->config_text, nullptr, false);
  double std_dev = 0.02;
  if (j.contains("initializer_range") && j["initializer_range"].is_number()) std_dev = j["initializer_range"].get<double>();
  if (!(std_dev > 0) || !std::isfinite(std_dev)) {
    return Status::error(tokenless::StatusCode::invalid_argument, "%s/config.json: initializer_range %g", dir.c_str(), std_dev);
  }
  r->bw = io::allocate_blt_weights(c);
  std::mt19937_64 gen(seed);
  auto uniform = [&] { return (static_cast<double>(gen() >> 11) + 0.5) * 0x1.0p-53; };
  for (auto& v : io::blt_parameter_views(r->bw, /*all=*/true)) {
    if (v.shape.size() == 1) {  // norm weights
      std::fill(v.data, v.data + v.numel(), 1.0f);
      continue;
    }
    for (std::int64_t i = 0; i < v.numel(); i += 2) {
      const double radius = std::sqrt(-2.0 * std::log(uniform())), angle = 2.0 * 3.14159265358979323846 * uniform();
      v.data[i] = static_cast<float>(std_dev * radius * std::cos(angle));
      if (i + 1 < v.numel()) v.data[i + 1] = static_cast<float>(std_dev * radius * std::sin(angle));
    }
  }
  r->dtypes.assign(io::blt_parameter_views(r->bw, true).size(), "F32");
  return Status::ok();
}

// Free memory where the kernels' buffers will live: the GPU's, or (the
// executor) the host's.
std::int64_t device_free_bytes() {
#if defined(TOKENLESS_EMU)
  return available_memory_bytes();
#else
  std::size_t free = 0, total = 0;
  if (cudaMemGetInfo(&free, &total) != cudaSuccess) return 0;
  return static_cast<std::int64_t>(free);
#endif
}

// The steps, the save and the report, for either model kind. device_bytes:
// the kernels' device buffers (reported for a GPU run), or 0.
int run_steps(const Options& o, Run& r, Backend& backend, const std::vector<std::int32_t>& data, optim::AdamWHyper h,
              const optim::Schedule& sched, const char* device, std::size_t device_bytes) {
  // The steps.
  std::vector<double> losses, norms, lrs;
  const auto t0 = std::chrono::steady_clock::now();
  std::int64_t tokens = 0;
  for (std::int64_t s = r.start_step; s < o.steps; ++s) {
    h.lr = sched.at(s);
    models::TrainStep res;
    if (const Status st = backend.step(data, s, o, h, &res); !st.is_ok()) return fail(st.message());
    tokens += std::int64_t(o.batch) * o.seq_len * o.grad_accum;
    losses.push_back(res.loss);
    norms.push_back(res.grad_norm);
    lrs.push_back(h.lr);
    if (o.format == "text") {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "step %lld/%d  loss %.4f  grad_norm %.3f  lr %.3g  %.0f tokens/s%s\n",
                   static_cast<long long>(s + 1), o.steps, res.loss, res.grad_norm, h.lr, tokens / std::max(secs, 1e-9),
                   res.skipped ? "  (skipped: non-finite norm)" : "");
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!o.save.empty()) {
    if (const Status s = backend.save(o.save, r, o.steps, o); !s.is_ok()) return fail(s.message());
  }
  const double tps = secs > 0 ? tokens / secs : 0.0;
  const auto skipped = backend.skipped();
  if (o.format == "json") {
    nlohmann::json j = {{"losses", losses},       {"grad_norms", norms},       {"lrs", lrs},
                        {"skipped", skipped},     {"tokens_per_second", tps},  {"peak_memory_bytes", peak_memory_bytes()},
                        {"steps", losses.size()}, {"first_step", r.start_step}, {"tokens", tokens},
                        {"device", device},       {"dtype", o.dtype}};
    // On a GPU the device's working set (create()'s buffers); else the process's resident peak.
    if (device_bytes > 0 && std::strcmp(device, "gpu") == 0) {
      j["host_peak_memory_bytes"] = j["peak_memory_bytes"];
      j["peak_memory_bytes"] = device_bytes;
    }
    if (!o.save.empty()) j["saved"] = o.save;
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("trained steps %lld-%d: loss %.4f -> %.4f, %lld skipped, %.0f tokens/s%s%s\n",
                static_cast<long long>(r.start_step + 1), o.steps, losses.empty() ? 0.0 : losses.front(),
                losses.empty() ? 0.0 : losses.back(), static_cast<long long>(skipped), tps,
                o.save.empty() ? "" : ", saved to ", o.save.c_str());
  }
  return 0;
}

// BLT on the host path: the checkpoint (or --init random), the memory
// check, the resume, then run_steps.
int train_blt(const Options& o, const std::string& from, const std::vector<std::int32_t>& data, Run& r,
              const optim::AdamWHyper& h, const optim::Schedule& sched) {
  if (const Status s = load_blt(from, !o.init.empty(), o.seed, &r); !s.is_ok()) return fail(s.message());
  const io::BltConfig& c = r.bw.config;
  for (const auto* st : {&c.encoder, &c.decoder}) {
    if (st->max_positions > 0 && o.seq_len > st->max_positions) {
      return fail("--seq-len " + std::to_string(o.seq_len) + " is beyond the local models' max_position_embeddings " +
                  std::to_string(st->max_positions));
    }
  }
  BltBackend backend(r);
  if (const Status s = backend.init(); !s.is_ok()) return fail(s.message());
  std::int64_t params = 0;
  for (const auto& v : backend.training().views()) params += v.numel();
  const std::int64_t need = 4 * 4 * params + backend.training().trainer().activation_bytes(o.batch, o.seq_len);
  if (const std::int64_t avail = available_memory_bytes(); avail > 0 && need > avail) {
    return fail("--batch-size " + std::to_string(o.batch) + " x --seq-len " + std::to_string(o.seq_len) + " needs about " +
                std::to_string(need >> 20) + " MiB, more than the " + std::to_string(avail >> 20) +
                " MiB available (lower them, add --grad-accum)");
  }
  if (!o.resume.empty()) {
    if (const Status s = backend.resume(o.resume, r); !s.is_ok()) return fail(s.message());
    if (r.start_step > o.steps) {
      return fail("--resume " + o.resume + " is at step " + std::to_string(r.start_step) + ", past --steps " +
                  std::to_string(o.steps));
    }
  }
  return run_steps(o, r, backend, data, h, sched, "cpu", 0);
}

int train(Options o, bool on_device, const char* device) {
  if (o.model.empty() && o.resume.empty()) return fail("give --model DIR (or --resume DIR)\n" + std::string(kUsage));
  // BLT (model_type "blt") trains on bytes; the Llama family on ids.
  const std::string from = o.resume.empty() ? o.model : o.resume;
  std::string config_text;
  const bool blt = io::Checkpoint::read_text(from + "/config.json", &config_text) && io::is_blt_config(config_text);
  if (blt && !o.ids_file.empty()) return fail(from + " is a BLT checkpoint: give its data as bytes, --bytes-file FILE");
  if (!blt && !o.bytes_file.empty()) {
    return fail("--bytes-file is for BLT checkpoints (model_type \"blt\"); give this model token ids, --ids FILE");
  }
  if (o.ids_file.empty() && o.bytes_file.empty()) return fail("give the training data: --ids FILE (or --bytes-file FILE for BLT)");
  if (blt && on_device) {
    return fail("--device " + std::string(device) + ": BLT trains on the host path for now (--device cpu); the kernels' "
                "BLT backward is not built yet");
  }
  if (blt && o.checkpoint_layers) return fail("--checkpoint-layers: BLT's host path keeps one row's state at a time already");
  o.device = device;
  if (o.dtype == "auto") o.dtype = on_device ? "bf16" : "fp32";
  if (!on_device && o.dtype != "fp32") {
    return fail("--dtype " + o.dtype + ": the host path trains in fp32 (the kernels, --device gpu or emu, in bf16)");
  }
  if (on_device && o.dtype != "bf16") {
    return fail("--dtype " + o.dtype + ": the kernels train in bf16 (their attention stores 16-bit values); use --dtype "
                "bf16, or --device cpu for fp32");
  }
  optim::AdamWHyper h;
  h.lr = o.lr;
  h.beta1 = o.beta1;
  h.beta2 = o.beta2;
  h.eps = o.eps;
  h.weight_decay = o.weight_decay;
  h.max_norm = o.clip;
  if (const Status s = optim::check_adamw(h); !s.is_ok()) return fail(s.message());
  optim::Schedule sched;
  sched.kind = o.schedule == "cosine" ? optim::Schedule::Kind::cosine : optim::Schedule::Kind::constant;
  sched.lr = o.lr;
  sched.warmup = o.warmup;
  sched.total = o.steps;
  sched.min_lr = o.min_lr;
  if (const Status s = optim::check_schedule(sched); !s.is_ok()) return fail(s.message());
  if (!o.save.empty()) {
    if (const Status s = io::check_save_target(o.save); !s.is_ok()) return fail(s.message());
  }
  // The data: ids, or bytes as BLT ids (byte + 4; no BOS inserted).
  std::string text, bad;
  const std::string& file = blt ? o.bytes_file : o.ids_file;
  const char* flag = blt ? "--bytes-file " : "--ids ";
  if (std::filesystem::is_directory(file) || !read_file(file, &text)) return fail(flag + file + ": cannot read");
  std::vector<std::int32_t> data;
  if (blt) {
    for (unsigned char b : text) data.push_back(static_cast<std::int32_t>(b) + 4);
  } else if (!run_cli::parse_ids(text, data, bad)) {
    return fail("--ids " + o.ids_file + " holds '" + bad + "', not a token id");
  }
  if (static_cast<std::int64_t>(data.size()) < std::int64_t(o.seq_len) + 1) {
    return fail(flag + file + ": " + std::to_string(data.size()) + (blt ? " bytes" : " ids") +
                ", fewer than --seq-len + 1 = " + std::to_string(o.seq_len + 1));
  }
  // The model (or the save to resume).
  Run r;
  if (!o.init.empty() && !o.resume.empty()) return fail("--init random starts a model; --resume continues one: give one of them");
  if (blt) return train_blt(o, from, data, r, h, sched);
  if (const Status s = o.init.empty() ? load_model(from, &r) : init_random(from, o.seed, &r); !s.is_ok()) {
    return fail(s.message());
  }
  const io::ModelConfig& c = r.w.config;
  if (c.mtp_modules > 0) return fail(from + ": multi-token modules (num_nextn_predict_layers) are not trained yet");
  for (std::size_t i = 0; i < data.size(); ++i) {
    if (data[i] >= c.vocab) {
      return fail("--ids " + o.ids_file + ": id " + std::to_string(data[i]) + " at position " + std::to_string(i) +
                  " is outside the vocabulary [0, " + std::to_string(c.vocab) + ")");
    }
  }
  if (c.max_positions > 0 && o.seq_len > c.max_positions) {
    return fail("--seq-len " + std::to_string(o.seq_len) + " is beyond the model's max_position_embeddings " +
                std::to_string(c.max_positions));
  }
  // The path, and memory before the first step: weights, gradients, two
  // moments (and masters), a micro-batch's activations.
  std::unique_ptr<Backend> backend;
  std::int64_t need = 0, avail = 0;
  const char* where = "available";
  if (on_device) {
    need = static_cast<std::int64_t>(KernelTrainer::estimate_bytes(c, o.batch, o.seq_len, o.grad_accum, o.checkpoint_layers));
    avail = device_free_bytes();
    where = std::strcmp(device, "gpu") == 0 ? "free on the GPU" : "available";
  } else {
    models::LlamaHostTrainer probe(c, o.checkpoint_layers);
    std::int64_t params = 0;
    for (const auto& v : io::parameter_views(r.w, r.hub_moe)) params += v.numel();
    need = 4 * 4 * params + probe.activation_bytes(o.batch, o.seq_len);
    avail = available_memory_bytes();
  }
  if (avail > 0 && need > avail) {
    return fail("--batch-size " + std::to_string(o.batch) + " x --seq-len " + std::to_string(o.seq_len) + " needs about " +
                std::to_string(need >> 20) + " MiB, more than the " + std::to_string(avail >> 20) + " MiB " + where +
                " (lower them, add --grad-accum, or --checkpoint-layers)");
  }
  KernelBackend* kernels = nullptr;
  if (on_device) {
    auto k = std::make_unique<KernelBackend>();
    if (const Status s = k->init(r.w, o); !s.is_ok()) return fail(s.message());
    kernels = k.get();
    backend = std::move(k);
  } else {
    auto h = std::make_unique<HostBackend>(r.w, r.hub_moe);
    if (const Status s = h->init(o.checkpoint_layers); !s.is_ok()) return fail(s.message());
    backend = std::move(h);
  }
  if (!o.resume.empty()) {
    if (const Status s = backend->resume(o.resume, r); !s.is_ok()) return fail(s.message());
    if (r.start_step > o.steps) {
      return fail("--resume " + o.resume + " is at step " + std::to_string(r.start_step) + ", past --steps " +
                  std::to_string(o.steps));
    }
  }
  return run_steps(o, r, *backend, data, h, sched, device, kernels ? kernels->device_bytes() : 0);
}


// emu_sibling: in the GPU build, the executor build beside it (--device emu
// runs that); null in the executor build itself.
inline int main(int argc, char** argv, const char* emu_sibling) {
  Options o;
  if (const int r = parse_args(argc, argv, o)) return r < 0 ? 0 : r;
  const bool executor_build = std::strcmp(tokenless::backend_name(), "emu") == 0;
  if (o.device == "emu" && !executor_build) {
    const std::string sibling = tokenless_examples::exec_sibling(argv, emu_sibling);
    return fail("--device emu runs the CPU executor build, but " + sibling + " cannot run: " + std::strerror(errno));
  }
  if (o.device == "gpu" && (executor_build || !tokenless::device_available())) {
    return fail(std::string("--device gpu, but ") +
                (executor_build ? "this build runs on the CPU; use tokenless-train-gpu" : "no CUDA device is available"));
  }
  const bool on_device = o.device == "emu" || o.device == "gpu" || (o.device == "auto" && !executor_build &&
                                                                   tokenless::device_available());
  return train(o, on_device, on_device ? (executor_build ? "emu" : "gpu") : "cpu");
}

}  // namespace train_cli
