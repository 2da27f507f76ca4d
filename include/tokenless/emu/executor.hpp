#pragma once
// The CPU SIMT executor: runs unmodified CUDA kernel source compiled by a host
// compiler. Each CUDA thread is a fiber (or, in thread mode, a std::thread so
// that ThreadSanitizer sees real concurrency). Blocks run one at a time, so
// `__shared__` can be plain static storage, which ASan instruments.
//
// What it checks, and reports as a launch failure with a message:
//  * deadlock: no thread can make progress;
//  * divergent barriers: threads of a block wait at different __syncthreads;
//  * a thread returning before a barrier that other threads reach;
//  * warp collectives whose mask excludes the caller, names a lane that does
//    not exist or has exited, or that lanes reach with different masks or
//    different intrinsics; a shuffle reading a lane outside its mask.
// Schedules: forward, reverse or seeded random order of blocks and threads,
// so a missing barrier changes the result.
#include <tokenless/emu/cuda_types.hpp>
#include <tokenless/emu/fiber.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <random>
#include <source_location>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tokenless::emu {

enum class Order { forward, reverse, random };
enum class Mode { fibers, threads };

struct Options {
  Order order = Order::forward;
  std::uint64_t seed = 0x5eedULL;
  Mode mode = Mode::fibers;
  std::size_t stack_bytes = 0;          // 0 picks 256 KiB, or 1 MiB under ASan
  unsigned deadlock_timeout_ms = 5000;  // thread mode: no progress for this long is a deadlock
  bool print_faults = true;             // also print fault reports to stderr
  int compute_capability = 90;          // what device_properties() reports, so each tuning runs here
  int sm_count = 4;                     // likewise: grids are sized to it
};

enum class Fault {
  none,
  deadlock,
  divergent_barrier,
  exit_before_barrier,
  collective_mask,
  collective_mismatch,
  bad_launch,
  kernel_exception,
};

inline const char* to_string(Fault f) {
  switch (f) {
    case Fault::none: return "none";
    case Fault::deadlock: return "deadlock";
    case Fault::divergent_barrier: return "divergent barrier";
    case Fault::exit_before_barrier: return "return before barrier";
    case Fault::collective_mask: return "bad warp-collective mask";
    case Fault::collective_mismatch: return "mismatched warp collective";
    case Fault::bad_launch: return "bad launch configuration";
    case Fault::kernel_exception: return "exception in kernel";
  }
  return "?";
}

// The outcome of the last launch made by the calling host thread.
struct Report {
  Fault fault = Fault::none;
  std::string message;
  std::uint64_t launches = 0;  // launches made by this host thread so far
};

namespace detail {

inline std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline std::string format(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

inline Options options_from_env() {
  Options o;
  if (const char* s = std::getenv("TOKENLESS_EMU_ORDER")) {
    std::string v = s;
    if (v == "reverse") o.order = Order::reverse;
    else if (v == "random") o.order = Order::random;
  }
  if (const char* s = std::getenv("TOKENLESS_EMU_SEED")) o.seed = std::strtoull(s, nullptr, 0);
  if (const char* s = std::getenv("TOKENLESS_EMU_MODE")) {
    if (std::string(s) == "threads") o.mode = Mode::threads;
  }
  if (const char* s = std::getenv("TOKENLESS_EMU_CC")) o.compute_capability = std::atoi(s);
  return o;
}

inline Options& options_storage() {
  static Options o = options_from_env();
  return o;
}

// Launches since the options were last set: feeds the random schedule, so a
// seeded sequence of launches is reproducible.
inline std::atomic<std::uint64_t>& launch_counter() {
  static std::atomic<std::uint64_t> n{0};
  return n;
}

inline Report& report_storage() {
  thread_local Report r;
  return r;
}

}  // namespace detail

inline Options options() { return detail::options_storage(); }
inline void set_options(const Options& o) {
  detail::options_storage() = o;
  detail::launch_counter().store(0);
}
inline const Report& last_report() { return detail::report_storage(); }

// Sets options for a scope; tests use it to run one kernel under every schedule.
class ScopedOptions {
 public:
  explicit ScopedOptions(const Options& o) : saved_(options()) { set_options(o); }
  ~ScopedOptions() { set_options(saved_); }
  ScopedOptions(const ScopedOptions&) = delete;
  ScopedOptions& operator=(const ScopedOptions&) = delete;

