// The wrapped libguestfs calls, one row each, named as in C (guestfs_<name>). Calls without
// optional arguments are bound generically by Bind<Ret>() from the C prototype; calls with
// optional arguments, structs, buffers or host file descriptors have a small hand-written row.
// Policy (defaults, validation messages, names) lives in TypeScript, not here.
#include "calls.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace vdib {

namespace {

using Info = Napi::CallbackInfo;
using Str = std::optional<std::string>;
using StrList = std::vector<std::string>;

[[noreturn]] void ThrowType(Napi::Env env, const std::string& msg) {
  throw Napi::TypeError::New(env, msg);
}

std::string ReadString(const Napi::Value& v, const char* what) {
  if (!v.IsString()) ThrowType(v.Env(), std::string(what) + " must be a string");
  std::string s = v.As<Napi::String>();
  if (s.find('\0') != std::string::npos) ThrowType(v.Env(), std::string(what) + " must not contain NUL");
  return s;
}

Str ReadOptString(const Napi::Value& v, const char* what) {
  if (v.IsNull() || v.IsUndefined()) return std::nullopt;
  return ReadString(v, what);
}

StrList ReadStringList(const Napi::Value& v, const char* what) {
  if (!v.IsArray()) ThrowType(v.Env(), std::string(what) + " must be an array of strings");
  auto arr = v.As<Napi::Array>();
  StrList out;
  for (uint32_t i = 0; i < arr.Length(); i++) out.push_back(ReadString(arr.Get(i), what));
  return out;
}

int ReadInt(const Napi::Value& v, const char* what) {
  if (v.IsBoolean()) return v.As<Napi::Boolean>() ? 1 : 0;
  if (!v.IsNumber()) ThrowType(v.Env(), std::string(what) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (std::trunc(d) != d || d < -2147483648.0 || d > 2147483647.0) {
    throw Napi::RangeError::New(v.Env(), std::string(what) + " must be a 32-bit integer");
  }
  return static_cast<int>(d);
}

int64_t ReadInt64(const Napi::Value& v, const char* what) {
  if (v.IsBigInt()) {
    bool lossless = false;
    int64_t x = v.As<Napi::BigInt>().Int64Value(&lossless);
    if (!lossless) throw Napi::RangeError::New(v.Env(), std::string(what) + " does not fit in 64 bits");
    return x;
  }
  if (!v.IsNumber()) ThrowType(v.Env(), std::string(what) + " must be a number or bigint");
  double d = v.As<Napi::Number>().DoubleValue();
  if (std::trunc(d) != d || std::fabs(d) > 9007199254740991.0) {
    throw Napi::RangeError::New(v.Env(), std::string(what) + " must be a safe integer");
  }
  return static_cast<int64_t>(d);
}

// NULL-terminated char* array over owned strings; a temporary that lives for the full call.
struct CStrArray {
  std::vector<char*> ptrs;
  explicit CStrArray(const StrList& list) {
    for (const auto& s : list) ptrs.push_back(const_cast<char*>(s.c_str()));
    ptrs.push_back(nullptr);
  }
  operator char* const*() const { return ptrs.data(); }
};

// ------------------------------------------------ argument readers for Bind

template <typename T>
struct Arg;

template <>
struct Arg<const char*> {
  using Owned = Str;  // null/undefined -> NULL; libguestfs itself rejects NULL where required
  static Owned Read(const Napi::Value& v, size_t i) {
    return ReadOptString(v, ("argument " + std::to_string(i + 1)).c_str());
  }
  static const char* Get(const Owned& o) { return o ? o->c_str() : nullptr; }
};

template <>
struct Arg<char* const*> {
  using Owned = StrList;
  static Owned Read(const Napi::Value& v, size_t i) {
    return ReadStringList(v, ("argument " + std::to_string(i + 1)).c_str());
  }
  static CStrArray Get(const Owned& o) { return CStrArray(o); }
};

template <>
struct Arg<int> {
  using Owned = int;
  static Owned Read(const Napi::Value& v, size_t i) { return ReadInt(v, ("argument " + std::to_string(i + 1)).c_str()); }
  static int Get(Owned o) { return o; }
};

template <>
struct Arg<int64_t> {
  using Owned = int64_t;
  static Owned Read(const Napi::Value& v, size_t i) { return ReadInt64(v, ("argument " + std::to_string(i + 1)).c_str()); }
  static int64_t Get(Owned o) { return o; }
};

// ------------------------------------------------ return converters

enum class R { Err, Int, Bool, Int64, String, ConstString, ConstOptString, StringList, Hashtable };

Value TakeStringList(char** list) {
  Value arr = Value::Array();
  for (char** p = list; *p; p++) {
    arr.Push(Value::String(*p));
    free(*p);
  }
  free(list);
  return arr;
}

Value TakeHashtable(char** list) {
  Value obj = Value::Object();
  for (char** p = list; p[0] && p[1]; p += 2) obj.Add(p[0], Value::String(p[1]));
  for (char** p = list; *p; p++) free(*p);
  free(list);
  return obj;
}

template <R K, typename Ret>
void Convert(guestfs_h* g, Ret r, Value& out, CallError& err) {
  if constexpr (K == R::Err || K == R::Int || K == R::Bool || K == R::Int64) {
    if (r == -1) { err = ReadLastError(g); return; }
    if constexpr (K == R::Err) out = Value::Undef();
    else if constexpr (K == R::Bool) out = Value::Bool(r != 0);
    else out = Value::Number(static_cast<double>(r));
  } else if constexpr (K == R::ConstOptString) {
    out = r ? Value::String(r) : Value::Null();
  } else {
    if (r == nullptr) { err = ReadLastError(g); return; }
    if constexpr (K == R::String) { out = Value::String(r); free(r); }
    else if constexpr (K == R::ConstString) out = Value::String(r);
    else if constexpr (K == R::StringList) out = TakeStringList(r);
    else if constexpr (K == R::Hashtable) out = TakeHashtable(r);
  }
}

template <R K, typename Ret, typename... A, size_t... I>
Work MakeWork(Ret (*fn)(guestfs_h*, A...), const Info& info, std::index_sequence<I...>) {
  auto owned = std::make_tuple(Arg<A>::Read(info[I], I)...);
  return [fn, owned](guestfs_h* g, Value& out, CallError& err) {
    Ret r = fn(g, Arg<A>::Get(std::get<I>(owned))...);
    Convert<K, Ret>(g, r, out, err);
  };
}

template <R K, typename Ret, typename... A>
std::function<Work(const Info&)> Bind(Ret (*fn)(guestfs_h*, A...)) {
  return [fn](const Info& info) { return MakeWork<K>(fn, info, std::index_sequence_for<A...>{}); };
}

// ------------------------------------------------ optional arguments

// Reads a JS options object; unknown keys are a TypeError (catches typos before queueing).
class Opts {
 public:
  Opts(const Napi::Value& v, const char* fn, std::initializer_list<const char*> known) : fn_(fn) {
    if (v.IsUndefined() || v.IsNull()) return;
    if (!v.IsObject() || v.IsArray()) ThrowType(v.Env(), std::string(fn) + ": options must be an object");
    obj_ = v.As<Napi::Object>();
    std::set<std::string> allowed;
    for (const char* k : known) allowed.insert(k);
    auto keys = obj_->GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); i++) {
      std::string key = keys.Get(i).ToString();
      if (!allowed.count(key)) ThrowType(v.Env(), std::string(fn) + ": unknown option '" + key + "'");
    }
  }
  Str S(const char* key) { auto v = Get(key); return v ? Str(ReadString(*v, Name(key).c_str())) : std::nullopt; }
  std::optional<int> I(const char* key) { auto v = Get(key); return v ? std::optional<int>(ReadInt(*v, Name(key).c_str())) : std::nullopt; }
  std::optional<int64_t> I64(const char* key) { auto v = Get(key); return v ? std::optional<int64_t>(ReadInt64(*v, Name(key).c_str())) : std::nullopt; }
  std::optional<StrList> L(const char* key) { auto v = Get(key); return v ? std::optional<StrList>(ReadStringList(*v, Name(key).c_str())) : std::nullopt; }

