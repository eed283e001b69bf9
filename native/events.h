// libguestfs events: copied on the worker thread (inside the libguestfs callback) and handed
// to JS through the handle's single thread-safe function, so they keep their order relative
// to call completions.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

namespace vdib {

// Everything but ENTER (fires for every nested call) and LIBVIRT_AUTH (needs a synchronous
// answer, which a thread-safe function cannot give; we only support the direct backend).
constexpr uint64_t kRegisteredEvents = 0x03ff & ~uint64_t(0x0080) & ~uint64_t(0x0100);

struct EventMsg {
  uint64_t event = 0;
  std::string buf;
  std::vector<uint64_t> array;
};

// Any thread: libguestfs event bit -> stable lower-case name used by the TS layer.
const char* EventName(uint64_t event);

// JS thread only: the arguments passed to the JS event dispatcher (name, Buffer, number[]).
std::vector<napi_value> EventArgs(Napi::Env env, const EventMsg& msg);

}  // namespace vdib
