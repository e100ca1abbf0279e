#pragma once
// Pieces shared by the subcommands: model and tokenizer options, token lists, files.
#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "rwkv7/evaluate.hpp"
#include "rwkv7/model.hpp"
#include "rwkv7/sampler.hpp"
#include "rwkv7/tokenizer.hpp"

namespace rwkv7::cli {

// Number checks with short messages (CLI11's own print the whole double range): CLI11 puts
// the option name in front, e.g. "--chunk: must be greater than 0 (got 0)".
extern const CLI::Validator Positive;
extern const CLI::Validator NonNegative;
// -t/--threads: 0 (all cores) to kMaxThreads; more would only spend minutes starting threads.
constexpr int kMaxThreads = 1024;
extern const CLI::Validator ThreadCount;

struct ModelFlags {
  std::string model;
  std::string vocab;
  int threads = 0;
  std::string backend = "cpu";
  std::string lora;                // adapter file merged in at load
  std::string precision = "fp32";  // LoadOptions::precision (add_precision)

  // model_required = false: without -m the model shipped with rwkv7 is used (see below).
  void add(CLI::App* cmd, bool with_vocab = true, bool model_required = true);
  // --precision fp32|bf16 of the inference commands (products of the large matrices).
  void add_precision(CLI::App* cmd);
  // chunk: positions per pass in sequence mode (LoadOptions::chunk).
  std::shared_ptr<const Model> load(int64_t chunk = LoadOptions{}.chunk) const;
  // World vocabulary when --vocab is given; raw bytes for V = 256 models; else an Error.
  Tokenizer tokenizer(const Model& m) const;
};

struct SamplingFlags {
  SamplerOptions opts;
  void add(CLI::App* cmd);
};

// --precision fp32|bf16 (train and grad): the precision of the matrix products.
void add_precision_option(CLI::App* cmd, std::string& precision);

// --segment, --truncate-bptt and --checkpoint-layers (train and grad): long rows in segments
// with the state carried, and per-layer recompute in the backward.
void add_long_context_flags(CLI::App* cmd, int64_t& segment, bool& truncate_bptt,
                            bool& checkpoint_layers);

// A saved state for `model`; a fingerprint mismatch (same shape, other weights) is printed
// to stderr as a warning.
State load_state_warn(const std::string& path, const Model& model);

// The small model the repository ships (models/, trained by `rwkv7 train`; see README): found
// next to the binary's build folder or under the current folder. Error when absent.
std::string default_model_path();

// "0.1,0.3" → {0.1, 0.3}; "1,2" → {1, 2}; Error naming the flag on anything else.
std::vector<double> parse_double_list(const std::string& text, const std::string& flag);
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& flag);
// "1,2,3" → {1, 2, 3}; Error naming the flag on anything else.
std::vector<int32_t> parse_token_list(const std::string& text, const std::string& flag);
// Whole file as bytes; Error naming the file.
std::string read_file(const std::string& path);

// A progress bar on stderr when it is a terminal (nothing otherwise).
Progress progress_bar(const char* label);
std::string read_stdin();

}  // namespace rwkv7::cli
