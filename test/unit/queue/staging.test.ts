// A worker's staging folders and work folder: names, the ledger, outputs moved into place, the
// liveness check (a reused pid is not the worker), the sweep of dead workers' folders and mounts.
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { readStat } from '../../../src/host/proc.js'
import { runProcess } from '../../../src/host/spawn.js'
import {
  WorkDir,
  isAlive,
  moveIntoPlace,
  removeEarlierStaging,
  sha256File,
  stagingDirFor,
  sweepDeadWorkers,
  workDirName,
} from '../../../src/queue/staging.js'
import { tempDir } from '../../helpers/temp.js'

const tmp = tempDir('vdib-staging.')
const host = hostname()
const ledger = (dir: string) => JSON.parse(readFileSync(join(dir, 'ledger.json'), 'utf8'))

/** A pid that is not running now (a child that has exited). */
async function deadPid(): Promise<number> {
  let pid = 0
  await runProcess('sh', ['-c', 'echo $$'], { onStdout: (t) => (pid ||= Number(t.trim())) })
  return pid
}

describe('names', () => {
  it('puts a job’s staging folder beside its output, hidden, named after the worker and the job', () => {
    expect(stagingDirFor('/srv/out/img', 'h1', 42, 'build-abc')).toBe('/srv/out/.virt-dib-part.h1.42.build-abc')
    expect(workDirName('h1', 42)).toBe('h1.42')
  })
})

describe('WorkDir', () => {
  it('keeps a ledger of its staging folders, with the pid and start time of its worker', async () => {
    const root = join(tmp, 'wd1')
    const w = await WorkDir.open(root, host)
    expect(w.dir).toBe(join(root, `${host}.${process.pid}`))
    expect(ledger(w.dir)).toEqual({
      v: 1,
      host,
      pid: process.pid,
      startTime: readStat(process.pid)!.startTime,
      staging: [],
    })
    await Promise.all([w.addStaging('/a'), w.addStaging('/b')])
    expect(ledger(w.dir).staging).toEqual(['/a', '/b'])
    await w.removeStaging('/a')
    expect(ledger(w.dir).staging).toEqual(['/b'])
    expect(readdirSync(w.dir)).toEqual(['ledger.json'])
    await w.remove()
    expect(existsSync(w.dir)).toBe(false)
  })

  it('sweeps a folder of its own name first: a dead process that had its pid', async () => {
    const root = join(tmp, 'wd2')
    const old = join(root, `${host}.${process.pid}`)
    const staging = join(tmp, 'old-staging')
    mkdirSync(join(old, 'dib.x'), { recursive: true })
    mkdirSync(staging)
    writeFileSync(
      join(old, 'ledger.json'),
      JSON.stringify({ v: 1, host, pid: process.pid, startTime: 1, staging: [staging] }),
    )
    const w = await WorkDir.open(root, host)
    expect(existsSync(staging)).toBe(false)
    expect(readdirSync(w.dir)).toEqual(['ledger.json'])
    await w.remove()
  })
})

describe('isAlive', () => {
  it('is this process with its start time, not with another; not a pid that is gone', async () => {
    const st = readStat(process.pid)!
    expect(isAlive(process.pid)).toBe(true)
    expect(isAlive(process.pid, st.startTime)).toBe(true)
    expect(isAlive(process.pid, st.startTime + 1)).toBe(false)
    expect(isAlive(await deadPid())).toBe(false)
  })
})

describe('sweepDeadWorkers', () => {
  it('removes dead workers’ folders of this host (mounts detached first, staging in the ledger), nothing else', async () => {
    const root = join(tmp, 'sweep')
    const dead = await deadPid()
    const deadDir = join(root, `${host}.${dead}`)
    const staging = join(tmp, `.virt-dib-part.${host}.${dead}.build-1`)
    mkdirSync(join(deadDir, 'dib.1', 'mnt'), { recursive: true })
    mkdirSync(staging)
    writeFileSync(join(staging, 'img.qcow2'), 'partial')
    writeFileSync(
      join(deadDir, 'ledger.json'),
      JSON.stringify({ v: 1, host, pid: dead, startTime: 5, staging: [staging] }),
    )
    // No ledger and a pid that is gone: dead too (it died before writing one).
    const noLedger = join(root, `${host}.${await deadPid()}`)
    mkdirSync(noLedger, { recursive: true })
    // No ledger but alive: maybe starting, kept. Another host's, and a name that is not a worker's: kept.
    const starting = join(root, `${host}.${process.pid}`)
    const other = join(root, `other-${host}.${dead}`)
    const stray = join(root, `${host}.x1`)
    for (const d of [starting, other, stray]) mkdirSync(d)

    // A host script's child that outlived its worker, still in the worker's folder.
    const orphan = spawn('sleep', ['61.5'], { cwd: join(deadDir, 'dib.1'), stdio: 'ignore' })
    const gone = new Promise((r) => orphan.once('exit', (_code, sig) => r(sig)))
    let mounts = [join(deadDir, 'dib.1', 'mnt')]
    const unmounted: string[] = []
    const r = await sweepDeadWorkers(root, host, {
      mounts: () => mounts,
      unmount: async (m) => {
        unmounted.push(m)
        mounts = mounts.filter((x) => x !== m)
      },
    })
    expect(await gone).toBe('SIGKILL')
    expect(unmounted).toEqual([join(deadDir, 'dib.1', 'mnt')])
    expect(r.swept.sort()).toEqual([deadDir, noLedger].sort())
    expect(r.problems).toEqual([])
    expect(existsSync(deadDir) || existsSync(noLedger) || existsSync(staging)).toBe(false)
    for (const d of [starting, other, stray]) expect(existsSync(d)).toBe(true)
  })

  it('skips its own folder, and says what it could not remove', async () => {
    const root = join(tmp, 'sweep2')
    const mine = join(root, `${host}.${await deadPid()}`)
    const stuck = join(root, `${host}.${await deadPid()}`)
    mkdirSync(mine, { recursive: true })
    mkdirSync(join(stuck, 'dib.2', 'fuse'), { recursive: true })
    const mount = join(stuck, 'dib.2', 'fuse')
    const r = await sweepDeadWorkers(root, host, {
      self: mine,
      alive: () => false,
      mounts: () => [mount],
      unmount: async () => undefined, // it stays mounted
    })
    expect(r.swept).toEqual([])
    expect(r.problems).toHaveLength(1)
    expect(r.problems[0]).toContain(`cannot remove ${stuck}`)
    expect(existsSync(mine)).toBe(true)
    // Never walked into the mount.
    expect(existsSync(mount)).toBe(true)
  })
})

