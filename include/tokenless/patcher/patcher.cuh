#pragma once
// The fused patcher: logits (or given entropies, or tokens) in, patches out,
// for a varlen batch, with no host synchronisation.
//
// Outputs: the entropies [batch.total] when computed from logits, and the
// patches in CSR form (PatchOutputs, patcher/policy.hpp):
//   patches.flags    [n_pos]           1 where a patch starts
//   patches.ids      [n_pos]           global patch index of every position
//   patches.offsets  [num_seqs + 1]    sequence b owns patches [off[b], off[b+1])
//   patches.starts   [capacity]        start of each patch, within its sequence
//   patches.lengths  [capacity]
// where n_pos = batch.total (+ num_seqs with include_next_token: each
// sequence gets the position of its next byte). The total patch count is
// patches.offsets[num_seqs], on the device. An empty sequence owns no position
// and no patch (with include_next_token: one position, one patch).
//
// What only the device can see — a cu_seqlens that is not a prefix sum, more
// patches than `capacity` — is recorded in the workspace, and read_status()
// (which synchronises) returns it as a Status, with the capacity needed on
// overflow. Bad offsets write nothing; an overflow writes nothing but the
// entropies computed from logits (counting needs them, and a second run can
// take them as entropies_in).
#include <tokenless/core/device.hpp>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/varlen.hpp>
#include <tokenless/core/workspace.hpp>
#include <tokenless/patcher/kernel.cuh>
#include <tokenless/patcher/policy.hpp>
#include <tokenless/patcher/select.cuh>

#include <algorithm>
#include <cmath>
#include <type_traits>

namespace tokenless::patcher {

template <BoundaryPolicy Rule, class LogitT = float>
struct Patcher {
  static_assert(std::is_same_v<LogitT, float> || std::is_same_v<LogitT, __nv_bfloat16> ||
                    std::is_same_v<LogitT, __half>,
                "logits are fp32, bf16 or fp16");
  static constexpr const char* kName = "patcher::Patcher";

  struct Arguments {
    Rule rule{};
    // Inputs: logits, or entropies, for entropy rules; tokens for token rules.
    const LogitT* logits = nullptr;      // [batch.total, vocab], vocab <= 512
    int vocab = 260;
    const float* entropies_in = nullptr; // [batch.total], used when logits is null
    const std::int32_t* tokens = nullptr;  // [batch.total] BLT ids
    VarlenBatch batch;
    bool include_next_token = false;
    int max_patch_length = 0;            // 0: no cap
    // Outputs.
    float* entropies = nullptr;          // [batch.total]; needed when logits are given
    PatchOutputs patches;
  };

  // Entropies from logits are written before the patches are counted.
  static bool computes_entropies(const Arguments& a) { return Rule::needs_entropies && a.logits != nullptr; }

