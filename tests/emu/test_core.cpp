// The core's kernels on the CPU executor against their host references:
// device-wide algorithms, warp and block primitives, RowReduce. The gpu tier
// compiles the same cases with nvcc (tests/gpu/test_core.cu).
#include "../kernels/device_algorithms.hpp"
#include "../kernels/primitives.hpp"
#include "../kernels/row_reduce.hpp"
