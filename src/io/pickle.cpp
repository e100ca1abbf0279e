#include "io/pickle.hpp"

#include <cstring>
#include <deque>
#include <memory>
#include <unordered_map>

#include "io/io_util.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7::io {

namespace {

// Globals a state dict may name. Storage types are all accepted here; the ones DType cannot
// represent are refused later, naming the tensor.
bool is_storage_type(const std::string& g) {
  static const char* const kStorages[] = {
      "torch.FloatStorage", "torch.HalfStorage", "torch.BFloat16Storage", "torch.DoubleStorage",
      "torch.LongStorage",  "torch.IntStorage",  "torch.ShortStorage",    "torch.CharStorage",
      "torch.ByteStorage",  "torch.BoolStorage"};
  for (const char* s : kStorages) {
    if (g == s) return true;
  }
  return false;
}

bool is_allowed_global(const std::string& g) {
  return g == "collections.OrderedDict" || g == "torch._utils._rebuild_tensor_v2" ||
         g == "torch._utils._rebuild_parameter" || is_storage_type(g);
}

struct Value {
  enum class Kind {
    None,
    Bool,
    Int,
    Float,
    Str,
    Bytes,
    Tuple,
    List,
    Dict,
    Global,
    Storage,
    Tensor
  };
  // The rarer, larger parts live apart so that the common values (ints, strings, tuples)
  // stay small: memory per input byte is what bounds a hostile pickle.
  struct Extra {
    std::string key;  // Storage key
    std::vector<std::pair<Value*, Value*>> dict;
    PickledTensor tensor;
  };
  explicit Value(Kind k) : kind(k) {
    if (k == Kind::Storage || k == Kind::Dict || k == Kind::Tensor) x = std::make_unique<Extra>();
  }
  Kind kind;
  int64_t i = 0;
  double f = 0;
  std::string s;              // Str, Bytes, Global name, Storage type
  std::vector<Value*> items;  // Tuple, List
  std::unique_ptr<Extra> x;   // Storage, Dict, Tensor
};
using Kind = Value::Kind;

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::None:
      return "None";
    case Kind::Bool:
      return "bool";
    case Kind::Int:
      return "int";
    case Kind::Float:
      return "float";
    case Kind::Str:
      return "str";
    case Kind::Bytes:
      return "bytes";
    case Kind::Tuple:
      return "tuple";
    case Kind::List:
      return "list";
    case Kind::Dict:
      return "dict";
    case Kind::Global:
      return "global";
    case Kind::Storage:
      return "storage";
    case Kind::Tensor:
      return "tensor";
  }
  return "?";
}

constexpr size_t kMaxValues = size_t(1) << 24;
// Memory the unpickler may use per byte of pickle (plus kSlack): values, strings, container
// slots and memo entries are charged as they are made. A real torch.save pickle needs about
// kTypicalBytesPerByte (measured on the shipped and ../shared checkpoints); one made to
// allocate (a stream of one-byte EMPTY_DICT or TUPLE1 opcodes) is refused with an error.
constexpr size_t kBytesPerInputByte = 64;
constexpr size_t kSlack = size_t(1) << 20;

