// LoRA adapters: the merge used at load time and by `rwkv7 lora merge`, and the pieces the
// trainer uses (rwkv7/lora.hpp, engine/lora_internal.hpp).
#include "rwkv7/lora.hpp"

#include <cmath>
#include <memory>

#include "core/dtype.hpp"
#include "engine/lora_internal.hpp"
#include "io/tensor_io.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

constexpr const char* kTargets[] = {"att.receptance.weight", "att.key.weight", "att.value.weight",
                                    "att.output.weight",     "ffn.key.weight", "ffn.value.weight"};

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

std::string module_of(const std::string& weight) {
  return weight.substr(0, weight.size() - std::string(".weight").size());
}

}  // namespace

bool is_lora_target(const std::string& weight) {
  if (weight.rfind("blocks.", 0) != 0) return false;
  const size_t dot = weight.find('.', 7);
  if (dot == std::string::npos || dot == 7) return false;
  for (size_t i = 7; i < dot; ++i)
    if (weight[i] < '0' || weight[i] > '9') return false;
  const std::string rest = weight.substr(dot + 1);
  for (const char* t : kTargets)
    if (rest == t) return true;
  return false;
}

namespace {

double metadata_number(const TensorFile& f, const std::string& key) {
  const auto it = f.metadata.find(key);
  if (it == f.metadata.end()) throw Error(f.path + ": LoRA metadata '" + key + "' is missing");
  try {
    size_t used = 0;
    const double v = std::stod(it->second, &used);
    if (used != it->second.size() || !std::isfinite(v)) throw std::invalid_argument(key);
    return v;
  } catch (const std::exception&) {
    throw Error(f.path + ": LoRA metadata '" + key + "' is not a number ('" + it->second + "')");
  }
}

}  // namespace

std::vector<std::string> lora_target_names(int64_t n_layer) {
  std::vector<std::string> out;
  for (int64_t l = 0; l < n_layer; ++l)
    for (const char* t : kTargets) out.push_back("blocks." + std::to_string(l) + "." + t);
  return out;
}

std::string lora_a_name(const std::string& weight) { return module_of(weight) + ".lora_A"; }
std::string lora_b_name(const std::string& weight) { return module_of(weight) + ".lora_B"; }

void add_lora_product(float* W, const float* A, const float* B, int64_t out, int64_t in, int64_t r,
                      float scale) {
  for (int64_t o = 0; o < out; ++o)
    for (int64_t k = 0; k < r; ++k) {
      const float b = scale * B[o * r + k];
      const float* a = A + k * in;
      float* w = W + o * in;
      for (int64_t i = 0; i < in; ++i) w[i] += b * a[i];
    }
}

void lora_gradients(const float* dW, const float* A, const float* B, int64_t out, int64_t in,
                    int64_t r, float scale, float* dA, float* dB) {
  std::fill(dA, dA + r * in, 0.0f);
  for (int64_t o = 0; o < out; ++o) {
    const float* g = dW + o * in;
    for (int64_t k = 0; k < r; ++k) {
      const float* a = A + k * in;
      float* da = dA + k * in;
      const float b = scale * B[o * r + k];
      double db = 0;
      for (int64_t i = 0; i < in; ++i) {
        da[i] += b * g[i];
        db += double(g[i]) * a[i];
      }
      dB[o * r + k] = float(scale * db);
    }
  }
}

