// rwkv7 grad: mean next-token cross-entropy of a batch of token rows and its exact gradient
// w.r.t. every parameter, as a safetensors file comparable tensor by tensor with the official
// trainer's gradients.
#include <cstdio>
#include <sstream>

#include "commands.hpp"
#include "common.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/grad.hpp"
#include "rwkv7/tensor_file.hpp"

namespace rwkv7::cli {
namespace {

// "1,2,3;4,5,6" → rows; each row a comma-separated list.
std::vector<std::vector<int32_t>> parse_rows(const std::string& text) {
  std::vector<std::vector<int32_t>> rows;
  std::stringstream ss(text);
  std::string row;
  while (std::getline(ss, row, ';')) {
    const std::string flag = "--tokens (row " + std::to_string(rows.size()) + ")";
    rows.push_back(parse_token_list(row, flag));
  }
  if (!text.empty() && text.back() == ';') throw Error("--tokens: empty row after the last ';'");
  if (rows.empty()) throw Error("--tokens: no token rows given");
  return rows;
}

}  // namespace

void register_grad(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    std::string tokens, out;
    bool l2wrap = false;
    int64_t checkpoint = 32, segment = 0, loss_from = 0;
    bool truncate_bptt = false, checkpoint_layers = false;
    std::string precision = "fp32";
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "grad",
      "Mean cross-entropy of tokens[1:] given tokens[:-1] for each row, and its gradient: "
      "writes `loss` and `grad.<tensor name>` (fp32, checkpoint shapes) to a safetensors file. "
      "Layer 0's unused v0/v1/v2 get no gradient entry.");
  o->model.add(cmd, false);
  cmd->add_option("--tokens", o->tokens,
                  "Token rows: ids separated by ',', rows by ';' (equal lengths, each >= 2), "
                  "e.g. \"1,2,3,4;5,6,7,8\"")
      ->required();
  cmd->add_flag("--l2wrap", o->l2wrap,
                "Add the official L2Wrap term to the gradient (loss value unchanged)");
  cmd->add_option("--wkv-checkpoint", o->checkpoint,
                  "Backward keeps WKV states every this many positions (memory vs recompute)")
      ->capture_default_str()
      ->check(Positive);
  add_long_context_flags(cmd, o->segment, o->truncate_bptt, o->checkpoint_layers);
  add_precision_option(cmd, o->precision);
  cmd->add_option("--loss-from", o->loss_from,
                  "Only predicted positions from this one on (0-based) count in the loss; with "
                  "--segment the printed state gradients show how far back that loss reaches")
      ->capture_default_str()
      ->check(NonNegative);
  cmd->add_option("-o,--output", o->out, "Output .safetensors")->required();
  cmd->callback([o] {
    const auto rows = parse_rows(o->tokens);
    GradientOptions go;
    go.backend = o->model.backend == "reference" ? BackendKind::Reference : BackendKind::Cpu;
    go.threads = o->model.threads;
    go.l2wrap = o->l2wrap;
    go.wkv_checkpoint = o->checkpoint;
    go.segment = o->segment;
    go.truncate_bptt = o->truncate_bptt;
    go.checkpoint_layers = o->checkpoint_layers;
    go.loss_from = o->loss_from;
    go.precision = o->precision;
    const LossAndGradients r = compute_gradients(o->model.model, rows, go);
    const float loss = float(r.loss);
    std::vector<ArrayView> out = {{"loss", {}, &loss}};
    for (const NamedGradient& g : r.gradients)
      out.push_back({"grad." + g.name, g.shape, g.values.data()});
    char loss_text[32];
    std::snprintf(loss_text, sizeof loss_text, "%.9g", r.loss);
    write_arrays_safetensors(o->out, out,
                             {{"model", o->model.model},
                              {"loss", loss_text},
                              {"positions", std::to_string(r.positions)},
                              {"l2wrap", o->l2wrap ? "true" : "false"}});
    std::printf("loss %.8f over %lld positions; %zu gradients written to %s\n", r.loss,
                (long long)r.positions, r.gradients.size(), o->out.c_str());
    if (!r.state_grad_norms.empty()) {
      std::printf("|d loss / d state| at the start of each segment:");
      for (size_t k = 1; k < r.state_grad_norms.size(); ++k)
        std::printf(" %zu:%.3g", k, r.state_grad_norms[k]);
      std::printf("\n");
    }
  });
}

}  // namespace rwkv7::cli
