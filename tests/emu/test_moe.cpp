// Mixtral-style MoE on the CPU executor (gpu tier: tests/gpu/test_moe.cu).
#include "../kernels/moe.hpp"
