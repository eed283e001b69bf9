// A pass-through filter of a tar archive that leaves whole entries out (squashfs drops ./dev/'s contents):
// every other byte goes through unchanged, so its output is the same archive less those entries.
import { Transform, type TransformCallback } from 'node:stream'

import { VirtDibError } from '../errors.js'

const BLOCK = 512
/** A metadata entry (pax header, GNU long name) larger than this is taken for a corrupt archive. */
const MAX_META_BYTES = 64 * 1024 * 1024

/** Entries under ./dev/ (not ./dev itself), as the original's `mksquashfs -e dev/*`. */
export function isUnderDev(path: string): boolean {
  return /^dev\/+[^/]/.test(path.replace(/^(\.?\/)+/, ''))
}

type State = 'header' | 'meta' | 'data' | 'sparse' | 'tail'

/** What the metadata entries before an entry say about it. */
interface Pending {
  /** Their blocks, as they came (emitted before the entry's header if it is kept). */
  blocks: Buffer[]
  path?: string
  sparseName?: string
  longName?: string
  size?: number
}

/**
 * Passes a tar archive through, leaving out every entry whose path `drop` accepts, with the
 * metadata entries that belong to it. It reads POSIX/pax and GNU archives: ustar prefixes, pax
 * 'x' headers (path, size, GNU.sparse.name), GNU 'L'/'K' long names, old GNU sparse headers,
 * base-256 sizes; from the first zero block on (the end of the archive and its record padding)
 * everything goes through as is. A header that fails its checksum, or an archive that ends
 * inside an entry, is an error naming the byte offset.
 */
export class TarFilter extends Transform {
  readonly #drop: (path: string) => boolean
  #state: State = 'header'
  /** Input bytes consumed so far. */
  #offset = 0
  /** The start of a block not complete yet (headers and metadata). */
  #carry: Buffer[] = []
  #carried = 0
  /** Bytes left in the current entry's data (padded to the block), or the metadata's. */
  #left = 0
  #keep = true
  #pending: Pending = { blocks: [] }
  /** The current metadata entry: its type, data size, and data so far. */
  #meta: { type: string; size: number; data: Buffer[] } | undefined
  /** What the current chunk gives, pushed as one. */
  #out: Buffer[] = []
  /** Whether the current chunk lost bytes. */
  #dropped = false

