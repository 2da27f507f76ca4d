// H-Net's dechunk on the CPU executor (gpu tier: tests/gpu/test_dechunk.cu).
#include "../kernels/dechunk.hpp"
