// Long-context evaluations (rwkv7/long_eval.hpp): the recall task generators, their scorer and
// tables, loss per position bucket, and their plots.
#include "rwkv7/long_eval.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "core/atomic_write.hpp"
#include "core/svg_plot.hpp"
#include "io/jsonl.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

// log softmax(logits)[target], in double.
double log_prob(const float* logits, int64_t V, int32_t target) {
  const float mx = *std::max_element(logits, logits + V);
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += std::exp(double(logits[i]) - mx);
  return double(logits[target]) - mx - std::log(sum);
}

std::string svg_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') {
      out += "&lt;";
    } else if (c == '>') {
      out += "&gt;";
    } else if (c == '&') {
      out += "&amp;";
    } else {
      out += c;
    }
  }
  return out;
}

std::string label_of(double v) {
  char buf[32];
  if (v == std::floor(v) && std::abs(v) < 1e15) {
    const auto n = int64_t(v);
    if (n >= 1024 && n % 1024 == 0) {
      std::snprintf(buf, sizeof buf, "%lldK", (long long)(n / 1024));
    } else {
      std::snprintf(buf, sizeof buf, "%lld", (long long)n);
    }
  } else {
    std::snprintf(buf, sizeof buf, "%g", v);
  }
  return buf;
}

// Sets are built in memory: refuse, naming the task, lengths below 1 and sets of more than
// 2^30 tokens in all (4 GiB of ids), before anything is allocated.
void check_set_size(const char* task, const std::vector<int64_t>& lengths, double cells_per_length,
                    int64_t per_cell) {
  constexpr double kMaxTokens = double(int64_t(1) << 30);
  double total = 0;
  for (int64_t length : lengths) {
    if (length < 1) throw Error(std::string(task) + ": length " + std::to_string(length) + " < 1");
    total += double(length) * cells_per_length * double(per_cell);
  }
  if (total > kMaxTokens)
    throw Error(std::string(task) + ": the set would hold " + std::to_string(total) +
                " tokens, more than 2^30 (fewer lengths, cells or samples per cell)");
}

}  // namespace

std::vector<RecallSample> make_passkey_samples(const Tokenizer& tok, std::string_view filler,
                                               const PasskeyOptions& o) {
  const std::vector<int32_t> fill = tok.encode(filler);
  if (fill.empty()) throw Error("passkey: the filler text is empty");
  if (o.per_cell < 1) throw Error("passkey: per_cell must be at least 1");
  check_set_size("passkey", o.lengths, double(o.depths.size()), o.per_cell);
  const auto question = tok.encode(" What is the pass key? The pass key is");
  std::mt19937_64 rng(o.seed);
  std::vector<RecallSample> out;
  for (int64_t length : o.lengths) {
    for (double depth : o.depths) {
      if (!(depth >= 0 && depth <= 1))
        throw Error("passkey: depth " + std::to_string(depth) + " is outside [0, 1]");
      for (int64_t i = 0; i < o.per_cell; ++i) {
        const int key = int(std::uniform_int_distribution<int>(10000, 99999)(rng));
        const std::string k = std::to_string(key);
        const auto needle =
            tok.encode(" The pass key is " + k + ". Remember it. " + k + " is the pass key. ");
        const auto answer = tok.encode(" " + k);
        const int64_t n_fill = length - int64_t(needle.size() + question.size());
        if (n_fill < 0) {
          throw Error("passkey: length " + std::to_string(length) +
                      " is shorter than the key and the question (" +
                      std::to_string(needle.size() + question.size()) + " tokens)");
        }
        const int64_t at = int64_t(std::llround(depth * double(n_fill)));
        size_t offset = std::uniform_int_distribution<size_t>(0, fill.size() - 1)(rng);
        RecallSample s;
        s.length = length;
        s.depth = depth;
        auto add_filler = [&](int64_t n) {
          for (int64_t j = 0; j < n; ++j) s.tokens.push_back(fill[offset++ % fill.size()]);
        };
        add_filler(at);
        s.tokens.insert(s.tokens.end(), needle.begin(), needle.end());
        add_filler(n_fill - at);
        s.context_end = int64_t(s.tokens.size());
        s.tokens.insert(s.tokens.end(), question.begin(), question.end());
        std::vector<int64_t> group;
        for (size_t j = 0; j < answer.size(); ++j)
          group.push_back(int64_t(s.tokens.size() + j) - 1);
        s.tokens.insert(s.tokens.end(), answer.begin(), answer.end());
        s.groups.push_back(std::move(group));
        out.push_back(std::move(s));
      }
    }
  }
  return out;
}

