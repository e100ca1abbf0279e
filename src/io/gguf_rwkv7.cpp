// The two-way mapping between official RWKV-7 checkpoints (SPEC §2) and llama.cpp's `rwkv7`
// GGUF layout (convert_hf_to_gguf.py Rwkv7Model, llama-arch.cpp LLM_ARCH_RWKV7).
//
// clang-format off
// | official (PyTorch shape)              | llama.cpp GGUF name (ggml ne)             | transform          |
// |---------------------------------------|-------------------------------------------|--------------------|
// | emb.weight [V, C]                     | token_embd.weight [C, V]                  | none               |
// | blocks.0.ln0.weight/.bias [C]         | token_embd_norm.weight/.bias [C]          | none               |
// | blocks.i.ln1.weight/.bias             | blk.i.attn_norm.weight/.bias              | none               |
// | blocks.i.ln2.weight/.bias             | blk.i.attn_norm_2.weight/.bias            | none               |
// | blocks.i.att.x_r x_w x_k x_v x_a x_g  | blk.i.time_mix_lerp_fused.weight          | stacked r,w,k,v,a,g|
// |   each [1, 1, C]                      |   [C, 1, 1, 6]                            |   (outermost)      |
// | att.w0 / a0 / v0 [1, 1, C]            | blk.i.time_mix_w0/a0/v0.weight [C]        | squeezed           |
// | att.w1 / a1 / v1 / g1 [C, D]          | blk.i.time_mix_w1/a1/v1/g1.weight [C, D]  | transposed         |
// | att.w2 / a2 / v2 / g2 [D, C]          | blk.i.time_mix_w2/...weight [D, C]        | transposed         |
// | att.k_k / k_a [1, 1, C]               | blk.i.time_mix_k_k/k_a.weight [C]         | squeezed           |
// | att.r_k [H, N]                        | blk.i.time_mix_r_k.weight [C]             | flattened          |
// | att.receptance/key/value/output.weight| blk.i.time_mix_receptance/key/value/      | none               |
// |   [C, C]                              |   output.weight [C, C]                    |                    |
// | att.ln_x.weight/.bias [C]             | blk.i.time_mix_ln.weight/.bias [C]        | none               |
// | ffn.x_k [1, 1, C]                     | blk.i.channel_mix_lerp_k.weight [C]       | squeezed           |
// | ffn.key.weight [F, C]                 | blk.i.channel_mix_key.weight [C, F]       | none               |
// | ffn.value.weight [C, F]               | blk.i.channel_mix_value.weight [F, C]     | none               |
// | ln_out.weight/.bias                   | output_norm.weight/.bias                  | none               |
// | head.weight [V, C]                    | output.weight [C, V]                      | none               |
// | blocks.0.att.v0/v1/v2 (unused)        | blk.0.time_mix_v0/v1/v2: llama.cpp writes | dropped on read;   |
// |                                       |   copies of a0/a1/a2 there (iclr rank)    |   a copies on write|
// clang-format on
// "none" = same bytes: ggml ne is the PyTorch shape reversed. Hyper-parameters: rwkv7.* keys
// (block_count, embedding_length, wkv.head_size, attention.{decay, iclr, value_residual_mix,
// gate}_lora_rank, feed_forward_length, attention.layer_norm_epsilon).
#include <cstring>

#include "core/quant.hpp"
#include "io/gguf.hpp"
#include "io/io_util.hpp"
#include "io/rwkv7_parameters.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

Shape reversed(const std::vector<int64_t>& ne) { return Shape(ne.rbegin(), ne.rend()); }

// Model-scope and layer-0-only parameters have GGUF names of their own (no "blk.i." prefix).
bool gguf_name_is_global(const ParamSpec& s) {
  return s.scope == ParamScope::Model || s.scope == ParamScope::FirstLayer;
}

// [a, b] row-major of any dtype → [b, a] fp32 in a buffer owned by `owners`.
const float* transpose_f32(const void* data, DType t, int64_t a, int64_t b,
                           std::vector<std::shared_ptr<const void>>& owners) {
  auto buf = io::aligned_buffer(size_t(a * b) * 4);  // a * b is bounded by the reader
  auto* out = reinterpret_cast<float*>(buf.get());
  if (a == 0 || b == 0) a = b = 0;  // empty: no loop over the other dimension
  for (int64_t i = 0; i < a; ++i)
    for (int64_t j = 0; j < b; ++j) out[j * a + i] = load_as_f32(t, data, size_t(i * b + j));
  owners.push_back(std::move(buf));
  return out;
}

