#include "events.h"

#include <guestfs.h>

namespace vdib {

const char* EventName(uint64_t event) {
  switch (event) {
    case GUESTFS_EVENT_CLOSE: return "close";
    case GUESTFS_EVENT_SUBPROCESS_QUIT: return "subprocess_quit";
    case GUESTFS_EVENT_LAUNCH_DONE: return "launch_done";
    case GUESTFS_EVENT_PROGRESS: return "progress";
    case GUESTFS_EVENT_APPLIANCE: return "appliance";
    case GUESTFS_EVENT_LIBRARY: return "library";
    case GUESTFS_EVENT_TRACE: return "trace";
    case GUESTFS_EVENT_ENTER: return "enter";
    case GUESTFS_EVENT_LIBVIRT_AUTH: return "libvirt_auth";
    case GUESTFS_EVENT_WARNING: return "warning";
    default: return "unknown";
  }
}

std::vector<napi_value> EventArgs(Napi::Env env, const EventMsg& msg) {
  auto array = Napi::Array::New(env, msg.array.size());
  for (uint32_t i = 0; i < msg.array.size(); i++) {
    array.Set(i, Napi::Number::New(env, static_cast<double>(msg.array[i])));
  }
  return {
      Napi::String::New(env, EventName(msg.event)),
      Napi::Buffer<char>::Copy(env, msg.buf.data(), msg.buf.size()),
      array,
  };
}

}  // namespace vdib
