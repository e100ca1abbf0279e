#pragma once
// Writes a file so that readers see either the old file or the complete new one:
// write to "<path>.tmp.<pid>", fsync, rename over the target, fsync the directory.
#include <functional>
#include <ostream>
#include <string>

namespace rwkv7 {

void write_file_atomic(const std::string& path, const std::function<void(std::ostream&)>& writer);

}  // namespace rwkv7