  constructor(drop: (path: string) => boolean) {
    super()
    this.#drop = drop
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      const whole = this.#between()
      this.#dropped = false
      this.#consume(chunk)
      // One write downstream per chunk (not one per header): the chunk itself when it all went through.
      if (whole && !this.#dropped && this.#between()) this.push(chunk)
      else if (this.#out.length) this.push(this.#out.length === 1 ? this.#out[0] : Buffer.concat(this.#out))
      this.#out = []
      callback()
    } catch (e) {
      callback(e as Error)
    }
  }

  override _flush(callback: TransformCallback): void {
    const clean =
      this.#state === 'tail' || (this.#state === 'header' && this.#carried === 0 && !this.#pending.blocks.length)
    callback(clean ? null : this.#error('the archive ends inside an entry'))
  }

  #consume(chunk: Buffer): void {
    let i = 0
    while (i < chunk.length) {
      if (this.#state === 'tail') {
        this.#emit(i === 0 ? chunk : chunk.subarray(i))
        this.#offset += chunk.length - i
        return
      }
      if (this.#state === 'data') {
        const n = Math.min(this.#left, chunk.length - i)
        if (this.#keep) this.#emit(chunk.subarray(i, i + n))
        else this.#dropped = true
        i += n
        this.#offset += n
        this.#left -= n
        if (this.#left === 0) this.#state = 'header'
        continue
      }
      if (this.#state === 'meta') {
        const n = Math.min(this.#left, chunk.length - i)
        const part = Buffer.from(chunk.subarray(i, i + n)) // kept past this chunk: a copy
        this.#pending.blocks.push(part)
        this.#meta!.data.push(part)
        i += n
        this.#offset += n
        this.#left -= n
        if (this.#left === 0) this.#endMeta()
        continue
      }
      // header or sparse: one whole block
      const want = BLOCK - this.#carried
      if (this.#carried === 0 && chunk.length - i >= BLOCK) {
        const block = chunk.subarray(i, i + BLOCK)
        i += BLOCK
        this.#block(block)
        continue
      }
      const part = chunk.subarray(i, i + Math.min(want, chunk.length - i))
      this.#carry.push(Buffer.from(part))
      this.#carried += part.length
      i += part.length
      if (this.#carried < BLOCK) continue
      const block = Buffer.concat(this.#carry)
      this.#carry = []
      this.#carried = 0
      // #block counts a whole block: the carried part was not counted yet
      this.#block(block)
    }
  }

  /** One whole block, in the header or sparse state. */
  #block(block: Buffer): void {
    const at = this.#offset
    this.#offset += BLOCK
    if (this.#state === 'sparse') {
      // old GNU sparse: extension blocks of the entry's map, the last with isextended (504) 0
      if (this.#keep) this.#emit(block)
      else this.#dropped = true
      if (block[504] === 0) this.#startData()
      return
    }
    if (isZero(block)) {
      if (this.#pending.blocks.length) throw this.#error('the archive ends after a metadata header', at)
      this.#emit(block)
      this.#state = 'tail'
      return
    }
    if (!checksumOk(block)) throw this.#error('a header fails its checksum', at)
    const type = String.fromCharCode(block[156]!)
    const size = parseSize(block, () => this.#error('a header has a bad size field', at))
    if (type === 'x' || type === 'L' || type === 'K') {
      if (size > MAX_META_BYTES) throw this.#error(`a metadata header of ${size} bytes`, at)
      this.#pending.blocks.push(Buffer.from(block))
      this.#meta = { type, size, data: [] }
      this.#left = padded(size)
      this.#state = 'meta'
      if (this.#left === 0) this.#endMeta()
      return
    }
    if (type === 'g') {
      // a global pax header: an entry of its own, kept
      if (this.#pending.blocks.length) throw this.#error('a global header between an entry and its metadata', at)
      this.#emit(block)
      this.#keep = true
      this.#left = padded(size)
      this.#state = this.#left ? 'data' : 'header'
      return
    }
    const p = this.#pending
    const path = p.sparseName ?? p.path ?? p.longName ?? headerName(block)
    this.#keep = !this.#drop(path)
    if (this.#keep) {
      for (const b of p.blocks) this.#emit(b)
      this.#emit(block)
    } else this.#dropped = true
    this.#left = padded(p.size ?? size)
    this.#pending = { blocks: [] }
    if (type === 'S' && block[482] !== 0) {
      this.#state = 'sparse'
      return
    }
    this.#startData()
  }

  #emit(b: Buffer): void {
    this.#out.push(b)
  }

  /** Nothing held back from an earlier chunk, nor for a later one. */
  #between(): boolean {
    return this.#carried === 0 && this.#pending.blocks.length === 0 && this.#state !== 'meta'
  }

  #startData(): void {
    this.#state = this.#left ? 'data' : 'header'
  }

  /** The current metadata entry is complete: what it says goes to the entry that follows. */
  #endMeta(): void {
    const m = this.#meta!
    this.#meta = undefined
    this.#state = 'header'
    const data = Buffer.concat(m.data).subarray(0, m.size)
    if (m.type === 'L') {
      const nul = data.indexOf(0)
      this.#pending.longName = data.toString('utf8', 0, nul < 0 ? data.length : nul)
    } else if (m.type === 'x') {
      for (const [key, value] of paxRecords(data, () => this.#error('a pax header is malformed'))) {
        if (key === 'path') this.#pending.path = value.toString('utf8')
        else if (key === 'GNU.sparse.name') this.#pending.sparseName = value.toString('utf8')
        else if (key === 'size') {
          const text = value.toString('latin1')
          if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) throw this.#error('a pax size is malformed')
          this.#pending.size = Number(text)
        }
      }
    }
  }

  #error(why: string, at = this.#offset): VirtDibError {
    return new VirtDibError(`the image archive cannot be read at byte ${at}: ${why}`)
  }
}

/** A filter that drops the entries under ./dev/ (see {@link isUnderDev}). */
export function dropDevContents(): TarFilter {
  return new TarFilter(isUnderDev)
}

function padded(n: number): number {
  return Math.ceil(n / BLOCK) * BLOCK
}

function isZero(block: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (block[i] !== 0) return false
  return true
}

/** A NUL-terminated string field. */
function field(block: Buffer, offset: number, length: number): string {
  const end = block.indexOf(0, offset)
  return block.toString('utf8', offset, end < 0 || end > offset + length ? offset + length : end)
}

/** The name in the header itself: ustar (POSIX) adds its prefix field; GNU's magic has none there. */
function headerName(block: Buffer): string {
  const name = field(block, 0, 100)
  if (block.toString('latin1', 257, 263) !== 'ustar\0') return name
  const prefix = field(block, 345, 155)
  return prefix ? `${prefix}/${name}` : name
}

/** The checksum field against the sum of the header's bytes (the field as spaces); signed sums too (old tars). */
function checksumOk(block: Buffer): boolean {
  const text = block.toString('latin1', 148, 156).replace(/^[ ]+/, '')
  const stored = parseInt(text, 8)
  if (!Number.isFinite(stored)) return false
  let unsigned = 8 * 0x20
  let signed = 8 * 0x20
  for (let i = 0; i < BLOCK; i++) {
    if (i >= 148 && i < 156) continue
    const b = block[i]!
    unsigned += b
    signed += b > 127 ? b - 256 : b
  }
  return stored === unsigned || stored === signed
}

/** The size field: octal text, or GNU's base-256 (the first byte's top bit set). */
function parseSize(block: Buffer, bad: () => Error): number {
  const first = block[124]!
  if (first & 0x80) {
    if (first === 0xff) throw bad() // negative
    let n = first & 0x7f
    for (let i = 125; i < 136; i++) n = n * 256 + block[i]!
    if (!Number.isSafeInteger(n)) throw bad()
    return n
  }
  const text = block
    .toString('latin1', 124, 136)
    .replace(/^[ ]+/, '')
    .replace(/[ \0].*$/s, '')
  if (text === '') return 0
  if (!/^[0-7]+$/.test(text)) throw bad()
  return parseInt(text, 8)
}

/** The records of a pax header (`<length> <key>=<value>\n`); values are bytes (xattrs are binary). */
function paxRecords(data: Buffer, bad: () => Error): [string, Buffer][] {
  const records: [string, Buffer][] = []
  let i = 0
  while (i < data.length) {
    if (data[i] === 0) break // padding inside the declared size (some writers)
    const space = data.indexOf(0x20, i)
    const length = space < 0 ? NaN : Number(data.toString('latin1', i, space))
    if (!Number.isSafeInteger(length) || length <= space - i || i + length > data.length) throw bad()
    const record = data.subarray(space + 1, i + length - 1)
    const eq = record.indexOf(0x3d)
    if (eq < 0 || data[i + length - 1] !== 0x0a) throw bad()
    records.push([record.toString('utf8', 0, eq), record.subarray(eq + 1)])
    i += length
  }
  return records
}
