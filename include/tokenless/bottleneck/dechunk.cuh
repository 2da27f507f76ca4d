#pragma once
// H-Net's dechunk (policy.hpp, namespace dechunk, has the formulas): the
// chunk vectors flow back to every position through an EMA over the chunks
// of each sequence, plus the confidence residual.
//
//   Dechunk<T>          z [chunks, d], p [positions] -> out [positions, d]
//                       (+ z̄ per chunk for the backward, + each sequence's
//                       last z̄ for the generation step)
//   DechunkBackward<T>  grad_out -> grad_z, grad_prob; dL/dresidual is
//                       grad_out itself (the caller feeds it to
//                       residual_proj's backward GEMMs)
//   DechunkStep<T>      one new position per stream, from the carried state
//
// H-Net runs the EMA as a Mamba2 scan with bf16 decay and input, and its
// step() in the hidden dtype, so its prefill and decode differ. tokenless
// computes every step as fma(1 - p̂, z̄, p̂ z) in fp32: the generation step
// gives the prefill's bits within a scan tile (Tuning::tile_chunks chunks),
// and agrees to fp32 rounding across tiles (the scan regroups the products
// of decays there). The scan runs in three phases over tiles of chunks
// (dechunk_kernel.cuh), so a sequence of 1M positions never runs serially.
//
// Segments, capacity and the device-side checks are the pooling's
// (pool.cuh): a bad segment array writes nothing. No atomics: every run
// gives the same bits.
#include <tokenless/bottleneck/dechunk_kernel.cuh>
#include <tokenless/bottleneck/pool.cuh>

#include <cstdint>

