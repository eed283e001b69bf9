// Block-level snapshots of a raw sparse disk: the clusters that changed since the parent's cluster map, as a qcow2 delta.
import { createHash, randomBytes } from 'node:crypto'
import { open, rename, rm, stat, type FileHandle } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'

import { BuildAbortedError, VirtDibError } from '../errors.js'
import { abortError, runTool } from '../host/spawn.js'
import { CLUSTER_BITS, CLUSTER_SIZE, openQcow2Delta, type Qcow2Backing } from './qcow2.js'

/** Bytes of a cluster's hash kept in a map: a truncated sha256 (fastest of node:crypto here, with SHA-NI). */
export const HASH_BYTES = 16
/** Id of the hash in an encoded map: 1 = sha256 truncated to HASH_BYTES. */
const HASH_ID = 1
const MAP_MAGIC = Buffer.from('VDIBCMAP')
const MAP_VERSION = 1
/** magic, version, cluster bits, hash id, hash bytes, reserved, count, varint bytes */
const MAP_HEADER = 8 + 4 + 4 + 4 + 4
const MAP_TRAILER = 16
/** The raw disk is read in chunks of this size, READ_DEPTH at a time (the next ones read while one is hashed). */
const READ_BYTES = 4 << 20
const READ_DEPTH = 3

/**
 * What a drive held at a snapshot: the hash of every cluster with nonzero data, by ascending
 * cluster index. Clusters not in it read as zeros.
 */
export class ClusterMap {
  constructor(
    /** Cluster indexes, strictly ascending. */
    readonly indexes: Uint32Array,
    /** HASH_BYTES per index, in the same order. */
    readonly hashes: Buffer,
  ) {
    if (hashes.length !== indexes.length * HASH_BYTES) throw new RangeError('cluster map: hashes do not match indexes')
  }

  get size(): number {
    return this.indexes.length
  }

  hashAt(i: number): Buffer {
    return this.hashes.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES)
  }

  /** The hash of cluster `index`, undefined when it reads as zeros. */
  get(index: number): Buffer | undefined {
    let lo = 0
    let hi = this.indexes.length - 1
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1
      const v = this.indexes[mid]!
      if (v === index) return this.hashAt(mid)
      if (v < index) lo = mid + 1
      else hi = mid - 1
    }
    return undefined
  }
}

/** Appends entries in ascending order, growing by doubling. */
class MapBuilder {
  private indexes = new Uint32Array(1024)
  private hashes = Buffer.allocUnsafe(1024 * HASH_BYTES)
  private n = 0

  push(index: number, hash: Buffer): void {
    if (this.n === this.indexes.length) {
      const ix = new Uint32Array(this.n * 2)
      ix.set(this.indexes)
      this.indexes = ix
      const hs = Buffer.allocUnsafe(this.n * 2 * HASH_BYTES)
      this.hashes.copy(hs)
      this.hashes = hs
    }
    this.indexes[this.n] = index
    hash.copy(this.hashes, this.n * HASH_BYTES, 0, HASH_BYTES)
    this.n++
  }

  done(): ClusterMap {
    return new ClusterMap(this.indexes.slice(0, this.n), Buffer.from(this.hashes.subarray(0, this.n * HASH_BYTES)))
  }
}

/** A cluster map file that cannot be read back: truncated, corrupt or of another version. */
export class CorruptMapError extends VirtDibError {
  override name = 'CorruptMapError'
}

/**
 * The map as bytes: header (magic, version, cluster bits, hash id and size, count), the indexes as
 * LEB128 gaps (consecutive clusters take one byte each), the hashes, and a truncated sha256 of all that.
 */
