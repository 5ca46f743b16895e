// Note [Checkpoint]: what a checkpoint holds, so that a resumed run continues exactly as one
// that never stopped: the fp32 master weights, the optimizer state, the optimizer's step count
// (bias correction), the loss scaler (scale and good-step count), the step counter (which also
// decides whether DPU's warm-up is over), and the working weights as they are on the device —
// with DPU these are one update behind the master, and upload_pending says that the master's
// rounding must still be uploaded at the end of the next step. Gradient accumulators are not
// saved: checkpoints are taken between optimizer steps, when they hold nothing.
#include "runtime/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <regex>
#include <sstream>

#include "runtime/base/check.h"
#include "runtime/base/file_util.h"
#include "runtime/base/log.h"
#include "runtime/base/units.h"

namespace zoro {

namespace {

constexpr char kMagic[8] = {'Z', 'O', 'R', 'O', 'C', 'K', 'P', 'T'};
constexpr char kEndMagic[8] = {'Z', 'O', 'R', 'O', 'E', 'N', 'D', '\0'};
constexpr std::uint32_t kVersion = 1;
constexpr std::size_t kIoChunk = std::size_t{8} << 20;

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string out;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(shape[i]);
  }
  return out;
}

std::string hex_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%a", v);
  return buf;
}

struct SectionEntry {
  std::string name;
  std::size_t bytes = 0;
  std::uint32_t crc = 0;
};

std::string make_header(const CheckpointState& st, const std::vector<SectionEntry>& table) {
  std::ostringstream h;
  h << "layout_fingerprint=" << st.layout_fingerprint << "\n"
    << "config_fingerprint=" << st.config_fingerprint << "\n"
    << "total_elems=" << st.total_elems << "\n"
    << "steps_done=" << st.steps_done << "\n"
    << "optimizer_t=" << st.optimizer_t << "\n"
    << "loss_scale=" << hex_double(st.loss_scale) << "\n"
    << "good_steps=" << st.good_steps << "\n"
    << "upload_pending=" << (st.upload_pending ? 1 : 0) << "\n";
  if (st.world_size > 1) {  // absent from single-rank files: their format is unchanged
    h << "world_size=" << st.world_size << "\n"
      << "rank=" << st.rank << "\n"
      << "shard_begin=" << st.shard_begin << "\n"
      << "shard_end=" << st.shard_end << "\n";
  }
  for (const auto& p : st.params) {
    ZORO_CHECK(p.name.find_first_of("\t\n") == std::string::npos,
               "parameter name '" << p.name << "' contains a tab or newline");
    h << "param=" << p.name << "\t" << shape_text(p.shape) << "\n";
  }
  for (const auto& s : table) h << "section=" << s.name << "\t" << s.bytes << "\t" << s.crc << "\n";
  return h.str();
}

