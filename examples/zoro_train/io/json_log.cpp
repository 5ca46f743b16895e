#include "examples/zoro_train/io/json_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "runtime/base/check.h"

namespace zoro::train {

JsonLogWriter::JsonLogWriter(std::string path, bool append) : path_(std::move(path)) {
  const int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (append ? 0 : O_TRUNC);
  fd_ = ::open(path_.c_str(), flags, 0644);
  if (fd_ < 0) {
    ZORO_THROW(IoError, "cannot open the JSON log '" << path_ << "': " << std::strerror(errno));
  }
}

JsonLogWriter::~JsonLogWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void JsonLogWriter::write(const nlohmann::json& record) {
  ZORO_CHECK(record.is_object(),
             "JSON log '" << path_ << "': a record must be an object, not " << record.type_name());
  std::string line;
  try {
    line = record.dump();  // throws for invalid UTF-8 in a string
  } catch (const nlohmann::json::exception& e) {
    ZORO_THROW(InvalidArgument, "JSON log '" << path_ << "': " << e.what());
  }
  line.push_back('\n');
  const char* p = line.data();
  std::size_t left = line.size();
  while (left > 0) {
    const ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      ZORO_THROW(IoError, "cannot write the JSON log '" << path_ << "': " << std::strerror(errno));
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

}  // namespace zoro::train
