#include "comm/rendezvous/rendezvous.h"

// Before Asio: Boost 1.74's awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

// Asio stays in this file: the header is Asio-free.
#include <array>
#include <boost/asio.hpp>
#include <charconv>
#include <cstdlib>
#include <exception>
#include <list>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "comm/communicator.h"
#include "comm/rendezvous/message.h"
#include "runtime/base/check.h"

namespace zoro::comm {

namespace asio = boost::asio;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using rendezvous::Message;
using rendezvous::MessageType;

namespace {

std::string describe_ranks(const std::set<int>& ranks) {
  std::ostringstream out;
  bool first = true;
  for (const int r : ranks) {
    out << (first ? "" : ", ") << r;
    first = false;
  }
  return out.str();
}

long long ms(std::chrono::milliseconds d) { return static_cast<long long>(d.count()); }

// Runs `io` until done() or `deadline`. Each call restarts the context, so it can be used for
// one exchange after another. Returns false on timeout, with the outstanding operations still
// pending: the caller cancels them and calls drain().
bool run_until(asio::io_context& io, const std::function<bool()>& done,
               Clock::time_point deadline) {
  io.restart();
  while (!done()) {
    const auto now = Clock::now();
    if (now >= deadline) return false;
    io.run_one_for(deadline - now);
    if (io.stopped()) io.restart();  // ran out of work: nothing left to wait for
  }
  return true;
}

// Lets every cancelled handler run, so none outlives the state it points at.
void drain(asio::io_context& io) {
  io.restart();
  io.run();
}

// One framed read in flight on a socket. The handlers point at this object: keep it alive
// (and at the same address) until done.
struct FrameRead {
  std::array<std::uint8_t, rendezvous::kPrefixBytes> prefix{};
  std::vector<std::uint8_t> frame;
  bool done = false;
  std::exception_ptr error;
  Message message;

  void start(tcp::socket& socket, std::string who) {
    done = false;
    error = nullptr;
    asio::async_read(socket, asio::buffer(prefix),
                     [this, &socket, who](const boost::system::error_code& ec, std::size_t) {
                       if (ec) return fail(ec, who);
                       std::size_t body = 0;
                       try {
                         body = rendezvous::parse_prefix(prefix);
                       } catch (...) {
                         error = std::current_exception();
                         done = true;
                         return;
                       }
                       frame.assign(prefix.begin(), prefix.end());
                       frame.resize(rendezvous::kPrefixBytes + body);
                       asio::async_read(
                           socket, asio::buffer(frame.data() + rendezvous::kPrefixBytes, body),
                           [this, who](const boost::system::error_code& ec2, std::size_t) {
                             if (ec2) return fail(ec2, who);
                             try {
                               message = rendezvous::parse_message(frame);
                             } catch (...) {
                               error = std::current_exception();
                             }
                             done = true;
                           });
                     });
  }

  void fail(const boost::system::error_code& ec, const std::string& who) {
    try {
      if (ec == asio::error::eof || ec == asio::error::connection_reset) {
        ZORO_THROW(Error, who << " closed the connection");
      }
      ZORO_THROW(Error, "reading from " << who << " failed: " << ec.message());
    } catch (...) {
      error = std::current_exception();
    }
    done = true;
  }
};

void write_frame(asio::io_context& io, tcp::socket& socket, const std::vector<std::uint8_t>& bytes,
                 Clock::time_point deadline, const std::string& who) {
  bool done = false;
  boost::system::error_code result;
  asio::async_write(socket, asio::buffer(bytes),
                    [&](const boost::system::error_code& ec, std::size_t) {
                      result = ec;
                      done = true;
                    });
  if (!run_until(
          io, [&] { return done; }, deadline)) {
    boost::system::error_code ignored;
    socket.close(ignored);
    drain(io);
    ZORO_THROW(Error, "rendezvous: sending to " << who << " timed out");
  }
  if (result)
    ZORO_THROW(Error, "rendezvous: sending to " << who << " failed: " << result.message());
}

Message read_frame(asio::io_context& io, tcp::socket& socket, Clock::time_point deadline,
                   const std::string& who, const std::string& timeout_message) {
  FrameRead read;
  read.start(socket, who);
  if (!run_until(
          io, [&] { return read.done; }, deadline)) {
    boost::system::error_code ignored;
    socket.close(ignored);
    drain(io);
    ZORO_THROW(Error, timeout_message);
  }
  if (read.error) std::rethrow_exception(read.error);
  return std::move(read.message);
}

void expect_type(const Message& m, MessageType type, const std::string& who) {
  ZORO_CHECK(m.type == type, "unexpected rendezvous message '"
                                 << rendezvous::to_string(m.type) << "' from " << who
                                 << " (expected '" << rendezvous::to_string(type) << "')");
}

int parse_int_env(const char* name, bool required, int fallback, int lo, int hi) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') {
    ZORO_CHECK(!required, "environment variable " << name
                                                  << " is not set (a torchrun-style "
                                                     "launch sets MASTER_ADDR, MASTER_PORT, RANK "
                                                     "and WORLD_SIZE)");
    return fallback;
  }
  const std::string_view s(text);
  int value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  ZORO_CHECK(ec == std::errc() && end == s.data() + s.size() && value >= lo && value <= hi,
             "environment variable " << name << "='" << s << "' is not an integer in [" << lo
                                     << ", " << hi << "]");
  return value;
}

}  // namespace