std::vector<RecallSample> make_mqar_samples(const MqarOptions& o) {
  if (o.vocab < 4 || o.vocab > (int64_t(1) << 24))
    throw Error("mqar: vocab must be in [4, 2^24] (got " + std::to_string(o.vocab) + ")");
  if (o.per_cell < 1) throw Error("mqar: per_cell must be at least 1");
  check_set_size("mqar", o.lengths, double(o.pairs.size()), o.per_cell);
  const int64_t half = o.vocab / 2;  // keys [1, half), values [half, vocab)
  std::mt19937_64 rng(o.seed);
  std::vector<RecallSample> out;
  for (int64_t pairs : o.pairs) {
    if (pairs < 1 || pairs > half - 1) {
      throw Error("mqar: " + std::to_string(pairs) + " pairs need 1.." + std::to_string(half - 1) +
                  " distinct keys (vocab " + std::to_string(o.vocab) + ")");
    }
    for (int64_t length : o.lengths) {
      if (length < 4 * pairs) {
        throw Error("mqar: length " + std::to_string(length) + " is shorter than 4 x " +
                    std::to_string(pairs) + " pairs (the pairs and their queries)");
      }
      for (int64_t i = 0; i < o.per_cell; ++i) {
        std::vector<int32_t> keys(static_cast<size_t>(half - 1), 0);
        for (size_t j = 0; j < keys.size(); ++j) keys[j] = int32_t(j + 1);
        std::shuffle(keys.begin(), keys.end(), rng);
        keys.resize(size_t(pairs));
        std::vector<int32_t> values(static_cast<size_t>(pairs), 0);
        for (int32_t& v : values)
          v = int32_t(std::uniform_int_distribution<int64_t>(half, o.vocab - 1)(rng));
        RecallSample s;
        s.length = length;
        s.pairs = pairs;
        s.context_end = 2 * pairs;
        s.tokens.assign(size_t(length), 0);
        for (int64_t p = 0; p < pairs; ++p) {
          s.tokens[size_t(2 * p)] = keys[size_t(p)];
          s.tokens[size_t(2 * p + 1)] = values[size_t(p)];
        }
        // Queries at distinct slots of 2 positions after the pairs, in random order.
        const int64_t slots = (length - 2 * pairs) / 2;
        std::vector<int64_t> slot(static_cast<size_t>(slots), 0);
        for (int64_t j = 0; j < slots; ++j) slot[size_t(j)] = j;
        std::shuffle(slot.begin(), slot.end(), rng);
        slot.resize(size_t(pairs));
        std::vector<int64_t> order(static_cast<size_t>(pairs), 0);
        for (int64_t p = 0; p < pairs; ++p) order[size_t(p)] = p;
        std::shuffle(order.begin(), order.end(), rng);
        for (int64_t q = 0; q < pairs; ++q) {
          const int64_t at = 2 * pairs + 2 * slot[size_t(q)], p = order[size_t(q)];
          s.tokens[size_t(at)] = keys[size_t(p)];
          s.tokens[size_t(at + 1)] = values[size_t(p)];
          s.groups.push_back({at});
        }
        std::sort(s.groups.begin(), s.groups.end());
        out.push_back(std::move(s));
      }
    }
  }
  return out;
}

std::vector<bool> score_recall_groups(const RecallSample& s, std::span<const float> logits,
                                      int64_t V) {
  const int64_t rows = int64_t(s.tokens.size()) - 1;
  if (V < 1 || int64_t(logits.size()) != rows * V) {
    throw Error("recall scorer: logits have " + std::to_string(logits.size()) +
                " values, expected " + std::to_string(rows) + " positions x " + std::to_string(V));
  }
  std::vector<bool> out;
  for (const auto& group : s.groups) {
    bool ok = !group.empty();
    for (int64_t p : group) {
      if (p < 0 || p >= rows) throw Error("recall scorer: answer position out of range");
      const float* l = logits.data() + p * V;
      ok = ok && std::max_element(l, l + V) - l == s.tokens[size_t(p + 1)];
    }
    out.push_back(ok);
  }
  return out;
}

