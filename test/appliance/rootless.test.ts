// An unprivileged user builds an image: no root, no loop devices, no sudo. (The test needs root
// only to create that user.) Two builds of the same user run at once and share nothing.
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { DIB_LIB, root } from '../helpers/cli.js'

const USER = 'vdib-rootless'
const isRoot = process.getuid?.() === 0

/**
 * A copy of the built package that the user can read (the checkout may be under /root): what
 * `npm install` would give a user — dist, assets, the addon and the runtime dependencies.
 */
function stagePackage(dir: string): string {
  const app = join(dir, 'app')
  mkdirSync(join(app, 'build', 'Release'), { recursive: true })
  for (const p of ['dist', 'assets', 'bin', 'examples', 'package.json'])
    cpSync(join(root, p), join(app, p), { recursive: true })
  cpSync(join(root, 'build', 'Release', 'virt_dib.node'), join(app, 'build', 'Release', 'virt_dib.node'))
  for (const m of ['bindings', 'file-uri-to-path', 'commander', 'yaml']) {
    if (existsSync(join(root, 'node_modules', m)))
      cpSync(join(root, 'node_modules', m), join(app, 'node_modules', m), { recursive: true })
  }
  spawnSync('chmod', ['-R', 'a+rX', dir])
  return app
}

let app = root

function runAs(args: string[], env: Record<string, string>): Promise<{ status: number | null; out: string }> {
  return new Promise((resolve) => {
    // prettier-ignore
    const child = spawn('runuser', ['-u', USER, '--', 'env', ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
      process.execPath, join(app, 'bin', 'virt-dib'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (b: Buffer) => (out += b.toString()))
    child.stderr.on('data', (b: Buffer) => (out += b.toString()))
    child.on('close', (status) => resolve({ status, out }))
  })
}

describe.runIf(isRoot)('rootless builds', () => {
  const home = `/home/${USER}`
  let out: string

  beforeAll(() => {
    if (spawnSync('id', [USER]).status !== 0) {
      expect(spawnSync('useradd', ['--create-home', '--home-dir', home, USER]).status).toBe(0)
    }
    out = mkdtempSync(join(tmpdir(), 'vdib-rootless.'))
    app = stagePackage(out)
    spawnSync('chown', [USER, out])
    chmodSync(out, 0o755)
  })
  afterAll(() => {
    rmSync(out, { recursive: true, force: true })
  })

  it(
    'builds the demo image as a normal user, twice at once, each with its own appliance and temp dir',
    async () => {
      rmSync(join(home, '.cache', 'virt-dib'), { recursive: true, force: true })
      const env = { HOME: home, PATH: process.env['PATH'] ?? '/usr/bin:/bin', TMPDIR: out }
      const common = [
        '-B',
        DIB_LIB,
        '-p',
        join(app, 'examples', 'elements'),
        '--skip-base',
        '--size',
        '256M',
        '--formats',
        'tar',
      ]
      // A new user: both builds prepare this user's appliance at once; one rename wins.
      const [b, c] = await Promise.all([
        runAs([...common, '--name', join(out, 'b'), 'demo-os', 'demo-app'], env),
        runAs([...common, '--name', join(out, 'c'), 'demo-os', 'demo-app'], env),
      ])
      expect([b.status, c.status, b.out.slice(-300), c.out.slice(-300)]).toEqual([
        0,
        0,
        expect.stringMatching(/Done\n$/),
        expect.stringMatching(/Done\n$/),
      ])
      for (const n of ['b', 'c']) {
        expect(existsSync(join(out, `${n}.tar`))).toBe(true)
        const owner = spawnSync('stat', ['-c', '%U', join(out, `${n}.tar`)], { encoding: 'utf8' }).stdout.trim()
        expect(owner).toBe(USER)
        const list = spawnSync('tar', ['-tf', join(out, `${n}.tar`)], { encoding: 'utf8' }).stdout
        expect(list).toMatch(/\.\/usr\/local\/bin\/hello/)
      }
      expect(
        readdirSync(out).filter((f) => f.startsWith('dib.') || f.startsWith('.') || f.startsWith('libguestfs')),
      ).toEqual([])
      expect(existsSync(join(home, '.cache', 'virt-dib'))).toBe(true)
    },
    20 * 60_000,
  )

  it('refuses an output directory the user cannot write to, before anything is launched', async () => {
    const locked = join(out, 'locked')
    mkdirSync(locked, { mode: 0o755 }) // owned by root
    const env = { HOME: home, PATH: process.env['PATH'] ?? '/usr/bin:/bin', TMPDIR: out }
    // prettier-ignore
    const r = await runAs(['-B', DIB_LIB, '-p', join(app, 'examples', 'elements'), '--skip-base',
      '--name', join(locked, 'img'), 'demo-os'], env)
    expect(r.status).toBe(1)
    expect(r.out).toBe(`virt-dib: error: output directory ‘${locked}’ is not writable\n`)
  })
})
