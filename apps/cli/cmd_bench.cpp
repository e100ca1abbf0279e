// rwkv7 bench: prefill and decode speed, peak memory, and how close each is to its limit
// (decode: memory bandwidth / bytes per token; prefill: peak FLOP/s / FLOPs per token).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "commands.hpp"
#include "common.hpp"
#include "rwkv7/context.hpp"
#include "rwkv7/machine.hpp"
#include "rwkv7/sampler.hpp"

namespace rwkv7::cli {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double seconds(const std::function<void()>& fn) {
  auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

void register_bench(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    int64_t prompt = 512, gen = 128, repeat = 3, chunk = LoadOptions{}.chunk;
    double bandwidth = 0, peak = 0;
    bool json = false;
    std::vector<int64_t> batches;
    std::string isa;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("bench",
                                 "Prefill and decode tokens/s, peak memory, fraction of "
                                 "the bandwidth (decode) and FLOP (prefill) limits");
  o->model.add(cmd, false);
  o->model.add_precision(cmd);
  cmd->add_option("--prompt", o->prompt, "Prefill length (one forward call)")
      ->capture_default_str()
      ->check(Positive);
  cmd->add_option("--gen", o->gen, "Decoded tokens per run")
      ->capture_default_str()
      ->check(Positive);
  cmd->add_option("--repeat", o->repeat, "Runs; the median is reported")
      ->capture_default_str()
      ->check(Positive);
  cmd->add_option("--chunk", o->chunk, "Positions per pass in prefill")
      ->capture_default_str()
      ->check(Positive);
  cmd->add_option("--bandwidth-gbs", o->bandwidth, "Memory read bandwidth (GB/s); measured if 0");
  cmd->add_option("--peak-gflops", o->peak, "fp32 FMA peak (GFLOP/s); measured if 0");
  cmd->add_option("--batch", o->batches,
                  "Also decode this many sequences together (one batched forward per step; "
                  "repeatable or comma-separated): aggregate tok/s and the ratio to one sequence, "
                  "measured in this run")
      ->delimiter(',')
      ->check(CLI::Range(int64_t(1), int64_t(4096)));
  cmd->add_option("--isa", o->isa,
                  "Cap the SIMD kernels at this instruction set (avx512vnni, avx512, avx2, sse4, "
                  "ssse3, scalar; default: the best this CPU runs; also RWKV7_ISA)");
  cmd->add_flag("--json", o->json, "Print one JSON object");
  cmd->callback([o] {
    if (!o->isa.empty()) set_cpu_isa(o->isa);
    MachineLimits lim{o->bandwidth, o->peak};
    if (lim.read_gb_s <= 0 || lim.fma_gflop_s <= 0) {
      MachineLimits measured = measure_machine_limits(o->model.threads);
      if (lim.read_gb_s <= 0) lim.read_gb_s = measured.read_gb_s;
      if (lim.fma_gflop_s <= 0) lim.fma_gflop_s = measured.fma_gflop_s;
    }
    auto m = o->model.load(o->chunk);
    const int64_t V = m->config().vocab_size;
    std::mt19937 rng(1234);
    std::vector<int32_t> prompt(size_t(o->prompt));
    for (auto& t : prompt) t = int32_t(rng() % uint32_t(V));
    {  // warm-up: page the weights in
      State s = m->new_state();
      m->forward(std::span<const int32_t>(prompt.data(), std::min<size_t>(prompt.size(), 8)), s);
    }
    std::vector<double> prefill, decode;
    for (int64_t r = 0; r < o->repeat; ++r) {
      State s = m->new_state();
      std::vector<float> logits;
      prefill.push_back(seconds([&] { logits = m->forward(prompt, s, Logits::Last); }));
      decode.push_back(seconds([&] {
        for (int64_t i = 0; i < o->gen; ++i) {
          const int32_t t =
              int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
          logits = m->forward(std::span<const int32_t>(&t, 1), s, Logits::Last);
        }
      }));
    }
    const double prefill_tok_s = double(o->prompt) / median(prefill);
    const double decode_tok_s = double(o->gen) / median(decode);
    const double decode_limit = lim.read_gb_s * 1e9 / double(m->decode_bytes_per_token());
    // Prefill computes logits for the last position only.
    const double prefill_flops = double(o->prompt) * m->flops_per_token() + m->head_flops();
    // bf16 products (VDPBF16PS) do two products per fp32 lane per instruction: their peak is
    // twice the FMA one (measured 2.0x on Zen 4: docs/training.md), the limit prefill is judged by.
    const bool bf16_products = m->product_precision() == "bf16";
    const double product_gflop_s = lim.fma_gflop_s * (bf16_products ? 2 : 1);
    const double prefill_limit = product_gflop_s * 1e9 / (prefill_flops / double(o->prompt));
    nlohmann::json j = {{"model", m->path()},
                        {"shape", m->config().shape_string()},
                        {"dtype", m->weight_dtype()},
                        {"products", m->product_precision()},
                        {"threads", o->model.threads},
                        {"isa", cpu_isa()},
                        {"prompt", o->prompt},
                        {"gen", o->gen},
                        {"prefill_tok_s", prefill_tok_s},
                        {"decode_tok_s", decode_tok_s},
                        {"peak_rss_mb", peak_rss_mib()},
                        {"read_gb_s", lim.read_gb_s},
                        {"fma_gflop_s", lim.fma_gflop_s},
                        {"product_peak_gflop_s", product_gflop_s},
                        {"decode_bytes_per_token", m->decode_bytes_per_token()},
                        {"flops_per_token", m->flops_per_token()},
                        {"head_flops", m->head_flops()},
                        {"decode_limit_tok_s", decode_limit},
                        {"prefill_limit_tok_s", prefill_limit},
                        {"decode_fraction_of_limit", decode_tok_s / decode_limit},
                        {"prefill_fraction_of_limit", prefill_tok_s / prefill_limit}};
    // Batched decode: B sequences (each from its own short prompt), one token each per step.
    // The machine is shared and its speed drifts, so one sequence and each batch size are
    // timed in alternation, round after round: a ratio compares runs seconds apart.
    nlohmann::json batched = nlohmann::json::array();
    if (!o->batches.empty()) {
      Context ctx(o->model.threads);
      struct Decoder {
        int64_t B;
        std::vector<State> states;
        std::vector<std::vector<float>> logits;
        std::vector<int32_t> next;
        std::vector<SequenceRequest> batch;
        std::vector<Sampler> samplers;
        std::vector<Sampler*> sampler_list;
        std::vector<std::span<const float>> rows;
        std::vector<double> tok_s;
      };
      std::vector<int64_t> sizes = {1};
      for (int64_t B : o->batches)
        if (B != 1) sizes.push_back(B);
      std::vector<Decoder> decoders;
      decoders.reserve(sizes.size());  // batch spans point into each decoder's vectors
      for (int64_t B : sizes) {
        Decoder& d = decoders.emplace_back();
        d.B = B;
        d.states.assign(size_t(B), m->new_state());
        d.logits.resize(size_t(B));
        d.next.resize(size_t(B));
        d.batch.resize(size_t(B));
        for (int64_t b = 0; b < B; ++b) {
          d.next[size_t(b)] = prompt[size_t(b) % prompt.size()];
          d.batch[size_t(b)] =
              SequenceRequest{std::span<const int32_t>(&d.next[size_t(b)], 1), &d.states[size_t(b)],
                              Logits::Last, &d.logits[size_t(b)]};
        }
        m->forward(ctx, d.batch);  // warm: buffers sized
        d.samplers.assign(size_t(B), Sampler(SamplerOptions{.temperature = 0.0f}));
        for (int64_t b = 0; b < B; ++b) {
          d.sampler_list.push_back(&d.samplers[size_t(b)]);
          d.rows.emplace_back();
        }
      }
      std::vector<std::vector<double>> ratios(sizes.size());
      for (int64_t r = 0; r < o->repeat; ++r) {
        for (Decoder& d : decoders) {
          const double t = seconds([&] {
            for (int64_t i = 0; i < o->gen; ++i) {
              // Greedy, through the library's batched sampling as the server does it.
              for (int64_t b = 0; b < d.B; ++b) d.rows[size_t(b)] = d.logits[size_t(b)];
              const std::vector<int32_t> tokens = sample_many(ctx, d.sampler_list, d.rows);
              std::copy(tokens.begin(), tokens.end(), d.next.begin());
              m->forward(ctx, d.batch);
            }
          });
          d.tok_s.push_back(double(d.B * o->gen) / t);
        }
        for (size_t i = 0; i < decoders.size(); ++i)
          ratios[i].push_back(decoders[i].tok_s.back() / decoders[0].tok_s.back());
      }
      for (int64_t B : o->batches) {
        const size_t i = size_t(std::find(sizes.begin(), sizes.end(), B) - sizes.begin());
        batched.push_back({{"batch", B},
                           {"tok_s", median(decoders[i].tok_s)},
                           {"one_sequence_tok_s", median(decoders[0].tok_s)},
                           {"ratio_to_batch_1", median(ratios[i])}});
      }
      j["batched_decode"] = batched;
    }
    if (o->json) {
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    std::printf("model    %s (%s, %s, %s products)\n", m->path().c_str(),
                m->config().shape_string().c_str(), m->weight_dtype().c_str(),
                m->product_precision().c_str());
    std::printf("machine  %.1f GB/s read, %.0f GFLOP/s fp32 FMA (kernels: %s)\n", lim.read_gb_s,
                lim.fma_gflop_s, cpu_isa().c_str());
    std::printf(
        "prefill  %8.1f tok/s  (%lld tokens; limit %.0f tok/s at %.2f GFLOP/token%s: %.0f%%)\n",
        prefill_tok_s, (long long)o->prompt, prefill_limit, m->flops_per_token() / 1e9,
        bf16_products ? " and the bf16 peak, 2x the FMA one" : "",
        100 * prefill_tok_s / prefill_limit);
    std::printf("decode   %8.1f tok/s  (%lld tokens; limit %.0f tok/s at %.1f MB/token: %.0f%%)\n",
                decode_tok_s, (long long)o->gen, decode_limit,
                double(m->decode_bytes_per_token()) / 1e6, 100 * decode_tok_s / decode_limit);
    for (const auto& b : batched)
      std::printf(
          "batch %4lld %8.1f tok/s aggregate (one sequence %.1f tok/s alternating with it; "
          "median ratio of %lld rounds %.2fx)\n",
          (long long)b["batch"].get<int64_t>(), b["tok_s"].get<double>(),
          b["one_sequence_tok_s"].get<double>(), (long long)o->repeat,
          b["ratio_to_batch_1"].get<double>());
    std::printf("memory   %.1f MiB peak resident\n", peak_rss_mib());
  });
}

}  // namespace rwkv7::cli
