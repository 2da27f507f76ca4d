// The CPU SIMT executor's own tests: CUDA semantics it must reproduce, and
// every classic bug it must catch. (Out-of-bounds accesses and shared-memory
// races are caught by ASan and TSan; see planted.cpp.)
#include "../support/support.hpp"

#include <tokenless/tokenless.cuh>

#include <set>

namespace emu = tokenless::emu;

namespace {

emu::Options fibers(emu::Order order = emu::Order::forward, std::uint64_t seed = 1) {
  emu::Options o = emu::options();
  o.mode = emu::Mode::fibers;
  o.order = order;
  o.seed = seed;
  o.print_faults = false;
  return o;
}

emu::Options threads() {
  emu::Options o = emu::options();
  o.mode = emu::Mode::threads;
  o.print_faults = false;
  o.deadlock_timeout_ms = 300;
  return o;
}

const emu::Order kOrders[] = {emu::Order::forward, emu::Order::reverse, emu::Order::random};

// Runs `launch_fn` expecting the executor to report `fault`, with `needle` in the message.
template <class F>
void expect_fault(F launch_fn, emu::Fault fault, const char* needle) {
  tokenless::Status s = launch_fn();
  const emu::Report& r = emu::last_report();
  INFO("report: " << emu::to_string(r.fault) << ": " << r.message);
  CHECK_FALSE(s.is_ok());
  CHECK(r.fault == fault);
  CHECK(r.message.find(needle) != std::string::npos);
  CHECK(cudaGetLastError() != cudaSuccess);
  CHECK(cudaGetLastError() == cudaSuccess);  // not sticky
}

// ------------------------------------------------------------------ kernels
__global__ void index_kernel(unsigned* out) {
  const unsigned block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const unsigned nthreads = blockDim.x * blockDim.y * blockDim.z;
  const unsigned t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  out[block * nthreads + t] = block * 1000 + t;
}

__global__ void shuffle_kernel(int* out, int width) {
  const int lane = static_cast<int>(threadIdx.x);
  const int v = 100 + lane;
  out[0 * 32 + lane] = __shfl_sync(0xffffffffu, v, 5, width);
  out[1 * 32 + lane] = __shfl_up_sync(0xffffffffu, v, 3, width);
  out[2 * 32 + lane] = __shfl_down_sync(0xffffffffu, v, 3, width);
  out[3 * 32 + lane] = __shfl_xor_sync(0xffffffffu, v, 6, width);
  out[4 * 32 + lane] = static_cast<int>(__ballot_sync(0xffffffffu, lane % 3 == 0));
  out[5 * 32 + lane] = __any_sync(0xffffffffu, lane == 17);
  out[6 * 32 + lane] = __all_sync(0xffffffffu, lane < 31);
  out[7 * 32 + lane] = static_cast<int>(__match_any_sync(0xffffffffu, lane / 4));
  // Two independent half-warp groups, each with its own mask.
  const unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
  out[8 * 32 + lane] = __shfl_sync(half, v, lane < 16 ? 2 : 20);
}

__global__ void barrier_reduce_kernel(int* out) {
  const int t = static_cast<int>(threadIdx.x);
  out[0] = __syncthreads_count(t % 5 == 0);
  out[1] = __syncthreads_and(t >= 0);
  out[2] = __syncthreads_or(t == 77);
  out[3] = __syncthreads_and(t != 3);
}

__global__ void atomic_kernel(int* i, float* f, unsigned* mx, unsigned long long* u, int* cas_winner) {
  atomicAdd(i, 1);
  atomicAdd(f, 0.5f);
  atomicMax(mx, blockIdx.x * blockDim.x + threadIdx.x);
  atomicAdd(u, 3ull);
  atomicCAS(cas_winner, -1, static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x));
}

__global__ void dyn_smem_kernel(float* out, int n) {
  float* s = tokenless::dynamic_smem<float>();
  for (int i = static_cast<int>(threadIdx.x); i < n; i += static_cast<int>(blockDim.x)) s[i] = static_cast<float>(i % 4);
  __syncthreads();
  float acc = 0;
  for (int i = static_cast<int>(threadIdx.x); i < n; i += static_cast<int>(blockDim.x)) acc += s[n - 1 - i];
  atomicAdd(out, acc);
}

