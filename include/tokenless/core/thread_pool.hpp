#pragma once
// A small fixed pool of host threads for the fast host path (models/*_host.hpp):
// parallel_for splits [0, n) into one contiguous range a thread and waits.
// The caller's thread takes the first range, so a pool of one thread runs
// inline. It is not re-entrant: a body must not call parallel_for on the
// same pool (the BLAS calls inside a body run single-threaded instead).
//
//   tokenless::host::ThreadPool pool;            // TOKENLESS_THREADS, else the cores
//   pool.parallel_for(rows, [&](std::int64_t lo, std::int64_t hi) { ... });
#include <algorithm>
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
      ++generation_;
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
    if (parts == 1) {
      body(0, n);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(m_);
      body_ = &body;
      n_ = n;
      parts_ = parts;
      pending_ = static_cast<int>(parts - 1);
      ++generation_;
    }
    wake_.notify_all();
    body(0, n / parts);
    std::unique_lock<std::mutex> lock(m_);
    done_.wait(lock, [this] { return pending_ == 0; });
    body_ = nullptr;
  }

 private:
  void work(int t) {
    std::uint64_t seen = 0;
    for (;;) {
      std::unique_lock<std::mutex> lock(m_);
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (stop_) return;
      if (t >= parts_ || body_ == nullptr) continue;
      const auto* body = body_;
      const std::int64_t lo = n_ * t / parts_, hi = n_ * (t + 1) / parts_;
      lock.unlock();
      (*body)(lo, hi);
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  int threads_;
  std::vector<std::thread> workers_;
  std::mutex m_;
  std::condition_variable wake_, done_;
  const std::function<void(std::int64_t, std::int64_t)>* body_ = nullptr;
  std::int64_t n_ = 0, parts_ = 0;
  int pending_ = 0;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace tokenless::host
