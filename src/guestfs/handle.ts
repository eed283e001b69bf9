// Guestfs: the typed, promise-based libguestfs handle. The only holder of a native handle.
// Adds what C does not have: defaults, argument checks, AbortSignal, typed events, streams.
import { EventEmitter } from 'node:events'
import { Socket } from 'node:net'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'

import { shellQuote } from '../util/shell-quote.js'
import { AbortError, GuestfsError } from './errors.js'
import { trackHandle, untrackHandle } from './live.js'
import {
  EventBits,
  loadAddon,
  type NativeCallName,
  type NativeCalls,
  type NativeEventName,
  type NativeHandle,
} from './native.js'
import type {
  AddDriveOptions,
  AddDriveScratchOptions,
  CallOptions,
  DiskCreateOptions,
  GuestfsCreateOptions,
  GuestfsEvents,
  HostFile,
  MkfsOptions,
  MksquashfsOptions,
  MountLocalOptions,
  ProgressEvent,
  TarInOptions,
  TarOutOptions,
  UmountOptions,
} from './types.js'

const LAUNCH_LOG_LINES = 100
const CANCEL_RETRY_MS = 50

/** The promise a native call settles with. */
type NativeResult<K extends NativeCallName> = ReturnType<NativeCalls[K]>

const eventNames: Record<NativeEventName, keyof GuestfsEvents> = {
  close: 'close',
  subprocess_quit: 'subprocessQuit',
  launch_done: 'launchDone',
  progress: 'progress',
  appliance: 'appliance',
  library: 'library',
  trace: 'trace',
  warning: 'warning',
}
const bitsByEvent = new Map<string, number>(
  Object.entries(eventNames).map(([native, ts]) => [ts, EventBits[native as NativeEventName]]),
)
// Always copied: they cost little and stay silent on stderr only when we take them.
const ALWAYS = EventBits.close | EventBits.warning
const LAUNCH_LOG = EventBits.appliance | EventBits.library

/**
 * A libguestfs handle. Create with {@link Guestfs.create}; close with {@link Guestfs.close} or
 * `await using`. Calls are queued and run one at a time on the handle's own thread.
 */
export class Guestfs extends EventEmitter<GuestfsEvents> {
  readonly #native: NativeHandle
  readonly #launchLog: string[] = []
  #launching = false
  #abortPolicy: 'kill-appliance' | 'wait'

