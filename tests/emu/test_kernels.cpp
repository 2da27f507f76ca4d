// Every kernel of the library on the CPU executor against its host reference.
// The gpu tier compiles the same cases with nvcc (tests/gpu/test_kernels.cu).
#include "../kernels/device_algorithms.hpp"
#include "../kernels/primitives.hpp"
#include "../kernels/row_reduce.hpp"
#include "../kernels/encoder.hpp"
#include "../kernels/patcher.hpp"
#include "../kernels/router.hpp"
