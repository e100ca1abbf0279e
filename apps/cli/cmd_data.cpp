// rwkv7 data: synthetic long-context task sets (passkey, MQAR) as JSON lines, from the same
// generator `rwkv7 eval --task passkey|mqar` scores (a training set and a test set differ by
// --seed); binidx data sets for `rwkv7 train` and RWKV-LM from JSONL.
#include <cstdio>

#include "commands.hpp"
#include "common.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/long_eval.hpp"
#include "rwkv7/train.hpp"

namespace rwkv7::cli {

void register_data(CLI::App& app) {
  struct Opts {
    std::string filler, jsonl, vocab, out, lengths = "1024", depths = "0,0.25,0.5,0.75,1",
                                           pairs = "4,16,64";
    int64_t per_cell = 4, vocab_size = 256;
    uint64_t seed = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "data",
      "Synthetic long-context task sets as JSON lines (tokens and scored positions); binidx "
      "training data from JSONL");
  cmd->require_subcommand(1);
  auto* pk = cmd->add_subcommand(
      "passkey", "A 5-digit pass key hidden at a depth of filler text, the question at the end");
  pk->add_option("--filler", o->filler, "Filler text file (e.g. tinyshakespeare.txt)")->required();
  pk->add_option("--vocab", o->vocab, "World vocabulary (default: raw bytes)");
  pk->add_option("--lengths", o->lengths, "Context lengths in tokens, comma-separated")
      ->capture_default_str();
  pk->add_option("--depths", o->depths, "Depths of the key (0 = start, 1 = end), comma-separated")
      ->capture_default_str();
  auto* mq = cmd->add_subcommand(
      "mqar", "Multi-query associative recall: key-value pairs, then every key queried once");
  mq->add_option("--pairs", o->pairs, "Key-value pair counts, comma-separated")
      ->capture_default_str();
  mq->add_option("--lengths", o->lengths, "Sequence lengths, comma-separated (>= 4 x pairs)")
      ->capture_default_str();
  mq->add_option("--vocab-size", o->vocab_size, "Token ids used: keys < V/2 <= values < V")
      ->capture_default_str();
  for (CLI::App* sub : {pk, mq}) {
    sub->add_option("--per-cell", o->per_cell, "Samples per (length, depth|pairs) cell")
        ->capture_default_str()
        ->check(Positive);
    sub->add_option("--seed", o->seed, "Seed (use different seeds for training and test sets)")
        ->capture_default_str();
    sub->add_option("-o,--output", o->out, "Output .jsonl")->required();
  }
  auto* bi = cmd->add_subcommand(
      "binidx",
      "Tokenise a JSONL file's \"text\" fields into an RWKV-LM binidx data set OUT.bin + "
      "OUT.idx (token 0 after each document, as RWKV-LM's make_data)");
  bi->add_option("input", o->jsonl, "Input .jsonl")->required();
  bi->add_option("output", o->out, "Output prefix OUT (writes OUT.bin and OUT.idx)")->required();
  bi->add_option("--vocab", o->vocab, "World vocabulary (default: raw bytes)");
  bi->callback([o] {
    const Tokenizer tok = o->vocab.empty() ? Tokenizer::bytes() : Tokenizer::load_world(o->vocab);
    const auto sum = train::make_binidx(o->jsonl, o->out, tok);
    std::printf("%lld documents, %lld tokens written to %s and %s\n", (long long)sum.documents,
                (long long)sum.tokens, sum.bin_path.c_str(), sum.idx_path.c_str());
  });
  pk->callback([o] {
    PasskeyOptions p;
    p.lengths = parse_int_list(o->lengths, "--lengths");
    p.depths = parse_double_list(o->depths, "--depths");
    p.per_cell = o->per_cell;
    p.seed = o->seed;
    const Tokenizer tok = o->vocab.empty() ? Tokenizer::bytes() : Tokenizer::load_world(o->vocab);
    const auto samples = make_passkey_samples(tok, read_file(o->filler), p);
    write_recall_jsonl(o->out, samples);
    std::printf("%zu passkey samples written to %s\n", samples.size(), o->out.c_str());
  });
  mq->callback([o] {
    MqarOptions m;
    m.vocab = o->vocab_size;
    m.pairs = parse_int_list(o->pairs, "--pairs");
    m.lengths = parse_int_list(o->lengths, "--lengths");
    m.per_cell = o->per_cell;
    m.seed = o->seed;
    const auto samples = make_mqar_samples(m);
    write_recall_jsonl(o->out, samples);
    std::printf("%zu MQAR samples written to %s\n", samples.size(), o->out.c_str());
  });
}

}  // namespace rwkv7::cli
