// One guestfs_h, the only thread allowed to touch it, its job queue and its thread-safe
// function. The JS object (Handle) and the native state (Session) are separate so that a
// handle lost to GC can still be closed in the background by its own worker.
#pragma once

#include <guestfs.h>
#include <napi.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <sys/types.h>
#include <string>
#include <thread>

#include "errors.h"
#include "events.h"
#include "value.h"

namespace vdib {

// Runs on the worker thread with exclusive use of the handle. Fills either out or err.
using Work = std::function<void(guestfs_h* g, Value& out, CallError& err)>;

struct Job {
  enum class Kind { Call, Close };
  Kind kind = Kind::Call;
  uint64_t id = 0;
  std::string op;
  Work work;
  bool cancellable = false;  // a FileIn/FileOut transfer: guestfs_user_cancel can stop it
  bool pinned = false;       // counted in Session::pending_ until settled
  std::optional<Napi::Promise::Deferred> deferred;  // created and settled on the JS thread
  std::atomic<bool> cancel_requested{false};
  Value result;
  CallError error;
};

struct Message {
  enum class Kind { Event, Done };
  Kind kind = Kind::Event;
  EventMsg event;
  std::unique_ptr<Job> job;
};

class Session;
class Handle;
void CallJs(Napi::Env env, Napi::Function dispatcher, Session* session, Message* msg);
using Tsfn = Napi::TypedThreadSafeFunction<Session, Message, CallJs>;

class Session {
 public:
  enum class State { Open, Closing, Closed };

  // JS thread. Takes ownership of g; registers the event callback before the worker exists.
  Session(guestfs_h* g, Handle* wrapper);
  ~Session();

  // JS thread: creates the thread-safe function, the env cleanup hook and the worker.
  void Start(Napi::Env env, Napi::Function dispatcher, std::shared_ptr<Session> self);

  // JS thread: queue a call; returns its promise (rejected at once if closing or closed).
  Napi::Value Enqueue(Napi::Env env, std::unique_ptr<Job> job);
  // JS thread: queue the close job (idempotent); returns a promise settled when closed.
  Napi::Value Close(Napi::Env env);
  // JS thread (GC finalizer): forget the wrapper; close in the background if still open.
  void DetachWrapper();
  // JS thread. 0 unknown/finished, 1 dropped from the queue, 2 transfer cancel requested,
  // 3 running and not cancellable through the API.
  int Cancel(Napi::Env env, uint64_t id);
  // JS thread: guestfs_user_cancel on the running transfer, if any.
  bool UserCancel();
  // Any thread: SIGKILL this handle's qemu (pidfd after launch, else the worker thread's qemu child).
  bool KillAppliance();
  // Any thread.
  void SetEventMask(uint64_t mask) { mask_.store(mask); }
  State state() const { return state_; }        // JS thread only
  uint64_t last_job_id() const { return last_job_id_; }  // JS thread only
  bool busy();                                   // JS thread

  // JS thread, from CallJs.
  void Settle(Napi::Env env, std::unique_ptr<Job> job);

 private:
  static void OnEvent(guestfs_h* g, void* opaque, uint64_t event, int event_handle, int flags,
                      const char* buf, size_t buf_len, const uint64_t* array, size_t array_len);
  static void EnvCleanup(void* arg);
  static void Finalize(Napi::Env env, std::shared_ptr<Session>* holder, Session* session);

  void Run();                       // worker thread
  void RunClose(Job& job);          // worker thread
  void AfterLaunch(bool ok);        // worker thread
  void Post(Message* msg);          // worker thread
  void Push(std::unique_ptr<Job> job);  // any thread
  void Pin(Napi::Env env);          // JS thread
  void Unpin(Napi::Env env);        // JS thread
  void JoinWorker();                // JS thread
  void ClosePidfd();                // any thread

  guestfs_h* g_;                    // worker thread only (read under mu_ by Cancel)
  Handle* wrapper_;                 // JS thread only; null once the JS object is collected
  Tsfn tsfn_;
  std::thread worker_;
  napi_env env_ = nullptr;

  std::mutex mu_;                   // guards queue_, running_, g_ nulling
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Job>> queue_;
  std::atomic<bool> has_work_{false};  // mirrors !queue_.empty() for the worker's short spin
  Job* running_ = nullptr;

  std::mutex pid_mu_;               // guards pidfd_
  int pidfd_ = -1;
  std::atomic<pid_t> worker_tid_{0};  // qemu is forked by this thread during launch

  std::atomic<uint64_t> mask_{kRegisteredEvents};
  std::atomic<bool> tsfn_dead_{false};  // worker thread: the TSFN answered napi_closing
  State state_ = State::Open;           // JS thread only
  std::vector<Napi::Promise::Deferred> close_waiters_;  // JS thread only
  uint64_t pending_ = 0;                // JS thread only: jobs with an unsettled promise
  uint64_t next_job_id_ = 1;            // JS thread only
  uint64_t last_job_id_ = 0;            // JS thread only
  bool hook_installed_ = false;         // JS thread only
};

class Handle : public Napi::ObjectWrap<Handle> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Handle(const Napi::CallbackInfo& info);
  ~Handle() override;

 private:
  Napi::Value Dispatch(const Napi::CallbackInfo& info);  // every wrapped libguestfs call
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Cancel(const Napi::CallbackInfo& info);
  Napi::Value UserCancel(const Napi::CallbackInfo& info);
  Napi::Value KillAppliance(const Napi::CallbackInfo& info);
  Napi::Value SetEventMask(const Napi::CallbackInfo& info);
  Napi::Value GetState(const Napi::CallbackInfo& info);
  Napi::Value GetLastJobId(const Napi::CallbackInfo& info);
  Napi::Value GetBusy(const Napi::CallbackInfo& info);

  std::shared_ptr<Session> session_;
};

}  // namespace vdib
