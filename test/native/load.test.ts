// Which addon file was loaded, and that it is the cmake-js build unless told otherwise; the
// node-gyp fallback (npm run build:gyp → build-gyp/Release) is tested when it has been built.
import { existsSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { join, resolve } from 'node:path'

import { describe, expect, it } from 'vitest'

import { loadAddon } from '../../src/guestfs/native.js'

const root = resolve(import.meta.dirname, '..', '..')
// Where scripts/build-gyp.mjs copies its result.
const gyp = join(root, 'build-gyp', 'Release', 'virt_dib.node')
const hasGyp = existsSync(gyp)
const explicit = process.env['VIRT_DIB_ADDON']

describe('addon loading', () => {
  it.skipIf(explicit)(
    `loads the cmake-js build from build/Release by default${explicit ? ' (skipped: VIRT_DIB_ADDON names another build)' : ''}`,
    () => {
      const { addon, path } = loadAddon()
      expect(path).toBe(join(root, 'build', 'Release', 'virt_dib.node'))
      expect(addon.buildSystem).toBe('cmake-js')
      expect(addon.napiVersion).toBe(8)
      expect(addon.cppExceptions).toBe(true)
    },
  )

  it.skipIf(!hasGyp)(
    `the node-gyp build loads, has the same calls and settings, and runs a call${hasGyp ? '' : ' (skipped: build-gyp/ not built; npm run build:gyp)'}`,
    () => {
      const probe = `
        const a = require(${JSON.stringify(gyp)})
        const h = new a.GuestfsHandle(() => {}, { environment: false })
        h.get_memsize().then(async (m) => {
          await h.close()
          console.log(JSON.stringify({ b: a.buildSystem, calls: a.calls, x: a.cppExceptions, v: a.napiVersion, m, live: a.__test.liveSessions() }))
        })`
      const r = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8', timeout: 30_000 })
      expect(r.stderr).toBe('')
      expect(r.status).toBe(0)
      const info = JSON.parse(r.stdout) as {
        b: string
        calls: string[]
        x: boolean
        v: number
        m: number
        live: number
      }
      expect(info).toMatchObject({ b: 'node-gyp', x: true, v: 8, calls: loadAddon().addon.calls })
      expect(info.m).toBeGreaterThan(0)
    },
  )

  it.runIf(process.env['CI'])('CI builds the node-gyp fallback (npm run build:gyp)', () => {
    expect(hasGyp).toBe(true)
  })
})
