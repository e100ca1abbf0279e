#pragma once
// Runs the rwkv7 binary as a user would and captures what it prints.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "temp_dir.hpp"

namespace rwkv7::testing {

struct CliResult {
  int exit_code = -1;
  std::string out, err;
};

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs a shell command line (quote arguments yourself) with stdin_text on its standard input.
inline CliResult run_command(const std::string& command, const std::string& stdin_text = "") {
  TempDir dir;
  const std::string in = dir.file("stdin"), out = dir.file("stdout"), err = dir.file("stderr");
  std::ofstream(in, std::ios::binary) << stdin_text;
  const std::string cmd = command + " <'" + in + "' >'" + out + "' 2>'" + err + "'";
  int status = std::system(cmd.c_str());
  CliResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

// The rwkv7 binary with args (passed through the shell: quote them yourself).
inline CliResult run_cli(const std::string& args, const std::string& stdin_text = "") {
  return run_command(std::string("'") + RWKV7_CLI_PATH + "' " + args, stdin_text);
}

inline std::string quote(const std::string& s) { return "'" + s + "'"; }

}  // namespace rwkv7::testing
