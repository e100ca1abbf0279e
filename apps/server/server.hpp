#pragma once
// `rwkv7 serve`: the OpenAI-compatible HTTP API (cpp-httplib) over a Scheduler.
#include <cstdint>
#include <memory>
#include <string>

#include "openai_request.hpp"
#include "rwkv7/model.hpp"
#include "rwkv7/serve.hpp"
#include "rwkv7/tokenizer.hpp"

namespace rwkv7::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;       // 0: any free port (printed)
  std::string api_key;   // non-empty: /v1/* and /metrics need "Authorization: Bearer <key>"
  std::string model_id;  // what /v1/models lists and requests must name
  size_t max_body_bytes = size_t(8) << 20;
  double shutdown_grace_seconds = 30;  // SIGTERM: running streams may finish within this
  Limits limits;
  SchedulerOptions scheduler;
  StartStates states;  // named start states a request may continue ("state": NAME)
};

// SIGTERM/SIGINT are taken by the server's own thread (sigwait), and SIGPIPE ignored (a client
// that hangs up must not end the process): call this before any thread starts (before loading
// the model: its thread pool would otherwise receive them).
void block_shutdown_signals();

// Serves until SIGTERM or SIGINT: then stops accepting, lets running streams finish (cancels
// what is left after the grace period), writes the cache's disk tier and returns 0. Prints
// "rwkv7 serve: listening on http://HOST:PORT" to stderr once requests are accepted.
int run_server(std::shared_ptr<const Model> model, std::shared_ptr<const Tokenizer> tok,
               const ServerOptions& opts);

}  // namespace rwkv7::server
