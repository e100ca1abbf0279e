#include "common.hpp"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <stdexcept>

#include "rwkv7/error.hpp"

namespace rwkv7::cli {

namespace {
CLI::Validator number_check(bool allow_zero) {
  return CLI::Validator(
      [allow_zero](std::string& text) -> std::string {
        double v = 0;
        try {
          size_t used = 0;
          v = std::stod(text, &used);
          if (used != text.size()) throw std::invalid_argument(text);
        } catch (const std::exception&) {
          return "must be a number (got '" + text + "')";
        }
        if (allow_zero ? v < 0 : v <= 0)
          return std::string(allow_zero ? "must be 0 or more" : "must be greater than 0") +
                 " (got " + text + ")";
        return "";
      },
      allow_zero ? "NONNEGATIVE" : "POSITIVE");
}
}  // namespace

const CLI::Validator Positive = number_check(false);
const CLI::Validator NonNegative = number_check(true);
const CLI::Validator ThreadCount(
    [](std::string& text) -> std::string {
      long long v = -1;
      size_t used = 0;
      try {
        v = std::stoll(text, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != text.size() || used == 0) return "must be a whole number (got '" + text + "')";
      if (v < 0 || v > kMaxThreads) {
        return "must be 0 (all cores) to " + std::to_string(kMaxThreads) + " (got " + text + ")";
      }
      return "";
    },
    "0..1024");

constexpr const char* kShippedModel = "models/rwkv7-shakespeare-L4-C128.pth";

std::string default_model_path() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  std::vector<std::filesystem::path> candidates;
  if (!ec) candidates.push_back(exe.parent_path().parent_path() / kShippedModel);
  candidates.push_back(std::filesystem::current_path(ec) / kShippedModel);
  for (const auto& p : candidates)
    if (std::filesystem::exists(p, ec)) return p.string();
  throw Error(std::string("no -m MODEL given and the shipped model ") + kShippedModel +
              " was not found next to the build folder or in the current folder");
}

void ModelFlags::add(CLI::App* cmd, bool with_vocab, bool model_required) {
  auto* m = cmd->add_option("-m,--model", model,
                            model_required ? "Checkpoint: official .pth, .safetensors or GGUF"
                                           : "Checkpoint: official .pth, .safetensors or GGUF "
                                             "(default: the shipped Shakespeare model)");
  if (model_required) m->required();
  if (with_vocab) {
    cmd->add_option("--vocab", vocab,
                    "World vocabulary file (rwkv_vocab_v20230424.txt); not needed for byte-level "
                    "(V = 256) models");
  }
  cmd->add_option("-t,--threads", threads, "Worker threads (0 = all cores)")
      ->capture_default_str()
      ->check(ThreadCount);
  cmd->add_option("--lora", lora,
                  "LoRA adapters (lora.safetensors of `rwkv7 train --lora-rank`) merged into the "
                  "weights at load");
  cmd->add_option("--backend", backend, "cpu (SIMD + threads) or reference (scalar oracle)")
      ->check(CLI::IsMember({"cpu", "reference"}))
      ->capture_default_str();
}

void ModelFlags::add_precision(CLI::App* cmd) {
  cmd->add_option("--precision", precision,
                  "Products of the head and the layers' large matrices: fp32 (the weights' "
                  "values times fp32 activations), or bf16 (weights and activations rounded to "
                  "bf16, sums in fp32, on CPUs with AVX512_BF16: about twice the speed where "
                  "products dominate, e.g. prefill and batched decode; elsewhere fp32 runs)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16"}));
}

std::shared_ptr<const Model> ModelFlags::load(int64_t chunk) const {
  const std::string path = model.empty() ? default_model_path() : model;
  LoadOptions o;
  o.chunk = chunk;
  o.threads = threads;
  o.backend = backend == "reference" ? BackendKind::Reference : BackendKind::Cpu;
  o.lora = lora;
  o.precision = precision;
  std::shared_ptr<const Model> m = Model::load(path, o);
  if (precision != m->product_precision())
    std::fprintf(stderr,
                 "rwkv7: note: --precision %s runs %s products here (bf16 needs the cpu backend, "
                 "a CPU with AVX512_BF16 and bf16 or fp32 weights)\n",
                 precision.c_str(), m->product_precision().c_str());
  return m;
}

Tokenizer ModelFlags::tokenizer(const Model& m) const {
  if (!vocab.empty()) {
    Tokenizer t = Tokenizer::load_world(vocab);
    if (int64_t(t.vocab_size()) > m.config().vocab_size) {
      throw Error(vocab + ": vocabulary has " + std::to_string(t.vocab_size()) +
                  " ids but the model " + m.path() + " only " +
                  std::to_string(m.config().vocab_size));
    }
    return t;
  }
  if (m.config().vocab_size == 256) return Tokenizer::bytes();
  throw Error(m.path() + " has a vocabulary of " + std::to_string(m.config().vocab_size) +
              " tokens: pass --vocab rwkv_vocab_v20230424.txt");
}

