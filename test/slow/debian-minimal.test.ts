// The real thing (opt-in, slow under TCG): Debian's own debian-minimal element (bookworm, with
// base, network on) builds a tar and a qcow2 whose root has /etc/debian_version and a working apt.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { build, type BuildEvent, type BuildResult } from '../../src/index.js'
import { createHandle } from '../helpers/appliance.js'
import { DIB_ELEMENTS, DIB_LIB } from '../helpers/cli.js'

/** The Debian mirror this machine uses (the appliance reaches the same one). */
function hostMirror(): string {
  try {
    const sources = execFileSync(
      'sh',
      ['-c', 'cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null'],
      { encoding: 'utf8' },
    )
    const m = /(https?:\/\/[^\s]+\/debian)\b(?!-)/.exec(sources)
    if (m) return m[1]!
  } catch {
    // fall through
  }
  return 'http://deb.debian.org/debian'
}

describe('debian-minimal (bookworm) with base', () => {
  const out = mkdtempSync(join(tmpdir(), 'vdib-debian.'))
  const name = join(out, 'debian')
  const events: BuildEvent[] = []
  let result: BuildResult
  let seconds = 0

  beforeAll(async () => {
    const mirror = hostMirror()
    const t = Date.now()
    result = await build(
      {
        elements: ['debian-minimal'],
        libPath: DIB_LIB,
        elementPaths: [DIB_ELEMENTS],
        envvars: [
          { name: 'DIB_RELEASE', value: 'bookworm' },
          { name: 'DIB_DISTRIBUTION_MIRROR', value: mirror },
          { name: 'DIB_DEBIAN_SECURITY_MIRROR', value: `${mirror}-security` },
          { name: 'DIB_DEBIAN_SECURITY_SUBPATH', value: '-security' },
        ],
        memsize: 2048,
        smp: 2,
        size: 3 * 1024 ** 3,
        formats: ['tar', 'qcow2'],
        name,
      },
      { onEvent: (e) => events.push(e) },
    )
    seconds = (Date.now() - t) / 1000
    console.log(`debian-minimal build: ${seconds.toFixed(0)} s`)
  }, 90 * 60_000)
  afterAll(() => rmSync(out, { recursive: true, force: true }))

  it('writes a tar and a qcow2', () => {
    expect(result.outputs.map((o) => o.format).sort()).toEqual(['qcow2', 'tar'])
    expect(seconds).toBeGreaterThan(0)
  })

  it('has a Debian root with /etc/debian_version and apt', () => {
    const v = execFileSync('tar', ['-xOf', `${name}.tar`, './etc/debian_version'], { encoding: 'utf8' })
    expect(v).toMatch(/^12\./)
    const list = execFileSync('tar', ['-tf', `${name}.tar`], { encoding: 'utf8' })
    expect(list).toMatch(/\.\/usr\/bin\/apt\n/)
  })

  it(
    'runs apt inside the image (opened in a second appliance)',
    async () => {
      const g = await createHandle()
      try {
        await g.addDrive(`${name}.qcow2`, { format: 'qcow2', readonly: true })
        await g.launch()
        const dev = Object.keys(await g.listFilesystems())[0]!
        await g.mountRo(dev, '/')
        expect(await g.sh('apt --version')).toMatch(/^apt 2\./)
      } finally {
        await g.close()
      }
    },
    10 * 60_000,
  )
})
