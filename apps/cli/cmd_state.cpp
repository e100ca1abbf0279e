// rwkv7 state: compress a state file, describe one (method, ratio, sizes, model), or learn a
// projection for the learned compression methods.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "common.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/state_compress.hpp"
#include "rwkv7/state_learn.hpp"
#include "rwkv7/tokenizer.hpp"

namespace rwkv7::cli {

void register_state(CLI::App& app) {
  auto* cmd = app.add_subcommand("state", "Compress or describe state files");
  cmd->require_subcommand(1);

  struct CompressOpts {
    std::string in, out, projection;
    CompressOptions c;
  };
  auto co = std::make_shared<CompressOpts>();
  std::string methods;
  for (const auto& m : state_compression_methods()) methods += (methods.empty() ? "" : ", ") + m;
  for (const auto& m : learned_compression_methods()) methods += ", " + m;
  auto* comp = cmd->add_subcommand(
      "compress",
      "Rewrite a state file compressed (the file records how; every state reader "
      "decompresses it)");
  comp->add_option("IN", co->in, "State file to read (any form)")->required();
  comp->add_option("OUT", co->out, "State file to write")->required();
  comp->add_option("--method", co->c.method, "One of: " + methods)->required();
  auto* ratio = comp->add_option("--ratio", co->c.ratio,
                                 "lowrank*/adaptive*: the largest rank or energy within this "
                                 "ratio (compressed bytes / fp32 bytes)");
  auto* rank = comp->add_option("--rank", co->c.rank, "lowrank*: rank per head");
  auto* energy = comp->add_option("--energy", co->c.energy,
                                  "adaptive*: kept fraction of each head's squared singular "
                                  "values, (0, 1]");
  ratio->excludes(rank)->excludes(energy);
  rank->excludes(energy);
  comp->add_flag("--exact-shift", co->c.exact_shift, "Keep the shift vectors in fp32");
  comp->add_option("--projection", co->projection,
                   "learned*: the projection file of `rwkv7 state learn` (the same model's)");
  comp->callback([co] {
    if (!co->projection.empty()) {
      co->c.projection =
          std::make_shared<const StateProjection>(load_state_projection(co->projection));
    }
    const CompressedState in = read_state_file(co->in);
    State s = decompress_state(in);
    CompressedState out = compress_state(s, co->c);
    out.model_shape = in.model_shape;
    out.model_fingerprint = in.model_fingerprint;
    write_state_file(co->out, out);
    std::printf("%s: %s%s%s, %zu bytes, ratio %.4f (from %s, %zu bytes)\n", co->out.c_str(),
                out.method.c_str(), out.detail.empty() ? "" : " ", out.detail.c_str(), out.bytes(),
                out.ratio(), in.method.c_str(), in.bytes());
  });

  struct InfoOpts {
    std::string file;
    bool json = false;
  };
  auto io = std::make_shared<InfoOpts>();
  auto* info = cmd->add_subcommand("info", "Describe a state file");
  info->add_option("FILE", io->file, "State file")->required();
  info->add_flag("--json", io->json, "Print one JSON object");
  info->callback([io] {
    const CompressedState cs = read_state_file(io->file);
    decompress_state(cs);  // every value checked, as a load would
    if (io->json) {
      nlohmann::json j = {{"file", io->file},
                          {"method", cs.method},
                          {"detail", cs.detail},
                          {"bytes", cs.bytes()},
                          {"shared_bytes", cs.shared_bytes()},
                          {"fp32_bytes", cs.raw_bytes()},
                          {"ratio", cs.ratio()},
                          {"layers", cs.n_layer},
                          {"embd", cs.n_embd},
                          {"heads", cs.n_head},
                          {"head_size", cs.head_size},
                          {"tokens_consumed", cs.tokens_consumed},
                          {"model_shape", cs.model_shape},
                          {"model_fingerprint", cs.model_fingerprint}};
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    std::printf("file          %s\n", io->file.c_str());
    std::printf("compression   %s%s%s\n", cs.method.c_str(), cs.detail.empty() ? "" : ", ",
                cs.detail.c_str());
    std::printf("size          %zu bytes (fp32 %zu bytes, ratio %.4f)\n", cs.bytes(),
                cs.raw_bytes(), cs.ratio());
    if (cs.shared_bytes() > 0) {
      std::printf(
          "shared        %zu bytes more (the learned projection's decoder, the same for "
          "every state of the model; not in the ratio)\n",
          cs.shared_bytes());
    }
    std::printf("shape         L%lld C%lld H%lld N%lld\n", (long long)cs.n_layer,
                (long long)cs.n_embd, (long long)cs.n_head, (long long)cs.head_size);
    std::printf("tokens        %lld\n", (long long)cs.tokens_consumed);
    std::printf("model         %s %s\n",
                cs.model_shape.empty() ? "(unknown)" : cs.model_shape.c_str(),
                cs.model_fingerprint.c_str());
  });

  struct LearnOpts {
    ModelFlags model;
    std::string text_file, out;
    std::string side = "value";
    ProjectionFitOptions fit;
    bool json = false;
  };
  auto lo = std::make_shared<LearnOpts>();
  auto* learn = cmd->add_subcommand(
      "learn",
      "Fit a state projection for the learned* methods: states sampled from a text, the KL of "
      "the model's next-token distributions minimised (docs/state-compression.md)");
  lo->model.add(learn);
  learn->add_option("--text-file", lo->text_file, "Text to sample states from (training text)")
      ->required()
      ->check(CLI::ExistingFile);
  learn->add_option("-o,--output", lo->out, "Projection file to write (safetensors)")->required();
  learn->add_option("--rank", lo->fit.rank, "Code rows per head (ratio about rank/N in fp32)")
      ->capture_default_str()
      ->check(Positive);
  learn->add_option("--side", lo->side, "Project the value index (rows) or the key index")
      ->check(CLI::IsMember({"value", "key"}))
      ->capture_default_str();
  learn->add_option("--samples", lo->fit.samples, "Sampled states")
      ->capture_default_str()
      ->check(Positive);
  learn->add_option("--min-prefix", lo->fit.min_prefix, "Fewest tokens read before a sample")
      ->capture_default_str()
      ->check(Positive);
  learn->add_option("--max-prefix", lo->fit.max_prefix, "Most tokens read before a sample")
      ->capture_default_str()
      ->check(Positive);
  learn->add_option("--continue", lo->fit.continue_tokens, "Teacher positions after each sample")
      ->capture_default_str()
      ->check(Positive);
  learn->add_option("--steps", lo->fit.steps, "Adam steps (0: the principal subspace only)")
      ->capture_default_str()
      ->check(NonNegative);
  learn->add_option("--batch", lo->fit.batch, "Samples per step")
      ->capture_default_str()
      ->check(Positive);
  learn->add_option("--lr", lo->fit.lr, "Adam learning rate")->capture_default_str();
  learn->add_option("--seed", lo->fit.seed, "Sampling seed")->capture_default_str();
  learn->add_flag("--json", lo->json, "Print one JSON object (KL before and after, per step)");
  learn->callback([lo] {
    lo->fit.key_side = lo->side == "key";
    lo->fit.threads = lo->model.threads;
    std::vector<int32_t> ids;
    {
      auto m = lo->model.load();
      Tokenizer tok = lo->model.tokenizer(*m);
      ids = tok.encode(read_file(lo->text_file));
    }
    ProjectionFitReport report;
    const StateProjection p =
        fit_state_projection(lo->model.model, ids, lo->fit, &report, progress_bar("state learn"));
    save_state_projection(lo->out, p);
    if (lo->json) {
      nlohmann::json j = {{"projection", lo->out},   {"rank", p.rank},
                          {"side", lo->side},        {"kl_start", report.kl_start},
                          {"kl_end", report.kl_end}, {"step_kl", report.step_kl}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("%s: rank %lld, %s side; %s\n", lo->out.c_str(), (long long)p.rank,
                  lo->side.c_str(), p.detail.c_str());
    }
  });
}

}  // namespace rwkv7::cli
