// BLT assembled from the kernels, on a GPU (the emu tier runs it on the CPU: tests/emu/test_blt.cpp).
#include "../kernels/blt.hpp"
