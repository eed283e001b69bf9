// The export steps against a fake guest (its tar writing the export drive) and the real host side
// (files, gzip, host tar, a docker client): a failure on either side rejects with one clear error,
// leaves no process and (after cleanup) no file behind, and never rejects unhandled.
import { execFileSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { gunzipSync, gzipSync } from 'node:zlib'

import { afterEach, describe, expect, it } from 'vitest'

import type { BlockDeviceLayout } from '../../../src/blockdev/layout.js'
import type { BuildContext } from '../../../src/engine/context.js'
import {
  exportArchiveFormat,
  exportChecksums,
  exportExtraData,
  exportTar,
  exportTreeArchive,
} from '../../../src/engine/export.js'
import { HostToolError, VirtDibError } from '../../../src/errors.js'
import { GuestfsError } from '../../../src/guestfs/errors.js'
import { findExecutable } from '../../../src/host/which.js'
import { FakeGuest, openExportContext, randomChunks } from '../../helpers/fake-guest.js'
import { allProcesses } from '../../helpers/processes.js'
import { tempDir } from '../../helpers/temp.js'
import { archiveFile } from '../../../src/outputs/stream.js'

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

/**
 * What the engine does with the image root's archive: the guest writes it onto the export drive
 * (the staged tar itself when tar is asked), then tar is cut to its length and the other formats
 * are made from it on the host, together.
 */
async function exportArchive(ctx: BuildContext, guest: FakeGuest): Promise<void> {
  const tar = ctx.plan.formats.find((f) => f.isArchive)
  guest.exportDrive = tar
    ? ctx.stage(join(ctx.plan.outputDir, 'img.tar'), 'tar').temp
    : join(ctx.workspace, 'export.raw')
  const at = { layout: {} as BlockDeviceLayout, disk: '', exportDrive: guest.exportDrive, outDevice: '/dev/sda' }
  const archive = archiveFile(guest.exportDrive, await exportTreeArchive(ctx, at))
  await Promise.all(
    ctx.plan.formats.map((f) => (f.isArchive ? exportTar(ctx, f, archive) : exportArchiveFormat(ctx, f, archive))),
  )
}

describe('the image root’s archive into tar, tgz and docker', () => {
  it('happy path: every output gets every byte, checksums of what was written', async () => {
    const out = tempDir('vdib-exp.')
    const tmp = tempDir('vdib-exptmp.')
    const env = slowDocker(tmp)
    const ctx = await context(out, tmp, ['docker', 'tar', 'tgz'], { dockerTarget: 'x/y:z', env })
    const chunks = [...Array(40).keys()].map((i) => Buffer.alloc(100_000, i))
    const guest = new FakeGuest({ chunks }).attach(ctx)
    await exportArchive(ctx, guest)
    await exportChecksums(ctx)
    const all = Buffer.concat(chunks)
    const tar = ctx.staged.find((s) => s.format === 'tar')!
    expect(readFileSync(tar.temp).equals(all)).toBe(true)
    expect(tar.digests?.sha256).toBe(createHash('sha256').update(all).digest('hex'))
    const tgz = ctx.staged.find((s) => s.format === 'tgz')!
    expect(gunzipSync(readFileSync(tgz.temp)).equals(all)).toBe(true)
    expect(tgz.digests?.sha256).toBe(createHash('sha256').update(readFileSync(tgz.temp)).digest('hex'))
    expect(readFileSync(join(tmp, 'docker.stdin')).equals(all)).toBe(true)
  })

  it.skipIf(!isRoot)(
    'a full output directory (real ENOSPC on a 1 MiB tmpfs): one clear error, nothing left',
    async () => {
      const out = tinyTmpfs('vdib-full.')
      writeFileSync(join(out, 'img.tgz'), 'previous build')
      const tmp = tempDir('vdib-exptmp.')
      const ctx = await context(out, tmp, ['tgz'])
      // 16 MiB that gzip cannot shrink (the LCG chunks compress far below 1 MiB with pigz).
      const guest = new FakeGuest({ chunks: (i) => (i < 256 ? randomBytes(64 * 1024) : null) }).attach(ctx)
      const e = await exportArchive(ctx, guest).catch((x: unknown) => x)
      expect(e).toBeInstanceOf(VirtDibError)
      expect((e as Error).message).toBe(
        `out of space on the host: writing ‘${out}/img.tgz’ failed: no space left on device (ENOSPC)`,
      )
      expect((e as VirtDibError).hint).toMatch(/free some space/)
      await ctx.cleanup.run()
      expect(readdirSync(out)).toEqual(['img.tgz'])
      expect(readFileSync(join(out, 'img.tgz'), 'utf8')).toBe('previous build')
    },
  )

  it.skipIf(!findExecutable('docker'))(
    'docker exiting at once (no daemon, the real client): its error, the other outputs removed by cleanup',
    async () => {
      const out = tempDir('vdib-exp.')
      const tmp = tempDir('vdib-exptmp.')
      const env = { ...process.env, DOCKER_HOST: `unix://${tmp}/no-daemon.sock` }
      const ctx = await context(out, tmp, ['docker', 'tar'], { dockerTarget: 'vdib/x:y', env })
      const guest = new FakeGuest({ chunks: randomChunks(64) }).attach(ctx)
      const e = await exportArchive(ctx, guest).catch((x: unknown) => x)
      expect(e).toBeInstanceOf(HostToolError)
      expect((e as Error).message).toMatch(/^external command ‘docker’ exited with error 1: .*(Cannot connect|daemon)/)
      await ctx.cleanup.run()
      expect(readdirSync(out)).toEqual([])
    },
  )

  it('the guest’s tar failing mid-archive: its error, no output made, the staged tar removed by cleanup', async () => {
    const out = tempDir('vdib-exp.')
    const tmp = tempDir('vdib-exptmp.')
    const ctx = await context(out, tmp, ['docker', 'tar', 'tgz'], { dockerTarget: 'x/y:z', env: slowDocker(tmp) })
    const guest = new FakeGuest({ chunks: randomChunks(100_000), failAfter: 50, delayMs: 1 }).attach(ctx)
    const e = await exportArchive(ctx, guest).catch((x: unknown) => x)
    expect(e).toBeInstanceOf(GuestfsError)
    expect((e as Error).message).toMatch(/Cannot stat: Input\/output error/)
    expect(existsSync(join(tmp, 'docker.pid'))).toBe(false)
    await ctx.cleanup.run()
    expect(readdirSync(out)).toEqual([])
  })

  it('an abort while the guest archives: an AbortError, the call cancelled, nothing started after it', async () => {
    const out = tempDir('vdib-exp.')
    const tmp = tempDir('vdib-exptmp.')
    const ac = new AbortController()
    const ctx = await context(out, tmp, ['docker', 'tar'], { dockerTarget: 'x/y:z', env: slowDocker(tmp) }, ac.signal)
    const guest = new FakeGuest({ chunks: randomChunks(100_000), delayMs: 2 }).attach(ctx)
    setTimeout(() => ac.abort(), 200)
    const e = await exportArchive(ctx, guest).catch((x: unknown) => x)
    expect((e as Error).name).toBe('AbortError')
    expect(await guest.transfers[0]!.outcome).toBe('cancelled')
    expect(existsSync(join(tmp, 'docker.pid'))).toBe(false)
    await ctx.cleanup.run()
    expect(readdirSync(out)).toEqual([])
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

describe('extracting $NAME.d through the export drive and the host tar', () => {
  /** The fake guest writes $NAME.d's archive to a drive file in the workspace. */
  const onDrive = (ctx: BuildContext, guest: FakeGuest): string =>
    (guest.exportDrive = join(ctx.workspace, 'export.raw'))

  it('happy path: the files land in the staged directory', async () => {
    const out = tempDir('vdib-exd.')
    const ctx = await context(out, tempDir('vdib-exdtmp.'), ['tar'])
    const guest = new FakeGuest({ chunks: chunked(tarball({ 'manifest.txt': 'elements: a b\n' })) }).attach(ctx)
    expect(await exportExtraData(ctx, onDrive(ctx, guest))).toBe(join(out, 'img.d'))
    expect(readFileSync(join(ctx.staged[0]!.temp, 'manifest.txt'), 'utf8')).toBe('elements: a b\n')
  })

  it('tar refusing the archive (it is not a tar): one line naming $NAME.d, no tar left, nothing left', async () => {
    const out = tempDir('vdib-exd.')
    const ctx = await context(out, tempDir('vdib-exdtmp.'), ['tar'])
    const gz = gzipSync(Buffer.alloc(64 * 1024))
    const more = randomChunks(16)
    const guest = new FakeGuest({ chunks: (i) => (i === 0 ? gz : more(i - 1)) }).attach(ctx)
    const e = await exportExtraData(ctx, onDrive(ctx, guest)).catch((x: unknown) => x)
    expect(e).toBeInstanceOf(VirtDibError)
    expect((e as Error).message).toBe(`extracting ‘${out}/img.d’ failed: Archive is compressed. Use -z option`)
    expect(ourTars()).toEqual([])
    await ctx.cleanup.run()
    expect(readdirSync(out)).toEqual([])
  })

  it.skipIf(!isRoot)("tar unable to write (real ENOSPC on a 1 MiB tmpfs): one line with tar's reason", async () => {
    const out = tinyTmpfs('vdib-exdfull.')
    const ctx = await context(out, tempDir('vdib-exdtmp.'), ['tar'])
    const big = Buffer.concat([...Array(48).keys()].map((i) => randomChunks(48)(i)!)) // 3 MiB
    const guest = new FakeGuest({ chunks: chunked(tarball({ big, small: 'x' })) }).attach(ctx)
    const e = await exportExtraData(ctx, onDrive(ctx, guest)).catch((x: unknown) => x)
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

  it('an abort (SIGINT) while the guest archives: AbortError, no host tar started, the staged directory removed', async () => {
    const out = tempDir('vdib-exd.')
    const ac = new AbortController()
    const ctx = await context(out, tempDir('vdib-exdtmp.'), ['tar'], {}, ac.signal)
    const guest = new FakeGuest({ chunks: () => Buffer.alloc(512), delayMs: 20 }).attach(ctx)
    setTimeout(() => ac.abort(), 300)
    const e = await exportExtraData(ctx, onDrive(ctx, guest)).catch((x: unknown) => x)
    expect((e as Error).name).toBe('AbortError')
    expect(await guest.transfers[0]!.outcome).toBe('cancelled')
    expect(ourTars()).toEqual([])
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
