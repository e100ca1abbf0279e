#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/atomic_write.hpp"
#include "core/thread_pool.hpp"
#include "engine/init_internal.hpp"
#include "engine/model_internal.hpp"
#include "io/tensor_io.hpp"
#include "model/backward.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/evaluate.hpp"
#include "rwkv7/train.hpp"
#include "train/data.hpp"
#include "train/optimizer.hpp"
#include "train/report.hpp"

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
nlohmann::json run_identity(const TrainOptions& o, const TokenData& data, const ModelConfig& c) {
  return {{"model_shape", c.shape_string()},
          {"batch", o.batch},
          {"ctx", o.ctx},
          {"accum", o.accum},
          {"seed", o.seed},
          {"shuffle", o.shuffle},
          {"data", data.description},
          {"vocab", o.vocab.empty() ? "bytes" : "world"},
          {"val_fraction", o.val_fraction}};
}

std::string in_dir(const TrainOptions& o, const std::string& name) {
  return (fs::path(o.out_dir) / name).string();
}

void save_checkpoint(const TrainOptions& o, const TrainParams& params, AdamW& adam, int64_t done,
                     const nlohmann::json& identity) {
  const std::string tag = "ckpt-" + std::to_string(done);
  const std::string weights = tag + ".pth", optim = tag + ".optim.safetensors";
  write_pth(in_dir(o, weights), param_views(params));
  NamedTensors moments;
  for (auto& [n, m] : adam.first_moments()) moments.emplace_back("m." + n, m.view());
  for (auto& [n, v] : adam.second_moments()) moments.emplace_back("v." + n, v.view());
  write_safetensors(in_dir(o, optim), moments,
                    {{"adam_steps", std::to_string(adam.steps_taken())}});
  // The pointer is written last: a kill before this line leaves the previous checkpoint valid.
  nlohmann::json ptr = {
      {"steps_done", done}, {"weights", weights}, {"optimizer", optim}, {"run", identity}};
  std::string previous;
  if (std::ifstream in(in_dir(o, "checkpoint.json")); in) {
    try {
      previous = nlohmann::json::parse(in).value("weights", "");
    } catch (const nlohmann::json::exception&) {
    }
  }
  write_file_atomic(in_dir(o, "checkpoint.json"), [&](std::ostream& out) { out << ptr.dump(2); });
  if (!previous.empty() && previous != weights) {
    std::error_code ec;
    fs::remove(in_dir(o, previous), ec);
    fs::remove(in_dir(o, previous.substr(0, previous.size() - 4) + ".optim.safetensors"), ec);
  }
}

// Restores parameters and moments; returns the number of steps already done.
int64_t load_checkpoint(const TrainOptions& o, TrainParams& params, AdamW& adam,
                        const nlohmann::json& identity,
                        const std::function<void(const std::string&)>& say) {
  const std::string ptr_path = in_dir(o, "checkpoint.json");
  std::ifstream in(ptr_path);
  if (!in) throw Error(ptr_path + ": no checkpoint to resume from");
  nlohmann::json ptr;
  try {
    ptr = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ptr_path + ": unreadable (" + e.what() + ")");
  }
  const nlohmann::json& run = ptr.at("run");
  for (auto it = identity.begin(); it != identity.end(); ++it) {
    if (!run.contains(it.key()) || run[it.key()] != it.value()) {
      throw Error(ptr_path + ": checkpoint was made with " + it.key() + " = " +
                  (run.contains(it.key()) ? run[it.key()].dump() : "?") + ", this run has " +
                  it.value().dump() + "; --resume needs the same settings");
    }
  }
  TrainParams saved = params_from_file(read_tensor_file(in_dir(o, ptr.at("weights"))));
  for (auto& [n, t] : params.tensors) {
    auto it = saved.tensors.find(n);
    if (it == saved.tensors.end() || it->second.shape != t.shape) {
      throw Error(in_dir(o, ptr.at("weights")) + ": tensor '" + n +
                  "' missing or of another shape");
    }
    t = it->second;
  }
  TensorFile mf = read_safetensors(in_dir(o, ptr.at("optimizer")));
  for (auto& [n, m] : adam.first_moments()) m.data = to_f32(mf.get("m." + n));
  for (auto& [n, v] : adam.second_moments()) v.data = to_f32(mf.get("v." + n));
  adam.set_steps_taken(std::stoll(mf.metadata.at("adam_steps")));
  const int64_t done = ptr.at("steps_done").get<int64_t>();
  say("resumed from " + ptr_path + " after step " + std::to_string(done));
  return done;
}

