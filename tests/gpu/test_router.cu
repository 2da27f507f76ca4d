// H-Net / DLCM's router and ratio loss on a GPU (the emu tier runs them on the CPU: tests/emu/test_router.cpp).
#include "../kernels/router.hpp"