void put_u32(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::uint32_t get_u32(const char* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= static_cast<std::uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

struct ParsedHeader {
  CheckpointState state;
  std::vector<SectionEntry> table;
};

[[noreturn]] void malformed(const std::string& path, const std::string& why) {
  ZORO_THROW(IoError, "checkpoint '" << path << "' has a malformed header: " << why);
}

ParsedHeader parse_header(const std::string& text, const std::string& path) {
  ParsedHeader out;
  std::istringstream in(text);
  std::string line;
  auto bad = [&path](const std::string& why) { malformed(path, why); };
  auto to_i64 = [&](const std::string& v) -> std::int64_t {
    try {
      std::size_t used = 0;
      const long long x = std::stoll(v, &used);
      if (used != v.size()) malformed(path, "'" + v + "' is not an integer");
      return x;
    } catch (const std::logic_error&) {
      malformed(path, "'" + v + "' is not an integer");
    }
  };
  auto to_u64 = [&](const std::string& v) -> std::uint64_t {
    try {
      std::size_t used = 0;
      const unsigned long long x = std::stoull(v, &used);
      if (used != v.size()) malformed(path, "'" + v + "' is not an unsigned integer");
      return x;
    } catch (const std::logic_error&) {
      malformed(path, "'" + v + "' is not an unsigned integer");
    }
  };
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq == std::string::npos) bad("line '" + line + "'");
    const std::string key = line.substr(0, eq);
    const std::string value = line.substr(eq + 1);
    CheckpointState& st = out.state;
    if (key == "layout_fingerprint") {
      st.layout_fingerprint = to_u64(value);
    } else if (key == "config_fingerprint") {
      st.config_fingerprint = to_u64(value);
    } else if (key == "total_elems") {
      st.total_elems = to_u64(value);
    } else if (key == "steps_done") {
      st.steps_done = to_i64(value);
    } else if (key == "optimizer_t") {
      st.optimizer_t = to_i64(value);
    } else if (key == "loss_scale") {
      char* end = nullptr;
      st.loss_scale = std::strtod(value.c_str(), &end);
      if (end == value.c_str() || *end != '\0') bad("loss_scale '" + value + "'");
    } else if (key == "good_steps") {
      st.good_steps = static_cast<int>(to_i64(value));
    } else if (key == "upload_pending") {
      st.upload_pending = to_i64(value) != 0;
    } else if (key == "world_size") {
      st.world_size = static_cast<int>(to_i64(value));
    } else if (key == "rank") {
      st.rank = static_cast<int>(to_i64(value));
    } else if (key == "shard_begin") {
      st.shard_begin = to_u64(value);
    } else if (key == "shard_end") {
      st.shard_end = to_u64(value);
    } else if (key == "param") {
      const auto tab = value.find('\t');
      if (tab == std::string::npos) bad("param line '" + value + "'");
      CheckpointParam p;
      p.name = value.substr(0, tab);
      std::istringstream dims(value.substr(tab + 1));
      for (std::string d; std::getline(dims, d, ',');) p.shape.push_back(to_i64(d));
      st.params.push_back(std::move(p));
    } else if (key == "section") {
      std::istringstream fields(value);
      SectionEntry e;
      std::string bytes, crc;
      if (!std::getline(fields, e.name, '\t') || !std::getline(fields, bytes, '\t') ||
          !std::getline(fields, crc)) {
        bad("section line '" + value + "'");
      }
      e.bytes = to_u64(bytes);
      e.crc = static_cast<std::uint32_t>(to_u64(crc));
      out.table.push_back(std::move(e));
    } else {
      bad("unknown key '" + key + "'");
    }
  }
  return out;
}

// The config lines that differ between two TOML renderings (to name them in the message).
std::string config_differences(const std::string& mine, const std::string& theirs) {
  auto lines = [](const std::string& text) {
    std::map<std::string, std::string> out;
    std::istringstream in(text);
    std::string section;
    for (std::string l; std::getline(in, l);) {
      if (l.empty()) continue;
      if (l.front() == '[') {
        section = l.substr(1, l.size() - 2) + ".";
        continue;
      }
      const auto eq = l.find(" = ");
      if (eq != std::string::npos) out[section + l.substr(0, eq)] = l.substr(eq + 3);
    }
    return out;
  };
  const auto a = lines(mine);
  const auto b = lines(theirs);
  std::ostringstream out;
  for (const auto& [k, v] : a) {
    auto it = b.find(k);
    const std::string other = it == b.end() ? "(absent)" : it->second;
    if (other != v && k != "device" && k != "offload.cpu_threads" && k != "offload.host_budget" &&
        k != "offload.trace") {
      out << (out.tellp() > 0 ? ", " : "") << k << ": checkpoint " << other << ", now " << v;
    }
  }
  return out.str();
}

}  // namespace

std::string rank_checkpoint_file(int rank, int world, std::int64_t steps_done,
                                 std::int64_t generation) {
  return "rank-" + std::to_string(rank) + "-of-" + std::to_string(world) + ".step-" +
         std::to_string(steps_done) + ".gen-" + std::to_string(generation) + ".ckpt";
}