// ---- options -------------------------------------------------------------------------------

bool RendezvousOptions::present_in_environment() {
  const char* rank = std::getenv("RANK");
  const char* size = std::getenv("WORLD_SIZE");
  return rank != nullptr && *rank != '\0' && size != nullptr && *size != '\0';
}

RendezvousOptions RendezvousOptions::from_environment() {
  RendezvousOptions o;
  o.world_size = parse_int_env("WORLD_SIZE", true, 1, 1, 1 << 20);
  o.rank = parse_int_env("RANK", true, 0, 0, o.world_size - 1);
  o.local_rank = parse_int_env("LOCAL_RANK", false, o.rank, 0, o.world_size - 1);
  const char* addr = std::getenv("MASTER_ADDR");
  ZORO_CHECK(addr != nullptr && *addr != '\0',
             "environment variable MASTER_ADDR is not set (the address rank 0 listens on)");
  o.host = addr;
  o.port = static_cast<std::uint16_t>(parse_int_env("MASTER_PORT", true, 0, 1, 65535));
  if (const char* token = std::getenv("ZORO_RENDEZVOUS_TOKEN"); token != nullptr) o.token = token;
  ZORO_CHECK(o.world_size == 1 || !o.token.empty(),
             "environment variable ZORO_RENDEZVOUS_TOKEN is not set: every rank of a "
             "multi-rank run needs the same secret token");
  ZORO_CHECK(o.token.size() <= rendezvous::kMaxTokenBytes,
             "ZORO_RENDEZVOUS_TOKEN is " << o.token.size() << " bytes, over the limit "
                                         << rendezvous::kMaxTokenBytes);
  const int timeout_s = parse_int_env("ZORO_RENDEZVOUS_TIMEOUT_S", false, 0, 1, 86400);
  if (timeout_s > 0) o.join_timeout = o.op_timeout = std::chrono::seconds(timeout_s);
  return o;
}

// ---- listener ------------------------------------------------------------------------------

struct RendezvousListener::State {
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::string where;
};

RendezvousListener::RendezvousListener(std::unique_ptr<State> state) : state_(std::move(state)) {}
RendezvousListener::RendezvousListener(RendezvousListener&&) noexcept = default;
RendezvousListener& RendezvousListener::operator=(RendezvousListener&&) noexcept = default;
RendezvousListener::~RendezvousListener() = default;

RendezvousListener RendezvousListener::bind(const std::string& host, std::uint16_t port) {
  auto state = std::make_unique<State>();
  state->where = host + ":" + std::to_string(port);
  boost::system::error_code ec;
  tcp::resolver resolver(state->io);
  const auto endpoints = resolver.resolve(host, std::to_string(port), ec);
  if (ec || endpoints.empty()) {
    ::zoro::detail::throw_backend_error(
        __FILE__, __LINE__, "resolve", "system", ec.value(),
        "cannot resolve rendezvous address " + state->where + ": " + ec.message());
  }
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  auto check = [&](const char* step) {
    if (ec) {
      ::zoro::detail::throw_backend_error(
          __FILE__, __LINE__, step, "system", ec.value(),
          "cannot listen on rendezvous address " + state->where + ": " + ec.message());
    }
  };
  state->acceptor.open(endpoint.protocol(), ec);
  check("open");
  state->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  check("set_option(reuse_address)");
  state->acceptor.bind(endpoint, ec);
  check("bind");
  state->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  check("listen");
  return RendezvousListener(std::move(state));
}

