#include "server.hpp"

#include <httplib.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <random>
#include <thread>

#include "metrics.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7::server {

extern const std::string_view kChatPage;  // generated from chat_page.html

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string dump(const json& j);

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(dump(e.body()), "application/json");
}

ApiError api_error(int status, const std::string& message, const std::string& type,
                   const std::string& code) {
  ApiError e;
  e.status = status;
  e.message = message;
  e.type = type;
  e.code = code;
  return e;
}

const char* finish_reason(const std::string& reason) {
  return reason == "max_tokens" ? "length" : "stop";
}

json usage_json(const ServeUsage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
}

// One request's reply as it is built: its id and the chunk and whole-reply objects.
struct Reply {
  std::string id, model;
  bool chat = false;
  int64_t created = 0;

  json chunk(const json& choice_delta, const json& finish) const {
    json choice = {{"index", 0}, {"finish_reason", finish}, {"logprobs", nullptr}};
    if (chat) {
      choice["delta"] = choice_delta;
    } else {
      choice["text"] = choice_delta.value("content", "");
    }
    return {{"id", id},
            {"object", chat ? "chat.completion.chunk" : "text_completion"},
            {"created", created},
            {"model", model},
            {"choices", json::array({choice})}};
  }
  json whole(const std::string& text, const ServeEvent& fin) const {
    json choice = {
        {"index", 0}, {"finish_reason", finish_reason(fin.finish_reason)}, {"logprobs", nullptr}};
    if (chat) {
      choice["message"] = {{"role", "assistant"}, {"content", text}};
    } else {
      choice["text"] = text;
    }
    return {{"id", id},
            {"object", chat ? "chat.completion" : "text_completion"},
            {"created", created},
            {"model", model},
            {"choices", json::array({choice})},
            {"usage", usage_json(fin.usage)}};
  }
};

// Model output may hold bytes that are not UTF-8 (a model can emit any byte sequence): they
// become U+FFFD instead of an exception.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string sse(const json& j) { return "data: " + dump(j) + "\n\n"; }

class Server {
 public:
  Server(std::shared_ptr<const Model> model, std::shared_ptr<const Tokenizer> tok,
         const ServerOptions& opts)
      : model_(std::move(model)),
        tok_(std::move(tok)),
        opts_(opts),
        scheduler_(model_, tok_, opts.scheduler),
        created_(std::time(nullptr)) {
    routes();
  }

  int run();

 private:
  std::shared_ptr<const Model> model_;
  std::shared_ptr<const Tokenizer> tok_;
  ServerOptions opts_;
  Scheduler scheduler_;
  Metrics metrics_;
  httplib::Server http_;
  int64_t created_;
  std::atomic<uint64_t> next_id_{1};
  std::atomic<bool> draining_{false};
  uint64_t id_salt_ = std::random_device{}();

  void routes();
  void completion(const httplib::Request& req, httplib::Response& res, bool chat);
  void stream(httplib::Response& res, std::shared_ptr<ServeStream> stream, Reply reply,
              bool include_usage, Clock::time_point t0);
  void shutdown_on_signal();
};

