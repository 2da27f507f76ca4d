// The concept bottleneck on the CPU executor (gpu tier: tests/gpu/test_bottleneck.cu).
#include "../kernels/bottleneck.hpp"
