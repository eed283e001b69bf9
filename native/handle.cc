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
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <stdexcept>
#include <system_error>

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

std::atomic<int> live_sessions{0};

// Every Session of the process, for the exit handler below. Never destroyed: exit() may run
// while worker threads still use their sessions.
std::mutex& RegistryMutex() {
  static auto* mu = new std::mutex;
  return *mu;
}
std::set<Session*>& Registry() {
  static auto* sessions = new std::set<Session*>;
  return *sessions;
}

// process.exit() and exit() from native code skip the env cleanup hooks on the main thread: no
// qemu may outlive the process because of that. Only syscalls, no JS.
void KillAllAppliancesAtExit() {
  std::lock_guard<std::mutex> lock(RegistryMutex());
  for (Session* s : Registry()) s->KillAppliance();
}

CallError BindingError(const std::string& code, const std::string& message, int errnum = 0) {
  CallError e;
  e.failed = true;
  e.code = code;
  e.message = message;
  e.errnum = errnum;
  return e;
}

std::string Basename(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool IsQemuSystemName(const std::string& base) {
  return base.rfind("qemu-system-", 0) == 0 || base == "qemu-kvm";
}

std::string ReadLink(const std::string& path) {
  char buf[4096];
  ssize_t n = readlink(path.c_str(), buf, sizeof buf);
  if (n <= 0) return {};
  std::string target(buf, static_cast<size_t>(n));
  const std::string deleted = " (deleted)";  // the binary was replaced since it started
  const size_t n_deleted = deleted.size();
  if (target.size() > n_deleted && target.compare(target.size() - n_deleted, n_deleted, deleted) == 0) {
    target.resize(target.size() - n_deleted);
  }
  return target;
}

// The state letter and parent pid from /proc/PID/stat ('\0' if the process is gone).
std::pair<char, pid_t> StateAndParent(pid_t pid) {
  std::ifstream stat_file("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  auto paren = stat.rfind(')');  // comm may contain spaces and parentheses
  if (paren == std::string::npos || paren + 4 > stat.size()) return {'\0', 0};
  char state = stat[paren + 2];
  long ppid = std::strtol(stat.c_str() + paren + 4, nullptr, 10);
  return {state, static_cast<pid_t>(ppid)};
}

bool IsScript(const std::string& path) {
  std::ifstream f(path);
  char head[2] = {0, 0};
  f.read(head, 2);
  return head[0] == '#' && head[1] == '!';
}

bool LooksLikeQemu(pid_t pid, const std::string& hv) {
  const std::string proc = "/proc/" + std::to_string(pid);
  std::string exe = ReadLink(proc + "/exe");
  std::ifstream cmdline_file(proc + "/cmdline");
  std::string argv0, argv1;
  std::getline(cmdline_file, argv0, '\0');
  std::getline(cmdline_file, argv1, '\0');
  if (IsQemuSystemName(Basename(exe)) || IsQemuSystemName(Basename(argv0))) return true;
  if (hv.empty()) return false;
  // The configured hypervisor by name only (never by resolved executable: a wrapper may be a
  // link to a common binary); a #! script runs with the interpreter as argv[0], itself as argv[1].
  return argv0 == hv || (argv1 == hv && IsScript(hv));
}

// Never throws. A value built by make() (which may throw) concluding d; see Session::Conclude.
enum class Concluded { Yes, Retry, Lost };

Concluded ConcludeRaw(napi_env env, napi_deferred d, bool resolve, napi_value value) {
  napi_status st = resolve ? napi_resolve_deferred(env, d, value) : napi_reject_deferred(env, d, value);
  if (st == napi_ok) return Concluded::Yes;
  // Node frees the deferred once it got past its checks of the arguments and of the JS state,
  // even if V8 then refuses: only those two early failures leave d usable.
  if (st == napi_pending_exception || st == napi_invalid_arg || st == napi_cannot_run_js) {
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
      napi_value ignored;
      napi_get_and_clear_last_exception(env, &ignored);
    }
    return Concluded::Retry;
  }
  return Concluded::Lost;
}

// True while this env can run JS (false during teardown, when every JS call is refused).
bool CanRunJs(napi_env env) {
  napi_value global;
  napi_value fn;
  if (napi_get_global(env, &global) != napi_ok) return false;
  napi_status st = napi_get_named_property(env, global, "Object", &fn);
  if (st == napi_pending_exception) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    return pending;  // a real exception means JS runs; none means the env is stopping
  }
  return st == napi_ok;
}

}  // namespace

