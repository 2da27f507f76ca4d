// H-Net's dechunk on a GPU (the emu tier runs it on the CPU: tests/emu/test_dechunk.cpp).
#include "../kernels/dechunk.hpp"