void Server::routes() {
  // cpp-httplib gives each connection a thread for as long as it is open, idle keep-alive
  // ones included: room for every slot and queue place twice over, and idle connections
  // closed after 5 s, so that idle clients cannot hold every thread.
  const size_t threads = std::clamp<size_t>(
      2 * size_t(opts_.scheduler.max_running + opts_.scheduler.max_queued) + 16, 64, 2048);
  http_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http_.set_payload_max_length(opts_.max_body_bytes);
  http_.set_tcp_nodelay(true);  // each SSE chunk goes out at once (no Nagle delay)
  http_.set_keep_alive_timeout(5);
  http_.set_keep_alive_max_count(1000);
  http_.set_read_timeout(30);
  http_.set_write_timeout(30);
  http_.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    if (req.path.rfind("/v1/", 0) == 0) metrics_.count_response(res.status);
  });
  http_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const bool guarded = req.path.rfind("/v1/", 0) == 0 || req.path == "/metrics";
    if (!guarded || opts_.api_key.empty()) return httplib::Server::HandlerResponse::Unhandled;
    if (req.get_header_value("Authorization") == "Bearer " + opts_.api_key)
      return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, api_error(401, "missing or wrong API key (Authorization: Bearer …)",
                              "invalid_request_error", "invalid_api_key"));
    return httplib::Server::HandlerResponse::Handled;
  });
  http_.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 413) {
      send_error(res, api_error(413, "the request body is too large", "invalid_request_error",
                                "request_too_large"));
    } else if (res.status == 404) {
      send_error(res, api_error(404, "no such endpoint: " + req.method + " " + req.path,
                                "invalid_request_error", "not_found"));
    } else {
      send_error(res, api_error(res.status, "HTTP " + std::to_string(res.status),
                                "invalid_request_error", ""));
    }
  });
  http_.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "internal error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        send_error(res, api_error(500, what, "server_error", ""));
      });

  http_.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(std::string(kChatPage), "text/html; charset=utf-8");
  });
  http_.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (draining_) {
      res.status = 503;
      res.set_content(R"({"status":"shutting_down"})", "application/json");
    } else {
      res.set_content(R"({"status":"ok"})", "application/json");
    }
  });
  http_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_.prometheus(scheduler_.stats()), "text/plain; version=0.0.4");
  });
  auto model_json = [this] {
    return json{{"id", opts_.model_id},
                {"object", "model"},
                {"created", created_},
                {"owned_by", "rwkv7"},
                {"meta",
                 {{"shape", model_->config().shape_string()},
                  {"parameters", model_->parameter_count()},
                  {"dtype", model_->weight_dtype()},
                  {"products", model_->product_precision()}}}};
  };
  http_.Get("/v1/models", [model_json](const httplib::Request&, httplib::Response& res) {
    res.set_content(dump(json{{"object", "list"}, {"data", json::array({model_json()})}}),
                    "application/json");
  });
  http_.Get(R"(/v1/models/(.+))", [this, model_json](const httplib::Request& req,
                                                     httplib::Response& res) {
    if (req.matches[1] != opts_.model_id) {
      send_error(res,
                 api_error(404, "the model '" + std::string(req.matches[1]) + "' does not exist",
                           "invalid_request_error", "model_not_found"));
      return;
    }
    res.set_content(dump(model_json()), "application/json");
  });
  http_.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    completion(req, res, true);
  });
  http_.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    completion(req, res, false);
  });
}

// HTTP threads only parse, wait and write: below the scheduler's threads in the CPU's
// queue, so that on a busy machine a step's threads are not held up by them (a step waits for
// its slowest thread).
void yield_to_the_scheduler() {
  thread_local bool lowered = false;
  if (lowered) return;
  lowered = true;
  setpriority(PRIO_PROCESS, pid_t(syscall(SYS_gettid)), 5);
}

void Server::completion(const httplib::Request& req, httplib::Response& res, bool chat) {
  const auto t0 = Clock::now();
  yield_to_the_scheduler();
  ParsedRequest parsed;
  try {
    parsed = parse_request(req.body, chat, opts_.model_id, *tok_, opts_.limits, opts_.states);
  } catch (const ApiError& e) {
    return send_error(res, e);
  }
  Scheduler::Ticket ticket;
  try {
    ticket = scheduler_.submit(std::move(parsed.serve));
  } catch (const Error& e) {
    return send_error(res, api_error(400, e.what(), "invalid_request_error", "invalid_value"));
  }
  if (ticket.admission == Scheduler::Admission::QueueFull) {
    res.set_header("Retry-After", "1");
    return send_error(res, api_error(429,
                                     "the server is busy (all slots and the queue are full); "
                                     "retry later",
                                     "rate_limit_error", "rate_limit_exceeded"));
  }
  if (ticket.admission == Scheduler::Admission::ShuttingDown) {
    res.set_header("Retry-After", "5");
    return send_error(
        res, api_error(503, "the server is shutting down", "server_error", "shutting_down"));
  }
  char id[48];
  std::snprintf(id, sizeof id, "%s-%llx%06llx", chat ? "chatcmpl" : "cmpl",
                (unsigned long long)(id_salt_ & 0xffffffffull),
                (unsigned long long)next_id_.fetch_add(1));
  Reply reply{id, opts_.model_id, chat, int64_t(std::time(nullptr))};
  std::shared_ptr<ServeStream> stream = std::move(ticket.stream);
  if (parsed.stream) return this->stream(res, stream, reply, parsed.include_usage, t0);

  std::string text;
  ServeEvent ev;
  bool first = true;
  for (;;) {
    if (!stream->next(ev, Clock::now() + std::chrono::seconds(1))) continue;
    if (ev.kind == ServeEvent::Kind::Finished) break;
    if (first && ev.token >= 0) {
      metrics_.time_to_first_token.observe(since(t0));
      first = false;
    }
    text += ev.text;
  }
  metrics_.request_duration.observe(since(t0));
  if (ev.finish_reason == "error")
    return send_error(res, api_error(500, ev.error, "server_error", ""));
  res.set_content(dump(reply.whole(text, ev)), "application/json");
}