export function encodeMap(map: ClusterMap): Buffer {
  const gaps = Buffer.allocUnsafe(map.size * 5)
  let g = 0
  let prev = -1
  for (const index of map.indexes) {
    let gap = index - prev - 1
    prev = index
    while (gap >= 0x80) {
      gaps[g++] = (gap & 0x7f) | 0x80
      gap >>>= 7
    }
    gaps[g++] = gap
  }
  const out = Buffer.alloc(MAP_HEADER + g + map.hashes.length + MAP_TRAILER)
  MAP_MAGIC.copy(out, 0)
  out.writeUInt32BE(MAP_VERSION, 8)
  out.writeUInt8(CLUSTER_BITS, 12)
  out.writeUInt8(HASH_ID, 13)
  out.writeUInt8(HASH_BYTES, 14)
  out.writeUInt32BE(map.size, 16)
  out.writeUInt32BE(g, 20)
  gaps.copy(out, MAP_HEADER, 0, g)
  map.hashes.copy(out, MAP_HEADER + g)
  const body = out.length - MAP_TRAILER
  createHash('sha256').update(out.subarray(0, body)).digest().copy(out, body, 0, MAP_TRAILER)
  return out
}

/** Reads back what {@link encodeMap} wrote; throws CorruptMapError on anything else. */
export function decodeMap(buf: Buffer): ClusterMap {
  const bad = (why: string) => new CorruptMapError(`corrupt cluster map: ${why}`)
  if (!buf.subarray(0, 8).equals(MAP_MAGIC)) throw bad('not a cluster map (bad magic)')
  if (buf.length < MAP_HEADER + MAP_TRAILER) throw bad(`${buf.length} bytes is too short`)
  const version = buf.readUInt32BE(8)
  if (version !== MAP_VERSION) throw bad(`version ${version}, this virt-dib reads version ${MAP_VERSION}`)
  if (buf[12] !== CLUSTER_BITS || buf[13] !== HASH_ID || buf[14] !== HASH_BYTES) {
    throw bad(`cluster bits ${buf[12]}, hash ${buf[13]}/${buf[14]} are not the ones this virt-dib uses`)
  }
  const count = buf.readUInt32BE(16)
  const g = buf.readUInt32BE(20)
  const expected = MAP_HEADER + g + count * HASH_BYTES + MAP_TRAILER
  if (buf.length !== expected) throw bad(`${buf.length} bytes where its header says ${expected} (truncated?)`)
  const body = buf.length - MAP_TRAILER
  const sum = createHash('sha256').update(buf.subarray(0, body)).digest().subarray(0, MAP_TRAILER)
  if (!sum.equals(buf.subarray(body))) throw bad('checksum mismatch')
  const indexes = new Uint32Array(count)
  let p = MAP_HEADER
  const end = MAP_HEADER + g
  let prev = -1
  for (let i = 0; i < count; i++) {
    let gap = 0
    for (let shift = 0; ; shift += 7) {
      if (p >= end || shift > 28) throw bad('bad index encoding')
      const b = buf[p++]!
      gap += (b & 0x7f) * 2 ** shift
      if (b < 0x80) break
    }
    prev += gap + 1
    if (prev > 0xffffffff) throw bad('cluster index out of range')
    indexes[i] = prev
  }
  if (p !== end) throw bad('bad index encoding')
  return new ClusterMap(indexes, Buffer.from(buf.subarray(end, body)))
}

export interface SnapshotOptions {
  /** Of the drive: its raw file has exactly this size. */
  virtualSize: number
  /** The parent's snapshot of the drive, as the new file's header names it. */
  backing?: Qcow2Backing
  signal?: AbortSignal
  /** fdatasync the delta before resolving. */
  sync?: boolean
  /** Deflate the clusters that shrink (qcow2 compressed clusters). */
  compress?: boolean
}

export interface SnapshotResult {
  /** What the drive holds now (the next snapshot's parent). */
  map: ClusterMap
  /** Size of the delta file. */
  bytes: number
  /** Of the delta file, hex. */
  sha256: string
  /** Clusters whose data is in the delta. */
  changedClusters: number
  /** Clusters the parent held that are zeros now (zero entries in the delta). */
  zeroedClusters: number
}

/**
 * Writes to `out` a qcow2 delta over `parent` (the map of what the backing chain `o.backing` holds;
 * neither for a first snapshot) with every cluster of the raw file `live` that differs from it:
 * data where it changed, a zero entry where the parent had data and the disk now has zeros or a
 * hole. Reads only the file's data extents. On failure or abort `out` is removed.
 */