std::vector<std::vector<bool>> evaluate_recall(const Model& model,
                                               const std::vector<RecallSample>& samples,
                                               int64_t window, const Progress& progress,
                                               const CompressOptions* compress) {
  const int64_t V = model.config().vocab_size;
  if (window < 1) throw Error("recall evaluation: window must be at least 1");
  std::vector<std::vector<bool>> out;
  std::vector<float> logits;
  for (size_t i = 0; i < samples.size(); ++i) {
    const RecallSample& s = samples[i];
    for (int32_t t : s.tokens)
      if (t < 0 || t >= V)
        throw Error("recall evaluation: token " + std::to_string(t) + " of sample " +
                    std::to_string(i) + " is outside the model's vocabulary");
    const int64_t rows = int64_t(s.tokens.size()) - 1;
    if (rows < 1) throw Error("recall evaluation: sample " + std::to_string(i) + " is empty");
    // Only the answer rows are kept: a [rows, V] matrix of a 64K-token sample would not fit.
    std::vector<char> wanted(size_t(rows), 0);
    for (const auto& g : s.groups)
      for (int64_t p : g)
        if (p >= 0 && p < rows) wanted[size_t(p)] = 1;
    const int64_t cut = compress ? s.context_end : 0;
    if (compress) {
      int64_t first = rows;
      for (const auto& g : s.groups)
        for (int64_t p : g) first = std::min(first, p);
      if (cut < 1 || cut > first) {
        throw Error("recall evaluation: sample " + std::to_string(i) +
                    " has no context end before its answers (context_end " + std::to_string(cut) +
                    "); made by an older generator?");
      }
    }
    std::map<int64_t, std::vector<float>> kept;
    State st = model.new_state();
    for (int64_t p = 0, len = 0; p < rows; p += len) {
      len = std::min(window, rows - p);
      if (p < cut && p + len > cut) len = cut - p;  // a window ends at the context's end
      if (p + len == cut) {
        model.forward(std::span<const int32_t>(s.tokens).subspan(size_t(p), size_t(len)), st,
                      Logits::None);
        st = compress->method == "reset" ? model.new_state()  // the baseline: context forgotten
                                         : decompress_state(compress_state(st, *compress));
        continue;
      }
      bool any = false;
      for (int64_t j = p; j < p + len; ++j) any = any || wanted[size_t(j)];
      const auto span = std::span<const int32_t>(s.tokens).subspan(size_t(p), size_t(len));
      if (!any) {
        model.forward(span, st, Logits::None);
        continue;
      }
      logits = model.forward(span, st, Logits::All);
      for (int64_t j = p; j < p + len; ++j)
        if (wanted[size_t(j)])
          kept[j].assign(logits.begin() + (j - p) * V, logits.begin() + (j - p + 1) * V);
    }
    // As score_recall_groups, on the kept rows.
    std::vector<bool> ok;
    for (const auto& g : s.groups) {
      bool good = !g.empty();
      for (int64_t p : g) {
        const std::vector<float>& l = kept.at(p);
        good = good && std::max_element(l.begin(), l.end()) - l.begin() == s.tokens[size_t(p + 1)];
      }
      ok.push_back(good);
    }
    out.push_back(std::move(ok));
    if (progress) progress(int64_t(i + 1), int64_t(samples.size()));
  }
  return out;
}

double RecallTable::accuracy(size_t r, size_t c) const {
  const size_t i = r * cols.size() + c;
  return total[i] ? double(correct[i]) / double(total[i]) : std::nan("");
}

double RecallTable::overall() const {
  int64_t c = 0, t = 0;
  for (size_t i = 0; i < total.size(); ++i) c += correct[i], t += total[i];
  return t ? double(c) / double(t) : std::nan("");
}