void write_checkpoint(const std::string& dir, const CheckpointState& state,
                      const std::vector<CheckpointSection>& sections, const std::string& file) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    ZORO_THROW(IoError, "cannot create checkpoint directory '" << dir << "': " << ec.message());
  std::vector<SectionEntry> table;
  table.push_back({"config.toml", state.config_toml.size(),
                   crc32c(state.config_toml.data(), state.config_toml.size())});
  for (const auto& s : sections) {
    ZORO_CHECK(s.data != nullptr || s.bytes == 0, "checkpoint section '" << s.name << "' is null");
    table.push_back({s.name, s.bytes, crc32c(s.data, s.bytes)});
  }
  const std::string header = make_header(state, table);
  std::string prefix(kMagic, sizeof kMagic);
  put_u32(prefix, kVersion);
  put_u32(prefix, static_cast<std::uint32_t>(header.size()));
  prefix += header;
  put_u32(prefix, crc32c(header.data(), header.size()));
  AtomicFileWriter out(dir + "/" + file);
  out.write(prefix.data(), prefix.size());
  out.write(state.config_toml.data(), state.config_toml.size());
  for (const auto& s : sections) {
    const auto* p = static_cast<const char*>(s.data);
    for (std::size_t off = 0; off < s.bytes; off += kIoChunk) {
      out.write(p + off, std::min(kIoChunk, s.bytes - off));
    }
  }
  out.write(kEndMagic, sizeof kEndMagic);
  out.commit();
}

