// Reading libguestfs's thread-local error state and shaping it into a JS error.
#pragma once

#include <guestfs.h>
#include <napi.h>

#include <string>

namespace vdib {

// A failed call, copied on the worker thread right after the call returned its error value.
struct CallError {
  bool failed = false;
  std::string message;
  int errnum = 0;
  // Set by the binding itself (not libguestfs): closed handle, cancelled before start, bad state.
  std::string code;
};

// Worker thread only: the last error is thread-local in libguestfs >= 1.38.
CallError ReadLastError(guestfs_h* g);

// JS thread only. Properties: op, errno (positive, 0 if none), code (binding code or undefined).
Napi::Error MakeError(Napi::Env env, const std::string& op, const CallError& e);

}  // namespace vdib
