// Errors cross the N-API boundary as plain Error objects with op/errno/code; TypeScript
// (src/guestfs/errors.ts) turns them into GuestfsError and AbortError.
#include "errors.h"

namespace vdib {

CallError ReadLastError(guestfs_h* g) {
  CallError e;
  e.failed = true;
  const char* msg = guestfs_last_error(g);
  e.message = msg ? msg : "unknown libguestfs error";
  e.errnum = guestfs_last_errno(g);
  return e;
}

Napi::Error MakeError(Napi::Env env, const std::string& op, const CallError& e) {
  auto err = Napi::Error::New(env, e.message);
  auto obj = err.Value();
  obj.Set("op", op);
  obj.Set("errno", Napi::Number::New(env, e.errnum));
  obj.Set("code", e.code.empty() ? Napi::Value(env.Undefined()) : Napi::String::New(env, e.code));
  return err;
}

}  // namespace vdib