std::vector<pid_t> KillQemuChildrenOf(pid_t tid, const std::string& hv) {
  std::vector<pid_t> killed;
  if (tid <= 0) return killed;
  std::ifstream children("/proc/self/task/" + std::to_string(tid) + "/children");
  const pid_t self = getpid();
  long pid = 0;
  while (children >> pid) {
    // Hold the process by a pidfd before checking it, so the signal reaches the process that
    // was checked even if it exits and its pid is reused meanwhile.
    int fd = static_cast<int>(syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0));
    if (fd < 0 && errno != ENOSYS) continue;  // already reaped
    auto [state, ppid] = StateAndParent(static_cast<pid_t>(pid));
    bool ours = ppid == self && state != 'Z' && state != '\0' && LooksLikeQemu(static_cast<pid_t>(pid), hv);
    if (ours) {
      int r = fd >= 0 ? static_cast<int>(syscall(SYS_pidfd_send_signal, fd, SIGKILL, nullptr, 0))
                      : kill(static_cast<pid_t>(pid), SIGKILL);
      if (r == 0) killed.push_back(static_cast<pid_t>(pid));
    }
    if (fd >= 0) close(fd);
  }
  return killed;
}

int LiveSessions() { return live_sessions.load(); }

// ---------------------------------------------------------------- Session

namespace {

// Runs f when the scope ends (a job's Unpin, however settling ends: early return or failure).
template <typename F>
class ScopeExit {
 public:
  ScopeExit(F f, bool active) : f_(std::move(f)), active_(active) {}
  ScopeExit(const ScopeExit&) = delete;
  ScopeExit& operator=(const ScopeExit&) = delete;
  ~ScopeExit() {
    if (active_) f_();
  }

 private:
  F f_;
  bool active_;
};

}  // namespace

Session::Session(guestfs_h* g, Handle* wrapper) : g_(g), wrapper_(wrapper) {
  live_sessions++;
  static std::once_flag at_exit;
  std::call_once(at_exit, [] { std::atexit(KillAllAppliancesAtExit); });
  {
    std::lock_guard<std::mutex> lock(RegistryMutex());
    Registry().insert(this);
  }
  guestfs_set_error_handler(g_, nullptr, nullptr);  // this thread's slot; the worker sets its own
  guestfs_set_event_callback(g_, &Session::OnEvent, kRegisteredEvents, 0, this);
}

Session::~Session() {
  {
    std::lock_guard<std::mutex> lock(RegistryMutex());
    Registry().erase(this);
  }
  if (worker_.joinable()) worker_.join();
  ClosePidfd();
  if (g_) {
    // Only if the worker never ran (Start failed): the CLOSE event must not reach a TSFN that
    // does not exist.
    tsfn_dead_ = true;
    guestfs_close(g_);
  }
  live_sessions--;
}