int64_t u32_key(const GgufFile& g, const std::string& key) {
  const GgufValue* v = g.find(key);
  if (!v || (v->type != GgufType::U32 && v->type != GgufType::I32 && v->type != GgufType::U64)) {
    throw Error(g.path + ": GGUF metadata '" + key + "' is missing or not an integer");
  }
  return v->i;
}

}  // namespace

TensorFile rwkv7_from_gguf(GgufFile g) {
  TensorFile out;
  out.path = g.path;
  out.owners = std::move(g.owners);
  for (const auto& [k, v] : g.kv) out.metadata[k] = v.to_string();
  const int64_t N = u32_key(g, "rwkv7.wkv.head_size");
  if (N <= 0 || N > (1 << 20)) throw Error(g.path + ": rwkv7.wkv.head_size is out of range");
  const std::span<const ParamSpec> params = rwkv7_parameters();
  for (const GgufTensor& t : g.tensors) {
    auto fail = [&](const std::string& what) {
      return Error(g.path + ": GGUF tensor '" + t.name + "' " + what);
    };
    const int64_t C = t.ne.empty() ? 1 : t.ne[0];
    const ParamSpec* global = nullptr;
    for (const ParamSpec& p : params)
      if (gguf_name_is_global(p) && t.name == p.gguf) global = &p;
    if (global) {
      out.add(std::string(ParamName(*global, 0).view()),
              TensorView{t.dtype, reversed(t.ne), t.data});
      continue;
    }
    std::string_view digits, rest;
    if (!split_indexed_name(t.name, "blk.", &digits, &rest) || digits.size() > 6 ||
        rest.empty()) {  // not an rwkv7 tensor: keep it as it is
      out.add(t.name, TensorView{t.dtype, reversed(t.ne), t.data});
      continue;
    }
    const int layer = std::stoi(std::string(digits));
    bool known = false;
    for (const ParamSpec& p : params) {
      if (gguf_name_is_global(p) || rest != p.gguf) continue;
      known = true;
      // llama.cpp writes a copy of a0/a1/a2 as layer 0's unused v0/v1/v2: drop them.
      if (layer == 0 && p.scope == ParamScope::ValueResidual) continue;
      const std::string name(ParamName(p, layer).view());
      switch (p.gguf_form) {
        case GgufForm::Same:
          out.add(name, TensorView{t.dtype, reversed(t.ne), t.data});
          break;
        case GgufForm::Squeezed:
          if (t.ne.size() != 1)
            throw fail("has " + std::to_string(t.ne.size()) + " dims; expected 1");
          out.add(name, TensorView{t.dtype, {1, 1, C}, t.data});
          break;
        case GgufForm::LerpFused: {
          if (C <= 0 || shape_numel(reversed(t.ne)) != 6 * C || is_quantized(t.dtype)) {
            throw fail("must hold 6 unquantised vectors of ne[0] = " + std::to_string(C) +
                       " values");
          }
          const void* slice = static_cast<const unsigned char*>(t.data) +
                              row_bytes(t.dtype, C) * size_t(p.lerp_index);
          out.add(name, TensorView{t.dtype, {1, 1, C}, slice});
          break;
        }
        case GgufForm::Flattened:
          if (t.ne.size() != 1 || C % N != 0) {
            throw fail("must be [C] with C a multiple of the head size " + std::to_string(N));
          }
          out.add(name, TensorView{t.dtype, {C / N, N}, t.data});
          break;
        case GgufForm::TransposedLora: {
          if (t.ne.size() != 2) throw fail("must have 2 dims");
          // Stored as PyTorch [ne1, ne0]; official is its transpose [ne0, ne1].
          const float* v = transpose_f32(t.data, t.dtype, t.ne[1], t.ne[0], out.owners);
          out.add(name, TensorView{DType::F32, {t.ne[0], t.ne[1]}, v});
          break;
        }
      }
    }
    if (!known) out.add(t.name, TensorView{t.dtype, reversed(t.ne), t.data});
  }
  return out;
}

