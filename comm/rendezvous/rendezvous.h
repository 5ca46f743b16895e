// Rendezvous: a Boost.Asio TCP bootstrap for runs launched without MPI (torchrun-style:
// MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, plus ZORO_RENDEZVOUS_TOKEN).
//
// It only bootstraps (../shared/DESIGN.md section 5): it exchanges small blobs (the NCCL
// unique id) and checks that every rank agrees on fingerprints (config, model). Collectives
// on tensors go through NCCL or MPI, never through it.
//
// Protocol (comm/rendezvous/message.h for the frames): rank 0 listens on host:port; every
// other rank connects (retrying until the join deadline, since rank 0 may start later) and
// sends kHello{rank, world_size, token}. Rank 0 checks each hello: the token must match, the
// world size must match, the rank must be in [1, world_size) and not taken; it answers a
// refused peer kReject with the reason and closes, and keeps waiting for the right peers. A
// connection that sends garbage (a bad magic, an oversized or truncated frame, an unexpected
// type) is dropped the same way; rank 0 never trusts a length before checking it. When every
// rank has joined, rank 0 sends kWelcome to each. all_gather: every peer sends kData with its
// blob, rank 0 answers each with the list of all blobs.
//
// Timeouts: every operation has a deadline. join_timeout bounds the whole join (connecting,
// hello, welcome); op_timeout bounds each later exchange. A timeout throws zoro::Error naming
// the ranks still missing (rank 0 knows them; a peer names rank 0 or "the other ranks").
// Protocol violations throw InvalidArgument naming the problem. Nothing here calls exit().
//
// After any error a Rendezvous is unusable (its connections may be mid-message): destroy it.
//
// Thread: one Rendezvous is used by one thread at a time (each call is a blocking exchange
// with every rank); different Rendezvous objects (ranks simulated by threads in one process)
// are independent.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace zoro::comm {

struct RendezvousOptions {
  std::string host = "127.0.0.1";  // MASTER_ADDR: where rank 0 listens (and binds)
  std::uint16_t port = 29500;      // MASTER_PORT
  int rank = 0;                    // RANK
  int world_size = 1;              // WORLD_SIZE
  int local_rank = 0;              // LOCAL_RANK (picks the GPU; not used by the protocol)
  std::string token;               // ZORO_RENDEZVOUS_TOKEN: the same on every rank
  std::chrono::milliseconds join_timeout{std::chrono::seconds(120)};
  std::chrono::milliseconds op_timeout{std::chrono::seconds(60)};

  // True when RANK and WORLD_SIZE are both set (a torchrun-style launch).
  static bool present_in_environment();
  // Reads MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE (required), LOCAL_RANK (default: RANK),
  // ZORO_RENDEZVOUS_TOKEN (required when WORLD_SIZE > 1) and ZORO_RENDEZVOUS_TIMEOUT_S
  // (optional, both timeouts). Throws InvalidArgument naming the variable and its value.
  static RendezvousOptions from_environment();
};

// Rank 0's listening socket, bound before the other ranks connect. Tests bind port 0 and hand
// the chosen port() to the other ranks' options.
class RendezvousListener {
 public:
  // Binds and listens on host:port (port 0: any free port). Throws BackendError ("system")
  // naming host:port when the address cannot be bound.
  static RendezvousListener bind(const std::string& host, std::uint16_t port);
  RendezvousListener(RendezvousListener&&) noexcept;
  RendezvousListener& operator=(RendezvousListener&&) noexcept;
  ~RendezvousListener();
  std::uint16_t port() const;

  struct State;

 private:
  explicit RendezvousListener(std::unique_ptr<State> state);
  friend class Rendezvous;
  std::unique_ptr<State> state_;
};

class Rendezvous {
 public:
  // Joins the rendezvous described by `options`: rank 0 binds options.host:options.port and
  // waits for everyone; the other ranks connect to it. Blocks until every rank has joined or
  // options.join_timeout passes.
  static std::unique_ptr<Rendezvous> join(const RendezvousOptions& options);
  // Rank 0 only, with a listener bound beforehand (options.host/port are then ignored).
  static std::unique_ptr<Rendezvous> join(RendezvousListener listener,
                                          const RendezvousOptions& options);
  ~Rendezvous();
  Rendezvous(const Rendezvous&) = delete;
  Rendezvous& operator=(const Rendezvous&) = delete;

  int rank() const noexcept;
  int world_size() const noexcept;

  // Every rank contributes `blob` (at most ~1 MiB in total) and receives every rank's, in
  // rank order. Collective: every rank must call it.
  std::vector<std::vector<std::uint8_t>> all_gather(std::span<const std::uint8_t> blob);
  // Rank 0's blob on every rank (`blob` is ignored on the others).
  std::vector<std::uint8_t> broadcast_from_rank0(std::span<const std::uint8_t> blob);
  // Throws InvalidArgument on every rank, naming `what` and the ranks that disagree with rank
  // 0, unless every rank passed the same fingerprint. Collective.
  void verify_agreement(std::uint64_t fingerprint, std::string_view what);

  struct Impl;

 private:
  explicit Rendezvous(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace zoro::comm
