#pragma once
// The CPU SIMT executor's stand-in for <cuda_runtime.h>. A translation unit
// compiled with TOKENLESS_EMU defined gets this instead of the toolkit, so the
// library's kernel sources compile with a host compiler and run on the CPU.
//
// Limits: no inline PTX (mma, wgmma, ldmatrix, cp.async, TMA), no weak memory
// ordering, and host floating point (no FMA contraction differences, no fast
// intrinsics), so tests compare with tolerances.
#if defined(__CUDACC__)
#error "tokenless/emu/emu.hpp is for host compilers; nvcc uses the real CUDA runtime"
#endif
#include <tokenless/emu/cuda_types.hpp>
#include <tokenless/emu/executor.hpp>
#include <tokenless/emu/intrinsics.hpp>
#include <tokenless/emu/runtime.hpp>

// Blocks run one at a time, so block-shared storage can be static storage.
#define __shared__ static

#define threadIdx (::tokenless::emu::detail::current()->tid)
#define blockIdx (::tokenless::emu::detail::current()->block->block_idx)
#define blockDim (::tokenless::emu::detail::current()->block->block_dim)
#define gridDim (::tokenless::emu::detail::current()->block->grid_dim)
inline constexpr int warpSize = 32;
