// The export steps against a fake guest stream and the real sinks (files, gzip, host tar, a
// docker client): a failure on either side stops the whole stream at once, rejects with one
// clear error, leaves no process and (after cleanup) no file behind, and never rejects unhandled.
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { gunzipSync, gzipSync } from 'node:zlib'

import { afterEach, describe, expect, it } from 'vitest'

import type { BuildContext } from '../../../src/engine/context.js'
import { exportChecksums, exportExtraData, exportTarStream } from '../../../src/engine/export.js'
import { HostToolError, VirtDibError } from '../../../src/errors.js'
import { GuestfsError } from '../../../src/guestfs/errors.js'
import { findExecutable } from '../../../src/host/which.js'
import { squashfs } from '../../../src/outputs/squashfs.js'
import { FakeGuest, openExportContext, randomChunks } from '../../helpers/fake-guest.js'
import { allProcesses, alive, waitFor } from '../../helpers/processes.js'
import { tempDir } from '../../helpers/temp.js'

const isRoot = process.getuid?.() === 0
if (!isRoot) console.warn('export.test: not root, the tmpfs (real ENOSPC) cases are skipped')
if (!findExecutable('docker')) console.warn('export.test: no docker client on PATH, the real-client case is skipped')
const contexts: BuildContext[] = []
const mounts: string[] = []
afterEach(async () => {
  for (const c of contexts.splice(0)) await c.cleanup.run()
  for (const m of mounts.splice(0)) await unmount(m)
})

/** umount, retried while a file is still being closed; lazily as a last resort. */
async function unmount(dir: string): Promise<void> {
  for (let i = 0; i < 50; i++) {
    try {
      execFileSync('umount', [dir], { stdio: 'ignore' })
      return
    } catch {
      await new Promise((r) => setTimeout(r, 100))
    }
  }
  execFileSync('umount', ['-l', dir])
}

async function context(...a: Parameters<typeof openExportContext>): Promise<BuildContext> {
  const c = await openExportContext(...a)
  contexts.push(c)
  return c
}

/** A 1 MiB tmpfs (root only): real ENOSPC from the kernel. */
function tinyTmpfs(prefix: string): string {
  const d = tempDir(prefix)
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1M', 'tmpfs', d])
  mounts.push(d)
  return d
}

/** A docker client stand-in that records its pid, then reads stdin slowly (it is killed, or it ends). */
function slowDocker(dir: string): NodeJS.ProcessEnv {
  const bin = join(dir, 'bin')
  mkdirSync(bin)
  writeFileSync(join(bin, 'docker'), `#!/bin/sh\necho $$ > ${dir}/docker.pid\nexec cat > ${dir}/docker.stdin\n`)
  chmodSync(join(bin, 'docker'), 0o755)
  return { ...process.env, PATH: `${bin}:${process.env['PATH']}` }
}

/** Host tar processes we started that are still there. */
function ourTars(): number[] {
  return allProcesses()
    .filter((p) => p.ppid === process.pid && /^tar /.test(p.cmdline))
    .map((p) => p.pid)
}

