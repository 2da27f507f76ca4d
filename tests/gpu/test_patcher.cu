// The patcher's kernels, calibration, streaming and the n-gram entropy model
// on a GPU (the emu tier runs them on the CPU: tests/emu/test_patcher.cpp).
#include "../kernels/patcher.hpp"
