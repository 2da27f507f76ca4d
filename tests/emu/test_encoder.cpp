// The byte encoder's kernels on the CPU executor (gpu tier: tests/gpu/test_encoder.cu).
#include "../kernels/encoder.hpp"