 private:
  std::optional<Napi::Value> Get(const char* key) {
    if (!obj_) return std::nullopt;
    Napi::Value v = obj_->Get(key);
    if (v.IsUndefined() || v.IsNull()) return std::nullopt;
    return v;
  }
  std::string Name(const char* key) const { return std::string(fn_) + ": option '" + key + "'"; }
  const char* fn_;
  std::optional<Napi::Object> obj_;
};

// Sets an optional struct field and its bitmask bit when the option was given.
#define OPT(argv, opt, field, bit)           \
  if (opt) {                                 \
    (argv).field = Raw(*(opt));              \
    (argv).bitmask |= (bit);                 \
  }
inline const char* Raw(const std::string& s) { return s.c_str(); }
inline int Raw(int x) { return x; }
inline int64_t Raw(int64_t x) { return x; }

// A host-side FileIn/FileOut: a path, or a file descriptor we own (a pipe end), used as
// /dev/fd/N and closed as soon as the transfer returns so the other end sees EOF.
class HostFile {
 public:
  HostFile(const Napi::Value& v, const char* what) {
    if (v.IsNumber()) {
      fd_ = ReadInt(v, what);
      if (fd_ < 0) throw Napi::RangeError::New(v.Env(), std::string(what) + " must be a valid file descriptor");
      path_ = "/dev/fd/" + std::to_string(fd_);
    } else {
      path_ = ReadString(v, what);
    }
  }
  HostFile(const HostFile&) = delete;
  ~HostFile() { Release(); }
  const char* path() const { return path_.c_str(); }
  void Release() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  std::string path_;
  int fd_ = -1;
};

