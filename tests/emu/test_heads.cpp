// The prediction heads on the CPU executor (gpu tier: tests/gpu/test_heads.cu).
#include "../kernels/heads.hpp"
#include "../kernels/byte_head.hpp"
#include "../kernels/speculative.hpp"
#include "../kernels/mtp.hpp"