// Server-sent events: a first chunk with the role, one chunk per piece of text, a last chunk
// with the finish reason, the usage (when asked), then [DONE]. A write that fails (the client
// left) ends the response; dropping the stream cancels the sequence at the next step.
void Server::stream(httplib::Response& res, std::shared_ptr<ServeStream> stream, Reply reply,
                    bool include_usage, Clock::time_point t0) {
  struct Progress {
    bool opened = false, done = false, first = true;
    Clock::time_point last_token;
  };
  auto progress = std::make_shared<Progress>();
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  auto step = [this, stream, reply, include_usage, t0,
               progress](httplib::DataSink& sink) mutable -> bool {
    Progress& p = *progress;
    if (p.done) {
      sink.done();
      return true;
    }
    auto write = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
    if (!p.opened) {
      p.opened = true;
      json delta = {{"role", "assistant"}, {"content", ""}};
      if (reply.chat && !write(sse(reply.chunk(delta, nullptr)))) return false;
    }
    ServeEvent ev;
    if (!stream->next(ev, Clock::now() + std::chrono::seconds(2)))
      return write(": keep-alive\n\n");  // also finds a client that left during a prefill
    if (ev.kind == ServeEvent::Kind::Token) {
      const auto now = Clock::now();
      if (ev.token >= 0) {
        if (p.first) {
          metrics_.time_to_first_token.observe(std::chrono::duration<double>(now - t0).count());
          p.first = false;
        } else {
          metrics_.inter_token.observe(std::chrono::duration<double>(now - p.last_token).count());
        }
        p.last_token = now;
      }
      if (ev.text.empty()) return true;
      return write(sse(reply.chunk({{"content", ev.text}}, nullptr)));
    }
    metrics_.request_duration.observe(since(t0));
    p.done = true;
    if (ev.finish_reason == "error") {
      json err = api_error(500, ev.error, "server_error", "").body();
      write(sse(err));
    } else {
      if (!write(sse(reply.chunk(json::object(), finish_reason(ev.finish_reason))))) return false;
      if (include_usage) {
        json u = reply.chunk(json::object(), nullptr);
        u["choices"] = json::array();
        u["usage"] = usage_json(ev.usage);
        if (!write(sse(u))) return false;
      }
    }
    if (!write("data: [DONE]\n\n")) return false;
    sink.done();
    return true;
  };
  res.set_chunked_content_provider(
      "text/event-stream",
      [step, id = reply.id](size_t, httplib::DataSink& sink) mutable {
        try {
          return step(sink);
        } catch (const std::exception& e) {  // never out of a handler thread: end this reply
          std::fprintf(stderr, "rwkv7 serve: stream %s ended: %s\n", id.c_str(), e.what());
          return false;
        }
      },
      [stream](bool) { stream->cancel(); });
}

// Waits for SIGTERM/SIGINT (blocked in every thread, taken here with sigwait), then drains.
void Server::shutdown_on_signal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  sigwait(&set, &sig);
  std::fprintf(stderr, "rwkv7 serve: %s: finishing running requests (at most %g s)\n",
               sig == SIGTERM ? "SIGTERM" : "SIGINT", opts_.shutdown_grace_seconds);
  draining_ = true;
  std::mutex mu;
  std::condition_variable cv;
  bool drained = false;
  std::thread grace([&] {
    std::unique_lock lock(mu);
    if (!cv.wait_for(lock, std::chrono::duration<double>(opts_.shutdown_grace_seconds),
                     [&] { return drained; }))
      scheduler_.shutdown(true);  // cancels what is still running
  });
  scheduler_.shutdown(false);  // refuses new requests, finishes the rest, writes the disk tier
  {
    std::lock_guard lock(mu);
    drained = true;
  }
  cv.notify_all();
  grace.join();
  // The handlers have their Finished events; give them a moment to write them out.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  http_.stop();
}

int Server::run() {
  const int port = opts_.port == 0 ? http_.bind_to_any_port(opts_.host)
                                   : (http_.bind_to_port(opts_.host, opts_.port) ? opts_.port : -1);
  if (port < 0)
    throw Error("cannot listen on " + opts_.host + ":" + std::to_string(opts_.port) +
                " (in use, or not an address of this machine)");
  std::thread waiter([this] { shutdown_on_signal(); });
  std::fprintf(stderr, "rwkv7 serve: listening on http://%s:%d\n", opts_.host.c_str(), port);
  std::fflush(stderr);
  const bool ok = http_.listen_after_bind();
  if (!ok && !draining_) {  // the listener failed on its own: wake the waiter and leave
    kill(getpid(), SIGTERM);
  }
  waiter.join();
  std::fprintf(stderr, "rwkv7 serve: stopped\n");
  return 0;
}

}  // namespace

void block_shutdown_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

int run_server(std::shared_ptr<const Model> model, std::shared_ptr<const Tokenizer> tok,
               const ServerOptions& opts) {
  block_shutdown_signals();
  Server server(std::move(model), std::move(tok), opts);
  return server.run();
}

}  // namespace rwkv7::server