std::shared_ptr<HostFile> ReadHostFile(const Napi::Value& v, const char* what) {
  return std::make_shared<HostFile>(v, what);
}

// ------------------------------------------------ struct converters

Value PartitionList(struct guestfs_partition_list* l) {
  Value arr = Value::Array();
  for (uint32_t i = 0; i < l->len; i++) {
    const auto& p = l->val[i];
    arr.Push(Value::Object()
                 .Add("part_num", Value::Number(p.part_num))
                 .Add("part_start", Value::Number(static_cast<double>(p.part_start)))
                 .Add("part_end", Value::Number(static_cast<double>(p.part_end)))
                 .Add("part_size", Value::Number(static_cast<double>(p.part_size))));
  }
  guestfs_free_partition_list(l);
  return arr;
}

Value Statns(struct guestfs_statns* s) {
  auto n = [](int64_t x) { return Value::Number(static_cast<double>(x)); };
  Value v = Value::Object();
  v.Add("st_dev", n(s->st_dev)).Add("st_ino", n(s->st_ino)).Add("st_mode", n(s->st_mode));
  v.Add("st_nlink", n(s->st_nlink)).Add("st_uid", n(s->st_uid)).Add("st_gid", n(s->st_gid));
  v.Add("st_rdev", n(s->st_rdev)).Add("st_size", n(s->st_size)).Add("st_blksize", n(s->st_blksize));
  v.Add("st_blocks", n(s->st_blocks)).Add("st_atime_sec", n(s->st_atime_sec));
  v.Add("st_mtime_sec", n(s->st_mtime_sec)).Add("st_ctime_sec", n(s->st_ctime_sec));
  guestfs_free_statns(s);
  return v;
}

template <typename T, typename F>
void TakeStruct(guestfs_h* g, T* r, F convert, Value& out, CallError& err) {
  if (!r) { err = ReadLastError(g); return; }
  out = convert(r);
}

// ------------------------------------------------ hand-written rows

Work AddDrive(const Info& info) {
  auto filename = ReadString(info[0], "add_drive: filename");
  Opts o(info[1], "add_drive", {"readonly", "format", "iface", "name", "label", "cachemode", "discard", "copyonread", "blocksize"});
  auto readonly = o.I("readonly");
  auto format = o.S("format"), iface = o.S("iface"), name = o.S("name"), label = o.S("label");
  auto cachemode = o.S("cachemode"), discard = o.S("discard");
  auto copyonread = o.I("copyonread"), blocksize = o.I("blocksize");
  return [=](guestfs_h* g, Value& out, CallError& err) {
    struct guestfs_add_drive_opts_argv a{};
    OPT(a, readonly, readonly, GUESTFS_ADD_DRIVE_OPTS_READONLY_BITMASK);
    OPT(a, format, format, GUESTFS_ADD_DRIVE_OPTS_FORMAT_BITMASK);
    OPT(a, iface, iface, GUESTFS_ADD_DRIVE_OPTS_IFACE_BITMASK);
    OPT(a, name, name, GUESTFS_ADD_DRIVE_OPTS_NAME_BITMASK);
    OPT(a, label, label, GUESTFS_ADD_DRIVE_OPTS_LABEL_BITMASK);
    OPT(a, cachemode, cachemode, GUESTFS_ADD_DRIVE_OPTS_CACHEMODE_BITMASK);
    OPT(a, discard, discard, GUESTFS_ADD_DRIVE_OPTS_DISCARD_BITMASK);
    OPT(a, copyonread, copyonread, GUESTFS_ADD_DRIVE_OPTS_COPYONREAD_BITMASK);
    OPT(a, blocksize, blocksize, GUESTFS_ADD_DRIVE_OPTS_BLOCKSIZE_BITMASK);
    Convert<R::Err>(g, guestfs_add_drive_opts_argv(g, filename.c_str(), &a), out, err);
  };
}

