#pragma once
// A plain SVG line chart (title, axes with 5 grid lines, lines and optional dots, a legend):
// the training loss plot and the state-fidelity plots share it.
#include <string>
#include <utility>
#include <vector>

namespace rwkv7 {

struct PlotSeries {
  std::string label;  // legend text; empty: not in the legend
  std::string color = "#1f77b4";
  double width = 2;
  bool dots = false;                              // a dot on every point
  std::vector<std::pair<double, double>> points;  // (x, y)
};

struct PlotSpec {
  std::string title, x_label, y_label;
  std::vector<PlotSeries> series;
  bool x_from_zero = false;  // x axis starts at 0 (else at the smallest x)
  const char* x_format = "%.2f";
  const char* y_format = "%.3f";
};

// The SVG document (text). Non-finite values are left out of the ranges.
std::string render_svg_plot(const PlotSpec& spec);

// A colour per series index from a fixed palette (category10).
const char* plot_color(size_t i);

}  // namespace rwkv7
