// JsonLogWriter: a log of one JSON object per line (JSON Lines), for machines.
//
// Each write() is one whole line handed to the kernel in one write(2) on an O_APPEND file,
// so a crash leaves complete lines (at most the last one torn) and a reader tailing the file
// sees each line as soon as it is written. Opening with append = true (a resumed run) keeps
// what the file holds; append = false starts it afresh. Errors throw IoError naming the path
// and the system's reason. Not thread-safe: one writer.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace zoro::train {

class JsonLogWriter {
 public:
  JsonLogWriter(std::string path, bool append);
  ~JsonLogWriter();
  JsonLogWriter(const JsonLogWriter&) = delete;
  JsonLogWriter& operator=(const JsonLogWriter&) = delete;

  // Writes `record` (an object) as one line.
  void write(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace zoro::train
