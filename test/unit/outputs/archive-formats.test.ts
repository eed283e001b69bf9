// The archive formats with their real tools on a small image root archived by GNU tar (as the guest
// does): tgz (pigz, and zlib without it), squashfs (tar2sqfs, less ./dev/'s contents), docker (a
// fake client); a full output disk gives the one-line out-of-space error; nothing hangs.
import { execFileSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { appendFileSync, chmodSync, copyFileSync, lstatSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'

import type { BuildContext, StagedFile } from '../../../src/engine/context.js'
import { HostToolError, PrerequisiteError, VirtDibError } from '../../../src/errors.js'
import { findExecutable } from '../../../src/host/which.js'
import { docker } from '../../../src/outputs/docker.js'
import type { OutputFormatName } from '../../../src/outputs/registry.js'
import { squashfs } from '../../../src/outputs/squashfs.js'
import { archiveFile } from '../../../src/outputs/stream.js'
import { tar } from '../../../src/outputs/tar.js'
import { gzipArchive, tgz } from '../../../src/outputs/tgz.js'
import type { ArchiveFile, OutputContext } from '../../../src/outputs/types.js'
import { openExportContext } from '../../helpers/fake-guest.js'
import { tempDir } from '../../helpers/temp.js'
import { guestTar, isRoot, makeTree } from './archive-tree.js'

const hasPigz = findExecutable('pigz') !== undefined
const hasTar2sqfs = findExecutable('tar2sqfs') !== undefined
if (!hasPigz) console.warn('archive-formats.test: no pigz, its cases are skipped')
if (!hasTar2sqfs) console.warn('archive-formats.test: no tar2sqfs, the squashfs cases are skipped')

const contexts: BuildContext[] = []
const mounts: string[] = []
afterEach(async () => {
  for (const c of contexts.splice(0)) await c.cleanup.run()
})
afterAll(() => {
  for (const m of mounts.splice(0)) execFileSync('umount', ['-l', m])
})

/** A 1 MiB tmpfs (root only): real ENOSPC from the kernel. */
function tinyTmpfs(): string {
  const d = tempDir('vdib-full.')
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1M', 'tmpfs', d])
  mounts.push(d)
  return d
}

/** An output context over a real BuildContext: its file sinks (hashing, the ENOSPC message) and staging. */
async function outputs(outDir: string, formats: OutputFormatName[], options: Record<string, unknown> = {}) {
  const ctx = await openExportContext(outDir, tempDir('vdib-fmttmp.'), formats, options)
  contexts.push(ctx)
  const files: StagedFile[] = []
  const find = (target: string) => files.find((f) => f.final === target || f.temp === target)
  const octx: OutputContext = {
    settings: ctx.plan.outputSettings,
    env: ctx.plan.env,
    signal: ctx.signal,
    emit: () => undefined,
    fileSink: (target) => ctx.fileSink(find(target)!),
    finalPath: (target) => find(target)?.final ?? target,
  }
  const stage = (name: string, format: string, temp?: string): StagedFile => {
    const s = ctx.stage(join(outDir, name), format)
    if (temp) s.temp = temp
    files.push(s)
    return s
  }
  return { octx, stage }
}

describe.skipIf(!isRoot)('the archive formats', () => {
  const dir = tempDir('vdib-formats.')
  const root = join(dir, 'root')
  /** The archive as on the export drive: followed by bytes that are not the archive's. */
  const drive = join(dir, 'export.img')
  let archive: ArchiveFile
  let bytes: Buffer
  beforeAll(() => {
    makeTree(root)
    guestTar(root, join(dir, 'a.tar'))
    bytes = readFileSync(join(dir, 'a.tar'))
    copyFileSync(join(dir, 'a.tar'), drive)
    appendFileSync(drive, Buffer.alloc(100_000, 0xa5))
    archive = archiveFile(drive, bytes.length)
  })

  it('tar is the archive itself: nothing to make', () => {
    expect(tar.source).toBe('archive')
    expect(tar.isArchive).toBe(true)
    expect('fromArchive' in tar).toBe(false)
    expect([tgz, squashfs, docker].map((f) => [f.source, f.isArchive])).toEqual([
      ['archive', false],
      ['archive', false],
      ['archive', false],
    ])
  })

  it('archiveFile reads the first `bytes` bytes only, afresh each time', async () => {
    for (let i = 0; i < 2; i++) {
      const parts: Buffer[] = []
      for await (const b of archive.read()) parts.push(b as Buffer)
      expect(Buffer.concat(parts).equals(bytes)).toBe(true)
    }
  })

  for (const [tool, pigz] of [
    ['pigz', findExecutable('pigz')],
    ['zlib', undefined],
  ] as const) {
    it.skipIf(tool === 'pigz' && !hasPigz)(
      `tgz with ${tool}: gunzip gives back the archive, hashed on the way`,
      async () => {
        const out = tempDir('vdib-tgz.')
        const { octx, stage } = await outputs(out, ['tgz'])
        const s = stage('img.tgz', 'tgz')
        await gzipArchive(octx, archive, s.temp, pigz)
        const gz = readFileSync(s.temp)
        expect(gunzipSync(gz).equals(bytes)).toBe(true)
        expect(s.digests?.sha256).toBe(createHash('sha256').update(gz).digest('hex'))
        expect(gz.subarray(4, 8).readUInt32LE()).toBe(0) // -n: no time stamp, as zlib
      },
    )

    it.skipIf(tool === 'pigz' && !hasPigz)(
      `tgz with ${tool} onto /dev/full: the one-line out-of-space error`,
      async () => {
        const out = tempDir('vdib-tgz.')
        const { octx, stage } = await outputs(out, ['tgz'])
        const s = stage('img.tgz', 'tgz', '/dev/full')
        const e = await gzipArchive(octx, archive, s.temp, pigz).catch((x: unknown) => x)
        expect(e).toBeInstanceOf(VirtDibError)
        expect((e as Error).message).toBe(
          `out of space on the host: writing ‘${out}/img.tgz’ failed: no space left on device (ENOSPC)`,
        )
        expect((e as VirtDibError).hint).toMatch(/free some space/)
      },
    )
  }

  it('tgz as the format runs (pigz when installed) and names the staged file', async () => {
    const out = tempDir('vdib-tgz.')
    const { octx, stage } = await outputs(out, ['tgz'])
    const s = stage('img.tgz', 'tgz')
    await tgz.fromArchive!(octx, archive, s.temp)
    expect(gunzipSync(readFileSync(s.temp)).equals(bytes)).toBe(true)
  })

  it('tgz on a full file system (a 1 MiB tmpfs): the one-line out-of-space error, nothing left running', async () => {
    const out = tinyTmpfs()
    const big = join(dir, 'big')
    mkdirSync(big)
    writeFileSync(join(big, 'random'), randomBytes(3_000_000))
    guestTar(big, join(dir, 'big.tar'))
    const a = archiveFile(join(dir, 'big.tar'), lstatSync(join(dir, 'big.tar')).size)
    for (const pigz of [findExecutable('pigz'), undefined]) {
      const { octx, stage } = await outputs(out, ['tgz'])
      const s = stage('img.tgz', 'tgz')
      const e = await gzipArchive(octx, a, s.temp, pigz).catch((x: unknown) => x)
      expect((e as Error).message).toBe(
        `out of space on the host: writing ‘${out}/img.tgz’ failed: no space left on device (ENOSPC)`,
      )
      await contexts.pop()!.cleanup.run()
    }
    expect(execFileSync('ls', ['-A', out], { encoding: 'utf8' })).toBe('')
  })

  describe.skipIf(!hasTar2sqfs)('squashfs (tar2sqfs)', () => {
    let image: string
    let listing: string
    beforeAll(async () => {
      const out = tempDir('vdib-sqfs.')
      const { octx, stage } = await outputs(out, ['squashfs'])
      const s = stage('img.squash', 'squashfs')
      await squashfs.fromArchive!(octx, archive, s.temp)
      image = join(dir, 'img.squash')
      copyFileSync(s.temp, image)
      listing = execFileSync('unsquashfs', ['-lln', image], { encoding: 'utf8' })
    })

    it('lists the tree without ./dev/ contents, with ./dev itself and the device nodes elsewhere', () => {
      const lines = listing.split('\n').filter((l) => l.includes('squashfs-root'))
      const names = lines.map((l) => l.replace(/^.* squashfs-root/, '.').replace(/ -> .*$/, ''))
      expect(names).toContain('./dev')
      expect(names.filter((n) => n.startsWith('./dev/'))).toEqual([])
      expect(lines.find((l) => l.endsWith('squashfs-root/usr/dev/x'))).toMatch(/^crw-r--r-- 0\/0 +1, +5 /)
      expect(lines.find((l) => l.endsWith('squashfs-root/etc/blk'))).toMatch(/^brw-r--r-- 0\/0 +7, +0 /)
      for (const n of ['./usr/dev/y', './etc/a', './etc/hl', './var/sparse', './var/holes', './var/long-symlink'])
        expect(names).toContain(n)
    })

    it('keeps the hard link (one inode), the xattr, the sparse file’s bytes', () => {
      const x = join(tempDir('vdib-unsq.'), 'x')
      execFileSync('unsquashfs', ['-q', '-x', '-d', x, image], { stdio: 'ignore' })
      expect(lstatSync(join(x, 'etc/a')).ino).toBe(lstatSync(join(x, 'etc/hl')).ino)
      expect(lstatSync(join(x, 'etc/a')).nlink).toBe(2)
      expect(
        execFileSync('getfattr', ['--absolute-names', '--only-values', '-n', 'user.vdib', join(x, 'etc/a')], {
          encoding: 'utf8',
        }),
      ).toBe('kept')
      expect(readFileSync(join(x, 'var/sparse')).equals(readFileSync(join(root, 'var/sparse')))).toBe(true)
      expect(readFileSync(join(x, 'var/holes')).equals(readFileSync(join(root, 'var/holes')))).toBe(true)
    })

    it('onto a full device (/dev/full’s twin): the one-line out-of-space error naming the final file', async () => {
      const out = tempDir('vdib-sqfs.')
      // Not /dev/full itself: tar2sqfs removes its output after some failed writes.
      const full = join(tempDir('vdib-dev.'), 'full')
      execFileSync('mknod', [full, 'c', '1', '7'])
      const { octx, stage } = await outputs(out, ['squashfs'])
      const s = stage('img.squash', 'squashfs', full)
      const e = await squashfs.fromArchive!(octx, archive, s.temp).catch((x: unknown) => x)
      expect((e as Error).message).toBe(
        `out of space on the host: writing ‘${out}/img.squash’ failed: no space left on device (ENOSPC)`,
      )
    })

    it('on a full file system (a 1 MiB tmpfs): the same error', async () => {
      const out = tinyTmpfs()
      const big = join(dir, 'big2')
      mkdirSync(big)
      writeFileSync(join(big, 'random'), randomBytes(2_000_000))
      guestTar(big, join(dir, 'big2.tar'))
      const a = archiveFile(join(dir, 'big2.tar'), lstatSync(join(dir, 'big2.tar')).size)
      const { octx, stage } = await outputs(out, ['squashfs'])
      const s = stage('img.squash', 'squashfs')
      const e = await squashfs.fromArchive!(octx, a, s.temp).catch((x: unknown) => x)
      expect((e as Error).message).toBe(
        `out of space on the host: writing ‘${out}/img.squash’ failed: no space left on device (ENOSPC)`,
      )
    })

    it('a corrupt archive: the filter’s error, tar2sqfs stopped', async () => {
      const bad = join(dir, 'bad.tar')
      const b = Buffer.from(bytes)
      b[512 * 3] = b[512 * 3]! ^ 0xff // inside the second entry's headers
      writeFileSync(bad, b)
      const out = tempDir('vdib-sqfs.')
      const { octx, stage } = await outputs(out, ['squashfs'])
      const s = stage('img.squash', 'squashfs')
      const t0 = Date.now()
      const e = await squashfs.fromArchive!(octx, archiveFile(bad, b.length), s.temp).catch((x: unknown) => x)
      expect((e as Error).message).toMatch(
        /^the image archive cannot be read at byte \d+: a header fails its checksum$/,
      )
      expect(Date.now() - t0).toBeLessThan(5000)
    })

    it('checkHost: a PrerequisiteError without tar2sqfs', () => {
      const path = process.env['PATH']
      process.env['PATH'] = tempDir('vdib-nopath.')
      try {
        expect(() => squashfs.checkHost!()).toThrow(PrerequisiteError)
        expect(() => squashfs.checkHost!()).toThrow('tar2sqfs needed but not found')
      } finally {
        process.env['PATH'] = path
      }
    })
  })

  describe('docker', () => {
    const fake = join(process.cwd(), 'test/fixtures/bin')

    it('docker import - <target> receives the exact archive bytes', async () => {
      const rec = tempDir('vdib-docker.')
      const env = { ...process.env, PATH: `${fake}:${process.env['PATH']}`, VDIB_FAKE_DOCKER_DIR: rec }
      const { octx } = await outputs(tempDir('vdib-dout.'), ['docker'], { dockerTarget: 'x/y:z', env })
      await docker.fromArchive!(octx, archive, undefined)
      expect(readFileSync(join(rec, 'docker.args'), 'utf8')).toBe('import\n-\nx/y:z\n')
      expect(readFileSync(join(rec, 'docker.stdin')).equals(bytes)).toBe(true)
    })

    it('docker exiting at once without reading: its error, at once', async () => {
      const bin = tempDir('vdib-dbin.')
      writeFileSync(join(bin, 'docker'), '#!/bin/sh\necho "Cannot connect to the Docker daemon" >&2\nexit 1\n')
      chmodSync(join(bin, 'docker'), 0o755)
      const env = { ...process.env, PATH: `${bin}:${process.env['PATH']}` }
      const { octx } = await outputs(tempDir('vdib-dout.'), ['docker'], { dockerTarget: 'x/y:z', env })
      const e = await docker.fromArchive!(octx, archive, undefined).catch((x: unknown) => x)
      expect(e).toBeInstanceOf(HostToolError)
      expect((e as Error).message).toMatch(/Cannot connect to the Docker daemon/)
    })
  })
})