State load_state_warn(const std::string& path, const Model& model) {
  std::string warning;
  State st = load_state(path, model, &warning);
  if (!warning.empty()) std::fprintf(stderr, "rwkv7: warning: %s\n", warning.c_str());
  return st;
}

void SamplingFlags::add(CLI::App* cmd) {
  cmd->add_option("--temperature", opts.temperature, "Sampling temperature (0 = greedy)")
      ->capture_default_str()
      ->check(NonNegative);
  cmd->add_option("--top-p", opts.top_p, "Nucleus sampling mass")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--top-k", opts.top_k, "Keep the k most likely tokens (0 = all)")
      ->capture_default_str()
      ->check(NonNegative);
  cmd->add_option("--presence-penalty", opts.presence_penalty,
                  "Subtracted from the logit of every token already generated")
      ->capture_default_str();
  cmd->add_option("--frequency-penalty", opts.frequency_penalty,
                  "Subtracted per (decayed) occurrence of a generated token")
      ->capture_default_str();
  cmd->add_option("--penalty-decay", opts.penalty_decay,
                  "Occurrence counts are multiplied by this each step")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", opts.seed, "Random seed (same seed, same text)")->capture_default_str();
}

std::vector<int32_t> parse_token_list(const std::string& text, const std::string& flag) {
  std::vector<int32_t> ids;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t a = item.find_first_not_of(" \t"), b = item.find_last_not_of(" \t");
    if (a == std::string::npos) throw Error(flag + ": empty item in token list '" + text + "'");
    item = item.substr(a, b - a + 1);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || v < 0 || v > INT32_MAX) {
      throw Error(flag + ": '" + item + "' is not a token id (expected comma-separated integers)");
    }
    ids.push_back(int32_t(v));
  }
  if (ids.empty()) throw Error(flag + ": no tokens given");
  return ids;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw Error(path + ": read failed");
  return data;
}

std::string read_stdin() {
  std::string data((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  return data;
}

void add_long_context_flags(CLI::App* cmd, int64_t& segment, bool& truncate_bptt,
                            bool& checkpoint_layers) {
  auto* seg = cmd->add_option("--segment", segment,
                              "Run each row in segments of this many positions, the state "
                              "carried forward and its gradient back: exact gradients, memory "
                              "growing with the segment, not the row (0 = whole rows)")
                  ->check(NonNegative);
  cmd->add_flag("--truncate-bptt", truncate_bptt,
                "With --segment: no gradient through the state between segments (faster, "
                "approximate)")
      ->needs(seg);
  cmd->add_flag("--checkpoint-layers", checkpoint_layers,
                "Keep only each layer's input in the forward and recompute the layer in the "
                "backward (less memory, about one more forward)");
}

void add_precision_option(CLI::App* cmd, std::string& precision) {
  cmd->add_option("--precision", precision,
                  "Precision of the matrix products: fp32, or bf16 (mixed precision: operands "
                  "rounded to bf16, sums in fp32, AVX512_BF16 where the CPU has it; weights, "
                  "optimizer state, norms, WKV and loss stay fp32)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16"}));
}

std::vector<double> parse_double_list(const std::string& text, const std::string& flag) {
  std::vector<double> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t end = std::min(text.find(',', pos), text.size());
    const std::string item = text.substr(pos, end - pos);
    try {
      size_t used = 0;
      out.push_back(std::stod(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw Error(flag + ": '" + item + "' is not a number (give a comma-separated list)");
    }
    pos = end + 1;
  }
  return out;
}

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& flag) {
  std::vector<int64_t> out;
  for (double x : parse_double_list(text, flag)) {
    if (!(x == std::floor(x) && std::abs(x) < 1e15))
      throw Error(flag + ": " + std::to_string(x) + " is not a whole number");
    out.push_back(int64_t(x));
  }
  return out;
}

Progress progress_bar(const char* label) {
  if (!isatty(STDERR_FILENO)) return {};
  return [label](int64_t done, int64_t total) {
    const int width = 40, filled = int(double(done) / double(std::max<int64_t>(total, 1)) * width);
    std::fprintf(stderr, "\r%s [%.*s%*s] %lld/%lld", label, filled,
                 "########################################", width - filled, "", (long long)done,
                 (long long)total);
    if (done >= total) std::fputc('\n', stderr);
    std::fflush(stderr);
  };
}

}  // namespace rwkv7::cli
