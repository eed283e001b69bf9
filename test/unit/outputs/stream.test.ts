// settleTogether and the tgz compressors: the first failure (a tool failing, a full output file)
// stops everything, and the error reported is that first one.
import { randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { HARD_EXIT_MS } from '../../../src/cli/main.js'
import { findExecutable } from '../../../src/host/which.js'
import { archiveFile, SETTLE_MS, SETTLE_ON_ABORT_MS, settleTogether } from '../../../src/outputs/stream.js'
import { gzipArchive } from '../../../src/outputs/tgz.js'
import { openExportContext } from '../../helpers/fake-guest.js'
import { allProcesses } from '../../helpers/processes.js'
import { tempDir } from '../../helpers/temp.js'

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