 private:
  Options saved_;
};

namespace detail {

struct Site {
  const char* file = "";
  unsigned line = 0;
  bool operator==(const Site& o) const { return line == o.line && std::strcmp(file, o.file) == 0; }
};
inline Site site_of(const std::source_location& l) { return {l.file_name(), static_cast<unsigned>(l.line())}; }

enum class TState : std::uint8_t { not_started, runnable, at_barrier, at_collective, exited };
enum class Coll : std::uint8_t { shfl_idx, shfl_up, shfl_down, shfl_xor, vote, syncwarp, match_any, compute };

// A warp-wide computation (mma.sync, ldmatrix): the last lane to arrive calls
// it with every lane's operand pointer, in lane order.
using WarpCompute = void (*)(void* const* lanes);

struct BlockState;

struct ThreadCtx {
  uint3 tid{};
  unsigned linear = 0, warp = 0, lane = 0;
  BlockState* block = nullptr;
  TState st = TState::not_started;
  Site site;
  // the pending warp collective
  Coll kind = Coll::vote;
  const char* what = "";
  unsigned mask = 0;
  std::uint64_t value = 0;
  int param = 0;
  int width = 32;
  std::uint64_t result = 0;
  WarpCompute compute = nullptr;  // Coll::compute: what the warp computes
  int barrier_result = 0;
  Context ctx;
  FiberStack* stack = nullptr;
};

struct WarpState {
  unsigned existing = 0;  // lanes that exist in this warp
  unsigned exited = 0;
  unsigned waiting = 0;   // lanes waiting in a collective
  std::mutex m;
  std::condition_variable cv;
};

struct KernelAbort {};

struct BlockState {
  uint3 block_idx{};
  dim3 block_dim, grid_dim;
  unsigned nthreads = 0;
  unsigned nwarps = 0;
  std::unique_ptr<ThreadCtx[]> threads;
  std::unique_ptr<WarpState[]> warps;
  Mode mode = Mode::fibers;
  Order order = Order::forward;
  std::mt19937_64* rng = nullptr;
  unsigned deadlock_timeout_ms = 5000;

  // barrier state, guarded by m in thread mode
  std::mutex m;
  std::condition_variable cv;
  unsigned at_barrier = 0;
  unsigned exited = 0;
  int barrier_sum = 0;
  Site barrier_site;
  unsigned first_exited = ~0u;

  unsigned char* dyn_smem = nullptr;
  std::size_t dyn_smem_bytes = 0;
  const std::function<void()>* body = nullptr;

  std::atomic<bool> aborting{false};
  std::atomic<std::uint64_t> progress{0};
  std::mutex fault_m;
  Fault fault = Fault::none;
  std::string message;

