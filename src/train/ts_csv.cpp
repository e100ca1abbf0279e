// Time-series CSV: a header row, a time column (number or ISO date), value columns; gaps (empty
// or NA cells) interpolated with a warning; everything else that is not a number is an Error
// naming the file and line.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>

#include "rwkv7/error.hpp"
#include "rwkv7/timeseries.hpp"

namespace rwkv7::ts {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
  return s;
}

std::vector<std::string_view> split_fields(std::string_view line) {
  std::vector<std::string_view> out;
  size_t from = 0;
  for (;;) {
    const size_t comma = line.find(',', from);
    out.push_back(
        trim(line.substr(from, comma == std::string_view::npos ? line.npos : comma - from)));
    if (comma == std::string_view::npos) return out;
    from = comma + 1;
  }
}

bool parse_number(std::string_view s, double& out) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size() && std::isfinite(out);
}

bool is_missing(std::string_view s) {
  std::string low(s);
  std::transform(low.begin(), low.end(), low.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return low.empty() || low == "na" || low == "nan" || low == "null";
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

bool parse_int(std::string_view s, int64_t lo, int64_t hi, int64_t& out) {
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size() && out >= lo && out <= hi;
}

// YYYY-MM-DD[(T| )HH:MM[:SS[.fff]]][Z] → seconds since 1970-01-01 UTC.
bool parse_iso_date(std::string_view s, double& out) {
  if (s.size() < 10 || s[4] != '-' || s[7] != '-') return false;
  int64_t y, m, d, hh = 0, mm = 0;
  double ss = 0;
  if (!parse_int(s.substr(0, 4), 0, 9999, y) || !parse_int(s.substr(5, 2), 1, 12, m) ||
      !parse_int(s.substr(8, 2), 1, 31, d))
    return false;
  std::string_view rest = s.substr(10);
  if (!rest.empty() && rest.back() == 'Z') rest.remove_suffix(1);
  if (!rest.empty()) {
    if ((rest[0] != 'T' && rest[0] != ' ') || rest.size() < 6 || rest[3] != ':') return false;
    if (!parse_int(rest.substr(1, 2), 0, 23, hh) || !parse_int(rest.substr(4, 2), 0, 59, mm))
      return false;
    rest = rest.substr(6);
    if (!rest.empty()) {
      if (rest[0] != ':' || !parse_number(rest.substr(1), ss) || ss < 0 || ss >= 61) return false;
    }
  }
  out = double(days_from_civil(y, m, d)) * 86400.0 + double(hh * 3600 + mm * 60) + ss;
  return true;
}

// Linear interpolation over the missing (NaN) entries; held at the ends. Returns the count.
int64_t fill_gaps(std::vector<float>& v) {
  int64_t missing = 0, last = -1;
  const int64_t n = int64_t(v.size());
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(v[size_t(i)])) {
      ++missing;
      continue;
    }
    if (last < 0) {
      for (int64_t j = 0; j < i; ++j) v[size_t(j)] = v[size_t(i)];
    } else {
      for (int64_t j = last + 1; j < i; ++j) {
        const double f = double(j - last) / double(i - last);
        v[size_t(j)] = float(v[size_t(last)] + f * (double(v[size_t(i)]) - v[size_t(last)]));
      }
    }
    last = i;
  }
  for (int64_t j = last + 1; j < n && last >= 0; ++j) v[size_t(j)] = v[size_t(last)];
  return missing;
}

}  // namespace

