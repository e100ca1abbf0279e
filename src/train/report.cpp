#include "train/report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/atomic_write.hpp"
#include "core/svg_plot.hpp"

namespace rwkv7::train {

std::vector<LogRow> read_log_csv(const std::string& path) {
  std::vector<LogRow> rows;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::stringstream ss(line);
    std::string f[7];
    for (auto& x : f) std::getline(ss, x, ',');
    try {
      LogRow r;
      r.step = std::stoll(f[0]);
      r.loss = std::stod(f[1]);
      r.lr = std::stod(f[2]);
      r.grad_norm = std::stod(f[3]);
      if (!f[4].empty()) r.val_loss = std::stod(f[4]);
      r.tokens_per_s = std::stod(f[5]);
      r.elapsed_s = std::stod(f[6]);
      rows.push_back(r);
    } catch (const std::exception&) {
      // a torn last line from a killed run: skip it
    }
  }
  return rows;
}

void write_log_csv(const std::string& path, const std::vector<LogRow>& rows) {
  write_file_atomic(path, [&](std::ostream& out) {
    out << "step,loss,lr,grad_norm,val_loss,tokens_per_s,elapsed_s\n";
    char buf[256];
    for (const LogRow& r : rows) {
      std::string val = r.val_loss ? std::to_string(*r.val_loss) : "";
      std::snprintf(buf, sizeof buf, "%lld,%.6f,%.6g,%.6f,%s,%.1f,%.1f\n", (long long)r.step,
                    r.loss, r.lr, r.grad_norm, val.c_str(), r.tokens_per_s, r.elapsed_s);
      out << buf;
    }
  });
}

void write_loss_svg(const std::string& path, const std::vector<LogRow>& rows,
                    const std::string& title) {
  PlotSpec spec;
  spec.title = title;
  spec.x_label = "step";
  spec.y_label = "loss (nats per token)";
  spec.x_from_zero = true;
  spec.x_format = "%.0f";
  PlotSeries raw{"", "#9ecae1", 1, false, {}}, avg{"train (moving avg)", "#1f77b4", 2, false, {}},
      val{"validation", "#d62728", 2, true, {}};
  double ema = rows.empty() ? 0 : rows[0].loss;
  for (const LogRow& r : rows) {
    raw.points.emplace_back(double(r.step), r.loss);
    ema = 0.9 * ema + 0.1 * r.loss;
    avg.points.emplace_back(double(r.step), ema);
    if (r.val_loss) val.points.emplace_back(double(r.step), *r.val_loss);
  }
  spec.series = {raw, avg, val};
  const std::string svg = render_svg_plot(spec);
  write_file_atomic(path, [&](std::ostream& out) { out << svg; });
}

}  // namespace rwkv7::train
