// Module init: exports the GuestfsHandle class and facts about this build, nothing else.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <system_error>

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
    throw Napi::Error::New(info.Env(), "pipe2: " + std::generic_category().message(errno));  // strerror races
  }
  auto arr = Napi::Array::New(info.Env(), 2);
  arr.Set(0u, fds[0]);
  arr.Set(1u, fds[1]);
  return arr;
}

// Test probes, exported as `__test` and declared apart from the addon's API in native.ts:
// liveSessions() counts native sessions (a leak shows as one that never goes away);
// killQemuChildrenOf(tid, hv) runs KillAppliance's child selection on any thread of this process.
Napi::Object TestProbes(Napi::Env env) {
  auto probes = Napi::Object::New(env);
  probes.Set("liveSessions", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), vdib::LiveSessions());
  }, "liveSessions"));
  probes.Set("killQemuChildrenOf", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
    if (!info[0].IsNumber() || !info[1].IsString()) {
      throw Napi::TypeError::New(info.Env(), "killQemuChildrenOf(tid: number, hv: string)");
    }
    auto tid = info[0].As<Napi::Number>().Int32Value();
    auto killed = vdib::KillQemuChildrenOf(tid, info[1].As<Napi::String>());
    auto arr = Napi::Array::New(info.Env(), killed.size());
    for (uint32_t i = 0; i < killed.size(); i++) arr.Set(i, Napi::Number::New(info.Env(), killed[i]));
    return arr;
  }, "killQemuChildrenOf"));
  return probes;
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
  exports.Set("__test", TestProbes(env));
#ifdef NAPI_CPP_EXCEPTIONS
  exports.Set("cppExceptions", true);
#else
  exports.Set("cppExceptions", false);
#endif
  return exports;
}

}  // namespace

NODE_API_MODULE(virt_dib, Init)