  // fiber scheduling
  Context sched;
  std::vector<unsigned> ready;
  std::size_t ready_head = 0;
};

inline thread_local ThreadCtx* tl_current = nullptr;

inline ThreadCtx* current() {
  if (!tl_current) {
    std::fprintf(stderr, "[tokenless emu] a device built-in was used outside a kernel launched by the executor\n");
    std::abort();
  }
  return tl_current;
}

inline std::string describe(const ThreadCtx* t) {
  const BlockState* b = t->block;
  return format("thread (%u,%u,%u) [warp %u lane %u] of block (%u,%u,%u)", t->tid.x, t->tid.y, t->tid.z, t->warp,
                t->lane, b->block_idx.x, b->block_idx.y, b->block_idx.z);
}

inline void wake_all(BlockState* b) {
  // Waiters poll the abort flag, so notifying without the locks cannot lose them.
  b->cv.notify_all();
  for (unsigned w = 0; w < b->nwarps; ++w) b->warps[w].cv.notify_all();
}

// Records the first fault of the block and makes every thread unwind.
inline void record_fault(BlockState* b, Fault f, std::string msg) {
  {
    std::lock_guard<std::mutex> g(b->fault_m);
    if (b->fault == Fault::none) {
      b->fault = f;
      b->message = std::move(msg);
    }
  }
  b->aborting.store(true, std::memory_order_release);
  if (b->mode == Mode::threads) wake_all(b);
}

[[noreturn]] inline void raise(ThreadCtx* self, Fault f, std::string msg) {
  record_fault(self->block, f, std::move(msg));
  throw KernelAbort{};
}

// The ready list: forward and reverse are FIFO in the order threads became
// runnable (reverse enqueues releases highest index first); random picks any.
inline void enqueue(BlockState* b, unsigned idx) {
  b->threads[idx].st = TState::runnable;
  if (b->mode == Mode::fibers) b->ready.push_back(idx);
}

template <class Indices>
inline void enqueue_all(BlockState* b, const Indices& idx) {
  if (b->order == Order::reverse) {
    for (auto it = idx.rbegin(); it != idx.rend(); ++it) enqueue(b, *it);
  } else {
    for (unsigned i : idx) enqueue(b, i);
  }
}

inline void yield_to_scheduler(ThreadCtx* self) {
  BlockState* b = self->block;
  switch_context(self->ctx, b->sched);
  finish_switch(self->ctx, b->sched);
  tl_current = self;
}

inline std::string describe_waiters(BlockState* b);

// Blocks the calling CUDA thread until another thread makes it runnable.
inline void wait_until_runnable(ThreadCtx* self, std::unique_lock<std::mutex>& lk, std::condition_variable& cv) {
  BlockState* b = self->block;
  if (b->mode == Mode::fibers) {
    yield_to_scheduler(self);
  } else {
    using clock = std::chrono::steady_clock;
    auto last = b->progress.load(std::memory_order_relaxed);
    auto since = clock::now();
    while (self->st != TState::runnable && !b->aborting.load(std::memory_order_acquire)) {
      if (cv.wait_for(lk, std::chrono::milliseconds(20)) == std::cv_status::timeout) {
        auto p = b->progress.load(std::memory_order_relaxed);
        if (p != last) {
          last = p;
          since = clock::now();
        } else if (clock::now() - since > std::chrono::milliseconds(b->deadlock_timeout_ms)) {
          lk.unlock();
          record_fault(b, Fault::deadlock,
                       format("deadlock: no thread of block (%u,%u,%u) made progress for %u ms; %s waits",
                              b->block_idx.x, b->block_idx.y, b->block_idx.z, b->deadlock_timeout_ms,
                              describe(self).c_str()));
          lk.lock();
        }
      }
    }
  }
  if (b->aborting.load(std::memory_order_acquire)) throw KernelAbort{};
}

class MaybeLock {
 public:
  MaybeLock(std::mutex& m, bool use) : lk_(m, std::defer_lock) {
    if (use) lk_.lock();
  }
  std::unique_lock<std::mutex>& get() { return lk_; }

