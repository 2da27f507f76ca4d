#pragma once
// Benchmark harness: CUDA-event timing, L2 flushing, measured peaks.
//
// Every benchmark reports the bytes and FLOPs it processes and its fraction
// of the *measured* copy bandwidth (a device-to-device copy) or bf16 matrix
// peak (a large cuBLASLt GEMM), never of a datasheet number.
#include <benchmark/benchmark.h>
#include <tokenless/tokenless.cuh>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace tlb {

// The harness's own kernels are launched with <<< >>> under nvcc. CI checks
// every benchmark's source with g++ against the CPU executor's headers
// (-fsyntax-only: the compile tier's compile.bench.* tests), where the launch
// is an unevaluated call that checks its arguments.
#if defined(TOKENLESS_EMU)
#define TLB_LAUNCH(kernel, grid, block, ...) ((void)(grid), (void)(block), (void)sizeof((kernel(__VA_ARGS__), 0)))
#else
#define TLB_LAUNCH(kernel, grid, block, ...) kernel<<<(grid), (block)>>>(__VA_ARGS__)
#endif

#define TLB_CHECK_CUDA(expr)                                                                  \
  do {                                                                                        \
    cudaError_t e_ = (expr);                                                                  \
    if (e_ != cudaSuccess) {                                                                  \
      std::fprintf(stderr, "%s failed: %s\n", #expr, cudaGetErrorString(e_));                 \
      std::exit(1);                                                                           \
    }                                                                                         \
  } while (0)

// The library's DeviceBuffer; a failed allocation ends the benchmark run
// with the Status's message. p and n name the pointer and the count.
template <class T>
struct DeviceArray : tokenless::DeviceBuffer<T> {
  T* p = nullptr;
  std::size_t n = 0;
  explicit DeviceArray(std::size_t count) : tokenless::DeviceBuffer<T>(count), p(this->get()), n(count) {
    if (!this->status()) {
      std::fprintf(stderr, "allocating %zu bytes failed: %s\n", count * sizeof(T), this->status().message());
      std::exit(1);
    }
  }
};

// Evicts L2 by writing a buffer twice its size.
class L2Flusher {
 public:
  L2Flusher() {
    tokenless::DeviceProperties p;
    if (tokenless::device_properties(p)) bytes_ = std::max<std::size_t>(2 * p.l2_bytes, 1 << 20);
    TLB_CHECK_CUDA(cudaMalloc(&buf_, bytes_));
  }
  ~L2Flusher() { cudaFree(buf_); }
  void flush(cudaStream_t s) { TLB_CHECK_CUDA(cudaMemsetAsync(buf_, 0, bytes_, s)); }

 private:
  void* buf_ = nullptr;
  std::size_t bytes_ = 64 << 20;
};

// Times fn() once per iteration between CUDA events, after an L2 flush.
// Returns the mean seconds per iteration.
template <class F>
double time_iterations(benchmark::State& state, F&& fn, cudaStream_t stream = nullptr) {
  static L2Flusher flusher;
  cudaEvent_t start, stop;
  TLB_CHECK_CUDA(cudaEventCreate(&start));
  TLB_CHECK_CUDA(cudaEventCreate(&stop));
  double total = 0;
  for (auto _ : state) {
    flusher.flush(stream);
    TLB_CHECK_CUDA(cudaEventRecord(start, stream));
    fn();
    TLB_CHECK_CUDA(cudaEventRecord(stop, stream));
    TLB_CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    TLB_CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    state.SetIterationTime(ms * 1e-3);
    total += ms * 1e-3;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return state.iterations() ? total / static_cast<double>(state.iterations()) : 0.0;
}

// Fills a device array with uniform values in [-0.5, 0.5) · scale from a hash
// of the index: never time on zeros (they hide unwritten outputs and wrong
// indexing).
template <class T>
__global__ void fill_random_kernel(T* p, std::size_t n, std::uint32_t seed, float scale) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n; i += std::size_t{gridDim.x} * blockDim.x) {
    std::uint32_t h = static_cast<std::uint32_t>(i) * 2654435761u ^ seed ^ static_cast<std::uint32_t>(i >> 32);
    h ^= h >> 16;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = tokenless::from_float<T>((static_cast<float>(h >> 8) * (1.0f / 16777216.0f) - 0.5f) * scale);
  }
}

template <class T>
void fill_random(T* p, std::size_t n, std::uint32_t seed, float scale = 1.0f) {
  TLB_LAUNCH(fill_random_kernel<T>, 1024, 256, p, n, seed, scale);
  TLB_CHECK_CUDA(cudaGetLastError());
}