// Planted bug: the barrier between the write and the neighbour's read is missing.
template <bool kWithBarrier>
__global__ void neighbour_kernel(int* out, int salt) {
  __shared__ int s[128];
  const int t = static_cast<int>(threadIdx.x);
  s[t] = t * 10 + salt;
  if constexpr (kWithBarrier) __syncthreads();
  out[t] = s[(t + 37) % 128];
}

__global__ void partial_warp_shuffle_kernel(int* out) {
  int v = static_cast<int>(threadIdx.x);
  if (threadIdx.x % 32 < 16) v = __shfl_down_sync(0xffffffffu, v, 1);  // planted: half the warp never arrives
  out[threadIdx.x] = v;
}

__global__ void mask_excludes_self_kernel(int* out) {
  out[threadIdx.x] = __shfl_sync(0x1u, 1, 0);
}

__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void early_return_kernel(int* out) {
  if (threadIdx.x == 5) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void deadlock_kernel(int* out) {
  int v = static_cast<int>(threadIdx.x);
  if (threadIdx.x == 3) {
    __syncthreads();
  } else {
    v = __shfl_sync(0xffffffffu, v, 0);
  }
  out[threadIdx.x] = v;
}

__global__ void missing_lanes_kernel(int* out) {
  out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0);  // the block has 48 threads: warp 1 has 16 lanes
}

__global__ void mismatched_collective_kernel(int* out) {
  if (threadIdx.x < 16) out[threadIdx.x] = static_cast<int>(__ballot_sync(0xffffffffu, 1));
  else out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0);
}

__global__ void read_outside_mask_kernel(int* out) {
  if (threadIdx.x < 16) out[threadIdx.x] = __shfl_sync(0x0000ffffu, 1, 20);
}

// Records the order in which threads run, before and after a barrier.
__global__ void ticket_kernel(int* counter, int* out) {
  out[threadIdx.x] = atomicAdd(counter, 1);
  __syncthreads();
  out[blockDim.x + threadIdx.x] = atomicAdd(counter, 1);
}

__global__ void block_sum_kernel(const int* in, int* out) {
  using R = tokenless::block::Reduce<int, 128>;
  __shared__ R::TempStorage ts;
  const int v = in[blockIdx.x * 128 + threadIdx.x];
  const int s = R::reduce(v, tokenless::Sum{}, ts);
  if (threadIdx.x == 0) out[blockIdx.x] = s;
}

}  // namespace