CheckpointState read_checkpoint(const std::string& dir, const CheckpointState& expect,
                                const std::vector<CheckpointSection>& sections,
                                const std::string& file,
                                const std::function<void(const CheckpointState&)>& before_fill) {
  const std::string path = dir + "/" + file;
  std::ifstream in(path, std::ios::binary);
  if (!in) ZORO_THROW(IoError, "cannot open checkpoint '" << path << "': " << std::strerror(errno));
  in.seekg(0, std::ios::end);
  const auto file_bytes = static_cast<std::size_t>(in.tellg());
  in.seekg(0);
  char fixed[16];
  if (file_bytes < sizeof fixed || !in.read(fixed, sizeof fixed)) {
    ZORO_THROW(IoError, "checkpoint '" << path << "' is truncated (" << file_bytes << " bytes)");
  }
  if (std::memcmp(fixed, kMagic, sizeof kMagic) != 0) {
    ZORO_THROW(IoError, "'" << path << "' is not a zoro checkpoint (bad magic)");
  }
  const std::uint32_t version = get_u32(fixed + 8);
  if (version != kVersion) {
    ZORO_THROW(IoError, "checkpoint '" << path << "' has format version " << version
                                       << "; this zoro reads version " << kVersion);
  }
  const std::uint32_t header_bytes = get_u32(fixed + 12);
  if (header_bytes > file_bytes - sizeof fixed || file_bytes - sizeof fixed - header_bytes < 4) {
    ZORO_THROW(IoError, "checkpoint '" << path << "' is truncated (" << file_bytes
                                       << " bytes; the header alone claims " << header_bytes
                                       << ")");
  }
  std::string header(header_bytes, '\0');
  char crc_buf[4];
  in.read(header.data(), header_bytes);
  in.read(crc_buf, 4);
  if (!in || crc32c(header.data(), header.size()) != get_u32(crc_buf)) {
    ZORO_THROW(IoError, "checkpoint '" << path << "' is corrupted: the header fails its checksum");
  }
  ParsedHeader parsed = parse_header(header, path);
  std::size_t expected_bytes = sizeof fixed + header_bytes + 4 + sizeof kEndMagic;
  for (const auto& e : parsed.table) expected_bytes += e.bytes;
  if (file_bytes != expected_bytes) {
    ZORO_THROW(IoError, "checkpoint '"
                            << path << "' is "
                            << (file_bytes < expected_bytes ? "truncated"
                                                            : "longer than its header says")
                            << ": " << file_bytes << " bytes, expected " << expected_bytes);
  }

  // Same model?
  const CheckpointState& got = parsed.state;
  if (got.layout_fingerprint != expect.layout_fingerprint ||
      got.params.size() != expect.params.size()) {
    std::ostringstream why;
    why << "checkpoint '" << path << "' is of another model: it has " << got.params.size()
        << " parameters, this model " << expect.params.size();
    for (std::size_t i = 0; i < std::max(got.params.size(), expect.params.size()); ++i) {
      const bool in_got = i < got.params.size();
      const bool in_exp = i < expect.params.size();
      if (in_got && in_exp && got.params[i].name == expect.params[i].name &&
          got.params[i].shape == expect.params[i].shape) {
        continue;
      }
      why << "; first difference at parameter " << i << ": checkpoint "
          << (in_got ? "'" + got.params[i].name + "' [" + shape_text(got.params[i].shape) + "]"
                     : std::string("(none)"))
          << ", model "
          << (in_exp
                  ? "'" + expect.params[i].name + "' [" + shape_text(expect.params[i].shape) + "]"
                  : std::string("(none)"));
      break;
    }
    ZORO_THROW(InvalidArgument, why.str());
  }
  ZORO_CHECK(got.total_elems == expect.total_elems,
             "checkpoint '" << path << "' has " << got.total_elems << " flat elements, this model "
                            << expect.total_elems);
  if (got.world_size != expect.world_size) {
    ZORO_THROW(InvalidArgument, "checkpoint '" << path << "' was written by a run of "
                                               << got.world_size << " rank(s) but this run has "
                                               << expect.world_size
                                               << ": resharding is not supported yet");
  }
  ZORO_CHECK(got.rank == expect.rank && got.shard_begin == expect.shard_begin &&
                 got.shard_end == expect.shard_end,
             "checkpoint '" << path << "' holds rank " << got.rank << "'s shard ["
                            << got.shard_begin << ", " << got.shard_end << ") but rank "
                            << expect.rank << " expects [" << expect.shard_begin << ", "
                            << expect.shard_end << ")");

  // Section table: config.toml first, then exactly the caller's sections.
  ZORO_CHECK(parsed.table.size() == sections.size() + 1 && parsed.table[0].name == "config.toml",
             "checkpoint '" << path << "' holds " << parsed.table.size() - 1
                            << " state sections, this engine expects " << sections.size()
                            << " (another optimizer?)");
  for (std::size_t i = 0; i < sections.size(); ++i) {
    const auto& e = parsed.table[i + 1];
    ZORO_CHECK(e.name == sections[i].name && e.bytes == sections[i].bytes,
               "checkpoint '" << path << "': section " << i << " is '" << e.name << "' of "
                              << e.bytes << " bytes, expected '" << sections[i].name << "' of "
                              << sections[i].bytes
                              << " bytes (another optimizer or precision setting?)");
  }

  // Pass 1: verify every checksum without writing anything.
  const std::streamoff data_start = static_cast<std::streamoff>(sizeof fixed + header_bytes + 4);
  std::vector<char> buf(kIoChunk);
  std::string stored_config;
  for (const auto& e : parsed.table) {
    std::uint32_t crc = 0;
    for (std::size_t off = 0; off < e.bytes; off += kIoChunk) {
      const std::size_t n = std::min(kIoChunk, e.bytes - off);
      if (!in.read(buf.data(), static_cast<std::streamsize>(n))) {
        ZORO_THROW(IoError, "checkpoint '" << path << "': cannot read section '" << e.name << "'");
      }
      crc = crc32c(buf.data(), n, crc);
      if (&e == &parsed.table[0]) stored_config.append(buf.data(), n);
    }
    if (crc != e.crc) {
      ZORO_THROW(IoError, "checkpoint '" << path << "' is corrupted: section '" << e.name
                                         << "' fails its checksum");
    }
  }
  char end[sizeof kEndMagic];
  if (!in.read(end, sizeof end) || std::memcmp(end, kEndMagic, sizeof end) != 0) {
    ZORO_THROW(IoError, "checkpoint '" << path << "' is corrupted: bad end marker");
  }
  if (got.config_fingerprint != expect.config_fingerprint) {
    ZORO_THROW(InvalidArgument, "checkpoint '"
                                    << path
                                    << "' was written with another optimizer or "
                                       "precision configuration: "
                                    << config_differences(expect.config_toml, stored_config));
  }

  if (before_fill) {
    CheckpointState stored = got;
    stored.config_toml = stored_config;
    before_fill(stored);
  }

  // Pass 2: fill the sections.
  in.clear();
  in.seekg(data_start + static_cast<std::streamoff>(parsed.table[0].bytes));
  for (const auto& s : sections) {
    if (s.bytes > 0 &&
        !in.read(static_cast<char*>(s.data), static_cast<std::streamsize>(s.bytes))) {
      ZORO_THROW(IoError, "checkpoint '" << path << "': cannot read section '" << s.name << "'");
    }
  }
  CheckpointState result = got;
  result.config_toml = stored_config;
  return result;
}

