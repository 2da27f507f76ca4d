// The fused optimizer on the CPU executor (gpu tier: tests/gpu/test_optim.cu).
#include "../kernels/optim.hpp"