RecallTable tabulate_recall(RecallTask task, const std::vector<RecallSample>& samples,
                            const std::vector<std::vector<bool>>& results) {
  if (samples.size() != results.size())
    throw Error("recall table: " + std::to_string(results.size()) + " results for " +
                std::to_string(samples.size()) + " samples");
  RecallTable t;
  const bool passkey = task == RecallTask::Passkey;
  t.row_name = passkey ? "length" : "pairs";
  t.col_name = passkey ? "depth" : "length";
  auto row_of = [&](const RecallSample& s) { return passkey ? double(s.length) : double(s.pairs); };
  auto col_of = [&](const RecallSample& s) { return passkey ? s.depth : double(s.length); };
  for (const auto& s : samples) {
    t.rows.push_back(row_of(s));
    t.cols.push_back(col_of(s));
  }
  for (auto* v : {&t.rows, &t.cols}) {
    std::sort(v->begin(), v->end());
    v->erase(std::unique(v->begin(), v->end()), v->end());
  }
  t.correct.assign(t.rows.size() * t.cols.size(), 0);
  t.total.assign(t.rows.size() * t.cols.size(), 0);
  for (size_t i = 0; i < samples.size(); ++i) {
    const size_t r =
        size_t(std::lower_bound(t.rows.begin(), t.rows.end(), row_of(samples[i])) - t.rows.begin());
    const size_t c =
        size_t(std::lower_bound(t.cols.begin(), t.cols.end(), col_of(samples[i])) - t.cols.begin());
    for (bool ok : results[i]) {
      t.correct[r * t.cols.size() + c] += ok ? 1 : 0;
      t.total[r * t.cols.size() + c] += 1;
    }
  }
  return t;
}

void write_recall_jsonl(const std::string& path, const std::vector<RecallSample>& samples) {
  write_file_atomic(path, [&](std::ostream& out) {
    for (const auto& s : samples) {
      nlohmann::json j = {{"tokens", s.tokens}, {"groups", s.groups},
                          {"length", s.length}, {"depth", s.depth},
                          {"pairs", s.pairs},   {"context_end", s.context_end}};
      out << j.dump() << '\n';
    }
  });
}

std::vector<RecallSample> read_recall_jsonl(const std::string& path) {
  std::vector<RecallSample> out;
  for_each_jsonl_line(path, [&](const std::string& line, int64_t lineno) {
    const std::string where = path + ":" + std::to_string(lineno);
    try {
      const auto j = parse_jsonl_line(line, where);
      RecallSample s;
      s.tokens = j.at("tokens").get<std::vector<int32_t>>();
      s.groups = j.at("groups").get<std::vector<std::vector<int64_t>>>();
      s.length = j.value("length", int64_t(0));
      s.depth = j.value("depth", 0.0);
      s.pairs = j.value("pairs", int64_t(0));
      s.context_end = j.value("context_end", int64_t(0));
      if (s.context_end < 0 || s.context_end >= int64_t(s.tokens.size()))
        throw Error("context_end " + std::to_string(s.context_end) + " is outside the tokens");
      for (const auto& g : s.groups)
        for (int64_t p : g)
          if (p < 0 || p + 1 >= int64_t(s.tokens.size()))
            throw Error("answer position " + std::to_string(p) + " is outside the tokens");
      out.push_back(std::move(s));
    } catch (const nlohmann::json::exception& e) {
      throw Error(where + ": not a recall sample (" + e.what() + ")");
    } catch (const Error& e) {
      const std::string what = e.what();
      throw Error(what.rfind(where, 0) == 0 ? what : where + ": " + what);
    }
  });
  if (out.empty()) throw Error(path + ": no samples");
  return out;
}

std::vector<PositionBucket> bucket_losses(const std::vector<std::vector<double>>& per_document) {
  size_t longest = 0;
  for (const auto& d : per_document) longest = std::max(longest, d.size());
  std::vector<PositionBucket> out;
  std::vector<double> sums;
  for (int64_t lo = 1; lo <= int64_t(longest); lo *= 2) {
    out.push_back({lo, lo * 2, 0, 0});
    sums.push_back(0);
  }
  for (const auto& d : per_document) {
    for (size_t i = 0; i < d.size(); ++i) {
      const int64_t pos = int64_t(i) + 1;  // the predicted token's position, from 1
      const size_t b = size_t(std::bit_width(uint64_t(pos)) - 1);
      sums[b] += d[i];
      out[b].count += 1;
    }
  }
  for (size_t b = 0; b < out.size(); ++b)
    out[b].mean_loss = out[b].count ? sums[b] / double(out[b].count) : std::nan("");
  return out;
}