// ---- the manifest of a partitioned checkpoint ------------------------------------------

void write_manifest(const std::string& dir, const CheckpointManifest& m) {
  ZORO_CHECK(m.world_size >= 1 && m.files.size() == static_cast<std::size_t>(m.world_size),
             "a checkpoint manifest of " << m.world_size << " rank(s) naming " << m.files.size()
                                         << " file(s)");
  std::ostringstream body;
  body << "zoro-manifest=1\n"
       << "world_size=" << m.world_size << "\n"
       << "layout_fingerprint=" << m.layout_fingerprint << "\n"
       << "config_fingerprint=" << m.config_fingerprint << "\n"
       << "steps_done=" << m.steps_done << "\n"
       << "generation=" << m.generation << "\n";
  for (const auto& f : m.files) body << "file=" << f << "\n";
  std::string text = body.str();
  text += "crc32c=" + std::to_string(crc32c(text.data(), text.size())) + "\n";
  write_file_atomically(dir + "/" + kManifestFile, text);
}

std::optional<CheckpointManifest> read_manifest(const std::string& dir) {
  const std::string path = dir + "/" + kManifestFile;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  if (!in) ZORO_THROW(IoError, "cannot open manifest '" << path << "': " << std::strerror(errno));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto bad = [&path](const std::string& why) -> void {
    ZORO_THROW(IoError, "checkpoint manifest '" << path << "' is malformed: " << why);
  };
  const auto crc_at = text.rfind("crc32c=");
  if (crc_at == std::string::npos || (crc_at > 0 && text[crc_at - 1] != '\n')) bad("no checksum");
  std::string crc_text = text.substr(crc_at + 7);
  if (!crc_text.empty() && crc_text.back() == '\n') crc_text.pop_back();
  if (crc_text.empty() || crc_text.find_first_not_of("0123456789") != std::string::npos ||
      std::to_string(crc32c(text.data(), crc_at)) != crc_text) {
    ZORO_THROW(IoError, "checkpoint manifest '" << path << "' is corrupted: it fails its checksum");
  }
  CheckpointManifest m;
  bool versioned = false;
  std::istringstream lines(text.substr(0, crc_at));
  for (std::string line; std::getline(lines, line);) {
    const auto eq = line.find('=');
    if (eq == std::string::npos) bad("line '" + line + "'");
    const std::string key = line.substr(0, eq);
    const std::string value = line.substr(eq + 1);
    try {
      if (key == "zoro-manifest") {
        if (value != "1") bad("version " + value + " (this zoro reads version 1)");
        versioned = true;
      } else if (key == "world_size") {
        m.world_size = std::stoi(value);
      } else if (key == "layout_fingerprint") {
        m.layout_fingerprint = std::stoull(value);
      } else if (key == "config_fingerprint") {
        m.config_fingerprint = std::stoull(value);
      } else if (key == "steps_done") {
        m.steps_done = std::stoll(value);
      } else if (key == "generation") {
        m.generation = std::stoll(value);
      } else if (key == "file") {
        // A plain name inside the directory: a manifest never sends a load elsewhere.
        if (value.empty() || value == "." || value == ".." ||
            value.find_first_of("/\\") != std::string::npos) {
          bad("file name '" + value + "'");
        }
        m.files.push_back(value);
      } else {
        bad("unknown key '" + key + "'");
      }
    } catch (const std::logic_error&) {
      bad("'" + value + "' is not a number (key " + key + ")");
    }
  }
  if (!versioned) bad("no zoro-manifest line");
  if (m.world_size < 1) bad("world_size " + std::to_string(m.world_size));
  if (m.generation < 0) bad("generation " + std::to_string(m.generation));
  if (m.files.size() != static_cast<std::size_t>(m.world_size)) {
    bad("it names " + std::to_string(m.files.size()) + " rank file(s) for world_size " +
        std::to_string(m.world_size));
  }
  return m;
}

