#pragma once
// Everything in tokenless that compiles without nvcc: policies, host
// references and host-side math. Kernels and launch APIs: tokenless.cuh.
#include <tokenless/attention/policy.hpp>
#include <tokenless/core/config.hpp>
#include <tokenless/core/device.hpp>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/functional.hpp>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/row_reduce/policy.hpp>
#include <tokenless/core/status.hpp>
#include <tokenless/core/tensor.hpp>
#include <tokenless/core/tuning.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/varlen.hpp>
#include <tokenless/core/vec.hpp>
#include <tokenless/core/workspace.hpp>
#include <tokenless/encoder/policy.hpp>
#include <tokenless/entropy_model/policy.hpp>
#include <tokenless/patcher/policy.hpp>
#include <tokenless/router/policy.hpp>
#include <tokenless/reference/attention.hpp>
#include <tokenless/reference/gemm.hpp>
#include <tokenless/reference/hash_embedding.hpp>
#include <tokenless/reference/patcher.hpp>
#include <tokenless/reference/router.hpp>
#include <tokenless/reference/row_reduce.hpp>
