// The core's kernels on a GPU against their host references: device-wide
// algorithms, warp and block primitives, RowReduce (the emu tier runs the same
// cases on the CPU: tests/emu/test_core.cpp).
#include "../kernels/device_algorithms.hpp"
#include "../kernels/primitives.hpp"
#include "../kernels/row_reduce.hpp"
