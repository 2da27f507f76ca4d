// The attention core on the CPU executor, part 1 of 5 (tests/kernels/attention.hpp;
// gpu tier: tests/gpu/test_attention.cu).
#define TLT_ATTENTION_PART 1
#include "../kernels/attention.hpp"
