// A streaming qcow2 v3 writer for the step cache's deltas: data clusters as they come, metadata at the end.
//
// Layout of a file it writes (every cluster of it allocated once, so every refcount is 1):
//   cluster 0 header (+ backing-format extension, backing file name) · clusters 1.. L1 table (size known from
//   the virtual size) · data clusters and each L2 table right after the last data cluster it maps (indexes
//   come in ascending order, so one L2 table is in memory at a time) · refcount blocks · refcount table.
// The header and L1 are written last, in place; the sha256 of the result is then read back once
// (sha256 is sequential and the header, at offset 0, is known only at the end).
import { createHash } from 'node:crypto'
import { open, rm, type FileHandle } from 'node:fs/promises'

import { VirtDibError } from '../errors.js'

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
    const l1i = Math.floor(index / L2_ENTRIES)
    if (l1i !== this.l2Index) {
      await this.closeL2()
      this.l2 = Buffer.alloc(CLUSTER_SIZE)
      this.l2Index = l1i
    }
    const at = (index % L2_ENTRIES) * 8
    if (data) {
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
      for (let i = 0; i < n; i++) block.writeUInt16BE(1, i * 2)
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
    return { bytes: total * CLUSTER_SIZE, sha256: await sha256File(this.path) }
  }

  async abort(): Promise<void> {
    if (this.state === 'aborted') return
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
    this.l1[this.l2Index] = this.next * CLUSTER_SIZE
    const l2 = this.l2
    this.l2 = undefined
    await this.append(l2)
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

/** sha256 of a file, hex. */
export async function sha256File(path: string): Promise<string> {
  const fh = await open(path, 'r')
  try {
    const h = createHash('sha256')
    const buf = Buffer.allocUnsafe(STAGING_BYTES)
    for (let at = 0; ;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, at)
      if (bytesRead === 0) break
      h.update(buf.subarray(0, bytesRead))
      at += bytesRead
    }
    return h.digest('hex')
  } finally {
    await fh.close()
  }
}
