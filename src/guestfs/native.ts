// Declarations of what the C++ addon exports, and the one place that loads it.
// Only src/guestfs/ may import this file; everything else uses Guestfs from handle.ts.
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import type {
  AddDriveOptions,
  AddDriveScratchOptions,
  DiskCreateOptions,
  HostFile,
  MkfsOptions,
  MksquashfsOptions,
  MountLocalOptions,
  Partition,
  Statns,
  TarInOptions,
  TarOutOptions,
  UmountOptions,
  Version,
} from './types.js'

/** Raw event as delivered by the addon: name, payload bytes, numeric array (progress). */
export type NativeEventDispatcher = (name: NativeEventName, buf: Buffer, array: number[]) => void

export type NativeEventName =
  'close' | 'subprocess_quit' | 'launch_done' | 'progress' | 'appliance' | 'library' | 'trace' | 'warning'

/** The error object the addon rejects with; `GuestfsError.from` gives it its final shape. */
export interface NativeError extends Error {
  op: string
  errno: number
  code?: string
}

export interface NativeHandleOptions {
  /** Parse LIBGUESTFS_* variables from the process environment (default true). */
  environment?: boolean
  /** With environment false: a `NAME=value` list parsed instead of the process environment. */
  env?: string[]
  // The addon also reads a test-only option (see test/native/settle.test.ts); not part of this type.
}

/**
 * The rows of native/calls.cc that src/ uses, typed as calls.cc converts them: strings may be
 * null where C takes an optional string, 64-bit integers are numbers, options objects reject
 * unknown keys, a HostFile fd is owned by the call. The addon has more rows (test/native uses
 * the internal_test_* ones through its own types); `addon.calls` lists them all.
 */
export interface NativeCalls {
  // settings
  set_memsize(mb: number): Promise<void>
  get_memsize(): Promise<number>
  set_smp(n: number): Promise<void>
  get_smp(): Promise<number>
  set_network(on: boolean): Promise<void>
  get_network(): Promise<boolean>
  set_append(append: string | null): Promise<void>
  get_append(): Promise<string | null>
  set_verbose(on: boolean): Promise<void>
  set_trace(on: boolean): Promise<void>
  set_backend_settings(settings: string[]): Promise<void>
  get_backend_settings(): Promise<string[]>
  set_path(path: string | null): Promise<void>
  get_path(): Promise<string>
  set_cachedir(dir: string | null): Promise<void>
  get_tmpdir(): Promise<string>
  set_hv(hv: string): Promise<void>
  get_hv(): Promise<string>
  get_pgroup(): Promise<boolean>
  set_identifier(id: string): Promise<void>
  get_identifier(): Promise<string>
  set_program(name: string): Promise<void>
  get_state(): Promise<number>
  version(): Promise<Version>
  // drives and lifecycle
  add_drive(filename: string, o?: AddDriveOptions): Promise<void>
  add_drive_scratch(size: number, o?: AddDriveScratchOptions): Promise<void>
  disk_create(filename: string, format: string, size: number, o?: DiskCreateOptions): Promise<void>
  launch(): Promise<void>
  shutdown(): Promise<void>
  get_pid(): Promise<number>
  feature_available(groups: string[]): Promise<boolean>
  // devices, partitions, LVM
  list_devices(): Promise<string[]>
  list_partitions(): Promise<string[]>
  list_filesystems(): Promise<Record<string, string>>
  vfs_type(mountable: string): Promise<string>
  vfs_label(mountable: string): Promise<string>
  vfs_uuid(mountable: string): Promise<string>
  part_init(device: string, parttype: string): Promise<void>
  part_add(device: string, prlogex: string, startsect: number, endsect: number): Promise<void>
  part_list(device: string): Promise<Partition[]>
  part_set_bootable(device: string, partnum: number, bootable: boolean): Promise<void>
  part_set_name(device: string, partnum: number, name: string): Promise<void>
  part_set_mbr_id(device: string, partnum: number, id: number): Promise<void>
  part_get_mbr_id(device: string, partnum: number): Promise<number>
  part_set_gpt_type(device: string, partnum: number, guid: string): Promise<void>
  part_get_gpt_type(device: string, partnum: number): Promise<string>
  part_get_parttype(device: string): Promise<string>
  pvcreate(device: string): Promise<void>
  vgcreate(vg: string, pvs: string[]): Promise<void>
  lvcreate(lv: string, vg: string, mbytes: number): Promise<void>
  lvcreate_free(lv: string, vg: string, percent: number): Promise<void>
  vg_activate_all(activate: boolean): Promise<void>
  lvs(): Promise<string[]>
  // file systems and mounts
  mkfs(fstype: string, device: string, o?: MkfsOptions): Promise<void>
  mount(mountable: string, mountpoint: string): Promise<void>
  mount_ro(mountable: string, mountpoint: string): Promise<void>
  umount(pathOrDevice: string, o?: UmountOptions): Promise<void>
  umount_all(): Promise<void>
  mount_local(localMountpoint: string, o?: MountLocalOptions): Promise<void>
  mount_local_run(): Promise<void>
  // files and directories
  mkdir(path: string): Promise<void>
  mkdir_p(path: string): Promise<void>
  ls(directory: string): Promise<string[]>
  exists(path: string): Promise<boolean>
  is_dir(path: string, o?: { followsymlinks?: boolean }): Promise<boolean>
  is_file(path: string, o?: { followsymlinks?: boolean }): Promise<boolean>
  statns(path: string): Promise<Statns>
  read_file(path: string): Promise<Buffer>
  cat(path: string): Promise<string>
  write(path: string, content: Buffer | string): Promise<void>
  write_append(path: string, content: Buffer | string): Promise<void>
  ln_sf(target: string, linkname: string): Promise<void>
  chmod(mode: number, path: string): Promise<void>
  fallocate64(path: string, len: number): Promise<void>
  checksum(csumtype: string, path: string): Promise<string>
  // commands
  sh(command: string): Promise<string>
  sh_lines(command: string): Promise<string[]>
  command(argv: string[]): Promise<string>
  debug(subcmd: string, extraargs: string[]): Promise<string>
  // transfers (cancellable with guestfs_user_cancel through NativeHandle.cancel)
  tar_in(tarfile: HostFile, directory: string, o?: TarInOptions): Promise<void>
  tar_out(directory: string, tarfile: HostFile, o?: TarOutOptions): Promise<void>
  upload(filename: HostFile, remotefilename: string): Promise<void>
  download(remotefilename: string, filename: HostFile): Promise<void>
  mksquashfs(path: string, filename: HostFile, o?: MksquashfsOptions): Promise<void>
}

