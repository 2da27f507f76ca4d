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
  tokenless::DeviceBuffer<float> in(h.size()), out(4);
  float got[4] = {};
  tokenless::Status s = in.status() ? out.status() : in.status();
  if (s) s = in.upload(h);
  rr::Forward<rr::SumPolicy, float>::Arguments args{in.get(), out.get(), 4, 100, 0};
  if (s) s = rr::Forward<rr::SumPolicy, float>::run(args);
  if (s) s = out.download(got, 4);
  if (!s) std::printf("consumer: %s\n", s.message());
  const bool ok = s.is_ok() && got[0] == 4950.0f && got[3] == 4950.0f;
  std::printf(ok ? "consumer ok (%s backend)\n" : "consumer FAILED (%s backend)\n", tokenless::backend_name());
  return ok ? 0 : 1;
}