void Session::Start(Napi::Env env, Napi::Function dispatcher, std::shared_ptr<Session> self, bool fail_tsfn) {
  env_ = env;
  // The TSFN finalizer owns the holder; until Tsfn::New succeeds, this unique_ptr does.
  auto holder = std::make_unique<std::shared_ptr<Session>>(std::move(self));
  try {
    tsfn_ = Tsfn::New(env, dispatcher, "virt-dib:guestfs", 0, fail_tsfn ? 0 : 1, this, &Session::Finalize,
                      holder.get());
  } catch (const Napi::Error& e) {
    throw Napi::Error::New(env,
                           std::string("GuestfsHandle: cannot create the thread-safe function: ") + e.Message());
  }
  (void)holder.release();  // now the finalizer's
  napi_unref_threadsafe_function(env, tsfn_);  // an idle handle never keeps the process alive
  // Registered after the TSFN's own hook, so it runs first at teardown (hooks run LIFO).
  napi_add_env_cleanup_hook(env, &Session::EnvCleanup, this);
  hook_installed_ = true;
  try {
    worker_ = std::thread([this] { Run(); });
  } catch (const std::exception& e) {
    // No worker will ever release the TSFN: release it here so its finalizer frees the holder.
    napi_remove_env_cleanup_hook(env, &Session::EnvCleanup, this);
    hook_installed_ = false;
    wrapper_ = nullptr;
    napi_release_threadsafe_function(tsfn_, napi_tsfn_release);
    throw Napi::Error::New(env, std::string("GuestfsHandle: cannot start the worker thread: ") + e.what());
  }
}

void Session::Push(std::unique_ptr<Job> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(job));
    has_work_.store(true, std::memory_order_release);
  }
  cv_.notify_one();
}

void Session::Pin(napi_env env) noexcept {
  if (pending_++ == 0) {
    napi_ref_threadsafe_function(env, tsfn_);
    try {
      if (wrapper_) wrapper_->Ref();
    } catch (...) {
      // Only fails during teardown, when nothing can collect the wrapper anyway.
    }
  }
}

void Session::Unpin(napi_env env) noexcept {
  if (pending_ > 0 && --pending_ == 0) {
    napi_unref_threadsafe_function(env, tsfn_);
    try {
      if (wrapper_) wrapper_->Unref();
    } catch (...) {
      // As in Pin.
    }
  }
}

template <typename Make>
void Session::Conclude(napi_env env, napi_deferred d, const std::string& op, bool ok, Make&& make) noexcept {
  const int fault = std::exchange(settle_fault_, 0);
  std::string why;
  try {
    if (fault >= 1) throw std::runtime_error("fault injected by __test_fault");
    switch (ConcludeRaw(env, d, ok, make())) {
      case Concluded::Yes: return;
      case Concluded::Lost: why = "the promise was refused by V8"; goto report;
      case Concluded::Retry: why = "the promise could not be settled"; break;
    }
  } catch (const std::exception& e) {
    why = e.what();
  } catch (...) {
    why = "unknown exception";
  }
  // The value could not be made or delivered: reject with an internal error instead.
  {
    const std::string message = op + ": internal error while settling the call: " + why;
    try {
      if (fault >= 2) throw std::runtime_error("fault injected by __test_fault");
      auto e = BindingError("ERR_GUESTFS_INTERNAL", message);
      switch (ConcludeRaw(env, d, false, MakeError(Napi::Env(env), op, e).Value())) {
        case Concluded::Yes: return;
        case Concluded::Lost: goto report;
        case Concluded::Retry: break;
      }
    } catch (...) {
      // Fall back to a rejection that needs no object at all.
    }
    napi_value text = nullptr;
    if (fault >= 3 || napi_create_string_utf8(env, message.c_str(), message.size(), &text) != napi_ok) {
      napi_get_undefined(env, &text);
    }
    if (fault < 3 && ConcludeRaw(env, d, false, text) == Concluded::Yes) return;
  }
report:
  // Nothing could settle the promise. During teardown that is expected and nobody is waiting;
  // otherwise say so, since an awaiting caller now waits forever (the pin is released anyway).
  if (fault >= 3 || CanRunJs(env)) {
    std::fprintf(stderr, "virt-dib: internal error: %s: the call could not be settled (%s)\n", op.c_str(),
                 why.c_str());
  }
}

