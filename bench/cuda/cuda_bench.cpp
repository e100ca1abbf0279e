// rwkv7_cuda_bench: decode and prefill throughput of the CUDA backend on released RWKV-7 shapes
// with random weights, against the memory-bandwidth and tensor-core limits.
//   rwkv7_cuda_bench [--shapes 0.1B,0.4B,1.5B,2.9B] [--dtype bf16|f16|f32] [--batches 1,64,256]
//                    [--prefill 4096] [--steps 64] [--out results.json] [--no-graph]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "backends/cuda/device_ops.hpp"
#include "model/cuda_model.hpp"
#include "rwkv7/error.hpp"

using namespace rwkv7;

namespace {

struct Shape {
  const char* name;
  int64_t L, C, Dw, Da, Dv, Dg;
};
// Released shapes (SPEC §1); LoRA widths of the released files.
const Shape kShapes[] = {
    {"tiny", 2, 128, 16, 16, 16, 16},  // checks the bench itself (--host)
    {"0.1B", 12, 768, 64, 64, 32, 128},   {"0.4B", 24, 1024, 64, 64, 32, 128},
    {"1.5B", 24, 2048, 96, 96, 64, 256},  {"2.9B", 32, 2560, 128, 128, 96, 320},
    {"7.2B", 32, 4096, 128, 128, 96, 480}};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string x; std::getline(ss, x, ',');)
    if (!x.empty()) out.push_back(x);
  return out;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) try {
  std::vector<std::string> shapes = {"0.1B", "0.4B"};
  std::vector<int64_t> batches = {1, 64, 256};
  std::string dtype = "bf16", out_path;
  int64_t prefill = 4096, steps = 64;
  bool graph = true, host = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(a + ": missing value");
      return argv[++i];
    };
    if (a == "--shapes")
      shapes = split(next());
    else if (a == "--dtype")
      dtype = next();
    else if (a == "--batches") {
      batches.clear();
      for (auto& b : split(next())) batches.push_back(std::stoll(b));
    } else if (a == "--prefill")
      prefill = std::stoll(next());
    else if (a == "--steps")
      steps = std::stoll(next());
    else if (a == "--out")
      out_path = next();
    else if (a == "--no-graph")
      graph = false;
    else if (a == "--host")
      host = true;  // the host twin: checks this program without a GPU
    else
      throw Error("unknown argument " + a);
  }
  const dev::WType type = dtype == "bf16"  ? dev::WType::BF16
                          : dtype == "f16" ? dev::WType::F16
                          : dtype == "f32" ? dev::WType::F32
                                           : throw Error("--dtype: bf16, f16 or f32");
  auto ops = host ? dev::make_host_ops() : dev::make_cuda_ops();
  std::printf("device: %s\n", ops->name().c_str());
  // Bandwidth ceiling: a 2 GiB device-to-device copy (bytes read + written).
  const size_t copy_bytes = host ? size_t(1) << 24 : size_t(1) << 31;
  void* a = ops->alloc(copy_bytes);
  void* b = ops->alloc(copy_bytes);
  ops->zero(a, copy_bytes);
  ops->copy(b, a, copy_bytes);
  std::vector<double> cms;
  for (int i = 0; i < 5; ++i) cms.push_back(ops->time_ms([&] { ops->copy(b, a, copy_bytes); }));
  const double copy_bw = 2.0 * double(copy_bytes) / (median(cms) * 1e-3);
  ops->release(a);
  ops->release(b);
  const double kBw = 4.8e12, kPeak = 989e12;  // H200 datasheet: HBM3e, dense bf16
  std::printf("measured copy bandwidth %.2f TB/s (datasheet 4.8)\n", copy_bw / 1e12);

  std::ostringstream js;
  js << "{\"device\":\"" << ops->name() << "\",\"dtype\":\"" << dtype
     << "\",\"copy_bw_TBps\":" << copy_bw / 1e12 << ",\"results\":[";
  bool first = true;
  std::printf("%-5s %-5s %6s %12s %10s %9s %9s\n", "shape", "dtype", "batch", "tok/s", "ms/step",
              "%BW", "%bf16pk");
  for (const std::string& sn : shapes) {
    const Shape* s = nullptr;
    for (const Shape& k : kShapes)
      if (sn == k.name) s = &k;
    if (!s) throw Error("--shapes: unknown shape " + sn);
    ModelConfig c;
    c.n_layer = s->L, c.n_embd = s->C, c.head_size = 64, c.n_head = s->C / 64;
    c.vocab_size = s->L == 2 ? 1000 : 65536, c.ffn_dim = 4 * s->C;
    c.d_decay = s->Dw, c.d_aaa = s->Da, c.d_value = s->Dv, c.d_gate = s->Dg;
    const double t0 = now_s();
    CudaModel m(c, *ops, type, 42);
    ops->sync();
    const double P = double(m.weight_bytes()) / double(dev::wtype_size(type));
    const double emb = double(c.vocab_size * c.n_embd);
    // FLOPs per token: 2 per weight multiply-add except the embedding; WKV ~ 4·C·N.
    const double flops_tok =
        2.0 * (P - emb) + 4.0 * double(c.n_embd * c.head_size) * double(c.n_layer);
    const double flops_tok_nohead = flops_tok - 2.0 * emb;
    const double state_bytes =
        double(c.n_layer) * (2.0 * c.n_embd + double(c.n_embd) * c.head_size) * 4;
    std::printf("%s: %.0fM params, %.2f GB weights (%s), upload %.1fs\n", s->name, P / 1e6,
                double(m.weight_bytes()) / 1e9, dtype.c_str(), now_s() - t0);
    auto emit = [&](const char* kind, int64_t batch, double tok_s, double ms, double bw_pct,
                    double pk_pct) {
      std::printf("%-5s %-5s %6lld %12.1f %10.3f %8.1f%% %8.2f%%  %s\n", s->name, dtype.c_str(),
                  (long long)batch, tok_s, ms, bw_pct, pk_pct, kind);
      std::fflush(stdout);
      js << (first ? "" : ",") << "{\"shape\":\"" << s->name << "\",\"kind\":\"" << kind
         << "\",\"batch\":" << batch << ",\"tok_s\":" << tok_s << ",\"ms\":" << ms
         << ",\"pct_bw\":" << bw_pct << ",\"pct_bf16_peak\":" << pk_pct << "}";
      first = false;
    };
    for (int64_t B : batches) {
      m.reserve_slots(B);
      for (int64_t i = 0; i < B; ++i) m.reset_slot(i);
      std::vector<int32_t> toks(static_cast<size_t>(B));
      for (int64_t i = 0; i < B; ++i) toks[size_t(i)] = int32_t((i * 7919) % c.vocab_size);
      for (int w = 0; w < 3; ++w) m.decode(toks, nullptr, graph);  // prepares + captures
      std::vector<double> per;
      for (int rep = 0; rep < 3; ++rep) {
        const double t = now_s();
        for (int64_t st = 0; st < steps; ++st) {
          for (int64_t i = 0; i < B; ++i)
            toks[size_t(i)] = int32_t((toks[size_t(i)] * 31 + 7) % c.vocab_size);
          m.decode(toks, nullptr, graph);
        }
        per.push_back((now_s() - t) / double(steps));
      }
      const double sec = median(per);
      // Bytes a step must move: every weight once (one embedding row per sequence), each
      // sequence's state read and written.
      const double bytes = double(m.decode_bytes()) + double(B) * 2.0 * state_bytes;
      emit(graph ? "decode" : "decode-nograph", B, double(B) / sec, sec * 1e3,
           100.0 * bytes / sec / kBw, 100.0 * double(B) * flops_tok / sec / kPeak);
    }
    if (prefill > 0) {
      m.reserve_slots(1);
      std::vector<int32_t> toks(static_cast<size_t>(prefill));
      for (int64_t i = 0; i < prefill; ++i) toks[size_t(i)] = int32_t((i * 7919) % c.vocab_size);
      std::vector<float> logits;
      std::vector<CudaModel::SlotRequest> q = {{toks, 0, Logits::Last, &logits}};
      m.reset_slot(0);
      m.run(q, prefill);  // warm-up: buffers, cuBLAS plans
      std::vector<double> per;
      for (int rep = 0; rep < 3; ++rep) {
        m.reset_slot(0);
        ops->sync();
        const double t = now_s();
        m.run(q, prefill);
        per.push_back(now_s() - t);
      }
      const double sec = median(per);
      emit("prefill", prefill, double(prefill) / sec, sec * 1e3,
           100.0 * double(m.weight_bytes()) / sec / kBw,
           100.0 * double(prefill) * flops_tok_nohead / sec / kPeak);
    }
  }
  js << "]}\n";
  if (!out_path.empty()) std::ofstream(out_path) << js.str();
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "rwkv7_cuda_bench: %s\n", e.what());
  return 1;
}
