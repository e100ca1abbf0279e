#include <signal.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/atomic_write.hpp"
#include "core/thread_pool.hpp"
#include "engine/init_internal.hpp"
#include "engine/model_internal.hpp"
#include "io/tensor_io.hpp"
#include "model/backward.hpp"
#include "model/dropout.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/evaluate.hpp"
#include "rwkv7/train.hpp"
#include "train/data.hpp"
#include "train/data_parallel.hpp"
#include "train/lora_tuning.hpp"
#include "train/optimizer.hpp"
#include "train/report.hpp"
#include "train/state_tuning.hpp"

namespace rwkv7::train {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Views of the fp32 parameters in the official order (kept alive by `params`).
NamedTensors param_views(const TrainParams& params) {
  NamedTensors out;
  for (const std::string& n : params.names()) out.emplace_back(n, params.tensors.at(n).view());
  return out;
}

TensorFile params_as_file(const TrainParams& params, const std::string& what) {
  TensorFile f;
  f.path = what;
  for (auto& [n, v] : param_views(params)) f.add(n, v);
  return f;
}

// The model the run starts from: a checkpoint or a fresh official initialisation.
TrainParams initial_params(const TrainOptions& o) {
  if (o.fresh) {
    InitializedModel init = init_model(init_spec_from(*o.fresh));
    TensorFile f;
    f.path = "fresh model";
    for (auto& [n, v] : init.tensors) f.add(n, v);
    return params_from_file(f);
  }
  if (o.init_path.empty())
    throw Error("train: give --init MODEL or a fresh shape (--layers, --embd)");
  return params_from_file(read_tensor_file(o.init_path));
}

// Identifies what a checkpoint was trained on: a resume with other settings is refused.
nlohmann::json run_identity(const TrainOptions& o, const TokenData& data, const ModelConfig& c,
                            int ranks) {
  nlohmann::json id = {{"model_shape", c.shape_string()},
                       {"batch", o.batch},
                       {"ctx", o.ctx},
                       {"accum", o.accum},
                       {"seed", o.seed},
                       {"shuffle", o.shuffle},
                       {"data", data.description},
                       {"vocab", o.vocab.empty() ? "bytes" : "world"},
                       {"val_fraction", o.val_fraction}};
  // Only when set, so that checkpoints of runs without them still resume.
  if (!o.ctx_schedule.empty()) id["ctx_schedule"] = o.ctx_schedule;
  if (o.carry_state) id["carry_state"] = true;
  if (o.replay > 0) id["replay"] = o.replay;
  if (o.truncate_bptt) id["truncate_bptt"] = true;
  if (ranks > 1) id["ranks"] = ranks;  // a resume needs the same split of each batch
  if (o.tune != "all") id["tune"] = o.tune;
  if (o.lora_rank > 0) id["lora_rank"] = o.lora_rank;
  if (o.lora_rank > 0) id["lora_alpha"] = o.lora_alpha;
  if (o.dropout > 0) id["dropout"] = o.dropout;
  if (o.precision != "fp32") id["precision"] = o.precision;
  return id;
}

std::string in_dir(const TrainOptions& o, const std::string& name) {
  return (fs::path(o.out_dir) / name).string();
}

// Names the run itself gives its checkpoint files: "ckpt-<steps>.pth" and its optimizer state
// "ckpt-<steps>.optim.safetensors". Only such plain names inside the output folder are ever
// read back or deleted: checkpoint.json is input like any other file.
bool is_checkpoint_name(const std::string& name, const char* ext) {
  const std::string pre = "ckpt-";
  if (name.size() <= pre.size() || name.compare(0, pre.size(), pre) != 0) return false;
  size_t k = pre.size();
  while (k < name.size() && name[k] >= '0' && name[k] <= '9') ++k;
  return k > pre.size() && k - pre.size() <= 18 && name.substr(k) == ext;
}

constexpr size_t kMaxPointerBytes = 1 << 20;  // checkpoint.json is a few hundred bytes

// checkpoint.json as JSON; Error naming the file when it is unreadable or too large.
nlohmann::json read_pointer(const std::string& ptr_path) {
  std::ifstream in(ptr_path, std::ios::binary);
  if (!in) throw Error(ptr_path + ": no checkpoint to resume from");
  std::string text(kMaxPointerBytes + 1, '\0');
  in.read(text.data(), std::streamsize(text.size()));
  text.resize(size_t(in.gcount()));
  if (text.size() > kMaxPointerBytes) throw Error(ptr_path + ": larger than 1 MiB; not a pointer");
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ptr_path + ": unreadable (" + e.what() + ")");
  }
}