std::vector<double> loss_per_position(const Model& model, std::span<const int32_t> tokens,
                                      int64_t window) {
  if (tokens.size() < 2)
    throw Error("loss by position needs at least 2 tokens (got " + std::to_string(tokens.size()) +
                ")");
  if (window < 1) throw Error("loss by position: window must be at least 1");
  const int64_t V = model.config().vocab_size;
  const int64_t n = int64_t(tokens.size()) - 1;
  State st = model.new_state();
  std::vector<double> out;
  out.reserve(size_t(n));
  for (int64_t p = 0; p < n; p += window) {
    const int64_t len = std::min(window, n - p);
    const auto logits = model.forward(tokens.subspan(size_t(p), size_t(len)), st, Logits::All);
    for (int64_t i = 0; i < len; ++i)
      out.push_back(-log_prob(&logits[size_t(i * V)], V, tokens[size_t(p + i + 1)]));
  }
  return out;
}

void write_recall_svg(const std::string& path, const std::string& title, const RecallTable& t) {
  const int cell_w = 56, cell_h = 28, left = 90, top = 50;
  const int W = left + int(t.cols.size()) * cell_w + 20;
  const int H = top + int(t.rows.size()) * cell_h + 50;
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << W / 2 << "\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">"
    << svg_escape(title) << "</text>\n";
  for (size_t r = 0; r < t.rows.size(); ++r) {
    const int y = top + int(r) * cell_h;
    s << "<text x=\"" << left - 6 << "\" y=\"" << y + cell_h / 2 + 4 << "\" text-anchor=\"end\">"
      << label_of(t.rows[r]) << "</text>\n";
    for (size_t c = 0; c < t.cols.size(); ++c) {
      const double a = t.accuracy(r, c);
      const int x = left + int(c) * cell_w;
      // Red (0) to green (1); grey when the cell has no samples.
      char fill[16] = "#cccccc";
      if (std::isfinite(a))
        std::snprintf(fill, sizeof fill, "#%02x%02x40", int(220 * (1 - a)), int(40 + 160 * a));
      s << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << cell_w << "\" height=\""
        << cell_h << "\" fill=\"" << fill << "\" stroke=\"white\"/>\n";
      char txt[16];
      std::snprintf(txt, sizeof txt, std::isfinite(a) ? "%.2f" : "-", a);
      s << "<text x=\"" << x + cell_w / 2 << "\" y=\"" << y + cell_h / 2 + 4
        << "\" text-anchor=\"middle\" fill=\"white\">" << txt << "</text>\n";
    }
  }
  const int yb = top + int(t.rows.size()) * cell_h;
  for (size_t c = 0; c < t.cols.size(); ++c)
    s << "<text x=\"" << left + int(c) * cell_w + cell_w / 2 << "\" y=\"" << yb + 16
      << "\" text-anchor=\"middle\">" << label_of(t.cols[c]) << "</text>\n";
  s << "<text x=\"" << left + int(t.cols.size()) * cell_w / 2 << "\" y=\"" << yb + 36
    << "\" text-anchor=\"middle\">" << t.col_name << "</text>\n"
    << "<text x=\"14\" y=\"" << top + int(t.rows.size()) * cell_h / 2
    << "\" transform=\"rotate(-90 14 " << top + int(t.rows.size()) * cell_h / 2
    << ")\" text-anchor=\"middle\">" << t.row_name << "</text>\n</svg>\n";
  const std::string svg = s.str();
  write_file_atomic(path, [&](std::ostream& out) { out << svg; });
}

void write_position_loss_svg(const std::string& path, const std::vector<PositionBucket>& b) {
  PlotSpec spec;
  spec.title = "Mean loss by position (log2 buckets)";
  spec.x_label = "log2(position)";
  spec.y_label = "loss (nats)";
  spec.x_format = "%.0f";
  PlotSeries line;
  line.label = "mean loss";
  line.dots = true;
  for (const PositionBucket& x : b)
    if (x.count) line.points.push_back({std::log2(double(x.lo)), x.mean_loss});
  spec.series.push_back(std::move(line));
  const std::string svg = render_svg_plot(spec);
  write_file_atomic(path, [&](std::ostream& out) { out << svg; });
}

}  // namespace rwkv7
