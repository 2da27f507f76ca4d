// BLT assembled from the kernels, on the CPU executor (gpu tier: tests/gpu/test_blt.cu).
#include "../kernels/blt.hpp"
