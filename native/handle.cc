// Lifecycle rules (see docs in handle.h and ../shared research notes on libguestfs threading):
// - only the worker thread calls guestfs_* on g_, except guestfs_user_cancel (lock-free);
// - every event and every completion goes through the one TSFN, so order is preserved;
// - close is the queue's last job; the TSFN finalizer joins the worker and frees the Session.
#include "handle.h"

#include <dirent.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include "calls.h"

namespace vdib {

namespace {

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

constexpr int kSpinMicros = 50;

CallError BindingError(const std::string& code, const std::string& message, int errnum = 0) {
  CallError e;
  e.failed = true;
  e.code = code;
  e.message = message;
  e.errnum = errnum;
  return e;
}

// Kills the qemu processes forked by the worker thread `tid` (libguestfs forks qemu from the
// thread that calls launch). Used while launch still runs and libguestfs cannot give the pid.
bool KillQemuChildrenOf(pid_t tid) {
  if (tid <= 0) return false;
  std::ifstream children("/proc/self/task/" + std::to_string(tid) + "/children");
  bool killed = false;
  long pid = 0;
  while (children >> pid) {
    std::ifstream cmdline_file("/proc/" + std::to_string(pid) + "/cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(cmdline_file)), std::istreambuf_iterator<char>());
    if (cmdline.find("qemu") == std::string::npos) continue;
    if (kill(static_cast<pid_t>(pid), SIGKILL) == 0) killed = true;
  }
  return killed;
}

}  // namespace

// ---------------------------------------------------------------- Session

Session::Session(guestfs_h* g, Handle* wrapper) : g_(g), wrapper_(wrapper) {
  guestfs_set_error_handler(g_, nullptr, nullptr);  // this thread's slot; the worker sets its own
  guestfs_set_event_callback(g_, &Session::OnEvent, kRegisteredEvents, 0, this);
}

Session::~Session() {
  if (worker_.joinable()) worker_.join();
  ClosePidfd();
  if (g_) guestfs_close(g_);  // only if the worker never ran (construction failed)
}

void Session::Start(Napi::Env env, Napi::Function dispatcher, std::shared_ptr<Session> self) {
  env_ = env;
  auto* holder = new std::shared_ptr<Session>(std::move(self));
  tsfn_ = Tsfn::New(env, dispatcher, "virt-dib:guestfs", 0, 1, this, &Session::Finalize, holder);
  tsfn_.Unref(env);  // an idle handle never keeps the process alive
  // Registered after the TSFN's own hook, so it runs first at teardown (hooks run LIFO).
  napi_add_env_cleanup_hook(env, &Session::EnvCleanup, this);
  hook_installed_ = true;
  worker_ = std::thread([this] { Run(); });
}

void Session::Push(std::unique_ptr<Job> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(job));
    has_work_.store(true, std::memory_order_release);
  }
  cv_.notify_one();
}

void Session::Pin(Napi::Env env) {
  if (pending_++ == 0) {
    tsfn_.Ref(env);
    if (wrapper_) wrapper_->Ref();
  }
}

void Session::Unpin(Napi::Env env) {
  if (pending_ > 0 && --pending_ == 0) {
    tsfn_.Unref(env);
    if (wrapper_) wrapper_->Unref();
  }
}

Napi::Value Session::Enqueue(Napi::Env env, std::unique_ptr<Job> job) {
  auto deferred = Napi::Promise::Deferred::New(env);
  if (state_ != State::Open) {
    auto e = BindingError("ERR_GUESTFS_CLOSED", job->op + ": the handle is closed", EBADF);
    deferred.Reject(MakeError(env, job->op, e, false).Value());
    return deferred.Promise();
  }
  job->id = next_job_id_++;
  last_job_id_ = job->id;
  job->deferred = deferred;
  job->pinned = true;
  Pin(env);
  Push(std::move(job));
  return deferred.Promise();
}

Napi::Value Session::Close(Napi::Env env) {
  auto deferred = Napi::Promise::Deferred::New(env);
  if (state_ == State::Closed) {
    deferred.Resolve(env.Undefined());
    return deferred.Promise();
  }
  close_waiters_.push_back(deferred);
  if (state_ == State::Open) {
    state_ = State::Closing;
    auto job = std::make_unique<Job>();
    job->kind = Job::Kind::Close;
    job->op = "close";
    job->id = next_job_id_++;
    job->pinned = true;
    Pin(env);
    Push(std::move(job));
  }
  return deferred.Promise();
}

