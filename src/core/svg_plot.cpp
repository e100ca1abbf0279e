// SVG line chart (core/svg_plot.hpp).
#include "core/svg_plot.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace rwkv7 {
namespace {

std::string escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<')
      o += "&lt;";
    else if (c == '>')
      o += "&gt;";
    else if (c == '&')
      o += "&amp;";
    else
      o += c;
  }
  return o;
}

}  // namespace

const char* plot_color(size_t i) {
  static const char* palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  return palette[i % 10];
}

std::string render_svg_plot(const PlotSpec& spec) {
  size_t legend_rows = 0;
  for (const PlotSeries& s : spec.series) legend_rows += s.label.empty() ? 0 : 1;
  const double W = 720, H = 420, left = 60, right = 20, top = 40, bottom = 50;
  double x_lo = 1e300, x_hi = -1e300, lo = 1e300, hi = -1e300;
  for (const PlotSeries& s : spec.series) {
    for (auto [x, y] : s.points) {
      if (std::isfinite(x)) x_lo = std::min(x_lo, x), x_hi = std::max(x_hi, x);
      if (std::isfinite(y)) lo = std::min(lo, y), hi = std::max(hi, y);
    }
  }
  if (spec.x_from_zero || x_lo > x_hi) x_lo = std::min(0.0, x_lo);
  if (x_lo > x_hi) x_hi = 1;
  if (x_hi - x_lo < 1e-12) x_hi = x_lo + 1;
  if (lo > hi) lo = 0, hi = 1;
  if (hi - lo < 1e-6) hi = lo + 1;
  auto X = [&](double x) { return left + (W - left - right) * (x - x_lo) / (x_hi - x_lo); };
  auto Y = [&](double v) { return top + (H - top - bottom) * (hi - v) / (hi - lo); };
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">"
      << escape(spec.title) << "</text>\n";
  for (int i = 0; i <= 5; ++i) {  // grid and axis labels
    const double v = lo + (hi - lo) * i / 5, s = x_lo + (x_hi - x_lo) * i / 5;
    char buf[64], xb[64];
    std::snprintf(buf, sizeof buf, spec.y_format, v);
    std::snprintf(xb, sizeof xb, spec.x_format, s);
    svg << "<line x1=\"" << left << "\" x2=\"" << W - right << "\" y1=\"" << Y(v) << "\" y2=\""
        << Y(v) << "\" stroke=\"#ddd\"/><text x=\"" << left - 6 << "\" y=\"" << Y(v) + 4
        << "\" text-anchor=\"end\">" << buf << "</text>\n";
    svg << "<text x=\"" << X(s) << "\" y=\"" << H - bottom + 18 << "\" text-anchor=\"middle\">"
        << xb << "</text>\n";
  }
  svg << "<text x=\"" << W / 2 << "\" y=\"" << H - 10 << "\" text-anchor=\"middle\">"
      << escape(spec.x_label) << "</text>\n"
      << "<text x=\"16\" y=\"" << H / 2 << "\" transform=\"rotate(-90 16 " << H / 2
      << ")\" text-anchor=\"middle\">" << escape(spec.y_label) << "</text>\n";
  for (const PlotSeries& s : spec.series) {
    std::vector<std::pair<double, double>> pts;
    for (auto p : s.points)
      if (std::isfinite(p.first) && std::isfinite(p.second)) pts.push_back(p);
    if (pts.empty()) continue;
    svg << "<polyline fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"" << s.width
        << "\" points=\"";
    for (auto [x, y] : pts) svg << X(x) << "," << Y(y) << " ";
    svg << "\"/>\n";
    if (s.dots) {
      for (auto [x, y] : pts)
        svg << "<circle cx=\"" << X(x) << "\" cy=\"" << Y(y) << "\" r=\"3\" fill=\"" << s.color
            << "\"/>\n";
    }
  }
  int row = 0;
  for (const PlotSeries& s : spec.series) {
    if (s.label.empty()) continue;
    svg << "<text x=\"" << W - right - 150 << "\" y=\"" << top + 14 + 16 * row++ << "\" fill=\""
        << s.color << "\">" << escape(s.label) << "</text>\n";
  }
  (void)legend_rows;
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace rwkv7