namespace tokenless::bottleneck {

namespace detail {

template <class T>
struct DechunkArguments {
  const T* z = nullptr;         // [capacity, d]: a vector per chunk (the main network's output)
  const float* prob = nullptr;  // [batch.total]: the router's p (a chunk takes its first position's)
  VarlenBatch batch;            // the positions
  Segments segments;            // the chunks over them
  std::int64_t capacity = 0;    // rows of z and states
  int d = 0;
  const float* residual = nullptr;  // [batch.total, d], optional: residual_proj(x), fp32 as in H-Net
  std::int64_t z_stride = 0, residual_stride = 0, out_stride = 0, states_stride = 0, final_stride = 0;  // 0: packed
  T* out = nullptr;             // [batch.total, d]: z̄ of the position's chunk + residual
  float* states = nullptr;      // [capacity, d], optional: z̄ of every chunk (DechunkBackward needs it)
  float* final_state = nullptr; // [num_seqs, d], optional: each sequence's last z̄ (0 if empty), for DechunkStep
};

template <class T>
struct DechunkBackwardArguments {
  const T* grad_out = nullptr;    // [batch.total, d]
  const T* z = nullptr;           // the forward's
  const float* prob = nullptr;    // the forward's
  const float* states = nullptr;  // the forward's z̄ [capacity, d]
  VarlenBatch batch;
  Segments segments;
  std::int64_t capacity = 0;
  int d = 0;
  bool confidence = true;  // the STE term of out · STE(max(p, 1 - p)) in dL/dp (false: a plain EMA)
  bool accumulate_prob = false;  // add to grad_prob (e.g. the ratio loss's) instead of writing it
  std::int64_t grad_out_stride = 0, z_stride = 0, states_stride = 0, grad_z_stride = 0;
  T* grad_z = nullptr;         // [capacity, d]: rows [0, chunks) written
  float* grad_prob = nullptr;  // [batch.total]
};

// Chunks a tile: the tuning's, or more when the capacity needs more tiles
// than phase 2 folds in a block.
inline int scan_tile(std::int64_t capacity) {
  const std::int64_t want = tuning_for(compute_capability()).tile_chunks;
  const std::int64_t need = (capacity + kMaxScanTiles - 1) / kMaxScanTiles;
  return static_cast<int>(want > need ? want : need);
}
inline ScanGrid scan_grid(const Layout& l) {
  const int tile = scan_tile(l.capacity);
  return {l, tile, (l.capacity + tile - 1) / tile};
}
inline std::int64_t column_blocks(int d) { return (d + 31) / 32; }  // the most a W can give

// The scan's warps index (tile, column block) pairs in 32 bits.
inline Status check_scan(std::int64_t capacity, int d) {
  const ScanGrid g = scan_grid({VarlenBatch{}, Segments{}, capacity, d});
  return check::product_fits_int32("capacity * d / (scan tile * 32)", g.tiles, column_blocks(d));
}

// Workspace: the status record, the tiles' decays and states, and (backward)
// the per-column-block partial sums of dL/dp.
struct ScanWorkspace {
  std::size_t tile_a, tile_b, part_p, part_ste, bytes;
};
inline ScanWorkspace scan_workspace(std::int64_t capacity, int d, std::int64_t positions, bool backward) {
  const std::int64_t tile = scan_tile(capacity), tiles = (capacity + tile - 1) / tile;
  WorkspaceLayout w;
  ScanWorkspace s{};
  w.add(kStatusBytes);
  s.tile_a = w.add_array<float>(tiles);
  s.tile_b = w.add_array<float>(tiles * d);
  if (backward) {
    s.part_p = w.add_array<float>(column_blocks(d) * capacity);
    s.part_ste = w.add_array<float>(column_blocks(d) * positions);
  }
  s.bytes = w.bytes();
  return s;
}

// Rows that must hold W-element vectors: T rows and fp32 rows.
template <class T>
inline bool dechunk_vectorizable(int d, std::initializer_list<std::pair<const void*, std::int64_t>> rows,
                                 std::initializer_list<std::pair<const void*, std::int64_t>> f32_rows) {
  return vectorizable<T>(d, rows) && vectorizable<float>(d, f32_rows);
}

}  // namespace detail

template <StorageFloat T>
struct Dechunk : detail::OverSegments<Dechunk<T>, detail::DechunkArguments<T>> {
  static constexpr const char* kName = "bottleneck::Dechunk";
  using Arguments = detail::DechunkArguments<T>;
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_layout(a.batch, a.segments, a.capacity, a.d));
    TL_RETURN_IF_ERROR(detail::check_scan(a.capacity, a.d));
    TL_RETURN_IF_ERROR(check::not_null("prob", a.prob));
    TL_RETURN_IF_ERROR(detail::check_rows(a.d, {{"z", a.z, a.z_stride}, {"out", a.out, a.out_stride}}));
    if (a.residual) TL_RETURN_IF_ERROR(detail::check_rows(a.d, {{"residual", a.residual, a.residual_stride}}));
    if (a.states) TL_RETURN_IF_ERROR(detail::check_rows(a.d, {{"states", a.states, a.states_stride}}));
    if (a.final_state) TL_RETURN_IF_ERROR(detail::check_rows(a.d, {{"final_state", a.final_state, a.final_stride}}));
    return Status::ok();
  }
  static std::size_t workspace_size(const Arguments& a) {
    return detail::scan_workspace(a.capacity, a.d, a.batch.total, false).bytes;
  }
  static Status launch_kernel(const Arguments& a, const detail::Layout& l, Workspace ws, cudaStream_t stream) {
    using detail::or_packed;
    const detail::ScanWorkspace w = detail::scan_workspace(a.capacity, a.d, a.batch.total, false);
    const detail::ScanGrid g = detail::scan_grid(l);
    DeviceStatus* status = status_of(ws);
    float* tile_a = ws.at<float>(w.tile_a);
    float* tile_b = ws.at<float>(w.tile_b);
    const std::int64_t zs = or_packed(a.z_stride, a.d), rs = or_packed(a.residual_stride, a.d),
                       os = or_packed(a.out_stride, a.d), ss = or_packed(a.states_stride, a.d),
                       fs = or_packed(a.final_stride, a.d);
    const bool vec = detail::dechunk_vectorizable<T>(a.d, {{a.z, zs}, {a.out, os}},
                                                     {{a.residual, rs}, {a.states, ss}, {a.final_state, fs}});
    return detail::dispatch_width<T>(vec, [&](auto width) -> Status {
      constexpr int W = decltype(width)::value;
      const dim3 grid = detail::segment_grid(g.tiles * ((a.d + 32 * W - 1) / (32 * W)));
      TL_RETURN_IF_ERROR(launch<detail::DechunkTilesKernel<T, W>>({g, a.z, zs, a.prob, tile_a, tile_b, status}, grid,
                                                                  stream));
      TL_RETURN_IF_ERROR(launch<detail::DechunkCarryKernel<false>>(
          {g, tile_a, tile_b, a.final_state, fs, status}, dim3(static_cast<unsigned>(detail::column_blocks(a.d))),
          stream));
      return launch<detail::DechunkApplyKernel<T, W>>(
          {g, a.z, zs, a.prob, a.residual, rs, tile_b, a.out, os, a.states, ss, a.final_state, fs, status}, grid,
          stream);
    });
  }
};

