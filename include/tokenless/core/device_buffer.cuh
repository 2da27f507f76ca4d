#pragma once
// DeviceBuffer<T>: the one owning device array of tests, benchmarks and
// examples (the library itself never allocates). Every allocation and copy
// is checked and reported as a Status, never thrown.
#include <tokenless/core/config.hpp>
#include <tokenless/core/device.hpp>
#include <tokenless/core/status.hpp>

#include <cstddef>
#include <utility>
#include <vector>

namespace tokenless {

template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // n elements; check status() (an allocation that failed leaves get() null).
  explicit DeviceBuffer(std::size_t n) { status_ = allocate(n); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept { swap(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    DeviceBuffer t(std::move(o));
    swap(t);
    return *this;
  }
  ~DeviceBuffer() { release(); }

  // Frees what it held, then holds n elements (at least one byte is
  // allocated, so that an empty buffer still has a valid address).
  Status allocate(std::size_t n) {
    release();
    void* p = nullptr;
    TL_CUDA_TRY(cudaMalloc(&p, (n ? n : 1) * sizeof(T)));
    p_ = static_cast<T*>(p);
    n_ = n;
    return Status::ok();
  }
  Status upload(const T* host, std::size_t n, cudaStream_t stream = nullptr) {
    if (n > n_) return Status::argument(StatusCode::shape_mismatch, "n", "at most the buffer's size", "%zu (size %zu)", n, n_);
    if (n) TL_CUDA_TRY(cudaMemcpyAsync(p_, host, n * sizeof(T), cudaMemcpyHostToDevice, stream));
    return Status::ok();
  }
  Status upload(const std::vector<T>& host, cudaStream_t stream = nullptr) { return upload(host.data(), host.size(), stream); }
  // Copies the first n elements to the host; synchronises `stream`.
  Status download(T* host, std::size_t n, cudaStream_t stream = nullptr) const {
    if (n > n_) return Status::argument(StatusCode::shape_mismatch, "n", "at most the buffer's size", "%zu (size %zu)", n, n_);
    if (n) TL_CUDA_TRY(cudaMemcpyAsync(host, p_, n * sizeof(T), cudaMemcpyDeviceToHost, stream));
    TL_CUDA_TRY(cudaStreamSynchronize(stream));
    return Status::ok();
  }
  Status fill_bytes(int value, cudaStream_t stream = nullptr) {
    if (n_) TL_CUDA_TRY(cudaMemsetAsync(p_, value, n_ * sizeof(T), stream));
    return Status::ok();
  }

  const Status& status() const { return status_; }
  T* get() const { return p_; }
  std::size_t size() const { return n_; }
  std::size_t bytes() const { return n_ * sizeof(T); }

 private:
  void release() {
    if (p_) (void)cudaFree(p_);
    p_ = nullptr;
    n_ = 0;
  }
  void swap(DeviceBuffer& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    std::swap(status_, o.status_);
  }
  T* p_ = nullptr;
  std::size_t n_ = 0;
  Status status_;
};

}  // namespace tokenless
