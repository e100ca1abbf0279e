#pragma once
// Each subcommand lives in its own cmd_<name>.cpp and registers itself on the app.
#include <CLI/CLI.hpp>

namespace rwkv7::cli {

void register_info(CLI::App& app);
void register_tokenize(CLI::App& app);
void register_forward(CLI::App& app);
void register_generate(CLI::App& app);
void register_chat(CLI::App& app);
void register_eval(CLI::App& app);
void register_init(CLI::App& app);
void register_grad(CLI::App& app);
void register_convert(CLI::App& app);
void register_bench(CLI::App& app);
void register_train(CLI::App& app);
void register_serve(CLI::App& app);
void register_state(CLI::App& app);
void register_doc(CLI::App& app);
void register_ts(CLI::App& app);
void register_data(CLI::App& app);
void register_lora(CLI::App& app);

}  // namespace rwkv7::cli