class Unpickler {
 public:
  Unpickler(std::span<const unsigned char> b, const std::string& where)
      : b_(b), where_(where), budget_(kBytesPerInputByte * b.size() + kSlack) {}
  size_t used() const { return kBytesPerInputByte * b_.size() + kSlack - budget_; }
  Value* run();

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(where_ + ": data.pkl: " + what + " (at byte " + std::to_string(op_pos_) + ")");
  }

 private:
  void charge(size_t bytes) {
    if (bytes > budget_) {
      fail("pickle needs more memory than a state dict of its size would (over " +
           std::to_string(kBytesPerInputByte) + " bytes per pickle byte)");
    }
    budget_ -= bytes;
  }
  Value* make(Kind k) {
    if (arena_.size() >= kMaxValues) fail("pickle holds too many objects for a state dict");
    const bool extra = k == Kind::Storage || k == Kind::Dict || k == Kind::Tensor;
    charge(sizeof(Value) + (extra ? sizeof(Value::Extra) + 16 : 0));
    return &arena_.emplace_back(k);
  }
  const unsigned char* need(size_t n) {
    if (n > b_.size() - p_) fail("pickle ends unexpectedly (truncated)");
    const unsigned char* q = b_.data() + p_;
    p_ += n;
    return q;
  }
  std::string line() {
    const size_t start = p_;
    while (p_ < b_.size() && b_[p_] != '\n') {
      if (p_ - start > 512) fail("GLOBAL name is too long");
      ++p_;
    }
    if (p_ >= b_.size()) fail("pickle ends unexpectedly (truncated)");
    ++p_;
    return std::string(reinterpret_cast<const char*>(b_.data() + start), p_ - 1 - start);
  }
  void push(Value* v) {
    charge(sizeof(Value*));  // a DUP stream grows the stack by one slot per byte
    stack_.push_back(v);
  }
  Value* pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) {
      fail("pickle stack underflow");
    }
    Value* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  Value* top() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) {
      fail("pickle stack underflow");
    }
    return stack_.back();
  }
  std::vector<Value*> pop_mark() {
    if (marks_.empty()) fail("pickle uses a MARK that was never set");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Value*> items(stack_.begin() + std::ptrdiff_t(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  Value* tuple(std::vector<Value*> items) {
    charge(items.size() * sizeof(Value*));
    Value* t = make(Kind::Tuple);
    t->items = std::move(items);
    return t;
  }
  Value* integer(int64_t v) {
    Value* x = make(Kind::Int);
    x->i = v;
    return x;
  }
  Value* str(const unsigned char* p, size_t n, Kind k = Kind::Str) {
    charge(n);
    Value* x = make(k);
    x->s.assign(reinterpret_cast<const char*>(p), n);
    return x;
  }
  Value* long_bytes(size_t n) {
    if (n > 8) fail("integer of " + std::to_string(n) + " bytes is too large");
    const unsigned char* q = need(n);
    uint64_t u = 0;
    for (size_t k = 0; k < n; ++k) u |= uint64_t(q[k]) << (8 * k);
    if (n > 0 && n < 8 && (q[n - 1] & 0x80)) u |= ~uint64_t(0) << (8 * n);  // sign-extend
    return integer(int64_t(u));
  }
  void global(const std::string& module, const std::string& name) {
    const std::string g = module + "." + name;
    if (!is_allowed_global(g)) {
      throw Error(where_ + ": pickle refers to '" + g +
                  "', which is not allowed (a pickle is code; only tensor checkpoints are "
                  "accepted)");
    }
    Value* v = make(Kind::Global);
    v->s = g;
    push(v);
  }
  void memo_put(uint64_t idx) {
    auto [it, fresh] = memo_.emplace(idx, nullptr);
    if (fresh) charge(64);  // a hash node
    it->second = top();
  }
  void memo_get(uint64_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end())
      fail("pickle refers to memo slot " + std::to_string(idx) + ", never set");
    push(it->second);
  }
  Value* reduce(Value* fn, Value* args);
  Value* persistent(Value* pid);
  void set_items(Value* d, const std::vector<Value*>& kv, size_t from);

  std::span<const unsigned char> b_;
  const std::string& where_;
  size_t p_ = 0;
  size_t op_pos_ = 0;
  size_t budget_;
  std::deque<Value> arena_;  // owns every value (stable addresses); cycles are harmless
  std::vector<Value*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Value*> memo_;
};

Value* Unpickler::persistent(Value* pid) {
  // ('storage', StorageType, key, location, numel)
  if (pid->kind != Kind::Tuple || pid->items.size() != 5 || pid->items[0]->kind != Kind::Str ||
      pid->items[0]->s != "storage") {
    fail("persistent id is not a ('storage', type, key, location, numel) tuple");
  }
  Value* type = pid->items[1];
  Value* key = pid->items[2];
  Value* numel = pid->items[4];
  if (type->kind != Kind::Global || !is_storage_type(type->s)) {
    fail("persistent id names no storage type");
  }
  if (key->kind != Kind::Str) fail("storage key is a " + std::string(kind_name(key->kind)));
  if (numel->kind != Kind::Int || numel->i < 0) fail("storage size is not a non-negative int");
  Value* s = make(Kind::Storage);
  s->s = type->s;
  s->x->key = key->s;
  s->i = numel->i;
  return s;
}

Value* Unpickler::reduce(Value* fn, Value* args) {
  if (fn->kind != Kind::Global) fail("REDUCE of a " + std::string(kind_name(fn->kind)));
  if (args->kind != Kind::Tuple) fail("REDUCE arguments are not a tuple");
  const auto& a = args->items;
  if (fn->s == "collections.OrderedDict") {
    Value* d = make(Kind::Dict);
    if (a.empty()) return d;
    if (a.size() == 1 && a[0]->kind == Kind::List) {
      charge(a[0]->items.size() * 2 * sizeof(Value*));  // one list may be reused (memo)
      for (Value* kv : a[0]->items) {
        if ((kv->kind != Kind::Tuple && kv->kind != Kind::List) || kv->items.size() != 2) {
          fail("OrderedDict item is not a pair");
        }
        d->x->dict.emplace_back(kv->items[0], kv->items[1]);
      }
      return d;
    }
    fail("OrderedDict called with unexpected arguments");
  }
  if (fn->s == "torch._utils._rebuild_tensor_v2") {
    // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    if (a.size() < 6 || a.size() > 7) fail("_rebuild_tensor_v2 takes 6 or 7 arguments");
    if (a[0]->kind != Kind::Storage) fail("_rebuild_tensor_v2: first argument is not a storage");
    if (a[1]->kind != Kind::Int || a[1]->i < 0) fail("_rebuild_tensor_v2: bad storage offset");
    if (a[2]->kind != Kind::Tuple || a[3]->kind != Kind::Tuple ||
        a[2]->items.size() != a[3]->items.size()) {
      fail("_rebuild_tensor_v2: size and stride are not tuples of the same length");
    }
    if (a[2]->items.size() > 64) fail("_rebuild_tensor_v2: too many dimensions");
    Value* t = make(Kind::Tensor);
    t->x->tensor.storage_type = a[0]->s;
    t->x->tensor.storage_key = a[0]->x->key;
    t->x->tensor.storage_numel = a[0]->i;
    t->x->tensor.offset = a[1]->i;
    for (size_t k = 0; k < a[2]->items.size(); ++k) {
      Value* sz = a[2]->items[k];
      Value* st = a[3]->items[k];
      if (sz->kind != Kind::Int || st->kind != Kind::Int || sz->i < 0 || st->i < 0) {
        fail("_rebuild_tensor_v2: size/stride entries must be non-negative ints");
      }
      t->x->tensor.shape.push_back(sz->i);
      t->x->tensor.stride.push_back(st->i);
    }
    return t;
  }
  if (fn->s == "torch._utils._rebuild_parameter") {
    if (a.empty() || a[0]->kind != Kind::Tensor) fail("_rebuild_parameter without a tensor");
    return a[0];
  }
  fail("pickle calls '" + fn->s + "', which is not allowed");
}

void Unpickler::set_items(Value* d, const std::vector<Value*>& kv, size_t from) {
  charge(kv.size() * sizeof(Value*));
  for (size_t k = from; k + 1 < kv.size(); k += 2) d->x->dict.emplace_back(kv[k], kv[k + 1]);
}

Value* Unpickler::run() {
  for (;;) {
    op_pos_ = p_;
    const unsigned char op = *need(1);
    switch (op) {
      case 0x80: {  // PROTO
        const unsigned char v = *need(1);
        if (v > 5) fail("unsupported pickle protocol " + std::to_string(v));
        break;
      }
      case 0x95:
        need(8);
        break;  // FRAME: a length hint only
      case '.':
        return pop();  // STOP
      case 'c': {      // GLOBAL
        std::string module = line();
        std::string name = line();
        global(module, name);
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        Value* name = pop();
        Value* module = pop();
        if (name->kind != Kind::Str || module->kind != Kind::Str)
          fail("STACK_GLOBAL of non-strings");
        global(module->s, name->s);
        break;
      }
      case 'q':
        memo_put(*need(1));
        break;
      case 'r':
        memo_put(le32(need(4)));
        break;
      case 0x94:
        memo_put(memo_.size());
        break;  // MEMOIZE
      case 'h':
        memo_get(*need(1));
        break;
      case 'j':
        memo_get(le32(need(4)));
        break;
      case '(':
        charge(sizeof(size_t));
        marks_.push_back(stack_.size());
        break;
      case '0':
        pop();
        break;
      case '1':
        pop_mark();
        break;
      case '2':
        push(top());
        break;
      case ')':
        push(tuple({}));
        break;
      case 't':
        push(tuple(pop_mark()));
        break;
      case 0x85: {
        Value* x = pop();
        push(tuple({x}));
        break;
      }
      case 0x86: {
        Value* y = pop();
        Value* x = pop();
        push(tuple({x, y}));
        break;
      }
      case 0x87: {
        Value* z = pop();
        Value* y = pop();
        Value* x = pop();
        push(tuple({x, y, z}));
        break;
      }
      case '}':
        push(make(Kind::Dict));
        break;
      case ']':
        push(make(Kind::List));
        break;
      case 'l': {
        Value* l = make(Kind::List);
        l->items = pop_mark();
        charge(l->items.size() * sizeof(Value*));
        push(l);
        break;
      }
      case 'd': {
        auto kv = pop_mark();
        if (kv.size() % 2) fail("DICT with an odd number of items");
        Value* d = make(Kind::Dict);
        set_items(d, kv, 0);
        push(d);
        break;
      }
      case 'a': {
        Value* v = pop();
        Value* l = top();
        if (l->kind != Kind::List) fail("APPEND to a " + std::string(kind_name(l->kind)));
        charge(sizeof(Value*));
        l->items.push_back(v);
        break;
      }
      case 'e': {
        auto vs = pop_mark();
        Value* l = top();
        if (l->kind != Kind::List) fail("APPENDS to a " + std::string(kind_name(l->kind)));
        charge(vs.size() * sizeof(Value*));
        l->items.insert(l->items.end(), vs.begin(), vs.end());
        break;
      }
      case 's': {
        Value* v = pop();
        Value* k = pop();
        Value* d = top();
        if (d->kind != Kind::Dict) fail("SETITEM on a " + std::string(kind_name(d->kind)));
        charge(2 * sizeof(Value*));
        d->x->dict.emplace_back(k, v);
        break;
      }
      case 'u': {
        auto kv = pop_mark();
        Value* d = top();
        if (d->kind != Kind::Dict) fail("SETITEMS on a " + std::string(kind_name(d->kind)));
        if (kv.size() % 2) fail("SETITEMS with an odd number of items");
        set_items(d, kv, 0);
        break;
      }
      case 'X': {
        const uint32_t n = le32(need(4));
        push(str(need(n), n));
        break;
      }
      case 0x8c: {
        const uint8_t n = *need(1);
        push(str(need(n), n));
        break;
      }
      case 0x8d: {
        const uint64_t n = le64(need(8));
        if (n > b_.size()) fail("pickle ends unexpectedly (truncated)");
        push(str(need(size_t(n)), size_t(n)));
        break;
      }
      case 'T': {
        const uint32_t n = le32(need(4));
        push(str(need(n), n));
        break;
      }
      case 'U': {
        const uint8_t n = *need(1);
        push(str(need(n), n));
        break;
      }
      case 'B': {
        const uint32_t n = le32(need(4));
        push(str(need(n), n, Kind::Bytes));
        break;
      }
      case 'C': {
        const uint8_t n = *need(1);
        push(str(need(n), n, Kind::Bytes));
        break;
      }
      case 'J':
        push(integer(int32_t(le32(need(4)))));
        break;
      case 'K':
        push(integer(*need(1)));
        break;
      case 'M':
        push(integer(le16(need(2))));
        break;
      case 0x8a: {
        const uint8_t n = *need(1);
        push(long_bytes(n));
        break;
      }
      case 0x8b: {
        const uint32_t n = le32(need(4));
        push(long_bytes(n));
        break;
      }
      case 'G': {
        const unsigned char* q = need(8);
        uint64_t u = 0;
        for (int k = 0; k < 8; ++k) u = (u << 8) | q[k];  // big-endian
        Value* x = make(Kind::Float);
        std::memcpy(&x->f, &u, 8);
        push(x);
        break;
      }
      case 0x88:
      case 0x89: {
        Value* x = make(Kind::Bool);
        x->i = op == 0x88;
        push(x);
        break;
      }
      case 'N':
        push(make(Kind::None));
        break;
      case 'R': {
        Value* args = pop();
        Value* fn = pop();
        push(reduce(fn, args));
        break;
      }
      case 'b': {  // BUILD: the state of an OrderedDict (_metadata) or tensor is not needed
        Value* state = pop();
        (void)state;
        Value* obj = top();
        if (obj->kind != Kind::Dict && obj->kind != Kind::Tensor) {
          fail("BUILD on a " + std::string(kind_name(obj->kind)));
        }
        break;
      }
      case 'Q':
        push(persistent(pop()));
        break;
      default: {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02x", op);
        fail(std::string("unsupported pickle opcode ") + hex);
      }
    }
  }
}

}  // namespace

