// H-Net / DLCM's router and ratio loss on the CPU executor (gpu tier: tests/gpu/test_router.cu).
#include "../kernels/router.hpp"