LoraAdapters read_lora(const std::string& path, const TensorFile& base) {
  const TensorFile f = read_safetensors(path);
  LoraAdapters ad;
  const double rank = metadata_number(f, "lora_rank");
  ad.alpha = metadata_number(f, "lora_alpha");
  if (rank < 1 || rank != std::floor(rank) || rank > 1e6)
    throw Error(path + ": lora_rank must be a positive whole number");
  ad.rank = int64_t(rank);
  for (const std::string& name : f.order) {
    const bool is_a = ends_with(name, ".lora_A");
    if (!is_a && !ends_with(name, ".lora_B"))
      throw Error(path + ": tensor '" + name + "' is not a lora_A or lora_B");
    const std::string weight = name.substr(0, name.size() - 7) + ".weight";
    if (!is_lora_target(weight) || !base.has(weight))
      throw Error(path + ": tensor '" + name + "' adapts '" + weight + "', which the base model " +
                  base.path + " does not have as a large matrix");
    const Shape& ws = base.get(weight).shape;
    if (ws.size() != 2) throw Error(base.path + ": '" + weight + "' is not a matrix");
    const Shape want = is_a ? Shape{ad.rank, ws[1]} : Shape{ws[0], ad.rank};
    const TensorView& v = f.get(name);
    if (v.shape != want)
      throw Error(path + ": tensor '" + name + "' has shape " + shape_str(v.shape) + ", expected " +
                  shape_str(want) + " (rank " + std::to_string(ad.rank) + ", " + weight + " " +
                  shape_str(ws) + ")");
    const std::string partner = is_a ? lora_b_name(weight) : lora_a_name(weight);
    if (!f.has(partner)) throw Error(path + ": tensor '" + name + "' has no '" + partner + "'");
    FloatTensor t(want);
    t.data = to_f32(v);
    ad.tensors.emplace(name, std::move(t));
  }
  if (ad.tensors.empty()) throw Error(path + ": no LoRA tensors");
  return ad;
}

void write_lora(const std::string& path, const LoraAdapters& adapters) {
  NamedTensors views;
  for (const auto& [name, t] : adapters.tensors) views.emplace_back(name, t.view());
  char alpha[64];
  std::snprintf(alpha, sizeof alpha, "%.17g", adapters.alpha);
  write_safetensors(path, views,
                    {{"lora_rank", std::to_string(adapters.rank)}, {"lora_alpha", alpha}});
}

TensorFile merge_lora(TensorFile base, const LoraAdapters& adapters) {
  for (const std::string& weight : base.order) {
    auto a = adapters.tensors.find(lora_a_name(weight));
    if (!is_lora_target(weight) || a == adapters.tensors.end()) continue;
    const FloatTensor& B = adapters.tensors.at(lora_b_name(weight));
    const TensorView& v = base.tensors.at(weight);
    auto merged = std::make_shared<std::vector<float>>(to_f32(v));
    add_lora_product(merged->data(), a->second.data.data(), B.data.data(), v.shape[0], v.shape[1],
                     adapters.rank, adapters.scale());
    base.tensors[weight] = TensorView{DType::F32, v.shape, merged->data()};
    base.owners.push_back(merged);
  }
  return base;
}

void merge_lora_checkpoint(const std::string& base_path, const std::string& adapter_path,
                           const std::string& out_path, const std::string& dtype) {
  if (dtype != "f32" && dtype != "bf16" && dtype != "f16")
    throw Error("lora merge: dtype must be f32, bf16 or f16 (got " + dtype + ")");
  TensorFile base = read_tensor_file(base_path);
  const LoraAdapters ad = read_lora(adapter_path, base);
  const TensorFile merged = merge_lora(std::move(base), ad);
  NamedTensors views;
  std::vector<std::vector<float>> wide;
  std::vector<std::vector<uint16_t>> narrow;
  wide.reserve(merged.order.size());
  narrow.reserve(merged.order.size());
  for (const std::string& name : merged.order) {
    const TensorView& v = merged.tensors.at(name);
    wide.push_back(to_f32(v));
    if (dtype == "f32") {
      views.emplace_back(name, TensorView{DType::F32, v.shape, wide.back().data()});
      continue;
    }
    narrow.emplace_back(wide.back().size());
    for (size_t i = 0; i < wide.back().size(); ++i)
      narrow.back()[i] = dtype == "bf16" ? f32_to_bf16(wide.back()[i]) : f32_to_f16(wide.back()[i]);
    wide.back().clear();
    views.emplace_back(name, TensorView{dtype == "bf16" ? DType::BF16 : DType::F16, v.shape,
                                        narrow.back().data()});
  }
  write_pth(out_path, views);
}

}  // namespace rwkv7
