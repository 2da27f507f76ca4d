// Compile tier: the attention core's BLT and DLCM variants, and decoding.
#include "instantiate_attention.hpp"

using D64 = at::HeadDims<64>;
TL_ATTENTION_BOTH_DTYPES(at::PatchesToBytes, D64)
TL_ATTENTION_BOTH_DTYPES(at::BytesToPatches, D64)
TL_ATTENTION_BOTH_DTYPES(at::TokensToConcepts, D64)
template void instantiate_attention<at::PatchesToBytes, __nv_bfloat16, at::HeadDims<128>>();

// Decoding from a KV cache: causal at every head dim, Mistral's window, the cache's updates.
template void instantiate_decode<at::Causal, __nv_bfloat16, at::SupportedHeadDims>();
template void instantiate_decode<at::Causal, __half, at::HeadDims<128>>();
template void instantiate_decode<at::SlidingWindow, __nv_bfloat16, at::HeadDims<64>>();
template void instantiate_cache<__nv_bfloat16>();
template void instantiate_cache<__half>();
