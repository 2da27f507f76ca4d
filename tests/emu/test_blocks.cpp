// The backbone blocks on the CPU executor (gpu tier: tests/gpu/test_blocks.cu).
#include "../kernels/blocks.hpp"
