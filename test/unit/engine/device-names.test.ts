// libguestfs reads /dev/sdX in API calls as the Xth drive added, while the appliance kernel may
// enumerate drives in another order: device arguments of API calls must be drive labels
// (/dev/disk/guestfs/…, not translated); kernel names are only used inside appliance shell scripts.
import { readdirSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'

import { describe, expect, it } from 'vitest'

const src = resolve(import.meta.dirname, '..', '..', '..', 'src')

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  )
}

describe('device names at the libguestfs API', () => {
  it('only drive labels are passed to device-taking calls outside src/guestfs', () => {
    const calls = /\bg\.(mount|mkfs|mountRo|mountOptions|partDisk|pvcreate|blockdevRereadpt)\(([^)]*)\)/g
    const offenders: string[] = []
    for (const file of sources(src).filter((f) => !f.includes(`${join('src', 'guestfs')}`))) {
      for (const m of readFileSync(file, 'utf8').matchAll(calls)) {
        if (!/\bDRIVE\.\w+/.test(m[2]!)) offenders.push(`${file}: ${m[0]}`)
      }
    }
    expect(offenders).toEqual([])
  })
})
