// The engine's Model: immutable weights shared by any number of threads; the work of a call
// runs on the caller's Context.
#include <cmath>
#include <mutex>

#include "core/thread_pool.hpp"
#include "engine/context_impl.hpp"
#include "engine/lora_internal.hpp"
#include "engine/model_impl.hpp"
#include "engine/model_internal.hpp"
#include "io/tensor_io.hpp"
#include "model/forward.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

std::shared_ptr<const Model> Model::load(const std::string& path, const LoadOptions& opts) {
  if (!opts.lora.empty()) {
    TensorFile base = read_tensor_file(path);
    const LoraAdapters adapters = read_lora(opts.lora, base);
    return ModelFactory::from_tensors(merge_lora(std::move(base), adapters), opts);
  }
  return ModelFactory::from_tensors(read_tensor_file(path), opts);
}

std::shared_ptr<const Model> ModelFactory::from_tensors(TensorFile file, const LoadOptions& opts) {
  if (opts.chunk < 1)
    throw Error("chunk must be at least 1 (got " + std::to_string(opts.chunk) + ")");
  checked_threads(opts.threads);  // the model's own Context is made on first use
  if (opts.precision != "fp32" && opts.precision != "bf16")
    throw Error("precision must be fp32 or bf16 (got \"" + opts.precision + "\")");
  auto impl = std::make_unique<Model::Impl>();
  impl->path = file.path;
  impl->w = build_weights(std::move(file));
  if (opts.backend == BackendKind::Cpu) {  // products read panels packed once, here
    ThreadPool pool(opts.threads);
    prepare_for_cpu(impl->w, pool, opts.precision == "bf16");
    impl->bf16_products = impl->w.head.cpu_pair_panels != nullptr;
    for (const LayerWeights& L : impl->w.layers)
      impl->bf16_products = impl->bf16_products || L.ffn_key.cpu_pair_panels != nullptr;
  }
  impl->chunk = opts.chunk;
  impl->backend = opts.backend;
  impl->threads = opts.threads;
  return std::shared_ptr<const Model>(new Model(std::move(impl)));
}

const ModelConfig& Model::config() const { return impl_->w.config; }
const std::string& Model::path() const { return impl_->path; }
int Model::threads() const { return impl_->threads; }
std::string Model::weight_dtype() const { return dtype_name(impl_->w.matrix_dtype); }
std::string Model::product_precision() const { return impl_->bf16_products ? "bf16" : "fp32"; }
int64_t Model::parameter_count() const { return impl_->w.parameter_count; }
const std::string& Model::fingerprint() const { return impl_->w.fingerprint; }
int64_t Model::decode_bytes_per_token() const { return impl_->w.decode_bytes; }
double Model::flops_per_token() const { return impl_->w.flops; }
double Model::head_flops() const { return impl_->w.head_flops; }

std::vector<Model::TensorReport> Model::inspect_tensors() const {
  std::vector<TensorReport> out;
  const TensorFile& f = impl_->w.file;
  for (const std::string& name : f.order) {
    const TensorView& v = f.get(name);
    TensorReport r{name, dtype_name(v.dtype), v.shape, 0};
    for (int64_t i = 0; i < v.numel(); ++i)
      if (!std::isfinite(load_as_f32(v.dtype, v.data, size_t(i)))) ++r.nonfinite;
    out.push_back(std::move(r));
  }
  return out;
}

State Model::new_state() const {
  const ModelConfig& c = config();
  State s;
  s.n_layer = c.n_layer;
  s.n_embd = c.n_embd;
  s.n_head = c.n_head;
  s.head_size = c.head_size;
  s.att_shift.assign(size_t(c.n_layer * c.n_embd), 0.0f);
  s.ffn_shift.assign(size_t(c.n_layer * c.n_embd), 0.0f);
  s.wkv.assign(size_t(c.n_layer * c.n_head * c.head_size * c.head_size), 0.0f);
  s.model_fingerprint = fingerprint();
  return s;
}

void Model::check_state(const State& state) const {
  rwkv7::check_state(state, config(), fingerprint());
}

void Model::forward(Context& ctx, std::span<SequenceRequest> batch) const {
  Context::Impl& c = ContextAccess::impl(ctx);
  run_forward(impl_->w, c.backend(impl_->backend), impl_->chunk, c.scratch, batch);
}

void Model::forward(Context& ctx, std::span<const int32_t> tokens, State& state, Logits which,
                    std::vector<float>& logits_out) const {
  SequenceRequest q{tokens, &state, which, &logits_out};
  forward(ctx, std::span<SequenceRequest>(&q, 1));
}

std::vector<float> Model::forward(Context& ctx, std::span<const int32_t> tokens, State& state,
                                  Logits which) const {
  std::vector<float> out;
  forward(ctx, tokens, state, which, out);
  return out;
}

void Model::forward(std::span<SequenceRequest> batch) const {
  std::lock_guard<std::mutex> lock(impl_->own_mutex);
  if (!impl_->own_context) impl_->own_context = std::make_unique<Context>(impl_->threads);
  forward(*impl_->own_context, batch);
}

std::vector<float> Model::forward(std::span<const int32_t> tokens, State& state,
                                  Logits which) const {
  std::vector<float> out;
  SequenceRequest q{tokens, &state, which, &out};
  forward(std::span<SequenceRequest>(&q, 1));
  return out;
}

}  // namespace rwkv7