std::uint16_t RendezvousListener::port() const { return state_->acceptor.local_endpoint().port(); }

// ---- rendezvous ----------------------------------------------------------------------------

struct Rendezvous::Impl {
  RendezvousOptions options;
  std::unique_ptr<RendezvousListener::State> listener;  // rank 0: owns the io_context
  std::unique_ptr<asio::io_context> own_io;             // other ranks
  std::vector<std::unique_ptr<tcp::socket>> peers;      // rank 0: peers[r] for r >= 1
  std::unique_ptr<tcp::socket> host;                    // other ranks: the link to rank 0

  asio::io_context& io() { return listener ? listener->io : *own_io; }
  std::string where() const { return options.host + ":" + std::to_string(options.port); }
  Message make(MessageType type, std::vector<std::uint8_t> payload = {}) const {
    Message m;
    m.type = type;
    m.rank = static_cast<std::uint32_t>(options.rank);
    m.world_size = static_cast<std::uint32_t>(options.world_size);
    m.token = options.token;
    m.payload = std::move(payload);
    return m;
  }

  void host_join();
  void peer_join();
  std::vector<std::vector<std::uint8_t>> host_all_gather(std::span<const std::uint8_t> blob);
  std::vector<std::vector<std::uint8_t>> peer_all_gather(std::span<const std::uint8_t> blob);
};

namespace {

// A connection rank 0 accepted and whose hello it has not judged yet.
struct Pending {
  explicit Pending(tcp::socket s, Clock::time_point d) : socket(std::move(s)), deadline(d) {}
  tcp::socket socket;
  Clock::time_point deadline;
  FrameRead read;
  bool abandoned = false;  // timed out or the rendezvous ended: close, then forget once done
};

}  // namespace