 private:
  std::unique_lock<std::mutex> lk_;
};

// Makes the released threads (the caller among them) runnable. In fiber mode
// the caller then yields, so the schedule order decides who runs first, not
// who arrived last.
inline void release_and_continue(ThreadCtx* self, const std::vector<unsigned>& release, std::condition_variable& cv) {
  BlockState* b = self->block;
  enqueue_all(b, release);
  if (b->mode == Mode::threads) {
    cv.notify_all();
    return;
  }
  yield_to_scheduler(self);
  if (b->aborting.load(std::memory_order_acquire)) throw KernelAbort{};
}

// ------------------------------------------------------------------ barrier
// op: 0 plain, 1 count, 2 and, 3 or. Returns the reduced predicate.
inline int barrier(int pred, int op, const std::source_location& loc) {
  ThreadCtx* self = current();
  BlockState* b = self->block;
  Site site = site_of(loc);
  MaybeLock lk(b->m, b->mode == Mode::threads);
  b->progress.fetch_add(1, std::memory_order_relaxed);
  if (b->exited > 0) {
    const ThreadCtx& gone = b->threads[b->first_exited];
    raise(self, Fault::exit_before_barrier,
          format("%s reached __syncthreads at %s:%u, but %s had already returned; every thread of a block must "
                 "reach each barrier",
                 describe(self).c_str(), site.file, site.line, describe(&gone).c_str()));
  }
  if (b->at_barrier > 0 && !(b->barrier_site == site)) {
    raise(self, Fault::divergent_barrier,
          format("divergent barrier: %s waits at __syncthreads %s:%u while %u thread(s) wait at %s:%u",
                 describe(self).c_str(), site.file, site.line, b->at_barrier, b->barrier_site.file,
                 b->barrier_site.line));
  }
  if (b->at_barrier == 0) {
    b->barrier_site = site;
    b->barrier_sum = 0;
  }
  b->barrier_sum += pred != 0;
  self->st = TState::at_barrier;
  self->site = site;
  if (++b->at_barrier == b->nthreads) {
    int sum = b->barrier_sum;
    int result = op == 1 ? sum : op == 2 ? (sum == static_cast<int>(b->nthreads)) : op == 3 ? (sum > 0) : 0;
    std::vector<unsigned> release;
    release.reserve(b->nthreads);
    for (unsigned i = 0; i < b->nthreads; ++i) {
      b->threads[i].barrier_result = result;
      release.push_back(i);
    }
    b->at_barrier = 0;
    release_and_continue(self, release, b->cv);
  } else {
    wait_until_runnable(self, lk.get(), b->cv);
  }
  return self->barrier_result;
}

// ------------------------------------------------------------------ warp collectives
inline ThreadCtx& lane_thread(BlockState* b, unsigned warp, unsigned lane) { return b->threads[warp * 32 + lane]; }

inline std::uint64_t collective(Coll kind, const char* what, unsigned mask, std::uint64_t value, int param, int width,
                                const std::source_location& loc) {
  ThreadCtx* self = current();
  BlockState* b = self->block;
  WarpState& w = b->warps[self->warp];
  Site site = site_of(loc);
  MaybeLock lk(w.m, b->mode == Mode::threads);
  b->progress.fetch_add(1, std::memory_order_relaxed);
  const unsigned bit = 1u << self->lane;
  if (!(mask & bit)) {
    raise(self, Fault::collective_mask,
          format("%s at %s:%u by %s: mask 0x%08x does not include the calling lane", what, site.file, site.line,
                 describe(self).c_str(), mask));
  }
  if (mask & ~w.existing) {
    raise(self, Fault::collective_mask,
          format("%s at %s:%u by %s: mask 0x%08x names lanes 0x%08x that do not exist (the block has %u threads)",
                 what, site.file, site.line, describe(self).c_str(), mask, mask & ~w.existing, b->nthreads));
  }
  if (mask & w.exited) {
    raise(self, Fault::collective_mask,
          format("%s at %s:%u by %s: mask 0x%08x names lanes 0x%08x that have already returned", what, site.file,
                 site.line, describe(self).c_str(), mask, mask & w.exited));
  }
  if (width < 1 || width > 32 || (width & (width - 1))) {
    raise(self, Fault::collective_mask,
          format("%s at %s:%u: width %d is not a power of two in [1, 32]", what, site.file, site.line, width));
  }
  for (unsigned others = w.waiting; others; others &= others - 1) {
    const ThreadCtx& o = lane_thread(b, self->warp, static_cast<unsigned>(__builtin_ctz(others)));
    if ((o.mask & mask) && (o.mask != mask || o.kind != kind || o.width != width ||
                            (kind == Coll::compute && o.compute != self->compute))) {
      raise(self, Fault::collective_mismatch,
            format("mismatched warp collective: %s calls %s at %s:%u with mask 0x%08x while lane %u waits in %s "
                   "at %s:%u with mask 0x%08x",
                   describe(self).c_str(), what, site.file, site.line, mask, o.lane, o.what, o.site.file,
                   o.site.line, o.mask));
    }
  }
  self->kind = kind;
  self->what = what;
  self->mask = mask;
  self->value = value;
  self->param = param;
  self->width = width;
  self->site = site;
  self->st = TState::at_collective;
  w.waiting |= bit;
  if ((w.waiting & mask) != mask) {
    wait_until_runnable(self, lk.get(), w.cv);
    return self->result;
  }
  // Last to arrive: compute every participant's result, then release them.
  std::vector<unsigned> release;
  if (kind == Coll::compute) {
    void* lanes[32] = {};
    for (unsigned m = mask; m; m &= m - 1) {
      const unsigned l = static_cast<unsigned>(__builtin_ctz(m));
      lanes[l] = reinterpret_cast<void*>(static_cast<std::uintptr_t>(lane_thread(b, self->warp, l).value));
    }
    self->compute(lanes);
  }
  std::uint64_t ballot = 0;
  if (kind == Coll::vote) {
    for (unsigned m = mask; m; m &= m - 1) {
      unsigned l = static_cast<unsigned>(__builtin_ctz(m));
      if (lane_thread(b, self->warp, l).value) ballot |= 1ull << l;
    }
  }
  for (unsigned m = mask; m; m &= m - 1) {
    unsigned l = static_cast<unsigned>(__builtin_ctz(m));
    ThreadCtx& t = lane_thread(b, self->warp, l);
    const unsigned seg = l & ~static_cast<unsigned>(width - 1);
    unsigned src = l;
    switch (kind) {
      case Coll::shfl_idx: src = seg + (static_cast<unsigned>(t.param) & static_cast<unsigned>(width - 1)); break;
      case Coll::shfl_up: src = (static_cast<int>(l) - t.param >= static_cast<int>(seg)) ? l - t.param : l; break;
      case Coll::shfl_down: src = (l + t.param < seg + width) ? l + t.param : l; break;
      case Coll::shfl_xor: {
        unsigned s = l ^ static_cast<unsigned>(t.param);
        src = (s >= seg && s < seg + width) ? s : l;
        break;
      }
      default: break;
    }
    if (kind == Coll::vote) {
      t.result = ballot;
    } else if (kind == Coll::match_any) {
      std::uint64_t same = 0;
      for (unsigned m2 = mask; m2; m2 &= m2 - 1) {
        unsigned l2 = static_cast<unsigned>(__builtin_ctz(m2));
        if (lane_thread(b, self->warp, l2).value == t.value) same |= 1ull << l2;
      }
      t.result = same;
    } else if (kind == Coll::syncwarp || kind == Coll::compute) {
      t.result = 0;
    } else {
      if (!(mask & (1u << src))) {
        w.waiting &= ~mask;
        raise(self, Fault::collective_mask,
              format("%s at %s:%u: lane %u reads lane %u, which is not in the mask 0x%08x", what, site.file,
                     site.line, l, src, mask));
      }
      t.result = lane_thread(b, self->warp, src).value;
    }
    release.push_back(t.linear);
  }
  w.waiting &= ~mask;
  release_and_continue(self, release, w.cv);
  return self->result;
}

// ------------------------------------------------------------------ thread lifetime
inline void mark_exited(ThreadCtx* self) {
  BlockState* b = self->block;
  const bool threads = b->mode == Mode::threads;
  const bool check = !b->aborting.load(std::memory_order_acquire);
  WarpState& w = b->warps[self->warp];
  {
    MaybeLock lw(w.m, threads);
    const unsigned bit = 1u << self->lane;
    w.exited |= bit;
    if (check) {
      for (unsigned others = w.waiting; others; others &= others - 1) {
        const ThreadCtx& o = lane_thread(b, self->warp, static_cast<unsigned>(__builtin_ctz(others)));
        if (o.mask & bit) {
          record_fault(b, Fault::collective_mask,
                       format("%s returned while lane %u waits for it in %s at %s:%u (mask 0x%08x)",
                              describe(self).c_str(), o.lane, o.what, o.site.file, o.site.line, o.mask));
          break;
        }
      }
    }
  }
  MaybeLock lb(b->m, threads);
  b->progress.fetch_add(1, std::memory_order_relaxed);
  self->st = TState::exited;
  if (b->exited++ == 0) b->first_exited = self->linear;
  if (check && b->at_barrier > 0 && !b->aborting.load(std::memory_order_acquire)) {
    record_fault(b, Fault::exit_before_barrier,
                 format("%s returned while %u thread(s) wait at __syncthreads %s:%u; every thread of a block must "
                        "reach each barrier",
                        describe(self).c_str(), b->at_barrier, b->barrier_site.file, b->barrier_site.line));
  }
}

inline void run_thread_body(ThreadCtx* self) {
  BlockState* b = self->block;
  try {
    (*b->body)();
  } catch (const KernelAbort&) {
  } catch (const std::exception& e) {
    record_fault(b, Fault::kernel_exception, format("%s threw: %s", describe(self).c_str(), e.what()));
  } catch (...) {
    record_fault(b, Fault::kernel_exception, format("%s threw an exception", describe(self).c_str()));
  }
  mark_exited(self);
}

inline void fiber_entry() {
  ThreadCtx* self = tl_current;
  BlockState* b = self->block;
  finish_switch(self->ctx, b->sched);
  run_thread_body(self);
  switch_context(self->ctx, b->sched, /*from_dying=*/true);
  __builtin_unreachable();
}

inline std::string describe_waiters(BlockState* b) {
  std::string out;
  unsigned shown = 0;
  for (unsigned i = 0; i < b->nthreads && shown < 8; ++i) {
    const ThreadCtx& t = b->threads[i];
    if (t.st == TState::at_barrier) {
      out += format("; %s waits at __syncthreads %s:%u", describe(&t).c_str(), t.site.file, t.site.line);
      ++shown;
    } else if (t.st == TState::at_collective) {
      unsigned missing = t.mask & ~b->warps[t.warp].waiting;
      out += format("; %s waits in %s at %s:%u for lanes 0x%08x (mask 0x%08x)", describe(&t).c_str(), t.what,
                    t.site.file, t.site.line, missing, t.mask);
      ++shown;
    }
  }
  return out;
}

// Stacks are reused across blocks and launches of a host thread.
inline std::vector<FiberStack>& stack_pool() {
  thread_local std::vector<FiberStack> pool;
  return pool;
}

inline std::size_t default_stack_bytes() {
#if defined(TOKENLESS_EMU_ASAN)
  return std::size_t{1} << 20;
#else
  return std::size_t{256} << 10;
#endif
}

inline void run_block_fibers(BlockState* b, std::size_t stack_bytes) {
  auto& pool = stack_pool();
  if (!pool.empty() && pool.front().bytes < stack_bytes) pool.clear();
  while (pool.size() < b->nthreads) {
    pool.emplace_back();
    if (!pool.back().allocate(stack_bytes)) {
      pool.pop_back();
      record_fault(b, Fault::bad_launch, "could not map fiber stacks");
      return;
    }
  }
  std::vector<unsigned> initial(b->nthreads);
  for (unsigned i = 0; i < b->nthreads; ++i) {
    initial[i] = i;
    b->threads[i].stack = &pool[i];
  }
  b->ready.clear();
  b->ready_head = 0;
  enqueue_all(b, initial);
  for (unsigned i = 0; i < b->nthreads; ++i) b->threads[i].st = TState::not_started;  // queued, no context yet

  auto resume = [&](ThreadCtx& t) {
    if (t.st == TState::not_started) make_context(t.ctx, *t.stack, &fiber_entry);
    tl_current = &t;
    switch_context(b->sched, t.ctx);
    finish_switch(b->sched, t.ctx);
    tl_current = nullptr;
  };
  std::vector<bool> started(b->nthreads, false);

  while (!b->aborting.load(std::memory_order_relaxed)) {
    unsigned idx;
    if (b->order == Order::random) {
      std::size_t n = b->ready.size() - b->ready_head;
      if (n == 0) break;
      std::size_t k = b->ready_head + static_cast<std::size_t>((*b->rng)() % n);
      std::swap(b->ready[k], b->ready[b->ready_head]);
      idx = b->ready[b->ready_head++];
    } else {
      if (b->ready_head == b->ready.size()) break;
      idx = b->ready[b->ready_head++];
    }
    if (b->ready_head > 4096 && b->ready_head * 2 > b->ready.size()) {
      b->ready.erase(b->ready.begin(), b->ready.begin() + static_cast<std::ptrdiff_t>(b->ready_head));
      b->ready_head = 0;
    }
    started[idx] = true;
    resume(b->threads[idx]);
  }
  if (!b->aborting.load(std::memory_order_relaxed) && b->exited != b->nthreads) {
    record_fault(b, Fault::deadlock,
                 format("deadlock in block (%u,%u,%u): %u of %u threads returned and none of the rest can proceed%s",
                        b->block_idx.x, b->block_idx.y, b->block_idx.z, b->exited, b->nthreads,
                        describe_waiters(b).c_str()));
  }
  // Unwind every started fiber that is still blocked so destructors run.
  for (unsigned i = 0; i < b->nthreads; ++i) {
    ThreadCtx& t = b->threads[i];
    if (started[i] && t.st != TState::exited) resume(t);
  }
}

// Thread mode keeps its OS threads across blocks and launches: creating a
// thread per CUDA thread per block dominated the run time under TSan. Worker
// i runs CUDA thread i of each block. Each worker synchronises only with the
// launching thread, through its own mutex, so the pool adds no ordering
// between the CUDA threads of a block and TSan still sees their races.
class ThreadPool {
 public:
  ~ThreadPool() {
    for (auto& w : workers_) {
      {
        std::lock_guard<std::mutex> g(w->m);
        w->stop = true;
      }
      w->cv.notify_one();
      w->th.join();
    }
  }

