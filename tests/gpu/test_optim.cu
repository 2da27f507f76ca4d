// The fused optimizer on a GPU (the emu tier runs it on the CPU: tests/emu/test_optim.cpp).
#include "../kernels/optim.hpp"
