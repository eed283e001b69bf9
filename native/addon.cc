// Module init: exports the GuestfsHandle class and facts about this build, nothing else.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <napi.h>

#include "calls.h"
#include "handle.h"

#ifndef VIRT_DIB_BUILD_SYSTEM
#define VIRT_DIB_BUILD_SYSTEM "unknown"
#endif

namespace {

// [readFd, writeFd], both close-on-exec so qemu and other children never inherit them.
Napi::Value MakePipe(const Napi::CallbackInfo& info) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) == -1) {
    throw Napi::Error::New(info.Env(), std::string("pipe2: ") + std::strerror(errno));
  }
  auto arr = Napi::Array::New(info.Env(), 2);
  arr.Set(0u, fds[0]);
  arr.Set(1u, fds[1]);
  return arr;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("GuestfsHandle", vdib::Handle::Init(env));
  exports.Set("pipe", Napi::Function::New(env, MakePipe, "pipe"));
  auto calls = Napi::Array::New(env);
  uint32_t i = 0;
  for (const auto& def : vdib::CallTable()) calls.Set(i++, def.name);
  exports.Set("calls", calls);
  exports.Set("buildSystem", VIRT_DIB_BUILD_SYSTEM);
  exports.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
#ifdef NAPI_CPP_EXCEPTIONS
  exports.Set("cppExceptions", true);
#else
  exports.Set("cppExceptions", false);
#endif
  return exports;
}

}  // namespace

NODE_API_MODULE(virt_dib, Init)
