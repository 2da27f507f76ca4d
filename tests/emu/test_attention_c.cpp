// The attention core on the CPU executor, part 2 of 5 (tests/kernels/attention.hpp;
// gpu tier: tests/gpu/test_attention.cu).
#define TLT_ATTENTION_PART 2
#include "../kernels/attention.hpp"
