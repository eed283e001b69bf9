// qemu's snapshot overlays left by a qemu killed while it booted: removed when nobody holds them.
import { closeSync, existsSync, openSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { listQemuTemps, qemuTempDir, removeOrphanQemuTemps } from '../../../src/host/qemu-temps.js'
import { tempDir } from '../../helpers/temp.js'

describe('qemu temporaries', () => {
  it('removes the new ones nobody holds open, keeps the older and the open ones', () => {
    const d = tempDir('vdib-qtmp.')
    writeFileSync(join(d, 'vl.OLD123'), '')
    writeFileSync(join(d, 'other.txt'), '')
    const before = new Set(listQemuTemps(d))
    expect([...before]).toEqual(['vl.OLD123'])
    writeFileSync(join(d, 'vl.Orphan'), '')
    writeFileSync(join(d, 'vl.InUse1'), '')
    const fd = openSync(join(d, 'vl.InUse1'), 'r')
    try {
      expect(removeOrphanQemuTemps(d, before)).toEqual([join(d, 'vl.Orphan')])
    } finally {
      closeSync(fd)
    }
    expect(existsSync(join(d, 'vl.OLD123'))).toBe(true)
    expect(existsSync(join(d, 'vl.InUse1'))).toBe(true)
    expect(existsSync(join(d, 'other.txt'))).toBe(true)
  })

  it('is qemu’s TMPDIR, else /var/tmp', () => {
    expect(qemuTempDir({ TMPDIR: '/x' })).toBe('/x')
    expect(qemuTempDir({})).toBe('/var/tmp')
  })
})
