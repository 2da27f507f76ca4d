// Core benchmarks: the RowReduce worked example, a memory-bound kernel that
// should approach the measured copy bandwidth.
#include "harness.cuh"

#include <tokenless/reference/row_reduce.hpp>

#include <cmath>
#include <random>

namespace rr = tokenless::row_reduce;

template <class P, class T>
static void BM_RowReduceForward(benchmark::State& state) {
  const std::int64_t rows = state.range(0), cols = state.range(1);
  std::vector<T> h(static_cast<std::size_t>(rows * cols));
  std::mt19937 rng(1);
  for (auto& x : h) x = tokenless::from_float<T>(static_cast<float>(rng() % 1000) / 500.0f - 1.0f);
  tlb::DeviceArray<T> in(h.size());
  tlb::DeviceArray<float> out(static_cast<std::size_t>(rows));
  cudaMemcpy(in.p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
  typename rr::Forward<P, T>::Arguments args{in.p, out.p, rows, cols, 0};

  // Check once before timing.
  if (auto s = rr::Forward<P, T>::run(args); !s) {
    state.SkipWithError(s.message());
    return;
  }
  std::vector<float> got(static_cast<std::size_t>(rows));
  cudaMemcpy(got.data(), out.p, got.size() * sizeof(float), cudaMemcpyDeviceToHost);
  const auto want = tokenless::reference::row_reduce<P>(h.data(), std::min<std::int64_t>(rows, 8), cols, cols);
  for (std::size_t r = 0; r < want.size(); ++r) {
    if (std::fabs(got[r] - want[r]) > 1e-3 * (1 + std::fabs(want[r]))) {
      state.SkipWithError("result does not match the host reference");
      return;
    }
  }
  const double t = tlb::time_iterations(state, [&] { (void)rr::Forward<P, T>::run(args); });
  const double bytes = static_cast<double>(rows * cols) * sizeof(T) + static_cast<double>(rows) * sizeof(float);
  tlb::report(state, t, bytes, static_cast<double>(rows * cols));
}

#define TLB_ROW_REDUCE(P, T)                                                         \
  BENCHMARK(BM_RowReduceForward<P, T>)                                               \
      ->Args({4096, 4096})->Args({16384, 1024})->Args({1024, 65536})->Args({32768, 260}) \
      ->UseManualTime()->Unit(benchmark::kMicrosecond);
TLB_ROW_REDUCE(rr::SumPolicy, float)
TLB_ROW_REDUCE(rr::SumPolicy, __nv_bfloat16)
TLB_ROW_REDUCE(rr::MaxPolicy, __nv_bfloat16)

int main(int argc, char** argv) { return tlb::run_main(argc, argv, "tokenless_bench_core.json"); }
