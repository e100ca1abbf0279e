// Reference forward/backward of the cheap RWKV-7 training ops (see backward_ops.hpp). Sums use
// double accumulators so float and double instantiations differ only by storage rounding.
#include "ops/backward_ops.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/lane_sum.hpp"

namespace rwkv7::train {
namespace {

template <class T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

}  // namespace

// ---------------------------------------------------------------- embedding

template <class T>
void embedding_forward(const EmbeddingArgs<T>& a) {
  for (int64_t r = 0; r < a.R; ++r)
    std::copy_n(a.table + int64_t(a.tokens[r]) * a.C, a.C, a.y + r * a.C);
}

template <class T>
void embedding_backward(const EmbeddingArgs<T>& a) {
  for (int64_t r = 0; r < a.R; ++r) {
    T* d = a.dtable + int64_t(a.tokens[r]) * a.C;
    for (int64_t c = 0; c < a.C; ++c) d[c] += a.dy[r * a.C + c];
  }
}

// ---------------------------------------------------------------- LayerNorm / GroupNorm

template <class T>
void norm_forward(const NormArgs<T>& a) {
  const int64_t g = a.n / a.groups;
  for (int64_t r = 0; r < a.R; ++r) {
    for (int64_t h = 0; h < a.groups; ++h) {
      const int64_t o = r * a.n + h * g;
      const T* x = a.x + o;
      const double mean = lane_sum(g, [x](int64_t i) { return double(x[i]); }) / double(g);
      const double var = lane_sum(g,
                                  [x, mean](int64_t i) {
                                    const double d = x[i] - mean;
                                    return d * d;
                                  }) /
                         double(g);
      const T inv = T(1.0 / std::sqrt(var + double(a.eps))), m = T(mean);
      if (a.stats) {  // null when nothing will run backward (inference)
        a.stats[(r * a.groups + h) * 2] = m;
        a.stats[(r * a.groups + h) * 2 + 1] = inv;
      }
      for (int64_t i = 0; i < g; ++i)
        a.y[o + i] = (x[i] - m) * inv * a.w[h * g + i] + a.b[h * g + i];
    }
  }
}

// dx = inv · (dx̂ - mean(dx̂) - x̂ · mean(dx̂ · x̂)), dx̂ = dy · w.
template <class T>
void norm_backward(const NormArgs<T>& a) {
  const int64_t g = a.n / a.groups;
  for (int64_t r = 0; r < a.R; ++r) {
    for (int64_t h = 0; h < a.groups; ++h) {
      const int64_t o = r * a.n + h * g;
      const T m = a.stats[(r * a.groups + h) * 2], inv = a.stats[(r * a.groups + h) * 2 + 1];
      double s1 = 0, s2 = 0;
      for (int64_t i = 0; i < g; ++i) {
        const T xh = (a.x[o + i] - m) * inv, dy = a.dy[o + i];
        const T dxh = dy * a.w[h * g + i];
        s1 += dxh;
        s2 += double(dxh) * xh;
        if (a.dw) a.dw[h * g + i] += dy * xh;
        if (a.db) a.db[h * g + i] += dy;
      }
      if (!a.dx) continue;
      const T m1 = T(s1 / double(g)), m2 = T(s2 / double(g));
      for (int64_t i = 0; i < g; ++i) {
        const T xh = (a.x[o + i] - m) * inv;
        a.dx[o + i] += inv * (a.dy[o + i] * a.w[h * g + i] - m1 - xh * m2);
      }
    }
  }
}

// ---------------------------------------------------------------- token shift + mix

template <class T>
void shift_mix_forward(const ShiftMixArgs<T>& a) {
  for (int64_t b = 0; b < a.B; ++b) {
    for (int64_t t = 0; t < a.S; ++t) {
      const int64_t row = b * a.S + t;
      const T* cur = a.x + row * a.C;
      const T* prev = t > 0 ? cur - a.C : (a.prev0 ? a.prev0 + b * a.C : nullptr);
      for (int64_t c = 0; c < a.C; ++c) {
        const T p = prev ? prev[c] : T(0);
        a.y[row * a.C + c] = cur[c] + (p - cur[c]) * a.mix[c];
      }
    }
  }
}

template <class T>
void shift_mix_backward(const ShiftMixArgs<T>& a) {
  for (int64_t b = 0; b < a.B; ++b) {
    for (int64_t t = 0; t < a.S; ++t) {
      const int64_t row = b * a.S + t;
      const T* cur = a.x + row * a.C;
      const T* prev = t > 0 ? cur - a.C : (a.prev0 ? a.prev0 + b * a.C : nullptr);
      T* dprev = t > 0 ? (a.dx ? a.dx + (row - 1) * a.C : nullptr)
                       : (a.dprev0 ? a.dprev0 + b * a.C : nullptr);
      // One loop per output, each over distinct rows (restrict): vectorised, where one loop
      // with the three updates ran scalar (the compiler could not rule out aliasing).
      const T* __restrict dy = a.dy + row * a.C;
      const T* __restrict mix = a.mix;
      if (a.dx) {
        T* __restrict d = a.dx + row * a.C;
        for (int64_t c = 0; c < a.C; ++c) d[c] += dy[c] * (T(1) - mix[c]);
      }
      if (dprev) {
        T* __restrict d = dprev;
        for (int64_t c = 0; c < a.C; ++c) d[c] += dy[c] * mix[c];
      }
      if (a.dmix) {
        T* __restrict d = a.dmix;
        if (prev) {
          for (int64_t c = 0; c < a.C; ++c) d[c] += dy[c] * (prev[c] - cur[c]);
        } else {
          for (int64_t c = 0; c < a.C; ++c) d[c] += dy[c] * (T(0) - cur[c]);
        }
      }
    }
  }
}

// ---------------------------------------------------------------- dense product

template <class T>
void linear_forward(const LinearArgs<T>& a) {
  for (int64_t r = 0; r < a.R; ++r) {
    for (int64_t o = 0; o < a.out; ++o) {
      double acc = 0;
      for (int64_t i = 0; i < a.in; ++i) {
        const T w = a.w_in_out ? a.w[i * a.out + o] : a.w[o * a.in + i];
        acc += double(a.x[r * a.in + i]) * w;
      }
      a.y[r * a.out + o] = T(acc);
    }
  }
}

template <class T>
void linear_backward(const LinearArgs<T>& a) {
  for (int64_t r = 0; r < a.R; ++r) {
    for (int64_t o = 0; o < a.out; ++o) {
      const T dy = a.dy[r * a.out + o];
      for (int64_t i = 0; i < a.in; ++i) {
        const int64_t wi = a.w_in_out ? i * a.out + o : o * a.in + i;
        if (a.dx) a.dx[r * a.in + i] += dy * a.w[wi];
        if (a.dw) a.dw[wi] += dy * a.x[r * a.in + i];
      }
    }
  }
}

// ---------------------------------------------------------------- activations

template <class T>
void act_forward(const ActArgs<T>& a) {
  for (int64_t i = 0; i < a.n; ++i) {
    const T x = a.x[i];
    switch (a.act) {
      case Act::Tanh:
        a.y[i] = std::tanh(x);
        break;
      case Act::Sigmoid:
        a.y[i] = sigmoid(x);
        break;
      case Act::ReluSq:
        a.y[i] = x > T(0) ? x * x : T(0);
        break;
    }
  }
}

template <class T>
void act_backward(const ActArgs<T>& a) {
  // One loop per activation (no branch inside: the compiler vectorises each).
  const T *dy = a.dy, *x = a.x, *y = a.y;
  T* dx = a.dx;
  switch (a.act) {
    case Act::Tanh:
      for (int64_t i = 0; i < a.n; ++i) dx[i] += dy[i] * (T(1) - y[i] * y[i]);
      break;
    case Act::Sigmoid:
      for (int64_t i = 0; i < a.n; ++i) dx[i] += dy[i] * y[i] * (T(1) - y[i]);
      break;
    case Act::ReluSq:
      // max(0, x) (0 for a NaN x, as x > 0 ? x : 0) rather than a branch on x > 0: that
      // branch, taken for about half the inputs at random, mispredicted and kept the loop
      // scalar (4.5% of a bf16 training step in perf).
      for (int64_t i = 0; i < a.n; ++i) dx[i] += dy[i] * T(2) * std::max(T(0), x[i]);
      break;
  }
}

// ---------------------------------------------------------------- bias + sigmoid / decay

template <class T>
void bias_sigmoid_forward(const BiasSigmoidArgs<T>& a) {
  const T e_half = std::exp(T(-0.5));
  for (int64_t r = 0; r < a.R; ++r) {
    for (int64_t c = 0; c < a.C; ++c) {
      const T s = sigmoid(a.bias[c] + a.z[r * a.C + c]);
      a.y[r * a.C + c] = a.kind == BiasSigmoidKind::Sigmoid ? s : std::exp(-e_half * s);
    }
  }
}

template <class T>
void bias_sigmoid_backward(const BiasSigmoidArgs<T>& a) {
  const T e_half = std::exp(T(-0.5));
  for (int64_t r = 0; r < a.R; ++r) {
    for (int64_t c = 0; c < a.C; ++c) {
      const int64_t i = r * a.C + c;
      T dpre;
      if (a.kind == BiasSigmoidKind::Sigmoid) {
        dpre = a.dy[i] * a.y[i] * (T(1) - a.y[i]);
      } else {
        // decay = exp(-e^-0.5·s): d decay/ds = -e^-0.5·decay, ds/dpre = s(1-s); s recomputed
        // from the pre-activation rather than from log(decay), which loses bits near 1.
        const T s = sigmoid(a.bias[c] + a.z[i]);
        dpre = a.dy[i] * (-e_half * a.y[i]) * s * (T(1) - s);
      }
      if (a.dz) a.dz[i] += dpre;
      if (a.dbias) a.dbias[c] += dpre;
    }
  }
}

// ---------------------------------------------------------------- value residual

template <class T>
void value_residual_forward(const ValueResidualArgs<T>& a) {
  for (int64_t r = 0; r < a.R; ++r) {
    for (int64_t c = 0; c < a.C; ++c) {
      const int64_t i = r * a.C + c;
      const T s = sigmoid(a.v0[c] + a.z[i]);
      a.y[i] = a.v[i] + (a.v_first[i] - a.v[i]) * s;
    }
  }
}

template <class T>
void value_residual_backward(const ValueResidualArgs<T>& a) {
  for (int64_t r = 0; r < a.R; ++r) {
    for (int64_t c = 0; c < a.C; ++c) {
      const int64_t i = r * a.C + c;
      const T s = sigmoid(a.v0[c] + a.z[i]), dy = a.dy[i];
      if (a.dv) a.dv[i] += dy * (T(1) - s);
      if (a.dv_first) a.dv_first[i] += dy * s;
      const T dpre = dy * (a.v_first[i] - a.v[i]) * s * (T(1) - s);
      if (a.dz) a.dz[i] += dpre;
      if (a.dv0) a.dv0[c] += dpre;
    }
  }
}

// ---------------------------------------------------------------- kk, wa, wb, k scaling

template <class T>
void wkv_inputs_forward(const WkvInputsArgs<T>& a) {
  const int64_t C = a.H * a.N;
  for (int64_t r = 0; r < a.R; ++r) {
    for (int64_t h = 0; h < a.H; ++h) {
      const int64_t o = r * C + h * a.N;
      double norm = 0;
      for (int64_t j = 0; j < a.N; ++j) {
        const double u = double(a.k[o + j]) * a.k_k[h * a.N + j];
        norm += u * u;
      }
      const T inv = T(1) / std::max(T(std::sqrt(norm)), T(1e-12));
      for (int64_t j = 0; j < a.N; ++j) {
        const int64_t i = o + j, p = h * a.N + j;
        const T kk = a.k[i] * a.k_k[p] * inv;
        a.wa[i] = -kk;
        a.wb[i] = kk * a.a[i];
        a.k_out[i] = a.k[i] * (T(1) + (a.a[i] - T(1)) * a.k_a[p]);
      }
    }
  }
}

// With u = k*k_k, n = ‖u‖, kk = u / max(n, 1e-12):
//   n > 1e-12: du = (dkk - kk·(kk·dkk)) / n;   otherwise (clamped) du = dkk / 1e-12.
template <class T>
void wkv_inputs_backward(const WkvInputsArgs<T>& a) {
  const int64_t C = a.H * a.N;
  thread_local std::vector<T> dkk;  // per head; kept between calls (no allocation per step)
  dkk.assign(size_t(a.N), T(0));
  for (int64_t r = 0; r < a.R; ++r) {
    for (int64_t h = 0; h < a.H; ++h) {
      const int64_t o = r * C + h * a.N;
      double norm = 0;
      for (int64_t j = 0; j < a.N; ++j) {
        const double u = double(a.k[o + j]) * a.k_k[h * a.N + j];
        norm += u * u;
      }
      const T n = T(std::sqrt(norm));
      const bool clamped = !(n > T(1e-12));
      const T inv = T(1) / std::max(n, T(1e-12));
      double dot = 0;
      for (int64_t j = 0; j < a.N; ++j) {
        const int64_t i = o + j, p = h * a.N + j;
        const T kk = a.k[i] * a.k_k[p] * inv;
        T d = 0;
        if (a.dwa) d -= a.dwa[i];
        if (a.dwb) {
          d += a.dwb[i] * a.a[i];
          if (a.da) a.da[i] += a.dwb[i] * kk;
        }
        dkk[size_t(j)] = d;
        dot += double(d) * kk;
      }
      for (int64_t j = 0; j < a.N; ++j) {
        const int64_t i = o + j, p = h * a.N + j;
        const T kk = a.k[i] * a.k_k[p] * inv;
        const T du = clamped ? dkk[size_t(j)] * inv : (dkk[size_t(j)] - kk * T(dot)) * inv;
        T dk = du * a.k_k[p];
        if (a.dk_k) a.dk_k[p] += du * a.k[i];
        if (a.dk_out) {
          const T g = a.dk_out[i];
          dk += g * (T(1) + (a.a[i] - T(1)) * a.k_a[p]);
          if (a.da) a.da[i] += g * a.k[i] * a.k_a[p];
          if (a.dk_a) a.dk_a[p] += g * a.k[i] * (a.a[i] - T(1));
        }
        if (a.dk) a.dk[i] += dk;
      }
    }
  }
}

// ---------------------------------------------------------------- bonus, gate

template <class T>
void bonus_forward(const BonusArgs<T>& a) {
  const int64_t C = a.H * a.N;
  for (int64_t r = 0; r < a.R; ++r) {
    for (int64_t h = 0; h < a.H; ++h) {
      const int64_t o = r * C + h * a.N;
      double s = 0;
      for (int64_t j = 0; j < a.N; ++j) s += double(a.r[o + j]) * a.k[o + j] * a.r_k[h * a.N + j];
      for (int64_t j = 0; j < a.N; ++j) a.y[o + j] += T(s) * a.v[o + j];
    }
  }
}

template <class T>
void bonus_backward(const BonusArgs<T>& a) {
  const int64_t C = a.H * a.N;
  for (int64_t r = 0; r < a.R; ++r) {
    for (int64_t h = 0; h < a.H; ++h) {
      const int64_t o = r * C + h * a.N;
      double s = 0, q = 0;  // s = Σ r·k·r_k, q = dy·v
      for (int64_t j = 0; j < a.N; ++j) {
        s += double(a.r[o + j]) * a.k[o + j] * a.r_k[h * a.N + j];
        q += double(a.dy[o + j]) * a.v[o + j];
      }
      for (int64_t j = 0; j < a.N; ++j) {
        const int64_t i = o + j, p = h * a.N + j;
        if (a.dv) a.dv[i] += a.dy[i] * T(s);
        if (a.dr) a.dr[i] += T(q) * a.k[i] * a.r_k[p];
        if (a.dk) a.dk[i] += T(q) * a.r[i] * a.r_k[p];
        if (a.dr_k) a.dr_k[p] += T(q) * a.r[i] * a.k[i];
      }
    }
  }
}

template <class T>
void mul_forward(const MulArgs<T>& a) {
  for (int64_t i = 0; i < a.n; ++i) a.y[i] = a.p[i] * a.q[i];
}

template <class T>
void mul_backward(const MulArgs<T>& a) {
  for (int64_t i = 0; i < a.n; ++i) {
    if (a.dp) a.dp[i] += a.dy[i] * a.q[i];
    if (a.dq) a.dq[i] += a.dy[i] * a.p[i];
  }
}

// ---------------------------------------------------------------- cross-entropy

template <class T>
double cross_entropy(const CrossEntropyArgs<T>& a) {
  double total = 0;
  const double inv_r = 1.0 / double(a.mean_over > 0 ? a.mean_over : a.R);
  for (int64_t r = 0; r < a.R; ++r) {
    const T* l = a.logits + r * a.V;
    int64_t arg = 0;
    for (int64_t v = 1; v < a.V; ++v)
      if (l[v] > l[arg]) arg = v;
    const double mx = l[arg];
    double sum = 0;
    for (int64_t v = 0; v < a.V; ++v) sum += std::exp(double(l[v]) - mx);
    const double lse = mx + std::log(sum);
    if (a.soft_targets) {
      const T* p = a.soft_targets + r * a.V;
      double mass = 0, dot = 0;
      for (int64_t v = 0; v < a.V; ++v) {
        mass += double(p[v]);
        dot += double(p[v]) * double(l[v]);
      }
      total += mass * lse - dot;
      if (!a.dlogits) continue;
      T* d = a.dlogits + r * a.V;  // may alias l: each element read before it is written
      for (int64_t v = 0; v < a.V; ++v)
        d[v] = T((mass * std::exp(double(l[v]) - lse) - double(p[v])) * inv_r);
      continue;
    }
    total += lse - double(l[a.targets[r]]);
    if (!a.dlogits) continue;
    T* d = a.dlogits + r * a.V;
    for (int64_t v = 0; v < a.V; ++v) d[v] = T(std::exp(double(l[v]) - lse) * inv_r);
    d[a.targets[r]] -= T(inv_r);
    if (a.l2wrap) d[arg] += T(1e-4 * inv_r * mx);
  }
  return total * inv_r;
}

double cross_entropy(const CrossEntropyArgs<float>& a, const PointwiseOps& ops) {
  if (a.soft_targets) return cross_entropy<float>(a);
  double total = 0;
  const double inv_r = 1.0 / double(a.mean_over > 0 ? a.mean_over : a.R);
  const size_t V = size_t(a.V);
  for (int64_t r = 0; r < a.R; ++r) {
    const float* l = a.logits + r * a.V;
    const float mx = ops.max_value(l, V);
    const double sum = ops.exp_sum(l, mx, V);
    total += double(mx) + std::log(sum) - double(l[a.targets[r]]);
    if (!a.dlogits) continue;
    // The first largest; none equals a NaN max: then 0, as the scalar loop (the loss is NaN).
    int64_t arg = 0;
    if (a.l2wrap) {
      const float* first = std::find(l, l + V, mx);
      arg = first == l + V ? 0 : first - l;
    }
    float* d = a.dlogits + r * a.V;                  // may alias l
    ops.exp_scale(l, mx, float(inv_r / sum), d, V);  // softmax / mean_over
    d[a.targets[r]] -= float(inv_r);
    if (a.l2wrap) d[arg] += float(1e-4 * inv_r * mx);
  }
  return total * inv_r;
}

#define RWKV7_INSTANTIATE(T)                                             \
  template void embedding_forward<T>(const EmbeddingArgs<T>&);           \
  template void embedding_backward<T>(const EmbeddingArgs<T>&);          \
  template void norm_forward<T>(const NormArgs<T>&);                     \
  template void norm_backward<T>(const NormArgs<T>&);                    \
  template void shift_mix_forward<T>(const ShiftMixArgs<T>&);            \
  template void shift_mix_backward<T>(const ShiftMixArgs<T>&);           \
  template void linear_forward<T>(const LinearArgs<T>&);                 \
  template void linear_backward<T>(const LinearArgs<T>&);                \
  template void act_forward<T>(const ActArgs<T>&);                       \
  template void act_backward<T>(const ActArgs<T>&);                      \
  template void bias_sigmoid_forward<T>(const BiasSigmoidArgs<T>&);      \
  template void bias_sigmoid_backward<T>(const BiasSigmoidArgs<T>&);     \
  template void value_residual_forward<T>(const ValueResidualArgs<T>&);  \
  template void value_residual_backward<T>(const ValueResidualArgs<T>&); \
  template void wkv_inputs_forward<T>(const WkvInputsArgs<T>&);          \
  template void wkv_inputs_backward<T>(const WkvInputsArgs<T>&);         \
  template void bonus_forward<T>(const BonusArgs<T>&);                   \
  template void bonus_backward<T>(const BonusArgs<T>&);                  \
  template void mul_forward<T>(const MulArgs<T>&);                       \
  template void mul_backward<T>(const MulArgs<T>&);                      \
  template double cross_entropy<T>(const CrossEntropyArgs<T>&);

RWKV7_INSTANTIATE(float)
RWKV7_INSTANTIATE(double)
#undef RWKV7_INSTANTIATE

}  // namespace rwkv7::train
