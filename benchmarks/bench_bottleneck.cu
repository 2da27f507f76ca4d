// Concept bottleneck benchmarks: segment pooling (max, BLT's; mean, DLCM's)
// and replication, forward and backward, bf16, d = 1024 (BLT-1B's local
// width), 64K to 4M positions in 8 sequences, patches of 1-8 bytes (mean
// 4.5). Memory-bound: bytes are the rows read and written once (max's
// backward reads x twice more). Target: >= 85% of the measured copy
// bandwidth, and >= 3x PyTorch's scatter_reduce / index_select
// (benchmarks/torch/bottleneck_eager.py).
#include "harness.cuh"

#include <random>

namespace bn = tokenless::bottleneck;

namespace {

using B16 = __nv_bfloat16;
constexpr int kD = 1024;

struct Batch {
  std::int64_t n = 0, segments = 0;
  tlb::DeviceArray<std::int32_t> cu, offsets, starts, lengths;
  explicit Batch(std::int64_t positions)
      : n(positions), cu(9), offsets(9), starts(positions), lengths(positions) {
    std::vector<std::int32_t> c(9), o(9), s, l;
    std::mt19937 rng(5);
    for (int b = 0; b < 8; ++b) {
      c[b + 1] = static_cast<std::int32_t>(n * (b + 1) / 8);
      o[b] = static_cast<std::int32_t>(s.size());
      for (std::int32_t pos = 0; pos < c[b + 1] - c[b];) {
        const std::int32_t len = std::min<std::int32_t>(c[b + 1] - c[b] - pos, 1 + static_cast<std::int32_t>(rng() % 8));
        s.push_back(pos);
        l.push_back(len);
        pos += len;
      }
    }
    o[8] = static_cast<std::int32_t>(s.size());
    segments = o[8];
    cudaMemcpy(cu.p, c.data(), 9 * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(offsets.p, o.data(), 9 * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(starts.p, s.data(), s.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(lengths.p, l.data(), l.size() * 4, cudaMemcpyHostToDevice);
  }
  tokenless::VarlenBatch batch() const { return tokenless::VarlenBatch::packed(cu.p, 8, n); }
  tokenless::Segments segs() const { return {offsets.p, starts.p, lengths.p, nullptr}; }
};

// Runs once (checking the status), then times.
template <class Op>
void time_op(benchmark::State& state, const typename Op::Arguments& a, double bytes) {
  tlb::DeviceArray<unsigned char> ws(Op::workspace_size(a));
  const tokenless::Workspace w{ws.p, ws.n};
  if (auto s = Op::run(a, w); !s) return state.SkipWithError(s.message());
  if (auto s = Op::read_status(a, w); !s) return state.SkipWithError(s.message());
  const double t = tlb::time_iterations(state, [&] { (void)Op::run(a, w); });
  tlb::report(state, t, bytes, 0);
}

template <class P>
void BM_Pool(benchmark::State& state, bool backward) {
  Batch bt(state.range(0));
  tlb::DeviceArray<B16> x(bt.n * kD), pooled(bt.segments * kD), dx(bt.n * kD);
  tlb::fill_random(x.p, x.n, 1);
  tlb::fill_random(pooled.p, pooled.n, 2);
  const double rows = 2.0 * kD * static_cast<double>(bt.n), segs = 2.0 * kD * static_cast<double>(bt.segments);
  if (!backward) {
    time_op<bn::SegmentPool<P, B16>>(state, {.x = x.p, .batch = bt.batch(), .segments = bt.segs(),
                                             .capacity = bt.segments, .d = kD, .out = pooled.p},
                                     rows + segs);
  } else {
    const double reads_x = bn::routes_to_arg<P>() ? 2.0 * rows : 0.0;
    time_op<bn::SegmentPoolBackward<P, B16>>(state, {.x = x.p, .grad_out = pooled.p, .batch = bt.batch(),
                                                     .segments = bt.segs(), .capacity = bt.segments, .d = kD,
                                                     .grad_x = dx.p},
                                             segs + rows + reads_x);
  }
}

void BM_Replicate(benchmark::State& state, bool backward) {
  Batch bt(state.range(0));
  tlb::DeviceArray<B16> per_pos(bt.n * kD), per_seg(bt.segments * kD);
  tlb::fill_random(per_pos.p, per_pos.n, 3);
  tlb::fill_random(per_seg.p, per_seg.n, 4);
  const double bytes = 2.0 * kD * static_cast<double>(bt.n + bt.segments);
  if (!backward) {
    time_op<bn::Replicate<B16>>(state, {.src = per_seg.p, .batch = bt.batch(), .segments = bt.segs(),
                                        .capacity = bt.segments, .d = kD, .shift = 1, .out = per_pos.p},
                                bytes);
  } else {
    time_op<bn::ReplicateBackward<B16>>(state, {.grad_out = per_pos.p, .batch = bt.batch(), .segments = bt.segs(),
                                                .capacity = bt.segments, .d = kD, .shift = 1,
                                                .grad_src = per_seg.p},
                                        bytes);
  }
}

}  // namespace

int main(int argc, char** argv) {
  auto sizes = [](benchmark::internal::Benchmark* b) {
    for (std::int64_t n = 1 << 16; n <= (1 << 22); n *= 4) b->Arg(n);
    b->UseManualTime()->Unit(benchmark::kMicrosecond);
  };
  sizes(benchmark::RegisterBenchmark("bottleneck_pool_max_fwd/bf16_d1024", BM_Pool<bn::PoolMax>, false));
  sizes(benchmark::RegisterBenchmark("bottleneck_pool_max_bwd/bf16_d1024", BM_Pool<bn::PoolMax>, true));
  sizes(benchmark::RegisterBenchmark("bottleneck_pool_mean_fwd/bf16_d1024", BM_Pool<bn::PoolMean>, false));
  sizes(benchmark::RegisterBenchmark("bottleneck_pool_mean_bwd/bf16_d1024", BM_Pool<bn::PoolMean>, true));
  sizes(benchmark::RegisterBenchmark("bottleneck_replicate_fwd/bf16_d1024", BM_Replicate, false));
  sizes(benchmark::RegisterBenchmark("bottleneck_replicate_bwd/bf16_d1024", BM_Replicate, true));
  return tlb::run_main(argc, argv, "tokenless_bench_bottleneck.json");
}
