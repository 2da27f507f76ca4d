#pragma once
// The compile tier's encoder instantiations, shared by its translation units
// (split in two so that the sweep builds on two cores).
#include <tokenless/tokenless.cuh>

namespace enc = tokenless::encoder;

static_assert(tokenless::TuningSelector<enc::tuning_for>);

template <class P, class T, class IdT>
void instantiate() {
  static_assert(tokenless::Operation<enc::HashEmbeddingForward<P, T, IdT>> &&
                tokenless::Operation<enc::HashEmbeddingBackward<P, T, IdT>> &&
                tokenless::Operation<enc::HashEmbeddingSparseBackward<P, T, IdT>>);
  (void)&enc::HashEmbeddingForward<P, T, IdT>::run;
  (void)&enc::HashEmbeddingBackward<P, T, IdT>::run;
  (void)&enc::HashEmbeddingBackward<P, T, IdT, __nv_bfloat16>::run;
  (void)&enc::HashEmbeddingBackward<P, T, IdT, __half>::run;
  (void)&enc::HashEmbeddingSparseBackward<P, T, IdT>::run;
  (void)&enc::HashEmbeddingSparseBackward<P, T, IdT, __nv_bfloat16>::run;
  (void)&enc::HashEmbeddingSparseBackward<P, T, IdT, __half>::run;
}

template <class P>
void all_dtypes_and_ids() {
  instantiate<P, float, std::uint8_t>();
  instantiate<P, __half, std::uint8_t>();
  instantiate<P, __nv_bfloat16, std::uint8_t>();
  instantiate<P, float, std::int32_t>();
  instantiate<P, __half, std::int32_t>();
  instantiate<P, __nv_bfloat16, std::int32_t>();
}

