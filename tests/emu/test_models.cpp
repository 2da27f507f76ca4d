// The assembled decoder on the CPU executor (gpu tier: tests/gpu/test_models.cu).
#include "../kernels/models.hpp"