void Session::DetachWrapper() {
  wrapper_ = nullptr;
  if (state_ == State::Open) {
    // Runs inside GC: no JS, no blocking. The worker closes; nothing waits for it.
    state_ = State::Closing;
    auto job = std::make_unique<Job>();
    job->kind = Job::Kind::Close;
    job->op = "close";
    Push(std::move(job));
  }
}

int Session::Cancel(Napi::Env env, uint64_t id) {
  std::unique_ptr<Job> dropped;
  int outcome = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
      if ((*it)->id == id && (*it)->kind == Job::Kind::Call) {
        dropped = std::move(*it);
        queue_.erase(it);
        outcome = 1;
        break;
      }
    }
    if (!dropped && running_ && running_->id == id) {
      if (running_->cancellable) {
        running_->cancel_requested = true;
        if (g_) guestfs_user_cancel(g_);  // lock-free and thread-safe by contract
        outcome = 2;
      } else {
        outcome = 3;
      }
    }
  }
  if (dropped) {
    dropped->error = BindingError("ABORT_ERR", dropped->op + ": cancelled before it started", EINTR);
    auto deferred = *dropped->deferred;
    deferred.Reject(MakeError(env, dropped->op, dropped->error, true).Value());
    Unpin(env);
  }
  return outcome;
}

bool Session::UserCancel() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!running_ || !running_->cancellable || !g_) return false;
  running_->cancel_requested = true;
  guestfs_user_cancel(g_);
  return true;
}

bool Session::busy() {
  std::lock_guard<std::mutex> lock(mu_);
  return running_ != nullptr || !queue_.empty();
}

bool Session::KillAppliance() {
  std::lock_guard<std::mutex> lock(pid_mu_);
  if (pidfd_ >= 0) {
    if (syscall(SYS_pidfd_send_signal, pidfd_, SIGKILL, nullptr, 0) == 0) return true;
    // ESRCH: already gone. Fall through: a relaunch may have started a qemu not yet recorded.
  }
  return KillQemuChildrenOf(worker_tid_.load());
}

void Session::ClosePidfd() {
  std::lock_guard<std::mutex> lock(pid_mu_);
  if (pidfd_ >= 0) close(pidfd_);
  pidfd_ = -1;
}

void Session::Settle(Napi::Env env, std::unique_ptr<Job> job) {
  if (job->kind == Job::Kind::Close) {
    state_ = State::Closed;
    auto waiters = std::move(close_waiters_);
    for (auto& d : waiters) {
      if (job->error.failed) {
        d.Reject(MakeError(env, "shutdown", job->error, false).Value());
      } else {
        d.Resolve(env.Undefined());
      }
    }
    if (job->pinned) Unpin(env);
    return;
  }
  if (job->deferred) {
    if (job->error.failed) {
      bool cancelled = job->cancel_requested.load();
      job->deferred->Reject(MakeError(env, job->op, job->error, cancelled).Value());
    } else {
      job->deferred->Resolve(ToJs(env, job->result));
    }
  }
  if (job->pinned) Unpin(env);
}

void Session::Post(Message* msg) {
  if (tsfn_dead_) {
    delete msg;
    return;
  }
  if (tsfn_.NonBlockingCall(msg) != napi_ok) {
    tsfn_dead_ = true;  // napi_closing: the environment is going away; never call again
    delete msg;
  }
}

void Session::OnEvent(guestfs_h*, void* opaque, uint64_t event, int, int, const char* buf,
                      size_t buf_len, const uint64_t* array, size_t array_len) {
  // Called by libguestfs on the worker thread with the handle lock held: never throw.
  try {
    auto* self = static_cast<Session*>(opaque);
    if (!(self->mask_.load() & event)) return;
    auto* msg = new Message;
    msg->kind = Message::Kind::Event;
    msg->event.event = event;
    if (buf && buf_len) msg->event.buf.assign(buf, buf_len);
    if (array && array_len) msg->event.array.assign(array, array + array_len);
    self->Post(msg);
  } catch (...) {
  }
}

void Session::AfterLaunch(bool ok) {
  if (!ok) return;
  int pid = guestfs_get_pid(g_);  // direct backend only; fails harmlessly otherwise
  if (pid <= 0) return;
  int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  std::lock_guard<std::mutex> lock(pid_mu_);
  if (pidfd_ >= 0) close(pidfd_);
  pidfd_ = fd;
}

