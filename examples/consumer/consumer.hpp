#pragma once
#include <tokenless/tokenless.cuh>

#include <cstdio>
#include <vector>

// Sums the rows of a small matrix with tokenless and checks the answer.
inline int consumer_main() {
  namespace rr = tokenless::row_reduce;
  std::vector<float> h(4 * 100);
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<float>(i % 100);
  if (!tokenless::device_available()) {
    std::printf("consumer ok (built; no device to run on)\n");
    return 0;
  }
  float *in = nullptr, *out = nullptr;
  cudaMalloc(&in, h.size() * sizeof(float));
  cudaMalloc(&out, 4 * sizeof(float));
  cudaMemcpy(in, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice);
  rr::Forward<rr::SumPolicy, float>::Arguments args{in, out, 4, 100, 0};
  tokenless::Status s = rr::Forward<rr::SumPolicy, float>::run(args);
  float got[4] = {};
  cudaMemcpy(got, out, sizeof got, cudaMemcpyDeviceToHost);
  cudaFree(in);
  cudaFree(out);
  const bool ok = s.is_ok() && got[0] == 4950.0f && got[3] == 4950.0f;
  std::printf(ok ? "consumer ok (%s backend)\n" : "consumer FAILED (%s backend)\n", tokenless::backend_name());
  return ok ? 0 : 1;
}
