#pragma once
// Smoke demo: reads bytes (a file, or a built-in sentence), views them as rows
// of 64 bytes, and computes each row's sum, sum of squares and max with the
// RowReduce operation, on a GPU or on the CPU SIMT executor. Checks every
// value against the host reference and prints a summary.
#include <tokenless/tokenless.cuh>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace smoke {

template <class P>
int reduce_rows(const char* label, const std::vector<float>& host, float* d_in, float* d_out, std::int64_t rows,
                std::int64_t cols) {
  namespace rr = tokenless::row_reduce;
  typename rr::Forward<P, float>::Arguments args{d_in, d_out, rows, cols, 0};
  auto t0 = std::chrono::steady_clock::now();
  tokenless::Status s = rr::Forward<P, float>::run(args);
  if (s) s = tokenless::status_from_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  auto t1 = std::chrono::steady_clock::now();
  if (!s) {
    std::fprintf(stderr, "%s failed: %s\n", label, s.message());
    return 1;
  }
  std::vector<float> got(static_cast<std::size_t>(rows));
  cudaMemcpy(got.data(), d_out, got.size() * sizeof(float), cudaMemcpyDeviceToHost);
  auto want = tokenless::reference::row_reduce<P>(host.data(), rows, cols, cols);
  double worst = 0;
  for (std::size_t r = 0; r < got.size(); ++r) worst = std::fmax(worst, std::fabs(got[r] - want[r]) / (1 + std::fabs(want[r])));
  std::printf("  %-12s row 0 = %10.1f   max rel. error vs reference %.2e   %.3f ms\n", label, got[0], worst,
              std::chrono::duration<double, std::milli>(t1 - t0).count());
  return worst < 1e-5 ? 0 : 1;
}

inline int main(int argc, char** argv) {
  std::string text = "tokenless reads raw bytes: no tokenizer, no vocabulary file, just 256 values and patches.";
  if (argc > 1) {
    std::ifstream f(argv[1], std::ios::binary);
    if (!f) {
      std::fprintf(stderr, "cannot open %s\n", argv[1]);
      return 2;
    }
    text.assign(std::istreambuf_iterator<char>(f), {});
  }
  const std::int64_t cols = 64;
  const std::int64_t rows = std::max<std::int64_t>(1, static_cast<std::int64_t>(text.size()) / cols);
  std::vector<float> host(static_cast<std::size_t>(rows * cols), 0.0f);
  for (std::size_t i = 0; i < host.size() && i < text.size(); ++i) host[i] = static_cast<unsigned char>(text[i]);

  if (!tokenless::device_available()) {
    std::printf("no CUDA device found\n");
    return 3;
  }
  tokenless::DeviceProperties p;
  if (tokenless::Status s = tokenless::device_properties(p); !s) {
    std::fprintf(stderr, "%s\n", s.message());
    return 1;
  }
  std::printf("tokenless smoke demo on %s (backend: %s)\n", p.name, tokenless::backend_name());
  std::printf("  %lld bytes as %lld rows of %lld\n", static_cast<long long>(text.size()), static_cast<long long>(rows),
              static_cast<long long>(cols));
  tokenless::DeviceBuffer<float> in(host.size()), out(static_cast<std::size_t>(rows));
  tokenless::Status s = in.status() ? out.status() : in.status();
  if (s) s = in.upload(host);
  if (!s) {
    std::fprintf(stderr, "%s\n", s.message());
    return 1;
  }
  float* d_in = in.get();
  float* d_out = out.get();
  namespace rr = tokenless::row_reduce;
  int failures = reduce_rows<rr::SumPolicy>("sum", host, d_in, d_out, rows, cols) +
                 reduce_rows<rr::SumSquaresPolicy>("sum_squares", host, d_in, d_out, rows, cols) +
                 reduce_rows<rr::MaxPolicy>("max", host, d_in, d_out, rows, cols);
  std::printf(failures ? "smoke demo: FAILED\n" : "smoke demo: all results match the host reference\n");
  return failures ? 1 : 0;
}

}  // namespace smoke