Work AddDriveScratch(const Info& info) {
  auto size = ReadInt64(info[0], "add_drive_scratch: size");
  Opts o(info[1], "add_drive_scratch", {"name", "label", "blocksize"});
  auto name = o.S("name"), label = o.S("label");
  auto blocksize = o.I("blocksize");
  return [=](guestfs_h* g, Value& out, CallError& err) {
    struct guestfs_add_drive_scratch_argv a{};
    OPT(a, name, name, GUESTFS_ADD_DRIVE_SCRATCH_NAME_BITMASK);
    OPT(a, label, label, GUESTFS_ADD_DRIVE_SCRATCH_LABEL_BITMASK);
    OPT(a, blocksize, blocksize, GUESTFS_ADD_DRIVE_SCRATCH_BLOCKSIZE_BITMASK);
    Convert<R::Err>(g, guestfs_add_drive_scratch_argv(g, size, &a), out, err);
  };
}

Work DiskCreate(const Info& info) {
  auto filename = ReadString(info[0], "disk_create: filename");
  auto format = ReadString(info[1], "disk_create: format");
  auto size = ReadInt64(info[2], "disk_create: size");
  Opts o(info[3], "disk_create", {"backingfile", "backingformat", "preallocation", "compat", "clustersize"});
  auto backingfile = o.S("backingfile"), backingformat = o.S("backingformat");
  auto preallocation = o.S("preallocation"), compat = o.S("compat");
  auto clustersize = o.I("clustersize");
  return [=](guestfs_h* g, Value& out, CallError& err) {
    struct guestfs_disk_create_argv a{};
    OPT(a, backingfile, backingfile, GUESTFS_DISK_CREATE_BACKINGFILE_BITMASK);
    OPT(a, backingformat, backingformat, GUESTFS_DISK_CREATE_BACKINGFORMAT_BITMASK);
    OPT(a, preallocation, preallocation, GUESTFS_DISK_CREATE_PREALLOCATION_BITMASK);
    OPT(a, compat, compat, GUESTFS_DISK_CREATE_COMPAT_BITMASK);
    OPT(a, clustersize, clustersize, GUESTFS_DISK_CREATE_CLUSTERSIZE_BITMASK);
    Convert<R::Err>(g, guestfs_disk_create_argv(g, filename.c_str(), format.c_str(), size, &a), out, err);
  };
}

Work Mkfs(const Info& info) {
  auto fstype = ReadString(info[0], "mkfs: fstype");
  auto device = ReadString(info[1], "mkfs: device");
  Opts o(info[2], "mkfs", {"blocksize", "features", "inode", "sectorsize", "label"});
  auto blocksize = o.I("blocksize"), inode = o.I("inode"), sectorsize = o.I("sectorsize");
  auto features = o.S("features"), label = o.S("label");
  return [=](guestfs_h* g, Value& out, CallError& err) {
    struct guestfs_mkfs_opts_argv a{};
    OPT(a, blocksize, blocksize, GUESTFS_MKFS_OPTS_BLOCKSIZE_BITMASK);
    OPT(a, features, features, GUESTFS_MKFS_OPTS_FEATURES_BITMASK);
    OPT(a, inode, inode, GUESTFS_MKFS_OPTS_INODE_BITMASK);
    OPT(a, sectorsize, sectorsize, GUESTFS_MKFS_OPTS_SECTORSIZE_BITMASK);
    OPT(a, label, label, GUESTFS_MKFS_OPTS_LABEL_BITMASK);
    Convert<R::Err>(g, guestfs_mkfs_opts_argv(g, fstype.c_str(), device.c_str(), &a), out, err);
  };
}

Work Umount(const Info& info) {
  auto pathordevice = ReadString(info[0], "umount: pathordevice");
  Opts o(info[1], "umount", {"force", "lazyunmount"});
  auto force = o.I("force"), lazyunmount = o.I("lazyunmount");
  return [=](guestfs_h* g, Value& out, CallError& err) {
    struct guestfs_umount_opts_argv a{};
    OPT(a, force, force, GUESTFS_UMOUNT_OPTS_FORCE_BITMASK);
    OPT(a, lazyunmount, lazyunmount, GUESTFS_UMOUNT_OPTS_LAZYUNMOUNT_BITMASK);
    Convert<R::Err>(g, guestfs_umount_opts_argv(g, pathordevice.c_str(), &a), out, err);
  };
}

Work MountLocal(const Info& info) {
  auto mountpoint = ReadString(info[0], "mount_local: localmountpoint");
  Opts o(info[1], "mount_local", {"readonly", "options", "cachetimeout", "debugcalls"});
  auto readonly = o.I("readonly"), cachetimeout = o.I("cachetimeout"), debugcalls = o.I("debugcalls");
  auto options = o.S("options");
  return [=](guestfs_h* g, Value& out, CallError& err) {
    struct guestfs_mount_local_argv a{};
    OPT(a, readonly, readonly, GUESTFS_MOUNT_LOCAL_READONLY_BITMASK);
    OPT(a, options, options, GUESTFS_MOUNT_LOCAL_OPTIONS_BITMASK);
    OPT(a, cachetimeout, cachetimeout, GUESTFS_MOUNT_LOCAL_CACHETIMEOUT_BITMASK);
    OPT(a, debugcalls, debugcalls, GUESTFS_MOUNT_LOCAL_DEBUGCALLS_BITMASK);
    Convert<R::Err>(g, guestfs_mount_local_argv(g, mountpoint.c_str(), &a), out, err);
  };
}

