// The full fault matrix (opt-in): a failing script in every phase, the image disk filling up, the
// host output directory filling up, a broken helper drive, and repeated --smp 2 builds for the
// device-settling race of the original. After each: the exit code and message the case calls
// for, and the invariants (no qemu, no temp dir, earlier files untouched, no output left).
import { execFileSync, spawn } from 'node:child_process'
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { DIB_LIB, root, runCliToEnd as virtDib } from '../helpers/cli.js'
import { expectNothingLeft, snapshot } from '../helpers/invariants.js'
import { DIB_PHASE_ORDER } from '../helpers/phases.js'
import { waitFor } from '../helpers/processes.js'
import { tempDir } from '../helpers/temp.js'

const elements = ['-p', join(root, 'examples', 'elements'), '-p', join(root, 'test', 'fixtures', 'elements')]
const PHASES = DIB_PHASE_ORDER

/** Runs `fn` with a fresh tmpfs of `size` mounted at `dir`; always unmounts. */
async function withTmpfs(dir: string, size: string, fn: () => Promise<void>): Promise<void> {
  mkdirSync(dir)
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir])
  try {
    writeFileSync(join(dir, 'keep.txt'), 'was here before')
    await fn()
  } finally {
    execFileSync('umount', [dir])
  }
}

describe('fault matrix', () => {
  const out = tempDir('vdib-faults.')
  const tmp = tempDir('vdib-faultstmp.')
  const env = { ...process.env, TMPDIR: tmp }
  const base = ['-B', DIB_LIB, ...elements, '--skip-base', '--size', '256M']

  for (const phase of PHASES) {
    it(
      `a failing script in ${phase}`,
      async () => {
        const name = join(out, phase.replace('.d', ''))
        writeFileSync(`${name}.qcow2`, 'a previous build')
        const before = snapshot(out, tmp)
        // prettier-ignore
        const r = await virtDib([...base, '--formats', 'qcow2,tar', '--envvar', `FAIL_AT=${phase}`,
          '--name', name, 'demo-os', 'fail-at'], env)
        // compat: the original exits with a failing extra-data.d script's own status, else 1.
        expect(r.status).toBe(phase === 'extra-data.d' ? 3 : 1)
        expect(r.out + r.err).toContain(`fail-at: failing on purpose in ${phase}`)
        expect(r.err).toMatch(
          new RegExp(`virt-dib: error: ${phase.replace('.', '\\.')}/50-fail-at failed with exit status 3`),
        )
        await expectNothingLeft(before)
      },
      10 * 60_000,
    )
  }

  it(
    'a --size too small for the file system (its journal): refused before launch, naming both sizes',
    async () => {
      const before = snapshot(out, tmp)
      const r = await virtDib([...base.slice(0, -1), '64M', '--name', join(out, 'tiny'), 'demo-os'], env)
      expect(r.status).toBe(1)
      expect(r.err).toMatch(
        /^virt-dib: error: the ext4 file system ‘mkfs_root’ needs at least 130\.\dM but its disk is 64M \(--size 64M\)$/m,
      )
      expect(r.err).not.toMatch(/libguestfs error/)
      expect(r.out).not.toMatch(/Running:/)
      await expectNothingLeft(before)
    },
    5 * 60_000,
  )

  it(
    'the image disk filling up: "out of space in the image", naming the phase and script',
    async () => {
      const before = snapshot(out, tmp)
      // The smallest disk diskimage-builder's ext4 root (a 64M journal) can be made on; the
      // element writes until it is full.
      // prettier-ignore
      const r = await virtDib([...base.slice(0, -1), '160M', '--formats', 'qcow2', '--envvar', 'FILL_AT=install.d',
        '--name', join(out, 'full'), 'demo-os', 'fail-at'], env)
      expect(r.status).toBe(1)
      expect(r.err).toMatch(
        /virt-dib: error: out of space in the image: install\.d\/50-fail-at failed with exit status 1/,
      )
      expect(r.err).toMatch(/--size/)
      await expectNothingLeft(before)
    },
    15 * 60_000,
  )

  it(
    'a host directory too small for the disk: refused before anything is launched',
    async () => {
      const small = join(out, 'small')
      await withTmpfs(small, '48m', async () => {
        const before = snapshot(small, tmp)
        const r = await virtDib([...base, '--formats', 'raw', '--name', join(small, 'img'), 'demo-os'], env)
        expect(r.status).toBe(1)
        expect(r.err).toMatch(/virt-dib: error: not enough space in .*small for the 256M disk image: \d+(\.\d)?M free/)
        expect(r.out).not.toMatch(/Running:/)
        await expectNothingLeft(before)
      })
    },
    10 * 60_000,
  )

  it(
    'the host output directory filling up during the build: stopped, saying which file system is full',
    async () => {
      const fills = join(out, 'fills')
      await withTmpfs(fills, '300m', async () => {
        const before = snapshot(fills, tmp)
        // prettier-ignore
        const child = spawn(process.execPath, [join(root, 'bin', 'virt-dib'), ...base, '--formats', 'raw',
          '--envvar', 'SLEEP_AT=install.d', '--name', join(fills, 'img'), 'demo-os', 'fail-at'],
          { env, stdio: ['ignore', 'pipe', 'pipe'] })
        let output = ''
        let err = ''
        child.stdout.on('data', (b: Buffer) => (output += b.toString()))
        child.stderr.on('data', (b: Buffer) => (err += b.toString()))
        const exited = new Promise<number | null>((r) => child.on('close', r))
        expect(await waitFor(() => output.includes('fail-at: sleeping in install.d'), 5 * 60_000, 100)).toBe(true)
        // Something else on the host takes the space while the guest works.
        const filler = join(fills, 'filler')
        const free = Number(execFileSync('df', ['-B1', '--output=avail', fills], { encoding: 'utf8' }).split('\n')[1])
        execFileSync('fallocate', ['-l', String(free - 1024 * 1024), filler])
        expect(await exited).toBe(1)
        expect(err).toMatch(/virt-dib: error: out of space on the host: the file system of .*fills is full/)
        rmSync(filler)
        await expectNothingLeft(before)
      })
    },
    10 * 60_000,
  )

  it(
    'a broken helper drive (no file system on it): a clear error, the drive untouched',
    async () => {
      const drive = join(out, 'helper.img')
      execFileSync('truncate', ['-s', '64M', drive])
      const before = snapshot(out, tmp)
      // prettier-ignore
      const r = await virtDib([...base, '--formats', 'qcow2', '--drive', drive, '--drive-format', 'raw',
        '--name', join(out, 'drive'), 'demo-os'], env)
      expect(r.status).toBe(1)
      expect(r.err).toMatch(/virt-dib: error: the helper drive .*helper\.img cannot be mounted/)
      await expectNothingLeft(before)
    },
    10 * 60_000,
  )

  it(
    'no device-settling race: five builds in a row with --smp 2 all succeed',
    async () => {
      for (let i = 0; i < 5; i++) {
        const name = join(out, `smp${i}`)
        const r = await virtDib([...base, '--smp', '2', '--formats', 'raw', '--name', name, 'demo-os', 'demo-app'], env)
        expect(r.err).not.toMatch(/mount point is not a directory/)
        expect(r.status, r.err).toBe(0)
        rmSync(`${name}.raw`)
        rmSync(`${name}.d`, { recursive: true, force: true })
      }
      expect(readdirSync(tmp)).toEqual([])
    },
    30 * 60_000,
  )

  afterAll(() => {
    rmSync(out, { recursive: true, force: true })
  })
})