struct Peaks {
  double copy_bytes_per_s = 0;  // read + write bytes of a device-to-device copy
  double bf16_flops_per_s = 0;  // a large bf16 GEMM through cuBLASLt
};

inline double best_of(int reps, const std::function<void()>& fn) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  fn();  // warm-up
  float best = 1e30f;
  for (int i = 0; i < reps; ++i) {
    cudaEventRecord(a);
    fn();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms;
    cudaEventElapsedTime(&ms, a, b);
    best = std::min(best, ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return best * 1e-3;
}

inline const Peaks& peaks() {
  static const Peaks p = [] {
    Peaks r;
    const std::size_t bytes = std::size_t{1} << 30;
    DeviceArray<unsigned char> src(bytes), dst(bytes);
    const double t = best_of(10, [&] { cudaMemcpyAsync(dst.p, src.p, bytes, cudaMemcpyDeviceToDevice); });
    r.copy_bytes_per_s = 2.0 * static_cast<double>(bytes) / t;

    const std::int64_t n = 8192;
    DeviceArray<__nv_bfloat16> a(n * n), b(n * n), d(n * n);
    {
      // Random operands: a product of zeros runs faster than real data does.
      std::vector<__nv_bfloat16> host(static_cast<std::size_t>(n * n));
      std::uint32_t state = 12345u;
      for (auto& v : host) {
        state = state * 1664525u + 1013904223u;
        v = __float2bfloat16(static_cast<float>(state >> 8) * (1.0f / 16777216.0f) - 0.5f);
      }
      TLB_CHECK_CUDA(cudaMemcpy(a.p, host.data(), host.size() * 2, cudaMemcpyHostToDevice));
      TLB_CHECK_CUDA(cudaMemcpy(b.p, host.data(), host.size() * 2, cudaMemcpyHostToDevice));
    }
    DeviceArray<unsigned char> ws(tokenless::blas::Gemm::workspace_size({}));
    tokenless::blas::LtHandle h;
    if (tokenless::blas::LtHandle::create(h)) {
      tokenless::blas::Gemm::Arguments g;
      g.handle = &h;
      g.dtype = tokenless::DType::bf16;
      g.m = g.n = g.k = n;
      g.a = a.p;
      g.lda = n;
      g.b = b.p;
      g.ldb = n;
      g.trans_b = true;
      g.d = d.p;
      g.ldd = n;
      const double tg = best_of(10, [&] { (void)tokenless::blas::Gemm::run(g, {ws.p, ws.n}, nullptr); });
      r.bf16_flops_per_s = 2.0 * static_cast<double>(n) * n * n / tg;
    }
    std::printf("measured peaks: copy %.1f GB/s, bf16 GEMM %.1f TFLOP/s\n", r.copy_bytes_per_s * 1e-9,
                r.bf16_flops_per_s * 1e-12);
    return r;
  }();
  return p;
}

// Bytes and FLOPs per iteration, and the fractions of the measured peaks.
inline void report(benchmark::State& state, double seconds_per_iter, double bytes, double flops) {
  using benchmark::Counter;
  state.counters["bytes"] = Counter(bytes, Counter::kIsIterationInvariantRate, Counter::kIs1024);
  state.counters["flops"] = Counter(flops, Counter::kIsIterationInvariantRate);
  if (seconds_per_iter > 0) {
    state.counters["frac_copy_bw"] = bytes / seconds_per_iter / peaks().copy_bytes_per_s;
    if (flops > 0 && peaks().bf16_flops_per_s > 0) {
      state.counters["frac_bf16_peak"] = flops / seconds_per_iter / peaks().bf16_flops_per_s;
    }
  }
}

// main(): skips cleanly without a GPU, writes JSON next to the binary by default.
inline int run_main(int argc, char** argv, const char* default_json) {
  if (!tokenless::device_available()) {
    std::printf("no CUDA device: benchmarks skipped\n");
    return 0;
  }
  std::vector<char*> args(argv, argv + argc);
  std::string out = std::string("--benchmark_out=") + default_json;
  std::string fmt = "--benchmark_out_format=json";
  bool has_out = false;
  for (int i = 1; i < argc; ++i) has_out |= std::string(argv[i]).rfind("--benchmark_out=", 0) == 0;
  if (!has_out) {
    args.push_back(out.data());
    args.push_back(fmt.data());
  }
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  (void)peaks();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace tlb