Work UmountLocal(const Info& info) {
  Opts o(info[0], "umount_local", {"retry"});
  auto retry = o.I("retry");
  return [=](guestfs_h* g, Value& out, CallError& err) {
    struct guestfs_umount_local_argv a{};
    OPT(a, retry, retry, GUESTFS_UMOUNT_LOCAL_RETRY_BITMASK);
    Convert<R::Err>(g, guestfs_umount_local_argv(g, &a), out, err);
  };
}

Work TarIn(const Info& info) {
  auto tarfile = ReadHostFile(info[0], "tar_in: tarfile");
  auto directory = ReadString(info[1], "tar_in: directory");
  Opts o(info[2], "tar_in", {"compress", "xattrs", "selinux", "acls"});
  auto compress = o.S("compress");
  auto xattrs = o.I("xattrs"), selinux = o.I("selinux"), acls = o.I("acls");
  return [=](guestfs_h* g, Value& out, CallError& err) {
    struct guestfs_tar_in_opts_argv a{};
    OPT(a, compress, compress, GUESTFS_TAR_IN_OPTS_COMPRESS_BITMASK);
    OPT(a, xattrs, xattrs, GUESTFS_TAR_IN_OPTS_XATTRS_BITMASK);
    OPT(a, selinux, selinux, GUESTFS_TAR_IN_OPTS_SELINUX_BITMASK);
    OPT(a, acls, acls, GUESTFS_TAR_IN_OPTS_ACLS_BITMASK);
    int r = guestfs_tar_in_opts_argv(g, tarfile->path(), directory.c_str(), &a);
    tarfile->Release();
    Convert<R::Err>(g, r, out, err);
  };
}

// Rows that take a host fd read it first: from then on it is owned (closed on any later
// argument error, on rejection by a closed handle, on cancel and at teardown), never leaked.
Work TarOut(const Info& info) {
  auto tarfile = ReadHostFile(info[1], "tar_out: tarfile");
  auto directory = ReadString(info[0], "tar_out: directory");
  Opts o(info[2], "tar_out", {"compress", "numericowner", "excludes", "xattrs", "selinux", "acls"});
  auto compress = o.S("compress");
  auto numericowner = o.I("numericowner"), xattrs = o.I("xattrs"), selinux = o.I("selinux"), acls = o.I("acls");
  auto excludes = o.L("excludes");
  return [=](guestfs_h* g, Value& out, CallError& err) {
    struct guestfs_tar_out_opts_argv a{};
    std::optional<CStrArray> ex;
    if (excludes) {
      ex.emplace(*excludes);
      a.excludes = *ex;
      a.bitmask |= GUESTFS_TAR_OUT_OPTS_EXCLUDES_BITMASK;
    }
    OPT(a, compress, compress, GUESTFS_TAR_OUT_OPTS_COMPRESS_BITMASK);
    OPT(a, numericowner, numericowner, GUESTFS_TAR_OUT_OPTS_NUMERICOWNER_BITMASK);
    OPT(a, xattrs, xattrs, GUESTFS_TAR_OUT_OPTS_XATTRS_BITMASK);
    OPT(a, selinux, selinux, GUESTFS_TAR_OUT_OPTS_SELINUX_BITMASK);
    OPT(a, acls, acls, GUESTFS_TAR_OUT_OPTS_ACLS_BITMASK);
    int r = guestfs_tar_out_opts_argv(g, directory.c_str(), tarfile->path(), &a);
    tarfile->Release();
    Convert<R::Err>(g, r, out, err);
  };
}

Work Mksquashfs(const Info& info) {
  auto filename = ReadHostFile(info[1], "mksquashfs: filename");
  auto path = ReadString(info[0], "mksquashfs: path");
  Opts o(info[2], "mksquashfs", {"compress", "excludes"});
  auto compress = o.S("compress");
  auto excludes = o.L("excludes");
  return [=](guestfs_h* g, Value& out, CallError& err) {
    struct guestfs_mksquashfs_argv a{};
    std::optional<CStrArray> ex;
    if (excludes) {
      ex.emplace(*excludes);
      a.excludes = *ex;
      a.bitmask |= GUESTFS_MKSQUASHFS_EXCLUDES_BITMASK;
    }
    OPT(a, compress, compress, GUESTFS_MKSQUASHFS_COMPRESS_BITMASK);
    int r = guestfs_mksquashfs_argv(g, path.c_str(), filename->path(), &a);
    filename->Release();
    Convert<R::Err>(g, r, out, err);
  };
}

