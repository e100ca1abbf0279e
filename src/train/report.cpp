#include "train/report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/atomic_write.hpp"

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
  const double W = 720, H = 420, left = 60, right = 20, top = 40, bottom = 50;
  double max_step = 1, lo = 1e30, hi = -1e30;
  for (const LogRow& r : rows) {
    max_step = std::max(max_step, double(r.step));
    for (double v : {r.loss, r.val_loss.value_or(r.loss)}) {
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
    }
  }
  if (lo > hi) lo = 0, hi = 1;
  if (hi - lo < 1e-6) hi = lo + 1;
  auto X = [&](double s) { return left + (W - left - right) * s / max_step; };
  auto Y = [&](double v) { return top + (H - top - bottom) * (hi - v) / (hi - lo); };
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">" << title
      << "</text>\n";
  for (int i = 0; i <= 5; ++i) {  // grid and axis labels
    const double v = lo + (hi - lo) * i / 5, s = max_step * i / 5;
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.3f", v);
    svg << "<line x1=\"" << left << "\" x2=\"" << W - right << "\" y1=\"" << Y(v) << "\" y2=\""
        << Y(v) << "\" stroke=\"#ddd\"/><text x=\"" << left - 6 << "\" y=\"" << Y(v) + 4
        << "\" text-anchor=\"end\">" << buf << "</text>\n";
    svg << "<text x=\"" << X(s) << "\" y=\"" << H - bottom + 18 << "\" text-anchor=\"middle\">"
        << (long long)s << "</text>\n";
  }
  svg << "<text x=\"" << W / 2 << "\" y=\"" << H - 10 << "\" text-anchor=\"middle\">step</text>\n"
      << "<text x=\"16\" y=\"" << H / 2 << "\" transform=\"rotate(-90 16 " << H / 2
      << ")\" text-anchor=\"middle\">loss (nats per token)</text>\n";
  auto polyline = [&](const std::vector<std::pair<double, double>>& pts, const char* style) {
    if (pts.empty()) return;
    svg << "<polyline fill=\"none\" " << style << " points=\"";
    for (auto [s, v] : pts) svg << X(s) << "," << Y(v) << " ";
    svg << "\"/>\n";
  };
  std::vector<std::pair<double, double>> raw, avg, val;
  double ema = rows.empty() ? 0 : rows[0].loss;
  for (const LogRow& r : rows) {
    raw.emplace_back(double(r.step), r.loss);
    ema = 0.9 * ema + 0.1 * r.loss;
    avg.emplace_back(double(r.step), ema);
    if (r.val_loss) val.emplace_back(double(r.step), *r.val_loss);
  }
  polyline(raw, "stroke=\"#9ecae1\" stroke-width=\"1\"");
  polyline(avg, "stroke=\"#1f77b4\" stroke-width=\"2\"");
  polyline(val, "stroke=\"#d62728\" stroke-width=\"2\"");
  for (auto [s, v] : val)
    svg << "<circle cx=\"" << X(s) << "\" cy=\"" << Y(v) << "\" r=\"3\" fill=\"#d62728\"/>\n";
  svg << "<text x=\"" << W - right - 150 << "\" y=\"" << top + 14
      << "\" fill=\"#1f77b4\">train (moving avg)</text>\n"
      << "<text x=\"" << W - right - 150 << "\" y=\"" << top + 30
      << "\" fill=\"#d62728\">validation</text>\n</svg>\n";
  write_file_atomic(path, [&](std::ostream& out) { out << svg.str(); });
}

}  // namespace rwkv7::train
