// A streaming qcow2 v3 writer for the step cache's deltas: data clusters as they come, metadata at the end.
//
// Layout of a file it writes (every cluster of it allocated once, so every refcount is 1):
//   cluster 0 header (+ backing-format extension, backing file name) · clusters 1.. L1 table (size known from
//   the virtual size) · data clusters and each L2 table right after the last data cluster it maps (indexes
//   come in ascending order, so one L2 table is in memory at a time) · refcount blocks · refcount table.
// The header and L1 are written last, in place; the sha256 of the result is then read back once
// (sha256 is sequential and the header, at offset 0, is known only at the end).
import { promisify } from 'node:util'
import { deflateRaw as deflateRawCb, type ZlibOptions } from 'node:zlib'

const deflateRaw = promisify<Buffer, ZlibOptions, Buffer>(deflateRawCb)
/** Clusters being deflated at once (on libuv's pool threads), their order kept. */
const DEFLATE_AHEAD = 16
/** Data deflated before the writer decides whether deflating this file pays. */
const TRIAL_BYTES = 16 << 20
import { open, rm, type FileHandle } from 'node:fs/promises'

import { VirtDibError } from '../errors.js'
import { hashFile } from './file-hash.js'

export const CLUSTER_BITS = 16
export const CLUSTER_SIZE = 1 << CLUSTER_BITS
const L2_ENTRIES = CLUSTER_SIZE / 8
const REFCOUNT_ORDER = 4 // 16-bit refcounts, as qemu-img creates them
const REFBLOCK_ENTRIES = (CLUSTER_SIZE * 8) >> REFCOUNT_ORDER
const HEADER_LENGTH = 104
const QCOW_MAGIC = 0x514649fb
const EXT_BACKING_FORMAT = 0xe2792aca
const EXT_END = 0
/** High word of an entry for a cluster with refcount 1 (QCOW_OFLAG_COPIED, bit 63). */
const COPIED_HI = 0x80000000
/** L2 entry: reads as zeros, not from the backing file (bit 0, v3). */
const ZERO_LO = 1
/** High word of a compressed cluster's descriptor (bit 62). */
const COMPRESSED_HI = 0x40000000
/** Bits of a compressed descriptor's host offset: 62 - (cluster_bits - 8). */
const COMPRESSED_OFFSET_BITS = 62 - (CLUSTER_BITS - 8)
/** qemu reads backing names of at most 1023 bytes. */
const MAX_BACKING_NAME = 1023
/** Data is written in batches of this many bytes (two buffers: one filling while the other is written). */
const STAGING_BYTES = 4 << 20

export interface Qcow2Backing {
  /** As written in the header: relative to the directory of the new file (or absolute). */
  file: string
  format: 'qcow2' | 'raw'
}

export interface Qcow2DeltaOptions {
  /** Bytes; a multiple of 512 (qemu counts sectors). */
  virtualSize: number
  backing?: Qcow2Backing
  /** fdatasync the file before finish() resolves. */
  sync?: boolean
  /**
   * Stores clusters deflated (raw deflate, 4 KiB window: what qemu's zlib reader expects) where that
   * saves at least a sector; several share a host cluster and may run into the next one.
   */
  compress?: boolean
}

export interface Qcow2Result {
  /** Size of the file. */
  bytes: number
  /** Of the whole file, hex. */
  sha256: string
}

export interface Qcow2DeltaWriter {
  readonly path: string
  /**
   * Maps virtual cluster `index` (strictly ascending between calls) to `data` (CLUSTER_SIZE bytes; the
   * last cluster of a virtual size that is not a multiple may be shorter and is padded), or with `null`
   * to "reads as zeros" whatever the backing chain holds. Await each call before the next; `data` has
   * been copied when the promise resolves.
   */
  cluster(index: number, data: Buffer | null): Promise<void>
  /** Writes the metadata, closes the file and reads it back once for its sha256. */
  finish(): Promise<Qcow2Result>
  /** Closes and removes the file; safe to call at any time, also after a failed finish(). */
  abort(): Promise<void>
}

/** Creates (or truncates) `path` and returns a writer for it. */
export async function openQcow2Delta(path: string, o: Qcow2DeltaOptions): Promise<Qcow2DeltaWriter> {
  const { virtualSize, backing } = o
  if (!Number.isSafeInteger(virtualSize) || virtualSize <= 0 || virtualSize % 512 !== 0) {
    throw new VirtDibError(`qcow2 delta ${path}: virtual size ${virtualSize} is not a positive multiple of 512`)
  }
  if (backing) {
    const n = Buffer.byteLength(backing.file)
    if (n === 0 || n > MAX_BACKING_NAME || backing.file.includes('\0')) {
      throw new VirtDibError(`qcow2 delta ${path}: bad backing file name ‘${backing.file}’`)
    }
  }
  const fh = await open(path, 'w')
  return new Writer(path, fh, o)
}

