// rwkv7: one command, many subcommands. Errors go to stderr with a non-zero exit code.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>

#include "commands.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/machine.hpp"

int main(int argc, char** argv) {
  CLI::App app{"rwkv7: run, evaluate and inspect RWKV-7 (\"Goose\") language models"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show the help of every subcommand");
  rwkv7::cli::register_info(app);
  rwkv7::cli::register_tokenize(app);
  rwkv7::cli::register_forward(app);
  rwkv7::cli::register_generate(app);
  rwkv7::cli::register_chat(app);
  rwkv7::cli::register_eval(app);
  rwkv7::cli::register_init(app);
  rwkv7::cli::register_grad(app);
  rwkv7::cli::register_convert(app);
  rwkv7::cli::register_bench(app);
  rwkv7::cli::register_train(app);
  rwkv7::cli::register_serve(app);
  rwkv7::cli::register_state(app);
  rwkv7::cli::register_doc(app);
  rwkv7::cli::register_ts(app);
  rwkv7::cli::register_data(app);
  rwkv7::cli::register_lora(app);
  try {
    // Caps the SIMD kernels of every subcommand (for measuring each path on one machine).
    if (const char* isa = std::getenv("RWKV7_ISA"); isa && *isa) rwkv7::set_cpu_isa(isa);
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help and version exit 0; every flag error exits 1, as every other error does.
    return app.exit(e) == 0 ? 0 : 1;
  } catch (const rwkv7::Error& e) {
    std::fprintf(stderr, "rwkv7: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    // Readers bound every size by the input before allocating (issue 14), so this is a real
    // shortage: the model or data is larger than this machine's memory.
    std::fprintf(stderr, "rwkv7: error: out of memory (the input needs more than is free)\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rwkv7: unexpected error: %s\n", e.what());
    return 2;
  }
  return 0;
}
