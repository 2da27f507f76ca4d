#pragma once
// All of tokenless: tokenless.hpp plus the device code and launch APIs.
// Compile with nvcc, or with a host compiler and TOKENLESS_EMU defined to run
// the kernels on the CPU SIMT executor.
#include <tokenless/tokenless.hpp>

#include <tokenless/core/block.cuh>
#include <tokenless/core/cublaslt.hpp>
#include <tokenless/core/device_algorithms.cuh>
#include <tokenless/core/device_buffer.cuh>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/launch.cuh>
#include <tokenless/core/row_reduce/row_reduce.cuh>
#include <tokenless/core/warp.cuh>
#include <tokenless/encoder/hash_embedding.cuh>
#include <tokenless/entropy_model/ngram.cuh>
#include <tokenless/patcher/calibrate.cuh>
#include <tokenless/patcher/patcher.cuh>
#include <tokenless/patcher/streaming.cuh>
#include <tokenless/router/router.cuh>
#include <tokenless/attention/attention.cuh>
#include <tokenless/attention/decode.cuh>
#include <tokenless/blocks/activation.cuh>
#include <tokenless/blocks/moe.cuh>
#include <tokenless/blocks/norm.cuh>
#include <tokenless/blocks/rope.cuh>
#include <tokenless/blocks/decoder.cuh>
#include <tokenless/blocks/tokens.cuh>
#include <tokenless/bottleneck/concepts.cuh>
#include <tokenless/bottleneck/dechunk.cuh>
#include <tokenless/bottleneck/pool.cuh>
#include <tokenless/bottleneck/project.cuh>
#include <tokenless/heads/byte_head.cuh>
#include <tokenless/heads/dpo.cuh>
#include <tokenless/heads/linear_cross_entropy.cuh>
#include <tokenless/heads/mtp.cuh>
#include <tokenless/heads/multi_token.cuh>
#include <tokenless/heads/speculative.cuh>
#include <tokenless/optim/adamw.cuh>
