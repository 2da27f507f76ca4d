// The fused optimizer (optim/adamw.cuh) over a 1B-shaped Llama's tensors
// (Llama 3.2 1B: d 2048, 16 layers, FFN 8192, GQA 32:8, vocab 128,256; 1.24B
// parameters in 147 tensors, norm weights undecayed), one step with
// clipping:
//   * BM_AdamW_bf16: bf16 parameters and gradients, fp32 master and moments:
//     30 bytes an element (the norm's read of g; g, master, m, v read, and
//     master, m, v, the parameter written);
//   * BM_AdamW_fp32: fp32 parameters and gradients, no master: 32 bytes.
// It is memory-bound: the figure is the fraction of the measured copy
// bandwidth (target >= 85%). Checked once: the step ran (t = 1, a finite
// norm) and moved the parameters.
// Side by side: benchmarks/torch/optim_eager.py (torch.optim.AdamW fused and
// foreach, clip_grad_norm_, on the same tensors).
#include "harness.cuh"

#include <tokenless/optim/adamw.cuh>

#include <cstdint>
#include <memory>
#include <vector>

namespace {

namespace optim = tokenless::optim;

struct Shape {
  std::int64_t rows, cols;  // cols 0: 1-D
};

// Llama 3.2 1B's tensors (the embedding tied to the head: once).
std::vector<Shape> llama_1b() {
  const std::int64_t d = 2048, f = 8192, kv = 512, vocab = 128256;
  std::vector<Shape> s{{vocab, d}};
  for (int l = 0; l < 16; ++l) {
    for (const Shape& x : std::vector<Shape>{{d, 0}, {d, d}, {kv, d}, {kv, d}, {d, d}, {d, 0}, {f, d}, {f, d}, {d, f}}) {
      s.push_back(x);
    }
  }
  s.push_back({d, 0});
  return s;
}

template <class T>
void run_adamw(benchmark::State& state) {
  using Op = optim::AdamW<T, T>;
  constexpr bool kMaster = !std::is_same_v<T, float>;
  const std::vector<Shape> shapes = llama_1b();
  std::vector<std::unique_ptr<tlb::DeviceArray<T>>> params, grads;
  std::vector<optim::TensorRef> refs;
  for (const Shape& s : shapes) {
    const auto n = static_cast<std::size_t>(s.rows * (s.cols ? s.cols : 1));
    params.push_back(std::make_unique<tlb::DeviceArray<T>>(n));
    grads.push_back(std::make_unique<tlb::DeviceArray<T>>(n));
    tlb::fill_random(params.back()->p, n, 1 + static_cast<std::uint32_t>(params.size()), 0.04f);
    tlb::fill_random(grads.back()->p, n, 1000 + static_cast<std::uint32_t>(grads.size()), 0.002f);
    refs.push_back({params.back()->p, grads.back()->p, static_cast<std::int64_t>(n), optim::decayed_by_default(s.cols ? 2 : 1)});
  }
  optim::Plan plan;
  if (auto s = optim::Plan::build(refs, &plan); !s) return state.SkipWithError(s.message());
  tlb::DeviceArray<unsigned char> table(plan.bytes());
  const auto image = plan.image();
  TLB_CHECK_CUDA(cudaMemcpy(table.p, image.data(), image.size(), cudaMemcpyHostToDevice));
  const auto total = static_cast<std::size_t>(plan.total());
  tlb::DeviceArray<float> m(total), v(total), master(kMaster ? total : 1);
  tlb::DeviceArray<optim::State> st(1);
  typename Op::Arguments a;
  a.plan = plan.view(table.p);
  a.m = m.p;
  a.v = v.p;
  a.master = kMaster ? master.p : nullptr;
  a.state = st.p;
  a.hyper.lr = 3e-4;
  a.hyper.beta2 = 0.95;
  a.hyper.weight_decay = 0.1;
  a.hyper.max_norm = 1.0;
  tlb::DeviceArray<unsigned char> ws(Op::workspace_size(a));
  const tokenless::Workspace w{ws.p, ws.n};
  if (auto s = Op::reset(a, w); !s) return state.SkipWithError(s.message());
  {  // checked once: one update, a finite norm
    if (auto s = Op::run(a, w); !s) return state.SkipWithError(s.message());
    optim::State h{};
    TLB_CHECK_CUDA(cudaMemcpy(&h, st.p, sizeof h, cudaMemcpyDeviceToHost));
    if (h.step != 1 || h.skip || !(h.grad_norm > 0)) return state.SkipWithError("the step did not run");
  }
  const double sec = tlb::time_iterations(state, [&] { (void)Op::run(a, w); });
  // bf16: g read twice (2 + 2), master, m, v read and written (24), the parameter written (2): 30.
  // fp32: g read twice (4 + 4), the parameter, m, v read and written (24): 32.
  const double bytes = (kMaster ? 30.0 : 32.0) * static_cast<double>(total);
  tlb::report(state, sec, bytes, 0);
  state.counters["params"] = static_cast<double>(total);
  state.counters["tensors"] = static_cast<double>(shapes.size());
}

void BM_AdamW_bf16(benchmark::State& state) { run_adamw<__nv_bfloat16>(state); }
void BM_AdamW_fp32(benchmark::State& state) { run_adamw<float>(state); }

}  // namespace

BENCHMARK(BM_AdamW_bf16)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(20);
BENCHMARK(BM_AdamW_fp32)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(20);

int main(int argc, char** argv) { return tlb::run_main(argc, argv, "bench_optim.json"); }
