// Releasing a FUSE mount that something still uses, with a real FUSE file system and no appliance:
// grub-mount serves a small ext2 image (it plays the part of libguestfs's mount_local_run loop),
// and real processes keep it busy the way a leftover extra-data.d process would.
import { execFileSync, spawn } from 'node:child_process'
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { afterEach, describe, expect, it } from 'vitest'

import { VirtDibError } from '../../../src/errors.js'
import {
  decodeMountPath,
  isMounted,
  mountPoints,
  releaseFuseMount,
  trackServing,
  waitForFuseMount,
  type FuseTimings,
  type Served,
} from '../../../src/host/fuse.js'
import { findExecutable } from '../../../src/host/which.js'
import { removeWorkspace } from '../../../src/host/workspace.js'
import { waitFor } from '../../helpers/processes.js'
import { tempDir } from '../../helpers/temp.js'

const find = (t: string) => findExecutable(t, `${process.env['PATH']}:/usr/sbin:/sbin`)
const [grubMount, mke2fs] = [find('grub-mount'), find('mke2fs')]
const tools = ['grub-mount', 'mke2fs', 'fusermount'].filter((t) => !find(t))
const missing = tools.length > 0 ? `needs ${tools.join(', ')}` : !existsSync('/dev/fuse') ? 'needs /dev/fuse' : ''

const FAST: FuseTimings = {
  mountPollMs: 20,
  mountWaitMs: 5000,
  unmountRetryMs: 100,
  unmountAttempts: 10,
  releaseWaitMs: 2000,
}

const live = (pid: number) => {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return st.slice(st.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
  }
}

function serverOf(mnt: string): number | undefined {
  for (const d of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0')
      if (cmd[0]?.endsWith('grub-mount') && cmd.includes(mnt) && live(Number(d))) return Number(d)
    } catch {
      // gone
    }
  }
  return undefined
}