export async function snapshotDelta(
  live: string,
  parent: ClusterMap | undefined,
  out: string,
  o: SnapshotOptions,
): Promise<SnapshotResult> {
  // The map says what the backing chain holds: one without the other would read the wrong data.
  if (!parent !== !o.backing) throw new Error('snapshotDelta: a parent map needs a backing file and the reverse')
  const captured = await captureDelta(live, parent, {
    virtualSize: o.virtualSize,
    signal: o.signal,
    spool: `${out}.spool`,
  })
  try {
    const r = await captured.write(out, o)
    return {
      map: captured.map,
      changedClusters: captured.changedClusters,
      zeroedClusters: captured.zeroedClusters,
      ...r,
    }
  } finally {
    await captured.discard()
  }
}

export interface CaptureOptions {
  /** Of the drive: its raw file has exactly this size. */
  virtualSize: number
  signal?: AbortSignal
  /** Where changed data beyond what is kept in memory goes until the delta is written (removed by discard()). */
  spool: string
  /** Bytes of changed data kept in memory before the spool file is used. */
  memoryBytes?: number
}

/**
 * What a drive held at a snapshot, read while it was consistent: its map, and the clusters that
 * differ from the parent's, held (in memory, then in a spool file) until written as a delta. The
 * drive may change once the capture has resolved.
 */
export interface CapturedDelta {
  /** What the drive holds (the next snapshot's parent). */
  readonly map: ClusterMap
  readonly changedClusters: number
  readonly zeroedClusters: number
  /** Writes the delta to `out` (over `o.backing`, the parent's file). On failure or abort `out` is removed. */
  write(out: string, o: Omit<SnapshotOptions, 'virtualSize'>): Promise<{ bytes: number; sha256: string }>
  /** Frees the memory and removes the spool file; safe to call twice. */
  discard(): Promise<void>
}

/** Changed data kept in memory before a capture spills to its spool file (per drive: the build stays small). */
const CAPTURE_MEMORY = 16 << 20