Napi::Value Session::Enqueue(Napi::Env env, std::unique_ptr<Job> job) {
  napi_deferred deferred = nullptr;
  napi_value promise = nullptr;
  if (napi_create_promise(env, &deferred, &promise) != napi_ok) throw Napi::Error::New(env);
  if (state_ != State::Open) {
    auto e = BindingError("ERR_GUESTFS_CLOSED", job->op + ": the handle is closed", EBADF);
    Conclude(env, deferred, job->op, false, [&] { return MakeError(env, job->op, e).Value(); });
    return Napi::Value(env, promise);
  }
  job->id = next_job_id_++;
  last_job_id_ = job->id;
  job->deferred = deferred;
  job->pinned = true;
  Pin(env);
  Push(std::move(job));
  return Napi::Value(env, promise);
}

Napi::Value Session::Close(Napi::Env env) {
  napi_deferred deferred = nullptr;
  napi_value promise = nullptr;
  if (napi_create_promise(env, &deferred, &promise) != napi_ok) throw Napi::Error::New(env);
  if (state_ == State::Closed) {
    Conclude(env, deferred, "close", true, [&] { return env.Undefined(); });
    return Napi::Value(env, promise);
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
  return Napi::Value(env, promise);
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
    ScopeExit pin([this, env] { Unpin(env); }, dropped->pinned);
    dropped->error = BindingError("ABORT_ERR", dropped->op + ": cancelled before it started", EINTR);
    Conclude(env, std::exchange(dropped->deferred, nullptr), dropped->op, false,
             [&] { return MakeError(env, dropped->op, dropped->error).Value(); });
  }
  return outcome;
}

bool Session::busy() {
  std::lock_guard<std::mutex> lock(mu_);
  return running_ != nullptr || !queue_.empty();
}

bool Session::KillAppliance() {
  std::string hv;
  {
    std::lock_guard<std::mutex> lock(pid_mu_);
    if (pidfd_ >= 0) {
      if (syscall(SYS_pidfd_send_signal, pidfd_, SIGKILL, nullptr, 0) == 0) return true;
      // ESRCH: already gone. Fall through: a relaunch may have started a qemu not yet recorded.
    }
    hv = hv_;
  }
  return !KillQemuChildrenOf(worker_tid_.load(), hv).empty();
}

void Session::ClosePidfd() {
  std::lock_guard<std::mutex> lock(pid_mu_);
  if (pidfd_ >= 0) close(pidfd_);
  pidfd_ = -1;
}

void Session::Settle(napi_env env, std::unique_ptr<Job> job) noexcept {
  ScopeExit pin([this, env] { Unpin(env); }, job->pinned);
  // After EnvCleanup nothing may touch JS: the job (and any fd it owns) is just freed.
  if (env_stopping_) return;
  Napi::Env js(env);
  if (job->kind == Job::Kind::Close) {
    state_ = State::Closed;
    auto waiters = std::move(close_waiters_);
    for (auto d : waiters) {
      Conclude(env, d, "close", !job->error.failed,
               [&] {
                 return job->error.failed ? MakeError(js, "shutdown", job->error).Value() : js.Undefined();
               });
    }
    return;
  }
  napi_deferred d = std::exchange(job->deferred, nullptr);
  if (!d) return;
  const bool failed = job->error.failed;
  Conclude(env, d, job->op, !failed, [&]() -> napi_value {
    if (failed) return MakeError(js, job->op, job->error).Value();
    return ToJs(js, job->result);
  });
}

