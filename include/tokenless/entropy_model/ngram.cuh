#pragma once
// An entropy source that needs no weights: a byte n-gram context model built
// on the device from a training text (or the input itself), for demos and
// for patching without BLT's entropy model (entropy_model/policy.hpp has the
// model). H[i] is the entropy of p_K for byte i + 1 given the bytes ending
// at i, as for BLT's model. When the scored text is the training text (the
// same buffer and length), its own occurrence is left out of every count
// (leave-one-out), so each entropy measures how predictable the byte is from
// the rest of the text. A different text, even of the same length, is
// scored with every count.
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/workspace.hpp>
#include <tokenless/entropy_model/kernel.cuh>
#include <tokenless/entropy_model/policy.hpp>

#include <cmath>
#include <cstdint>

namespace tokenless::entropy_model {

// Builds the model from `train` and writes the entropies of `text`.
struct NGramEntropy {
  static constexpr const char* kName = "entropy_model::NGramEntropy";
  struct Arguments {
    const std::uint8_t* train = nullptr;  // [n_train], may equal text
    std::int64_t n_train = 0;
    const std::uint8_t* text = nullptr;   // [n]
    std::int64_t n = 0;
    NGramModelConfig config;
    float* entropies = nullptr;           // [n]
  };

  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::not_null({{"train", a.train}, {"text", a.text}, {"entropies", a.entropies}}));
    TL_RETURN_IF_ERROR(check::positive("n_train", a.n_train));
    TL_RETURN_IF_ERROR(check::positive("n", a.n));
    if (a.config.order < 1 || a.config.order > kMaxNGramOrder) {
      return Status::argument(StatusCode::invalid_argument, "config.order", "1 to 8", "%d", a.config.order);
    }
    TL_RETURN_IF_ERROR(check::positive("config.buckets", a.config.buckets));
    if (!(a.config.alpha > 0.0f) || !(a.config.beta > 0.0f) || !std::isfinite(a.config.alpha) || !std::isfinite(a.config.beta)) {
      return Status::argument(StatusCode::invalid_argument, "config.alpha/beta", "finite values > 0", "%g, %g",
                              static_cast<double>(a.config.alpha), static_cast<double>(a.config.beta));
    }
    return Status::ok();
  }

  // Scoring the training text itself: leave each occurrence out of its counts.
  static bool leave_one_out(const Arguments& a) { return a.train == a.text && a.n_train == a.n; }

  // Workspace: the hashed counts [buckets, 256], then the order-1 counts [256, 256].
  static std::size_t c1_offset(const Arguments& a) {
    return align_up(static_cast<std::size_t>(a.config.buckets) * 256 * sizeof(std::uint32_t), kWorkspaceAlignment);
  }
  static std::size_t workspace_size(const Arguments& a) { return c1_offset(a) + 256 * 256 * sizeof(std::uint32_t); }

  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<NGramEntropy>(a, ws));
    auto* ck = ws.at<std::uint32_t>(0);
    auto* c1 = ws.at<std::uint32_t>(c1_offset(a));
    TL_CUDA_TRY(cudaMemsetAsync(ck, 0, static_cast<std::size_t>(a.config.buckets) * 256 * 4, stream));
    TL_CUDA_TRY(cudaMemsetAsync(c1, 0, 256 * 256 * 4, stream));
    static_assert(kTuningSm80.block_threads == detail::CountKernel::kThreads &&
                      kTuningSm90.block_threads == detail::EntropyKernel::kThreads,
                  "the model's kernels are instantiated for 256-thread blocks");
    const int per_sm = tuning_for(compute_capability()).blocks_per_sm;
    TL_RETURN_IF_ERROR(launch<detail::CountKernel>({a.train, a.n_train, a.config.order, a.config.buckets, ck, c1},
                                                   grid_for(a.n_train, 256, per_sm), stream));
    return launch<detail::EntropyKernel>({a.text, a.n, a.config, ck, c1, leave_one_out(a), a.entropies},
                                         grid_for(a.n, 8, per_sm), stream);
  }
};

}  // namespace tokenless::entropy_model
