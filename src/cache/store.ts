// The content-addressed step store: entries are folders of files with a meta.json (sizes, sha256),
// written under v1/tmp and renamed into v1/entries/<key> when complete. It knows nothing of
// builds; it keeps the store consistent under concurrent builds and crashes (lock.ts).
import { createHash, randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'

import { VirtDibError } from '../errors.js'
import { hashFile } from './file-hash.js'
import { abortError } from '../host/spawn.js'
import { describeSystemError } from '../util/system-error.js'
import {
  isAlive,
  ownerRecord,
  ownProcessStart,
  readOwner,
  tryLock,
  writeAtomic,
  type HeldLock,
  type LockOwner,
} from './lock.js'

export type { LockOwner } from './lock.js'

/** The store's format version: the folder under the cache dir, and every entry's meta. */
export const STORE_VERSION = 1
/** The default size cap (--cache-max-size 20G). */
export const DEFAULT_MAX_SIZE = 20 * 1024 ** 3

/** One file of an entry, as its meta records it. */
export interface EntryFile {
  name: string
  bytes: number
  sha256: string
}

/** An entry's meta.json. */
export interface EntryMeta {
  version: 1
  /** The entry's key (hex), also its folder's name. */
  key: string
  /** The step it is the snapshot after (a phase name, e.g. 'install.d'). */
  step: string
  /** The key of the entry this one builds on (its files may refer to the parent's), or null. */
  parent: string | null
  /** The build's elements, for `cache list`. */
  elements: string[]
  /** ms since the epoch. */
  createdAt: number
  /** ms since the epoch; updated by {@link StepStore.use}. */
  lastUsedAt: number
  /** The sum of the files' sizes. */
  bytes: number
  files: EntryFile[]
  /** Input name → hash of its value (never the value), in the order the key hashed them. */
  inputs: Record<string, string>
  /** How long the step took to build. */
  seconds: number
}

/** What the caller says at commit; the store fills in the rest from the files. */
export interface CommitMeta {
  step: string
  parent: string | null
  elements: string[]
  inputs: Record<string, string>
  seconds: number
  /** sha256 (hex) of files the caller hashed while writing them; the others are read and hashed. */
  hashes?: Record<string, string>
}

/** An entry found in the store. */
export interface Entry {
  readonly meta: EntryMeta
  /** Its folder (v1/entries/<key>). */
  readonly dir: string
  /** Its ancestors' keys, parent first (checked to be there by lookup). */
  readonly chain: readonly string[]
  /** The path of one of its files. */
  path(name: string): string
}

export interface StoreOptions {
  /** The size cap in bytes, kept after every commit (default {@link DEFAULT_MAX_SIZE}). */
  maxSize?: number
  /** Receives one-line warnings: unusable entries removed, folders of other format versions. */
  warn?: (text: string) => void
  /** The clock (ms since the epoch); for tests. */
  now?: () => number
}

export interface LookupOptions {
  /** An entry created longer ago than this is absent (and left in place). */
  maxAgeMs?: number
}

export interface BeginOptions {
  /**
   * An entry of the key created longer ago than this does not count: the caller builds the key
   * again, and its commit replaces the old entry (with the entries built on it) unless one is in use.
   */
  maxAgeMs?: number
}

/**
 * Another process holds the right to write the key (or the entry is there already: then `owner` is
 * undefined and `wait` resolves at once). After `wait`, look up again: a hit if the writer committed;
 * else (it failed or died) begin again to build it here.
 */
export interface Busy {
  readonly owner: LockOwner | undefined
  /** Resolves when the writer is done (committed, aborted or died); rejects with BuildAbortedError on abort. */
  wait(signal?: AbortSignal, pollMs?: number): Promise<void>
}

export interface CommitResult {
  /** False when the entry was not stored: the key was there already (then `entry` is that one), or its parent is gone. */
  stored: boolean
  /** The meta written (when not stored: what it would have been). */
  meta: EntryMeta
  entry: Entry | undefined
  /** What the size cap evicted after the commit. */
  evicted: EntryMeta[]
}

/** The right to write one key, held until commit or abort (exactly one per key across processes). */
export interface Pending extends AsyncDisposable {
  readonly key: string
  /** Where the entry's files go (under v1/tmp); regular files only, no meta.json, no leading dot. */
  readonly dir: string
  /** The path of a file of the entry being written. */
  path(name: string): string
  /** Syncs the files, writes meta.json and renames the folder into entries/ atomically; then applies the size cap. */
  commit(meta: CommitMeta): Promise<CommitResult>
  /** Discards the files and releases the key (a failed step). Disposal aborts an uncommitted pending. */
  abort(): Promise<void>
}

/** Ends a {@link StepStore.use} mark. */
export type Release = () => Promise<void>

export interface EvictOptions {
  /** Evict least recently used leaves until the total is at most this (default: the store's cap). */
  maxSize?: number
  /** Evict entries last used longer ago than this. */
  olderThanMs?: number
  /** Evict everything that is not in use. */
  all?: boolean
}

/** use() found an entry gone (evicted or removed as unusable between lookup and use): treat it as a miss. */
export class EntryGoneError extends VirtDibError {
  override name = 'EntryGoneError'
  readonly key: string
  constructor(key: string) {
    super(`cache entry ${shortKey(key)} was removed meanwhile`)
    this.key = key
  }
}

export interface VerifyOptions {
  /** The ancestors' files too. */
  chain?: boolean
  /** Of the ancestors, only the files this accepts (those a restore reads through the chain). */
  ancestorFiles?: (name: string) => boolean
}

export interface StepStore {
  /** The cache dir given to openStore. */
  readonly dir: string
  readonly maxSize: number
  /** The entry of `key` if it is complete: meta valid, every file there with its size (no checksums: {@link verify}). */
  lookup(key: string, options?: LookupOptions): Promise<Entry | undefined>
  /**
   * Checks every file's sha256 (reading them), with `chain` also the ancestors'; a mismatch removes
   * the entry (and what is built on it) with a warning and says false.
   */
  verify(entry: Entry, options?: VerifyOptions): Promise<boolean>
  /** Takes the right to write `key` (exactly one writer per key across processes), or says who has it. Never waits. */
  begin(key: string, options?: BeginOptions): Promise<Pending | Busy>
  /**
   * Marks entries as read by this process until released (or this process dies): eviction keeps
   * them and their ancestors. Updates their lastUsedAt. Rejects with EntryGoneError if one is gone.
   */
  use(keys: readonly string[]): Promise<Release>
  /** Removes entries (leaves first, never one in use or an ancestor of one) and writers' leftovers; says what it removed. */
  evict(options?: EvictOptions): Promise<EntryMeta[]>
  /** Every entry's meta, oldest first (meta checked, files not). */
  list(): Promise<EntryMeta[]>
  totalBytes(): Promise<number>
  /** Among entries of `step`, the one whose inputs share the most hashes with `inputs` (the newest of equals). */
  nearest(step: string, inputs: Record<string, string>): Promise<EntryMeta | undefined>
}

/**
 * The first input name (in the order of `a`) whose hash in `b` differs or is missing; else the
 * first name only `b` has; undefined when both are equal.
 */
export function firstDifference(a: Record<string, string>, b: Record<string, string>): string | undefined {
  for (const [name, hash] of Object.entries(a)) if (b[name] !== hash) return name
  for (const name of Object.keys(b)) if (!(name in a)) return name
  return undefined
}

/** The first 12 hex digits, for messages. */
export function shortKey(key: string): string {
  return key.slice(0, 12)
}

const KEY = /^[0-9a-f]{8,128}$/
const META = 'meta.json'
const HOST_TAG = createHash('sha256').update(hostname()).digest('hex').slice(0, 8)
// Writers' folders (w) and entries being removed (x) in tmp/: w.<host>.<pid>.<procStart>.<nonce>.
const TMP_NAME = /^([wx])\.([0-9a-f]{8})\.(\d+)\.(\d+|-)\.([0-9a-f]+)$/

function assertKey(key: string): void {
  if (!KEY.test(key)) throw new TypeError(`not a cache key: ${JSON.stringify(key)}`)
}

function validFileName(name: string): boolean {
  return name !== META && !name.startsWith('.') && !name.includes('/') && name.length > 0
}

function isErrno(e: unknown, ...codes: string[]): boolean {
  return codes.includes((e as NodeJS.ErrnoException).code ?? '')
}

const HEX64 = /^[0-9a-f]{64}$/

/** The meta in `text` for the entry folder `key`, or why it is not one. */
function parseMeta(text: string, key: string): EntryMeta | string {
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch {
    return 'its meta.json does not parse'
  }
  const m = v as Partial<EntryMeta> | null
  if (typeof m !== 'object' || m === null) return 'its meta.json is not an object'
  if (m.version !== STORE_VERSION) return `its meta.json has format version ${String(m.version)}, not ${STORE_VERSION}`
  if (m.key !== key) return 'its meta.json names another key'
  const strings = (x: unknown) => Array.isArray(x) && x.every((s) => typeof s === 'string')
  const record = (x: unknown) =>
    typeof x === 'object' && x !== null && !Array.isArray(x) && Object.values(x).every((s) => typeof s === 'string')
  const ok =
    typeof m.step === 'string' &&
    (m.parent === null || (typeof m.parent === 'string' && KEY.test(m.parent))) &&
    strings(m.elements) &&
    typeof m.createdAt === 'number' &&
    typeof m.lastUsedAt === 'number' &&
    typeof m.bytes === 'number' &&
    typeof m.seconds === 'number' &&
    record(m.inputs) &&
    Array.isArray(m.files) &&
    (m.files as unknown[]).every((x) => {
      const f = x as Partial<EntryFile> | null
      return (
        typeof f === 'object' &&
        f !== null &&
        typeof f.name === 'string' &&
        validFileName(f.name) &&
        typeof f.bytes === 'number' &&
        typeof f.sha256 === 'string' &&
        HEX64.test(f.sha256)
      )
    })
  if (!ok || !m.files) return 'its meta.json lacks a field or has one of the wrong type'
  if (m.files.reduce((n, f) => n + f.bytes, 0) !== m.bytes) return 'its meta.json has a wrong total size'
  return m as EntryMeta
}

async function syncPath(path: string): Promise<void> {
  const fh = await open(path, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

interface Mark {
  owner: LockOwner
  keys: string[]
}

/** Opens (and creates) the store under `dir`; folders of other format versions beside v1 are left alone, with a warning. */
export async function openStore(dir: string, options: StoreOptions = {}): Promise<StepStore> {
  const maxSize = options.maxSize ?? DEFAULT_MAX_SIZE
  if (!(maxSize > 0)) throw new VirtDibError(`the cache size cap must be more than 0 bytes (got ${maxSize})`)
  const store = new Store(dir, maxSize, options.warn ?? (() => undefined), options.now ?? Date.now)
  try {
    await store.create()
  } catch (e) {
    throw new VirtDibError(`cannot use the cache folder ${dir}: ${describeSystemError(e)}`, { cause: e })
  }
  return store
}

class Store implements StepStore {
  readonly root: string
  readonly entries: string
  readonly tmp: string
  readonly locks: string

  constructor(
    readonly dir: string,
    readonly maxSize: number,
    private readonly warn: (text: string) => void,
    private readonly now: () => number,
  ) {
    this.root = join(dir, `v${STORE_VERSION}`)
    this.entries = join(this.root, 'entries')
    this.tmp = join(this.root, 'tmp')
    this.locks = join(this.root, 'locks')
  }

  async create(): Promise<void> {
    for (const d of [this.entries, this.tmp, this.locks]) await mkdir(d, { recursive: true })
    for (const name of await readdir(this.dir)) {
      if (/^v\d+$/.test(name) && name !== `v${STORE_VERSION}`)
        this.warn(
          `the cache folder ${join(this.dir, name)} is of another format version (this virt-dib uses v${STORE_VERSION}); left alone, remove it to free its space`,
        )
    }
    await this.cleanTmp()
  }

  private entry(meta: EntryMeta, chain: readonly string[]): Entry {
    const dir = join(this.entries, meta.key)
    return {
      meta,
      dir,
      chain,
      path: (name: string) => {
        if (!validFileName(name)) throw new TypeError(`not an entry file name: ${JSON.stringify(name)}`)
        return join(dir, name)
      },
    }
  }

  /** The meta of entry `key`; undefined if there is no such folder; a string if it is unusable. */
  private async readMeta(key: string): Promise<EntryMeta | string | undefined> {
    const dir = join(this.entries, key)
    let text: string
    try {
      text = await readFile(join(dir, META), 'utf8')
    } catch (e) {
      if (!isErrno(e, 'ENOENT', 'ENOTDIR')) throw e
      try {
        await stat(dir)
      } catch {
        return undefined
      }
      return 'its meta.json is missing'
    }
    return parseMeta(text, key)
  }

  async lookup(key: string, options: LookupOptions = {}): Promise<Entry | undefined> {
    assertKey(key)
    const meta = await this.readMeta(key)
    if (meta === undefined) return undefined
    if (typeof meta === 'string') return void (await this.removeUnusable(key, undefined, meta))
    if (options.maxAgeMs !== undefined && this.now() - meta.createdAt > options.maxAgeMs) return undefined
    const problem = await this.checkFiles(meta)
    const chain = problem ?? (await this.ancestors(meta))
    if (typeof chain === 'string') return void (await this.removeUnusable(key, meta, chain))
    return this.entry(meta, chain)
  }

  private async checkFiles(meta: EntryMeta): Promise<string | undefined> {
    for (const f of meta.files) {
      let size: number
      try {
        size = (await stat(join(this.entries, meta.key, f.name))).size
      } catch (e) {
        if (isErrno(e, 'ENOENT')) return `${f.name} is missing`
        throw e
      }
      if (size < f.bytes) return `${f.name} is truncated (${size} of ${f.bytes} bytes)`
      if (size !== f.bytes) return `${f.name} has ${size} bytes, not ${f.bytes}`
    }
    return undefined
  }

  /** The ancestors' keys, parent first; or why not: every one must be there (an entry's files may refer to its parent's). */
  private async ancestors(meta: EntryMeta): Promise<string[] | string> {
    const chain: string[] = []
    for (let p = meta.parent; p !== null;) {
      if (p === meta.key || chain.includes(p)) return 'its chain of parents loops'
      chain.push(p)
      const m = await this.readMeta(p)
      if (m === undefined || typeof m === 'string') return `its ancestor ${shortKey(p)} is gone`
      p = m.parent
    }
    return chain
  }

  async verify(entry: Entry, options: VerifyOptions = {}): Promise<boolean> {
    if (!(await this.verifyOne(entry))) return false
    for (const key of options.chain ? entry.chain : []) {
      const e = await this.lookup(key)
      if (!e || !(await this.verifyOne(e, options.ancestorFiles))) return false
    }
    return true
  }

  private async verifyOne(entry: Entry, only?: (name: string) => boolean): Promise<boolean> {
    for (const f of entry.meta.files) {
      if (only && !only(f.name)) continue
      let got: { sha256: string; bytes: number }
      try {
        got = await hashFile(entry.path(f.name))
      } catch (e) {
        if (!isErrno(e, 'ENOENT')) throw e
        await this.removeUnusable(entry.meta.key, entry.meta, `${f.name} is missing`)
        return false
      }
      if (got.bytes !== f.bytes || got.sha256 !== f.sha256) {
        await this.removeUnusable(entry.meta.key, entry.meta, `${f.name} does not match its checksum`)
        return false
      }
    }
    return true
  }

  /** Removes an unusable entry and its descendants (built on it), with a warning. */
  private async removeUnusable(key: string, meta: EntryMeta | undefined, why: string): Promise<void> {
    const step = meta ? ` (${meta.step})` : ''
    const all = await this.scan()
    const doomed = new Set([key])
    for (let grew = true; grew;) {
      grew = false
      for (const m of all)
        if (m.parent !== null && doomed.has(m.parent) && !doomed.has(m.key)) {
          doomed.add(m.key)
          grew = true
        }
    }
    const more = doomed.size > 1 ? ` with the ${doomed.size - 1} entries built on it` : ''
    this.warn(`cache entry ${shortKey(key)}${step} is unusable: ${why}; removed${more}, it will be rebuilt`)
    for (const k of doomed) await this.removeEntry(k)
  }

  private tmpName(kind: 'w' | 'x', nonce: string): string {
    return `${kind}.${HOST_TAG}.${process.pid}.${ownProcessStart() ?? '-'}.${nonce}`
  }

  /** Moves the entry out of entries/ (atomic), then deletes it; false if it was gone. */
  private async removeEntry(key: string, keepIfUsed = false): Promise<boolean> {
    const from = join(this.entries, key)
    const aside = join(this.tmp, this.tmpName('x', randomBytes(6).toString('hex')))
    try {
      await rename(from, aside)
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return false
      throw e
    }
    // A user marks first and looks second; we move first and look second: one of us sees the other.
    if (keepIfUsed && (await this.marks()).some((m) => m.keys.includes(key))) {
      try {
        await rename(aside, from)
        return false
      } catch {
        // committed again meanwhile: ours goes
      }
    }
    await rm(aside, { recursive: true, force: true })
    return true
  }

  /**
   * Removes what crashed processes left: locks of dead writers (taken over and released, which is
   * race-free) and lock files half made (dot files) over a minute old.
   */
  private async cleanLocks(): Promise<void> {
    for (const name of await readdir(this.locks)) {
      const path = join(this.locks, name)
      if (name.endsWith('.lock')) {
        const owner = await readOwner(path)
        if (owner && isAlive(owner)) continue
        const r = await tryLock(path)
        if ('held' in r) await r.held.release()
      } else if (name.startsWith('.')) {
        const st = await stat(path).catch(() => undefined)
        if (st && Date.now() - st.mtimeMs > 60_000) await rm(path, { force: true })
      }
    }
  }

  /** Removes writers' folders and half-removed entries in tmp/ whose process is gone. */
  private async cleanTmp(): Promise<void> {
    for (const name of await readdir(this.tmp)) {
      const m = TMP_NAME.exec(name)
      if (!m || m[2] !== HOST_TAG) continue
      const owner: LockOwner = {
        pid: Number(m[3]),
        hostname: hostname(),
        startedAt: 0,
        ...(m[4] === '-' ? {} : { procStart: Number(m[4]) }),
        nonce: m[5]!,
      }
      if (!isAlive(owner)) await rm(join(this.tmp, name), { recursive: true, force: true })
    }
  }

  /** Every valid entry meta; folders that are not valid entries are skipped (or given to `bad`). */
  private async scan(bad?: (key: string, why: string) => void): Promise<EntryMeta[]> {
    const out: EntryMeta[] = []
    for (const name of await readdir(this.entries)) {
      if (!KEY.test(name)) continue
      const m = await this.readMeta(name)
      if (typeof m === 'string') bad?.(name, m)
      else if (m !== undefined) out.push(m)
    }
    return out
  }

  async begin(key: string, options: BeginOptions = {}): Promise<Pending | Busy> {
    assertKey(key)
    const lockPath = join(this.locks, `${key}.lock`)
    const r = await tryLock(lockPath)
    if (!('held' in r)) return this.busy(lockPath, key, r.owner)
    // Committed before we took the lock? Under the lock, no commit of the key can come later.
    const there = await this.lookup(key, options.maxAgeMs === undefined ? {} : { maxAgeMs: options.maxAgeMs })
    if (there) {
      await r.held.release()
      return { owner: undefined, wait: () => Promise.resolve() }
    }
    return this.pending(key, r.held, options.maxAgeMs)
  }

  private busy(lockPath: string, key: string, owner: LockOwner): Busy {
    return {
      owner,
      wait: async (signal, pollMs = 200) => {
        for (;;) {
          if (signal?.aborted) throw abortError(signal)
          const now = await readOwner(lockPath)
          // Gone, another owner's, dead, or unreadable (begin takes that one over): done waiting.
          if (now === undefined || now === null || now.nonce !== owner.nonce || !isAlive(now)) return
          if (await this.lookup(key)) return
          try {
            await sleep(pollMs, undefined, signal ? { signal } : {})
          } catch {
            throw abortError(signal!)
          }
        }
      },
    }
  }

  private async pending(key: string, lock: HeldLock, maxAgeMs: number | undefined): Promise<Pending> {
    const dir = join(this.tmp, this.tmpName('w', lock.owner.nonce))
    try {
      await mkdir(dir)
    } catch (e) {
      await lock.release()
      throw e
    }
    let state: 'open' | 'busy' | 'done' = 'open'
    const abort = async () => {
      if (state === 'done') return
      state = 'done'
      try {
        await rm(dir, { recursive: true, force: true })
      } finally {
        await lock.release()
      }
    }
    return {
      key,
      dir,
      path: (name) => {
        if (!validFileName(name)) throw new TypeError(`not an entry file name: ${JSON.stringify(name)}`)
        return join(dir, name)
      },
      commit: async (meta) => {
        if (state !== 'open') throw new Error(`cache entry ${shortKey(key)}: commit after commit or abort`)
        state = 'busy'
        try {
          return await this.commit(key, dir, meta, maxAgeMs)
        } finally {
          state = 'done'
          await rm(dir, { recursive: true, force: true }).catch(() => undefined)
          await lock.release()
        }
      },
      abort,
      [Symbol.asyncDispose]: abort,
    }
  }

  private async commit(key: string, dir: string, c: CommitMeta, maxAgeMs: number | undefined): Promise<CommitResult> {
    const files: EntryFile[] = []
    for (const d of await readdir(dir, { withFileTypes: true })) {
      if (!d.isFile() || !validFileName(d.name))
        throw new Error(`cache entry ${shortKey(key)}: ${d.name} cannot be part of an entry (regular files only)`)
      const path = join(dir, d.name)
      const given = c.hashes?.[d.name]
      if (given !== undefined) {
        await syncPath(path)
        files.push({ name: d.name, bytes: (await stat(path)).size, sha256: given })
      } else {
        files.push({ name: d.name, ...(await hashFile(path, { sync: true })) })
      }
    }
    files.sort((a, b) => a.name.localeCompare(b.name))
    const now = this.now()
    const meta: EntryMeta = {
      version: STORE_VERSION,
      key,
      step: c.step,
      parent: c.parent,
      elements: [...c.elements],
      createdAt: now,
      lastUsedAt: now,
      bytes: files.reduce((n, f) => n + f.bytes, 0),
      files,
      inputs: { ...c.inputs },
      seconds: c.seconds,
    }
    // The parent is marked in use until ours is in place (marked, then looked up: an evictor
    // moving it meanwhile sees the mark), so no entry is stored without its parent.
    let hold: Release | undefined
    if (c.parent !== null) hold = await this.use([c.parent]).catch(() => undefined)
    try {
      return await this.place(key, dir, meta, maxAgeMs)
    } finally {
      await hold?.()
    }
  }

  private async place(key: string, dir: string, meta: EntryMeta, maxAgeMs: number | undefined): Promise<CommitResult> {
    const parent = meta.parent === null ? undefined : await this.lookup(meta.parent)
    if (meta.parent !== null && !parent) {
      this.warn(`cache entry ${shortKey(key)} (${meta.step}) not stored: its parent ${shortKey(meta.parent)} is gone`)
      return { stored: false, meta, entry: undefined, evicted: [] }
    }
    await writeFile(join(dir, META), `${JSON.stringify(meta, null, 1)}\n`, { flush: true })
    await syncPath(dir)
    const target = join(this.entries, key)
    // An entry too old for this build (begin's maxAgeMs) is replaced, with what was built on it,
    // unless a build uses it.
    const old = await this.readMeta(key)
    if (
      old !== undefined &&
      typeof old !== 'string' &&
      maxAgeMs !== undefined &&
      meta.createdAt - old.createdAt > maxAgeMs
    ) {
      const users = new Set((await this.marks()).flatMap((m) => m.keys))
      const all = await this.scan()
      const subtree = new Set([key])
      for (let grew = true; grew;) {
        grew = false
        for (const m of all)
          if (m.parent !== null && subtree.has(m.parent) && !subtree.has(m.key)) {
            subtree.add(m.key)
            grew = true
          }
      }
      if (![...subtree].some((k) => users.has(k))) for (const k of subtree) await this.removeEntry(k, true)
    }
    let stored = true
    try {
      await rename(dir, target)
      await syncPath(this.entries)
    } catch (e) {
      if (!isErrno(e, 'EEXIST', 'ENOTEMPTY')) throw e
      stored = false // someone else's commit of the same key won
    }
    const entry = stored ? this.entry(meta, parent ? [parent.meta.key, ...parent.chain] : []) : await this.lookup(key)
    const evicted = await this.evictWith({}, new Set([key]))
    return { stored, meta: entry?.meta ?? meta, entry, evicted }
  }

  /** Live marks; dead processes' marks are removed. */
  private async marks(): Promise<Mark[]> {
    const out: Mark[] = []
    for (const name of await readdir(this.locks)) {
      if (!/^use\.[0-9a-f]+\.json$/.test(name)) continue
      const path = join(this.locks, name)
      let mark: Mark
      try {
        mark = JSON.parse(await readFile(path, 'utf8')) as Mark
      } catch {
        continue // gone meanwhile
      }
      if (!mark.owner || !Array.isArray(mark.keys)) continue
      if (isAlive(mark.owner)) out.push(mark)
      else await rm(path, { force: true })
    }
    return out
  }

  async use(keys: readonly string[]): Promise<Release> {
    keys.forEach(assertKey)
    const owner = ownerRecord()
    const path = join(this.locks, `use.${owner.nonce}.json`)
    await writeAtomic(path, JSON.stringify({ owner, keys: [...keys] } satisfies Mark))
    let released = false
    const release: Release = async () => {
      if (released) return
      released = true
      await rm(path, { force: true })
    }
    const now = this.now()
    for (const key of keys) {
      const meta = await this.readMeta(key)
      if (meta === undefined || typeof meta === 'string') {
        await release()
        throw new EntryGoneError(key)
      }
      try {
        await writeAtomic(join(this.entries, key, META), `${JSON.stringify({ ...meta, lastUsedAt: now }, null, 1)}\n`)
      } catch (e) {
        await release()
        if (isErrno(e, 'ENOENT')) throw new EntryGoneError(key)
        throw e
      }
    }
    return release
  }

  evict(options: EvictOptions = {}): Promise<EntryMeta[]> {
    return this.evictWith(options, new Set())
  }

  private async evictWith(options: EvictOptions, keep: Set<string>): Promise<EntryMeta[]> {
    await this.cleanTmp()
    await this.cleanLocks()
    // Entries whose meta is unusable would never be evicted otherwise (their size is unknown).
    const bad: [string, string][] = []
    const metas = await this.scan((key, why) => bad.push([key, why]))
    for (const [key, why] of bad) {
      this.warn(`cache entry ${shortKey(key)} is unusable: ${why}; removed`)
      await this.removeEntry(key)
    }
    const byKey = new Map(metas.map((m) => [m.key, m]))
    // Kept: in use, asked to keep, and their ancestors.
    const protectedKeys = new Set<string>()
    for (const k of [...keep, ...(await this.marks()).flatMap((m) => m.keys)]) {
      for (let p: string | null | undefined = k; p && !protectedKeys.has(p); p = byKey.get(p)?.parent)
        protectedKeys.add(p)
    }
    const children = new Map<string, number>()
    for (const m of metas) if (m.parent !== null) children.set(m.parent, (children.get(m.parent) ?? 0) + 1)
    let total = metas.reduce((n, m) => n + m.bytes, 0)
    const maxSize = options.maxSize ?? this.maxSize
    const now = this.now()
    const removed: EntryMeta[] = []
    const alive = new Set(byKey.keys())
    for (;;) {
      const leaves = [...alive]
        .map((k) => byKey.get(k)!)
        .filter((m) => !protectedKeys.has(m.key) && !children.get(m.key))
        .sort((a, b) => a.lastUsedAt - b.lastUsedAt || a.createdAt - b.createdAt)
      const victim =
        leaves.find(
          (m) =>
            options.all === true || (options.olderThanMs !== undefined && now - m.lastUsedAt > options.olderThanMs),
        ) ?? (total > maxSize ? leaves[0] : undefined)
      if (!victim) break
      alive.delete(victim.key)
      if (victim.parent !== null) children.set(victim.parent, (children.get(victim.parent) ?? 1) - 1)
      if (await this.removeEntry(victim.key, true)) {
        removed.push(victim)
        total -= victim.bytes
      } else {
        protectedKeys.add(victim.key) // used meanwhile, or gone
      }
    }
    return removed
  }

  async list(): Promise<EntryMeta[]> {
    return (await this.scan()).sort((a, b) => a.createdAt - b.createdAt)
  }

  async totalBytes(): Promise<number> {
    return (await this.scan()).reduce((n, m) => n + m.bytes, 0)
  }

  async nearest(step: string, inputs: Record<string, string>): Promise<EntryMeta | undefined> {
    let best: { meta: EntryMeta; shared: number } | undefined
    for (const meta of await this.scan()) {
      if (meta.step !== step) continue
      const shared = Object.entries(inputs).filter(([name, hash]) => meta.inputs[name] === hash).length
      if (!best || shared > best.shared || (shared === best.shared && meta.createdAt > best.meta.createdAt))
        best = { meta, shared }
    }
    return best?.meta
  }
}
