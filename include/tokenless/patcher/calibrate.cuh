#pragma once
// Threshold calibration, on the device: the global-entropy threshold θ whose
// patches have a target mean length (BLT's users tune θ by hand).
//
// The smallest θ whose patches number at most positions / target, found
// exactly by a radix select (patcher/select.cuh): nine small kernels that
// read and update the selection state in device memory. The host launches
// them and never waits.
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/workspace.hpp>
#include <tokenless/core/device.hpp>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/varlen.hpp>
#include <tokenless/patcher/select.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace tokenless::patcher {



struct Calibrate {
  static constexpr const char* kName = "patcher::Calibrate";
  struct Arguments {
    const float* entropies = nullptr;         // [batch.total]
    VarlenBatch batch;
    bool include_next_token = false;
    float target_patch_size = 4.5f;           // mean bytes per patch wanted
    float* threshold = nullptr;               // out, on the device
  };

  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::not_null("entropies", a.entropies));
    TL_RETURN_IF_ERROR(check::batch("batch", a.batch, a.include_next_token ? 1 : 0));
    TL_RETURN_IF_ERROR(check::not_null("threshold", a.threshold));
    if (!(a.target_patch_size >= 1.0f) || !std::isfinite(a.target_patch_size)) {
      return Status::argument(StatusCode::invalid_argument, "target_patch_size", "a finite size >= 1", "%g",
                              static_cast<double>(a.target_patch_size));
    }
    return Status::ok();
  }

  // Workspace: the status record, then the selection state.
  static std::size_t workspace_size(const Arguments&) {
    return kStatusBytes + align_up(sizeof(detail::ThresholdState), kWorkspaceAlignment);
  }

  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<Calibrate>(a, ws));
    DeviceStatus* status = status_of(ws);
    auto* st = ws.at<detail::ThresholdState>(kStatusBytes);
    TL_RETURN_IF_ERROR(begin_checks(status, a.batch, stream));
    const detail::Positions lay{a.batch, a.include_next_token ? 1 : 0};
    const dim3 grid =
        grid_for(a.batch.total, detail::kCalibrateThreads, tuning_for(compute_capability()).calibrate_blocks_per_sm);
    TL_RETURN_IF_ERROR(launch<detail::CalibrateResetKernel>({st, status}, dim3(1), stream));
    for (int pass = 0; pass < detail::kCalibratePasses; ++pass) {
      const int shift = 24 - 8 * pass;
      TL_RETURN_IF_ERROR(launch<detail::CalibrateCountKernel>({lay, a.entropies, shift, st, status}, grid, stream));
      TL_RETURN_IF_ERROR(launch<detail::CalibratePickKernel>({lay, a.target_patch_size, shift, st, a.threshold, status},
                                                             dim3(1), stream));
    }
    return Status::ok();
  }

  // The device-side check of the last run() (the batch). Synchronises `stream`.
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    return read_batch_status(kName, a.batch, ws, stream);
  }
};

}  // namespace tokenless::patcher