void Session::RunClose(Job& job) {
  // shutdown reports write errors that close would swallow.
  if (guestfs_shutdown(g_) == -1) job.error = ReadLastError(g_);
  guestfs_h* g = g_;
  {
    std::lock_guard<std::mutex> lock(mu_);
    g_ = nullptr;  // Cancel() must never see a closed handle
  }
  guestfs_close(g);  // emits the CLOSE event on this thread, before the completion below
  ClosePidfd();
}

void Session::Run() {
  worker_tid_ = static_cast<pid_t>(syscall(SYS_gettid));
  guestfs_set_error_handler(g_, nullptr, nullptr);
  for (;;) {
    std::unique_ptr<Job> job;
    // A caller awaiting calls one by one sends the next within microseconds: a short spin
    // saves the futex sleep and wake-up that would otherwise dominate a cheap call.
    const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
    while (!has_work_.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < spin_until) {
      std::this_thread::yield();
    }
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return !queue_.empty(); });
      job = std::move(queue_.front());
      queue_.pop_front();
      has_work_.store(!queue_.empty(), std::memory_order_release);
      running_ = job.get();
    }
    const bool closing = job->kind == Job::Kind::Close;
    if (closing) {
      RunClose(*job);
    } else if (job->cancel_requested) {
      job->error = BindingError("ABORT_ERR", job->op + ": cancelled", EINTR);
    } else {
      try {
        job->work(g_, job->result, job->error);
      } catch (const std::exception& e) {
        job->error = BindingError("ERR_GUESTFS_INTERNAL", std::string("internal error: ") + e.what());
      } catch (...) {
        job->error = BindingError("ERR_GUESTFS_INTERNAL", "internal error");
      }
      if (job->op == "launch") AfterLaunch(!job->error.failed);
      if (job->op == "shutdown") ClosePidfd();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      running_ = nullptr;
    }
    auto* msg = new Message;
    msg->kind = Message::Kind::Done;
    msg->job = std::move(job);
    Post(msg);
    if (closing) break;
  }
  tsfn_.Release();  // last use of the TSFN by this thread
}

void Session::JoinWorker() {
  if (worker_.joinable() && worker_.get_id() != std::this_thread::get_id()) worker_.join();
}

void Session::EnvCleanup(void* arg) {
  // Normal exit or worker_threads teardown: make sure qemu is gone and the handle closed.
  auto* self = static_cast<Session*>(arg);
  self->hook_installed_ = false;
  {
    std::lock_guard<std::mutex> lock(self->mu_);
    self->queue_.erase(std::remove_if(self->queue_.begin(), self->queue_.end(),
                                      [](const std::unique_ptr<Job>& j) { return j->kind == Job::Kind::Call; }),
                       self->queue_.end());
  }
  if (self->state_ == State::Open) {
    self->state_ = State::Closing;
    auto job = std::make_unique<Job>();
    job->kind = Job::Kind::Close;
    job->op = "close";
    self->Push(std::move(job));
  }
  if (self->busy()) self->KillAppliance();  // a running call would otherwise delay exit for minutes
  self->JoinWorker();
}

void Session::Finalize(Napi::Env env, std::shared_ptr<Session>* holder, Session* self) {
  self->JoinWorker();
  if (self->hook_installed_) {
    napi_remove_env_cleanup_hook(env, &Session::EnvCleanup, self);
    self->hook_installed_ = false;
  }
  delete holder;
}

void CallJs(Napi::Env env, Napi::Function dispatcher, Session* session, Message* raw) {
  std::unique_ptr<Message> msg(raw);
  if (env == nullptr || session == nullptr) return;  // teardown: just free
  try {
    if (msg->kind == Message::Kind::Event) {
      if (!dispatcher.IsEmpty()) dispatcher.Call(EventArgs(env, msg->event));
    } else {
      session->Settle(env, std::move(msg->job));
    }
  } catch (...) {
    // Never let an exception unwind into Node (e.g. a call during environment teardown).
  }
}

// ---------------------------------------------------------------- Handle (JS object)

