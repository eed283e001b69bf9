// Output faults for real, end to end (opt-in tier): the output directory filling up while the
// tar stream runs, and docker import failing at once (no daemon). Each: exit 1, one error line
// plus one hint at most, and the invariants (no qemu, no temp dir, older outputs untouched).
import { execFileSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { findExecutable } from '../../src/host/which.js'
import { DIB_LIB, root, runCliToEnd as virtDib } from '../helpers/cli.js'
import { expectNothingLeft, snapshot } from '../helpers/invariants.js'
import { tempDir } from '../helpers/temp.js'

const isRoot = process.getuid?.() === 0
const base = ['-B', DIB_LIB, '-p', join(root, 'examples', 'elements'), '--skip-base', '--size', '256M']

/** The lines virt-dib printed as its own (the error and its hint). */
function ownLines(err: string): string[] {
  return err.split('\n').filter((l) => l.startsWith('virt-dib: '))
}

describe('output faults', () => {
  it.skipIf(!isRoot)(
    `the output directory filling up during the tar stream: out of space on the host, naming the file${isRoot ? '' : ' (skipped: mounting a tmpfs needs root)'}`,
    async () => {
      const out = tempDir('vdib-outfull.')
      const tmp = tempDir('vdib-outfulltmp.')
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=6M', 'tmpfs', out])
      try {
        writeFileSync(join(out, 'img.tar'), 'a previous build')
        const before = snapshot(out, tmp)
        // prettier-ignore
        const r = await virtDib([...base, '--formats', 'tar,tgz', '--name', join(out, 'img'), 'demo-os', 'demo-app'],
          { ...process.env, TMPDIR: tmp })
        expect(r.status).toBe(1)
        const lines = ownLines(r.err)
        expect(lines[0]).toMatch(
          /^virt-dib: error: out of space on the host: (writing ‘.*\/img\.(tar|tgz)’ failed: no space left on device \(ENOSPC\)|the file system of .* is full)$/,
        )
        expect(lines.length).toBeLessThanOrEqual(2)
        expect(r.err).not.toMatch(/\n\s+at /) // no stack trace
        await expectNothingLeft(before)
      } finally {
        execFileSync('umount', [out])
      }
    },
    15 * 60_000,
  )

  it.skipIf(!findExecutable('docker'))(
    `docker import failing at once (no daemon at DOCKER_HOST): docker's reason, the tarball not kept${findExecutable('docker') ? '' : ' (skipped: no docker client)'}`,
    async () => {
      const out = tempDir('vdib-nodaemon.')
      const tmp = tempDir('vdib-nodaemontmp.')
      writeFileSync(join(out, 'img.tar'), 'a previous build')
      const before = snapshot(out, tmp)
      // prettier-ignore
      const r = await virtDib([...base, '--formats', 'tar,docker', '--docker-target', 'vdib/nodaemon:test',
        '--name', join(out, 'img'), 'demo-os'], { ...process.env, TMPDIR: tmp, DOCKER_HOST: `unix://${tmp}/none.sock` })
      expect(r.status).toBe(1)
      const lines = ownLines(r.err)
      expect(lines[0]).toMatch(
        /^virt-dib: error: external command ‘docker’ exited with error 1: .*(Cannot connect|daemon)/,
      )
      expect(lines.length).toBeLessThanOrEqual(2)
      await expectNothingLeft(before)
    },
    15 * 60_000,
  )
})
