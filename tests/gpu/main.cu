// The gpu tier: the kernel cases of the emu tier, compiled by nvcc and run on
// a real device. Without one it says so and exits 77 (ctest: skipped).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <tokenless/tokenless.cuh>

#include <cstdio>

int main(int argc, char** argv) {
  if (!tokenless::device_available()) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  tokenless::DeviceProperties p;
  if (tokenless::device_properties(p)) {
    std::printf("tokenless gpu tier on %s (sm_%d, %d SMs)\n", p.name, p.compute_capability(), p.sm_count);
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