describe('moveIntoPlace', () => {
  it('moves every entry in, replacing old files and a whole old .d folder, leaving engine temporaries', async () => {
    const dir = join(tmp, 'place')
    const staging = join(dir, '.virt-dib-part.h.1.build-2')
    mkdirSync(join(staging, 'img.d'), { recursive: true })
    writeFileSync(join(staging, 'img.qcow2'), 'new')
    writeFileSync(join(staging, 'img.d', 'manifest'), 'new')
    writeFileSync(join(staging, '.img.qcow2.vdib-0a1b2c3d.tmp'), 'tmp')
    mkdirSync(join(dir, 'img.d'))
    writeFileSync(join(dir, 'img.qcow2'), 'old')
    writeFileSync(join(dir, 'img.d', 'stale'), 'old')
    const moved = await moveIntoPlace(staging, dir)
    expect(moved.sort()).toEqual([join(dir, 'img.d'), join(dir, 'img.qcow2')])
    expect(readFileSync(join(dir, 'img.qcow2'), 'utf8')).toBe('new')
    expect(readdirSync(join(dir, 'img.d'))).toEqual(['manifest'])
    expect(readdirSync(dir).sort()).toEqual(['.virt-dib-part.h.1.build-2', 'img.d', 'img.qcow2'])
    expect(readdirSync(staging)).toEqual(['.img.qcow2.vdib-0a1b2c3d.tmp'])
  })

  it('puts everything back when a move fails', async () => {
    const dir = join(tmp, 'place2')
    const staging = join(dir, '.virt-dib-part.h.1.build-3')
    mkdirSync(staging, { recursive: true })
    writeFileSync(join(staging, 'a.qcow2'), 'new')
    // A folder cannot be renamed into itself: the second move fails.
    mkdirSync(join(staging, 'b.d'))
    writeFileSync(join(dir, 'a.qcow2'), 'old')
    const bad = join(staging, 'b.d')
    const e = await moveIntoPlace(staging, bad).catch((x: unknown) => x)
    expect(e).toBeInstanceOf(Error)
    expect((e as Error).message).toMatch(/^cannot put the outputs in place in /)
    expect(readFileSync(join(dir, 'a.qcow2'), 'utf8')).toBe('old')
    expect(readdirSync(staging).sort()).toEqual(['a.qcow2', 'b.d'])
  })
})

describe('removeEarlierStaging', () => {
  it('removes the staging folders of the same job but the one kept, nothing else', async () => {
    const dir = join(tmp, 'earlier')
    const mine = join(dir, '.virt-dib-part.h.2.build-9')
    const earlier = join(dir, '.virt-dib-part.other.1.build-9')
    const otherJob = join(dir, '.virt-dib-part.other.1.build-99')
    for (const d of [mine, earlier, otherJob]) mkdirSync(d, { recursive: true })
    writeFileSync(join(earlier, 'img.qcow2'), 'partial')
    expect(await removeEarlierStaging(dir, 'build-9', mine)).toEqual([earlier])
    expect(readdirSync(dir).sort()).toEqual(['.virt-dib-part.h.2.build-9', '.virt-dib-part.other.1.build-99'])
  })
})

describe('sha256File', () => {
  it('hashes a file by streaming it', async () => {
    const p = join(tmp, 'h.bin')
    const data = Buffer.alloc(3 * 1024 * 1024 + 7, 7)
    writeFileSync(p, data)
    expect(await sha256File(p)).toBe(createHash('sha256').update(data).digest('hex'))
  })
})
