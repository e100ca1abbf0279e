// rwkv7 info: what a checkpoint holds (shapes, sizes, dtype, state size, broken values).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "common.hpp"

namespace rwkv7::cli {

void register_info(CLI::App& app) {
  auto flags = std::make_shared<ModelFlags>();
  auto json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("info",
                                 "Show a checkpoint's shapes, parameter count, dtype and "
                                 "state size; report NaN/inf weights");
  flags->add(cmd, false);
  cmd->add_flag("--json", *json, "Print one JSON object");
  cmd->callback([flags, json] {
    auto m = flags->load();
    const ModelConfig& c = m->config();
    int64_t nonfinite = 0;
    nlohmann::json bad = nlohmann::json::array();
    for (const auto& t : m->inspect_tensors()) {
      if (t.nonfinite) bad.push_back({{"tensor", t.name}, {"nonfinite", t.nonfinite}});
      nonfinite += t.nonfinite;
    }
    const State s = m->new_state();
    nlohmann::json j = {
        {"path", m->path()},
        {"n_layer", c.n_layer},
        {"n_embd", c.n_embd},
        {"head_size", c.head_size},
        {"n_head", c.n_head},
        {"vocab_size", c.vocab_size},
        {"ffn_dim", c.ffn_dim},
        {"lora",
         {{"decay", c.d_decay}, {"aaa", c.d_aaa}, {"value", c.d_value}, {"gate", c.d_gate}}},
        {"parameters", m->parameter_count()},
        {"dtype", m->weight_dtype()},
        {"state_bytes", s.bytes()},
        {"fingerprint", m->fingerprint()},
        {"nonfinite_values", nonfinite},
        {"nonfinite_tensors", bad}};
    if (*json) {
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("model       %s\n", m->path().c_str());
      std::printf(
          "layers      %lld\nembedding   %lld\nheads       %lld x %lld\nvocabulary  %lld\n"
          "ffn         %lld\n",
          (long long)c.n_layer, (long long)c.n_embd, (long long)c.n_head, (long long)c.head_size,
          (long long)c.vocab_size, (long long)c.ffn_dim);
      std::printf("lora        decay %lld, aaa %lld, value %lld, gate %lld\n", (long long)c.d_decay,
                  (long long)c.d_aaa, (long long)c.d_value, (long long)c.d_gate);
      std::printf(
          "parameters  %lld (%.2f M)\ndtype       %s\nstate       %zu bytes per sequence\n"
          "fingerprint %s\n",
          (long long)m->parameter_count(), double(m->parameter_count()) / 1e6,
          m->weight_dtype().c_str(), s.bytes(), m->fingerprint().c_str());
      if (nonfinite == 0) {
        std::printf("values      all finite\n");
      } else {
        std::printf("values      WARNING: %lld NaN/inf values\n", (long long)nonfinite);
        for (const auto& b : bad)
          std::printf("            %s: %lld\n", b["tensor"].get<std::string>().c_str(),
                      (long long)b["nonfinite"].get<int64_t>());
      }
    }
    if (nonfinite)
      std::fprintf(stderr, "rwkv7: warning: %s has %lld NaN/inf weight values\n", m->path().c_str(),
                   (long long)nonfinite);
  });
}

}  // namespace rwkv7::cli
