// Plain C++ values produced on the worker thread and turned into JS on the JS thread.
// Nothing here touches N-API except ToJs(), which must only run on the JS thread.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace vdib {

struct Value {
  enum class Kind { Undefined, Null, Bool, Number, String, Buffer, Array, Object };
  Kind kind = Kind::Undefined;
  bool b = false;
  double n = 0;
  std::string s;  // String (UTF-8, lossy) or Buffer (raw bytes)
  std::vector<Value> items;
  std::vector<std::pair<std::string, Value>> fields;

  static Value Undef() { return Value{}; }
  static Value Null() { Value v; v.kind = Kind::Null; return v; }
  static Value Bool(bool x) { Value v; v.kind = Kind::Bool; v.b = x; return v; }
  static Value Number(double x) { Value v; v.kind = Kind::Number; v.n = x; return v; }
  static Value String(std::string x) { Value v; v.kind = Kind::String; v.s = std::move(x); return v; }
  static Value Bytes(const char* p, size_t len) { Value v; v.kind = Kind::Buffer; v.s.assign(p, len); return v; }
  static Value Array() { Value v; v.kind = Kind::Array; return v; }
  static Value Object() { Value v; v.kind = Kind::Object; return v; }

  Value& Add(std::string key, Value v) { fields.emplace_back(std::move(key), std::move(v)); return *this; }
  Value& Push(Value v) { items.push_back(std::move(v)); return *this; }
};

// JS thread only.
Napi::Value ToJs(Napi::Env env, const Value& v);

}  // namespace vdib