type State = 'open' | 'finishing' | 'done' | 'aborted'

class Writer implements Qcow2DeltaWriter {
  private state: State = 'open'
  private readonly clusters: number
  private readonly l1: Float64Array // host offset of each L2 table, 0 = none
  private readonly l1Clusters: number
  /** Clusters of the file allocated so far (header and L1 included). */
  private next: number
  private last = -1
  private l2: Buffer | undefined
  private l2Index = -1
  private staging = Buffer.allocUnsafe(STAGING_BYTES)
  private spare = Buffer.allocUnsafe(STAGING_BYTES)
  private staged = 0
  /** File offset of staging[0]. */
  private stagedAt: number
  private inflight: Promise<void> = Promise.resolve()
  private failure: Error | undefined
  /** Compressed data not yet appended: the host cluster it starts in, and its bytes so far. */
  private packed: Buffer | undefined
  private packedFill = 0
  private packedAt = 0
  /** Host clusters holding compressed data, by index: how many compressed clusters touch each (refcount). */
  private readonly shared = new Map<number, number>()
  /** Deflating is tried on the first data, and kept while it pays (see judge()). */
  private deflating = true
  private tried = 0
  private saved = 0
  /** Clusters queued for deflating, in index order. */
  private readonly ahead: { index: number; data: Buffer | null; deflated: Promise<Buffer | undefined> }[] = []
  /** The staging buffer filled up while the packed run spilled into it: flush before the next append. */
  private pendingFlush = false

  constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private readonly o: Qcow2DeltaOptions,
  ) {
    this.clusters = Math.ceil(o.virtualSize / CLUSTER_SIZE)
    this.l1 = new Float64Array(Math.ceil(this.clusters / L2_ENTRIES))
    this.l1Clusters = Math.ceil((this.l1.length * 8) / CLUSTER_SIZE)
    this.next = 1 + this.l1Clusters
    this.stagedAt = this.next * CLUSTER_SIZE
  }

  async cluster(index: number, data: Buffer | null): Promise<void> {
    this.check('cluster')
    if (!Number.isInteger(index) || index <= this.last || index >= this.clusters) {
      throw new RangeError(`qcow2 delta: cluster ${index} out of order or range (last ${this.last}, ${this.clusters})`)
    }
    if (data) {
      const tail = Math.min(CLUSTER_SIZE, this.o.virtualSize - index * CLUSTER_SIZE)
      if (data.length !== CLUSTER_SIZE && data.length !== tail) {
        throw new RangeError(`qcow2 delta: cluster ${index} has ${data.length} bytes, not ${CLUSTER_SIZE}`)
      }
    }
    this.last = index
    if (!this.o.compress) return this.place(index, data, undefined)
    // Deflated ahead on the pool's threads, placed in order.
    // A full cluster even at the end: qemu inflates a compressed cluster to exactly a cluster's size.
    const copy = data ? Buffer.concat([data, Buffer.alloc(CLUSTER_SIZE - data.length)]) : null
    const deflated =
      copy && this.deflating ? deflateRaw(copy, { level: 1, windowBits: 12 }) : Promise.resolve(undefined)
    deflated.catch(() => undefined) // awaited in order below
    this.ahead.push({ index, data: copy, deflated })
    while (this.ahead.length >= DEFLATE_AHEAD) await this.placeNext()
  }

  /**
   * After the first TRIAL_BYTES of data: keeps deflating only if it saved at least a tenth (a drive of
   * packed or random data costs the deflate time for nothing).
   */
  private judge(raw: number, deflated: number): void {
    this.tried += raw
    this.saved += Math.max(0, raw - deflated)
    if (this.deflating && this.tried >= TRIAL_BYTES && this.saved < this.tried / 10) this.deflating = false
  }

  private async placeNext(): Promise<void> {
    const next = this.ahead.shift()!
    await this.place(next.index, next.data, await next.deflated)
  }

  private async place(index: number, data: Buffer | null, deflated: Buffer | undefined): Promise<void> {
    if (this.pendingFlush) {
      this.pendingFlush = false
      await this.flush()
    }
    const l1i = Math.floor(index / L2_ENTRIES)
    if (l1i !== this.l2Index) {
      await this.closeL2()
      this.l2 = Buffer.alloc(CLUSTER_SIZE)
      this.l2Index = l1i
    }
    const at = (index % L2_ENTRIES) * 8
    if (deflated) this.judge(data!.length, deflated.length)
    if (data && deflated && deflated.length <= CLUSTER_SIZE - 512) {
      const offset = this.pack(deflated)
      const sectors = Math.floor((offset + deflated.length - 1) / 512) - Math.floor(offset / 512)
      const hi = COMPRESSED_HI + sectors * 2 ** (COMPRESSED_OFFSET_BITS - 32) + Math.floor(offset / 2 ** 32)
      this.l2!.writeUInt32BE(hi >>> 0, at)
      this.l2!.writeUInt32BE(offset % 2 ** 32, at + 4)
      if (this.packedFill === CLUSTER_SIZE) await this.closePacked()
    } else if (data) {
      await this.closePacked()
      const host = this.next * CLUSTER_SIZE
      this.l2!.writeUInt32BE((COPIED_HI | Math.floor(host / 2 ** 32)) >>> 0, at)
      this.l2!.writeUInt32BE(host % 2 ** 32, at + 4)
      await this.append(data)
    } else {
      this.l2!.writeUInt32BE(0, at)
      this.l2!.writeUInt32BE(ZERO_LO, at + 4)
    }
  }

  async finish(): Promise<Qcow2Result> {
    this.check('finish')
    this.state = 'finishing'
    while (this.ahead.length > 0) await this.placeNext()
    await this.closeL2()

    // Refcount blocks and table cover themselves too: grow until they do.
    const used = this.next
    let blocks = 1
    let tableClusters = 1
    for (;;) {
      const total = used + blocks + tableClusters
      const b = Math.ceil(total / REFBLOCK_ENTRIES)
      const t = Math.ceil((b * 8) / CLUSTER_SIZE)
      if (b === blocks && t === tableClusters) break
      blocks = b
      tableClusters = t
    }
    const total = used + blocks + tableClusters
    const table = Buffer.alloc(tableClusters * CLUSTER_SIZE)
    for (let b = 0; b < blocks; b++) {
      const block = Buffer.alloc(CLUSTER_SIZE)
      const n = Math.min(REFBLOCK_ENTRIES, total - b * REFBLOCK_ENTRIES)
      for (let i = 0; i < n; i++) block.writeUInt16BE(this.shared.get(b * REFBLOCK_ENTRIES + i) ?? 1, i * 2)
      writeU64(table, b * 8, this.next * CLUSTER_SIZE)
      await this.append(block)
    }
    const tableAt = this.next * CLUSTER_SIZE
    for (let t = 0; t < tableClusters; t++) await this.append(table.subarray(t * CLUSTER_SIZE, (t + 1) * CLUSTER_SIZE))
    await this.flush()
    await this.inflight
    this.rethrow()

    const front = Buffer.alloc((1 + this.l1Clusters) * CLUSTER_SIZE)
    this.header(front, tableAt, tableClusters)
    this.l1.forEach((off, i) => {
      if (off) writeU64(front, CLUSTER_SIZE + i * 8, off, COPIED_HI)
    })
    await writeAll(this.fh, front, 0)
    if (this.o.sync) await this.fh.datasync()
    await this.fh.close()
    this.state = 'done'
    return { bytes: total * CLUSTER_SIZE, sha256: (await hashFile(this.path)).sha256 }
  }

  async abort(): Promise<void> {
    if (this.state === 'aborted') return
    this.ahead.length = 0 // their deflates end on their own; nothing is placed
    const wasDone = this.state === 'done'
    this.state = 'aborted'
    await this.inflight
    if (!wasDone) await this.fh.close().catch(() => undefined)
    await rm(this.path, { force: true })
  }

  private header(h: Buffer, refTableAt: number, refTableClusters: number): void {
    h.writeUInt32BE(QCOW_MAGIC, 0)
    h.writeUInt32BE(3, 4)
    h.writeUInt32BE(CLUSTER_BITS, 20)
    writeU64(h, 24, this.o.virtualSize)
    h.writeUInt32BE(this.l1.length, 36)
    writeU64(h, 40, CLUSTER_SIZE)
    writeU64(h, 48, refTableAt)
    h.writeUInt32BE(refTableClusters, 56)
    h.writeUInt32BE(REFCOUNT_ORDER, 96)
    h.writeUInt32BE(HEADER_LENGTH, 100)
    let at = HEADER_LENGTH
    const backing = this.o.backing
    if (backing) {
      h.writeUInt32BE(EXT_BACKING_FORMAT, at)
      h.writeUInt32BE(backing.format.length, at + 4)
      h.write(backing.format, at + 8, 'latin1')
      at += 8 + align8(backing.format.length)
    }
    h.writeUInt32BE(EXT_END, at) // type 0, length 0
    at += 8
    if (backing) {
      const name = Buffer.from(backing.file)
      name.copy(h, at)
      writeU64(h, 8, at)
      h.writeUInt32BE(name.length, 16)
    }
  }

  private async closeL2(): Promise<void> {
    if (!this.l2) return
    await this.closePacked()
    this.l1[this.l2Index] = this.next * CLUSTER_SIZE
    const l2 = this.l2
    this.l2 = undefined
    await this.append(l2)
  }

  /**
   * Adds compressed bytes to the packed run and returns their file offset. The run is the host
   * clusters from `next` on; nothing else is appended until closePacked(). Only full clusters of it
   * are appended here (its last, partial one stays in `packed`).
   */
  private pack(bytes: Buffer): number {
    if (!this.packed) {
      this.packed = Buffer.alloc(CLUSTER_SIZE)
      this.packedFill = 0
      this.packedAt = this.next
    }
    const offset = this.packedAt * CLUSTER_SIZE + this.packedFill
    const first = Math.floor(offset / CLUSTER_SIZE)
    const last = Math.floor((offset + bytes.length - 1) / CLUSTER_SIZE)
    for (let c = first; c <= last; c++) this.shared.set(c, (this.shared.get(c) ?? 0) + 1)
    let done = 0
    while (done < bytes.length) {
      const n = Math.min(bytes.length - done, CLUSTER_SIZE - this.packedFill)
      bytes.copy(this.packed, this.packedFill, done, done + n)
      this.packedFill += n
      done += n
      if (this.packedFill === CLUSTER_SIZE && done < bytes.length) this.spillPacked()
    }
    return offset
  }

  /** A full packed cluster goes to the staging buffer (synchronously: the run must stay contiguous). */
  private spillPacked(): void {
    this.next++
    this.packed!.copy(this.staging, this.staged)
    this.staged += CLUSTER_SIZE
    this.packedAt++
    this.packedFill = 0
    this.packed!.fill(0)
    if (this.staged === STAGING_BYTES) this.pendingFlush = true
  }

  /** Appends the packed run's last cluster (padded): the next data or table starts on a cluster. */
  private async closePacked(): Promise<void> {
    if (this.pendingFlush) {
      this.pendingFlush = false
      await this.flush()
    }
    if (!this.packed) return
    const last = this.packed
    this.packed = undefined
    if (this.packedFill > 0) await this.append(last)
  }

  /** Appends one cluster (padded with zeros) to the file. */
  private async append(cluster: Buffer): Promise<void> {
    this.next++
    cluster.copy(this.staging, this.staged)
    if (cluster.length < CLUSTER_SIZE) this.staging.fill(0, this.staged + cluster.length, this.staged + CLUSTER_SIZE)
    this.staged += CLUSTER_SIZE
    if (this.staged === STAGING_BYTES) await this.flush()
  }

  /** Starts writing the staged clusters; waits only for the write before it (whose buffer it reuses). */
  private async flush(): Promise<void> {
    if (this.staged === 0) return
    await this.inflight
    this.rethrow()
    const buf = this.staging
    const len = this.staged
    const at = this.stagedAt
    this.staging = this.spare
    this.spare = buf
    this.stagedAt += len
    this.staged = 0
    this.inflight = writeAll(this.fh, buf.subarray(0, len), at).catch((e: unknown) => {
      this.failure ??= e instanceof Error ? e : new Error(String(e))
    })
  }

  private rethrow(): void {
    if (this.failure !== undefined) throw this.failure
  }

  private check(what: string): void {
    this.rethrow()
    if (this.state !== 'open') throw new Error(`qcow2 delta ${this.path}: ${what}() after ${this.state}`)
  }
}

async function writeAll(fh: FileHandle, buf: Buffer, at: number): Promise<void> {
  for (let done = 0; done < buf.length;) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, at + done)
    done += bytesWritten
  }
}

/** Writes a 64-bit big-endian value (exact below 2^53), with extra high bits `hiFlags`. */
function writeU64(b: Buffer, at: number, v: number, hiFlags = 0): void {
  b.writeUInt32BE((hiFlags | Math.floor(v / 2 ** 32)) >>> 0, at)
  b.writeUInt32BE(v % 2 ** 32, at + 4)
}

function align8(n: number): number {
  return (n + 7) & ~7
}
