// Files written atomically: a temporary name in the same directory, fsync, rename, fsync of
// the directory. A crash leaves either the old file or the new one, never a torn one.
#pragma once

#include <string>
#include <string_view>

namespace zoro {

// Writes `contents` to `path` atomically. Throws IoError naming the path and the errno text.
void write_file_atomically(const std::string& path, std::string_view contents);
// Reads a whole file. Throws IoError naming the path when it cannot be opened or read.
std::string read_file(const std::string& path);

}  // namespace zoro
