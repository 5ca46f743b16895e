// A read-only memory map of a whole file: opening a large file costs nothing until its pages
// are read. Move-only; unmaps on destruction.
//
// Contract: open() throws IoError naming the path and the system's reason when the file is
// missing, unreadable, not a regular file, or cannot be mapped. An empty file opens with
// size() == 0 and data() == nullptr (callers decide whether that is an error).
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

namespace zoro::train {

class MappedFile {
 public:
  static MappedFile open(const std::string& path);

  MappedFile() = default;
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
  std::string_view text() const noexcept { return {reinterpret_cast<const char*>(data_), size_}; }
  const std::string& path() const noexcept { return path_; }

 private:
  void unmap() noexcept;
  std::string path_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace zoro::train