// ---- generations of a partitioned checkpoint directory -----------------------------------

namespace {

// "rank-<r>-of-<N>.step-<S>.gen-<G>.ckpt", or "rank-<r>-of-<N>.ckpt" as written before
// generations (generation 0).
const std::regex& rank_file_pattern() {
  static const std::regex re(R"(rank-[0-9]+-of-[0-9]+(\.step-[0-9]+\.gen-([0-9]{1,18}))?\.ckpt)");
  return re;
}

// The temporary name of an interrupted atomic write (file_util.cpp) of a rank file or of the
// manifest.
const std::regex& stale_temporary_pattern() {
  static const std::regex re(R"((rank-[0-9]+-of-[0-9]+(\.step-[0-9]+\.gen-[0-9]+)?\.ckpt|)"
                             R"(manifest\.txt)\.tmp\..+)");
  return re;
}

// The generation of a rank file's name; nullopt for a name that is not one.
std::optional<std::int64_t> rank_file_generation(const std::string& name) {
  std::smatch match;
  if (!std::regex_match(name, match, rank_file_pattern())) return std::nullopt;
  return match[2].matched ? std::stoll(match[2].str()) : 0;
}

}  // namespace

std::int64_t next_checkpoint_generation(const std::string& dir) {
  std::int64_t latest = 0;
  try {
    if (const auto m = read_manifest(dir)) latest = m->generation;
  } catch (const IoError& e) {
    // Its checkpoint cannot be loaded anyway; the rank files still count below.
    ZORO_LOG(kWarn) << "saving checkpoint '" << dir
                    << "' over an unreadable manifest: " << e.what();
  }
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec == std::errc::no_such_file_or_directory) return latest + 1;
  for (; !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (const auto g = rank_file_generation(it->path().filename().string())) {
      latest = std::max(latest, *g);
    }
  }
  if (ec) ZORO_THROW(IoError, "cannot list checkpoint directory '" << dir << "': " << ec.message());
  return latest + 1;
}

std::size_t remove_unlisted_rank_files(const std::string& dir,
                                       const CheckpointManifest& keep) noexcept {
  std::size_t removed = 0;
  try {
    std::error_code ec;
    std::vector<std::filesystem::path> stale;
    std::filesystem::directory_iterator it(dir, ec);
    for (; !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      const std::string name = it->path().filename().string();
      const bool kept = std::find(keep.files.begin(), keep.files.end(), name) != keep.files.end();
      if (!kept && (std::regex_match(name, rank_file_pattern()) ||
                    std::regex_match(name, stale_temporary_pattern()))) {
        stale.push_back(it->path());
      }
    }
    if (ec) {
      ZORO_LOG(kWarn) << "cannot list checkpoint directory '" << dir
                      << "' to remove the files of older saves: " << ec.message();
    }
    for (const auto& path : stale) {
      if (std::filesystem::remove(path, ec)) {
        ++removed;
      } else if (ec) {
        ZORO_LOG(kWarn) << "cannot remove '" << path.string()
                        << "', a file of an older checkpoint save: " << ec.message();
      }
    }
  } catch (const std::exception& e) {
    ZORO_LOG(kWarn) << "removing the files of older saves from checkpoint '" << dir
                    << "': " << e.what();
  }
  return removed;
}

}  // namespace zoro
