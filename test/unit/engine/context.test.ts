// BuildContext pieces the export steps rely on: the host directories the space watch covers,
// and file sinks whose failures are named, complete and never unhandled.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { VirtDibError } from '../../../src/errors.js'
import type { OutputFormatName } from '../../../src/api/options.js'
import { openExportContext } from '../../helpers/fake-guest.js'
import { tempDir } from '../../helpers/temp.js'

describe('BuildContext', () => {
  for (const formats of [['tar'], ['tgz'], ['squashfs'], ['qcow2'], ['docker'], ['raw']] as OutputFormatName[][]) {
    it(`the space watch covers the output directory for ${formats[0]} (the disk is elsewhere unless raw)`, async () => {
      const out = tempDir('vdib-ctx.')
      const ctx = await openExportContext(out, tempDir('vdib-ctxtmp.'), formats, { dockerTarget: 'a/b' })
      const disk = formats[0] === 'raw' ? join(out, '.img.raw.tmp') : join(ctx.workspace, 'image.raw')
      const dirs = ctx.hostWriteDirs(disk, '/var/tmp')
      expect(dirs).toContain(out)
      expect(dirs).toContain(ctx.workspace)
      expect(dirs).toContain('/var/tmp')
      expect(new Set(dirs).size).toBe(dirs.length)
      await ctx.cleanup.run()
    })
  }

  it('a file sink hashes what it writes and settles once the file is closed', async () => {
    const out = tempDir('vdib-ctx.')
    const ctx = await openExportContext(out, tempDir('vdib-ctxtmp.'), ['tar'])
    const file = ctx.stage(join(out, 'img.tar'), 'tar')
    const sink = ctx.fileSink(file)
    sink.end(Buffer.from('hello'))
    await sink.done
    expect(readFileSync(file.temp, 'utf8')).toBe('hello')
    expect(file.digests?.md5).toBe('5d41402abc4b2a76b9719d911017c592')
    await ctx.cleanup.run()
  })

  for (const checksum of [true, false]) {
    it(`a file sink destroyed before its end rejects (checksums ${checksum ? 'on' : 'off'}), and a write error names the file`, async () => {
      const out = tempDir('vdib-ctx.')
      const ctx = await openExportContext(out, tempDir('vdib-ctxtmp.'), ['tar'], { checksum })
      const stopped = ctx.fileSink(ctx.stage(join(out, 'img.tar'), 'tar'))
      stopped.write(Buffer.alloc(10))
      stopped.destroy()
      await expect(stopped.done).rejects.toThrow(/^writing ‘.*img\.tar’ failed: /)
      const full = ctx.fileSink({ temp: '/dev/full', final: join(out, 'img.tgz') })
      full.write(Buffer.alloc(1024 * 1024))
      const e = await full.done.catch((x: unknown) => x)
      expect(e).toBeInstanceOf(VirtDibError)
      expect((e as Error).message).toBe(
        `out of space on the host: writing ‘${out}/img.tgz’ failed: no space left on device (ENOSPC)`,
      )
      // A failed sink is destroyed as a whole: writers get no back-pressure wait that never ends.
      expect(full.destroyed).toBe(true)
      // Never awaited: must not be an unhandled rejection either.
      ctx.fileSink({ temp: join(out, 'no-such-dir', 'x'), final: join(out, 'x') })
      await new Promise((r) => setTimeout(r, 50))
      await ctx.cleanup.run()
    })
  }
})

describe('BuildContext bugs reported once', () => {
  it('using the appliance before it runs is a bug without a doubled "internal error:" prefix (the CLI adds one)', async () => {
    const ctx = await openExportContext(tempDir('vdib-ctx.'), tempDir('vdib-ctxtmp.'), ['tar'])
    expect(() => ctx.g).toThrow(/^the appliance is not running$/)
    await ctx.cleanup.run()
  })
})