describe.skipIf(missing !== '')(`releasing a busy FUSE mount${missing ? ` (skipped: ${missing})` : ''}`, () => {
  const dir = tempDir('vdib-fuse.')
  const img = join(dir, 'fs.img')
  const src = join(dir, 'src')
  mkdirSync(join(src, 'sub'), { recursive: true })
  writeFileSync(join(src, 'sub', 'file'), 'data\n')
  if (missing === '') execFileSync(mke2fs!, ['-q', '-t', 'ext2', '-d', src, img, '4M'], { stdio: 'ignore' })
  const holders: number[] = []
  let n = 0

  /** A fresh grub-mount of the image; `served` settles when its daemon has exited. */
  async function mount(): Promise<{ mnt: string; served: Served; server: number }> {
    const mnt = join(dir, `mnt${n++}`)
    mkdirSync(mnt)
    execFileSync(grubMount!, [img, mnt])
    const served = trackServing(
      (async () => {
        let server: number | undefined
        for (let i = 0; i < 200 && server === undefined; i++) {
          server = serverOf(mnt)
          if (server === undefined) await new Promise((r) => setTimeout(r, 10))
        }
        while (server !== undefined && live(server)) await new Promise((r) => setTimeout(r, 20))
      })(),
    )
    await waitForFuseMount(mnt, served, { what: 'the view', timings: FAST })
    return { mnt, served, server: serverOf(mnt)! }
  }

  /** A process outside our process group that keeps `cwd` (and maybe a file) in the mount. */
  async function hold(cwd: string, seconds: number, file?: string): Promise<number> {
    const fd = file ? openSync(file, 'r') : undefined
    const p = spawn('sleep', [String(seconds)], { cwd, detached: true, stdio: [fd ?? 'ignore', 'ignore', 'ignore'] })
    if (fd !== undefined) closeSync(fd)
    p.unref()
    holders.push(p.pid!)
    // Named sleep only once it has exec'd.
    const comm = () => {
      try {
        return readFileSync(`/proc/${p.pid}/comm`, 'utf8').trim()
      } catch {
        return ''
      }
    }
    for (let i = 0; i < 400 && comm() !== 'sleep'; i++) await new Promise((r) => setTimeout(r, 5))
    return p.pid!
  }

  afterEach(() => {
    for (const pid of holders.splice(0)) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // already gone
      }
    }
  })

  it('unmounts an idle view at once', async () => {
    const { mnt, served } = await mount()
    const warnings: string[] = []
    await releaseFuseMount(mnt, served, { what: 'the view', onWarning: (w) => warnings.push(w), timings: FAST })
    expect(isMounted(mnt)).toBe(false)
    expect(served.settled).toBe(true)
    expect(warnings).toEqual([])
    // Again: nothing to do.
    await releaseFuseMount(mnt, served, { what: 'the view', timings: FAST })
  })

  it('waits for a user that lets go within the retries', async () => {
    const { mnt, served } = await mount()
    await hold(join(mnt, 'sub'), 0.5)
    const warnings: string[] = []
    await releaseFuseMount(mnt, served, { what: 'the view', onWarning: (w) => warnings.push(w), timings: FAST })
    expect(isMounted(mnt)).toBe(false)
    expect(warnings).toEqual([])
  })

  it('detaches lazily, with a warning, when the user lets go only after the retries', async () => {
    const { mnt, served } = await mount()
    const pid = await hold(join(mnt, 'sub'), 1.5)
    const warnings: string[] = []
    const timings = { ...FAST, unmountAttempts: 2, releaseWaitMs: 5000 }
    await releaseFuseMount(mnt, served, { what: 'the view', onWarning: (w) => warnings.push(w), timings })
    expect(isMounted(mnt)).toBe(false)
    expect(served.settled).toBe(true)
    expect(warnings).toEqual([`the view was busy at the end (sleep (pid ${pid})): detached it`])
  })

  it('names the processes that keep it, kills them, and fails in bounded time', async () => {
    const { mnt, served, server } = await mount()
    const a = await hold(join(mnt, 'sub'), 1000)
    const b = await hold(dir, 1000, join(mnt, 'sub', 'file'))
    const t0 = Date.now()
    const e = await releaseFuseMount(mnt, served, { what: 'the view', timings: FAST }).catch((x: unknown) => x)
    expect(Date.now() - t0).toBeLessThan(15_000)
    expect(e).toBeInstanceOf(VirtDibError)
    const message = (e as Error).message
    expect(message).toMatch(
      /^the view was still in use by sleep \(pid \d+\), sleep \(pid \d+\) 3 s after its scripts ended: killed it$/,
    )
    expect(message).toContain(`pid ${a})`)
    expect(message).toContain(`pid ${b})`)
    expect(message.split('\n')).toHaveLength(1)
    expect(live(a) || live(b) || live(server)).toBe(false)
    expect(isMounted(mnt)).toBe(false)
  })

  it('switches to the short timings at once when the build is aborted in the middle of a release', async () => {
    const { mnt, served, server } = await mount()
    const a = await hold(join(mnt, 'sub'), 1000)
    const slow: FuseTimings = { ...FAST, unmountRetryMs: 250, unmountAttempts: 40, releaseWaitMs: 5000 }
    const quick: FuseTimings = { ...FAST, unmountRetryMs: 100, unmountAttempts: 3, releaseWaitMs: 500 }
    const build = new AbortController()
    setTimeout(() => build.abort(), 300)
    const t0 = Date.now()
    const e = await releaseFuseMount(mnt, served, {
      what: 'the view',
      timings: slow,
      abortTimings: quick,
      signal: build.signal,
    }).catch((x: unknown) => x)
    // Without the signal it waits 10 s of retries and 2 × 5 s for the loop to end.
    expect(Date.now() - t0).toBeLessThan(3000)
    expect(e).toBeInstanceOf(VirtDibError)
    expect((e as Error).message).toContain(`sleep (pid ${a})`)
    expect((e as Error).message).toMatch(/: killed it$/)
    expect(live(a) || live(server)).toBe(false)
    expect(isMounted(mnt)).toBe(false)
  })

  /** A workspace like the build's, with live grub-mounts of the image inside (one with a space). */
  async function workspaceWithViews(): Promise<{ ws: string; views: string[] }> {
    const ws = join(dir, `ws${n++}`)
    const views = [join(ws, 'extra-data.d'), join(ws, 'deep', 'view 1')]
    mkdirSync(join(ws, 'deep'), { recursive: true })
    writeFileSync(join(ws, 'aux.img'), 'aux')
    for (const v of views) {
      mkdirSync(v)
      execFileSync(grubMount!, [img, v])
      expect(await waitFor(() => isMounted(v), 5000)).toBe(true)
    }
    return { ws, views }
  }
  const imageBytes = () => readFileSync(img).toString('base64')

  it('removing the workspace detaches the views in it first and never reaches into them', async () => {
    const before = imageBytes()
    const { ws, views } = await workspaceWithViews()
    // Was rm -r: it walked into the views (EROFS here; an image's files with libguestfs's view).
    await removeWorkspace(ws)
    expect(existsSync(ws)).toBe(false)
    for (const v of views) expect(isMounted(v)).toBe(false)
    expect(mountPoints().filter((m) => m.startsWith(ws))).toEqual([])
    expect(imageBytes()).toBe(before)
  })

  for (const how of ['listed in /proc/self/mounts', 'found by its device only'] as const) {
    it(`a view that cannot be detached is kept and named, not removed (${how})`, async () => {
      const { ws, views } = await workspaceWithViews()
      try {
        const e = await removeWorkspace(ws, {
          unmount: async () => undefined,
          ...(how === 'found by its device only' ? { mounts: () => [] } : {}),
        }).catch((x: unknown) => x)
        expect(e).toBeInstanceOf(VirtDibError)
        expect((e as Error).message).toMatch(/^the workspace .* was not removed: .* is still mounted$/)
        // Everything else went; the views and the files in them are intact.
        expect(existsSync(join(ws, 'aux.img'))).toBe(false)
        for (const v of views) {
          expect(isMounted(v)).toBe(true)
          expect(readFileSync(join(v, 'sub', 'file'), 'utf8')).toBe('data\n')
        }
      } finally {
        for (const v of views) execFileSync('fusermount', ['-u', v])
      }
    })
  }

  it('decodes the octal escapes of /proc/self/mounts', () => {
    expect(decodeMountPath('/tmp/a\\040b\\011c\\134d')).toBe('/tmp/a b\tc\\d')
  })

  it('refuses a view whose server ends before it appears', async () => {
    const served = trackServing(Promise.reject(new Error('fuse_mount failed\nmore')))
    const e = await waitForFuseMount(join(dir, 'never'), served, { what: 'the view', timings: FAST }).catch(
      (x: unknown) => x,
    )
    expect(e).toBeInstanceOf(VirtDibError)
    expect((e as Error).message).toBe('the view could not be mounted: fuse_mount failed')
  })

  it('gives up on a view that never appears', async () => {
    const served = trackServing(new Promise(() => undefined))
    const timings = { ...FAST, mountWaitMs: 200 }
    await expect(waitForFuseMount(join(dir, 'never'), served, { what: 'the view', timings })).rejects.toThrow(
      'the view did not appear within 0.2 s',
    )
  })
})