/** Reads `live` and keeps every cluster that differs from `parent` (see {@link snapshotDelta}). */
export async function captureDelta(
  live: string,
  parent: ClusterMap | undefined,
  o: CaptureOptions,
): Promise<CapturedDelta> {
  const { signal } = o
  if (signal?.aborted) throw abortError(signal)
  const size = (await stat(live)).size
  if (size !== o.virtualSize) {
    throw new VirtDibError(`snapshot of ${live}: the file has ${size} bytes, the drive ${o.virtualSize}`)
  }
  const chunks = readChunks(await dataClusters(live, signal), Math.ceil(size / CLUSTER_SIZE))
  const spool = new Spool(o.spool, o.memoryBytes ?? CAPTURE_MEMORY)
  const fh = await open(live, 'r')
  const map = new MapBuilder()
  const pIndexes = parent?.indexes ?? new Uint32Array(0)
  let p = 0
  let changed = 0
  let zeroed = 0
  const reads = new Map<number, Promise<Buffer>>()
  const zeroUpTo = (index: number) => {
    for (; p < pIndexes.length && pIndexes[p]! < index; p++, zeroed++) spool.zero(pIndexes[p]!)
  }
  try {
    const bufs = Array.from({ length: READ_DEPTH }, () => Buffer.allocUnsafe(READ_BYTES))
    // Chunk i goes to buffer i % READ_DEPTH, started once the chunk before it in that buffer is done.
    const read = (i: number) => {
      if (i >= chunks.length) return
      const r = readFull(fh, bufs[i % READ_DEPTH]!, chunks[i]!)
      r.catch(() => undefined) // awaited below, or dropped on an earlier failure
      reads.set(i, r)
    }
    for (let i = 0; i < READ_DEPTH - 1; i++) read(i)
    for (let i = 0; i < chunks.length; i++) {
      if (signal?.aborted) throw abortError(signal)
      read(i + READ_DEPTH - 1)
      const buf = await reads.get(i)!
      reads.delete(i)
      const [first, count] = chunks[i]!
      for (let k = 0; k < count; k++) {
        const index = first + k
        zeroUpTo(index)
        const had = p < pIndexes.length && pIndexes[p] === index ? parent!.hashAt(p++) : undefined
        const data = buf.subarray(k * CLUSTER_SIZE, (k + 1) * CLUSTER_SIZE)
        if (isZero(data)) {
          if (had) {
            zeroed++
            spool.zero(index)
          }
          continue
        }
        const hash = createHash('sha256').update(data).digest()
        map.push(index, hash)
        if (!had || had.compare(hash, 0, HASH_BYTES) !== 0) {
          changed++
          await spool.data(index, data)
        }
      }
    }
    zeroUpTo(Infinity)
    await spool.seal()
    await fh.close()
  } catch (e) {
    await Promise.allSettled(reads.values())
    await fh.close().catch(() => undefined)
    await spool.discard()
    throw signal?.aborted && !(e instanceof BuildAbortedError) ? abortError(signal) : e
  }
  if (signal?.aborted) {
    await spool.discard()
    throw abortError(signal)
  }
  return {
    map: map.done(),
    changedClusters: changed,
    zeroedClusters: zeroed,
    async write(out, w) {
      if (w.signal?.aborted) throw abortError(w.signal)
      const writer = await openQcow2Delta(out, {
        virtualSize: o.virtualSize,
        backing: w.backing,
        sync: w.sync,
        compress: w.compress,
      })
      try {
        for await (const [index, data] of spool.clusters()) {
          if (w.signal?.aborted) throw abortError(w.signal)
          await writer.cluster(index, data)
        }
        if (w.signal?.aborted) throw abortError(w.signal)
        return await writer.finish()
      } catch (e) {
        await writer.abort()
        throw w.signal?.aborted && !(e instanceof BuildAbortedError) ? abortError(w.signal) : e
      }
    },
    discard: () => spool.discard(),
  }
}

/**
 * The clusters of a capture, in ascending order: zero entries as indexes, data copied into memory
 * up to a budget, then appended to a file (read back in order).
 */
class Spool {
  /** Cluster index, negated minus one for a zero entry. */
  private entries = new Float64Array(1024)
  private n = 0
  private readonly memory: Buffer[] = []
  private file: FileHandle | undefined
  private fileClusters = 0
  private staged = Buffer.allocUnsafe(0)
  private stagedClusters = 0
  private gone = false

  constructor(
    private readonly path: string,
    private readonly memoryBytes: number,
  ) {}

  zero(index: number): void {
    this.push(-index - 1)
  }

  async data(index: number, data: Buffer): Promise<void> {
    this.push(index)
    if ((this.memory.length + 1) * CLUSTER_SIZE <= this.memoryBytes) {
      this.memory.push(Buffer.from(data))
      return
    }
    if (this.staged.length === 0) this.staged = Buffer.allocUnsafe(READ_BYTES)
    data.copy(this.staged, this.stagedClusters * CLUSTER_SIZE)
    this.stagedClusters++
    if (this.stagedClusters * CLUSTER_SIZE === this.staged.length) await this.flush()
  }

  async seal(): Promise<void> {
    await this.flush()
  }

  async *clusters(): AsyncGenerator<[number, Buffer | null]> {
    let m = 0
    let f = 0
    const buf = Buffer.allocUnsafe(READ_BYTES)
    let bufFirst = 0
    let bufCount = 0
    for (let i = 0; i < this.n; i++) {
      const e = this.entries[i]!
      if (e < 0) {
        yield [-e - 1, null]
      } else if (m < this.memory.length) {
        yield [e, this.memory[m++]!]
      } else {
        if (f >= bufFirst + bufCount) {
          bufFirst = f
          bufCount = Math.min(READ_BYTES / CLUSTER_SIZE, this.fileClusters - f)
          await readFull(this.file!, buf, [f, bufCount])
        }
        yield [e, buf.subarray((f - bufFirst) * CLUSTER_SIZE, (f - bufFirst + 1) * CLUSTER_SIZE)]
        f++
      }
    }
  }

