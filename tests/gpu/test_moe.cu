// Mixtral-style MoE on a GPU (emu tier: tests/emu/test_moe.cpp).
#include "../kernels/moe.hpp"