TEST_SUITE("executor") {

TEST_CASE("built-in index variables cover 3-D grids and blocks") {
  for (auto order : kOrders) {
    emu::ScopedOptions opt(fibers(order));
    const dim3 grid(3, 2, 2), block(4, 3, 2);
    const unsigned n = 12 * 24;
    tlt::DeviceBuffer<unsigned> out(n);
    REQUIRE_OK(tokenless::launch(index_kernel, {grid, block}, out.get()));
    auto h = out.download();
    for (unsigned b = 0; b < 12; ++b)
      for (unsigned t = 0; t < 24; ++t) CHECK(h[b * 24 + t] == b * 1000 + t);
  }
}

TEST_CASE("shuffles and votes follow CUDA semantics") {
  for (int width : {32, 8}) {
    CAPTURE(width);
    emu::ScopedOptions opt(fibers());
    tlt::DeviceBuffer<int> out(9 * 32);
    REQUIRE_OK(tokenless::launch(shuffle_kernel, {dim3(1), dim3(32)}, out.get(), width));
    auto h = out.download();
    unsigned ballot = 0;
    for (int l = 0; l < 32; l += 3) ballot |= 1u << l;
    for (int l = 0; l < 32; ++l) {
      const int seg = l / width * width;
      CHECK(h[0 * 32 + l] == 100 + seg + 5 % width);
      CHECK(h[1 * 32 + l] == (l - 3 >= seg ? 100 + l - 3 : 100 + l));
      CHECK(h[2 * 32 + l] == (l + 3 < seg + width ? 100 + l + 3 : 100 + l));
      CHECK(h[3 * 32 + l] == 100 + (l ^ 6));
      CHECK(static_cast<unsigned>(h[4 * 32 + l]) == ballot);
      CHECK(h[5 * 32 + l] == 1);
      CHECK(h[6 * 32 + l] == 0);
      CHECK(static_cast<unsigned>(h[7 * 32 + l]) == 0xfu << (l / 4 * 4));
      CHECK(h[8 * 32 + l] == (l < 16 ? 102 : 120));
    }
  }
}

TEST_CASE("__syncthreads_count, _and and _or reduce the predicate") {
  emu::ScopedOptions opt(fibers(emu::Order::random, 9));
  tlt::DeviceBuffer<int> out(4);
  REQUIRE_OK(tokenless::launch(barrier_reduce_kernel, {dim3(1), dim3(100)}, out.get()));
  auto h = out.download();
  CHECK(h[0] == 20);
  CHECK(h[1] == 1);
  CHECK(h[2] == 1);
  CHECK(h[3] == 0);
}

TEST_CASE("atomics") {
  for (auto opts : {fibers(emu::Order::random, 3), threads()}) {
    emu::ScopedOptions opt(opts);
    tlt::DeviceBuffer<int> i(1), cas(1);
    tlt::DeviceBuffer<float> f(1);
    tlt::DeviceBuffer<unsigned> mx(1);
    tlt::DeviceBuffer<unsigned long long> u(1);
    i.fill_bytes(0);
    f.fill_bytes(0);
    mx.fill_bytes(0);
    u.fill_bytes(0);
    cas.fill_bytes(0xff);
    REQUIRE_OK(tokenless::launch(atomic_kernel, {dim3(4), dim3(64)}, i.get(), f.get(), mx.get(), u.get(), cas.get()));
    CHECK(i.download()[0] == 256);
    CHECK(f.download()[0] == 128.0f);
    CHECK(mx.download()[0] == 255u);
    CHECK(u.download()[0] == 768ull);
    const int w = cas.download()[0];
    CHECK(w >= 0);
    CHECK(w < 256);
  }
}

TEST_CASE("dynamic shared memory, and the 48 KiB opt-in") {
  emu::ScopedOptions opt(fibers());
  tlt::DeviceBuffer<float> out(1);
  out.fill_bytes(0);
  const int n = 1000;
  REQUIRE_OK(tokenless::launch(dyn_smem_kernel, {dim3(1), dim3(128), n * sizeof(float)}, out.get(), n));
  CHECK(out.download()[0] == 1.5f * n);  // integers: exact in any order

  const int big = 20000;  // 80 KB
  expect_fault([&] { return tokenless::launch(dyn_smem_kernel, {dim3(1), dim3(128), big * sizeof(float)}, out.get(), big); },
               emu::Fault::bad_launch, "cudaFuncSetAttribute");
  REQUIRE_OK(tokenless::set_max_dynamic_smem(dyn_smem_kernel, big * sizeof(float)));
  out.fill_bytes(0);
  REQUIRE_OK(tokenless::launch(dyn_smem_kernel, {dim3(1), dim3(128), big * sizeof(float)}, out.get(), big));
  CHECK(out.download()[0] == 1.5f * big);
}

TEST_CASE("invalid launch configurations are rejected") {
  emu::ScopedOptions opt(fibers());
  tlt::DeviceBuffer<unsigned> out(1);
  expect_fault([&] { return tokenless::launch(index_kernel, {dim3(1), dim3(2048)}, out.get()); },
               emu::Fault::bad_launch, "block (2048,1,1)");
  expect_fault([&] { return tokenless::launch(index_kernel, {dim3(0), dim3(32)}, out.get()); },
               emu::Fault::bad_launch, "grid (0,1,1)");
}

TEST_CASE("planted bug: a missing barrier changes the result under some schedule") {
  std::vector<int> want(128);
  for (int t = 0; t < 128; ++t) want[t] = ((t + 37) % 128) * 10 + 1;
  bool differs = false;
  int salt = 1;
  for (auto order : kOrders) {
    emu::ScopedOptions opt(fibers(order, 42));
    tlt::DeviceBuffer<int> out(128);
    // Correct kernel: same answer under every schedule.
    REQUIRE_OK(tokenless::launch(neighbour_kernel<true>, {dim3(1), dim3(128)}, out.get(), 1));
    CHECK(out.download() == want);
    // Buggy kernel: the stale shared values of the previous launch (salt) leak through.
    REQUIRE_OK(tokenless::launch(neighbour_kernel<false>, {dim3(1), dim3(128)}, out.get(), 1000 * ++salt));
    std::vector<int> want_salt(128);
    for (int t = 0; t < 128; ++t) want_salt[t] = ((t + 37) % 128) * 10 + 1000 * salt;
    differs |= out.download() != want_salt;
    REQUIRE_OK(tokenless::launch(neighbour_kernel<true>, {dim3(1), dim3(128)}, out.get(), 1));
  }
  CHECK(differs);
}

TEST_CASE("planted bug: a shuffle reached by half a warp is reported") {
  for (auto opts : {fibers(), fibers(emu::Order::reverse), threads()}) {
    emu::ScopedOptions opt(opts);
    tlt::DeviceBuffer<int> out(64);
    expect_fault([&] { return tokenless::launch(partial_warp_shuffle_kernel, {dim3(1), dim3(64)}, out.get()); },
                 emu::Fault::collective_mask, "__shfl_down_sync");
  }
}

TEST_CASE("planted bug: a mask that excludes the caller is reported") {
  emu::ScopedOptions opt(fibers());
  tlt::DeviceBuffer<int> out(32);
  expect_fault([&] { return tokenless::launch(mask_excludes_self_kernel, {dim3(1), dim3(32)}, out.get()); },
               emu::Fault::collective_mask, "does not include the calling lane");
}

TEST_CASE("planted bug: divergent barriers are reported") {
  for (auto opts : {fibers(), fibers(emu::Order::reverse), threads()}) {
    emu::ScopedOptions opt(opts);
    tlt::DeviceBuffer<int> out(64);
    expect_fault([&] { return tokenless::launch(divergent_barrier_kernel, {dim3(1), dim3(64)}, out.get()); },
                 emu::Fault::divergent_barrier, "divergent barrier");
  }
}

TEST_CASE("planted bug: a return before a barrier that other threads reach is reported") {
  for (auto opts : {fibers(), fibers(emu::Order::reverse), fibers(emu::Order::random, 5), threads()}) {
    emu::ScopedOptions opt(opts);
    tlt::DeviceBuffer<int> out(64);
    expect_fault([&] { return tokenless::launch(early_return_kernel, {dim3(1), dim3(64)}, out.get()); },
                 emu::Fault::exit_before_barrier, "thread (5,0,0)");
  }
}

TEST_CASE("planted bug: deadlocks are reported, with who waits where") {
  emu::ScopedOptions opt(fibers());
  tlt::DeviceBuffer<int> out(32);
  expect_fault([&] { return tokenless::launch(deadlock_kernel, {dim3(1), dim3(32)}, out.get()); },
               emu::Fault::deadlock, "waits at __syncthreads");
}

TEST_CASE("deadlocks are reported in thread mode too") {
  emu::ScopedOptions opt(threads());
  tlt::DeviceBuffer<int> out(32);
  expect_fault([&] { return tokenless::launch(deadlock_kernel, {dim3(1), dim3(32)}, out.get()); },
               emu::Fault::deadlock, "deadlock");
}

TEST_CASE("planted bug: a full mask in a partial warp names missing lanes") {
  emu::ScopedOptions opt(fibers());
  tlt::DeviceBuffer<int> out(48);
  expect_fault([&] { return tokenless::launch(missing_lanes_kernel, {dim3(1), dim3(48)}, out.get()); },
               emu::Fault::collective_mask, "do not exist");
}

TEST_CASE("planted bug: lanes meeting in different collectives are reported") {
  emu::ScopedOptions opt(fibers());
  tlt::DeviceBuffer<int> out(32);
  expect_fault([&] { return tokenless::launch(mismatched_collective_kernel, {dim3(1), dim3(32)}, out.get()); },
               emu::Fault::collective_mismatch, "mismatched warp collective");
}

TEST_CASE("planted bug: a shuffle reading a lane outside its mask is reported") {
  emu::ScopedOptions opt(fibers());
  tlt::DeviceBuffer<int> out(32);
  expect_fault([&] { return tokenless::launch(read_outside_mask_kernel, {dim3(1), dim3(32)}, out.get()); },
               emu::Fault::collective_mask, "not in the mask");
}

TEST_CASE("a correct kernel gives the same result in every mode and schedule, also after a fault") {
  const int blocks = 6;
  std::vector<int> h(blocks * 128);
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<int>(i % 17) - 8;
  std::vector<int> want(blocks, 0);
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < 128; ++t) want[b] += h[b * 128 + t];
  for (auto opts : {fibers(), fibers(emu::Order::reverse), fibers(emu::Order::random, 77), threads()}) {
    emu::ScopedOptions opt(opts);
    tlt::DeviceBuffer<int> in(h), out(blocks), junk(32);
    (void)tokenless::launch(deadlock_kernel, {dim3(1), dim3(32)}, junk.get());  // leaves nothing behind
    REQUIRE_OK(tokenless::launch(block_sum_kernel, {dim3(blocks), dim3(128)}, in.get(), out.get()));
    CHECK(out.download() == want);
  }
}

