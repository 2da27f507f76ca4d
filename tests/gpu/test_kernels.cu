// The same cases the emu tier runs on the CPU executor (tests/emu/test_kernels.cpp).
#include "../kernels/device_algorithms.hpp"
#include "../kernels/primitives.hpp"
#include "../kernels/row_reduce.hpp"
#include "../kernels/encoder.hpp"
#include "../kernels/patcher.hpp"
#include "../kernels/router.hpp"