describe('the tar stream into tar, tgz and docker', () => {
  it('happy path: every sink gets every byte, checksums of what was written', async () => {
    const out = tempDir('vdib-exp.')
    const tmp = tempDir('vdib-exptmp.')
    const env = slowDocker(tmp)
    const ctx = await context(out, tmp, ['docker', 'tar', 'tgz'], { dockerTarget: 'x/y:z', env })
    const chunks = [...Array(40).keys()].map((i) => Buffer.alloc(100_000, i))
    new FakeGuest({ chunks }).attach(ctx)
    await exportTarStream(ctx)
    const all = Buffer.concat(chunks)
    const tar = ctx.staged.find((s) => s.format === 'tar')!
    expect(readFileSync(tar.temp).equals(all)).toBe(true)
    expect(tar.digests?.sha256).toBe(createHash('sha256').update(all).digest('hex'))
    expect(gunzipSync(readFileSync(ctx.staged.find((s) => s.format === 'tgz')!.temp)).equals(all)).toBe(true)
    expect(readFileSync(join(tmp, 'docker.stdin')).equals(all)).toBe(true)
  })

  it.skipIf(!isRoot)(
    'a full output directory (real ENOSPC on a 1 MiB tmpfs): one clear error, the stream cancelled, nothing left',
    async () => {
      const out = tinyTmpfs('vdib-full.')
      writeFileSync(join(out, 'img.tar'), 'previous build')
      const tmp = tempDir('vdib-exptmp.')
      const ctx = await context(out, tmp, ['tar', 'tgz'])
      const guest = new FakeGuest({ chunks: randomChunks(256) }).attach(ctx) // 16 MiB
      const e = await exportTarStream(ctx).catch((x: unknown) => x)
      expect(e).toBeInstanceOf(VirtDibError)
      expect((e as Error).message).toMatch(
        new RegExp(
          `^out of space on the host: writing ‘${out}/img\\.(tar|tgz)’ failed: no space left on device \\(ENOSPC\\)$`,
        ),
      )
      expect((e as VirtDibError).hint).toMatch(/free some space/)
      expect(await guest.transfers[0]!.outcome).toBe('cancelled')
      expect(guest.transfers[0]!.sent()).toBeLessThan(16 * 1024 ** 2)
      await ctx.cleanup.run()
      expect(readdirSync(out)).toEqual(['img.tar'])
      expect(readFileSync(join(out, 'img.tar'), 'utf8')).toBe('previous build')
    },
  )

  it('a write error without root (/dev/full): the same error shape through the real file sink', async () => {
    const out = tempDir('vdib-exp.')
    const ctx = await context(out, tempDir('vdib-exptmp.'), ['squashfs'])
    const guest = new FakeGuest({ chunks: randomChunks(1000) }).attach(ctx)
    const sink = ctx.fileSink({ temp: '/dev/full', final: join(out, 'img.squash') })
    const octx = {
      settings: ctx.plan.outputSettings,
      env: ctx.plan.env,
      g: ctx.g,
      signal: ctx.signal,
      emit: () => undefined,
      fileSink: () => sink,
    }
    const e = await squashfs.fromTree!(octx, join(out, 'img.squash')).catch((x: unknown) => x)
    expect((e as Error).message).toBe(
      `out of space on the host: writing ‘${out}/img.squash’ failed: no space left on device (ENOSPC)`,
    )
    expect(await guest.transfers[0]!.outcome).toBe('cancelled')
  })

  it.skipIf(!findExecutable('docker'))(
    'docker exiting at once (no daemon, the real client): its error, the tar stream and the tar output stopped',
    async () => {
      const out = tempDir('vdib-exp.')
      const tmp = tempDir('vdib-exptmp.')
      const env = { ...process.env, DOCKER_HOST: `unix://${tmp}/no-daemon.sock` }
      const ctx = await context(out, tmp, ['docker', 'tar'], { dockerTarget: 'vdib/x:y', env })
      const guest = new FakeGuest({ chunks: randomChunks(100_000) }).attach(ctx) // 6 GiB if never stopped
      const e = await exportTarStream(ctx).catch((x: unknown) => x)
      expect(e).toBeInstanceOf(HostToolError)
      expect((e as Error).message).toMatch(/^external command ‘docker’ exited with error 1: .*(Cannot connect|daemon)/)
      expect(await guest.transfers[0]!.outcome).toBe('cancelled')
      await ctx.cleanup.run()
      expect(readdirSync(out)).toEqual([])
    },
  )

  it('the guest failing mid-stream: its error, docker killed, the partial tarball removed by cleanup', async () => {
    const out = tempDir('vdib-exp.')
    const tmp = tempDir('vdib-exptmp.')
    const ctx = await context(out, tmp, ['docker', 'tar', 'tgz'], { dockerTarget: 'x/y:z', env: slowDocker(tmp) })
    new FakeGuest({ chunks: randomChunks(100_000), failAfter: 50, delayMs: 1 }).attach(ctx)
    const e = await exportTarStream(ctx).catch((x: unknown) => x)
    expect(e).toBeInstanceOf(GuestfsError)
    expect((e as Error).message).toMatch(/Cannot stat: Input\/output error/)
    const pid = Number(readFileSync(join(tmp, 'docker.pid'), 'utf8'))
    expect(await waitFor(() => !alive(pid), 5000)).toBe(true)
    await ctx.cleanup.run()
    expect(readdirSync(out)).toEqual([])
  })

  it('an abort mid-stream: an AbortError, the transfer cancelled, docker killed', async () => {
    const out = tempDir('vdib-exp.')
    const tmp = tempDir('vdib-exptmp.')
    const ac = new AbortController()
    const ctx = await context(out, tmp, ['docker', 'tar'], { dockerTarget: 'x/y:z', env: slowDocker(tmp) }, ac.signal)
    const guest = new FakeGuest({ chunks: randomChunks(100_000), delayMs: 2 }).attach(ctx)
    setTimeout(() => ac.abort(), 200)
    const e = await exportTarStream(ctx).catch((x: unknown) => x)
    expect((e as Error).name).toBe('AbortError')
    expect(await guest.transfers[0]!.outcome).toBe('cancelled')
    const pid = Number(readFileSync(join(tmp, 'docker.pid'), 'utf8'))
    expect(await waitFor(() => !alive(pid), 5000)).toBe(true)
  })
})

/** A real tarball of `files` (name → content), as tar_out would send it. */
function tarball(files: Record<string, string | Buffer>): Buffer {
  const d = tempDir('vdib-tarsrc.')
  for (const [n, c] of Object.entries(files)) writeFileSync(join(d, n), c)
  const b = execFileSync('tar', ['-C', d, '-cf', '-', '.'], { maxBuffer: 64 * 1024 ** 2 })
  rmSync(d, { recursive: true, force: true })
  return b
}

function chunked(b: Buffer, size = 16 * 1024): Buffer[] {
  const out: Buffer[] = []
  for (let i = 0; i < b.length; i += size) out.push(b.subarray(i, i + size))
  return out
}