double validation_loss(const TrainParams& params, const std::vector<int32_t>& val, int64_t limit,
                       int threads) {
  if (val.size() < 2) return std::nan("");
  LoadOptions lo;
  lo.threads = threads;
  auto model = ModelFactory::from_tensors(params_as_file(params, "model being trained"), lo);
  std::span<const int32_t> span(val);
  if (limit > 0 && int64_t(span.size()) > limit) span = span.first(size_t(limit));
  return evaluate_loss(*model, span).loss;
}

void truncate_json_log(const std::string& path, int64_t from_step) {
  std::ifstream in(path);
  if (!in) return;
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).at("step").get<int64_t>() < from_step) kept += line + "\n";
    } catch (const nlohmann::json::exception&) {
    }
  }
  in.close();
  write_file_atomic(path, [&](std::ostream& out) { out << kept; });
}

}  // namespace

TrainSummary run_training(const TrainOptions& o,
                          const std::function<void(const StepReport&)>& on_step,
                          const std::function<void(const std::string&)>& say) {
  if (o.out_dir.empty()) throw Error("train: -o OUT (output folder) is required");
  if (o.steps < 1 || o.accum < 1) throw Error("train: --steps and --accum must be at least 1");
  if (!(o.lr_init > 0) || !(o.lr_final > 0)) throw Error("train: learning rates must be positive");
  if (o.save_dtype != "f32" && o.save_dtype != "bf16" && o.save_dtype != "f16")
    throw Error("train: --save-dtype must be f32, bf16 or f16");
  fs::create_directories(o.out_dir);

  Tokenizer tok = o.vocab.empty() ? Tokenizer::bytes() : Tokenizer::load_world(o.vocab);
  TokenData data = load_token_data(o.data, tok);
  Split split = split_tail(data.tokens, o.val_fraction);
  Batcher batcher(split.train, o.batch, o.ctx, o.shuffle, o.seed,
                  "training data (after the " + std::to_string(int(o.val_fraction * 100)) +
                      "% validation split)");
  say("data: " + data.description + "; " + std::to_string(split.train.size()) + " train, " +
      std::to_string(split.val.size()) + " validation tokens");

  TrainParams params = initial_params(o);
  const ModelConfig& cfg = params.config;
  for (int32_t t : data.tokens) {
    if (t >= cfg.vocab_size) {
      throw Error("data has token " + std::to_string(t) + " but the model's vocabulary is " +
                  std::to_string(cfg.vocab_size) +
                  (o.vocab.empty() ? " (bytes need V >= 256)" : ""));
    }
  }
  AdamWOptions ao;
  ao.weight_decay = o.weight_decay;
  AdamW adam(params.tensors, ao);
  Schedule sched{o.lr_init, o.lr_final, o.warmup, o.steps};
  const nlohmann::json identity = run_identity(o, data, cfg);

  int64_t start = 0;
  std::vector<LogRow> log;
  const std::string csv = in_dir(o, "log.csv"), svg = in_dir(o, "loss.svg");
  if (o.resume) {
    start = load_checkpoint(o, params, adam, identity, say);
    for (const LogRow& r : read_log_csv(csv))
      if (r.step < start) log.push_back(r);
    if (!o.log_json.empty()) truncate_json_log(o.log_json, start);
  } else if (!o.log_json.empty()) {
    write_file_atomic(o.log_json, [](std::ostream&) {});
  }
  if (start >= o.steps) say("nothing to do: " + std::to_string(start) + " steps already done");

  ThreadPool pool(o.threads);
  auto backend = make_cpu_backend(&pool);
  GradOptions go;
  go.l2wrap = o.l2wrap;
  std::ofstream json_log;
  if (!o.log_json.empty()) json_log.open(o.log_json, std::ios::app);
  const double elapsed_before = log.empty() ? 0 : log.back().elapsed_s;
  const auto t0 = Clock::now();
  TrainSummary sum;
  TrainWorkspace ws;
  GradResult acc, micro;
  for (int64_t s = start; s < o.steps; ++s) {
    const auto ts = Clock::now();
    const double lr = sched.lr_at(s);
    for (int64_t a = 0; a < o.accum; ++a) {
      // Buffers and gradient tensors are reused from step to step (no allocation per step).
      GradResult& r = a == 0 ? acc : micro;
      loss_and_gradients(params, batcher.rows(s * o.accum + a), *backend, &pool, go, ws, r);
      if (a > 0) {
        acc.loss += r.loss;
        for (auto& [n, g] : acc.grads)
          for (size_t i = 0; i < g.data.size(); ++i) g.data[i] += r.grads.at(n).data[i];
      }
    }
    if (o.accum > 1) {
      acc.loss /= double(o.accum);
      for (auto& [n, g] : acc.grads)
        for (float& x : g.data) x /= float(o.accum);
    }
    if (!std::isfinite(acc.loss))
      throw Error("loss became " + std::to_string(acc.loss) + " at step " + std::to_string(s) +
                  "; lower --lr-init");
    const double norm = clip_grad_norm(acc.grads, o.grad_clip);
    adam.step(params.tensors, acc.grads, lr);

    const double step_s = std::chrono::duration<double>(Clock::now() - ts).count();
    const double elapsed =
        elapsed_before + std::chrono::duration<double>(Clock::now() - t0).count();
    LogRow row{s, acc.loss, lr, norm, double(o.batch * o.accum * o.ctx) / step_s, elapsed, {}};
    const bool last = s + 1 == o.steps;
    const bool pause = !last && o.stop_after > 0 && s + 1 == o.stop_after;
    if (last || (o.val_every > 0 && (s + 1) % o.val_every == 0)) {
      // Same held-out prefix every time, so the curve compares like with like; `rwkv7 eval` on
      // the held-out file gives the loss over all of it.
      row.val_loss = validation_loss(params, split.val, o.val_tokens, o.threads);
    }
    log.push_back(row);
    if (json_log) {
      json_log
          << nlohmann::json{{"step", s}, {"loss", acc.loss}, {"lr", lr}, {"grad_norm", norm}}.dump()
          << "\n";
      json_log.flush();
    }
    if (last || pause || (o.save_every > 0 && (s + 1) % o.save_every == 0)) {
      save_checkpoint(o, params, adam, s + 1, identity);
      write_log_csv(csv, log);
      write_loss_svg(svg, log, "rwkv7 train: " + cfg.shape_string());
    } else if (row.val_loss) {
      write_log_csv(csv, log);
      write_loss_svg(svg, log, "rwkv7 train: " + cfg.shape_string());
    }
    StepReport rep{
        s,           o.steps,
        acc.loss,    lr,
        norm,        row.tokens_per_s,
        elapsed,     double(o.steps - s - 1) * (elapsed - elapsed_before) / double(s - start + 1),
        row.val_loss};
    if (on_step) on_step(rep);
    sum.steps_done = s + 1;
    sum.last_loss = acc.loss;
    if (row.val_loss) sum.final_val_loss = row.val_loss;
    if (pause) {
      say("stopped after step " + std::to_string(s + 1) + " as asked; --resume continues");
      return sum;
    }
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
