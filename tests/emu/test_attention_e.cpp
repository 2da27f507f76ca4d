// The attention core on the CPU executor, part 4 of 5: the race detector's
// cases and the KV cache (tests/kernels/attention.hpp). The ThreadSanitizer
// build compiles this attention unit alone.
#define TLT_ATTENTION_PART 4
#include "../kernels/attention.hpp"