NamedTensors views_of(const TensorMap& tensors) {
  NamedTensors out;
  for (const auto& [n, t] : tensors) out.emplace_back(n, t.view());
  return out;
}

// `trained`: the whole model (a loadable checkpoint), or with state tuning / LoRA the tuned
// tensors only.
void save_checkpoint(const TrainOptions& o, const NamedTensors& trained, AdamW& adam, int64_t done,
                     const nlohmann::json& identity) {
  const std::string tag = "ckpt-" + std::to_string(done);
  const std::string weights = tag + ".pth", optim = tag + ".optim.safetensors";
  write_pth(in_dir(o, weights), trained);
  NamedTensors moments;
  for (auto& [n, m] : adam.first_moments()) moments.emplace_back("m." + n, m.view());
  for (auto& [n, v] : adam.second_moments()) moments.emplace_back("v." + n, v.view());
  write_safetensors(in_dir(o, optim), moments,
                    {{"adam_steps", std::to_string(adam.steps_taken())}});
  // The pointer is written last: a kill before this line leaves the previous checkpoint valid.
  nlohmann::json ptr = {
      {"steps_done", done}, {"weights", weights}, {"optimizer", optim}, {"run", identity}};
  std::string previous;
  try {
    const nlohmann::json old = read_pointer(in_dir(o, "checkpoint.json"));
    if (old.is_object() && old.contains("weights") && old["weights"].is_string())
      previous = old["weights"].get<std::string>();
  } catch (const Error&) {  // no previous pointer, or one we cannot trust: nothing to delete
  }
  write_file_atomic(in_dir(o, "checkpoint.json"), [&](std::ostream& out) { out << ptr.dump(2); });
  // Only a file this run's naming scheme made, inside the output folder, is deleted.
  if (previous != weights && is_checkpoint_name(previous, ".pth")) {
    std::error_code ec;
    fs::remove(in_dir(o, previous), ec);
    fs::remove(in_dir(o, previous.substr(0, previous.size() - 4) + ".optim.safetensors"), ec);
  }
}

