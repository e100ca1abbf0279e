// rwkv7 doc: a document kept as a state. `doc read` reads a file of any length in constant
// memory (blocks of text, a checkpoint that a later run resumes from), `doc ask` answers
// questions from a fork of that state without reading the document again.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "commands.hpp"
#include "common.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/generate.hpp"
#include "rwkv7/machine.hpp"
#include "rwkv7/state_compress.hpp"

namespace rwkv7::cli {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string human_bytes(double b) {
  char buf[32];
  if (b >= 1 << 20)
    std::snprintf(buf, sizeof buf, "%.1f MB", b / (1 << 20));
  else
    std::snprintf(buf, sizeof buf, "%.0f KB", b / 1024);
  return buf;
}

}  // namespace

void register_doc(CLI::App& app) {
  auto* cmd = app.add_subcommand("doc", "Documents kept as states: read once, ask many times");
  cmd->require_subcommand(1);

  struct ReadOpts {
    ModelFlags model;
    std::string file, out;
    CompressOptions c;
    int64_t block = 1 << 16;
    double checkpoint_every = 10;
    int64_t stop_after = 0;
  };
  auto ro = std::make_shared<ReadOpts>();
  auto* rd =
      cmd->add_subcommand("read",
                          "Read a document into a state file (constant memory; resumes after an "
                          "interruption from OUT.partial)");
  ro->model.add(rd, true, false);
  rd->add_option("FILE", ro->file, "The document (text)")->required();
  rd->add_option("-o,--out", ro->out, "State file to write")->required();
  rd->add_option("--compress", ro->c.method,
                 "Compression of the final state (rwkv7 state compress --help; default f32)");
  auto* ratio = rd->add_option("--ratio", ro->c.ratio, "Target ratio (lowrank*, adaptive*)");
  auto* rank = rd->add_option("--rank", ro->c.rank, "Rank per head (lowrank*)");
  auto* energy = rd->add_option("--energy", ro->c.energy, "Kept energy (adaptive*)");
  ratio->excludes(rank)->excludes(energy);
  rank->excludes(energy);
  rd->add_option("--block", ro->block, "Bytes of text per step")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(4096), int64_t(1) << 30));
  rd->add_option("--checkpoint-every", ro->checkpoint_every,
                 "Seconds between checkpoints (OUT.partial, atomic)")
      ->capture_default_str()
      ->check(NonNegative);
  rd->add_option("--stop-after", ro->stop_after,
                 "Stop (leaving the checkpoint) once this many bytes are read in this run; a "
                 "later run resumes")
      ->check(NonNegative);
  rd->callback([ro] {
    check_compress_options(ro->c);
    const auto start = Clock::now();
    auto m = ro->model.load();
    Tokenizer tok = ro->model.tokenizer(*m);
    std::ifstream in(ro->file, std::ios::binary);
    if (!in) throw Error(ro->file + ": cannot open the document");
    const int64_t size = int64_t(std::filesystem::file_size(ro->file));
    const std::string partial = ro->out + ".partial";
    State st = m->new_state();
    int64_t offset = 0;
    if (std::filesystem::exists(partial)) {
      const CompressedState cp = read_state_file(partial);
      auto note = [&](const char* k) {
        auto it = cp.notes.find(k);
        return it == cp.notes.end() ? std::string() : it->second;
      };
      if (note("doc.size") != std::to_string(size) || note("doc.offset").empty()) {
        throw Error(partial + ": a checkpoint of another document (size " + note("doc.size") +
                    ", this one " + std::to_string(size) + "); delete it to start again");
      }
      st = load_state_warn(partial, *m);
      offset = std::stoll(note("doc.offset"));
      if (offset < 0 || offset > size)
        throw Error(partial + ": bad doc.offset " + note("doc.offset"));
      std::fprintf(stderr, "doc read: resuming %s at byte %lld (%lld tokens read)\n",
                   ro->file.c_str(), (long long)offset, (long long)st.tokens_consumed);
    }
    const bool tty = isatty(STDERR_FILENO);
    auto checkpoint = [&](const std::string& path, const CompressOptions& c) {
      CompressedState cs = compress_state(st, c);
      cs.model_shape = m->config().shape_string();
      cs.model_fingerprint = m->fingerprint();
      cs.notes = {{"doc.source", std::filesystem::path(ro->file).filename().string()},
                  {"doc.size", std::to_string(size)},
                  {"doc.offset", std::to_string(offset)}};
      write_state_file(path, cs);
      return cs;
    };
    const int64_t first = offset;
    const int64_t tokens_before = st.tokens_consumed;
    auto last_cp = Clock::now(), last_print = Clock::now() - std::chrono::seconds(10);
    std::string block;
    auto progress = [&](bool force) {
      if (!force && seconds_since(last_print) < (tty ? 0.2 : 10.0)) return;
      last_print = Clock::now();
      const double t = seconds_since(start);
      const double rate = double(st.tokens_consumed - tokens_before) / std::max(t, 1e-9);
      std::fprintf(stderr, "%sdoc read: %5.1f%%  %s / %s  %lld tokens  %.0f tokens/s%s",
                   tty ? "\r" : "", 100.0 * double(offset) / double(std::max<int64_t>(size, 1)),
                   human_bytes(double(offset)).c_str(), human_bytes(double(size)).c_str(),
                   (long long)st.tokens_consumed, rate, tty ? "" : "\n");
      std::fflush(stderr);
    };
    while (offset < size) {
      if (ro->stop_after > 0 && offset - first >= ro->stop_after) break;
      block.resize(size_t(std::min<int64_t>(ro->block, size - offset)));
      in.seekg(offset);
      in.read(block.data(), std::streamsize(block.size()));
      if (in.gcount() != std::streamsize(block.size())) {
        throw Error(ro->file + ": read failed at byte " + std::to_string(offset));
      }
      const bool last = offset + int64_t(block.size()) >= size;
      size_t used = 0;
      const std::vector<int32_t> ids = tok.encode_block(block, last, &used);
      if (used == 0) throw Error(ro->file + ": --block is too small for this vocabulary");
      m->forward(ids, st, Logits::None);
      offset += int64_t(used);
      progress(false);
      if (seconds_since(last_cp) >= ro->checkpoint_every && offset < size) {
        checkpoint(partial, CompressOptions{});
        last_cp = Clock::now();
      }
    }
    progress(true);
    if (tty) std::fputc('\n', stderr);
    if (offset < size) {
      checkpoint(partial, CompressOptions{});
      std::fprintf(stderr, "doc read: stopped at byte %lld of %lld; run again to resume\n",
                   (long long)offset, (long long)size);
      return;
    }
    const CompressedState cs = checkpoint(ro->out, ro->c);
    std::filesystem::remove(partial);
    std::printf(
        "%s: %lld tokens from %s in %.1f s; state %zu bytes (%s%s%s, ratio %.3f of %zu); "
        "peak memory %.0f MiB\n",
        ro->out.c_str(), (long long)st.tokens_consumed, ro->file.c_str(), seconds_since(start),
        cs.bytes(), cs.method.c_str(), cs.detail.empty() ? "" : " ", cs.detail.c_str(), cs.ratio(),
        cs.raw_bytes(), peak_rss_mib());
  });

  struct AskOpts {
    ModelFlags model;
    SamplingFlags sampling;
    std::string state;
    std::vector<std::string> questions;
    int64_t max_tokens = 200;
  };
  auto ao = std::make_shared<AskOpts>();
  ao->sampling.opts.temperature = 1.0f;  // chat's defaults
  ao->sampling.opts.top_p = 0.3f;
  auto* ask = cmd->add_subcommand(
      "ask",
      "Answer questions about a document read by `doc read`, each from a fork of its "
      "state (chat template: \"User: …\\n\\nAssistant:\")");
  ao->model.add(ask, true, false);
  ask->add_option("STATE", ao->state, "State file written by `doc read`")->required();
  ask->add_option("QUESTION", ao->questions, "One or more questions")->required();
  ask->add_option("-n,--max-tokens", ao->max_tokens, "Tokens per answer at most")
      ->capture_default_str()
      ->check(Positive);
  ao->sampling.add(ask);
  ask->callback([ao] {
    auto m = ao->model.load();
    Tokenizer tok = ao->model.tokenizer(*m);
    auto t0 = Clock::now();
    const State doc = load_state_warn(ao->state, *m);
    std::fprintf(stderr, "(document state: %lld tokens, loaded in %.3f s)\n",
                 (long long)doc.tokens_consumed, seconds_since(t0));
    for (const std::string& q : ao->questions) {
      const auto tq = Clock::now();
      State st = doc;  // a fork: the document state itself is never changed
      Sampler sampler(ao->sampling.opts);
      GenerateOptions g;
      g.max_tokens = ao->max_tokens;
      g.stop = {"\n\n", "\nUser:"};
      const std::string turn = "\n\nUser: " + q + "\n\nAssistant:";
      std::printf("User: %s\n\nAssistant:", q.c_str());
      auto res = generate(*m, tok, st, tok.encode(turn), sampler, g, [](std::string_view text) {
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
      });
      std::printf("\n\n");
      std::fflush(stdout);
      std::fprintf(stderr, "(answered in %.3f s: %lld prompt tokens, %zu generated)\n",
                   seconds_since(tq), (long long)res.prompt_tokens, res.tokens.size());
    }
  });
}

}  // namespace rwkv7::cli