void Rendezvous::Impl::host_join() {
  const int n = options.world_size;
  peers.resize(static_cast<std::size_t>(n));
  const auto deadline = Clock::now() + options.join_timeout;
  std::set<int> missing;
  for (int r = 1; r < n; ++r) missing.insert(r);
  std::vector<std::string> refusals;
  std::list<Pending> pendings;
  bool accepting = false;
  std::optional<tcp::socket> incoming;
  auto& acceptor = listener->acceptor;

  std::function<void()> start_accept = [&] {
    accepting = true;
    incoming.emplace(io());
    acceptor.async_accept(*incoming, [&](const boost::system::error_code& ec) {
      accepting = false;
      if (ec) return;  // cancelled at the end, or a transient failure retried below
      auto& p = pendings.emplace_back(std::move(*incoming),
                                      std::min(deadline, Clock::now() + options.op_timeout));
      p.read.start(p.socket, "a connecting peer");
    });
  };

  const auto refuse = [&](Pending& p, const std::string& reason) {
    refusals.push_back(reason);
    ZORO_LOG(kWarn) << "rendezvous on " << where() << ": refused a connection: " << reason;
    try {  // best effort: a small frame into a fresh socket's send buffer never blocks long
      Message reject =
          make(MessageType::kReject, std::vector<std::uint8_t>(reason.begin(), reason.end()));
      boost::system::error_code ignored;
      asio::write(p.socket, asio::buffer(rendezvous::encode_message(reject)), ignored);
    } catch (...) {
    }
    // Discard what the peer sent beyond what was parsed (bounded), so that closing sends a
    // FIN rather than a reset that could destroy the reject before the peer reads it.
    boost::system::error_code ignored;
    std::array<std::uint8_t, 4096> sink{};
    for (int i = 0; i < 16 && p.socket.available(ignored) > 0 && !ignored; ++i) {
      p.socket.read_some(asio::buffer(sink), ignored);
    }
    p.socket.shutdown(tcp::socket::shutdown_send, ignored);
    p.socket.close(ignored);
  };

  // Judges every finished hello; true when every rank has joined.
  const auto judge = [&] {
    const auto now = Clock::now();
    for (auto it = pendings.begin(); it != pendings.end();) {
      Pending& p = *it;
      if (!p.read.done) {
        if (!p.abandoned && now >= p.deadline) {
          refusals.push_back("a connection sent no complete hello within " +
                             std::to_string(ms(options.op_timeout)) + " ms");
          p.abandoned = true;
          boost::system::error_code ignored;
          p.socket.close(ignored);  // its handler runs with an error and marks it done
        }
        ++it;
        continue;
      }
      if (!p.abandoned) {
        if (p.read.error) {
          try {
            std::rethrow_exception(p.read.error);
          } catch (const std::exception& e) {
            refuse(p, std::string("malformed message: ") + e.what());
          }
        } else {
          const Message& m = p.read.message;
          const int rank = static_cast<int>(m.rank);
          if (m.type != MessageType::kHello) {
            refuse(p, std::string("unexpected message '") + rendezvous::to_string(m.type) +
                          "' instead of 'hello'");
          } else if (m.token != options.token) {
            refuse(p, "wrong token from a peer claiming rank " + std::to_string(m.rank));
          } else if (static_cast<int>(m.world_size) != n) {
            refuse(p, "a peer claiming rank " + std::to_string(m.rank) + " expects world size " +
                          std::to_string(m.world_size) + ", rank 0 has " + std::to_string(n));
          } else if (m.rank == 0 || static_cast<int>(m.rank) >= n) {
            refuse(p, "a peer claims rank " + std::to_string(m.rank) + ", outside [1, " +
                          std::to_string(n) + ")");
          } else if (!missing.contains(rank)) {
            refuse(p, "rank " + std::to_string(rank) + " joined twice");
          } else {
            peers[static_cast<std::size_t>(rank)] =
                std::make_unique<tcp::socket>(std::move(p.socket));
            missing.erase(rank);
          }
        }
      }
      it = pendings.erase(it);
    }
    if (!missing.empty() && !accepting) start_accept();
    return missing.empty();
  };

  bool joined = missing.empty();
  if (!joined) {
    start_accept();
    io().restart();
    while (true) {
      joined = judge();
      if (joined) break;
      auto wake = deadline;
      for (const auto& p : pendings) {
        if (!p.abandoned) wake = std::min(wake, p.deadline);
      }
      const auto now = Clock::now();
      if (now >= deadline) break;
      io().run_one_for(std::max(wake - now, Clock::duration(std::chrono::milliseconds(1))));
      if (io().stopped()) io().restart();
    }
  }
  // Wind down: no handler may outlive `pendings` or `incoming`.
  boost::system::error_code ignored;
  acceptor.cancel(ignored);
  for (auto& p : pendings) p.socket.close(ignored);
  drain(io());
  if (!joined) {
    std::ostringstream msg;
    msg << "rendezvous on " << where() << " timed out after " << ms(options.join_timeout)
        << " ms: rank(s) " << describe_ranks(missing) << " of " << n << " never joined";
    if (!refusals.empty()) {
      msg << " (refused " << refusals.size() << " connection(s):";
      for (const auto& r : refusals) msg << " [" << r << "]";
      msg << ")";
    }
    ZORO_THROW(Error, msg.str());
  }
  const auto welcome = rendezvous::encode_message(make(MessageType::kWelcome));
  for (int r = 1; r < n; ++r) {
    write_frame(io(), *peers[static_cast<std::size_t>(r)], welcome,
                Clock::now() + options.op_timeout, "rank " + std::to_string(r));
  }
}

