// Compile tier: the attention core's BLT and DLCM variants.
#include "instantiate_attention.hpp"

using D64 = at::HeadDims<64>;
TL_ATTENTION_BOTH_DTYPES(at::PatchesToBytes, D64)
TL_ATTENTION_BOTH_DTYPES(at::BytesToPatches, D64)
TL_ATTENTION_BOTH_DTYPES(at::TokensToConcepts, D64)
template void instantiate_attention<at::PatchesToBytes, __nv_bfloat16, at::HeadDims<128>>();
