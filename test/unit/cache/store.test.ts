// The step store over real files: commits and lookups, every way an entry can be damaged, two
// processes writing one key, a writer killed mid-write, eviction (LRU, leaves first, in-use marks
// of live and dead processes), age limits and folders of other format versions.
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { buildSync } from 'esbuild'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'

import { formatDuration, parseDuration } from '../../../src/cache/duration.js'
import {
  EntryGoneError,
  firstDifference,
  openStore,
  type EntryMeta,
  type Pending,
  type StepStore,
  type StoreOptions,
} from '../../../src/cache/store.js'
import { tempDir } from '../../helpers/temp.js'

const here = fileURLToPath(new URL('.', import.meta.url))
let child = ''
beforeAll(() => {
  child = join(tempDir('vdib-store-child.'), 'store-child.mjs')
  buildSync({
    entryPoints: [join(here, 'store-child.ts')],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    outfile: child,
    logLevel: 'error',
  })
})

const children: ChildProcess[] = []
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
})

/** Runs the child fixture; `lines` fills with what it says. */
function run(...args: string[]): {
  proc: ChildProcess
  lines: string[]
  done: Promise<number | null>
  err: () => string
} {
  const proc = spawn(process.execPath, [child, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  children.push(proc)
  const lines: string[] = []
  let err = ''
  proc.stdout.on('data', (b: Buffer) => lines.push(...b.toString().split('\n').filter(Boolean)))
  proc.stderr.on('data', (b: Buffer) => (err += b.toString()))
  const done = new Promise<number | null>((resolve) => proc.on('close', resolve))
  return { proc, lines, done, err: () => err }
}

async function until(cond: () => boolean, what: string, ms = 20_000): Promise<void> {
  for (const end = Date.now() + ms; !cond();) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

const key = (name: string) => createHash('sha256').update(name).digest('hex')
const sha = (text: string) => createHash('sha256').update(text).digest('hex')

interface Harness {
  dir: string
  store: StepStore
  warnings: string[]
  clock: { t: number }
}

async function harness(options: StoreOptions = {}, dir = tempDir('vdib-store.')): Promise<Harness> {
  const warnings: string[] = []
  const clock = { t: 1_000_000_000 }
  const store = await openStore(dir, { warn: (t) => warnings.push(t), now: () => clock.t, ...options })
  return { dir, store, warnings, clock }
}

async function begin(store: StepStore, k: string): Promise<Pending> {
  const got = await store.begin(k)
  if (!('commit' in got)) throw new Error(`busy: ${k}`)
  return got
}

/** Commits `files` as entry `k` (step install.d unless said). */
async function put(
  h: Harness,
  k: string,
  files: Record<string, string>,
  parent: string | null = null,
  step = 'install.d',
  inputs: Record<string, string> = { scripts: 'h1' },
): Promise<EntryMeta> {
  const p = await begin(h.store, k)
  for (const [name, text] of Object.entries(files)) writeFileSync(p.path(name), text)
  const r = await p.commit({ step, parent, elements: ['demo-os'], inputs, seconds: 2.5 })
  expect(r.stored).toBe(true)
  return r.meta
}

const entryDir = (h: Harness, k: string) => join(h.dir, 'v1', 'entries', k)

describe('commit, lookup, verify', () => {
  it('stores files with their sizes and checksums, renamed into entries/ whole; lookup and verify accept it', async () => {
    const h = await harness()
    const a = key('a')
    const p = await begin(h.store, a)
    expect(p.dir.startsWith(join(h.dir, 'v1', 'tmp'))).toBe(true)
    writeFileSync(p.path('tree.qcow2'), 'qcow2 bytes')
    writeFileSync(p.path('tree.map'), 'map')
    expect(existsSync(entryDir(h, a))).toBe(false)
    const r = await p.commit({ step: 'root.d', parent: null, elements: ['demo-os'], inputs: { x: '1' }, seconds: 3 })
    expect(r).toMatchObject({ stored: true, evicted: [] })
    expect(r.meta).toEqual({
      version: 1,
      key: a,
      step: 'root.d',
      parent: null,
      elements: ['demo-os'],
      createdAt: h.clock.t,
      lastUsedAt: h.clock.t,
      bytes: 14,
      files: [
        { name: 'tree.map', bytes: 3, sha256: sha('map') },
        { name: 'tree.qcow2', bytes: 11, sha256: sha('qcow2 bytes') },
      ],
      inputs: { x: '1' },
      seconds: 3,
    })
    expect(readdirSync(join(h.dir, 'v1', 'tmp'))).toEqual([])
    const e = await h.store.lookup(a)
    expect(e?.meta).toEqual(r.meta)
    expect(readFileSync(e!.path('tree.qcow2'), 'utf8')).toBe('qcow2 bytes')
    expect(await h.store.verify(e!)).toBe(true)
    // Present: begin says so instead of giving a second writer.
    const again = await h.store.begin(a)
    expect('commit' in again).toBe(false)
    expect(again).toMatchObject({ owner: undefined })

    // A child records its chain; caller-given hashes are trusted (no second read).
    const b = key('b')
    const pb = await begin(h.store, b)
    writeFileSync(pb.path('tree.qcow2'), 'delta')
    const rb = await pb.commit({
      step: 'install.d',
      parent: a,
      elements: [],
      inputs: {},
      seconds: 1,
      hashes: { 'tree.qcow2': sha('delta') },
    })
    expect(rb.entry?.chain).toEqual([a])
    expect((await h.store.lookup(b))?.chain).toEqual([a])
    expect(h.warnings).toEqual([])
  })

  it('abort discards the files and frees the key; a second begin meanwhile is busy with our pid', async () => {
    const h = await harness()
    const a = key('a')
    const p = await begin(h.store, a)
    writeFileSync(p.path('x'), 'x')
    const busy = await h.store.begin(a)
    expect('commit' in busy ? undefined : busy.owner?.pid).toBe(process.pid)
    await p.abort()
    expect(readdirSync(join(h.dir, 'v1', 'tmp'))).toEqual([])
    expect(await h.store.lookup(a)).toBeUndefined()
    const p2 = await begin(h.store, a)
    await p2.abort()
    await p2.abort() // twice is fine
  })

  it('a commit that finds the key committed already (a lock broken by a three-way race) keeps the first', async () => {
    const h = await harness()
    const other = await harness()
    const a = key('a')
    await put(other, a, { f: 'first' })
    const p = await begin(h.store, a)
    writeFileSync(p.path('f'), 'second')
    cpSync(entryDir(other, a), entryDir(h, a), { recursive: true })
    const r = await p.commit({ step: 'install.d', parent: null, elements: [], inputs: {}, seconds: 1 })
    expect(r.stored).toBe(false)
    expect(readFileSync(r.entry!.path('f'), 'utf8')).toBe('first')
    expect(readdirSync(join(h.dir, 'v1', 'tmp'))).toEqual([])
  })

  it('a commit whose parent is gone is not stored (its deltas would have no backing)', async () => {
    const h = await harness()
    const p = await begin(h.store, key('child'))
    writeFileSync(p.path('x'), 'x')
    const r = await p.commit({ step: 'install.d', parent: key('nobody'), elements: [], inputs: {}, seconds: 1 })
    expect(r.stored).toBe(false)
    expect(r.entry).toBeUndefined()
    expect(h.warnings.join('\n')).toMatch(/not stored: its parent .* is gone/)
    expect(await h.store.lookup(key('child'))).toBeUndefined()
    expect(readdirSync(join(h.dir, 'v1', 'tmp'))).toEqual([])
  })
})

describe('damaged entries are removed with a warning and absent, never used', () => {
  const cases: [string, (dir: string) => void, RegExp][] = [
    ['a truncated file', (d) => truncateSync(join(d, 'tree.qcow2'), 4), /tree\.qcow2 is truncated \(4 of 11 bytes\)/],
    ['a missing file', (d) => rmSync(join(d, 'tree.qcow2')), /tree\.qcow2 is missing/],
    ['corrupt meta.json', (d) => writeFileSync(join(d, 'meta.json'), '{"version":1,'), /meta\.json does not parse/],
    [
      'meta.json of another format version',
      (d) => {
        const m = JSON.parse(readFileSync(join(d, 'meta.json'), 'utf8')) as EntryMeta
        writeFileSync(join(d, 'meta.json'), JSON.stringify({ ...m, version: 2 }))
      },
      /format version 2/,
    ],
    [
      'meta.json naming another key',
      (d) => {
        const m = JSON.parse(readFileSync(join(d, 'meta.json'), 'utf8')) as EntryMeta
        writeFileSync(join(d, 'meta.json'), JSON.stringify({ ...m, key: key('other') }))
      },
      /names another key/,
    ],
  ]
  it.each(cases)('%s', async (_what, damage, why) => {
    const h = await harness()
    const a = key('a')
    await put(h, a, { 'tree.qcow2': 'qcow2 bytes' })
    await put(h, key('b'), { 'tree.qcow2': 'delta' }, a) // built on it: goes too
    damage(entryDir(h, a))
    expect(await h.store.lookup(a)).toBeUndefined()
    expect(h.warnings).toHaveLength(1)
    expect(h.warnings[0]).toMatch(why)
    expect(h.warnings[0]).toMatch(/unusable: .*; removed with the 1 entries built on it, it will be rebuilt/)
    expect(existsSync(entryDir(h, a))).toBe(false)
    expect(existsSync(entryDir(h, key('b')))).toBe(false)
    expect(await h.store.list()).toEqual([])
  })

  it('a deleted file', async () => {
    const h = await harness()
    await put(h, key('a'), { 'tree.qcow2': 'qcow2 bytes', 'state.json': '{}' })
    rmSync(join(entryDir(h, key('a')), 'state.json'))
    expect(await h.store.lookup(key('a'))).toBeUndefined()
    expect(h.warnings[0]).toMatch(/state\.json is missing/)
  })

  it('eviction removes entries whose meta is unusable (their size is unknown)', async () => {
    const h = await harness()
    await put(h, key('a'), { f: 'x' })
    writeFileSync(join(entryDir(h, key('a')), 'meta.json'), 'garbage')
    mkdirSync(join(h.dir, 'v1', 'entries', 'not-a-key'))
    expect(await h.store.evict()).toEqual([])
    expect(h.warnings).toEqual([
      `cache entry ${key('a').slice(0, 12)} is unusable: its meta.json does not parse; removed`,
    ])
    expect(readdirSync(join(h.dir, 'v1', 'entries'))).toEqual(['not-a-key'])
  })

  it('a file of the right size with other contents passes lookup, fails verify', async () => {
    const h = await harness()
    await put(h, key('a'), { 'tree.qcow2': 'qcow2 bytes' })
    writeFileSync(join(entryDir(h, key('a')), 'tree.qcow2'), 'QCOW2 BYTES')
    const e = await h.store.lookup(key('a'))
    expect(e).toBeDefined()
    expect(await h.store.verify(e!)).toBe(false)
    expect(h.warnings[0]).toMatch(/tree\.qcow2 does not match its checksum/)
    expect(await h.store.lookup(key('a'))).toBeUndefined()
  })

  it('verify with chain checks the ancestors too', async () => {
    const h = await harness()
    await put(h, key('a'), { 'tree.qcow2': 'base' })
    await put(h, key('b'), { 'tree.qcow2': 'delta' }, key('a'))
    writeFileSync(join(entryDir(h, key('a')), 'tree.qcow2'), 'BASE')
    const b = await h.store.lookup(key('b'))
    expect(await h.store.verify(b!)).toBe(true)
    expect(await h.store.verify(b!, { chain: true })).toBe(false)
    expect(await h.store.lookup(key('b'))).toBeUndefined() // built on a damaged entry
  })

  it('verify with ancestorFiles reads of the ancestors only the files a restore reads through them', async () => {
    const h = await harness()
    await put(h, key('a'), { 'tree.qcow2': 'tree', 'aux.qcow2': 'aux' })
    await put(h, key('b'), { 'disk.qcow2': 'disk', 'aux.qcow2': 'aux2' }, key('a'))
    writeFileSync(join(entryDir(h, key('a')), 'tree.qcow2'), 'TREE') // damaged, and not needed for disk + aux
    const b = await h.store.lookup(key('b'))
    const restored = (f: string) => f === 'disk.qcow2' || f === 'aux.qcow2'
    expect(await h.store.verify(b!, { chain: true, ancestorFiles: restored })).toBe(true)
    writeFileSync(join(entryDir(h, key('a')), 'aux.qcow2'), 'AUX')
    expect(await h.store.verify(b!, { chain: true, ancestorFiles: restored })).toBe(false)
    expect(h.warnings[0]).toMatch(/aux\.qcow2 does not match its checksum/)
  })

  it('an entry whose ancestor was deleted by hand is unusable', async () => {
    const h = await harness()
    await put(h, key('a'), { x: 'a' })
    await put(h, key('b'), { x: 'b' }, key('a'))
    rmSync(entryDir(h, key('a')), { recursive: true })
    expect(await h.store.lookup(key('b'))).toBeUndefined()
    expect(h.warnings[0]).toMatch(/its ancestor [0-9a-f]{12} is gone/)
  })
})

describe('two processes, one key', () => {
  it('built once: the other waits for the commit and hits', async () => {
    const dir = tempDir('vdib-store.')
    await openStore(dir)
    const k = key('shared')
    const a = run('build', dir, k, '1500')
    const b = run('build', dir, k, '1500')
    expect(await a.done, a.err()).toBe(0)
    expect(await b.done, b.err()).toBe(0)
    const all = [...a.lines, ...b.lines]
    expect(all.filter((l) => l === 'build')).toEqual(['build'])
    expect(all.filter((l) => l === 'stored')).toEqual(['stored'])
    expect(all).toContain('wait')
    expect(all).toContain('hit')
    expect(readdirSync(join(dir, 'v1', 'tmp'))).toEqual([])
  })

  it('four processes race to take over a dead writer’s lock: one builds, three hit', async () => {
    const dir = tempDir('vdib-store.')
    await openStore(dir)
    const k = key('stale')
    const gone = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' })
    await new Promise((r) => gone.on('close', r))
    const dead = { pid: gone.pid, hostname: hostname(), startedAt: 1, nonce: 'dead' }
    writeFileSync(join(dir, 'v1', 'locks', `${k}.lock`), JSON.stringify(dead))
    const racers = [1, 2, 3, 4].map(() => run('build', dir, k, '300'))
    for (const r of racers) expect(await r.done, r.err()).toBe(0)
    const all = racers.flatMap((r) => r.lines)
    expect(all.filter((l) => l === 'build')).toEqual(['build'])
    expect(all.filter((l) => l === 'hit')).toHaveLength(3)
    expect(readdirSync(join(dir, 'v1', 'locks'))).toEqual([])
  })

  it('the writer killed mid-write: the waiter takes the key over; the leftover is cleaned', async () => {
    const h = await harness()
    const k = key('killed')
    const w = run('hang', h.dir, k)
    await until(() => w.lines.includes('writing'), 'the writer')
    expect(readdirSync(join(h.dir, 'v1', 'tmp'))).toHaveLength(1)
    const got = await h.store.begin(k)
    if ('commit' in got) throw new Error('expected busy')
    expect(got.owner?.pid).toBe(w.proc.pid)
    const waited = got.wait(undefined, 20)
    let over = false
    void waited.then(() => (over = true))
    await new Promise((r) => setTimeout(r, 200))
    expect(over).toBe(false) // it is alive
    w.proc.kill('SIGKILL')
    await w.done
    await waited
    expect(await h.store.lookup(k)).toBeUndefined()
    const p = await begin(h.store, k) // the stale lock is taken over
    expect(await h.store.evict()).toEqual([])
    expect(readdirSync(join(h.dir, 'v1', 'tmp'))).toEqual([p.dir.split('/').pop()])
    await p.abort()
  })

  it('wait rejects when its signal aborts', async () => {
    const h = await harness()
    const w = run('hang', h.dir, key('k'))
    await until(() => w.lines.includes('writing'), 'the writer')
    const got = await h.store.begin(key('k'))
    if ('commit' in got) throw new Error('expected busy')
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 100)
    await expect(got.wait(ac.signal, 20)).rejects.toMatchObject({ name: 'AbortError' })
  })

  it('a dead writer’s lock and tmp folder are cleaned by the next open', async () => {
    const dir = tempDir('vdib-store.')
    const w = run('hang', dir, key('k'))
    await until(() => w.lines.includes('writing'), 'the writer')
    w.proc.kill('SIGKILL')
    await w.done
    await openStore(dir)
    expect(readdirSync(join(dir, 'v1', 'tmp'))).toEqual([])
  })
})

describe('eviction', () => {
  /** a ← b ← c and d, 100 bytes each, used in that order. */
  async function forest(maxSize = 1e9): Promise<Harness & { a: string; b: string; c: string; d: string }> {
    const h = await harness({ maxSize })
    const [a, b, c, d] = ['a', 'b', 'c', 'd'].map(key) as [string, string, string, string]
    const text = 'x'.repeat(100)
    await put(h, a, { f: text })
    h.clock.t += 1000
    await put(h, b, { f: text }, a)
    h.clock.t += 1000
    await put(h, c, { f: text }, b)
    h.clock.t += 1000
    await put(h, d, { f: text })
    h.clock.t += 1000
    return { ...h, a, b, c, d }
  }
  const keys = (ms: EntryMeta[]) => ms.map((m) => m.key)

  it('least recently used first, leaves first: an entry some kept entry builds on stays', async () => {
    const h = await forest()
    expect(await h.store.totalBytes()).toBe(400)
    // a is the least recently used but c and b are built on it.
    expect(keys(await h.store.evict({ maxSize: 250 }))).toEqual([h.c, h.b])
    expect(keys(await h.store.list())).toEqual([h.a, h.d])
    expect(await h.store.totalBytes()).toBe(200)
  })

  it('use() makes an entry the most recently used', async () => {
    const h = await forest()
    const release = await h.store.use([h.c])
    await release()
    expect((await h.store.lookup(h.c))?.meta.lastUsedAt).toBe(h.clock.t)
    expect(keys(await h.store.evict({ maxSize: 300 }))).toEqual([h.d])
  })

  it('the cap is kept after every commit, never evicting what was just stored or its ancestors', async () => {
    const h = await forest()
    const small = await openStore(h.dir, { maxSize: 150, now: () => h.clock.t })
    // e (100 bytes, built on d) makes 500: the least recently used leaves go, c, b, a; d and e stay
    // although together they are over the cap.
    const p = await begin(small, key('e'))
    writeFileSync(p.path('f'), 'y'.repeat(100))
    const r = await p.commit({ step: 'finalise.d', parent: h.d, elements: [], inputs: {}, seconds: 1 })
    expect(keys(r.evicted)).toEqual([h.c, h.b, h.a])
    expect(keys(await small.list())).toEqual([h.d, key('e')])
  })

  it('an entry in use and its ancestors are never evicted; released, they may be', async () => {
    const h = await forest()
    const release = await h.store.use([h.c])
    expect(keys(await h.store.evict({ all: true }))).toEqual([h.d])
    expect(keys(await h.store.evict({ maxSize: 0 }))).toEqual([])
    expect(keys(await h.store.list())).toEqual([h.a, h.b, h.c])
    await release()
    expect(keys(await h.store.evict({ all: true }))).toEqual([h.c, h.b, h.a])
    expect(await h.store.totalBytes()).toBe(0)
  })

  it('another live process’s mark protects; once it is dead its mark is ignored', async () => {
    const h = await forest()
    const u = run('use', h.dir, h.b)
    await until(() => u.lines.includes('using'), 'the user', 20_000)
    expect(keys(await h.store.evict({ all: true }))).toEqual([h.c, h.d])
    u.proc.kill('SIGKILL')
    await u.done
    expect(keys(await h.store.evict({ all: true }))).toEqual([h.b, h.a])
    expect(readdirSync(join(h.dir, 'v1', 'locks')).filter((n) => n.startsWith('use.'))).toEqual([])
  })

  it('use() of an entry that is gone says so (a miss for the caller)', async () => {
    const h = await forest()
    await h.store.evict({ all: true })
    await expect(h.store.use([h.a])).rejects.toBeInstanceOf(EntryGoneError)
    expect(readdirSync(join(h.dir, 'v1', 'locks')).filter((n) => n.startsWith('use.'))).toEqual([])
  })

  it('prune --older-than: entries last used longer ago, leaves first', async () => {
    const h = await forest()
    // now - lastUsedAt: a 4 s, b 3 s, c 2 s, d 1 s. Over 2.5 s: a and b, but c is built on them.
    expect(keys(await h.store.evict({ olderThanMs: 2500 }))).toEqual([])
    // Over 1.5 s: c, and then b and a are leaves.
    expect(keys(await h.store.evict({ olderThanMs: 1500 }))).toEqual([h.c, h.b, h.a])
    expect(keys(await h.store.list())).toEqual([h.d])
  })
})

describe('ages, versions, listing', () => {
  it('an entry older than maxAge is absent but kept; begin with maxAge rebuilds it and replaces it and its subtree', async () => {
    const h = await harness()
    const a = key('a')
    await put(h, a, { f: 'old' })
    await put(h, key('b'), { f: 'child' }, a)
    h.clock.t += 10 * 3_600_000
    expect(await h.store.lookup(a, { maxAgeMs: 3_600_000 })).toBeUndefined()
    expect(await h.store.lookup(a)).toBeDefined()
    expect(h.warnings).toEqual([])
    const p = await h.store.begin(a, { maxAgeMs: 3_600_000 })
    if (!('commit' in p)) throw new Error('expected a pending')
    writeFileSync(p.path('f'), 'new')
    const r = await p.commit({ step: 'install.d', parent: null, elements: [], inputs: {}, seconds: 1 })
    expect(r.stored).toBe(true)
    expect(readFileSync(join(entryDir(h, a), 'f'), 'utf8')).toBe('new')
    expect(await h.store.lookup(key('b'))).toBeUndefined() // built on the old one
    expect((await h.store.lookup(a, { maxAgeMs: 3_600_000 }))?.meta.createdAt).toBe(h.clock.t)
  })

  it('a folder of another format version is left alone, with a warning', async () => {
    const dir = tempDir('vdib-store.')
    mkdirSync(join(dir, 'v2', 'entries', 'abc'), { recursive: true })
    writeFileSync(join(dir, 'v2', 'entries', 'abc', 'meta.json'), '{"version":2}')
    const h = await harness({}, dir)
    expect(h.warnings).toEqual([
      `the cache folder ${join(dir, 'v2')} is of another format version (this virt-dib uses v1); left alone, remove it to free its space`,
    ])
    await put(h, key('a'), { f: 'x' })
    await h.store.evict({ all: true })
    expect(readFileSync(join(dir, 'v2', 'entries', 'abc', 'meta.json'), 'utf8')).toBe('{"version":2}')
  })

  it('list and totals; nearest names the closest entry of a step; firstDifference the input that changed', async () => {
    const h = await harness()
    await put(h, key('a'), { f: 'aaa' }, null, 'root.d', { scripts: 's1', 'env:DIB_RELEASE': 'r1' })
    h.clock.t += 1
    await put(h, key('b'), { f: 'bb' }, null, 'install.d', { scripts: 's2', 'env:DIB_RELEASE': 'r1', pkgs: 'p1' })
    h.clock.t += 1
    await put(h, key('c'), { f: 'c' }, null, 'install.d', { scripts: 's3', 'env:DIB_RELEASE': 'r2', pkgs: 'p1' })
    const list = await h.store.list()
    expect(list.map((m) => [m.step, m.bytes])).toEqual([
      ['root.d', 3],
      ['install.d', 2],
      ['install.d', 1],
    ])
    expect(await h.store.totalBytes()).toBe(6)
    const want = { scripts: 's9', 'env:DIB_RELEASE': 'r1', pkgs: 'p1' }
    const near = await h.store.nearest('install.d', want)
    expect(near?.key).toBe(key('b'))
    expect(firstDifference(want, near!.inputs)).toBe('scripts')
    expect(await h.store.nearest('finalise.d', want)).toBeUndefined()
    expect(firstDifference({ a: '1', b: '2' }, { a: '1' })).toBe('b')
    expect(firstDifference({ a: '1' }, { a: '1', z: '3' })).toBe('z')
    expect(firstDifference({ a: '1' }, { a: '1' })).toBeUndefined()
  })

  it('rejects what is not a key, and files that cannot be entry files', async () => {
    const h = await harness()
    await expect(h.store.lookup('../etc')).rejects.toThrow(/not a cache key/)
    const p = await begin(h.store, key('a'))
    expect(() => p.path('meta.json')).toThrow(/not an entry file name/)
    mkdirSync(join(p.dir, 'sub'))
    await expect(p.commit({ step: 's', parent: null, elements: [], inputs: {}, seconds: 0 })).rejects.toThrow(
      /regular files only/,
    )
    expect(readdirSync(join(h.dir, 'v1', 'tmp'))).toEqual([])
    expect('commit' in (await h.store.begin(key('a')))).toBe(true) // the failed commit released the key
  })
})

describe('durations', () => {
  it('parses s, m, h, d, w (fractions allowed) and formats ages', () => {
    expect(parseDuration('30m')).toBe(30 * 60_000)
    expect(parseDuration('2h')).toBe(2 * 3_600_000)
    expect(parseDuration('7d')).toBe(7 * 86_400_000)
    expect(parseDuration('1w')).toBe(7 * 86_400_000)
    expect(parseDuration('1.5h')).toBe(5_400_000)
    expect(parseDuration('45s')).toBe(45_000)
    for (const bad of ['', '5', 'h', '5H', '-1d', '1 d', '2days']) expect(parseDuration(bad)).toBeUndefined()
    expect(formatDuration(45_000)).toBe('45 s')
    expect(formatDuration(12 * 60_000)).toBe('12 min')
    expect(formatDuration(2 * 3_600_000)).toBe('2 h')
    expect(formatDuration(3 * 86_400_000)).toBe('3 d')
  })
})
