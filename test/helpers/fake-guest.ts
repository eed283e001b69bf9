// A stand-in for the Guestfs handle's transfers, shaped like the real ones: the guest's tar
// writing an archive onto the export drive (shOutside), and streaming transfers (tarOutStream):
// `stream` yields the bytes, `done` settles with the call. Like libguestfs, an abort of the
// call's signal cancels it (AbortError), and a reader that goes away makes it fail (EPIPE). For
// unit tests of the code that consumes guest archives: errors can be injected at any point.
import { createWriteStream } from 'node:fs'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { finished } from 'node:stream/promises'

import { BuildContext } from '../../src/engine/context.js'
import type { BuildOptions, OutputFormatName } from '../../src/api/options.js'
import type { BuildPlan } from '../../src/engine/plan.js'
import { AbortError, GuestfsError } from '../../src/guestfs/errors.js'
import type { Guestfs } from '../../src/guestfs/index.js'
import { OUTPUT_FORMATS, resolveOutputSettings } from '../../src/outputs/registry.js'

export interface FakeTransferOptions {
  /** Chunks to send; a function is called for chunk i until it returns null (end). */
  chunks: Buffer[] | ((i: number) => Buffer | null)
  /** After this many chunks the call fails with a GuestfsError (the guest's tar failed). */
  failAfter?: number
  /** Before each chunk (ms): a slow guest. */
  delayMs?: number
}

export interface FakeTransfer {
  stream: Readable
  done: Promise<void>
  /** How it ended: 'ok', 'cancelled' (signal), 'epipe' (reader gone), 'failed' (injected). */
  outcome: Promise<'ok' | 'cancelled' | 'epipe' | 'failed'>
  sent: () => number
}

export function fakeTransfer(op: string, o: FakeTransferOptions, signal?: AbortSignal): FakeTransfer {
  let i = 0
  let bytes = 0
  let timer: NodeJS.Timeout | undefined
  const next = (): Buffer | null =>
    Array.isArray(o.chunks) ? (i < o.chunks.length ? o.chunks[i]! : null) : o.chunks(i)
  let settle!: (how: 'ok' | 'cancelled' | 'epipe' | 'failed', e?: Error) => void
  const stream = new Readable({
    read() {
      const push = () => {
        timer = undefined
        if (stream.destroyed) return
        if (o.failAfter !== undefined && i >= o.failAfter) {
          settle('failed', new GuestfsError(`${op}: tar: ./usr: Cannot stat: Input/output error`, { op }))
          return
        }
        const c = next()
        i++
        if (c === null) {
          stream.push(null)
          return
        }
        bytes += c.length
        stream.push(c)
      }
      if (o.delayMs) timer = setTimeout(push, o.delayMs)
      else push()
    },
  })
  let resolveOutcome!: (x: 'ok' | 'cancelled' | 'epipe' | 'failed') => void
  const outcome = new Promise<'ok' | 'cancelled' | 'epipe' | 'failed'>((r) => (resolveOutcome = r))
  const done = new Promise<void>((resolve, reject) => {
    let settled = false
    settle = (how, e) => {
      if (settled) return
      settled = true
      if (timer) clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      resolveOutcome(how)
      if (how === 'ok') return resolve()
      // As Guestfs.#outStream does: a failed call destroys the stream it feeds.
      stream.destroy(e)
      reject(e ?? new Error(`${op}: ${how}`))
    }
    const onAbort = () => settle('cancelled', new AbortError(`${op}: aborted`, { cause: signal?.reason }))
    if (signal?.aborted) onAbort()
    signal?.addEventListener('abort', onAbort, { once: true })
    stream.on('end', () => settle('ok'))
    stream.on('close', () => {
      if (!stream.readableEnded) settle('epipe', new GuestfsError(`${op}: write: Broken pipe`, { op, code: 'EPIPE' }))
    })
  })
  return { stream, done, outcome, sent: () => bytes }
}

/** A fake handle with the transfers the export steps use; records every transfer started. */
export class FakeGuest {
  readonly transfers: FakeTransfer[] = []
  /** The host file behind /dev/disk/guestfs/export (where the guest's tar writes). */
  exportDrive: string | undefined
  constructor(
    private readonly o: FakeTransferOptions,
    private readonly lsResult: string[] = ['entry'],
  ) {}

  /**
   * The guest's tar onto the export drive (`tar … -cf /dev/disk/guestfs/export --totals .`): the
   * chunks are written to {@link exportDrive}; the output has tar's total. Other commands: no-op.
   */
  async shOutside(script: string, c: { signal?: AbortSignal } = {}): Promise<string> {
    if (!script.includes("'-cf' '/dev/disk/guestfs/export'")) return ''
    if (this.exportDrive === undefined) throw new Error('FakeGuest: no export drive set')
    const t = fakeTransfer('debug', this.o, c.signal)
    this.transfers.push(t)
    const out = createWriteStream(this.exportDrive, { flags: 'w' })
    t.stream.on('error', () => undefined) // a failed call destroys its stream: `done` says why
    // A write still in flight when the call fails ends in ERR_STREAM_DESTROYED: `done` says why.
    out.on('error', () => undefined)
    t.stream.pipe(out)
    try {
      await t.done
    } catch (e) {
      out.destroy()
      throw e
    }
    await finished(out)
    return `Total bytes written: ${t.sent()} (fake)\n`
  }

  async ls(_dir: string): Promise<string[]> {
    return this.lsResult
  }

  /** Puts this fake where a BuildContext keeps its appliance handle. */
  attach(ctx: BuildContext): this {
    ctx.g = this as unknown as Guestfs
    return this
  }
}

/** `n` chunks of `size` random-ish bytes (incompressible enough to fill a small disk through gzip). */
export function randomChunks(n: number, size = 64 * 1024): (i: number) => Buffer | null {
  let seed = 12345
  return (i) => {
    if (i >= n) return null
    const b = Buffer.allocUnsafe(size)
    for (let k = 0; k < size; k += 4) {
      seed = (seed * 1103515245 + 12345) >>> 0
      b.writeUInt32LE(seed, k)
    }
    return b
  }
}

/**
 * A real BuildContext for the export steps without planning a build: outputs `<outDir>/img.*`,
 * the workspace in `tmp`. Only the plan fields those steps read are filled in.
 */
export async function openExportContext(
  outDir: string,
  tmp: string,
  formats: OutputFormatName[],
  options: Partial<BuildOptions> = {},
  signal?: AbortSignal,
): Promise<BuildContext> {
  const plan = {
    checksum: options.checksum ?? true,
    keepPartialOutputs: options.deleteOnFailure === false,
    outputSettings: resolveOutputSettings(formats, options),
    imageName: 'img',
    outputDir: outDir,
    outputPath: join(outDir, 'img'),
    formats: formats.map((f) => OUTPUT_FORMATS.get(f)!),
    ramdisk: false,
    appliance: { drive: undefined },
    // The fake guest's tar is what these tests drive: never the host's reader of a real disk.
    env: { ...options.env, TMPDIR: tmp, VIRT_DIB_TREE_READER: 'guest' },
  } as unknown as BuildPlan
  return BuildContext.open(plan, signal ? { signal } : {})
}