Series parse_csv(std::string_view text, const std::string& name, const CsvOptions& opts,
                 std::vector<std::string>* warnings) {
  Series s;
  s.source = name;
  size_t pos = 0;
  int64_t line_no = 0;
  auto next_line = [&](std::string_view& line) {
    while (pos < text.size()) {
      const size_t nl = text.find('\n', pos);
      line = text.substr(pos, nl == text.npos ? text.npos : nl - pos);
      pos = nl == text.npos ? text.size() : nl + 1;
      ++line_no;
      if (!trim(line).empty()) return true;
    }
    return false;
  };
  std::string_view line;
  if (!next_line(line)) throw Error(name + ": empty file (expected a header row)");
  const std::vector<std::string_view> header = split_fields(line);
  if (header.size() < 2)
    throw Error(name + ": line " + std::to_string(line_no) +
                ": the header needs a time column and at least one value column");
  size_t time_col = 0;
  if (!opts.time_column.empty()) {
    auto it = std::find(header.begin(), header.end(), opts.time_column);
    if (it == header.end())
      throw Error(name + ": no column named '" + opts.time_column + "' in the header");
    time_col = size_t(it - header.begin());
  }
  s.time_name = std::string(header[time_col]);
  std::vector<size_t> cols;
  if (opts.columns.empty()) {
    for (size_t c = 0; c < header.size(); ++c)
      if (c != time_col) cols.push_back(c);
  } else {
    for (const std::string& want : opts.columns) {
      auto it = std::find(header.begin(), header.end(), want);
      if (it == header.end()) {
        std::string have;
        for (auto h : header) have += (have.empty() ? "" : ", ") + std::string(h);
        throw Error(name + ": no column named '" + want + "' (the header has " + have + ")");
      }
      if (size_t(it - header.begin()) == time_col)
        throw Error(name + ": column '" + want + "' is the time column");
      cols.push_back(size_t(it - header.begin()));
    }
  }
  for (size_t c : cols) s.names.emplace_back(header[c]);
  s.values.resize(cols.size());
  bool dates = false;
  while (next_line(line)) {
    const std::vector<std::string_view> f = split_fields(line);
    const std::string where = name + ": line " + std::to_string(line_no);
    if (f.size() != header.size())
      throw Error(where + ": " + std::to_string(f.size()) + " fields, the header has " +
                  std::to_string(header.size()));
    double t = 0;
    if (s.time.empty()) dates = parse_iso_date(f[time_col], t);
    const bool ok = dates ? parse_iso_date(f[time_col], t) : parse_number(f[time_col], t);
    if (!ok)
      throw Error(where + ": time '" + std::string(f[time_col]) + "' is not " +
                  (dates ? "an ISO date like the first row's" : "a number or an ISO date"));
    if (!s.time.empty() && t <= s.time.back())
      throw Error(where + ": time '" + std::string(f[time_col]) +
                  "' does not come after the previous row's");
    s.time.push_back(t);
    s.time_text.emplace_back(f[time_col]);
    for (size_t k = 0; k < cols.size(); ++k) {
      const std::string_view cell = f[cols[k]];
      double v = 0;
      if (is_missing(cell)) {
        s.values[k].push_back(std::nanf(""));
      } else if (parse_number(cell, v)) {
        s.values[k].push_back(float(v));
      } else {
        throw Error(where + ": column '" + s.names[k] + "': '" + std::string(cell) +
                    "' is not a number (write an empty cell or NA for a gap)");
      }
    }
  }
  if (s.time.empty()) throw Error(name + ": no data rows after the header");
  for (size_t k = 0; k < cols.size(); ++k) {
    const int64_t missing = fill_gaps(s.values[k]);
    if (missing == s.length()) throw Error(name + ": column '" + s.names[k] + "' has no values");
    if (missing > 0 && warnings)
      warnings->push_back(name + ": column '" + s.names[k] + "': " + std::to_string(missing) +
                          " missing value(s) (empty or NA) interpolated linearly");
  }
  return s;
}

Series read_csv(const std::string& path, const CsvOptions& opts,
                std::vector<std::string>* warnings) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open the CSV file");
  std::ostringstream buf;
  buf << in.rdbuf();
  return parse_csv(buf.str(), path, opts, warnings);
}

Split chronological_split(int64_t length) {
  Split sp;
  sp.length = length;
  sp.train_end = int64_t(double(length) * 0.7);
  sp.val_end = sp.train_end + int64_t(double(length) * 0.1);
  return sp;
}

Scaler fit_scaler(const Series& s, int64_t train_end) {
  Scaler sc;
  for (const std::vector<float>& v : s.values) {
    const int64_t n = std::min<int64_t>(train_end, int64_t(v.size()));
    if (n < 2) throw Error(s.source + ": too few training points to normalise");
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < n; ++i) sum += v[size_t(i)];
    const double mean = sum / double(n);
    for (int64_t i = 0; i < n; ++i) sq += (v[size_t(i)] - mean) * (v[size_t(i)] - mean);
    const double sd = std::sqrt(sq / double(n));
    sc.mean.push_back(mean);
    sc.scale.push_back(sd > 1e-12 ? sd : 1.0);
  }
  return sc;
}

std::vector<std::vector<float>> normalise(const Series& s, const Scaler& sc) {
  if (sc.mean.size() != s.values.size())
    throw Error(s.source + ": " + std::to_string(s.values.size()) + " channels, the scaler has " +
                std::to_string(sc.mean.size()));
  std::vector<std::vector<float>> out(s.values.size());
  for (size_t c = 0; c < s.values.size(); ++c) {
    out[c].resize(s.values[c].size());
    for (size_t i = 0; i < s.values[c].size(); ++i)
      out[c][i] = float((s.values[c][i] - sc.mean[c]) / sc.scale[c]);
  }
  return out;
}

}  // namespace rwkv7::ts