void Rendezvous::Impl::peer_join() {
  const auto deadline = Clock::now() + options.join_timeout;
  std::string last_error = "no attempt";
  tcp::resolver resolver(io());
  while (true) {
    boost::system::error_code ec;
    const auto endpoints = resolver.resolve(options.host, std::to_string(options.port), ec);
    if (!ec) {
      auto socket = std::make_unique<tcp::socket>(io());
      bool done = false;
      asio::async_connect(*socket, endpoints,
                          [&](const boost::system::error_code& e, const tcp::endpoint&) {
                            ec = e;
                            done = true;
                          });
      if (!run_until(
              io(), [&] { return done; }, deadline)) {
        boost::system::error_code ignored;
        socket->close(ignored);
        drain(io());
        ec = asio::error::timed_out;
      }
      if (!ec) {
        host = std::move(socket);
        break;
      }
    }
    last_error = ec.message();
    if (Clock::now() + std::chrono::milliseconds(50) >= deadline) {
      ZORO_THROW(Error, "rendezvous: rank " << options.rank << " could not reach rank 0 at "
                                            << where() << " within " << ms(options.join_timeout)
                                            << " ms (last error: " << last_error << ")");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // rank 0 may start later
  }
  write_frame(io(), *host, rendezvous::encode_message(make(MessageType::kHello)), deadline,
              "rank 0");
  std::ostringstream timeout;
  timeout << "rendezvous: rank " << options.rank << " timed out after " << ms(options.join_timeout)
          << " ms waiting for rank 0 at " << where()
          << " to see every rank join (some other rank is missing)";
  Message reply;
  try {
    reply = read_frame(io(), *host, deadline, "rank 0", timeout.str());
  } catch (const InvalidArgument&) {
    throw;
  } catch (const Error& e) {
    ZORO_THROW(Error, "rendezvous: rank " << options.rank << " did not complete the join at "
                                          << where() << ": " << e.what()
                                          << " (rank 0 gives up when a rank is missing; its "
                                             "error names the missing ranks)");
  }
  if (reply.type == MessageType::kReject) {
    ZORO_THROW(InvalidArgument, "rendezvous: rank 0 at "
                                    << where() << " refused rank " << options.rank << ": "
                                    << std::string(reply.payload.begin(), reply.payload.end()));
  }
  expect_type(reply, MessageType::kWelcome, "rank 0");
  ZORO_CHECK(reply.token == options.token, "rendezvous: rank 0 answered with a different token");
}

std::vector<std::vector<std::uint8_t>> Rendezvous::Impl::host_all_gather(
    std::span<const std::uint8_t> blob) {
  const int n = options.world_size;
  const auto deadline = Clock::now() + options.op_timeout;
  std::vector<std::vector<std::uint8_t>> blobs(static_cast<std::size_t>(n));
  blobs[0].assign(blob.begin(), blob.end());
  std::vector<FrameRead> reads(static_cast<std::size_t>(n));
  for (int r = 1; r < n; ++r) {
    reads[static_cast<std::size_t>(r)].start(*peers[static_cast<std::size_t>(r)],
                                             "rank " + std::to_string(r));
  }
  const auto all_done = [&] {
    for (int r = 1; r < n; ++r) {
      if (!reads[static_cast<std::size_t>(r)].done) return false;
    }
    return true;
  };
  if (!run_until(io(), all_done, deadline)) {
    std::set<int> missing;
    for (int r = 1; r < n; ++r) {
      if (!reads[static_cast<std::size_t>(r)].done) missing.insert(r);
    }
    boost::system::error_code ignored;
    for (int r = 1; r < n; ++r) peers[static_cast<std::size_t>(r)]->cancel(ignored);
    drain(io());
    ZORO_THROW(Error, "rendezvous all_gather timed out after " << ms(options.op_timeout)
                                                               << " ms waiting for rank(s) "
                                                               << describe_ranks(missing));
  }
  for (int r = 1; r < n; ++r) {
    auto& read = reads[static_cast<std::size_t>(r)];
    if (read.error) std::rethrow_exception(read.error);
    const std::string who = "rank " + std::to_string(r);
    expect_type(read.message, MessageType::kData, who);
    ZORO_CHECK(static_cast<int>(read.message.rank) == r && read.message.token == options.token,
               "rendezvous message on rank " << r << "'s connection claims rank "
                                             << read.message.rank << " or carries a wrong token");
    blobs[static_cast<std::size_t>(r)] = std::move(read.message.payload);
  }
  const auto reply =
      rendezvous::encode_message(make(MessageType::kData, rendezvous::encode_blob_list(blobs)));
  for (int r = 1; r < n; ++r) {
    write_frame(io(), *peers[static_cast<std::size_t>(r)], reply, deadline,
                "rank " + std::to_string(r));
  }
  return blobs;
}

std::vector<std::vector<std::uint8_t>> Rendezvous::Impl::peer_all_gather(
    std::span<const std::uint8_t> blob) {
  const auto deadline = Clock::now() + options.op_timeout;
  write_frame(io(), *host,
              rendezvous::encode_message(make(MessageType::kData, {blob.begin(), blob.end()})),
              deadline, "rank 0");
  std::ostringstream timeout;
  timeout << "rendezvous all_gather: rank " << options.rank << " timed out after "
          << ms(options.op_timeout) << " ms waiting for rank 0 (rank 0 or another rank is "
          << "missing)";
  const Message reply = read_frame(io(), *host, deadline, "rank 0", timeout.str());
  expect_type(reply, MessageType::kData, "rank 0");
  ZORO_CHECK(reply.rank == 0 && reply.token == options.token,
             "rendezvous reply claims rank " << reply.rank << " or carries a wrong token");
  return rendezvous::parse_blob_list(reply.payload, static_cast<std::size_t>(options.world_size));
}

Rendezvous::Rendezvous(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Rendezvous::~Rendezvous() = default;

int Rendezvous::rank() const noexcept { return impl_->options.rank; }
int Rendezvous::world_size() const noexcept { return impl_->options.world_size; }

namespace {
void check_options(const RendezvousOptions& o) {
  ZORO_CHECK(o.world_size >= 1, "rendezvous world size " << o.world_size << " must be >= 1");
  ZORO_CHECK(o.rank >= 0 && o.rank < o.world_size,
             "rendezvous rank " << o.rank << " is outside [0, " << o.world_size << ")");
  ZORO_CHECK(
      o.token.size() <= rendezvous::kMaxTokenBytes,
      "rendezvous token of " << o.token.size() << " bytes exceeds " << rendezvous::kMaxTokenBytes);
  ZORO_CHECK(o.join_timeout.count() > 0 && o.op_timeout.count() > 0,
             "rendezvous timeouts must be positive");
}
}  // namespace

std::unique_ptr<Rendezvous> Rendezvous::join(const RendezvousOptions& options) {
  check_options(options);
  if (options.rank == 0) {
    return join(RendezvousListener::bind(options.host, options.port), options);
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->own_io = std::make_unique<asio::io_context>();
  impl->peer_join();
  return std::unique_ptr<Rendezvous>(new Rendezvous(std::move(impl)));
}

std::unique_ptr<Rendezvous> Rendezvous::join(RendezvousListener listener,
                                             const RendezvousOptions& options) {
  check_options(options);
  ZORO_CHECK(options.rank == 0,
             "only rank 0 joins with a listener; rank " << options.rank << " connects");
  ZORO_CHECK(listener.state_ != nullptr, "rendezvous listener was moved from");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->options.port = listener.port();
  impl->listener = std::move(listener.state_);
  impl->host_join();
  // The listener has done its job: later connection attempts are refused by the kernel.
  boost::system::error_code ignored;
  impl->listener->acceptor.close(ignored);
  return std::unique_ptr<Rendezvous>(new Rendezvous(std::move(impl)));
}

std::vector<std::vector<std::uint8_t>> Rendezvous::all_gather(std::span<const std::uint8_t> blob) {
  ZORO_CHECK(blob.size() <= rendezvous::kMaxPayloadBytes, "rendezvous blob of "
                                                              << blob.size() << " bytes exceeds "
                                                              << rendezvous::kMaxPayloadBytes);
  if (impl_->options.world_size == 1) return {std::vector<std::uint8_t>(blob.begin(), blob.end())};
  return impl_->options.rank == 0 ? impl_->host_all_gather(blob) : impl_->peer_all_gather(blob);
}

std::vector<std::uint8_t> Rendezvous::broadcast_from_rank0(std::span<const std::uint8_t> blob) {
  const std::span<const std::uint8_t> mine =
      impl_->options.rank == 0 ? blob : std::span<const std::uint8_t>();
  return std::move(all_gather(mine)[0]);
}

void Rendezvous::verify_agreement(std::uint64_t fingerprint, std::string_view what) {
  std::array<std::uint8_t, 8> bytes{};
  for (std::size_t i = 0; i < 8; ++i) bytes[i] = static_cast<std::uint8_t>(fingerprint >> (8 * i));
  const auto blobs = all_gather(bytes);
  std::vector<std::uint64_t> values;
  for (std::size_t r = 0; r < blobs.size(); ++r) {
    ZORO_CHECK(blobs[r].size() == 8, "rendezvous: rank " << r << " sent a fingerprint of "
                                                         << blobs[r].size() << " bytes, not 8");
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < 8; ++i) v |= std::uint64_t{blobs[r][i]} << (8 * i);
    values.push_back(v);
  }
  const std::string problem = detail::describe_disagreement(values);
  ZORO_CHECK(problem.empty(), "ranks disagree on the " << what << ": " << problem);
}

}  // namespace zoro::comm
