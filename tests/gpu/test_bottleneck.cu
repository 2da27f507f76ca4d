// The concept bottleneck on a GPU (the emu tier runs it on the CPU: tests/emu/test_bottleneck.cpp).
#include "../kernels/bottleneck.hpp"
