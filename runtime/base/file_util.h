// Files written atomically: a temporary name in the same directory, fsync, rename, fsync of
// the directory. A crash leaves either the old file or the new one, never a torn one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace zoro {

// Writes `contents` to `path` atomically. Throws IoError naming the path and the errno text.
void write_file_atomically(const std::string& path, std::string_view contents);
// Reads a whole file. Throws IoError naming the path when it cannot be opened or read.
std::string read_file(const std::string& path);

// Streams a large file to a temporary name beside `path`; commit() makes it appear at `path`
// atomically (fsync, rename, directory fsync). Destroyed without commit(), it removes the
// temporary file and `path` is untouched. Not thread-safe; one writer per file.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, std::size_t bytes);
  std::size_t bytes_written() const { return written_; }
  void commit();

 private:
  std::string path_;
  std::string tmp_;
  int fd_ = -1;
  std::size_t written_ = 0;
};

// CRC-32C (Castagnoli) of a buffer, continuing from `crc` (0 to start). Checksums on disk.
std::uint32_t crc32c(const void* data, std::size_t bytes, std::uint32_t crc = 0);

}  // namespace zoro