  async discard(): Promise<void> {
    if (this.gone) return
    this.gone = true
    this.memory.length = 0
    const fh = this.file
    this.file = undefined
    if (fh) {
      await fh.close().catch(() => undefined)
      await rm(this.path, { force: true })
    }
  }

  private push(v: number): void {
    if (this.n === this.entries.length) {
      const grown = new Float64Array(this.n * 2)
      grown.set(this.entries)
      this.entries = grown
    }
    this.entries[this.n++] = v
  }

  private async flush(): Promise<void> {
    if (this.stagedClusters === 0) return
    this.file ??= await open(this.path, 'w+')
    const len = this.stagedClusters * CLUSTER_SIZE
    const at = this.fileClusters * CLUSTER_SIZE
    for (let done = 0; done < len;) {
      const { bytesWritten } = await this.file.write(this.staged, done, len - done, at + done)
      done += bytesWritten
    }
    this.fileClusters += this.stagedClusters
    this.stagedClusters = 0
  }
}

/**
 * Flattens the qcow2 chain ending at `top` into the raw file `raw` (sparse), replacing it only once
 * complete: written beside it under a temporary name, then renamed.
 */
export async function materialize(top: string, raw: string, o: { signal?: AbortSignal } = {}): Promise<void> {
  const tmp = join(dirname(raw), `.${basename(raw)}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`)
  try {
    // -t unsafe: no flush at the end (a live disk does not outlive a crash); -W: out-of-order writes, faster.
    await runTool('qemu-img', ['convert', '-t', 'unsafe', '-W', '-f', 'qcow2', '-O', 'raw', top, tmp], {
      signal: o.signal,
    })
    await rename(tmp, raw)
  } catch (e) {
    await rm(tmp, { force: true })
    throw e
  }
}

interface MapExtent {
  start: number
  length: number
  data: boolean
}

/** Ranges [first, end) of clusters holding data, ascending and merged, from the file's allocation (holes unread). */
async function dataClusters(file: string, signal: AbortSignal | undefined): Promise<Array<[number, number]>> {
  // -U: the appliance may still hold the drive open (locked); the map only reads the file's allocation.
  const { stdout } = await runTool('qemu-img', ['map', '-U', '--output=json', '-f', 'raw', file], { signal })
  const ranges: Array<[number, number]> = []
  for (const e of JSON.parse(stdout) as MapExtent[]) {
    if (!e.data || e.length === 0) continue
    const first = Math.floor(e.start / CLUSTER_SIZE)
    const end = Math.ceil((e.start + e.length) / CLUSTER_SIZE)
    const last = ranges.at(-1)
    if (last && first <= last[1]) last[1] = Math.max(last[1], end)
    else ranges.push([first, end])
  }
  return ranges
}

/** The ranges cut into reads of at most READ_BYTES: [first cluster, count]. */
function readChunks(ranges: Array<[number, number]>, clusters: number): Array<[number, number]> {
  const per = READ_BYTES / CLUSTER_SIZE
  const chunks: Array<[number, number]> = []
  for (const [first, end] of ranges) {
    for (let c = first; c < Math.min(end, clusters); c += per) chunks.push([c, Math.min(per, end - c, clusters - c)])
  }
  return chunks
}

/** Reads a chunk into `buf`, zero-filling past the end of the file. */
async function readFull(fh: FileHandle, buf: Buffer, [first, count]: [number, number]): Promise<Buffer> {
  const len = count * CLUSTER_SIZE
  const at = first * CLUSTER_SIZE
  let done = 0
  while (done < len) {
    const { bytesRead } = await fh.read(buf, done, len - done, at + done)
    if (bytesRead === 0) break
    done += bytesRead
  }
  buf.fill(0, done, len)
  return buf
}

const ZEROS = Buffer.alloc(CLUSTER_SIZE)

function isZero(b: Buffer): boolean {
  // A first-byte test skips the memcmp for most data clusters.
  return b[0] === 0 && b.equals(ZEROS)
}