  private constructor(native: NativeHandle, abortPolicy: 'kill-appliance' | 'wait') {
    super()
    this.#native = native
    this.#abortPolicy = abortPolicy
    // newListener fires before the listener is added, so that event is counted explicitly.
    const plain = this as EventEmitter
    plain.on('newListener', (name: string | symbol) => this.#updateMask(String(name)))
    plain.on('removeListener', () => this.#updateMask())
    this.#updateMask()
  }

  /** Creates a handle and applies the settings in `options` (all before launch). */
  static async create(options: GuestfsCreateOptions = {}): Promise<Guestfs> {
    const { addon } = loadAddon()
    const ref: { g?: WeakRef<Guestfs> } = {}
    // The dispatcher holds only a WeakRef, so a forgotten handle can still be collected.
    const dispatcher = (name: NativeEventName, buf: Buffer, array: number[]) => {
      const g = ref.g?.deref()
      if (g) g.#dispatch(name, buf, array)
    }
    const env = options.environment
    const native = new addon.GuestfsHandle(
      dispatcher,
      env === undefined || env === true
        ? { environment: true }
        : env === false
          ? { environment: false }
          : { environment: false, env: Object.entries(env).map(([k, v]) => `${k}=${v}`) },
    )
    const g = new Guestfs(native, options.abortPolicy ?? 'wait')
    ref.g = new WeakRef(g)
    trackHandle(g) // killAllAppliances() can stop it until it is closed
    try {
      await g.#configure(options)
    } catch (e) {
      await g.close().catch(() => undefined)
      throw e
    }
    return g
  }

  async #configure(o: GuestfsCreateOptions): Promise<void> {
    if (o.trace !== undefined) await this.setTrace(o.trace)
    if (o.verbose !== undefined) await this.setVerbose(o.verbose)
    if (o.backendSettings !== undefined) await this.setBackendSettings(o.backendSettings)
    if (o.memsize !== undefined) await this.setMemsize(o.memsize)
    if (o.smp !== undefined) await this.setSmp(o.smp)
    if (o.network !== undefined) await this.setNetwork(o.network)
    if (o.append !== undefined) await this.setAppend(o.append)
    if (o.path !== undefined) await this.setPath(o.path)
    if (o.cachedir !== undefined) await this.setCachedir(o.cachedir)
    if (o.hv !== undefined) await this.setHv(o.hv)
    if (o.identifier !== undefined) await this.setIdentifier(o.identifier)
    if (o.program !== undefined) await this.setProgram(o.program)
  }

  /** 'open', 'closing' (close queued) or 'closed'. */
  get state(): 'open' | 'closing' | 'closed' {
    return this.#native.state
  }

  /** True while a call runs or waits in the queue. */
  get busy(): boolean {
    return this.#native.busy
  }

  /**
   * Closes the handle after the calls already queued (shutdown, then close). Calls made after
   * this reject with `ERR_GUESTFS_CLOSED`. Rejects only if shutdown reported a write error;
   * the handle is closed in every case.
   */
  async close(): Promise<void> {
    const site = new Error()
    try {
      await this.#native.close()
    } catch (e) {
      throw GuestfsError.from(e, 'shutdown', site)
    } finally {
      untrackHandle(this)
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  /** SIGKILLs this handle's qemu. The running call fails with `applianceDied`; then close. */
  killAppliance(): boolean {
    return this.#native.kill_appliance()
  }

  #updateMask(adding?: string): void {
    let mask = ALWAYS | (this.#launching ? LAUNCH_LOG : 0) | (adding ? (bitsByEvent.get(adding) ?? 0) : 0)
    for (const [name, bit] of bitsByEvent) if (this.listenerCount(name as keyof GuestfsEvents) > 0) mask |= bit
    this.#native.set_event_mask(mask)
  }

  #dispatch(name: NativeEventName, buf: Buffer, array: number[]): void {
    if (this.#launching && (name === 'appliance' || name === 'library')) this.#remember(buf.toString('utf8'))
    const ts = eventNames[name]
    if (this.listenerCount(ts) === 0) return
    try {
      if (name === 'progress') {
        const [procNr = 0, serial = 0, position = 0, total = 0] = array
        const ev: ProgressEvent = { procNr, serial, position, total }
        this.emit('progress', ev)
      } else if (name === 'close' || name === 'subprocess_quit' || name === 'launch_done') {
        this.emit(ts)
      } else {
        this.emit(ts, buf.toString('utf8'), buf)
      }
    } catch (e) {
      // A throwing listener must not break the native side; surface it like any uncaught error.
      queueMicrotask(() => {
        throw e
      })
    }
  }

  #remember(text: string): void {
    for (const line of text.split(/\r?\n/)) {
      if (!line) continue
      this.#launchLog.push(line)
      if (this.#launchLog.length > LAUNCH_LOG_LINES) this.#launchLog.shift()
    }
  }

  /** Queues one native call; handles AbortSignal and error shaping. */
  #call<K extends NativeCallName>(op: K, args: Parameters<NativeCalls[K]>, options: CallOptions = {}): NativeResult<K> {
    const site = new Error()
    const fn = this.#native[op] as unknown as ((...a: Parameters<NativeCalls[K]>) => NativeResult<K>) | undefined
    if (typeof fn !== 'function') {
      return Promise.reject(
        new GuestfsError(`${op}: not available in this build`, { op, code: 'ENOTSUP' }),
      ) as NativeResult<K>
    }
    const { signal } = options
    if (!signal) {
      // Fast path (most calls): no abort bookkeeping, one extra promise at most.
      let promise: NativeResult<K>
      try {
        promise = fn.apply(this.#native, args)
      } catch (e) {
        return Promise.reject(e) as NativeResult<K>
      }
      return promise.catch((e: unknown) => {
        throw GuestfsError.from(e, op, site, op === 'launch' ? [...this.#launchLog] : undefined)
      }) as NativeResult<K>
    }
    return this.#callWithSignal(op, () => fn.apply(this.#native, args), options, signal, site) as NativeResult<K>
  }

  async #callWithSignal(
    op: NativeCallName,
    start: () => Promise<unknown>,
    options: CallOptions,
    signal: AbortSignal,
    site: Error,
  ): Promise<unknown> {
    if (signal.aborted) throw new AbortError(`${op}: aborted before it started`, { cause: signal.reason })
    const promise = start()
    const jobId = this.#native.lastJobId
    let timer: NodeJS.Timeout | undefined
    const onAbort = () => {
      const outcome = this.#native.cancel(jobId)
      if (outcome === 2) {
        // The transfer resets the cancel flag when it starts: repeat until it settles.
        timer = setInterval(() => this.#native.cancel(jobId), CANCEL_RETRY_MS)
      } else if (outcome === 3 && (options.onAbort ?? this.#abortPolicy) === 'kill-appliance') {
        this.#native.kill_appliance()
      }
    }
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      return await promise
    } catch (e) {
      if (signal.aborted) throw new AbortError(`${op}: aborted`, { cause: GuestfsError.from(e, op, site) })
      throw GuestfsError.from(e, op, site, op === 'launch' ? [...this.#launchLog] : undefined)
    } finally {
      if (timer) clearInterval(timer)
      signal.removeEventListener('abort', onAbort)
    }
  }

  // ------------------------------------------------------------------ settings

  setMemsize(mb: number) {
    return this.#call('set_memsize', [mb])
  }
  getMemsize() {
    return this.#call('get_memsize', [])
  }
  setSmp(n: number) {
    return this.#call('set_smp', [n])
  }
  getSmp() {
    return this.#call('get_smp', [])
  }
  setNetwork(on: boolean) {
    return this.#call('set_network', [on])
  }
  getNetwork() {
    return this.#call('get_network', [])
  }
  setAppend(append: string | null) {
    return this.#call('set_append', [append])
  }
  getAppend() {
    return this.#call('get_append', [])
  }
  setVerbose(on: boolean) {
    return this.#call('set_verbose', [on])
  }
  setTrace(on: boolean) {
    return this.#call('set_trace', [on])
  }
  setBackendSettings(settings: string[]) {
    return this.#call('set_backend_settings', [settings])
  }
  getBackendSettings() {
    return this.#call('get_backend_settings', [])
  }
  /** Where libguestfs looks for the appliance (supermin.d, or a prebuilt kernel/initrd/root). */
  setPath(path: string | null) {
    return this.#call('set_path', [path])
  }
  getPath() {
    return this.#call('get_path', [])
  }
  setCachedir(dir: string | null) {
    return this.#call('set_cachedir', [dir])
  }
  getTmpdir() {
    return this.#call('get_tmpdir', [])
  }
  setHv(hv: string) {
    return this.#call('set_hv', [hv])
  }
  getHv() {
    return this.#call('get_hv', [])
  }
  getPgroup() {
    return this.#call('get_pgroup', [])
  }
  setIdentifier(id: string) {
    return this.#call('set_identifier', [id])
  }
  getIdentifier() {
    return this.#call('get_identifier', [])
  }
  setProgram(name: string) {
    return this.#call('set_program', [name])
  }
  /** 0 config, 1 launching, 2 ready. */
  getState() {
    return this.#call('get_state', [])
  }
  version() {
    return this.#call('version', [])
  }

  // ------------------------------------------------------------------ drives and lifecycle

  addDrive(filename: string, o: AddDriveOptions = {}) {
    return this.#call('add_drive', [filename, o])
  }
  addDriveScratch(size: number, o: AddDriveScratchOptions = {}) {
    return this.#call('add_drive_scratch', [size, o])
  }
  diskCreate(filename: string, format: 'raw' | 'qcow2', size: number, o: DiskCreateOptions = {}) {
    return this.#call('disk_create', [filename, format, size, o])
  }
  /** Boots the appliance. A failure carries the last appliance log lines in `applianceLog`. */
  async launch(options: CallOptions = {}): Promise<void> {
    this.#launchLog.length = 0
    this.#launching = true
    this.#updateMask()
    try {
      await this.#call('launch', [], { onAbort: 'kill-appliance', ...options })
    } finally {
      this.#launching = false
      this.#updateMask()
    }
  }
  shutdown() {
    return this.#call('shutdown', [])
  }
  getPid() {
    return this.#call('get_pid', [])
  }
  featureAvailable(groups: string[]) {
    return this.#call('feature_available', [groups])
  }

  // ------------------------------------------------------------------ devices, partitions, LVM

  listDevices() {
    return this.#call('list_devices', [])
  }
  listPartitions() {
    return this.#call('list_partitions', [])
  }
  listFilesystems() {
    return this.#call('list_filesystems', [])
  }
  vfsType(mountable: string) {
    return this.#call('vfs_type', [mountable])
  }
  vfsLabel(mountable: string) {
    return this.#call('vfs_label', [mountable])
  }
  vfsUuid(mountable: string) {
    return this.#call('vfs_uuid', [mountable])
  }
  partInit(device: string, parttype: 'mbr' | 'msdos' | 'gpt' | (string & {})) {
    return this.#call('part_init', [device, parttype])
  }
  /** `prlogex`: 'p'rimary, 'l'ogical or 'e'xtended; sectors are inclusive, negative counts from the end. */
  partAdd(
    device: string,
    prlogex: 'p' | 'l' | 'e' | 'primary' | 'logical' | 'extended',
    startsect: number,
    endsect: number,
  ) {
    return this.#call('part_add', [device, prlogex, startsect, endsect])
  }
  partList(device: string) {
    return this.#call('part_list', [device])
  }
  partSetBootable(device: string, partnum: number, bootable: boolean) {
    return this.#call('part_set_bootable', [device, partnum, bootable])
  }
  partSetName(device: string, partnum: number, name: string) {
    return this.#call('part_set_name', [device, partnum, name])
  }
  partSetMbrId(device: string, partnum: number, id: number) {
    return this.#call('part_set_mbr_id', [device, partnum, id])
  }
  partGetMbrId(device: string, partnum: number) {
    return this.#call('part_get_mbr_id', [device, partnum])
  }
  partSetGptType(device: string, partnum: number, guid: string) {
    return this.#call('part_set_gpt_type', [device, partnum, guid])
  }
  partGetGptType(device: string, partnum: number) {
    return this.#call('part_get_gpt_type', [device, partnum])
  }
  partGetParttype(device: string) {
    return this.#call('part_get_parttype', [device])
  }
  pvcreate(device: string) {
    return this.#call('pvcreate', [device])
  }
  vgcreate(vg: string, pvs: string[]) {
    return this.#call('vgcreate', [vg, pvs])
  }
  lvcreate(lv: string, vg: string, mbytes: number) {
    return this.#call('lvcreate', [lv, vg, mbytes])
  }
  lvcreateFree(lv: string, vg: string, percent: number) {
    return this.#call('lvcreate_free', [lv, vg, percent])
  }
  vgActivateAll(activate: boolean) {
    return this.#call('vg_activate_all', [activate])
  }
  lvs() {
    return this.#call('lvs', [])
  }

  // ------------------------------------------------------------------ file systems and mounts

  mkfs(fstype: string, device: string, o: MkfsOptions = {}) {
    return this.#call('mkfs', [fstype, device, o])
  }
  mount(mountable: string, mountpoint: string) {
    return this.#call('mount', [mountable, mountpoint])
  }
  mountRo(mountable: string, mountpoint: string) {
    return this.#call('mount_ro', [mountable, mountpoint])
  }
  umount(pathOrDevice: string, o: UmountOptions = {}) {
    return this.#call('umount', [pathOrDevice, o])
  }
  umountAll() {
    return this.#call('umount_all', [])
  }
  /** Prepares a FUSE view of the guest at a host directory; serve it with {@link mountLocalRun}. */
  mountLocal(localMountpoint: string, o: MountLocalOptions = {}) {
    return this.#call('mount_local', [localMountpoint, o])
  }
  /** Serves the FUSE mount until `fusermount -u` releases it; occupies the handle meanwhile. */
  mountLocalRun() {
    return this.#call('mount_local_run', [])
  }

  // ------------------------------------------------------------------ files and directories

  mkdir(path: string) {
    return this.#call('mkdir', [path])
  }
  mkdirP(path: string) {
    return this.#call('mkdir_p', [path])
  }
  ls(directory: string) {
    return this.#call('ls', [directory])
  }
  exists(path: string) {
    return this.#call('exists', [path])
  }
  isDir(path: string, o: { followsymlinks?: boolean } = {}) {
    return this.#call('is_dir', [path, o])
  }
  isFile(path: string, o: { followsymlinks?: boolean } = {}) {
    return this.#call('is_file', [path, o])
  }
  statns(path: string) {
    return this.#call('statns', [path])
  }
  readFile(path: string) {
    return this.#call('read_file', [path])
  }
  cat(path: string) {
    return this.#call('cat', [path])
  }
  write(path: string, content: Buffer | string) {
    return this.#call('write', [path, content])
  }
  writeAppend(path: string, content: Buffer | string) {
    return this.#call('write_append', [path, content])
  }
  lnSf(target: string, linkname: string) {
    return this.#call('ln_sf', [target, linkname])
  }
  chmod(mode: number, path: string) {
    return this.#call('chmod', [mode, path])
  }
  fallocate64(path: string, len: number) {
    return this.#call('fallocate64', [path, len])
  }
  checksum(csumtype: string, path: string) {
    return this.#call('checksum', [csumtype, path])
  }

  // ------------------------------------------------------------------ commands

  /** `/bin/sh -c` chrooted into the guest mounted at /. Output over ~2 MB hits the protocol limit. */
  sh(command: string, o: CallOptions = {}) {
    return this.#call('sh', [command], o)
  }
  shLines(command: string, o: CallOptions = {}) {
    return this.#call('sh_lines', [command], o)
  }
  command(argv: string[], o: CallOptions = {}) {
    return this.#call('command', [argv], o)
  }
  /** guestfsd debug commands; not a stable libguestfs API (see {@link shOutside}). */
  debug(subcmd: string, extraargs: string[], o: CallOptions = {}) {
    return this.#call('debug', [subcmd, extraargs], o)
  }
  /**
   * `/bin/sh -c script` in the appliance itself, outside the chroot (what {@link sh} cannot reach:
   * the appliance's devices, mounts and tools); resolves with its output. Through guestfsd's
   * `debug sh`, which joins its arguments with spaces: the script goes as one finished command.
   * `errexit` prefixes `set -e;`, `bash` runs the script as `exec bash -c '<script>'`.
   */
  shOutside(script: string, o: CallOptions & { bash?: boolean; errexit?: boolean } = {}) {
    const { bash, errexit, ...call } = o
    const body = errexit ? `set -e; ${script}` : script
    return this.debug('sh', [bash ? `exec bash -c ${shellQuote(body)}` : body], call)
  }

  // ------------------------------------------------------------------ transfers

  /** Unpacks a tarball (host path or an fd this call takes ownership of) into a guest directory. */
  tarIn(tarfile: HostFile, directory: string, o: TarInOptions = {}, c: CallOptions = {}) {
    return this.#call('tar_in', [tarfile, directory, o], c)
  }
  /** Packs a guest directory into a tarball (host path or an fd this call takes ownership of). */
  tarOut(directory: string, tarfile: HostFile, o: TarOutOptions = {}, c: CallOptions = {}) {
    return this.#call('tar_out', [directory, tarfile, o], c)
  }
  upload(filename: HostFile, remotefilename: string, c: CallOptions = {}) {
    return this.#call('upload', [filename, remotefilename], c)
  }
  download(remotefilename: string, filename: HostFile, c: CallOptions = {}) {
    return this.#call('download', [remotefilename, filename], c)
  }
  mksquashfs(path: string, filename: HostFile, o: MksquashfsOptions = {}, c: CallOptions = {}) {
    return this.#call('mksquashfs', [path, filename, o], c)
  }

  /**
   * tar_out as a stream: `stream` yields the tarball while the guest writes it; `done` settles
   * with the call. Consume the stream, or the transfer stalls.
   */
  tarOutStream(
    directory: string,
    o: TarOutOptions = {},
    c: CallOptions = {},
  ): { stream: Readable; done: Promise<void> } {
    return this.#outStream((fd) => this.tarOut(directory, fd, o, c))
  }
  downloadStream(remotefilename: string, c: CallOptions = {}): { stream: Readable; done: Promise<void> } {
    return this.#outStream((fd) => this.download(remotefilename, fd, c))
  }
  /** mksquashfs to a stream (the squashfs image while the guest writes it). */
  mksquashfsStream(
    path: string,
    o: MksquashfsOptions = {},
    c: CallOptions = {},
  ): { stream: Readable; done: Promise<void> } {
    return this.#outStream((fd) => this.mksquashfs(path, fd, o, c))
  }
  /** tar_in from any readable stream (e.g. a compressor's output or a network socket). */
  tarInStream(
    source: Readable | AsyncIterable<Uint8Array>,
    directory: string,
    o: TarInOptions = {},
    c: CallOptions = {},
  ) {
    return this.#inStream(source, (fd) => this.tarIn(fd, directory, o, c))
  }

  #outStream(start: (fd: number) => Promise<void>): { stream: Readable; done: Promise<void> } {
    const [readFd, writeFd] = loadAddon().addon.pipe()
    const stream = new Socket({ fd: readFd, readable: true, writable: false })
    const done = start(writeFd)
    // If the call fails, the reader must not wait forever for data that will not come.
    done.catch((e: unknown) => stream.destroy(e instanceof Error ? e : new Error(String(e))))
    return { stream, done }
  }

  async #inStream(source: Readable | AsyncIterable<Uint8Array>, start: (fd: number) => Promise<void>): Promise<void> {
    const [readFd, writeFd] = loadAddon().addon.pipe()
    const sink = new Socket({ fd: writeFd, readable: false, writable: true })
    const done = start(readFd)
    const feeding = pipeline(source, sink).catch((e: unknown) => e)
    try {
      await done
    } catch (e) {
      sink.destroy()
      await feeding
      throw e
    }
    const fed = await feeding
    if (fed instanceof Error) throw fed
  }
}
