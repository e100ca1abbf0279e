// rwkv7 state: compress a state file, or describe one (method, ratio, sizes, model).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "common.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/state_compress.hpp"

namespace rwkv7::cli {

void register_state(CLI::App& app) {
  auto* cmd = app.add_subcommand("state", "Compress or describe state files");
  cmd->require_subcommand(1);

  struct CompressOpts {
    std::string in, out;
    CompressOptions c;
  };
  auto co = std::make_shared<CompressOpts>();
  std::string methods;
  for (const auto& m : state_compression_methods()) methods += (methods.empty() ? "" : ", ") + m;
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
  comp->callback([co] {
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
    std::printf("shape         L%lld C%lld H%lld N%lld\n", (long long)cs.n_layer,
                (long long)cs.n_embd, (long long)cs.n_head, (long long)cs.head_size);
    std::printf("tokens        %lld\n", (long long)cs.tokens_consumed);
    std::printf("model         %s %s\n",
                cs.model_shape.empty() ? "(unknown)" : cs.model_shape.c_str(),
                cs.model_fingerprint.c_str());
  });
}

}  // namespace rwkv7::cli