Napi::Function Handle::Init(Napi::Env env) {
  std::vector<PropertyDescriptor> props = {
      InstanceMethod("close", &Handle::Close),
      InstanceMethod("cancel", &Handle::Cancel),
      InstanceMethod("user_cancel", &Handle::UserCancel),
      InstanceMethod("kill_appliance", &Handle::KillAppliance),
      InstanceMethod("set_event_mask", &Handle::SetEventMask),
      InstanceAccessor("state", &Handle::GetState, nullptr),
      InstanceAccessor("lastJobId", &Handle::GetLastJobId, nullptr),
      InstanceAccessor("busy", &Handle::GetBusy, nullptr),
  };
  for (const auto& def : CallTable()) {
    props.push_back(InstanceMethod(def.name, &Handle::Dispatch, napi_default,
                                   const_cast<CallDef*>(&def)));
  }
  return DefineClass(env, "GuestfsHandle", props);
}

// new GuestfsHandle(dispatcher, { environment?: boolean, env?: string[] })
Handle::Handle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Handle>(info) {
  Napi::Env env = info.Env();
  if (!info[0].IsFunction()) {
    throw Napi::TypeError::New(env, "GuestfsHandle: the first argument must be the event dispatcher");
  }
  bool use_environment = true;
  std::vector<std::string> env_list;
  if (info[1].IsObject()) {
    auto opts = info[1].As<Napi::Object>();
    if (opts.Has("environment") && opts.Get("environment").IsBoolean()) {
      use_environment = opts.Get("environment").As<Napi::Boolean>();
    }
    if (opts.Has("env") && opts.Get("env").IsArray()) {
      auto arr = opts.Get("env").As<Napi::Array>();
      for (uint32_t i = 0; i < arr.Length(); i++) env_list.push_back(arr.Get(i).ToString());
    }
  }
  unsigned flags = GUESTFS_CREATE_NO_CLOSE_ON_EXIT | GUESTFS_CREATE_NO_ENVIRONMENT;
  guestfs_h* g = guestfs_create_flags(flags);
  if (!g) throw Napi::Error::New(env, std::string("guestfs_create: ") + std::strerror(errno));
  guestfs_set_error_handler(g, nullptr, nullptr);
  int rc = 0;
  if (use_environment) {
    rc = guestfs_parse_environment(g);
  } else if (!env_list.empty()) {
    std::vector<char*> ptrs;
    for (auto& s : env_list) ptrs.push_back(s.data());
    ptrs.push_back(nullptr);
    rc = guestfs_parse_environment_list(g, ptrs.data());
  }
  if (rc == -1) {
    CallError e = ReadLastError(g);
    guestfs_close(g);
    throw MakeError(env, "parse_environment", e, false);
  }
  // Ctrl-C in a terminal must reach us, not qemu: we decide how to stop the appliance.
  guestfs_set_pgroup(g, 1);
  session_ = std::make_shared<Session>(g, this);
  session_->Start(env, info[0].As<Napi::Function>(), session_);
}

Handle::~Handle() {
  if (session_) session_->DetachWrapper();
}

Napi::Value Handle::Dispatch(const Napi::CallbackInfo& info) {
  const auto* def = static_cast<const CallDef*>(info.Data());
  auto job = std::make_unique<Job>();
  job->op = def->name;
  job->cancellable = def->cancellable;
  job->work = def->make(info);  // may throw TypeError: nothing queued then
  return session_->Enqueue(info.Env(), std::move(job));
}

Napi::Value Handle::Close(const Napi::CallbackInfo& info) { return session_->Close(info.Env()); }

Napi::Value Handle::Cancel(const Napi::CallbackInfo& info) {
  if (!info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "cancel: job id must be a number");
  auto id = static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value());
  return Napi::Number::New(info.Env(), session_->Cancel(info.Env(), id));
}

Napi::Value Handle::UserCancel(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), session_->UserCancel());
}

Napi::Value Handle::KillAppliance(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), session_->KillAppliance());
}

Napi::Value Handle::SetEventMask(const Napi::CallbackInfo& info) {
  if (!info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "set_event_mask: mask must be a number");
  session_->SetEventMask(static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value()) & kRegisteredEvents);
  return info.Env().Undefined();
}

Napi::Value Handle::GetState(const Napi::CallbackInfo& info) {
  switch (session_->state()) {
    case Session::State::Open: return Napi::String::New(info.Env(), "open");
    case Session::State::Closing: return Napi::String::New(info.Env(), "closing");
    case Session::State::Closed: return Napi::String::New(info.Env(), "closed");
  }
  return info.Env().Undefined();
}

Napi::Value Handle::GetLastJobId(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(session_->last_job_id()));
}

Napi::Value Handle::GetBusy(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), session_->busy());
}

}  // namespace vdib