void Session::Deliver(napi_env env, Napi::Function dispatcher, const EventMsg& event) noexcept {
  if (env_stopping_ || dispatcher.IsEmpty()) return;
  try {
    dispatcher.Call(EventArgs(Napi::Env(env), event));
  } catch (const Napi::Error& e) {
    // The dispatcher threw: a bug on the JS side, reported like any uncaught exception (the
    // TS dispatcher never throws; it defers a throwing listener to a microtask).
    try {
      napi_fatal_exception(env, e.Value());
    } catch (...) {
      // The error object itself is gone: nothing left to report it with.
    }
  } catch (...) {
    // A payload that cannot be copied into JS (out of memory): the event is dropped.
  }
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

void Session::BeforeLaunch() {
  // Recorded here, on the only thread that may ask the handle: while launch runs, this is how
  // KillAppliance recognises the handle's qemu when the hypervisor has an unusual name.
  char* hv = guestfs_get_hv(g_);
  std::lock_guard<std::mutex> lock(pid_mu_);
  hv_ = hv ? hv : "";
  free(hv);
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
      if (job->lifecycle == Lifecycle::Launch) BeforeLaunch();
      try {
        job->work(g_, job->result, job->error);
      } catch (const std::exception& e) {
        job->error = BindingError("ERR_GUESTFS_INTERNAL", std::string("internal error: ") + e.what());
      } catch (...) {
        job->error = BindingError("ERR_GUESTFS_INTERNAL", "internal error");
      }
      if (job->lifecycle == Lifecycle::Launch) AfterLaunch(!job->error.failed);
      if (job->lifecycle == Lifecycle::Shutdown) ClosePidfd();
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
  worker_tid_ = 0;  // a later thread may get this tid: never look for qemu under it again
  tsfn_.Release();  // last use of the TSFN by this thread
}

void Session::JoinWorker() {
  if (worker_.joinable() && worker_.get_id() != std::this_thread::get_id()) worker_.join();
}

void Session::EnvCleanup(void* arg) {
  // Normal exit, process.exit() or worker_threads teardown: every queued call is concluded
  // (rejected if the env still lets us; during teardown it usually does not, and nobody can
  // observe it then), their fds are closed, qemu is killed and the handle closed. From here on
  // no message of this session touches JS.
  auto* self = static_cast<Session*>(arg);
  self->hook_installed_ = false;
  std::deque<std::unique_ptr<Job>> dropped;
  {
    std::lock_guard<std::mutex> lock(self->mu_);
    for (auto& j : self->queue_) {
      if (j->kind == Job::Kind::Call) dropped.push_back(std::move(j));
    }
    self->queue_.erase(std::remove(self->queue_.begin(), self->queue_.end(), nullptr), self->queue_.end());
    self->has_work_.store(!self->queue_.empty(), std::memory_order_release);
  }
  napi_env env = self->env_;
  // Cleanup hooks run without a handle scope; Node refuses to settle promises once the env is
  // stopping, so the rejection is attempted for correctness and silently refused in practice.
  napi_handle_scope scope = nullptr;
  const bool have_scope = napi_open_handle_scope(env, &scope) == napi_ok;
  for (auto& job : dropped) {
    ScopeExit pin([self, env] { self->Unpin(env); }, job->pinned);
    napi_deferred d = std::exchange(job->deferred, nullptr);
    if (!d || !have_scope) continue;
    const std::string message = job->op + ": the environment is shutting down";
    napi_value text = nullptr;
    if (napi_create_string_utf8(env, message.c_str(), message.size(), &text) == napi_ok) {
      ConcludeRaw(env, d, false, text);
    }
  }
  if (have_scope) napi_close_handle_scope(env, scope);
  dropped.clear();  // frees their Work: fds owned by transfers are closed here
  self->env_stopping_ = true;
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
  if (msg->kind == Message::Kind::Event) {
    session->Deliver(env, dispatcher, msg->event);
  } else {
    session->Settle(env, std::move(msg->job));
  }
}

// ---------------------------------------------------------------- Handle (JS object)

Napi::Function Handle::Init(Napi::Env env) {
  std::vector<PropertyDescriptor> props = {
      InstanceMethod("close", &Handle::Close),
      InstanceMethod("cancel", &Handle::Cancel),
      InstanceMethod("kill_appliance", &Handle::KillAppliance),
      InstanceMethod("set_event_mask", &Handle::SetEventMask),
      InstanceAccessor("state", &Handle::GetState, nullptr),
      InstanceAccessor("lastJobId", &Handle::GetLastJobId, nullptr),
      InstanceAccessor("busy", &Handle::GetBusy, nullptr),
      InstanceMethod("__test_fault", &Handle::TestFault),
  };
  for (const auto& def : CallTable()) {
    props.push_back(InstanceMethod(def.name, &Handle::Dispatch, napi_default,
                                   const_cast<CallDef*>(&def)));
  }
  return DefineClass(env, "GuestfsHandle", props);
}

// new GuestfsHandle(dispatcher, { environment?: boolean, env?: string[], __testFault?: 'start' })
Handle::Handle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Handle>(info) {
  Napi::Env env = info.Env();
  if (!info[0].IsFunction()) {
    throw Napi::TypeError::New(env, "GuestfsHandle: the first argument must be the event dispatcher");
  }
  bool use_environment = true;
  bool fail_start = false;
  std::vector<std::string> env_list;
  if (info[1].IsObject()) {
    auto opts = info[1].As<Napi::Object>();
    // Test hook, never set by src/: make the thread-safe function's creation fail for real.
    fail_start = opts.Get("__testFault").StrictEquals(Napi::String::New(env, "start"));
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
  if (!g) throw Napi::Error::New(env, "guestfs_create: " + std::generic_category().message(errno));
  guestfs_set_error_handler(g, nullptr, nullptr);
  int rc = 0;
  if (use_environment) {
    rc = guestfs_parse_environment(g);
  } else if (!env_list.empty()) {
    std::vector<char*> ptrs;
    ptrs.reserve(env_list.size() + 1);
    for (auto& s : env_list) ptrs.push_back(s.data());
    ptrs.push_back(nullptr);
    rc = guestfs_parse_environment_list(g, ptrs.data());
  }
  if (rc == -1) {
    CallError e = ReadLastError(g);
    guestfs_close(g);
    throw MakeError(env, "parse_environment", e);
  }
  // Ctrl-C in a terminal must reach us, not qemu: we decide how to stop the appliance.
  guestfs_set_pgroup(g, 1);
  session_ = std::make_shared<Session>(g, this);
  session_->Start(env, info[0].As<Napi::Function>(), session_, fail_start);
}

Handle::~Handle() {
  if (session_) session_->DetachWrapper();
}

Napi::Value Handle::Dispatch(const Napi::CallbackInfo& info) {
  const auto* def = static_cast<const CallDef*>(info.Data());
  auto job = std::make_unique<Job>();
  job->op = def->name;
  job->cancellable = def->cancellable;
  job->lifecycle = def->lifecycle;
  job->work = def->make(info);  // may throw TypeError: nothing queued then
  return session_->Enqueue(info.Env(), std::move(job));
}

Napi::Value Handle::Close(const Napi::CallbackInfo& info) { return session_->Close(info.Env()); }

Napi::Value Handle::Cancel(const Napi::CallbackInfo& info) {
  if (!info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "cancel: job id must be a number");
  auto id = static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value());
  return Napi::Number::New(info.Env(), session_->Cancel(info.Env(), id));
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

// __test_fault('settle' | 'settle-error' | 'settle-all'): the next call settled on this handle
// fails to settle at 1, 2 or 3 stages (see Session::Conclude). For test/native only; the TS
// Guestfs class never exposes its native handle.
Napi::Value Handle::TestFault(const Napi::CallbackInfo& info) {
  std::string kind = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  int level = kind == "settle" ? 1 : kind == "settle-error" ? 2 : kind == "settle-all" ? 3 : -1;
  if (level < 0) throw Napi::TypeError::New(info.Env(), "__test_fault: unknown fault '" + kind + "'");
  session_->ArmSettleFault(level);
  return info.Env().Undefined();
}

}  // namespace vdib
