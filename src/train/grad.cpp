// rwkv7/grad.hpp over the model layer's loss_and_gradients (model/backward.hpp).
#include "rwkv7/grad.hpp"

#include "core/thread_pool.hpp"
#include "io/tensor_io.hpp"
#include "model/backward.hpp"

namespace rwkv7 {

LossAndGradients compute_gradients(const std::string& model_path,
                                   const std::vector<std::vector<int32_t>>& rows,
                                   const GradientOptions& opts) {
  const train::TrainParams params = train::params_from_file(read_tensor_file(model_path));
  ThreadPool pool(opts.threads);
  const ProductPrecision precision = product_precision(opts.precision, "grad: --precision");
  auto backend = opts.backend == BackendKind::Reference ? make_reference_backend(precision)
                                                        : make_cpu_backend(&pool, precision);
  train::GradOptions go;
  go.l2wrap = opts.l2wrap;
  go.wkv_checkpoint = opts.wkv_checkpoint;
  go.segment = opts.segment;
  go.truncate_bptt = opts.truncate_bptt;
  go.checkpoint_layers = opts.checkpoint_layers;
  go.loss_from = opts.loss_from;
  train::GradResult r = train::loss_and_gradients(params, rows, *backend, &pool, go);
  LossAndGradients out;
  out.loss = r.loss;
  out.positions = r.positions;
  out.state_grad_norms = r.state_grad_norms;
  for (const std::string& name : params.names()) {
    FloatTensor& g = r.grads.at(name);
    out.gradients.push_back({name, g.shape, std::move(g.data)});
  }
  return out;
}

}  // namespace rwkv7