  void run(BlockState* b) {
    std::lock_guard<std::mutex> serial(launch_m_);
    while (workers_.size() < b->nthreads) {
      workers_.push_back(std::make_unique<Worker>());
      Worker* w = workers_.back().get();
      const unsigned i = static_cast<unsigned>(workers_.size() - 1);
      w->th = std::thread([w, i] { work(*w, i); });
    }
    for (unsigned i = 0; i < b->nthreads; ++i) {
      Worker& w = *workers_[i];
      {
        std::lock_guard<std::mutex> g(w.m);
        w.job = b;
        w.done = false;
        ++w.generation;
      }
      w.cv.notify_one();
    }
    for (unsigned i = 0; i < b->nthreads; ++i) {
      Worker& w = *workers_[i];
      std::unique_lock<std::mutex> lk(w.m);
      w.cv.wait(lk, [&] { return w.done; });
      w.job = nullptr;
    }
  }

 private:
  struct Worker {
    std::mutex m;
    std::condition_variable cv;
    std::thread th;
    BlockState* job = nullptr;
    std::uint64_t generation = 0;
    bool done = true;
    bool stop = false;
  };

  static void work(Worker& w, unsigned i) {
    std::uint64_t seen = 0;
    for (;;) {
      BlockState* b;
      {
        std::unique_lock<std::mutex> lk(w.m);
        w.cv.wait(lk, [&] { return w.stop || w.generation != seen; });
        if (w.stop) return;
        seen = w.generation;
        b = w.job;
      }
      tl_current = &b->threads[i];
      run_thread_body(&b->threads[i]);
      tl_current = nullptr;
      {
        std::lock_guard<std::mutex> g(w.m);
        w.done = true;
      }
      w.cv.notify_one();
    }
  }

