// The table of wrapped libguestfs calls. Each row copies its JS arguments into owned C++
// values on the JS thread and returns the Work that calls libguestfs on the worker thread.
#pragma once

#include <napi.h>

#include <functional>
#include <vector>

#include "handle.h"

namespace vdib {

struct CallDef {
  const char* name;  // the C name without the guestfs_ prefix (and without _opts/_argv)
  std::function<Work(const Napi::CallbackInfo&)> make;  // JS thread; throws TypeError on bad args
  bool cancellable;  // FileIn/FileOut transfer
  Lifecycle lifecycle = Lifecycle::None;  // launch and shutdown: the worker tracks qemu's pid
};

const std::vector<CallDef>& CallTable();

}  // namespace vdib