Work Upload(const Info& info) {
  auto filename = ReadHostFile(info[0], "upload: filename");
  auto remote = ReadString(info[1], "upload: remotefilename");
  return [=](guestfs_h* g, Value& out, CallError& err) {
    int r = guestfs_upload(g, filename->path(), remote.c_str());
    filename->Release();
    Convert<R::Err>(g, r, out, err);
  };
}

Work Download(const Info& info) {
  auto filename = ReadHostFile(info[1], "download: filename");
  auto remote = ReadString(info[0], "download: remotefilename");
  return [=](guestfs_h* g, Value& out, CallError& err) {
    int r = guestfs_download(g, remote.c_str(), filename->path());
    filename->Release();
    Convert<R::Err>(g, r, out, err);
  };
}

Work ReadFile(const Info& info) {
  auto path = ReadString(info[0], "read_file: path");
  return [=](guestfs_h* g, Value& out, CallError& err) {
    size_t size = 0;
    char* r = guestfs_read_file(g, path.c_str(), &size);
    if (!r) { err = ReadLastError(g); return; }
    out = Value::Bytes(r, size);
    free(r);
  };
}

Work WriteFile(const Info& info, bool append) {
  const char* fn = append ? "write_append" : "write";
  auto path = ReadString(info[0], fn);
  std::string content;
  if (info[1].IsBuffer()) {
    auto buf = info[1].As<Napi::Buffer<char>>();
    content.assign(buf.Data(), buf.Length());
  } else if (info[1].IsString()) {
    content = info[1].As<Napi::String>();
  } else {
    ThrowType(info.Env(), std::string(fn) + ": content must be a Buffer or a string");
  }
  return [=](guestfs_h* g, Value& out, CallError& err) {
    int r = append ? guestfs_write_append(g, path.c_str(), content.data(), content.size())
                   : guestfs_write(g, path.c_str(), content.data(), content.size());
    Convert<R::Err>(g, r, out, err);
  };
}

Work IsDir(const Info& info, bool file) {
  const char* fn = file ? "is_file" : "is_dir";
  auto path = ReadString(info[0], fn);
  Opts o(info[1], fn, {"followsymlinks"});
  auto follow = o.I("followsymlinks");
  return [=](guestfs_h* g, Value& out, CallError& err) {
    int r;
    if (file) {
      struct guestfs_is_file_opts_argv a{};
      OPT(a, follow, followsymlinks, GUESTFS_IS_FILE_OPTS_FOLLOWSYMLINKS_BITMASK);
      r = guestfs_is_file_opts_argv(g, path.c_str(), &a);
    } else {
      struct guestfs_is_dir_opts_argv a{};
      OPT(a, follow, followsymlinks, GUESTFS_IS_DIR_OPTS_FOLLOWSYMLINKS_BITMASK);
      r = guestfs_is_dir_opts_argv(g, path.c_str(), &a);
    }
    Convert<R::Bool>(g, r, out, err);
  };
}

Work PartList(const Info& info) {
  auto device = ReadString(info[0], "part_list: device");
  return [=](guestfs_h* g, Value& out, CallError& err) {
    TakeStruct(g, guestfs_part_list(g, device.c_str()), PartitionList, out, err);
  };
}

Work Stat(const Info& info) {
  auto path = ReadString(info[0], "statns: path");
  return [=](guestfs_h* g, Value& out, CallError& err) {
    TakeStruct(g, guestfs_statns(g, path.c_str()), Statns, out, err);
  };
}

Work Version(const Info&) {
  return [](guestfs_h* g, Value& out, CallError& err) {
    TakeStruct(g, guestfs_version(g), [](struct guestfs_version* v) {
      Value o = Value::Object();
      o.Add("major", Value::Number(static_cast<double>(v->major)));
      o.Add("minor", Value::Number(static_cast<double>(v->minor)));
      o.Add("release", Value::Number(static_cast<double>(v->release)));
      o.Add("extra", Value::String(v->extra));
      guestfs_free_version(v);
      return o;
    }, out, err);
  };
}

// guestfs_internal_test_* are exported but private: resolved at run time so that their removal
// in a future libguestfs only skips tests instead of breaking the addon.
template <typename Fn>
Fn Private(const char* symbol) {
  return reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, symbol));
}