  std::mutex launch_m_;
  std::vector<std::unique_ptr<Worker>> workers_;
};

inline ThreadPool& thread_pool() {
  static ThreadPool pool;
  return pool;
}

inline void run_block_threads(BlockState* b) {
  for (unsigned i = 0; i < b->nthreads; ++i) b->threads[i].st = TState::runnable;
  thread_pool().run(b);
}

inline std::unordered_map<const void*, int>& func_smem_limits() {
  static std::unordered_map<const void*, int> m;
  return m;
}
inline std::mutex& func_smem_mutex() {
  static std::mutex m;
  return m;
}

inline cudaError_t& last_error() {
  thread_local cudaError_t e = cudaSuccess;
  return e;
}

inline constexpr std::size_t kDefaultSmemLimit = 48 * 1024;
inline constexpr std::size_t kMaxSmemOptIn = 227 * 1024;

inline cudaError_t fail_launch(Report& rep, Fault f, std::string msg) {
  rep.fault = f;
  rep.message = std::move(msg);
  if (options().print_faults) std::fprintf(stderr, "[tokenless emu] %s: %s\n", to_string(f), rep.message.c_str());
  cudaError_t e = f == Fault::bad_launch ? cudaErrorInvalidConfiguration : cudaErrorLaunchFailure;
  last_error() = e;
  return e;
}

// Runs `body` once per CUDA thread of the grid.
inline cudaError_t run_grid(dim3 grid, dim3 block, std::size_t smem, const void* kernel_id,
                            const std::function<void()>& body) {
  Report& rep = report_storage();
  rep.fault = Fault::none;
  rep.message.clear();
  rep.launches++;
  const std::uint64_t launch_no = launch_counter().fetch_add(1);
  const Options opt = options();

  const std::uint64_t nthreads = std::uint64_t{block.x} * block.y * block.z;
  if (nthreads == 0 || nthreads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64) {
    return fail_launch(rep, Fault::bad_launch,
                       format("block (%u,%u,%u) is not a valid block shape (1..1024 threads, z <= 64)", block.x,
                              block.y, block.z));
  }
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
    return fail_launch(rep, Fault::bad_launch,
                       format("grid (%u,%u,%u) is not a valid grid shape", grid.x, grid.y, grid.z));
  }
  std::size_t smem_limit = kDefaultSmemLimit;
  {
    std::lock_guard<std::mutex> g(func_smem_mutex());
    auto it = func_smem_limits().find(kernel_id);
    if (it != func_smem_limits().end()) smem_limit = std::max(smem_limit, static_cast<std::size_t>(it->second));
  }
  if (smem > smem_limit) {
    return fail_launch(rep, Fault::bad_launch,
                       format("%zu bytes of dynamic shared memory exceed the kernel's limit of %zu; raise it with "
                              "cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes)",
                              smem, smem_limit));
  }