// Restores parameters (or, with `tuned`, only those tensors) and moments; returns the number of
// steps already done.
int64_t load_checkpoint(const TrainOptions& o, TrainParams& params, TensorMap* tuned, AdamW& adam,
                        const nlohmann::json& identity,
                        const std::function<void(const std::string&)>& say) {
  const std::string ptr_path = in_dir(o, "checkpoint.json");
  const nlohmann::json ptr = read_pointer(ptr_path);
  auto field = [&](const char* key) -> const nlohmann::json& {
    if (!ptr.is_object() || !ptr.contains(key)) {
      throw Error(ptr_path + ": malformed checkpoint pointer: key '" + key + "' is missing");
    }
    return ptr[key];
  };
  auto file_field = [&](const char* key, const char* ext) {
    const nlohmann::json& v = field(key);
    if (!v.is_string() || !is_checkpoint_name(v.get<std::string>(), ext)) {
      throw Error(ptr_path + ": malformed checkpoint pointer: '" + key + "' must name a ckpt-N" +
                  ext + " file in the output folder (got " + v.dump() + ")");
    }
    return in_dir(o, v.get<std::string>());
  };
  const nlohmann::json& run = field("run");
  if (!run.is_object())
    throw Error(ptr_path + ": malformed checkpoint pointer: 'run' is not an object");
  for (auto it = identity.begin(); it != identity.end(); ++it) {
    if (!run.contains(it.key()) || run[it.key()] != it.value()) {
      throw Error(ptr_path + ": checkpoint was made with " + it.key() + " = " +
                  (run.contains(it.key()) ? run[it.key()].dump() : "?") + ", this run has " +
                  it.value().dump() + "; --resume needs the same settings");
    }
  }
  // Settings written only when used (a curriculum, several processes, ...) must be used again.
  for (auto it = run.begin(); it != run.end(); ++it) {
    if (!identity.contains(it.key()))
      throw Error(ptr_path + ": checkpoint was made with " + it.key() + " = " + it.value().dump() +
                  ", this run has none; --resume needs the same settings");
  }
  const nlohmann::json& steps = field("steps_done");
  if (!steps.is_number_integer() || steps.get<int64_t>() < 0) {
    throw Error(ptr_path + ": malformed checkpoint pointer: 'steps_done' is not a step count");
  }
  const int64_t done = steps.get<int64_t>();
  const std::string weights_path = file_field("weights", ".pth");
  const std::string optim_path = file_field("optimizer", ".optim.safetensors");
  if (tuned) {
    const TensorFile f = read_tensor_file(weights_path);
    for (auto& [n, t] : *tuned) {
      if (!f.has(n) || f.get(n).shape != t.shape)
        throw Error(weights_path + ": tensor '" + n + "' missing or of another shape");
      t.data = to_f32(f.get(n));
    }
  } else {
    TrainParams saved = params_from_file(read_tensor_file(weights_path));
    for (auto& [n, t] : params.tensors) {
      auto it = saved.tensors.find(n);
      if (it == saved.tensors.end() || it->second.shape != t.shape) {
        throw Error(weights_path + ": tensor '" + n + "' missing or of another shape");
      }
      t = it->second;
    }
  }
  TensorFile mf = read_safetensors(optim_path);
  auto moment = [&](const std::string& name, const Shape& shape) {
    const TensorView& v = mf.get(name);
    if (v.shape != shape) {
      throw Error(optim_path + ": tensor '" + name + "' has shape " + shape_str(v.shape) +
                  ", expected " + shape_str(shape));
    }
    return to_f32(v);
  };
  for (auto& [n, m] : adam.first_moments()) m.data = moment("m." + n, m.shape);
  for (auto& [n, v] : adam.second_moments()) v.data = moment("v." + n, v.shape);
  const auto steps_it = mf.metadata.find("adam_steps");
  int64_t adam_steps = -1;
  if (steps_it != mf.metadata.end()) {
    try {
      size_t used = 0;
      adam_steps = std::stoll(steps_it->second, &used);
      if (used != steps_it->second.size()) adam_steps = -1;
    } catch (const std::exception&) {
    }
  }
  if (adam_steps < 0) throw Error(optim_path + ": metadata 'adam_steps' is missing or not a count");
  adam.set_steps_taken(adam_steps);
  say("resumed from " + ptr_path + " after step " + std::to_string(done));
  return done;
}

// Removes "<name>.tmp.<pid>" files that write_file_atomic left in `dir` when a process was
// killed mid-write: only those whose process is gone (and never the files they would have
// replaced).
void remove_orphan_temps(const std::string& dir,
                         const std::function<void(const std::string&)>& say) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const size_t at = name.rfind(".tmp.");
    if (at == std::string::npos || at == 0 || !e.is_regular_file(ec)) continue;
    const std::string pid_text = name.substr(at + 5);
    if (pid_text.empty() || pid_text.size() > 9 ||
        pid_text.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    const pid_t pid = pid_t(std::stol(pid_text));
    if (pid > 0 && (::kill(pid, 0) == 0 || errno != ESRCH)) continue;  // still alive (or unknown)
    if (fs::remove(e.path(), ec)) say("removed " + e.path().string() + " (left by a killed run)");
  }
}

std::shared_ptr<const Model> model_of(const TrainParams& params, int threads) {
  LoadOptions lo;
  lo.threads = threads;
  return ModelFactory::from_tensors(params_as_file(params, "model being trained"), lo);
}

// `val`: the held-out tokens, their first `limit` (0 = all) copied once by the caller. Whole
// stream from zeros; with a tuned start state, rows of `ctx` as in training, each from it.
double validation_loss(const TrainParams& params, const std::vector<int32_t>& val, int threads,
                       const State* start, int64_t ctx) {
  if (val.size() < 2) return std::nan("");
  auto model = model_of(params, threads);
  if (!start) return evaluate_loss(*model, val).loss;
  if (int64_t(val.size()) < ctx + 1) return std::nan("");
  return evaluate_rows(*model, val, ctx, start).loss;
}

void truncate_json_log(const std::string& path, int64_t from_step) {
  std::ifstream in(path);
  if (!in) return;
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      const nlohmann::json step = nlohmann::json::parse(line).at("step");
      if (step.is_number_integer() && step.get<int64_t>() < from_step) kept += line + "\n";
    } catch (const nlohmann::json::exception&) {
    }
  }
  in.close();
  write_file_atomic(path, [&](std::ostream& out) { out << kept; });
}