TEST_CASE("the runtime: memory, streams, events, errors") {
  void* p = nullptr;
  CHECK(cudaMalloc(&p, 1000) == cudaSuccess);
  CHECK(reinterpret_cast<std::uintptr_t>(p) % 256 == 0);
  CHECK(cudaMemset(p, 3, 1000) == cudaSuccess);
  std::vector<unsigned char> h(1000);
  CHECK(cudaMemcpy(h.data(), p, 1000, cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(h[999] == 3);
  CHECK(cudaFree(p) == cudaSuccess);
  CHECK(cudaFree(p) == cudaErrorInvalidValue);  // double free is reported, not undefined
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  cudaStream_t s = nullptr;
  cudaEvent_t a = nullptr, b = nullptr;
  CHECK(cudaStreamCreate(&s) == cudaSuccess);
  CHECK(cudaEventCreate(&a) == cudaSuccess);
  CHECK(cudaEventCreate(&b) == cudaSuccess);
  CHECK(cudaEventRecord(a, s) == cudaSuccess);
  CHECK(cudaEventRecord(b, s) == cudaSuccess);
  float ms = -1;
  CHECK(cudaEventElapsedTime(&ms, a, b) == cudaSuccess);
  CHECK(ms >= 0.0f);
  CHECK(cudaStreamSynchronize(s) == cudaSuccess);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaStreamDestroy(s);
  int n = 0;
  CHECK(cudaGetDeviceCount(&n) == cudaSuccess);
  CHECK(n == 1);
  CHECK(tokenless::device_available());
  tokenless::DeviceProperties props;
  REQUIRE_OK(tokenless::device_properties(props));
  CHECK(props.compute_capability() == tokenless::emu::options().compute_capability);  // settable: every tuning runs
  {
    tokenless::emu::Options o = tokenless::emu::options();
    o.compute_capability = 80;
    tokenless::emu::ScopedOptions scoped(o);
    REQUIRE_OK(tokenless::device_properties(props));
    CHECK(props.compute_capability() == 80);
    CHECK(tokenless::compute_capability() == 80);
  }
}

TEST_CASE("a seeded random schedule is reproducible, and differs from program order") {
  std::vector<int> first;
  std::vector<int> program_order(256);
  for (int i = 0; i < 256; ++i) program_order[i] = i;
  for (int rep = 0; rep < 2; ++rep) {
    emu::ScopedOptions opt(fibers(emu::Order::random, 1234));
    tlt::DeviceBuffer<int> counter(1), out(256);
    counter.fill_bytes(0);
    REQUIRE_OK(tokenless::launch(ticket_kernel, {dim3(1), dim3(128)}, counter.get(), out.get()));
    auto h = out.download();
    CHECK(h != program_order);
    if (rep == 0) first = h;
    else CHECK(h == first);
  }
  emu::ScopedOptions opt(fibers(emu::Order::forward));
  tlt::DeviceBuffer<int> counter(1), out(256);
  counter.fill_bytes(0);
  REQUIRE_OK(tokenless::launch(ticket_kernel, {dim3(1), dim3(128)}, counter.get(), out.get()));
  CHECK(out.download() == program_order);
}

}  // TEST_SUITE
