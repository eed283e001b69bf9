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
#include <vector>
#include <sys/types.h>
#include <string>
#include <thread>

#include "errors.h"
#include "events.h"
#include "value.h"

namespace vdib {

// Runs on the worker thread with exclusive use of the handle. Fills either out or err.
using Work = std::function<void(guestfs_h* g, Value& out, CallError& err)>;

// What a call does to the appliance's lifetime, beyond its result (set per row in calls.cc).
enum class Lifecycle { None, Launch, Shutdown };

struct Job {
  enum class Kind { Call, Close };
  Kind kind = Kind::Call;
  uint64_t id = 0;
  std::string op;
  Work work;
  bool cancellable = false;  // a FileIn/FileOut transfer: guestfs_user_cancel can stop it
  Lifecycle lifecycle = Lifecycle::None;
  bool pinned = false;       // counted in Session::pending_ until settled
  // JS thread: created by Enqueue, concluded at most once (Settle, Cancel or EnvCleanup).
  napi_deferred deferred = nullptr;
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
// JS thread (the TSFN's call_js). Never lets an exception reach Node.
void CallJs(Napi::Env env, Napi::Function dispatcher, Session* session, Message* msg);
using Tsfn = Napi::TypedThreadSafeFunction<Session, Message, CallJs>;

// Any thread. SIGKILLs the qemu processes among the direct children of thread `tid` of this
// process (libguestfs forks qemu from the thread that calls launch): a child counts as qemu if
// the basename of its executable or argv[0] is qemu-system-* / qemu-kvm, or if it runs `hv` (the
// handle's configured hypervisor, as argv[0] or as a #! script). Returns the pids signalled.
std::vector<pid_t> KillQemuChildrenOf(pid_t tid, const std::string& hv);

// Any thread: Session objects alive in this process (a test probe for leaks).
int LiveSessions();

class Session {
 public:
  enum class State { Open, Closing, Closed };

  // JS thread. Takes ownership of g; registers the event callback before the worker exists.
  Session(guestfs_h* g, Handle* wrapper);
  ~Session();

  // JS thread: creates the thread-safe function, the env cleanup hook and the worker. Throws a
  // Napi::Error and leaves nothing registered if one of them cannot be created. fail_tsfn is a
  // test hook: it makes napi_create_threadsafe_function fail for real.
  void Start(Napi::Env env, Napi::Function dispatcher, std::shared_ptr<Session> self, bool fail_tsfn = false);

  // JS thread: queue a call; returns its promise (rejected at once if closing or closed).
  Napi::Value Enqueue(Napi::Env env, std::unique_ptr<Job> job);
  // JS thread: queue the close job (idempotent); returns a promise settled when closed.
  Napi::Value Close(Napi::Env env);
  // JS thread (GC finalizer): forget the wrapper; close in the background if still open.
  void DetachWrapper();
  // JS thread. 0 unknown/finished, 1 dropped from the queue, 2 transfer cancel requested,
  // 3 running and not cancellable through the API.
  int Cancel(Napi::Env env, uint64_t id);
  // Any thread: SIGKILL this handle's qemu (pidfd after launch, else the worker thread's qemu child).
  bool KillAppliance();
  // Any thread.
  void SetEventMask(uint64_t mask) { mask_.store(mask); }
  State state() const { return state_; }        // JS thread only
  uint64_t last_job_id() const { return last_job_id_; }  // JS thread only
  bool busy();                                   // JS thread

  // JS thread, from CallJs. Never throws: the promise is rejected if its value cannot be made,
  // and the job's pin is released however settling ends.
  void Settle(napi_env env, std::unique_ptr<Job> job) noexcept;
  // JS thread, from CallJs. Never throws: a throwing dispatcher becomes an uncaught exception.
  void Deliver(napi_env env, Napi::Function dispatcher, const EventMsg& event) noexcept;
  // JS thread. Test hook (not reachable from the TS API): makes the next settle on this handle
  // fail at `level` stages: 1 the result, 2 also the error object, 3 also the plain rejection.
  void ArmSettleFault(int level) { settle_fault_ = level; }

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
  void Pin(napi_env env) noexcept;    // JS thread
  void Unpin(napi_env env) noexcept;  // JS thread
  // JS thread: resolves (ok) or rejects d with make(); on any failure rejects with an internal
  // error, then with a plain string; reports on stderr only if even that fails while JS can run.
  // Make: napi_value() (may throw). Defined and instantiated in handle.cc only.
  template <typename Make>
  void Conclude(napi_env env, napi_deferred d, const std::string& op, bool ok, Make&& make) noexcept;
  void BeforeLaunch();              // worker thread
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

  std::mutex pid_mu_;               // guards pidfd_ and hv_
  int pidfd_ = -1;
  std::string hv_;                  // the hypervisor of the last launch (worker writes)
  std::atomic<pid_t> worker_tid_{0};  // qemu is forked by this thread during launch

  std::atomic<uint64_t> mask_{kRegisteredEvents};
  std::atomic<bool> tsfn_dead_{false};  // worker thread: the TSFN answered napi_closing
  State state_ = State::Open;           // JS thread only
  std::vector<napi_deferred> close_waiters_;  // JS thread only
  uint64_t pending_ = 0;                // JS thread only: jobs with an unsettled promise
  uint64_t next_job_id_ = 1;            // JS thread only
  uint64_t last_job_id_ = 0;            // JS thread only
  bool hook_installed_ = false;         // JS thread only
  bool env_stopping_ = false;           // JS thread only: EnvCleanup ran; never touch JS again
  int settle_fault_ = 0;                // JS thread only: test hook, see ArmSettleFault
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
  Napi::Value KillAppliance(const Napi::CallbackInfo& info);
  Napi::Value SetEventMask(const Napi::CallbackInfo& info);
  Napi::Value GetState(const Napi::CallbackInfo& info);
  Napi::Value GetLastJobId(const Napi::CallbackInfo& info);
  Napi::Value GetBusy(const Napi::CallbackInfo& info);
  Napi::Value TestFault(const Napi::CallbackInfo& info);  // __test_fault: test hook only

  std::shared_ptr<Session> session_;
};

}  // namespace vdib
