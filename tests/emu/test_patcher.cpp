// The patcher's kernels, calibration, streaming and the n-gram entropy model
// on the CPU executor (gpu tier: tests/gpu/test_patcher.cu).
#include "../kernels/patcher.hpp"
