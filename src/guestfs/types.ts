// Types of the Guestfs API: options, return structs and events. Names follow libguestfs
// (optional-argument names are the C ones, so guestfs(3) documents them).

/** A host file for a transfer: a path, or a file descriptor the call takes ownership of. */
export type HostFile = string | number

export interface CallOptions {
  /** Cancels the call: dropped if still queued, user_cancel for transfers, else see onAbort. */
  signal?: AbortSignal
  /**
   * What an abort does to a running call that libguestfs cannot cancel (sh, launch, mkfs…):
   * `kill-appliance` kills qemu so the call fails at once (the handle can then only be closed);
   * `wait` lets it finish and rejects with AbortError afterwards. Default: the handle's policy.
   */
  onAbort?: 'kill-appliance' | 'wait'
}

export interface GuestfsCreateOptions {
  /**
   * Where LIBGUESTFS_* settings come from: `true` (default) the process environment, `false`
   * none, or an explicit map (handy in tests: `{ LIBGUESTFS_HV: '/bin/false' }`).
   */
  environment?: boolean | Record<string, string>
  /** Default for CallOptions.onAbort on this handle (default `wait`). */
  abortPolicy?: 'kill-appliance' | 'wait'
  memsize?: number
  smp?: number
  network?: boolean
  append?: string | null
  verbose?: boolean
  trace?: boolean
  backendSettings?: string[]
  path?: string | null
  cachedir?: string | null
  hv?: string
  identifier?: string
  program?: string
}

export interface AddDriveOptions {
  readonly?: boolean
  format?: 'raw' | 'qcow2' | (string & {})
  iface?: string
  name?: string
  /** Exposed in the appliance as /dev/disk/guestfs/LABEL. */
  label?: string
  cachemode?: 'writeback' | 'unsafe'
  discard?: 'disable' | 'enable' | 'besteffort'
  copyonread?: boolean
  blocksize?: number
}

export interface AddDriveScratchOptions {
  name?: string
  label?: string
  blocksize?: number
}

export interface DiskCreateOptions {
  backingfile?: string
  backingformat?: string
  preallocation?: 'off' | 'sparse' | 'metadata' | 'full' | 'falloc'
  compat?: '0.10' | '1.1'
  clustersize?: number
}

export interface MkfsOptions {
  blocksize?: number
  features?: string
  inode?: number
  sectorsize?: number
  label?: string
}

export interface UmountOptions {
  force?: boolean
  lazyunmount?: boolean
}

export interface MountLocalOptions {
  readonly?: boolean
  options?: string
  cachetimeout?: number
  debugcalls?: boolean
}

export interface TarInOptions {
  compress?: 'compress' | 'gzip' | 'bzip2' | 'xz' | 'lzop' | 'lzma' | 'zstd'
  xattrs?: boolean
  selinux?: boolean
  acls?: boolean
}

export interface TarOutOptions extends TarInOptions {
  numericowner?: boolean
  /** Shell wildcards relative to the directory, e.g. `./proc/*`. */
  excludes?: string[]
}

export interface MksquashfsOptions {
  compress?: 'gzip' | 'lzo' | 'lz4' | 'lzma' | 'xz' | 'zstd'
  excludes?: string[]
}

export interface Partition {
  part_num: number
  part_start: number
  part_end: number
  part_size: number
}

export interface Statns {
  st_dev: number
  st_ino: number
  st_mode: number
  st_nlink: number
  st_uid: number
  st_gid: number
  st_rdev: number
  st_size: number
  st_blksize: number
  st_blocks: number
  st_atime_sec: number
  st_mtime_sec: number
  st_ctime_sec: number
}

export interface Version {
  major: number
  minor: number
  release: number
  extra: string
}

export interface ProgressEvent {
  procNr: number
  serial: number
  /** Bytes or steps done; equals total at the end unless the call fails. */
  position: number
  total: number
}

/**
 * Events of a handle. Text events carry the payload decoded as UTF-8 and the raw bytes.
 * Every event raised by a call is delivered before that call's promise settles.
 */
export interface GuestfsEvents {
  progress: [ProgressEvent]
  /** Console output of the appliance, in arbitrary chunks (not whole lines). */
  appliance: [string, Buffer]
  library: [string, Buffer]
  trace: [string, Buffer]
  warning: [string, Buffer]
  close: []
  subprocessQuit: []
  launchDone: []
}
