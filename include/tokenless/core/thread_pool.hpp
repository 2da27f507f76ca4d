#pragma once
// A small fixed pool of host threads for the fast host path (models/*_host.hpp):
// parallel_for splits [0, n) into one contiguous range a thread and waits.
// The caller's thread takes the first range, so a pool of one thread runs
// inline. A parallel_for inside a body (a matrix product inside a loop that
// is already split, say) runs inline on its thread: the outer split is the
// parallelism, and nothing waits on itself.
//
//   tokenless::host::ThreadPool pool;            // TOKENLESS_THREADS, else the cores
//   pool.parallel_for(rows, [&](std::int64_t lo, std::int64_t hi) { ... });
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tokenless::host {

// TOKENLESS_THREADS when set (1..256), else the machine's hardware threads.
inline int default_threads() {
  if (const char* env = std::getenv("TOKENLESS_THREADS")) {
    const int n = std::atoi(env);
    if (n >= 1 && n <= 256) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

class ThreadPool {
 public:
  explicit ThreadPool(int threads = default_threads()) : threads_(std::max(1, threads)) {
    for (int t = 1; t < threads_; ++t) workers_.emplace_back([this, t] { work(t); });
  }
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(m_);
      stop_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return threads_; }

  // body(lo, hi) over contiguous ranges covering [0, n); at most one range a
  // thread, none shorter than `grain` (so small loops stay on one thread).
  void parallel_for(std::int64_t n, const std::function<void(std::int64_t, std::int64_t)>& body,
                    std::int64_t grain = 1) {
    if (n <= 0) return;
    const std::int64_t parts = std::min<std::int64_t>(threads_, std::max<std::int64_t>(1, n / std::max<std::int64_t>(1, grain)));
    if (parts == 1 || inside()) {
      body(0, n);
      return;
    }
    Inside mark;
    {
      std::lock_guard<std::mutex> lock(m_);
      body_ = &body;
      n_ = n;
      parts_ = parts;
      pending_.store(static_cast<int>(parts - 1), std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
    }
    if (sleepers_.load(std::memory_order_acquire) > 0) wake_.notify_all();
    body(0, n / parts);
    for (int i = 0; i < kSpins && pending_.load(std::memory_order_acquire) != 0; ++i) pause();
    if (pending_.load(std::memory_order_acquire) != 0) {
      std::unique_lock<std::mutex> lock(m_);
      done_.wait(lock, [this] { return pending_.load(std::memory_order_acquire) == 0; });
    }
  }

 private:
  // A worker checks for the next loop this many times (about 50 µs) before
  // it sleeps: the host path's products and passes follow each other closely,
  // and a condition variable's wake costs tens of microseconds each (a decode
  // step's 84 matrix-vector products lost a fifth of their speed to it).
  static constexpr int kSpins = 1 << 13;
  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    std::this_thread::yield();
#endif
  }
  // This thread is running a body (of any pool).
  static bool& inside() {
    thread_local bool flag = false;
    return flag;
  }
  struct Inside {
    bool was = inside();
    Inside() { inside() = true; }
    ~Inside() { inside() = was; }
  };

  void work(int t) {
    std::uint64_t seen = 0;
    for (;;) {
      std::uint64_t g = generation_.load(std::memory_order_acquire);
      for (int i = 0; i < kSpins && g == seen; ++i) {
        pause();
        g = generation_.load(std::memory_order_acquire);
      }
      std::unique_lock<std::mutex> lock(m_);
      if (generation_.load(std::memory_order_relaxed) == seen) {
        sleepers_.fetch_add(1, std::memory_order_acq_rel);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
        sleepers_.fetch_sub(1, std::memory_order_acq_rel);
      }
      seen = generation_.load(std::memory_order_relaxed);
      if (stop_) return;
      if (t >= parts_ || body_ == nullptr) continue;
      const auto* body = body_;
      const std::int64_t lo = n_ * t / parts_, hi = n_ * (t + 1) / parts_;
      lock.unlock();
      {
        Inside mark;
        (*body)(lo, hi);
      }
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> done(m_);
        done_.notify_one();
      }
    }
  }

  int threads_;
  std::vector<std::thread> workers_;
  std::mutex m_;
  std::condition_variable wake_, done_;
  const std::function<void(std::int64_t, std::int64_t)>* body_ = nullptr;  // guarded by m_
  std::int64_t n_ = 0, parts_ = 0;                                         // guarded by m_
  std::atomic<int> pending_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<std::uint64_t> generation_{0};
  bool stop_ = false;
};

}  // namespace tokenless::host
