// rwkv7 lora merge: a base checkpoint plus the LoRA adapters of `rwkv7 train --lora-rank`
// written as one checkpoint in the official layout.
#include <cstdio>

#include "commands.hpp"
#include "common.hpp"
#include "rwkv7/lora.hpp"

namespace rwkv7::cli {

void register_lora(CLI::App& app) {
  struct Opts {
    std::string model, adapters, out, dtype = "f32";
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("lora", "LoRA adapters of `rwkv7 train --lora-rank`");
  cmd->require_subcommand(1);
  auto* merge = cmd->add_subcommand(
      "merge", "Write base + (alpha / rank)·B·A as one checkpoint (official .pth layout)");
  merge->add_option("-m,--model", o->model, "Base checkpoint the adapters were trained on")
      ->required();
  merge->add_option("--lora", o->adapters, "Adapter file (lora.safetensors)")->required();
  merge->add_option("-o,--output", o->out, "Merged checkpoint (.pth)")->required();
  merge->add_option("--dtype", o->dtype, "dtype of the merged checkpoint")
      ->check(CLI::IsMember({"f32", "bf16", "f16"}))
      ->capture_default_str();
  merge->callback([o] {
    merge_lora_checkpoint(o->model, o->adapters, o->out, o->dtype);
    std::printf("merged %s + %s into %s\n", o->model.c_str(), o->adapters.c_str(), o->out.c_str());
  });
}

}  // namespace rwkv7::cli
