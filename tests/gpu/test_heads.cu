// The prediction heads on a GPU (the emu tier runs them on the CPU: tests/emu/test_heads.cpp).
#include "../kernels/heads.hpp"
#include "../kernels/byte_head.hpp"
#include "../kernels/speculative.hpp"
#include "../kernels/mtp.hpp"
