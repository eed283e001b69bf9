// --drive: a persistent helper drive holds HOME, the image cache and the build logs, so a second
// build finds what the first cached (the man page's promise).
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { build } from '../../src/index.js'
import { DIB_LIB, root } from '../helpers/cli.js'

describe('--drive persists the cache and logs across builds', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vdib-drive.'))
  const drive = join(dir, 'helper.img')
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it(
    'the second build sees the first one’s cache; logs are on the drive',
    async () => {
      execFileSync('truncate', ['-s', '512M', drive])
      execFileSync('/usr/sbin/mkfs.ext4', ['-q', '-F', drive])
      const opts = (n: string) => ({
        elements: ['demo-os', 'cache-probe'],
        libPath: DIB_LIB,
        elementPaths: [join(root, 'examples', 'elements'), join(root, 'test', 'fixtures', 'elements')],
        skipBase: true,
        size: 256 * 1024 ** 2,
        formats: ['tar' as const],
        name: join(dir, n),
        drive,
        driveFormat: 'raw' as const,
      })
      await build(opts('first'))
      await build(opts('second'))
      const hit = execFileSync('tar', ['-xOf', join(dir, 'second.tar'), './etc/cache-hit'], { encoding: 'utf8' })
      expect(hit).toBe('first build first\nhome=/sysroot/tmp/in_target.aux/perm/home\n')
      expect(() =>
        execFileSync('tar', ['-xOf', join(dir, 'first.tar'), './etc/cache-hit'], { stdio: 'ignore' }),
      ).toThrow()
      const logs = execFileSync('/usr/sbin/debugfs', ['-R', 'ls -l /logs', drive], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      })
      expect(logs.match(/virt-dib-\d{8}-\d{6}\.log/g)?.length).toBe(2)
      const cache = execFileSync(
        '/usr/sbin/debugfs',
        ['-R', 'cat /home/.cache/image-create/cache-probe.stamp', drive],
        {
          encoding: 'utf8',
          stdio: ['ignore', 'pipe', 'ignore'],
        },
      )
      expect(cache).toMatch(/^first build first/)
    },
    30 * 60_000,
  )
})
