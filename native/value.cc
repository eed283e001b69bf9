// Conversion of worker-side results into JS values (JS thread only).
#include "value.h"

namespace vdib {

Napi::Value ToJs(Napi::Env env, const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined: return env.Undefined();
    case Value::Kind::Null: return env.Null();
    case Value::Kind::Bool: return Napi::Boolean::New(env, v.b);
    case Value::Kind::Number: return Napi::Number::New(env, v.n);
    case Value::Kind::String: return Napi::String::New(env, v.s);
    case Value::Kind::Buffer: return Napi::Buffer<char>::Copy(env, v.s.data(), v.s.size());
    case Value::Kind::Array: {
      auto arr = Napi::Array::New(env, v.items.size());
      for (uint32_t i = 0; i < v.items.size(); i++) arr.Set(i, ToJs(env, v.items[i]));
      return arr;
    }
    case Value::Kind::Object: {
      auto obj = Napi::Object::New(env);
      for (const auto& [key, field] : v.fields) obj.Set(key, ToJs(env, field));
      return obj;
    }
  }
  return env.Undefined();
}

}  // namespace vdib