export type NativeCallName = keyof NativeCalls

/**
 * One libguestfs handle with its own worker thread. Every libguestfs call is a method named as in
 * C (without `guestfs_`) returning a Promise; calls run one at a time, in order.
 */
export interface NativeHandle extends NativeCalls {
  /** Queues the close as the last job; resolves after the CLOSE event was delivered. */
  close(): Promise<void>
  /** 0 unknown/finished, 1 dropped from the queue, 2 transfer cancel requested, 3 running, not cancellable. */
  cancel(jobId: number): 0 | 1 | 2 | 3
  /** SIGKILL this handle's qemu; the running call then fails with EPIPE. */
  kill_appliance(): boolean
  /** Which libguestfs events are copied to JS (bit mask of GUESTFS_EVENT_*). */
  set_event_mask(mask: number): void
  readonly state: 'open' | 'closing' | 'closed'
  /** The id of the job queued by the most recent call on this handle (read right after calling). */
  readonly lastJobId: number
  readonly busy: boolean
}

export interface NativeAddon {
  GuestfsHandle: new (dispatcher: NativeEventDispatcher, options?: NativeHandleOptions) => NativeHandle
  /** [readFd, writeFd], both O_CLOEXEC. */
  pipe(): [number, number]
  /** Names of the wrapped libguestfs calls. */
  calls: string[]
  buildSystem: 'cmake-js' | 'node-gyp' | 'unknown'
  napiVersion: number
  cppExceptions: boolean
  /** Probes for test/native; nothing in src/ uses them. */
  __test: NativeTestProbes
}

/**
 * Test-only probes of the addon. Together with the handle method `__test_fault(kind)` (the next
 * settle on that handle fails at 1–3 stages: 'settle' | 'settle-error' | 'settle-all'), they let
 * test/native make faults happen that cannot be produced on demand.
 */
export interface NativeTestProbes {
  /** Native sessions alive in this process (each handle has one until its worker is done). */
  liveSessions(): number
  /** Runs kill_appliance's qemu selection over the children of thread `tid`; the pids killed. */
  killQemuChildrenOf(tid: number, hv: string): number[]
}

/** GUESTFS_EVENT_* bits. */
export const EventBits: Readonly<Record<NativeEventName, number>> = {
  close: 0x0001,
  subprocess_quit: 0x0002,
  launch_done: 0x0004,
  progress: 0x0008,
  appliance: 0x0010,
  library: 0x0020,
  trace: 0x0040,
  warning: 0x0200,
}

export interface LoadedAddon {
  addon: NativeAddon
  /** Absolute path of the .node file that was loaded. */
  path: string
}

let loaded: LoadedAddon | undefined

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..')

/**
 * Loads the addon once. `VIRT_DIB_ADDON` may name a .node file explicitly (used for the
 * node-gyp and sanitizer builds); otherwise `bindings` searches build/ from the package root.
 */
export function loadAddon(): LoadedAddon {
  if (loaded) return loaded
  const require = createRequire(import.meta.url)
  const explicit = process.env['VIRT_DIB_ADDON']
  let path: string
  if (explicit) {
    path = explicit
  } else {
    const bindings = require('bindings') as (o: { bindings: string; module_root: string; path: true }) => string
    try {
      path = bindings({ bindings: 'virt_dib', module_root: packageRoot, path: true })
    } catch (cause) {
      throw new Error(
        'the native addon is not built: run ‘npm install’ (or ‘npm run build:native’) in ' +
          `${packageRoot}; it needs libguestfs-dev, cmake and pkg-config`,
        { cause },
      )
    }
  }
  const addon = require(path) as NativeAddon
  loaded = { addon, path }
  return loaded
}