template <StorageFloat T>
struct DechunkBackward : detail::OverSegments<DechunkBackward<T>, detail::DechunkBackwardArguments<T>> {
  static constexpr const char* kName = "bottleneck::DechunkBackward";
  using Arguments = detail::DechunkBackwardArguments<T>;
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_layout(a.batch, a.segments, a.capacity, a.d));
    TL_RETURN_IF_ERROR(detail::check_scan(a.capacity, a.d));
    TL_RETURN_IF_ERROR(check::not_null({{"prob", a.prob}, {"grad_prob", a.grad_prob}}));
    return detail::check_rows(a.d, {{"grad_out", a.grad_out, a.grad_out_stride},
                                    {"z", a.z, a.z_stride},
                                    {"states", a.states, a.states_stride},
                                    {"grad_z", a.grad_z, a.grad_z_stride}});
  }
  static std::size_t workspace_size(const Arguments& a) {
    return detail::scan_workspace(a.capacity, a.d, a.batch.total, true).bytes;
  }
  static Status launch_kernel(const Arguments& a, const detail::Layout& l, Workspace ws, cudaStream_t stream) {
    using detail::or_packed;
    const detail::ScanWorkspace w = detail::scan_workspace(a.capacity, a.d, a.batch.total, true);
    const detail::ScanGrid g = detail::scan_grid(l);
    DeviceStatus* status = status_of(ws);
    float* tile_a = ws.at<float>(w.tile_a);
    float* tile_b = ws.at<float>(w.tile_b);
    float* part_p = ws.at<float>(w.part_p);
    float* part_ste = a.confidence ? ws.at<float>(w.part_ste) : nullptr;
    const std::int64_t gs = or_packed(a.grad_out_stride, a.d), zs = or_packed(a.z_stride, a.d),
                       ss = or_packed(a.states_stride, a.d), dzs = or_packed(a.grad_z_stride, a.d);
    const bool vec = detail::dechunk_vectorizable<T>(a.d, {{a.grad_out, gs}, {a.z, zs}, {a.grad_z, dzs}},
                                                     {{a.states, ss}});
    return detail::dispatch_width<T>(vec, [&](auto width) -> Status {
      constexpr int W = decltype(width)::value;
      const int blocks = (a.d + 32 * W - 1) / (32 * W);
      const dim3 grid = detail::segment_grid(g.tiles * blocks);
      TL_RETURN_IF_ERROR(launch<detail::AdjointTilesKernel<T, W>>({g, a.grad_out, gs, a.prob, tile_a, tile_b, status},
                                                                  grid, stream));
      TL_RETURN_IF_ERROR(launch<detail::DechunkCarryKernel<true>>(
          {g, tile_a, tile_b, nullptr, 0, status}, dim3(static_cast<unsigned>(detail::column_blocks(a.d))), stream));
      TL_RETURN_IF_ERROR(launch<detail::AdjointApplyKernel<T, W>>(
          {g, a.grad_out, gs, a.z, zs, a.prob, a.states, ss, tile_b, a.grad_z, dzs, part_p, part_ste, status}, grid,
          stream));
      return launch<detail::DechunkProbGradKernel>(
          {l, a.prob, part_p, part_ste, blocks, a.accumulate_prob, a.grad_prob, status},
          grid_for(a.batch.total, detail::DechunkProbGradKernel::kThreads, tuning_for(compute_capability()).blocks_per_sm),
          stream);
    });
  }
};

// One generation step for a batch of streams (H-Net's DeChunkLayer.step and
// the residual): where a stream's new position is a boundary, its chunk
// vector z folds into the state; the output is the state plus the residual.
// Zero the state (or set `first`) when a stream starts a sequence; after a
// prefill, the state is Dechunk's final_state.
template <StorageFloat T>
struct DechunkStep {
  static constexpr const char* kName = "bottleneck::DechunkStep";
  struct Arguments {
    const T* z = nullptr;                 // [streams, d]: the main network's step output, read at boundaries only
    const float* prob = nullptr;          // [streams]: the router step's p
    const std::uint8_t* boundary = nullptr;  // [streams], optional (default: p > 0.5, the router's rule)
    const std::uint8_t* first = nullptr;     // [streams], optional: 1 where the position starts a sequence
    const float* residual = nullptr;      // [streams, d], optional
    std::int64_t streams = 0;
    int d = 0;
    std::int64_t z_stride = 0, residual_stride = 0, state_stride = 0, out_stride = 0;
    float* state = nullptr;  // [streams, d]: read and written
    T* out = nullptr;        // [streams, d]
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::not_null("prob", a.prob));
    TL_RETURN_IF_ERROR(check::positive("streams", a.streams));
    TL_RETURN_IF_ERROR(check::positive("d", a.d));
    TL_RETURN_IF_ERROR(detail::check_rows(
        a.d, {{"z", a.z, a.z_stride}, {"state", a.state, a.state_stride}, {"out", a.out, a.out_stride}}));
    if (a.residual) TL_RETURN_IF_ERROR(detail::check_rows(a.d, {{"residual", a.residual, a.residual_stride}}));
    return Status::ok();
  }
  static std::size_t workspace_size(const Arguments&) { return 0; }
  static Status run(const Arguments& a, Workspace = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    using detail::or_packed;
    const std::int64_t zs = or_packed(a.z_stride, a.d), rs = or_packed(a.residual_stride, a.d),
                       ss = or_packed(a.state_stride, a.d), os = or_packed(a.out_stride, a.d);
    const bool vec = detail::dechunk_vectorizable<T>(a.d, {{a.z, zs}, {a.out, os}}, {{a.residual, rs}, {a.state, ss}});
    return detail::dispatch_width<T>(vec, [&](auto width) {
      using K = detail::DechunkStepKernel<T, decltype(width)::value>;
      return launch<K>({a.z, zs, a.prob, a.boundary, a.first, a.residual, rs, a.state, ss, a.out, os, a.streams, a.d},
                       detail::segment_grid(a.streams), stream);
    });
  }
};

}  // namespace tokenless::bottleneck