namespace {

// Owned encoding of an official tensor into `type` with ggml dims `ne`.
GgufTensor encode(const std::string& name, const TensorView& v, DType type, std::vector<int64_t> ne,
                  GgufFile& g) {
  GgufTensor t{name, type, std::move(ne), nullptr};
  if (v.dtype == type) {  // same storage: no copy
    t.data = v.data;
    return t;
  }
  const std::vector<float> f = to_f32(v);
  auto buf = io::aligned_buffer(t.nbytes());
  unsigned char* p = buf.get();
  if (is_quantized(type)) {
    const int64_t cols = t.ne[0];
    for (int64_t r = 0; r < int64_t(f.size()) / cols; ++r)
      quantize_row(type, &f[size_t(r * cols)], p + size_t(r) * row_bytes(type, cols), cols);
  } else {
    for (size_t i = 0; i < f.size(); ++i) {
      if (type == DType::F32) {
        std::memcpy(p + 4 * i, &f[i], 4);
      } else {
        const uint16_t h = type == DType::F16 ? f32_to_f16(f[i]) : f32_to_bf16(f[i]);
        std::memcpy(p + 2 * i, &h, 2);
      }
    }
  }
  t.data = p;
  g.owners.push_back(std::move(buf));
  return t;
}

// llama_ftype: ALL_F32, MOSTLY_F16, _Q4_0, _Q8_0, _Q5_0, _Q5_1, _Q4_K_S/_M, _Q5_K_S/_M, _Q6_K,
// _IQ4_NL, _BF16.
uint32_t file_type(DType t, bool mix) {
  switch (t) {
    case DType::F16:
      return 1;
    case DType::Q4_0:
      return 2;
    case DType::Q8_0:
      return 7;
    case DType::Q5_0:
      return 8;
    case DType::Q5_1:
      return 9;
    case DType::Q4_K:
      return mix ? 15 : 14;
    case DType::Q5_K:
      return mix ? 17 : 16;
    case DType::Q6_K:
      return 18;
    case DType::IQ4_NL:
      return 25;
    case DType::BF16:
      return 32;
    default:
      return 0;
  }
}

}  // namespace

// Jinja chat template of the RWKV World format: "System: …", "User: …", "Assistant: …" turns,
// each trimmed and ended by a blank line; the prompt ends with "Assistant:".
constexpr const char* kRwkvWorldChatTemplate =
    "{%- for message in messages -%}\n"
    "{%- if message['role'] == 'system' -%}\n"
    "{{- 'System: ' + message['content']|trim + '\\n\\n' -}}\n"
    "{%- elif message['role'] == 'user' -%}\n"
    "{{- 'User: ' + message['content']|trim + '\\n\\n' -}}\n"
    "{%- elif message['role'] == 'assistant' -%}\n"
    "{{- 'Assistant: ' + message['content']|trim + '\\n\\n' -}}\n"
    "{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}{{- 'Assistant:' -}}{%- endif -%}\n";

DType gguf_matrix_type(DType type, int64_t cols) {
  if (!is_quantized(type) || cols % quant_block_elems(type) == 0) return type;
  const DType fallback = type == DType::Q4_K   ? DType::Q5_0
                         : type == DType::Q5_K ? DType::Q5_1
                         : type == DType::Q6_K ? DType::Q8_0
                                               : DType::F16;
  if (fallback != DType::F16 && cols % quant_block_elems(fallback) == 0) return fallback;
  return DType::F16;
}

std::string rwkv_world_token_text(const std::string& bytes) {
  const bool has_single = bytes.find('\'') != std::string::npos;
  const bool has_double = bytes.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    if (c == uint8_t(quote) || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c >= 0x7f) {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += char(c);
    }
  }
  return out;
}