  static std::int64_t positions(const Arguments& a) {
    return a.batch.total + (a.include_next_token ? a.batch.num_seqs : 0);
  }

  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check_rule(a.rule));
    TL_RETURN_IF_ERROR(check::batch("batch", a.batch, a.include_next_token ? 1 : 0));
    if constexpr (Rule::needs_entropies) {
      if (a.logits) {
        if (a.vocab <= 0 || a.vocab > detail::kMaxVocab) {
          return Status::argument(a.vocab <= 0 ? StatusCode::invalid_argument : StatusCode::unsupported, "vocab",
                                  "0 < V <= 512", "%d", a.vocab);
        }
        TL_RETURN_IF_ERROR(check::aligned("logits", a.logits, sizeof(LogitT)));
        TL_RETURN_IF_ERROR(check::not_null("entropies", a.entropies));
      } else if (!a.entropies_in) {
        return Status::argument(StatusCode::null_pointer, "logits", "logits or entropies_in for an entropy rule",
                                "neither");
      }
    }
    if constexpr (Rule::needs_tokens) TL_RETURN_IF_ERROR(check::not_null("tokens", a.tokens));
    if (a.max_patch_length < 0) {
      return Status::argument(StatusCode::invalid_argument, "max_patch_length", ">= 0 (0: no cap)", "%d",
                              a.max_patch_length);
    }
    const PatchOutputs& o = a.patches;
    TL_RETURN_IF_ERROR(check::not_null({{"patches.flags", o.flags},
                                        {"patches.ids", o.ids},
                                        {"patches.offsets", o.offsets},
                                        {"patches.starts", o.starts},
                                        {"patches.lengths", o.lengths}}));
    TL_RETURN_IF_ERROR(check::positive("patches.capacity", o.capacity));
    return Status::ok();
  }

  struct Layout {
    std::size_t status = 0, tiles = 0, rule_words = 0, total = 0, bytes = 0;
    std::size_t select_state = 0, select_hist = 0, selected_from = 0;  // selection rules only
  };

  static std::int64_t segment_tiles(const Arguments& a) { return (positions(a) + detail::kSegTile - 1) / detail::kSegTile; }

  static Layout layout(const Arguments& a) {
    Layout l;
    WorkspaceLayout w;
    l.status = w.add(sizeof(DeviceStatus));
    l.tiles = w.add_array<detail::SegmentTile>(std::max<std::int64_t>(1, segment_tiles(a)));
    l.rule_words = w.add_array<detail::RuleWord>(std::max<std::int64_t>(1, segment_tiles(a)) * detail::kSegThreads);
    l.total = w.add_array<std::int32_t>(1);
    if constexpr (needs_selection_v<Rule>) {
      l.select_state = w.add_array<detail::SelectState>(a.batch.num_seqs);
      l.select_hist = w.add_array<std::uint32_t>(a.batch.num_seqs * detail::kSelectBins);
      l.selected_from = w.add_array<std::uint64_t>(a.batch.num_seqs);
    }
    l.bytes = w.bytes();
    return l;
  }

  static std::size_t workspace_size(const Arguments& a) { return layout(a).bytes; }

  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<Patcher>(a, ws));
    const Layout l = layout(a);
    auto* status = ws.at<DeviceStatus>(l.status);
    const std::int64_t n_pos = positions(a);
    const detail::Positions lay{a.batch, a.include_next_token ? 1 : 0};
    const Tuning tuning = tuning_for(compute_capability());
    TL_RETURN_IF_ERROR(begin_checks(status, a.batch, stream));
    const float* entropies = a.entropies_in;
    if constexpr (Rule::needs_entropies) {
      if (a.logits) {
        using EK = detail::EntropyKernel<LogitT>;
        const std::int64_t tile_rows =
            detail::entropy_tile_rows(a.vocab, static_cast<int>(sizeof(LogitT)), tuning.entropy_tile_bytes);
        const auto smem = 2 * static_cast<std::size_t>(tile_rows * a.vocab) * sizeof(LogitT);  // double-buffered
        if (smem > 48 * 1024) TL_RETURN_IF_ERROR(set_max_dynamic_smem<EK>(smem));
        // A persistent grid of exactly one wave: every block streams its share
        // of tiles, and no partial last wave idles most of the device.
        const dim3 grid = grid_for(a.batch.total, tile_rows, blocks_per_sm<EK>(smem));
        TL_RETURN_IF_ERROR(launch<EK>({a.logits, a.vocab, a.batch.total, tile_rows,
                                       detail::entropy_spread(a.vocab, static_cast<int>(sizeof(LogitT))), a.entropies,
                                       status},
                                      grid, stream, smem));
        entropies = a.entropies;
      }
    }
    const std::uint64_t* selected_from = nullptr;
    if constexpr (needs_selection_v<Rule>) {
      auto* sel = ws.at<std::uint64_t>(l.selected_from);
      TL_RETURN_IF_ERROR(detail::select_topk(a.rule, entropies, a.batch, ws.at<detail::SelectState>(l.select_state),
                                             ws.at<std::uint32_t>(l.select_hist), sel, status, stream));
      selected_from = sel;
    }
    // Flags, patch ids and CSR outputs: three passes over tiles of positions.
    const std::int64_t n_tiles = segment_tiles(a);
    auto* seg = ws.at<detail::SegmentTile>(l.tiles);
    auto* total = ws.at<std::int32_t>(l.total);
    auto* rule_words = ws.at<detail::RuleWord>(l.rule_words);
    const dim3 tiles(static_cast<unsigned>(n_tiles));  // a block per tile
    TL_RETURN_IF_ERROR(launch<detail::SegmentCountKernel<Rule>>(
        {a.rule, lay, entropies, a.tokens, selected_from, n_pos, a.max_patch_length, rule_words, seg, status}, tiles,
        stream));
    TL_RETURN_IF_ERROR(launch<detail::SegmentScanKernel>(
        {seg, n_tiles, n_pos, a.max_patch_length, a.patches.capacity, total, status}, dim3(1), stream));
    TL_RETURN_IF_ERROR(launch<detail::SegmentWriteKernel>({lay, n_pos, a.max_patch_length, seg, rule_words, total,
                                                           a.patches.flags, a.patches.ids, a.patches.starts,
                                                           a.patches.lengths, status},
                                                          tiles, stream));
    return launch<detail::SequenceOffsetsKernel>({lay, n_pos, total, a.patches.ids, a.patches.offsets, status},
                                                  grid_for(a.batch.num_seqs + 1, 256, tuning.sequence_blocks_per_sm),
                                                  stream);
  }

  // The device-side checks of the last run(): synchronises `stream`.
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    DeviceFailure f;
    TL_RETURN_IF_ERROR(read_device_status(ws.at<DeviceStatus>(layout(a).status), f, stream));
    switch (f.check) {
      case 0: return Status::ok();
      case kCheckBatch: return batch_failure(kName, a.batch, f.index, stream);
      case detail::kCheckCapacity:
        return device_failure(kName, StatusCode::capacity_too_small, "patches.capacity",
                              computes_entropies(a) ? "room for every patch (only the entropies were written)"
                                                    : "room for every patch (nothing was written)",
                              "%lld, but %lld patches were found", static_cast<long long>(a.patches.capacity),
                              static_cast<long long>(f.required));
      default: return Status::error(StatusCode::internal, "%s: unknown device check %d", kName, f.check);
    }
  }
};

}  // namespace tokenless::patcher
