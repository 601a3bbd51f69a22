// base/aligned_buffer.h — an owning, 64-byte (or larger) aligned, zero-initialised byte buffer.
// Used for weights converted at load, scratch space and tests. Move-only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <utility>

#include "base/check.h"

namespace dsv4 {

class AlignedBuffer {
 public:
  static constexpr size_t kDefaultAlign = 64;

  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes, size_t align = kDefaultAlign) { resize(bytes, align); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    if (this != &o) {
      std::free(data_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ~AlignedBuffer() { std::free(data_); }

  // Discards old contents; the new buffer is zero-filled.
  void resize(size_t bytes, size_t align = kDefaultAlign) {
    std::free(data_);
    data_ = nullptr;
    size_ = bytes;
    if (bytes == 0) return;
    size_t rounded = (bytes + align - 1) / align * align;
    data_ = static_cast<uint8_t*>(std::aligned_alloc(align, rounded));
    DSV4_CHECK_MSG(data_ != nullptr, "aligned_alloc failed");
    std::memset(data_, 0, rounded);
  }

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  template <typename T>
  T* as() {
    return reinterpret_cast<T*>(data_);
  }
  template <typename T>
  const T* as() const {
    return reinterpret_cast<const T*>(data_);
  }
  std::span<uint8_t> bytes() { return {data_, size_}; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace dsv4
