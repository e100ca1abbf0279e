#pragma once
// What the training backward reads of one layer's forward (the graph keeps it when asked).
// Shapes: [R, C] unless noted; R = rows of the pass (positions of all sequences stacked).
#include <vector>

namespace rwkv7 {

struct LayerActs {
  using Buf = std::vector<float>;
  Buf x_in, ln1_stats /*[R,2]*/, xa, xr, xw, xk, xv, xa2, xg;
  Buf r, k, v_raw;
  Buf w_low /*[R,Dw], after tanh*/, wz, decay;
  Buf v_low /*[R,Dv]*/, vz, v;  // v: after the value residual (= v_raw in layer 0)
  Buf a_low /*[R,Da]*/, az, a;
  Buf g_low /*[R,Dg], after σ*/, g;
  Buf wa, wb, kf;               // WKV inputs; kf = k scaled by the rate
  Buf y, gn_stats /*[R,H,2]*/;  // WKV output before GroupNorm
  Buf yb, yg;                   // GroupNorm + bonus; times the gate
  Buf x_mid, ln2_stats, xf, xkf, h_pre /*[R,F]*/, h;
};

}  // namespace rwkv7
