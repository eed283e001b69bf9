// The step cache's engine side (openCacheRun, storeSnapshot) over real raw files, a real store and a fake guest: snapshots stored and resumed, and every way a snapshot can fail.
import { execFileSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import {
  closeSync,
  cpSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from 'node:fs'
import { basename, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

import { afterEach, describe, expect, it } from 'vitest'

import { openStore, type EntryMeta } from '../../../src/cache/store.js'
import { materialize } from '../../../src/cache/delta.js'
import type { Boundary, DriveName } from '../../../src/engine/cache-boundaries.js'
import { openCacheRun, stopCaching, type CacheRun } from '../../../src/engine/cache-run.js'
import { drainSnapshots, restoreDrive, storeSnapshot, type LiveDrives } from '../../../src/engine/snapshot.js'
import { BuildContext } from '../../../src/engine/context.js'
import type { BuildPlan } from '../../../src/engine/plan.js'
import { freezeScript, thawScript } from '../../../src/engine/snapshot-guest.js'
import { BuildAbortedError } from '../../../src/errors.js'
import type { BuildEvent } from '../../../src/events.js'
import type { Guestfs } from '../../../src/guestfs/index.js'
import { tempDir } from '../../helpers/temp.js'

const MiB = 1024 ** 2
const SIZES: Record<DriveName, number> = { tree: 32 * MiB, aux: 2 * MiB, disk: 4 * MiB }
const sha = (text: string) => createHash('sha256').update(text).digest('hex')

function boundary(phase: string, drives: readonly DriveName[]): Boundary {
  return { after: phase, phase, key: sha(`key ${phase}`), inputs: { scripts: sha(`scripts ${phase}`) }, drives }
}

/** The table's boundaries, as planBoundaries makes them: the tree until the block-device step, the disk after. */
const B = [
  boundary('root.d', ['tree', 'aux']),
  boundary('install.d', ['tree', 'aux']),
  boundary('block-device', ['disk', 'aux']),
  boundary('finalise.d', ['disk', 'aux']),
] as const

/** The guest's shell as the snapshot uses it: the freeze answers `freeze` (one mark per line), the thaw is recorded. */
class FakeShell {
  freeze = ['/sysroot/boot', '/sysroot']
  freezes = 0
  readonly thaws: string[] = []
  thawError: Error | undefined
  onFreeze: (() => void) | undefined

  async shOutside(script: string, _o: { signal?: AbortSignal } = {}): Promise<string> {
    await Promise.resolve()
    if (script === freezeScript()) {
      this.freezes++
      this.onFreeze?.()
      return this.freeze.map((l) => `${l}\n`).join('')
    }
    if (script.startsWith('rc=0\n')) {
      this.thaws.push(script)
      if (this.thawError) throw this.thawError
      return ''
    }
    throw new Error(`FakeShell: unexpected script ${script}`)
  }
}

interface Build {
  ctx: BuildContext
  guest: FakeShell
  events: BuildEvent[]
  ac: AbortController
  live: LiveDrives
}

const open: BuildContext[] = []
afterEach(async () => {
  for (const ctx of open.splice(0)) {
    await drainSnapshots(ctx)
    await ctx.cleanup.run()
  }
})

/** A snapshot as the build takes it, and (as the tests check the store) waited for until committed. */
async function snap(ctx: BuildContext, b: Boundary, live: LiveDrives): Promise<void> {
  await storeSnapshot(ctx, b, live)
  await drainSnapshots(ctx)
}

/** A BuildContext with only what the cache reads of a plan, a fake guest, and sparse live drives of SIZES. */
async function openBuild(cacheDir: string, o: { rebuildFrom?: string } = {}): Promise<Build> {
  const dir = tempDir('vdib-cacherun.')
  const plan = {
    cache: { dir: cacheDir, maxSize: 1024 ** 3, maxAgeMs: undefined },
    rebuildFrom: o.rebuildFrom,
    imageName: 'img',
    resolution: { elements: [{ name: 'demo-os' }] },
    hooks: { files: [{ path: 'install.d/10-x' }] },
    appliance: { drive: undefined },
    env: { TMPDIR: dir },
  } as unknown as BuildPlan
  const events: BuildEvent[] = []
  const ac = new AbortController()
  const ctx = await BuildContext.open(plan, { onEvent: (e) => events.push(e), signal: ac.signal })
  open.push(ctx)
  const guest = new FakeShell()
  ctx.g = guest as unknown as Guestfs
  const files = { tree: join(dir, 'tree.raw'), aux: join(dir, 'aux.raw'), disk: join(dir, 'disk.raw') }
  for (const d of ['tree', 'aux', 'disk'] as const) {
    writeFileSync(files[d], '')
    truncateSync(files[d], SIZES[d])
  }
  return { ctx, guest, events, ac, live: { files, sizes: { ...SIZES } } }
}

/** Ends a build as run.ts does: its cleanups release its locks and in-use marks. */
async function end(b: Build): Promise<void> {
  open.splice(open.indexOf(b.ctx), 1)
  await drainSnapshots(b.ctx)
  await b.ctx.cleanup.run()
}

async function start(b: Build): Promise<CacheRun> {
  b.ctx.cache = (await openCacheRun(b.ctx, B))!
  return b.ctx.cache
}

function writeAt(file: string, at: number, data: Buffer): void {
  const fd = openSync(file, 'r+')
  try {
    writeSync(fd, data, 0, data.length, at)
  } finally {
    closeSync(fd)
  }
}

/** Data in the first phase's drives; `more` changes some of it, zeroes some, adds some (the second phase). */
function firstPhase(b: Build): void {
  writeAt(b.live.files.tree, 0, randomBytes(MiB))
  writeAt(b.live.files.tree, 20 * MiB, randomBytes(256 * 1024))
  writeAt(b.live.files.aux, 64 * 1024, randomBytes(128 * 1024))
}
function secondPhase(b: Build): void {
  writeAt(b.live.files.tree, 128 * 1024, randomBytes(64 * 1024))
  writeAt(b.live.files.tree, 20 * MiB, Buffer.alloc(256 * 1024))
  writeAt(b.live.files.tree, 30 * MiB, randomBytes(300 * 1024))
  writeAt(b.live.files.aux, 0, randomBytes(4096))
}

const warnings = (b: Build) => b.events.flatMap((e) => (e.kind === 'warning' ? [e.text] : []))
const stored = (b: Build) => b.events.flatMap((e) => (e.kind === 'cache-store' ? [e] : []))
const hits = (b: Build) => b.events.flatMap((e) => (e.kind === 'cache-hit' ? [e] : []))
const misses = (b: Build) => b.events.flatMap((e) => (e.kind === 'cache-miss' ? [e] : []))
const entries = (cacheDir: string) => readdirSync(join(cacheDir, 'v1', 'entries')).sort()
const tmpLeft = (cacheDir: string) => readdirSync(join(cacheDir, 'v1', 'tmp'))
const entryFile = (cacheDir: string, key: string, name: string) => join(cacheDir, 'v1', 'entries', key, name)
const meta = (cacheDir: string, key: string) =>
  JSON.parse(readFileSync(entryFile(cacheDir, key, 'meta.json'), 'utf8')) as EntryMeta
const cacheDirIn = () => join(tempDir('vdib-cache.'), 'steps')

/** Whether another build could take the key now (its lock is free): takes it and lets it go. */
async function lockFree(cacheDir: string, key: string): Promise<boolean> {
  const got = await (await openStore(cacheDir)).begin(key)
  if (!('commit' in got)) return false
  await got.abort()
  return true
}

/** Flips bits of one byte in place (the file keeps its size: only a checksum can tell). */
function flipByte(file: string, at: (length: number) => number, bits: number): void {
  const bytes = readFileSync(file)
  const i = at(bytes.length)
  bytes.writeUInt8(bytes.readUInt8(i) ^ bits, i)
  writeFileSync(file, bytes)
}

function sameContent(a: string, b: string): void {
  // Exit status 0: identical (1: they differ, which throws).
  execFileSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', a, b])
}

function qemuInfo(file: string): Record<string, unknown> {
  return JSON.parse(execFileSync('qemu-img', ['info', '--output=json', file], { encoding: 'utf8' })) as Record<
    string,
    unknown
  >
}

/**
 * Holds the build's write lane, then captures root.d and install.d, which wait there to be written;
 * returns what lets the lane go.
 */
async function capturedBehindHeldLane(a: Build, run: CacheRun): Promise<() => void> {
  let open!: () => void
  run.writing = new Promise<void>((done) => (open = done))
  firstPhase(a)
  await storeSnapshot(a.ctx, B[0], a.live)
  secondPhase(a)
  await storeSnapshot(a.ctx, B[1], a.live)
  return open
}

/** A build that stores root.d and install.d, then ends; returns it. */
async function coldBuild(cacheDir: string, upTo = 2): Promise<Build> {
  const a = await openBuild(cacheDir)
  await start(a)
  firstPhase(a)
  await snap(a.ctx, B[0], a.live)
  secondPhase(a)
  if (upTo >= 2) await snap(a.ctx, B[1], a.live)
  if (upTo >= 3) {
    writeAt(a.live.files.disk, MiB, randomBytes(MiB))
    await snap(a.ctx, B[2], a.live)
  }
  expect(stored(a).map((e) => e.step)).toEqual(B.slice(0, upTo).map((b) => b.phase))
  await end(a)
  return a
}

describe('storeSnapshot and openCacheRun', () => {
  it('two snapshots in a row are committed, the second a delta over the first; a new build resumes after the second', async () => {
    const cacheDir = cacheDirIn()
    const a = await openBuild(cacheDir)
    const run = await start(a)
    expect(run.resume).toBeUndefined()
    expect(run.next?.key).toBe(B[0].key)
    expect(misses(a)).toEqual([
      {
        kind: 'cache-miss',
        step: 'root.d',
        reason: 'nothing cached for these elements yet',
        elapsed: expect.any(Number),
      },
    ])
    firstPhase(a)
    await snap(a.ctx, B[0], a.live)
    secondPhase(a)
    await snap(a.ctx, B[1], a.live)
    expect(stored(a).map((e) => [e.step, e.key])).toEqual([
      ['root.d', B[0].key],
      ['install.d', B[1].key],
    ])
    for (const e of stored(a)) expect(e.bytes).toBe(meta(cacheDir, e.key).bytes)
    expect(warnings(a)).toEqual([])
    expect(run.lastGood).toBe('install.d')
    expect(run.next?.key).toBe(B[2].key) // taken before install.d was released
    expect(a.guest.freezes).toBe(2)
    expect(a.guest.thaws).toEqual([
      thawScript(['/sysroot/boot', '/sysroot']),
      thawScript(['/sysroot/boot', '/sysroot']),
    ])
    expect(tmpLeft(cacheDir)).toEqual([basename(run.next!.dir)]) // the next boundary's writer only

    const m2 = meta(cacheDir, B[1].key)
    expect(m2).toMatchObject({ step: 'install.d', parent: B[0].key, elements: ['demo-os'], inputs: B[1].inputs })
    expect(m2.files.map((f) => f.name)).toEqual(['aux.map', 'aux.qcow2', 'state.json', 'tree.map', 'tree.qcow2'])
    expect(JSON.parse(readFileSync(entryFile(cacheDir, B[1].key, 'state.json'), 'utf8'))).toEqual({
      imageName: 'img',
      hookFiles: ['install.d/10-x'],
    })
    expect(qemuInfo(entryFile(cacheDir, B[0].key, 'tree.qcow2'))['backing-filename']).toBeUndefined()
    for (const d of ['tree', 'aux'] as const) {
      const info = qemuInfo(entryFile(cacheDir, B[1].key, `${d}.qcow2`))
      expect(info['backing-filename']).toBe(`../${B[0].key}/${d}.qcow2`)
      expect(info['backing-filename-format']).toBe('qcow2')
      expect(info['virtual-size']).toBe(SIZES[d])
      const flat = join(a.ctx.workspace, `${d}.flat`)
      await materialize(entryFile(cacheDir, B[1].key, `${d}.qcow2`), flat)
      sameContent(flat, a.live.files[d])
    }
    // Only what changed since root.d: far less than the tree's 1.25 MiB of data.
    const tree2 = m2.files.find((f) => f.name === 'tree.qcow2')!.bytes
    expect(tree2).toBeLessThan(meta(cacheDir, B[0].key).files.find((f) => f.name === 'tree.qcow2')!.bytes / 2)
    await end(a)

    const b = await openBuild(cacheDir)
    const run2 = await start(b)
    expect(hits(b)).toMatchObject([{ steps: ['root.d', 'install.d'], key: B[1].key }])
    expect(misses(b)).toMatchObject([{ step: 'block-device', reason: 'not cached yet' }])
    expect(b.events.findIndex((e) => e.kind === 'cache-hit')).toBeLessThan(
      b.events.findIndex((e) => e.kind === 'cache-miss'),
    )
    expect(run2.resume?.boundary).toBe(B[1])
    expect(run2.resume?.state).toEqual({ imageName: 'img', hookFiles: ['install.d/10-x'] })
    expect(run2.parent?.key).toBe(B[1].key)
    expect(run2.parent?.maps.tree?.size).toBeGreaterThan(0)
    expect(run2.parent?.maps.aux?.size).toBeGreaterThan(0)
    expect(run2.lastGood).toBe('install.d')
    expect(run2.next?.key).toBe(B[2].key)
    await restoreDrive(b.ctx, run2, 'tree', b.live.files.tree)
    sameContent(b.live.files.tree, a.live.files.tree)
    // The resumed build's next snapshot builds on the restored one.
    writeAt(b.live.files.disk, 0, randomBytes(MiB))
    await snap(b.ctx, B[2], b.live)
    expect(meta(cacheDir, B[2].key).parent).toBe(B[1].key)
    expect(qemuInfo(entryFile(cacheDir, B[2].key, 'disk.qcow2'))['backing-filename']).toBeUndefined()
    expect(qemuInfo(entryFile(cacheDir, B[2].key, 'aux.qcow2'))['backing-filename']).toBe(`../${B[1].key}/aux.qcow2`)
  })

  it('a file system that cannot be frozen: a warning, nothing committed, the others thawed, caching off, the locks released', async () => {
    const cacheDir = cacheDirIn()
    const a = await openBuild(cacheDir)
    const run = await start(a)
    a.guest.freeze = ['/sysroot/boot', '!/sysroot']
    firstPhase(a)
    await snap(a.ctx, B[0], a.live)
    expect(warnings(a)).toEqual([
      expect.stringMatching(
        /^step cache: cannot store root\.d: cannot freeze or sync \/sysroot in the appliance; the later phases are not cached$/,
      ),
    ])
    expect(a.guest.thaws).toEqual([thawScript(['/sysroot/boot'])])
    expect(entries(cacheDir)).toEqual([])
    expect(tmpLeft(cacheDir)).toEqual([])
    expect(stored(a)).toEqual([])
    expect(run).toMatchObject({ off: true, next: undefined, lastGood: undefined })
    // Later snapshots do nothing: no freeze, no second warning.
    await snap(a.ctx, B[1], a.live)
    expect(a.guest.freezes).toBe(1)
    expect(warnings(a)).toHaveLength(1)
    // Another build is not kept waiting for this one.
    expect(await lockFree(cacheDir, B[0].key)).toBe(true)
    expect(await lockFree(cacheDir, B[1].key)).toBe(true)
  })

  it('stopCaching releases the lock of the next boundary at once', async () => {
    const cacheDir = cacheDirIn()
    const a = await openBuild(cacheDir)
    const run = await start(a)
    expect(await lockFree(cacheDir, B[0].key)).toBe(false)
    await stopCaching(a.ctx, 'the layout is on /dev/xyz, which block-device.d named')
    await stopCaching(a.ctx, 'said once')
    expect(run).toMatchObject({ off: true, next: undefined })
    expect(await lockFree(cacheDir, B[0].key)).toBe(true)
    expect(warnings(a)).toEqual([
      'step cache: the layout is on /dev/xyz, which block-device.d named; the later phases are not cached',
    ])
  })

  it('a file system that can only be synced (vfat): stored, and the thaw leaves it alone', async () => {
    const cacheDir = cacheDirIn()
    const a = await openBuild(cacheDir)
    await start(a)
    // sh's stderr is merged: a stray message is not a mount to thaw.
    a.guest.freeze = [
      '~/sysroot/boot/efi',
      'fsfreeze: /sysroot/boot/efi: Operation not supported',
      '/sysroot/boot',
      '/sysroot',
    ]
    firstPhase(a)
    await snap(a.ctx, B[0], a.live)
    expect(stored(a).map((e) => e.key)).toEqual([B[0].key])
    expect(warnings(a)).toEqual([])
    expect(a.guest.thaws).toEqual([thawScript(['/sysroot/boot', '/sysroot'])])
    expect(a.guest.thaws[0]).not.toContain('efi')
    expect(a.events).toContainEqual(
      expect.objectContaining({ kind: 'debug', text: 'step cache: synced, not frozen: /sysroot/boot/efi' }),
    )
  })

  it('a thaw that fails stops the build (a frozen file system would hang it); nothing committed', async () => {
    const cacheDir = cacheDirIn()
    const a = await openBuild(cacheDir)
    const run = await start(a)
    a.guest.thawError = new Error('fsfreeze: /sysroot: unfreeze failed: Invalid argument')
    firstPhase(a)
    await expect(storeSnapshot(a.ctx, B[0], a.live)).rejects.toMatchObject({
      name: 'ThawError',
      message:
        "cannot thaw the image's file systems after a snapshot: fsfreeze: /sysroot: unfreeze failed: Invalid argument",
    })
    expect(entries(cacheDir)).toEqual([])
    expect(tmpLeft(cacheDir)).toEqual([])
    expect(run.lastGood).toBeUndefined()
    expect(await lockFree(cacheDir, B[0].key)).toBe(true)
  })

  it('an abort while the drives are read rejects with the abort; thawed, nothing committed, no writer folder left', async () => {
    const cacheDir = cacheDirIn()
    const a = await openBuild(cacheDir)
    await start(a)
    writeAt(a.live.files.tree, 0, randomBytes(24 * MiB))
    a.guest.onFreeze = () => a.ac.abort()
    await expect(storeSnapshot(a.ctx, B[0], a.live)).rejects.toBeInstanceOf(BuildAbortedError)
    expect(a.guest.thaws).toHaveLength(1) // thawed all the same
    await drainSnapshots(a.ctx)
    expect(entries(cacheDir)).toEqual([])
    expect(tmpLeft(cacheDir)).toEqual([])
    expect(stored(a)).toEqual([])
    expect(warnings(a)).toEqual([])
  })

  it('the drives are thawed before the delta is written: the build goes on while it is; an abort then stops the write', async () => {
    const cacheDir = cacheDirIn()
    const a = await openBuild(cacheDir)
    const run = await start(a)
    writeAt(a.live.files.tree, 0, randomBytes(24 * MiB))
    const dir = run.next!.dir
    await storeSnapshot(a.ctx, B[0], a.live)
    expect(a.guest.thaws).toHaveLength(1)
    // The next phase changes the drive at once: the snapshot holds what it had when frozen.
    const had = readFileSync(a.live.files.tree).subarray(0, 24 * MiB)
    writeAt(a.live.files.tree, 0, randomBytes(MiB))
    await drainSnapshots(a.ctx)
    expect(stored(a).map((e) => e.step)).toEqual(['root.d'])
    expect(stored(a)[0]!.writeSeconds).toBeGreaterThanOrEqual(0)
    const flat = join(a.ctx.workspace, 'tree.flat')
    await materialize(entryFile(cacheDir, B[0].key, 'tree.qcow2'), flat)
    expect(
      readFileSync(flat)
        .subarray(0, 24 * MiB)
        .equals(had),
    ).toBe(true)
    expect(readdirSync(entryFile(cacheDir, B[0].key, '.'))).not.toContain('.tree.spool')

    // Aborted once the next delta's file exists: the write stops, nothing is committed or left.
    writeAt(a.live.files.tree, 0, randomBytes(24 * MiB))
    const next = join(run.next!.dir, 'tree.qcow2')
    await storeSnapshot(a.ctx, B[1], a.live)
    await new Promise<void>((done) => {
      const poll = () => (existsSync(next) ? done() : void setImmediate(poll))
      poll()
    })
    a.ac.abort()
    await end(a)
    expect(stored(a).map((e) => e.step)).toEqual(['root.d'])
    expect(entries(cacheDir)).toEqual([B[0].key])
    expect(existsSync(dir)).toBe(false)
    expect(tmpLeft(cacheDir)).toEqual([])
    expect(warnings(a)).toEqual([])
    expect(run.lastGood).toBe('root.d')
  })

  it('caching stopped by a later step keeps the snapshots still being written before it', async () => {
    const cacheDir = cacheDirIn()
    const a = await openBuild(cacheDir)
    const run = await start(a)
    const open = await capturedBehindHeldLane(a, run)
    // The block-device step cannot be stored (a capture that fails): caching stops meanwhile.
    const live: LiveDrives = { files: a.live.files, sizes: { ...a.live.sizes, disk: SIZES.disk + 64 * 1024 } }
    await storeSnapshot(a.ctx, B[2], live)
    expect(run.off).toBe(true)
    open()
    await drainSnapshots(a.ctx)
    expect(stored(a).map((e) => e.step)).toEqual(['root.d', 'install.d'])
    expect(run.lastGood).toBe('install.d')
    expect(entries(cacheDir)).toEqual([B[0].key, B[1].key].sort())
    expect(warnings(a)).toHaveLength(1)
    await end(a)
    expect(tmpLeft(cacheDir)).toEqual([])
  })

  it('a snapshot that fails to be written drops the ones captured after it (they have no parent), with one warning', async () => {
    const cacheDir = cacheDirIn()
    const a = await openBuild(cacheDir)
    const run = await start(a)
    const open = await capturedBehindHeldLane(a, run)
    // root.d's folder disappears before its delta is written: its write fails.
    execFileSync('rm', ['-rf', join(cacheDir, 'v1', 'tmp')])
    open()
    await drainSnapshots(a.ctx)
    expect(stored(a)).toEqual([])
    expect(run).toMatchObject({ off: true, broken: true, lastGood: undefined })
    expect(warnings(a)).toHaveLength(1)
    expect(warnings(a)[0]).toMatch(/^step cache: cannot store root\.d: /)
    await end(a)
    expect(entries(cacheDir)).toEqual([])
  })

  it('a delta that fails (a drive of another size than stated): a warning, the build goes on uncached', async () => {
    const cacheDir = cacheDirIn()
    const a = await openBuild(cacheDir)
    const run = await start(a)
    firstPhase(a)
    const live: LiveDrives = { files: a.live.files, sizes: { ...a.live.sizes, tree: SIZES.tree + 64 * 1024 } }
    await snap(a.ctx, B[0], live)
    expect(warnings(a)).toEqual([
      `step cache: cannot store root.d: snapshot of ${a.live.files.tree}: the file has ${SIZES.tree} bytes, the drive ${SIZES.tree + 64 * 1024}; the later phases are not cached`,
    ])
    expect(a.guest.thaws).toHaveLength(1)
    expect(run.off).toBe(true)
    expect(entries(cacheDir)).toEqual([])
    expect(tmpLeft(cacheDir)).toEqual([])
    expect(await lockFree(cacheDir, B[0].key)).toBe(true)
  })

  it('a parent evicted meanwhile: not stored, a warning, and the next boundary’s lock released', async () => {
    const cacheDir = cacheDirIn()
    const a = await openBuild(cacheDir)
    const run = await start(a)
    firstPhase(a)
    await snap(a.ctx, B[0], a.live)
    expect(run.next?.key).toBe(B[1].key)
    execFileSync('rm', ['-rf', join(cacheDir, 'v1', 'entries', B[0].key)]) // by hand: no eviction takes an entry in use
    secondPhase(a)
    await snap(a.ctx, B[1], a.live)
    expect(warnings(a).join('\n')).toMatch(/not stored: its parent [0-9a-f]{12} is gone/)
    expect(warnings(a).at(-1)).toBe(
      'step cache: cannot store install.d: its parent snapshot was evicted meanwhile; the later phases are not cached',
    )
    expect(entries(cacheDir)).toEqual([])
    expect(tmpLeft(cacheDir)).toEqual([])
    expect(run.lastGood).toBe('root.d')
    expect(await lockFree(cacheDir, B[1].key)).toBe(true)
    expect(await lockFree(cacheDir, B[2].key)).toBe(true)
  })
})

describe('another build', () => {
  it('holds the key: not stored, not waited for, caching stops with a warning', async () => {
    const cacheDir = cacheDirIn()
    const other = await (await openStore(cacheDir)).begin(B[1].key)
    if (!('commit' in other)) throw new Error('the test could not take the key')
    try {
      const a = await openBuild(cacheDir)
      const run = await start(a)
      firstPhase(a)
      await snap(a.ctx, B[0], a.live)
      expect(run.next).toBeUndefined() // install.d is the other build's
      const t0 = Date.now()
      await snap(a.ctx, B[1], a.live)
      expect(Date.now() - t0).toBeLessThan(2000)
      expect(a.guest.freezes).toBe(1)
      expect(warnings(a)).toEqual(['step cache: another build is storing install.d; the later phases are not cached'])
      expect(run.off).toBe(true)
      expect(entries(cacheDir)).toEqual([B[0].key])
    } finally {
      await other.abort()
    }
  })

  it('stored the key meanwhile: it is not stored twice, and the next delta builds on that entry', async () => {
    const cacheDir = cacheDirIn()
    const blocker = await (await openStore(cacheDir)).begin(B[1].key)
    if (!('commit' in blocker)) throw new Error('the test could not take the key')
    const a = await openBuild(cacheDir)
    const run = await start(a)
    firstPhase(a)
    await snap(a.ctx, B[0], a.live)
    expect(run.next).toBeUndefined()
    await blocker.abort()
    // The other build resumes after root.d and stores install.d first.
    const o = await openBuild(cacheDir)
    const runO = await start(o)
    expect(runO.resume?.boundary).toBe(B[0])
    for (const d of ['tree', 'aux'] as const) cpSync(a.live.files[d], o.live.files[d])
    secondPhase(o)
    await snap(o.ctx, B[1], o.live)
    expect(stored(o).map((e) => e.key)).toEqual([B[1].key])
    await end(o)

    await snap(a.ctx, B[1], a.live)
    expect(a.guest.freezes).toBe(1) // nothing frozen, nothing written
    expect(stored(a).map((e) => e.key)).toEqual([B[0].key])
    expect(run).toMatchObject({ off: false, lastGood: 'install.d', parent: { key: B[1].key } })
    writeAt(a.live.files.disk, 0, randomBytes(MiB))
    await snap(a.ctx, B[2], a.live)
    expect(meta(cacheDir, B[2].key).parent).toBe(B[1].key)
    const flat = join(a.ctx.workspace, 'aux.flat')
    await materialize(entryFile(cacheDir, B[2].key, 'aux.qcow2'), flat)
    sameContent(flat, a.live.files.aux)
    expect(warnings(a)).toEqual([])
  })
})

describe('openCacheRun and a build storing the next boundary', () => {
  it('waits for its commit, then resumes from it', async () => {
    const cacheDir = cacheDirIn()
    const o = await openBuild(cacheDir)
    await start(o) // holds root.d
    const a = await openBuild(cacheDir)
    let settled = false
    const opening = start(a).finally(() => (settled = true))
    await sleep(300)
    expect(settled).toBe(false)
    expect(a.events).toContainEqual(
      expect.objectContaining({
        kind: 'progress',
        text: 'Waiting for another build that is storing root.d in the step cache',
      }),
    )
    firstPhase(o)
    await snap(o.ctx, B[0], o.live)
    await end(o) // releases install.d, which it had taken next
    const run = await opening
    // The lookup before the wait is not said: one hit, one miss, those of the lookup that counts.
    expect(hits(a)).toMatchObject([{ steps: ['root.d'], key: B[0].key }])
    expect(misses(a).map((m) => m.step)).toEqual(['install.d'])
    expect(run.resume?.boundary).toBe(B[0])
    expect(run.next?.key).toBe(B[1].key)
  })

  it('an abort while waiting rejects with the abort', async () => {
    const cacheDir = cacheDirIn()
    const o = await openBuild(cacheDir)
    await start(o)
    const a = await openBuild(cacheDir)
    const opening = start(a)
    await sleep(50)
    a.ac.abort()
    await expect(opening).rejects.toBeInstanceOf(BuildAbortedError)
    expect(warnings(a)).toEqual([])
  })
})

describe('what a build resumes from', () => {
  it('a damaged deeper entry: the shallower hit, with the store’s warning; a damaged shallower one: none', async () => {
    const cacheDir = cacheDirIn()
    const a = await coldBuild(cacheDir)
    flipByte(entryFile(cacheDir, B[1].key, 'tree.qcow2'), (n) => n >> 1, 0xff) // same size: only the checksum can tell

    const b = await openBuild(cacheDir)
    const run = await start(b)
    expect(warnings(b)).toEqual([
      `step cache: cache entry ${B[1].key.slice(0, 12)} (install.d) is unusable: tree.qcow2 does not match its checksum; removed, it will be rebuilt`,
    ])
    expect(hits(b)).toMatchObject([{ steps: ['root.d'], key: B[0].key }])
    expect(run.resume?.boundary).toBe(B[0])
    expect(run.next?.key).toBe(B[1].key)
    expect(entries(cacheDir)).toEqual([B[0].key])
    await restoreDrive(b.ctx, run, 'aux', b.live.files.aux)
    expect(readFileSync(b.live.files.aux).equals(readFileSync(a.live.files.aux))).toBe(false) // root.d's, not install.d's
    await end(b)

    truncateSync(entryFile(cacheDir, B[0].key, 'aux.map'), 10)
    const c = await openBuild(cacheDir)
    const run3 = await start(c)
    expect(warnings(c)).toEqual([
      expect.stringMatching(
        /^step cache: cache entry [0-9a-f]{12} \(root\.d\) is unusable: aux\.map is truncated \(10 of \d+ bytes\); removed, it will be rebuilt$/,
      ),
    ])
    expect(hits(c)).toEqual([])
    expect(run3.resume).toBeUndefined()
    expect(run3.next?.key).toBe(B[0].key)
    expect(entries(cacheDir)).toEqual([])
  })

  it('a damaged ancestor of an intact entry: no hit at all, both removed', async () => {
    const cacheDir = cacheDirIn()
    await coldBuild(cacheDir)
    flipByte(entryFile(cacheDir, B[0].key, 'tree.qcow2'), (n) => n - 1, 0x01)
    const b = await openBuild(cacheDir)
    const run = await start(b)
    expect(warnings(b)).toEqual([
      `step cache: cache entry ${B[0].key.slice(0, 12)} (root.d) is unusable: tree.qcow2 does not match its checksum; removed with the 1 entries built on it, it will be rebuilt`,
    ])
    expect(hits(b)).toEqual([])
    expect(run.resume).toBeUndefined()
    expect(run.parent).toBeUndefined()
    expect(run.next?.key).toBe(B[0].key)
    expect(entries(cacheDir)).toEqual([])
  })

  // The miss is the first hit dropped as damaged, not the boundary after the lookups' depth.
  it('a dropped damaged hit: the miss names the phase that is rebuilt', async () => {
    const cacheDir = cacheDirIn()
    await coldBuild(cacheDir)
    flipByte(entryFile(cacheDir, B[1].key, 'tree.qcow2'), () => 0, 0xff)
    const b = await openBuild(cacheDir)
    await start(b)
    expect(hits(b)).toMatchObject([{ steps: ['root.d'] }])
    expect(misses(b)).toMatchObject([{ step: 'install.d' }])
  })

  it('--rebuild-from: resumes before that phase, and its new snapshot replaces the old entry and what was built on it', async () => {
    const cacheDir = cacheDirIn()
    await coldBuild(cacheDir, 3)
    const old = meta(cacheDir, B[1].key)
    await sleep(5) // a replaced entry is one created earlier
    const b = await openBuild(cacheDir, { rebuildFrom: 'install.d' })
    const run = await start(b)
    expect(hits(b)).toMatchObject([{ steps: ['root.d'], key: B[0].key }])
    expect(misses(b)).toMatchObject([{ step: 'install.d', reason: 'rebuilt as asked (--rebuild-from install.d)' }])
    expect(run.resume?.boundary).toBe(B[0])
    expect(run.next?.key).toBe(B[1].key)
    await restoreDrive(b.ctx, run, 'tree', b.live.files.tree)
    await restoreDrive(b.ctx, run, 'aux', b.live.files.aux)
    secondPhase(b)
    await snap(b.ctx, B[1], b.live)
    expect(stored(b).map((e) => e.key)).toEqual([B[1].key])
    const now = meta(cacheDir, B[1].key)
    expect(now.createdAt).toBeGreaterThan(old.createdAt)
    expect(now.files.find((f) => f.name === 'tree.qcow2')!.sha256).not.toBe(
      old.files.find((f) => f.name === 'tree.qcow2')!.sha256,
    )
    // block-device was built on the old install.d: gone with it.
    expect(entries(cacheDir)).toEqual([B[0].key, B[1].key].sort())
    expect(warnings(b)).toEqual([])
  })
})

describe('an entry the build must not reuse, stored by another build', () => {
  // After a busy begin, the key is looked up with the age begin used: an entry --rebuild-from
  // (or --cache-max-age) excludes is never the parent nor the last good phase.
  it('--rebuild-from: an old entry of a key another build holds is not reused', async () => {
    const cacheDir = cacheDirIn()
    await coldBuild(cacheDir)
    await sleep(5)
    const other = await openStore(cacheDir)
    const held = await other.begin(B[1].key, { maxAgeMs: 0 }) // a build rebuilding install.d too
    if (!('commit' in held)) throw new Error('the test could not take the key')
    const release = await other.use([B[1].key]) // a third build resumed from the old install.d
    try {
      const b = await openBuild(cacheDir, { rebuildFrom: 'root.d' })
      const run = await start(b)
      expect(run.resume).toBeUndefined()
      firstPhase(b)
      await snap(b.ctx, B[0], b.live)
      secondPhase(b)
      await snap(b.ctx, B[1], b.live)
      expect(run.lastGood).not.toBe('install.d')
      // The old root.d stays (a build uses what was built on it): the install.d captured over ours is not stored.
      expect(warnings(b)).toEqual([
        'step cache: another snapshot of root.d is in the cache (another build stored it, or uses it); the later phases are not cached',
      ])
    } finally {
      await release()
      await held.abort()
    }
  })
})

describe('a cache folder it cannot use', () => {
  const cases: [string, (dir: string) => void][] = [
    ['a file where the folder should be', (dir) => writeFileSync(dir, 'not a folder')],
    [
      'a file where its v1 folder should be',
      (dir) => {
        mkdirSync(dir)
        writeFileSync(join(dir, 'v1'), '')
      },
    ],
  ]
  it.each(cases)('%s: a warning, the build goes on uncached', async (_what, spoil) => {
    const cacheDir = cacheDirIn()
    spoil(cacheDir)
    const a = await openBuild(cacheDir)
    const run = await start(a)
    expect(warnings(a)).toEqual([
      expect.stringMatching(
        new RegExp(
          `^step cache: cannot use the cache folder ${cacheDir}: .*not a directory.*; building without it$`,
          'i',
        ),
      ),
    ])
    expect(run).toMatchObject({ off: true, resume: undefined, next: undefined, lastGood: undefined })
    expect(run.store).toBeUndefined()
    expect(existsSync(join(a.ctx.workspace, 'no-cache'))).toBe(false)
    firstPhase(a)
    await snap(a.ctx, B[0], a.live)
    expect(a.guest.freezes).toBe(0)
    expect(warnings(a)).toHaveLength(1)
  })
})
