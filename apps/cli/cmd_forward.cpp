// rwkv7 forward: logits of every position and the final state, as a safetensors file. The
// interop and debugging entry: compare with any other implementation tensor by tensor.
#include <cstdio>

#include "commands.hpp"
#include "common.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/tensor_file.hpp"

namespace rwkv7::cli {

void register_forward(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    std::string tokens, mode = "seq", state_in, state_out, out;
    int64_t chunk = LoadOptions{}.chunk;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "forward",
      "Run tokens through the model; write `logits` [T, V] and the final state "
      "(`state.att_shift`, `state.ffn_shift`, `state.wkv`) to a safetensors file");
  o->model.add(cmd, false);
  o->model.add_precision(cmd);
  cmd->add_option("--tokens", o->tokens, "Comma-separated token ids, e.g. 1,2,3")->required();
  cmd->add_option("--mode", o->mode, "rnn: one token at a time; seq: whole chunks at once")
      ->check(CLI::IsMember({"rnn", "seq"}))
      ->capture_default_str();
  cmd->add_option("--chunk", o->chunk, "Positions per pass in seq mode")
      ->capture_default_str()
      ->check(Positive);
  cmd->add_option("--state-in", o->state_in, "Start from this state file instead of zeros");
  cmd->add_option("--state-out", o->state_out, "Also write the final state here (state file)");
  cmd->add_option("-o,--output", o->out, "Output .safetensors")->required();
  cmd->callback([o] {
    const auto tokens = parse_token_list(o->tokens, "--tokens");
    auto m = o->model.load(o->chunk);
    State st = o->state_in.empty() ? m->new_state() : load_state_warn(o->state_in, *m);
    std::vector<float> logits;
    if (o->mode == "seq") {
      logits = m->forward(tokens, st, Logits::All);
    } else {
      for (int32_t t : tokens) {
        auto l = m->forward(std::span<const int32_t>(&t, 1), st, Logits::Last);
        logits.insert(logits.end(), l.begin(), l.end());
      }
    }
    const ModelConfig& c = m->config();
    const int64_t T = int64_t(tokens.size());
    const std::vector<ArrayView> out = {
        {"logits", {T, c.vocab_size}, logits.data()},
        {"state.att_shift", {c.n_layer, c.n_embd}, st.att_shift.data()},
        {"state.ffn_shift", {c.n_layer, c.n_embd}, st.ffn_shift.data()},
        {"state.wkv", {c.n_layer, c.n_head, c.head_size, c.head_size}, st.wkv.data()},
        {"tokens", {T}, nullptr, tokens.data()},
    };
    write_arrays_safetensors(
        o->out, out, {{"model", m->path()}, {"mode", o->mode}, {"model_shape", c.shape_string()}});
    if (!o->state_out.empty()) save_state(o->state_out, st, *m);
  });
}

}  // namespace rwkv7::cli