Work InternalRBufferOut(const Info& info) {
  using Fn = char* (*)(guestfs_h*, const char*, size_t*);
  auto val = ReadString(info[0], "internal_test_rbufferout: val");
  auto fn = Private<Fn>("guestfs_internal_test_rbufferout");
  if (!fn) ThrowType(info.Env(), "internal_test_rbufferout is not available in this libguestfs");
  return [=](guestfs_h* g, Value& out, CallError& err) {
    size_t size = 0;
    char* r = fn(g, val.c_str(), &size);
    if (!r) { err = ReadLastError(g); return; }
    out = Value::Bytes(r, size);
    free(r);
  };
}

template <R K, typename Ret, typename... A>
void AddPrivate(std::vector<CallDef>& t, const char* name) {
  std::string symbol = std::string("guestfs_") + name;
  auto fn = Private<Ret (*)(guestfs_h*, A...)>(symbol.c_str());
  if (fn) t.push_back({name, Bind<K>(fn), false});
}

std::vector<CallDef> BuildTable() {
  std::vector<CallDef> t = {
      // settings (most are config-only: before launch)
      {"set_memsize", Bind<R::Err>(&guestfs_set_memsize), false},
      {"get_memsize", Bind<R::Int>(&guestfs_get_memsize), false},
      {"set_smp", Bind<R::Err>(&guestfs_set_smp), false},
      {"get_smp", Bind<R::Int>(&guestfs_get_smp), false},
      {"set_network", Bind<R::Err>(&guestfs_set_network), false},
      {"get_network", Bind<R::Bool>(&guestfs_get_network), false},
      {"set_append", Bind<R::Err>(&guestfs_set_append), false},
      {"get_append", Bind<R::ConstOptString>(&guestfs_get_append), false},
      {"set_verbose", Bind<R::Err>(&guestfs_set_verbose), false},
      {"set_trace", Bind<R::Err>(&guestfs_set_trace), false},
      {"set_backend", Bind<R::Err>(&guestfs_set_backend), false},
      {"set_backend_settings", Bind<R::Err>(&guestfs_set_backend_settings), false},
      {"get_backend_settings", Bind<R::StringList>(&guestfs_get_backend_settings), false},
      {"set_path", Bind<R::Err>(&guestfs_set_path), false},
      {"get_path", Bind<R::ConstString>(&guestfs_get_path), false},
      {"set_cachedir", Bind<R::Err>(&guestfs_set_cachedir), false},
      {"get_tmpdir", Bind<R::String>(&guestfs_get_tmpdir), false},
      {"set_hv", Bind<R::Err>(&guestfs_set_hv), false},
      {"get_hv", Bind<R::String>(&guestfs_get_hv), false},
      {"set_pgroup", Bind<R::Err>(&guestfs_set_pgroup), false},
      {"get_pgroup", Bind<R::Bool>(&guestfs_get_pgroup), false},
      {"set_identifier", Bind<R::Err>(&guestfs_set_identifier), false},
      {"get_identifier", Bind<R::ConstString>(&guestfs_get_identifier), false},
      {"set_program", Bind<R::Err>(&guestfs_set_program), false},
      {"get_state", Bind<R::Int>(&guestfs_get_state), false},
      {"version", Version, false},
      // drives and lifecycle
      {"add_drive", AddDrive, false},
      {"add_drive_scratch", AddDriveScratch, false},
      {"disk_create", DiskCreate, false},
      {"launch", Bind<R::Err>(&guestfs_launch), false, Lifecycle::Launch},
      {"shutdown", Bind<R::Err>(&guestfs_shutdown), false, Lifecycle::Shutdown},
      {"get_pid", Bind<R::Int>(&guestfs_get_pid), false},
      {"feature_available", Bind<R::Bool>(&guestfs_feature_available), false},
      // devices and partitions
      {"list_devices", Bind<R::StringList>(&guestfs_list_devices), false},
      {"list_partitions", Bind<R::StringList>(&guestfs_list_partitions), false},
      {"list_filesystems", Bind<R::Hashtable>(&guestfs_list_filesystems), false},
      {"vfs_type", Bind<R::String>(&guestfs_vfs_type), false},
      {"vfs_label", Bind<R::String>(&guestfs_vfs_label), false},
      {"vfs_uuid", Bind<R::String>(&guestfs_vfs_uuid), false},
      {"part_init", Bind<R::Err>(&guestfs_part_init), false},
      {"part_add", Bind<R::Err>(&guestfs_part_add), false},
      {"part_disk", Bind<R::Err>(&guestfs_part_disk), false},
      {"part_list", PartList, false},
      {"part_set_bootable", Bind<R::Err>(&guestfs_part_set_bootable), false},
      {"part_set_name", Bind<R::Err>(&guestfs_part_set_name), false},
      {"part_set_mbr_id", Bind<R::Err>(&guestfs_part_set_mbr_id), false},
      {"part_get_mbr_id", Bind<R::Int>(&guestfs_part_get_mbr_id), false},
      {"part_set_gpt_type", Bind<R::Err>(&guestfs_part_set_gpt_type), false},
      {"part_get_gpt_type", Bind<R::String>(&guestfs_part_get_gpt_type), false},
      {"part_get_parttype", Bind<R::String>(&guestfs_part_get_parttype), false},
      // LVM (thin pools have no dedicated API: lvcreate --thinpool through debug sh)
      {"pvcreate", Bind<R::Err>(&guestfs_pvcreate), false},
      {"vgcreate", Bind<R::Err>(&guestfs_vgcreate), false},
      {"lvcreate", Bind<R::Err>(&guestfs_lvcreate), false},
      {"lvcreate_free", Bind<R::Err>(&guestfs_lvcreate_free), false},
      {"vg_activate_all", Bind<R::Err>(&guestfs_vg_activate_all), false},
      {"lvs", Bind<R::StringList>(&guestfs_lvs), false},
      // file systems
      {"mkfs", Mkfs, false},
      {"set_label", Bind<R::Err>(&guestfs_set_label), false},
      {"set_uuid", Bind<R::Err>(&guestfs_set_uuid), false},
      {"mount", Bind<R::Err>(&guestfs_mount), false},
      {"mount_ro", Bind<R::Err>(&guestfs_mount_ro), false},
      {"umount", Umount, false},
      {"umount_all", Bind<R::Err>(&guestfs_umount_all), false},
      {"mkmountpoint", Bind<R::Err>(&guestfs_mkmountpoint), false},
      {"mount_local", MountLocal, false},
      {"mount_local_run", Bind<R::Err>(&guestfs_mount_local_run), false},
      {"umount_local", UmountLocal, false},
      {"sync", Bind<R::Err>(&guestfs_sync), false},
      // files and directories
      {"mkdir", Bind<R::Err>(&guestfs_mkdir), false},
      {"mkdir_p", Bind<R::Err>(&guestfs_mkdir_p), false},
      {"ls", Bind<R::StringList>(&guestfs_ls), false},
      {"exists", Bind<R::Bool>(&guestfs_exists), false},
      {"is_dir", [](const Info& i) { return IsDir(i, false); }, false},
      {"is_file", [](const Info& i) { return IsDir(i, true); }, false},
      {"statns", Stat, false},
      {"read_file", ReadFile, false},
      {"cat", Bind<R::String>(&guestfs_cat), false},
      {"write", [](const Info& i) { return WriteFile(i, false); }, false},
      {"write_append", [](const Info& i) { return WriteFile(i, true); }, false},
      {"ln_sf", Bind<R::Err>(&guestfs_ln_sf), false},
      {"chmod", Bind<R::Err>(&guestfs_chmod), false},
      {"fallocate64", Bind<R::Err>(&guestfs_fallocate64), false},
      {"checksum", Bind<R::String>(&guestfs_checksum), false},
      // commands
      {"sh", Bind<R::String>(&guestfs_sh), false},
      {"sh_lines", Bind<R::StringList>(&guestfs_sh_lines), false},
      {"command", Bind<R::String>(&guestfs_command), false},
      {"command_lines", Bind<R::StringList>(&guestfs_command_lines), false},
      {"debug", Bind<R::String>(&guestfs_debug), false},
      // transfers: host paths or owned file descriptors; Handle.cancel stops them with guestfs_user_cancel
      {"tar_in", TarIn, true},
      {"tar_out", TarOut, true},
      {"upload", Upload, true},
      {"download", Download, true},
      {"mksquashfs", Mksquashfs, true},
  };
  AddPrivate<R::Int, int, const char*>(t, "internal_test_rint");
  AddPrivate<R::Int, int>(t, "internal_test_rinterr");
  AddPrivate<R::Int64, int64_t, const char*>(t, "internal_test_rint64");
  AddPrivate<R::Bool, int, const char*>(t, "internal_test_rbool");
  AddPrivate<R::String, char*, const char*>(t, "internal_test_rstring");
  AddPrivate<R::String, char*>(t, "internal_test_rstringerr");
  AddPrivate<R::StringList, char**, const char*>(t, "internal_test_rstringlist");
  AddPrivate<R::Hashtable, char**, const char*>(t, "internal_test_rhashtable");
  AddPrivate<R::ConstOptString, const char*, const char*>(t, "internal_test_rconstoptstring");
  if (Private<void*>("guestfs_internal_test_rbufferout")) {
    t.push_back({"internal_test_rbufferout", InternalRBufferOut, false});
  }
  return t;
}

}  // namespace

const std::vector<CallDef>& CallTable() {
  static const std::vector<CallDef> table = BuildTable();
  return table;
}

}  // namespace vdib
