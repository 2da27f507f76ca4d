// Compile tier: the attention core's self-attention variants, and every head dim.
#include "instantiate_attention.hpp"

using D64 = at::HeadDims<64>;
TL_ATTENTION_BOTH_DTYPES(at::Full, D64)
TL_ATTENTION_BOTH_DTYPES(at::SlidingWindow, D64)
TL_ATTENTION_BOTH_DTYPES(at::Documents<at::Causal>, D64)
TL_ATTENTION_BOTH_DTYPES(at::LocalBlockCausal, D64)
TL_ATTENTION_BOTH_DTYPES(at::Causal, at::SupportedHeadDims)
template void instantiate_attention<at::SoftCap<at::Causal>, __nv_bfloat16, at::HeadDims<128>>();
