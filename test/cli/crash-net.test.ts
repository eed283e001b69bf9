// The CLI's last line of defence: a bug that leaves a rejection unhandled or throws from a
// callback during a build (injected by a preloaded module) aborts the build, lets the cleanup
// run, and ends with one `internal error` line: no Node stack trace, nothing left behind, and
// no appliance launched (the build is stopped before launch; the hypervisor leaves a marker).
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { DIB_LIB, root, runCliAsync } from '../helpers/cli.js'
import { markerHypervisor } from '../helpers/sandbox.js'

const base = mkdtempSync(join(tmpdir(), 'vdib-crash.'))
afterAll(() => rmSync(base, { recursive: true, force: true }))
const hv = markerHypervisor(base)
const preload = join(root, 'test', 'fixtures', 'scripts', 'inject-crash.mjs')

describe.concurrent('an unhandled error during a build', () => {
  for (const [kind, message] of [
    ['rejection', 'injected rejection'],
    ['throw', 'injected throw'],
  ] as const) {
    it(`(${kind}) aborts it: cleanup runs, one internal-error line, exit 1, nothing left`, async () => {
      const out = join(base, kind, 'out')
      const tmp = join(base, kind, 'tmp')
      mkdirSync(out, { recursive: true })
      mkdirSync(tmp, { recursive: true })
      writeFileSync(join(out, 'img.qcow2'), 'an older build')
      const marker = join(base, kind, 'launched')
      // prettier-ignore
      const r = await runCliAsync(['-B', DIB_LIB, '-p', join(root, 'examples', 'elements'), '--skip-base',
        '--python', '/usr/bin/python3', '--name', join(out, 'img'), 'demo-os'], {
        cwd: out,
        env: {
          ...process.env,
          TMPDIR: tmp,
          LIBGUESTFS_HV: hv,
          VDIB_TEST_MARKER: marker,
          NODE_OPTIONS: `--import=${preload}`,
          VDIB_CRASH_AT: 'Carried environment variables',
          VDIB_CRASH_KIND: kind,
        },
      })
      expect(r.stdout).toContain('Carried environment variables') // the fault was injected
      expect(r.stderr).toBe(`virt-dib: error: internal error: ${message}\n`)
      expect(r.status).toBe(1)
      expect(existsSync(marker), 'an appliance launch was attempted').toBe(false)
      expect(readdirSync(tmp), 'the workspace was left').toEqual([])
      expect(readdirSync(out)).toEqual(['img.qcow2'])
    })
  }
})
