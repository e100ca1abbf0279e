#pragma once
// What a user sees of a training run besides the progress line: a CSV log and an SVG plot.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace rwkv7::train {

struct LogRow {
  int64_t step = 0;
  double loss = 0, lr = 0, grad_norm = 0, tokens_per_s = 0, elapsed_s = 0;
  std::optional<double> val_loss;
};

// Reads rows of an earlier run's log.csv (missing file → none; bad lines are skipped).
std::vector<LogRow> read_log_csv(const std::string& path);
// Rewrites the whole CSV atomically.
void write_log_csv(const std::string& path, const std::vector<LogRow>& rows);
// Train loss (thin line + moving average) and validation loss (dots) against step. Atomic.
void write_loss_svg(const std::string& path, const std::vector<LogRow>& rows,
                    const std::string& title);

}  // namespace rwkv7::train
