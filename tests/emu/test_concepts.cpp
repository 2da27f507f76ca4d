// CoCoMix's sparse concepts on the CPU executor (gpu tier: tests/gpu/test_concepts.cu).
#include "../kernels/concepts.hpp"