std::vector<PickledTensor> unpickle_state_dict(std::span<const unsigned char> bytes,
                                               const std::string& where) {
  Unpickler u(bytes, where);
  const Value* top = u.run();
  if (top->kind != Kind::Dict) {
    throw Error(where + ": the pickle holds a " + kind_name(top->kind) +
                ", not a dict of tensors (a state dict)");
  }
  const Value* d = top;
  bool any_tensor = false;
  for (const auto& [k, v] : d->x->dict) any_tensor |= v->kind == Kind::Tensor;
  if (!any_tensor) {
    for (const char* wrapper : {"state_dict", "model"}) {
      for (const auto& [k, v] : top->x->dict) {
        if (k->kind == Kind::Str && k->s == wrapper && v->kind == Kind::Dict) {
          d = v;
          break;
        }
      }
      if (d != top) break;
    }
  }
  std::vector<PickledTensor> out;
  std::unordered_map<std::string, size_t> index;
  // The result is charged too: memo references make one tensor value cheap to repeat.
  size_t budget = kBytesPerInputByte * bytes.size() + kSlack;
  for (const auto& [k, v] : d->x->dict) {
    if (k->kind != Kind::Str) {
      throw Error(where + ": state dict key is a " + kind_name(k->kind) + ", not a string");
    }
    if (v->kind != Kind::Tensor) {
      throw Error(where + ": state dict entry '" + k->s + "' is a " + kind_name(v->kind) +
                  ", not a tensor");
    }
    const PickledTensor& src = v->x->tensor;
    const size_t cost = sizeof(PickledTensor) + 2 * k->s.size() + src.storage_key.size() +
                        src.storage_type.size() + 16 * src.shape.size() + 64;
    if (cost > budget) {
      throw Error(where +
                  ": data.pkl: the state dict needs more memory than a pickle of its "
                  "size would (over " +
                  std::to_string(kBytesPerInputByte) + " bytes per pickle byte)");
    }
    budget -= cost;
    PickledTensor t = src;
    t.name = k->s;
    auto [it, fresh] = index.emplace(t.name, out.size());
    if (fresh) {
      out.push_back(std::move(t));
    } else {
      out[it->second] = std::move(t);  // a later SETITEM replaces, as in Python
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writer

namespace {

class Pickler {
 public:
  std::string out;

  void op(char c) { out.push_back(c); }
  void u32(uint32_t v) {
    for (int k = 0; k < 4; ++k) out.push_back(char(v >> (8 * k)));
  }
  uint32_t memoize() {
    const uint32_t idx = next_++;
    if (idx < 256) {
      op('q');
      out.push_back(char(idx));
    } else {
      op('r');
      u32(idx);
    }
    return idx;
  }
  void get(uint32_t idx) {
    if (idx < 256) {
      op('h');
      out.push_back(char(idx));
    } else {
      op('j');
      u32(idx);
    }
  }
  uint32_t unicode(const std::string& s) {
    op('X');
    u32(uint32_t(s.size()));
    out += s;
    return memoize();
  }
  uint32_t global(const std::string& module, const std::string& name) {
    out += "c" + module + "\n" + name + "\n";
    return memoize();
  }
  void integer(int64_t v) {  // as Python's save_long
    if (v >= 0 && v <= 0xff) {
      op('K');
      out.push_back(char(v));
    } else if (v >= 0 && v <= 0xffff) {
      op('M');
      out.push_back(char(v));
      out.push_back(char(v >> 8));
    } else if (v >= -0x80000000LL && v <= 0x7fffffffLL) {
      op('J');
      u32(uint32_t(v));
    } else {
      std::string bytes;
      uint64_t u = uint64_t(v);
      for (int k = 0; k < 8; ++k) bytes.push_back(char(u >> (8 * k)));
      // Minimal two's complement: drop redundant sign bytes.
      while (bytes.size() > 1) {
        const auto last = uint8_t(bytes.back()), prev = uint8_t(bytes[bytes.size() - 2]);
        if ((last == 0 && !(prev & 0x80)) || (last == 0xff && (prev & 0x80))) {
          bytes.pop_back();
        } else {
          break;
        }
      }
      op(char(0x8a));
      out.push_back(char(bytes.size()));
      out += bytes;
    }
  }
  void int_tuple(const std::vector<int64_t>& xs) {
    if (xs.empty()) {
      op(')');
      return;
    }
    if (xs.size() > 3) op('(');
    for (int64_t x : xs) integer(x);
    if (xs.size() > 3) {
      op('t');
    } else {
      op(char(0x84 + xs.size()));
    }
    memoize();
  }

 private:
  uint32_t next_ = 0;
};

}  // namespace

std::string pickle_state_dict(const std::vector<PickledTensor>& tensors) {
  Pickler p;
  p.out = "\x80\x02";
  const uint32_t odict = p.global("collections", "OrderedDict");
  p.op(')');
  p.op('R');
  p.memoize();
  int64_t rebuild = -1, storage_str = -1, cpu_str = -1;
  std::unordered_map<std::string, uint32_t> types;
  for (size_t start = 0; start < tensors.size(); start += 1000) {  // Python batches by 1000
    const size_t end = std::min(tensors.size(), start + 1000);
    if (end - start > 1) p.op('(');
    for (size_t i = start; i < end; ++i) {
      const PickledTensor& t = tensors[i];
      p.unicode(t.name);
      if (rebuild < 0) {
        rebuild = p.global("torch._utils", "_rebuild_tensor_v2");
      } else {
        p.get(uint32_t(rebuild));
      }
      p.op('(');
      p.op('(');
      if (storage_str < 0) {
        storage_str = p.unicode("storage");
      } else {
        p.get(uint32_t(storage_str));
      }
      auto it = types.find(t.storage_type);
      if (it == types.end()) {
        const size_t dot = t.storage_type.rfind('.');
        types[t.storage_type] =
            p.global(t.storage_type.substr(0, dot), t.storage_type.substr(dot + 1));
      } else {
        p.get(it->second);
      }
      p.unicode(t.storage_key);
      if (cpu_str < 0) {
        cpu_str = p.unicode("cpu");
      } else {
        p.get(uint32_t(cpu_str));
      }
      p.integer(t.storage_numel);
      p.op('t');
      p.memoize();
      p.op('Q');
      p.integer(t.offset);
      p.int_tuple(t.shape);
      p.int_tuple(t.stride);
      p.op(char(0x89));  // requires_grad = False
      p.get(odict);      // backward_hooks = OrderedDict()
      p.op(')');
      p.op('R');
      p.memoize();
      p.op('t');
      p.memoize();
      p.op('R');
      p.memoize();
    }
    p.op(end - start > 1 ? 'u' : 's');
  }
  p.op('.');
  return p.out;
}

}  // namespace rwkv7::io
