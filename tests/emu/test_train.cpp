// The kernels' training step on the CPU executor (gpu tier: tests/gpu/test_train.cu).
#include "../kernels/train.hpp"
