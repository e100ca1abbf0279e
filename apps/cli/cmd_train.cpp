// rwkv7 train: train or fine-tune on text; progress on the terminal, a CSV log, a loss plot and
// atomic checkpoints in the output folder; --resume continues exactly.
#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "common.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/train.hpp"

namespace rwkv7::cli {
namespace {

std::string hms(double s) {
  char buf[32];
  const long t = long(s);
  std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  return buf;
}

}  // namespace

void register_train(CLI::App& app) {
  struct Opts {
    train::TrainOptions t;
    int64_t layers = 0, embd = 0, vocab_size = 0, head_size = 64;
    bool no_shuffle = false, no_l2wrap = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "train",
      "Train or fine-tune: AdamW (official groups), warm-up + cosine schedule, "
      "clipping, L2Wrap; checkpoints, CSV log and loss.svg in the output folder");
  auto* init = cmd->add_option("--init", o->t.init_path,
                               "Start from this checkpoint (.pth, "
                               ".safetensors, GGUF)");
  auto* layers = cmd->add_option("--layers", o->layers, "Fresh model: layers (official init)");
  cmd->add_option("--embd", o->embd, "Fresh model: width");
  cmd->add_option("--vocab-size", o->vocab_size,
                  "Fresh model: vocabulary (default 256 for "
                  "bytes, 65536 with --vocab)");
  cmd->add_option("--head-size", o->head_size, "Fresh model: head size")->capture_default_str();
  init->excludes(layers);
  cmd->add_option("--data", o->t.data,
                  "Text files, folders of them, or .jsonl with a \"text\" "
                  "field (repeatable)")
      ->required();
  cmd->add_option("--vocab", o->t.vocab, "World vocabulary (default: raw bytes)");
  cmd->add_option("--val-fraction", o->t.val_fraction, "Held-out tail of the data")
      ->capture_default_str();
  cmd->add_flag("--no-shuffle", o->no_shuffle,
                "Row b of step s reads the data from (s·B + b)·T (reproducibility)");
  cmd->add_option("--seed", o->t.seed, "Seed of the batch order (and of a fresh init)")
      ->capture_default_str();
  cmd->add_option("--steps", o->t.steps, "Optimiser steps")->capture_default_str();
  cmd->add_option("--batch", o->t.batch, "Rows per micro-batch (B)")->capture_default_str();
  cmd->add_option("--ctx", o->t.ctx, "Tokens per row (T)")->capture_default_str();
  cmd->add_option("--accum", o->t.accum, "Micro-batches per step")->capture_default_str();
  cmd->add_option("--lr-init", o->t.lr_init, "Learning rate after warm-up")->capture_default_str();
  cmd->add_option("--lr-final", o->t.lr_final, "Learning rate at the last step")
      ->capture_default_str();
  cmd->add_option("--warmup", o->t.warmup, "Warm-up steps")->capture_default_str();
  cmd->add_option("--grad-clip", o->t.grad_clip, "Global gradient-norm clip (0 = off)")
      ->capture_default_str();
  cmd->add_option("--weight-decay", o->t.weight_decay, "On 2-D *.weight matrices only")
      ->capture_default_str();
  cmd->add_flag("--no-l2wrap", o->no_l2wrap, "Disable the official L2Wrap logit regulariser");
  cmd->add_option("--dropout", o->t.dropout,
                  "Dropout probability on the embedding and the residual stream after each time "
                  "and channel mix, as RWKV-LM applies it (0 = off)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.99));
  add_long_context_flags(cmd, o->t.segment, o->t.truncate_bptt, o->t.checkpoint_layers);
  add_precision_option(cmd, o->t.precision);
  cmd->add_option("--ctx-schedule", o->t.ctx_schedule,
                  "Length curriculum CTX:STEP,...: the context from each step on (first at step "
                  "0), e.g. 256:0,1024:2000,4096:4000; batch x ctx tokens per step kept by "
                  "shrinking the batch; rows cut at multiples of the current context");
  cmd->add_flag("--carry-state", o->t.carry_state,
                "Each row reads its own stretch of the data continuously and starts from the "
                "(detached) state where it ended the previous step");
  cmd->add_option("--replay", o->t.replay,
                  "With --carry-state: probability that a row goes back to one of the last 64 "
                  "points where rows ended and continues from there, from its state")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--tune", o->t.tune,
                  "What is trained: all (every weight) or state (state tuning: only each layer's "
                  "initial WKV state, every row starting from it; writes OUT/state.safetensors "
                  "for generate/chat --state-in and serve --state)")
      ->check(CLI::IsMember({"all", "state"}))
      ->capture_default_str();
  cmd->add_option("--lora-rank", o->t.lora_rank,
                  "LoRA: train only rank-r adapters of the large matrices (att receptance, key, "
                  "value, output; ffn key, value); writes OUT/lora.safetensors for `rwkv7 lora "
                  "merge` and --lora")
      ->check(NonNegative);
  cmd->add_option("--lora-alpha", o->t.lora_alpha,
                  "LoRA scale numerator: W + (alpha / rank)·B·A (default: the rank)")
      ->check(NonNegative);
  cmd->add_option("-o,--output", o->t.out_dir, "Output folder")->required();
  cmd->add_option("--log-json", o->t.log_json,
                  "One JSON object per step: step, loss, lr, "
                  "grad_norm");
  cmd->add_option("--save-every", o->t.save_every, "Checkpoint every N steps (0 = at the end)");
  cmd->add_option("--val-every", o->t.val_every, "Validate every N steps (0 = at the end)");
  cmd->add_option("--val-tokens", o->t.val_tokens,
                  "Held-out tokens per validation, the same prefix each time (0 = all)")
      ->capture_default_str();
  cmd->add_option("--save-dtype", o->t.save_dtype, "dtype of the final model.pth")
      ->check(CLI::IsMember({"f32", "bf16", "f16"}))
      ->capture_default_str();
  cmd->add_flag("--resume", o->t.resume, "Continue from the output folder's checkpoint");
  cmd->add_option("--stop-after", o->t.stop_after,
                  "Stop once this many steps are done (checkpoint written; --resume continues)");
  cmd->add_option("-t,--threads", o->t.threads, "Worker threads (0 = all cores)")
      ->check(ThreadCount);
  cmd->callback([o] {
    train::TrainOptions t = o->t;
    t.shuffle = !o->no_shuffle;
    t.l2wrap = !o->no_l2wrap;
    if (t.init_path.empty()) {
      if (o->layers <= 0 || o->embd <= 0) {
        throw Error("train: give --init MODEL, or --layers and --embd for a fresh model");
      }
      InitOptions fresh;
      fresh.n_layer = o->layers;
      fresh.n_embd = o->embd;
      fresh.head_size = o->head_size;
      fresh.vocab_size = o->vocab_size ? o->vocab_size : (t.vocab.empty() ? 256 : 65536);
      fresh.seed = t.seed;
      fresh.threads = t.threads;
      check_init_options(fresh);  // validates
      t.fresh = fresh;
    }
    const bool tty = isatty(STDERR_FILENO);
    auto summary = train::run_training(
        t,
        [tty](const train::StepReport& r) {
          char line[256];
          std::snprintf(line, sizeof line,
                        "step %lld/%lld  loss %.4f  lr %.3g  |g| %.3f  %.0f tok/s  elapsed %s  "
                        "ETA %s",
                        (long long)r.step + 1, (long long)r.steps, r.loss, r.lr, r.grad_norm,
                        r.tokens_per_s, hms(r.elapsed_s).c_str(), hms(r.eta_s).c_str());
          if (r.val_loss) {
            std::fprintf(stderr, "%s%s  val %.4f\n", tty ? "\r\033[K" : "", line, *r.val_loss);
          } else if (tty) {
            std::fprintf(stderr, "\r\033[K%s", line);
          } else if ((r.step + 1) % 10 == 0 || r.step + 1 == r.steps) {
            std::fprintf(stderr, "%s\n", line);
          }
          std::fflush(stderr);
        },
        [](const std::string& msg) { std::fprintf(stderr, "train: %s\n", msg.c_str()); });
    if (summary.rank != 0) return;  // rank 0 of a data-parallel run reports for all
    std::fprintf(stderr, "train: %lld steps done; last loss %.4f", (long long)summary.steps_done,
                 summary.last_loss);
    if (summary.final_val_loss)
      std::fprintf(stderr, "; validation loss %.4f", *summary.final_val_loss);
    std::fprintf(stderr, "\n");
    if (!summary.model_path.empty())
      std::fprintf(stderr, "train: model written to %s\n", summary.model_path.c_str());
    if (!summary.lora_path.empty())
      std::fprintf(stderr, "train: LoRA adapters written to %s\n", summary.lora_path.c_str());
    if (!summary.state_path.empty())
      std::fprintf(stderr, "train: tuned start state written to %s\n", summary.state_path.c_str());
  });
}

}  // namespace rwkv7::cli
