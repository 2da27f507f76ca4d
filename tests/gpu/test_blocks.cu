// The backbone blocks on a GPU (the emu tier runs them on the CPU: tests/emu/test_blocks.cpp).
#include "../kernels/blocks.hpp"