describe('extracting $NAME.d through the host tar', () => {
  it('happy path: the files land in the staged directory', async () => {
    const out = tempDir('vdib-exd.')
    const ctx = await context(out, tempDir('vdib-exdtmp.'), ['tar'])
    new FakeGuest({ chunks: chunked(tarball({ 'manifest.txt': 'elements: a b\n' })) }).attach(ctx)
    expect(await exportExtraData(ctx)).toBe(join(out, 'img.d'))
    expect(readFileSync(join(ctx.staged[0]!.temp, 'manifest.txt'), 'utf8')).toBe('elements: a b\n')
  })

  it('tar exiting early (it refuses the input at once): one line naming $NAME.d, tar_out cancelled, no tar left', async () => {
    const out = tempDir('vdib-exd.')
    const ctx = await context(out, tempDir('vdib-exdtmp.'), ['tar'])
    // gzip data on a pipe: tar stops at the first block, while the guest would send 6 GiB more.
    const gz = gzipSync(Buffer.alloc(64 * 1024))
    const more = randomChunks(100_000)
    const guest = new FakeGuest({ chunks: (i) => (i === 0 ? gz : more(i)) }).attach(ctx)
    const e = await exportExtraData(ctx).catch((x: unknown) => x)
    expect(e).toBeInstanceOf(VirtDibError)
    expect((e as Error).message).toBe(`extracting ‘${out}/img.d’ failed: Archive is compressed. Use -z option`)
    expect(await guest.transfers[0]!.outcome).toBe('cancelled')
    expect(ourTars()).toEqual([])
    await ctx.cleanup.run()
    expect(readdirSync(out)).toEqual([])
  })

  it.skipIf(!isRoot)("tar unable to write (real ENOSPC on a 1 MiB tmpfs): one line with tar's reason", async () => {
    const out = tinyTmpfs('vdib-exdfull.')
    const ctx = await context(out, tempDir('vdib-exdtmp.'), ['tar'])
    const big = Buffer.concat([...Array(48).keys()].map((i) => randomChunks(48)(i)!)) // 3 MiB
    new FakeGuest({ chunks: chunked(tarball({ big, small: 'x' })) }).attach(ctx)
    const e = await exportExtraData(ctx).catch((x: unknown) => x)
    expect(e).toBeInstanceOf(VirtDibError)
    expect((e as Error).message).toMatch(
      new RegExp(
        `^out of space on the host: extracting ‘${out}/img\\.d’ failed: .*(No space left on device|Wrote only)`,
      ),
    )
    expect((e as Error).message).not.toMatch(/\n/)
    await ctx.cleanup.run()
    expect(readdirSync(out)).toEqual([])
  })

  it('an abort (SIGINT) while tar waits for data: AbortError, tar killed, the staged directory removed', async () => {
    const out = tempDir('vdib-exd.')
    const ac = new AbortController()
    const ctx = await context(out, tempDir('vdib-exdtmp.'), ['tar'], {}, ac.signal)
    // The header of a 1 MiB file, then the data slowly: tar keeps waiting for more.
    const header = tarball({ big: Buffer.alloc(1024 * 1024) }).subarray(0, 512)
    const guest = new FakeGuest({ chunks: (i) => (i === 0 ? header : Buffer.alloc(512)), delayMs: 20 }).attach(ctx)
    setTimeout(() => ac.abort(), 300)
    const e = await exportExtraData(ctx).catch((x: unknown) => x)
    expect((e as Error).name).toBe('AbortError')
    expect(await guest.transfers[0]!.outcome).toBe('cancelled')
    expect(await waitFor(() => ourTars().length === 0, 5000)).toBe(true)
    await ctx.cleanup.run()
    expect(existsSync(join(out, 'img.d'))).toBe(false)
    expect(readdirSync(out)).toEqual([])
  })
})

describe('checksum files', () => {
  it.skipIf(!isRoot)(
    'no room left for img.tar.md5 (real ENOSPC): the error names that file, cleanup removes the rest',
    async () => {
      const out = tinyTmpfs('vdib-sumfull.')
      const ctx = await context(out, tempDir('vdib-sumtmp.'), ['tar'])
      const tar = ctx.stage(join(out, 'img.tar'), 'tar')
      writeFileSync(tar.temp, 'x')
      tar.digests = {
        md5: '9dd4e461268c8034f5c8564e155c67a6',
        sha256: '2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881',
        size: 1,
      }
      for (let i = 0; ; i++) {
        try {
          writeFileSync(join(out, `.filler${i}`), Buffer.alloc(64 * 1024))
        } catch {
          break
        }
      }
      const e = await exportChecksums(ctx).catch((x: unknown) => x)
      expect((e as Error).message).toBe(
        `out of space on the host: writing ‘${out}/img.tar.md5’ failed: no space left on device (ENOSPC)`,
      )
      for (const f of readdirSync(out)) if (f.startsWith('.filler')) rmSync(join(out, f))
      await ctx.cleanup.run()
      expect(readdirSync(out)).toEqual([])
    },
  )
})