GgufFile rwkv7_to_gguf(const TensorFile& f, const GgufModelOptions& opts) {
  if (!(opts.type == DType::F32 || opts.type == DType::F16 || opts.type == DType::BF16 ||
        is_quantized(opts.type))) {
    throw Error("GGUF conversion: unsupported target type " + dtype_name(opts.type));
  }
  GgufFile g;
  g.path = f.path;
  g.owners = f.owners;
  auto dims = [&](const std::string& name, size_t rank) {
    const TensorView& v = f.get(name);
    if (v.shape.size() != rank) {
      throw Error(f.path + ": tensor '" + name + "' has shape " + shape_str(v.shape) +
                  "; expected rank " + std::to_string(rank));
    }
    return v.shape;
  };
  const Shape emb = dims("emb.weight", 2), rk = dims("blocks.0.att.r_k", 2);
  const int64_t V = emb[0], C = emb[1], N = rk[1];
  int64_t L = 0;
  for (const auto& [name, v] : f.tensors) {
    std::string_view digits, rest;
    if (split_indexed_name(name, "blocks.", &digits, &rest) && digits.size() <= 6)
      L = std::max<int64_t>(L, std::stoll(std::string(digits)) + 1);
  }
  const int64_t F = dims("blocks.0.ffn.key.weight", 2)[0];
  const int64_t Dw = dims("blocks.0.att.w1", 2)[1], Da = dims("blocks.0.att.a1", 2)[1];
  const int64_t Dg = dims("blocks.0.att.g1", 2)[1];
  const int64_t Dv = L > 1 ? dims("blocks.1.att.v1", 2)[1] : Da;
  auto u32 = [](int64_t v) { return GgufValue::u32(uint32_t(v)); };
  g.kv.emplace_back("general.architecture", GgufValue::str("rwkv7"));
  if (!opts.name.empty()) g.kv.emplace_back("general.name", GgufValue::str(opts.name));
  g.kv.emplace_back("rwkv7.context_length", u32(1048576));  // RWKV is not context limited
  g.kv.emplace_back("rwkv7.embedding_length", u32(C));
  g.kv.emplace_back("rwkv7.block_count", u32(L));
  g.kv.emplace_back("rwkv7.attention.layer_norm_epsilon", GgufValue::f32(1e-5f));
  g.kv.emplace_back("rwkv7.wkv.head_size", u32(N));
  g.kv.emplace_back("rwkv7.attention.decay_lora_rank", u32(Dw));
  g.kv.emplace_back("rwkv7.attention.iclr_lora_rank", u32(Da));
  g.kv.emplace_back("rwkv7.attention.value_residual_mix_lora_rank", u32(Dv));
  g.kv.emplace_back("rwkv7.attention.gate_lora_rank", u32(Dg));
  g.kv.emplace_back("rwkv7.feed_forward_length", u32(F));
  g.kv.emplace_back("general.file_type", u32(file_type(opts.type, opts.llama_mix)));
  g.kv.emplace_back("rwkv7.attention.head_count", u32(0));  // required by llama.cpp, unused
  g.kv.emplace_back("general.quantization_version", u32(2));
  // Tokenizer metadata as llama.cpp's converter writes it ("rwkv": a greedy longest-match trie
  // over escaped token bytes; token 0 is "<s>"), so that llama.cpp loads the file: the World
  // vocabulary when one is given, else for a byte-level model (V = 256) the 256 bytes.
  if (!opts.tokens.empty() || V == 256) {
    if (int64_t(opts.tokens.size()) > V) {
      throw Error("GGUF conversion: the vocabulary has " + std::to_string(opts.tokens.size()) +
                  " tokens but the model only " + std::to_string(V));
    }
    const bool bytes = opts.tokens.empty();
    std::vector<GgufValue> toks, types;
    toks.push_back(GgufValue::str("<s>"));
    types.push_back(GgufValue::i32(3));  // CONTROL
    int64_t double_newline = -1;
    for (size_t i = 1; i < size_t(V); ++i) {
      const bool real = bytes || i < opts.tokens.size();
      const std::string token = bytes ? std::string(1, char(i)) : real ? opts.tokens[i] : "";
      if (token == "\n\n" && double_newline < 0) double_newline = int64_t(i);
      toks.push_back(
          GgufValue::str(real ? rwkv_world_token_text(token) : "[PAD" + std::to_string(i) + "]"));
      types.push_back(GgufValue::i32(real ? 1 : 5));  // NORMAL / UNUSED
    }
    g.kv.emplace_back("tokenizer.ggml.model", GgufValue::str("rwkv"));
    g.kv.emplace_back("tokenizer.ggml.tokens", GgufValue::array(GgufType::STRING, std::move(toks)));
    g.kv.emplace_back("tokenizer.ggml.token_type",
                      GgufValue::array(GgufType::I32, std::move(types)));
    if (!bytes) {
      // The RWKV chat format ("User: …\n\nAssistant:", rwkv7 chat's), which llama.cpp
      // recognises as its rwkv-world template; a reply ends at "\n\n" (end of turn).
      g.kv.emplace_back("tokenizer.chat_template", GgufValue::str(kRwkvWorldChatTemplate));
      g.kv.emplace_back("tokenizer.ggml.bos_token_id", u32(0));
      g.kv.emplace_back("tokenizer.ggml.eos_token_id", u32(0));
      if (double_newline >= 0)
        g.kv.emplace_back("tokenizer.ggml.eot_token_id", u32(double_newline));
    }
  }
  // Product matrices: the target type (quantised only with whole blocks, else f16); rest f32.
  const ParamDims pd{C, V, F, rk[0], N, Dw, Da, Dv, Dg};
  auto put = [&](const ParamSpec& p, const std::string& official, const std::string& gguf,
                 std::vector<int64_t> ne) {
    const TensorView& v = f.get(official);
    const Shape want = param_shape(p, pd);
    if (v.numel() != shape_numel(want) || (p.rank == 2 && v.shape != want)) {
      throw Error(f.path + ": tensor '" + official + "' has shape " + shape_str(v.shape) +
                  "; expected " + shape_str(want));
    }
    DType type = DType::F32;
    if (p.kind == ParamKind::Matrix) {
      type = gguf_matrix_type(opts.type, ne[0]);
      // llama_tensor_get_type: output.weight → Q6_K, or Q8_0 when not whole super-blocks.
      if (opts.llama_mix && p.id == ParamId::Head)
        type = ne[0] % kSuperBlock == 0 ? DType::Q6_K : DType::Q8_0;
    }
    g.tensors.push_back(encode(gguf, v, type, std::move(ne), g));
  };
  for_each_parameter(L, UnusedCopies::Include, [&](const ParamSpec& p, int64_t layer) {
    const std::string gguf = gguf_name_is_global(p)
                                 ? std::string(p.gguf)
                                 : "blk." + std::to_string(layer) + "." + std::string(p.gguf);
    // llama.cpp expects layer 0's unused v0/v1/v2 to be copies of a0/a1/a2.
    const ParamSpec& src = layer == 0 && p.scope == ParamScope::ValueResidual
                               ? param_spec(p.id == ParamId::V0   ? ParamId::A0
                                            : p.id == ParamId::V1 ? ParamId::A1
                                                                  : ParamId::A2)
                               : p;
    const std::string official(ParamName(src, layer).view());
    switch (p.gguf_form) {
      case GgufForm::Same: {
        const Shape s = f.get(official).shape;
        put(src, official, gguf, std::vector<int64_t>(s.rbegin(), s.rend()));
        break;
      }
      case GgufForm::Squeezed:
      case GgufForm::Flattened:
        put(src, official, gguf, {C});
        break;
      case GgufForm::LerpFused: {
        if (p.lerp_index != 0) break;  // the stack is written with its first member
        // Fused token-shift mixes, [6, C] as PyTorch = ne [C, 1, 1, 6].
        auto buf = io::aligned_buffer(size_t(6 * C) * 4);
        auto* lerp = reinterpret_cast<float*>(buf.get());
        for (const ParamSpec& m : rwkv7_parameters()) {
          if (m.gguf_form != GgufForm::LerpFused) continue;
          const std::string name(ParamName(m, layer).view());
          const TensorView& v = f.get(name);
          if (v.numel() != C)
            throw Error(f.path + ": tensor '" + name + "' must have " + std::to_string(C) +
                        " values");
          const std::vector<float> x = to_f32(v);
          std::memcpy(lerp + m.lerp_index * C, x.data(), size_t(C) * 4);
        }
        g.owners.push_back(std::move(buf));
        g.tensors.push_back(GgufTensor{gguf, DType::F32, {C, 1, 1, 6}, lerp});
        break;
      }
      case GgufForm::TransposedLora: {
        const Shape s = dims(official, 2);
        if (s != param_shape(src, pd))
          throw Error(f.path + ": tensor '" + official + "' has shape " + shape_str(s) +
                      "; expected " + shape_str(param_shape(src, pd)));
        // Official [a, b] is stored transposed: PyTorch [b, a] = ne [a, b].
        const TensorView& v = f.get(official);
        const float* t = transpose_f32(v.data, v.dtype, s[0], s[1], g.owners);
        TensorView tv{DType::F32, {s[1], s[0]}, t};
        g.tensors.push_back(encode(gguf, tv, DType::F32, {s[0], s[1]}, g));
        break;
      }
    }
  });
  return g;
}

TensorFile read_gguf(std::shared_ptr<const MappedFile> file) {
  GgufFile g = read_gguf_raw(std::move(file));
  const GgufValue* arch = g.find("general.architecture");
  if (arch && arch->type == GgufType::STRING && arch->s == "rwkv7")
    return rwkv7_from_gguf(std::move(g));
  TensorFile out;
  out.path = g.path;
  for (const auto& [k, v] : g.kv) out.metadata[k] = v.to_string();
  for (const GgufTensor& t : g.tensors)
    out.add(t.name, TensorView{t.dtype, reversed(t.ne), t.data});
  out.owners = std::move(g.owners);
  return out;
}

TensorFile read_gguf(const std::string& path) { return read_gguf(MappedFile::open(path)); }

}  // namespace rwkv7