// This rank's share of a micro-batch: rows [r·B/P, (r+1)·B/P) (B divisible by P).
std::vector<std::vector<int32_t>> rank_rows(std::vector<std::vector<int32_t>> rows,
                                            const DataParallel& dp) {
  if (dp.size() == 1) return rows;
  const size_t per = rows.size() / size_t(dp.size()), first = per * size_t(dp.rank());
  return {std::make_move_iterator(rows.begin() + long(first)),
          std::make_move_iterator(rows.begin() + long(first + per))};
}

// Steps between checks that every rank still holds the same weights (also after the first
// step and the last).
constexpr int64_t kWeightCheckEvery = 100;

}  // namespace

TrainSummary run_training(const TrainOptions& o,
                          const std::function<void(const StepReport&)>& on_step,
                          const std::function<void(const std::string&)>& say) {
  if (o.out_dir.empty()) throw Error("train: -o OUT (output folder) is required");
  if (o.steps < 1 || o.accum < 1) throw Error("train: --steps and --accum must be at least 1");
  if (!(o.lr_init > 0) || !(o.lr_final > 0)) throw Error("train: learning rates must be positive");
  product_precision(o.precision, "train: --precision");  // refused before any work
  if (!(o.dropout >= 0 && o.dropout < 1))
    throw Error("train: --dropout must be in [0, 1) (got " + std::to_string(o.dropout) + ")");
  if (o.save_dtype != "f32" && o.save_dtype != "bf16" && o.save_dtype != "f16")
    throw Error("train: --save-dtype must be f32, bf16 or f16");
  const bool tune_state = o.tune == "state";
  if (o.tune != "all" && !tune_state) throw Error("train: --tune must be all or state");
  if (tune_state && o.carry_state)
    throw Error(
        "train: with --tune state every row starts from the tuned state: --carry-state "
        "cannot be used");
  const bool tune_lora = o.lora_rank > 0;
  if (tune_lora && tune_state)
    throw Error("train: --lora-rank and --tune state exclude each other");
  if (o.lora_rank < 0) throw Error("train: --lora-rank must be positive (0 = no LoRA)");
  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (ec || !fs::is_directory(o.out_dir, ec)) {
    throw Error(o.out_dir + ": cannot create the output folder (" +
                (ec ? ec.message() : std::string("a file of that name exists")) + ")");
  }
  // Ranks of a data-parallel run: each takes batch / P rows of every micro-batch; rank 0
  // alone writes files and reports.
  DataParallel dp;
  if (dp.size() > 1) {
    if (o.batch % dp.size() != 0)
      throw Error("train: --batch " + std::to_string(o.batch) + " does not split evenly over " +
                  std::to_string(dp.size()) + " processes");
    if (o.carry_state || !o.ctx_schedule.empty())
      throw Error("train: --carry-state and --ctx-schedule do not run across processes yet");
  }
  const auto root_say = [&](const std::string& m) {
    if (dp.is_root()) say(m);
  };
  if (dp.is_root()) remove_orphan_temps(o.out_dir, say);
  dp.barrier();  // no rank starts before rank 0 cleared the folder

  Tokenizer tok = o.vocab.empty() ? Tokenizer::bytes() : Tokenizer::load_world(o.vocab);
  TokenData data = load_token_data(o.data, tok);
  Split split = split_tail(data.tokens, o.val_fraction);
  const std::string train_what = "training data (after the " +
                                 std::to_string(int(o.val_fraction * 100)) + "% validation split)";
  // The data of each step: one Batcher per curriculum stage (one stage without a schedule), or
  // the rows' own continuous streams with --carry-state.
  const std::vector<CtxStage> stages = o.ctx_schedule.empty() ? std::vector<CtxStage>{{o.ctx, 0}}
                                                              : parse_ctx_schedule(o.ctx_schedule);
  if (o.carry_state && stages.size() > 1)
    throw Error("train: --carry-state and --ctx-schedule cannot be combined yet");
  std::vector<Batcher> batchers;
  for (const CtxStage& st : stages)
    batchers.emplace_back(split.train, batch_for_ctx(o.batch, o.ctx, st.ctx), st.ctx, o.shuffle,
                          o.seed, train_what, !o.ctx_schedule.empty());
  std::optional<StreamBatcher> streams;
  if (o.carry_state) streams.emplace(split.train, o.batch * o.accum, o.ctx, train_what);
  if (o.replay > 0 && !o.carry_state) throw Error("train: --replay needs --carry-state");
  std::optional<ReplayStreams> replay;
  if (o.replay > 0) replay.emplace(split.train, o.batch * o.accum, o.ctx, o.replay, o.seed);
  std::vector<State> remembered(replay ? size_t(replay->capacity()) : 0);  // per replay slot
  std::vector<int64_t> replay_plan;
  root_say("data: " + data.description + "; " + std::to_string(split.train.size()) + " train, " +
           std::to_string(split.val.size()) + " validation tokens");
  const std::vector<int32_t> val_tokens =
      split.val
          .slice(0, o.val_tokens > 0 ? std::min(o.val_tokens, split.val.size()) : split.val.size())
          .to_vector();

  TrainParams params = initial_params(o);
  const ModelConfig& cfg = params.config;
  if (const int64_t top = data.tokens.max_token("training data"); top >= cfg.vocab_size) {
    throw Error("data has token " + std::to_string(top) + " but the model's vocabulary is " +
                std::to_string(cfg.vocab_size) + (o.vocab.empty() ? " (bytes need V >= 256)" : ""));
  }
  // --tune state: only the start state is trained; every row starts from it.
  TensorMap time_states = tune_state ? zero_time_states(cfg) : TensorMap{};
  // --lora-rank: only the adapters are trained; params hold the merged matrices.
  std::optional<LoraTuning> lora;
  if (tune_lora)
    lora.emplace(params, o.lora_rank, o.lora_alpha > 0 ? o.lora_alpha : double(o.lora_rank),
                 o.seed);
  TensorMap& trainable = tune_state ? time_states : tune_lora ? lora->adapters() : params.tensors;
  TensorMap state_grads, lora_grads;
  // Only the adapted matrices' gradients are needed for LoRA, and no weight's for state tuning.
  const std::function<bool(std::string_view)> frozen = [&](std::string_view name) {
    return tune_state || !is_lora_target(std::string(name));
  };
  std::vector<State> row_starts, d_row_starts;
  int64_t trainable_values = 0;
  for (const auto& [n, t] : trainable) trainable_values += int64_t(t.data.size());
  root_say("training " + std::to_string(trainable_values) + " values (" +
           (tune_state  ? "the start state"
            : tune_lora ? "LoRA adapters"
                        : "every weight") +
           ")");
  AdamWOptions ao;
  ao.weight_decay = o.weight_decay;
  AdamW adam(trainable, ao);
  Schedule sched{o.lr_init, o.lr_final, o.warmup, o.steps};
  const nlohmann::json identity = run_identity(o, data, cfg, dp.size());

  int64_t start = 0;
  std::vector<LogRow> log;
  const std::string csv = in_dir(o, "log.csv"), svg = in_dir(o, "loss.svg");
  if (o.resume) {
    start = load_checkpoint(o, params, tune_state || tune_lora ? &trainable : nullptr, adam,
                            identity, root_say);
    if (tune_lora) lora->apply(params);
    for (const LogRow& r : read_log_csv(csv))
      if (r.step < start) log.push_back(r);
    if (!o.log_json.empty() && dp.is_root()) truncate_json_log(o.log_json, start);
  } else if (!o.log_json.empty() && dp.is_root()) {
    write_file_atomic(o.log_json, [](std::ostream&) {});
  }
  if (start >= o.steps) root_say("nothing to do: " + std::to_string(start) + " steps already done");

  ThreadPool pool(o.threads);
  const ProductPrecision precision = product_precision(o.precision, "train: --precision");
  auto backend = make_cpu_backend(&pool, precision);
  // bf16 products training every weight: they read bf16 copies of the weights, which AdamW
  // rewrites as it updates them (half the bytes of rounding the fp32 values at every product;
  // the same products). LoRA and state tuning round the (merged or frozen) weights as they go.
  const bool keep_bf16 = precision == ProductPrecision::BF16 && !tune_state && !tune_lora;
  if (keep_bf16) params.keep_bf16_weights();
  GradOptions go;
  go.l2wrap = o.l2wrap;
  go.segment = o.segment;
  go.truncate_bptt = o.truncate_bptt;
  go.checkpoint_layers = o.checkpoint_layers;
  go.dropout = float(o.dropout);
  if (tune_state || tune_lora) go.frozen = &frozen;
  std::ofstream json_log;
  if (!o.log_json.empty() && dp.is_root()) json_log.open(o.log_json, std::ios::app);
  const double elapsed_before = log.empty() ? 0 : log.back().elapsed_s;
  const auto t0 = Clock::now();
  TrainSummary sum;
  sum.rank = dp.rank();
  sum.ranks = dp.size();
  sum.trainable_values = trainable_values;
  TrainWorkspace ws;
  GradResult acc, micro;
  // --carry-state: per micro-batch, the rows' states where their previous step ended.
  std::vector<std::vector<State>> carried(size_t(o.accum)), ended(size_t(o.accum));
  size_t stage = stages.size();
  for (int64_t s = start; s < o.steps; ++s) {
    const auto ts = Clock::now();
    const double lr = sched.lr_at(s);
    const size_t k = stage_at(stages, s);
    const int64_t ctx = stages[k].ctx, batch = batch_for_ctx(o.batch, o.ctx, ctx);
    if (k != stage && !o.ctx_schedule.empty())
      root_say("step " + std::to_string(s + 1) + ": context " + std::to_string(ctx) + ", batch " +
               std::to_string(batch));
    stage = k;
    for (int64_t a = 0; a < o.accum; ++a) {
      // Buffers and gradient tensors are reused from step to step (no allocation per step).
      GradResult& r = a == 0 ? acc : micro;
      go.dropout_seed = Dropout::step_seed(o.seed, s, a);
      if (streams) {
        std::vector<State>& from = carried[size_t(a)];
        std::vector<std::vector<int32_t>> rows;
        if (replay) {
          if (a == 0) {  // every stream's plan, and the remembered states, before any advances
            replay_plan = replay->plan(s);
            for (size_t i = 0; i < replay_plan.size(); ++i) {
              std::vector<State>& mb = carried[i / size_t(o.batch)];
              if (replay_plan[i] >= 0 && !mb.empty())
                mb[i % size_t(o.batch)] = remembered[size_t(replay_plan[i])];
            }
          }
          for (int64_t b = 0; b < o.batch; ++b) rows.push_back(replay->row(a * o.batch + b));
        } else {
          rows = streams->rows(s, a * o.batch, o.batch);
        }
        go.initial_states = from.empty() ? nullptr : &from;
        go.final_states = &ended[size_t(a)];
        loss_and_gradients(params, rows, *backend, &pool, go, ws, r);
        std::swap(from, ended[size_t(a)]);
        if (replay)
          for (int64_t b = 0; b < o.batch; ++b)
            remembered[size_t(replay->advance(a * o.batch + b))] = from[size_t(b)];
      } else {
        std::vector<std::vector<int32_t>> all_rows = batchers[k].rows(s * o.accum + a);
        go.dropout_first_row =
            dp.size() == 1 ? 0 : int64_t(all_rows.size()) / dp.size() * dp.rank();
        std::vector<std::vector<int32_t>> rows = rank_rows(std::move(all_rows), dp);
        if (tune_state) {
          start_states(time_states, cfg, int64_t(rows.size()), row_starts);
          go.initial_states = &row_starts;
          go.initial_state_grads = &d_row_starts;
        }
        loss_and_gradients(params, rows, *backend, &pool, go, ws, r);
        if (tune_state) add_time_state_grads(d_row_starts, cfg, a == 0, state_grads);
      }
      if (a > 0) {
        acc.loss += r.loss;
        if (!tune_state)
          for (auto& [n, g] : acc.grads)
            for (size_t i = 0; i < g.data.size(); ++i) g.data[i] += r.grads.at(n).data[i];
      }
    }
    TensorMap& step_grads = tune_state ? state_grads : tune_lora ? lora_grads : acc.grads;
    if (o.accum > 1) {
      acc.loss /= double(o.accum);
      for (auto& [n, g] : tune_lora ? acc.grads : step_grads)
        for (float& x : g.data) x /= float(o.accum);
    }
    if (tune_lora) lora->gradients(acc.grads, lora_grads);
    dp.average(acc.loss, step_grads);  // every rank now holds the whole batch's mean
    if (!std::isfinite(acc.loss))
      throw Error("loss became " + std::to_string(acc.loss) + " at step " + std::to_string(s) +
                  "; lower --lr-init");
    const double norm = grad_norm(step_grads, &pool);  // clipped inside the step
    adam.step(trainable, step_grads, lr, &pool, clip_scale(norm, o.grad_clip),
              keep_bf16 ? &params.bf16_weights : nullptr);
    if (tune_lora) lora->apply(params);
    if (dp.size() > 1 && (s == start || (s + 1) % kWeightCheckEvery == 0 || s + 1 == o.steps))
      dp.check_same(fingerprint(trainable), s + 1);

    const double step_s = std::chrono::duration<double>(Clock::now() - ts).count();
    const double elapsed =
        elapsed_before + std::chrono::duration<double>(Clock::now() - t0).count();
    LogRow row{s, acc.loss, lr, norm, double(batch * o.accum * ctx) / step_s, elapsed, {}};
    const bool last = s + 1 == o.steps;
    const bool pause = !last && o.stop_after > 0 && s + 1 == o.stop_after;
    if (dp.is_root() && (last || (o.val_every > 0 && (s + 1) % o.val_every == 0))) {
      // Same held-out prefix every time, so the curve compares like with like; `rwkv7 eval` on
      // the held-out file gives the loss over all of it.
      const State start = tune_state ? state_from_time_states(time_states, cfg) : State{};
      row.val_loss =
          validation_loss(params, val_tokens, o.threads, tune_state ? &start : nullptr, ctx);
    }
    log.push_back(row);
    if (json_log) {
      nlohmann::json j{{"step", s}, {"loss", acc.loss}, {"lr", lr}, {"grad_norm", norm}};
      if (dp.size() > 1) j["ranks"] = dp.size();
      if (o.precision != "fp32") j["precision"] = o.precision;
      json_log << j.dump() << "\n";
      json_log.flush();
    }
    if (!dp.is_root()) {  // rank 0 writes the log, checkpoints and model; the others only train
    } else if (last || pause || (o.save_every > 0 && (s + 1) % o.save_every == 0)) {
      // The log first: a kill between the two leaves rows past the pointer, which a resume
      // drops; the other order would lose the rows of the steps the pointer covers.
      write_log_csv(csv, log);
      save_checkpoint(o, tune_state || tune_lora ? views_of(trainable) : param_views(params), adam,
                      s + 1, identity);
      write_loss_svg(svg, log, "rwkv7 train: " + cfg.shape_string());
    } else if (row.val_loss) {
      write_log_csv(csv, log);
      write_loss_svg(svg, log, "rwkv7 train: " + cfg.shape_string());
    }
    StepReport rep{
        s,           o.steps,
        ctx,         batch,
        acc.loss,    lr,
        norm,        row.tokens_per_s,
        elapsed,     double(o.steps - s - 1) * (elapsed - elapsed_before) / double(s - start + 1),
        row.val_loss};
    if (on_step && dp.is_root()) on_step(rep);
    sum.steps_done = s + 1;
    sum.last_loss = acc.loss;
    if (row.val_loss) sum.final_val_loss = row.val_loss;
    if (pause) {
      root_say("stopped after step " + std::to_string(s + 1) + " as asked; --resume continues");
      return sum;
    }
  }
  if (!dp.is_root()) return sum;  // rank 0 writes the result
  if (tune_state) {               // the weights did not change: the result is the start state
    sum.state_path = in_dir(o, "state.safetensors");
    save_state(sum.state_path, state_from_time_states(time_states, cfg),
               *model_of(params, o.threads));
    return sum;
  }
  if (tune_lora) {  // the adapters; `rwkv7 lora merge` or --lora applies them
    sum.lora_path = in_dir(o, "lora.safetensors");
    write_lora(sum.lora_path, lora->adapter_set());
    return sum;
  }
  // The final model in the official layout, in the requested dtype.
  sum.model_path = in_dir(o, "model.pth");
  NamedTensors views = param_views(params);
  std::vector<std::vector<uint16_t>> narrow;
  if (o.save_dtype != "f32") {
    narrow.reserve(views.size());
    for (auto& [n, v] : views) {
      const float* src = static_cast<const float*>(v.data);
      narrow.emplace_back(size_t(v.numel()));
      for (size_t i = 0; i < narrow.back().size(); ++i)
        narrow.back()[i] = o.save_dtype == "bf16" ? f32_to_bf16(src[i]) : f32_to_f16(src[i]);
      v = TensorView{o.save_dtype == "bf16" ? DType::BF16 : DType::F16, v.shape,
                     narrow.back().data()};
    }
  }
  write_pth(sum.model_path, views);
  return sum;
}

}  // namespace rwkv7::train