  const std::uint64_t nblocks = std::uint64_t{grid.x} * grid.y * grid.z;
  std::vector<std::uint64_t> order(nblocks);
  for (std::uint64_t i = 0; i < nblocks; ++i) order[i] = i;
  std::mt19937_64 rng(opt.seed ^ (0x9e3779b97f4a7c15ULL * (launch_no + 1)));
  if (opt.order == Order::reverse) std::reverse(order.begin(), order.end());
  if (opt.order == Order::random) std::shuffle(order.begin(), order.end(), rng);

  const std::size_t smem_alloc = smem ? smem : 1;
  std::unique_ptr<unsigned char[]> dyn(new unsigned char[smem_alloc + 128]);
  auto* dyn_aligned = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<std::uintptr_t>(dyn.get()) + 127) & ~static_cast<std::uintptr_t>(127));
  const std::size_t stack_bytes = opt.stack_bytes ? opt.stack_bytes : default_stack_bytes();
  const unsigned nwarps = static_cast<unsigned>((nthreads + 31) / 32);

  for (std::uint64_t lin : order) {
    BlockState b;
    b.block_idx = uint3{static_cast<unsigned>(lin % grid.x), static_cast<unsigned>((lin / grid.x) % grid.y),
                        static_cast<unsigned>(lin / (std::uint64_t{grid.x} * grid.y))};
    b.block_dim = block;
    b.grid_dim = grid;
    b.nthreads = static_cast<unsigned>(nthreads);
    b.nwarps = nwarps;
    b.mode = opt.mode;
    b.order = opt.order;
    b.rng = &rng;
    b.deadlock_timeout_ms = opt.deadlock_timeout_ms;
    b.body = &body;
    b.dyn_smem = dyn_aligned;
    b.dyn_smem_bytes = smem;
    // Uninitialised shared memory reads as NaN / -1 rather than as a lucky zero.
    std::memset(dyn_aligned, 0xff, smem_alloc);
    b.threads.reset(new ThreadCtx[b.nthreads]);
    b.warps.reset(new WarpState[nwarps]);
    for (unsigned i = 0; i < b.nthreads; ++i) {
      ThreadCtx& t = b.threads[i];
      t.tid = uint3{i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
      t.linear = i;
      t.warp = i / 32;
      t.lane = i % 32;
      t.block = &b;
      b.warps[t.warp].existing |= 1u << t.lane;
    }
    if (opt.mode == Mode::fibers) run_block_fibers(&b, stack_bytes);
    else run_block_threads(&b);
    if (b.fault != Fault::none) {
      return fail_launch(rep, b.fault, b.message);
    }
  }
  return cudaSuccess;
}

}  // namespace detail

// Launches `kernel` on the executor. Arguments are converted to the kernel's
// parameter types once, as the CUDA runtime does, and each thread gets copies.
template <class... P, class... A>
cudaError_t launch(void (*kernel)(P...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t /*stream*/,
                   A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  const std::function<void()> body = [&params, kernel] { std::apply(kernel, params); };
  return detail::run_grid(grid, block, smem, reinterpret_cast<const void*>(kernel), body);
}

// Dynamic shared memory of the running block (`extern __shared__` on the GPU).
inline void* dynamic_smem() { return detail::current()->block->dyn_smem; }

}  // namespace tokenless::emu
