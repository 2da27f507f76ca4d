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

// Not the full cross product (24 per policy took four minutes a unit on CI's
// two cores): each policy with two storage/id pairs, chosen so that every
// policy, every storage type and both id types meet every operation and
// every gradient type (instantiate() takes them all), and each storage type
// meets both id types somewhere.
template <class P, class T1, class Id1, class T2, class Id2>
void two_pairs() {
  instantiate<P, T1, Id1>();
  instantiate<P, T2, Id2>();
}

