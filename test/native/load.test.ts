// Which addon file was loaded, and that it is the cmake-js build unless told otherwise.
import { existsSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { join, resolve } from 'node:path'

import { describe, expect, it } from 'vitest'

import { loadAddon } from '../../src/guestfs/native.js'

const root = resolve(import.meta.dirname, '..', '..')

describe('addon loading', () => {
  it('loads the cmake-js build from build/Release by default', () => {
    const { addon, path } = loadAddon()
    if (process.env['VIRT_DIB_ADDON']) return // an explicit build was requested for this run
    expect(path).toBe(join(root, 'build', 'Release', 'virt_dib.node'))
    expect(addon.buildSystem).toBe('cmake-js')
    expect(addon.napiVersion).toBe(8)
    expect(addon.cppExceptions).toBe(true)
  })

  it('the node-gyp fallback build (build-gyp/) loads and has the same calls and settings', () => {
    const gyp = join(root, 'build-gyp', 'Release', 'virt_dib.node')
    if (!existsSync(gyp)) {
      // CI always builds it (npm run build:gyp); locally it is optional.
      expect(process.env['CI']).toBeFalsy()
      return
    }
    const r = spawnSync(
      process.execPath,
      [
        '-e',
        `const a=require(${JSON.stringify(gyp)});console.log(JSON.stringify({b:a.buildSystem,n:a.calls.length,x:a.cppExceptions,v:a.napiVersion}))`,
      ],
      { encoding: 'utf8' },
    )
    expect(r.status).toBe(0)
    const info = JSON.parse(r.stdout) as { b: string; n: number; x: boolean; v: number }
    expect(info).toEqual({ b: 'node-gyp', n: loadAddon().addon.calls.length, x: true, v: 8 })
  })
})
