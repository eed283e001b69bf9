// pumpGuestStream and the tgz compressors: the first failure (a sink that errors while the stream
// waits for it to drain, the guest call failing, a full output file) stops everything, and the
// error reported is that first one.
import { randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { PassThrough, Writable } from 'node:stream'

import { describe, expect, it } from 'vitest'

import { HARD_EXIT_MS } from '../../../src/cli/main.js'
import { VirtDibError } from '../../../src/errors.js'
import { findExecutable } from '../../../src/host/which.js'
import {
  archiveFile,
  pumpGuestStream,
  SETTLE_MS,
  SETTLE_ON_ABORT_MS,
  settleTogether,
} from '../../../src/outputs/stream.js'
import { gzipArchive } from '../../../src/outputs/tgz.js'
import type { FileSink } from '../../../src/outputs/types.js'
import { fakeTransfer, openExportContext, randomChunks } from '../../helpers/fake-guest.js'
import { allProcesses } from '../../helpers/processes.js'
import { tempDir } from '../../helpers/temp.js'

/** A sink that takes `n` writes, then stops draining and fails a little later (a stuck disk). */
function stallingSink(n: number): FileSink & { writes: () => number } {
  let writes = 0
  let fail!: (e: Error) => void
  const done = new Promise<void>((_, reject) => (fail = reject))
  done.catch(() => undefined)
  const w = new Writable({
    highWaterMark: 1024,
    write(_chunk, _enc, cb) {
      if (++writes < n) return cb()
      setTimeout(() => fail(new Error('the disk went away')), 50) // cb never called: no 'drain'
    },
  })
  return Object.assign(w, { done, writes: () => writes })
}

function okSink(): FileSink {
  const p = new PassThrough()
  p.resume()
  const done = new Promise<void>((resolve, reject) => {
    p.on('end', resolve)
    p.on('error', reject)
    p.on('close', () => reject(new Error('destroyed before its end'))) // as the real sinks do
  })
  done.catch(() => undefined)
  return Object.assign(p, { done })
}

describe('pumpGuestStream', () => {
  it('a sink failing while the stream waits for it to drain: its error, the transfer cancelled, the other sinks destroyed', async () => {
    const stop = new AbortController()
    const t = fakeTransfer('tar_out', { chunks: randomChunks(100_000) }, stop.signal)
    const other = okSink()
    const stuck = stallingSink(10)
    const e = await pumpGuestStream(t, [other, stuck], stop).catch((x: unknown) => x)
    expect((e as Error).message).toBe('the disk went away')
    expect(await t.outcome).toBe('cancelled')
    expect(other.destroyed).toBe(true)
    expect(stuck.writes()).toBeLessThan(20)
  })

  it('the guest call failing: its error, and every sink destroyed', async () => {
    const stop = new AbortController()
    const t = fakeTransfer('tar_out', { chunks: randomChunks(1000), failAfter: 3 }, stop.signal)
    const sinks = [okSink(), okSink()]
    await expect(pumpGuestStream(t, sinks, stop)).rejects.toThrow(/Cannot stat: Input\/output error/)
    expect(sinks.every((s) => s.destroyed)).toBe(true)
    expect(stop.signal.aborted).toBe(true)
  })

  it('the happy path ends every sink once the stream ends', async () => {
    const stop = new AbortController()
    const t = fakeTransfer('tar_out', { chunks: randomChunks(20) }, stop.signal)
    await pumpGuestStream(t, [okSink(), okSink()], stop)
    expect(await t.outcome).toBe('ok')
    expect(stop.signal.aborted).toBe(false)
  })
})

describe('settleTogether', () => {
  it('reports the first failure, after stopping the others, and waits for them to settle', async () => {
    const order: string[] = []
    let release!: () => void
    const slow = new Promise<void>((r) => (release = r)).then(() => {
      order.push('slow settled')
      throw new Error('second')
    })
    const e = await settleTogether([slow, Promise.reject(new Error('first'))], () => {
      order.push('stop')
      release()
    }).catch((x: unknown) => x)
    expect((e as Error).message).toBe('first')
    expect(order).toEqual(['stop', 'slow settled'])
  })
})

describe('tgz onto a failing file', () => {
  const pigz = findExecutable('pigz')
  for (const [tool, bin] of [
    ['pigz', pigz],
    ['zlib', undefined],
  ] as const) {
    it.skipIf(tool === 'pigz' && !pigz)(
      `${tool}: the file's error is the one reported, the compressor stopped`,
      async () => {
        const out = tempDir('vdib-tgz.')
        const ctx = await openExportContext(out, tempDir('vdib-tgztmp.'), ['tgz'])
        const final = join(out, 'img.tgz')
        const octx = {
          signal: ctx.signal,
          fileSink: () => ctx.fileSink({ temp: '/dev/full', final }),
          finalPath: () => final,
        }
        const src = join(out, 'archive')
        writeFileSync(src, randomBytes(4 << 20))
        await expect(gzipArchive(octx, archiveFile(src, 4 << 20), final, bin)).rejects.toThrow(
          `out of space on the host: writing ‘${final}’ failed: no space left on device (ENOSPC)`,
        )
        expect(allProcesses().filter((p) => p.ppid === process.pid && /^\S*pigz /.test(p.cmdline))).toEqual([])
        await ctx.cleanup.run()
      },
    )
  }
})

describe('settling after an abort', () => {
  it('a transfer stuck after the first failure is given up on soon once the build is aborted', async () => {
    const build = new AbortController()
    const t0 = Date.now()
    const settled = settleTogether(
      [Promise.reject(new Error('first')), new Promise(() => undefined)],
      () => {
        // the stop does not make the stuck one settle; the build is aborted a little later
        setTimeout(() => build.abort(), 200)
      },
      build.signal,
    ).catch((x: unknown) => x)
    expect(((await settled) as Error).message).toBe('first')
    const ms = Date.now() - t0
    // Was SETTLE_MS (10 s) whatever the signal said.
    expect(ms).toBeGreaterThanOrEqual(200 + SETTLE_ON_ABORT_MS - 50)
    expect(ms).toBeLessThan(200 + SETTLE_ON_ABORT_MS + 1000)
  })

  it('already aborted: the short wait from the start', async () => {
    const build = new AbortController()
    build.abort()
    const t0 = Date.now()
    await expect(
      settleTogether([Promise.reject(new Error('first')), new Promise(() => undefined)], () => undefined, build.signal),
    ).rejects.toThrow('first')
    expect(Date.now() - t0).toBeLessThan(SETTLE_ON_ABORT_MS + 1000)
  })

  it('the short wait ends before the CLI hard exit after a second signal', () => {
    expect(SETTLE_ON_ABORT_MS).toBeLessThan(HARD_EXIT_MS - 2000)
    expect(SETTLE_MS).toBeGreaterThan(SETTLE_ON_ABORT_MS)
  })
})

describe('a guest stream that closes before its end', () => {
  it('reports the call’s own error when it comes after the close', async () => {
    const stream = new PassThrough()
    let fail!: (e: Error) => void
    const done = new Promise<void>((_, reject) => (fail = reject))
    done.catch(() => undefined)
    const pumped = pumpGuestStream({ stream, done }, [okSink()], new AbortController()).catch((x: unknown) => x)
    stream.destroy()
    setTimeout(() => fail(new VirtDibError('tar_out: tar: ./usr: Cannot stat')), 100)
    const e = await pumped
    // Was a plain Error('the guest stream closed early'), reported as an internal error.
    expect((e as Error).message).toBe('tar_out: tar: ./usr: Cannot stat')
  })

  it('is a VirtDibError when the call says nothing', async () => {
    const stream = new PassThrough()
    const pumped = pumpGuestStream({ stream, done: Promise.resolve() }, [okSink()], new AbortController()).catch(
      (x: unknown) => x,
    )
    stream.destroy()
    const e = await pumped
    expect(e).toBeInstanceOf(VirtDibError)
    expect((e as Error).message).toBe('the guest stream closed before its end')
  })
})
