// Snapshots of a changing raw disk as a chain of qcow2 deltas: each flattens back to the disk, each holds only changes.
import { execFileSync, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, existsSync, openSync, readdirSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import {
  ClusterMap,
  CorruptMapError,
  decodeMap,
  encodeMap,
  captureDelta,
  HASH_BYTES,
  materialize,
  snapshotDelta,
} from '../../../src/cache/delta.js'
import { CLUSTER_SIZE } from '../../../src/cache/qcow2.js'
import { BuildAbortedError } from '../../../src/errors.js'
import { tempDir } from '../../helpers/temp.js'

const MiB = 2 ** 20
const C = CLUSTER_SIZE

function expectCleanCheck(file: string): void {
  const r = spawnSync('qemu-img', ['check', '--output=json', file], { encoding: 'utf8' })
  expect(r.status, r.stdout + r.stderr).toBe(0)
  const report = JSON.parse(r.stdout) as Record<string, unknown>
  expect(report['check-errors']).toBe(0)
  expect(report).not.toHaveProperty('leaks')
}

/** qemu-img compare: the two raw images read the same. */
function expectSameRaw(a: string, b: string): void {
  const r = spawnSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', a, b], { encoding: 'utf8' })
  expect(r.status, r.stdout + r.stderr).toBe(0)
}

function writeAt(file: string, at: number, data: Buffer): void {
  const fd = openSync(file, 'r+')
  try {
    writeSync(fd, data, 0, data.length, at)
  } finally {
    closeSync(fd)
  }
}

function sparse(file: string, size: number): void {
  writeFileSync(file, '')
  truncateSync(file, size)
}

const punch = (file: string, at: number, len: number) =>
  execFileSync('fallocate', ['--punch-hole', '--offset', String(at), '--length', String(len), file])

/** File size of a delta holding `data` clusters in `l2` L2 tables (one L1 cluster, one refcount block). */
const deltaBytes = (data: number, l2: number) => (1 + 1 + data + l2 + 2) * C

describe('captureDelta', () => {
  it('holds what the drive had when captured, past its memory in a spool file; the delta is written later over its parent', async () => {
    const dir = tempDir('vdib-capture.')
    const live = join(dir, 'live.raw')
    const size = 64 * MiB
    sparse(live, size)
    writeAt(live, 0, randomBytes(8 * C))
    const s1 = await snapshotDelta(live, undefined, join(dir, 's1.qcow2'), { virtualSize: size })
    writeAt(live, 2 * C, randomBytes(30 * C)) // clusters 2-31 change or appear
    writeAt(live, 0, Buffer.alloc(C)) // cluster 0 zeroed
    const then = join(dir, 'then.raw')
    execFileSync('cp', ['--sparse=always', live, then])
    const spool = join(dir, 'live.spool')
    const c = await captureDelta(live, s1.map, { virtualSize: size, spool, memoryBytes: 4 * C })
    expect(existsSync(spool)).toBe(true) // 30 changed clusters, 4 kept in memory
    expect({ changed: c.changedClusters, zeroed: c.zeroedClusters }).toEqual({ changed: 30, zeroed: 1 })
    // The drive moves on before the delta is written: the delta is of the capture.
    writeAt(live, 0, randomBytes(40 * C))
    const out = join(dir, 's2.qcow2')
    await c.write(out, { backing: { file: 's1.qcow2', format: 'qcow2' }, compress: true })
    await c.discard()
    expect(existsSync(spool)).toBe(false)
    expectCleanCheck(out)
    const flat = join(dir, 'flat.raw')
    await materialize(out, flat)
    expectSameRaw(flat, then)
  })
})

describe('snapshotDelta + materialize', () => {
  it('a chain of three deltas over a changing disk flattens back to the disk at each step', async () => {
    const dir = tempDir('vdib-delta.')
    const live = join(dir, 'live.raw')
    const size = 1024 * MiB // two L2 tables
    sparse(live, size)
    const a = randomBytes(5 * C)
    writeAt(live, 0, a) // clusters 0-4
    writeAt(live, 40 * C + 100, randomBytes(300)) // part of cluster 40
    writeAt(live, 60 * MiB, randomBytes(2 * C)) // clusters 960-961
    writeAt(live, 20 * C, Buffer.alloc(3 * C)) // allocated but zero: like a hole

    const s1 = await snapshotDelta(live, undefined, join(dir, 's1.qcow2'), { virtualSize: size })
    expect(s1.changedClusters).toBe(8)
    expect(s1.zeroedClusters).toBe(0)
    expect([...s1.map.indexes]).toEqual([0, 1, 2, 3, 4, 40, 960, 961])
    expect(s1.bytes).toBe(deltaBytes(8, 1))
    expect(statSync(join(dir, 's1.qcow2')).size).toBe(s1.bytes)
    expectCleanCheck(join(dir, 's1.qcow2'))
    await materialize(join(dir, 's1.qcow2'), join(dir, 'm1.raw'))
    expectSameRaw(live, join(dir, 'm1.raw'))

    // Step 2: new data, the same bytes again (not in the delta), a punched hole and zeros written.
    writeAt(live, 10 * C, randomBytes(C)) // new cluster 10
    writeAt(live, 0, a.subarray(0, 2 * C)) // clusters 0-1, identical bytes
    writeAt(live, 2 * C + 7, Buffer.from('changed')) // cluster 2 changes
    punch(live, 3 * C, C) // cluster 3 becomes a hole
    writeAt(live, 40 * C, Buffer.alloc(C)) // cluster 40 is written with zeros
    const parent = decodeMap(encodeMap(s1.map))
    const s2 = await snapshotDelta(live, parent, join(dir, 's2.qcow2'), {
      virtualSize: size,
      backing: { file: 's1.qcow2', format: 'qcow2' },
    })
    expect(s2.changedClusters).toBe(2) // 2, 10
    expect(s2.zeroedClusters).toBe(2) // 3, 40
    expect([...s2.map.indexes]).toEqual([0, 1, 2, 4, 10, 960, 961])
    expect(s2.bytes).toBe(deltaBytes(2, 1))
    expectCleanCheck(join(dir, 's2.qcow2'))
    await materialize(join(dir, 's2.qcow2'), join(dir, 'm2.raw'))
    expectSameRaw(live, join(dir, 'm2.raw'))

    // Step 3: clusters in the second L2 table (the last one too), a cluster zeroed in s2 gets data again.
    writeAt(live, 40 * C, randomBytes(C))
    writeAt(live, 600 * MiB, randomBytes(C))
    writeAt(live, size - C, randomBytes(C))
    punch(live, 960 * C, 2 * C)
    const s3 = await snapshotDelta(live, s2.map, join(dir, 's3.qcow2'), {
      virtualSize: size,
      backing: { file: 's2.qcow2', format: 'qcow2' },
    })
    expect(s3.changedClusters).toBe(3) // 40, 9600, 16383
    expect(s3.zeroedClusters).toBe(2) // 960, 961
    expect(s3.bytes).toBe(deltaBytes(3, 2))
    expectCleanCheck(join(dir, 's3.qcow2'))
    // materialize replaces an existing file
    await materialize(join(dir, 's3.qcow2'), join(dir, 'm2.raw'))
    expectSameRaw(live, join(dir, 'm2.raw'))
    expect(statSync(join(dir, 'm2.raw')).size).toBe(size)
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([])

    // Nothing changed: an empty delta.
    const s4 = await snapshotDelta(live, s3.map, join(dir, 's4.qcow2'), {
      virtualSize: size,
      backing: { file: 's3.qcow2', format: 'qcow2' },
    })
    expect([s4.changedClusters, s4.zeroedClusters, s4.bytes]).toEqual([0, 0, 4 * C])
    await materialize(join(dir, 's4.qcow2'), join(dir, 'm4.raw'))
    expectSameRaw(live, join(dir, 'm4.raw'))
  })

  it('a virtual size that is not a multiple of 64 KiB', async () => {
    const dir = tempDir('vdib-delta.')
    const live = join(dir, 'live.raw')
    const size = 3 * MiB + 4608
    sparse(live, size)
    writeAt(live, size - 4608, randomBytes(4608))
    writeAt(live, 0, randomBytes(1000))
    const s1 = await snapshotDelta(live, undefined, join(dir, 's1.qcow2'), { virtualSize: size })
    expect(s1.changedClusters).toBe(2)
    expectCleanCheck(join(dir, 's1.qcow2'))
    await materialize(join(dir, 's1.qcow2'), join(dir, 'm.raw'))
    expect(statSync(join(dir, 'm.raw')).size).toBe(size)
    expectSameRaw(live, join(dir, 'm.raw'))
    writeAt(live, size - 10, Buffer.from('0123456789'))
    const s2 = await snapshotDelta(live, s1.map, join(dir, 's2.qcow2'), {
      virtualSize: size,
      backing: { file: 's1.qcow2', format: 'qcow2' },
    })
    expect(s2.changedClusters).toBe(1)
    await materialize(join(dir, 's2.qcow2'), join(dir, 'm.raw'))
    expectSameRaw(live, join(dir, 'm.raw'))
  })

  it('a cancelled snapshot leaves no file; a wrong size is refused', async () => {
    const dir = tempDir('vdib-delta.')
    const live = join(dir, 'live.raw')
    sparse(live, 32 * MiB)
    writeAt(live, 0, randomBytes(16 * MiB))
    const before = new AbortController()
    before.abort()
    await expect(
      snapshotDelta(live, undefined, join(dir, 'a.qcow2'), { virtualSize: 32 * MiB, signal: before.signal }),
    ).rejects.toBeInstanceOf(BuildAbortedError)
    // Aborted while it reads: as soon as the delta file exists.
    const ac = new AbortController()
    const out = join(dir, 'b.qcow2')
    const p = snapshotDelta(live, undefined, out, { virtualSize: 32 * MiB, signal: ac.signal })
    const poll = () => (existsSync(out) ? ac.abort() : setImmediate(poll))
    poll()
    await expect(p).rejects.toBeInstanceOf(BuildAbortedError)
    expect(existsSync(out)).toBe(false)
    await expect(snapshotDelta(live, undefined, join(dir, 'c.qcow2'), { virtualSize: 64 * MiB })).rejects.toThrow(
      /the file has 33554432 bytes, the drive 67108864/,
    )
    expect(existsSync(join(dir, 'c.qcow2'))).toBe(false)
    await expect(
      snapshotDelta(live, new ClusterMap(new Uint32Array(0), Buffer.alloc(0)), join(dir, 'c.qcow2'), {
        virtualSize: 32 * MiB,
      }),
    ).rejects.toThrow(/parent map needs a backing file/)
  })

  it('a failed materialize leaves no temporary file and the old raw file in place', async () => {
    const dir = tempDir('vdib-delta.')
    sparse(join(dir, 'm.raw'), 1234 * 512)
    await expect(materialize(join(dir, 'missing.qcow2'), join(dir, 'm.raw'))).rejects.toThrow(/qemu-img/)
    expect(readdirSync(dir)).toEqual(['m.raw'])
  })

  it('throughput: ~200 MB of data in a 64 GiB sparse disk (printed, not asserted)', async () => {
    const dir = tempDir('vdib-delta.')
    const live = join(dir, 'live.raw')
    const size = 64 * 2 ** 30
    sparse(live, size)
    const chunk = randomBytes(8 * MiB)
    for (let i = 0; i < 25; i++) writeAt(live, i * 2 ** 30 * 2 + (i % 3) * MiB, chunk)
    let t = performance.now()
    const s1 = await snapshotDelta(live, undefined, join(dir, 's1.qcow2'), { virtualSize: size })
    const first = (performance.now() - t) / 1000
    for (let i = 0; i < 10; i++) writeAt(live, i * 2 ** 30 * 2, randomBytes(MiB))
    t = performance.now()
    const s2 = await snapshotDelta(live, s1.map, join(dir, 's2.qcow2'), {
      virtualSize: size,
      backing: { file: 's1.qcow2', format: 'qcow2' },
    })
    const second = (performance.now() - t) / 1000
    expect(s1.changedClusters).toBe((25 * 8 * MiB) / C)
    expect(s2.changedClusters).toBe((10 * MiB) / C)
    t = performance.now()
    await materialize(join(dir, 's2.qcow2'), join(dir, 'm.raw'))
    const mat = (performance.now() - t) / 1000
    expectSameRaw(live, join(dir, 'm.raw'))
    const mb = (25 * 8 * MiB) / 1e6
    console.log(
      `snapshotDelta ${mb.toFixed(0)} MB in 64 GiB: first ${first.toFixed(2)} s (${(mb / first).toFixed(0)} MB/s), ` +
        `second with 10 MiB changed ${second.toFixed(2)} s (${(mb / second).toFixed(0)} MB/s read); ` +
        `materialize ${mat.toFixed(2)} s`,
    )
  })
})

describe('cluster maps', () => {
  const make = (indexes: number[]) => {
    const hashes = randomBytes(indexes.length * HASH_BYTES)
    return new ClusterMap(Uint32Array.from(indexes), hashes)
  }

  it('encode and decode round trip: empty, consecutive, large gaps, the largest index', () => {
    for (const indexes of [[], [0], [0, 1, 2, 3, 1000, 1001, 2 ** 21, 2 ** 28 + 5, 2 ** 32 - 1], [7]]) {
      const m = make(indexes)
      const back = decodeMap(encodeMap(m))
      expect([...back.indexes]).toEqual(indexes)
      expect(back.hashes.equals(m.hashes)).toBe(true)
    }
    const m = make(Array.from({ length: 10_000 }, (_, i) => i))
    // one byte of index per consecutive cluster
    expect(encodeMap(m).length).toBe(24 + 10_000 * (1 + HASH_BYTES) + 16)
    expect(m.get(4321)?.equals(m.hashAt(4321))).toBe(true)
    expect(make([3, 9]).get(5)).toBeUndefined()
  })

  it('rejects truncated, corrupt, foreign and future buffers with a clear error', () => {
    const good = encodeMap(make([1, 2, 50, 51, 52]))
    const flipped = Buffer.from(good)
    flipped[30]! ^= 1
    const future = Buffer.from(good)
    future.writeUInt32BE(2, 8)
    const cases: Array<[Buffer, RegExp]> = [
      [good.subarray(0, good.length - 1), /truncated/],
      [good.subarray(0, 10), /too short/],
      [Buffer.concat([good, Buffer.alloc(1)]), /truncated/],
      [flipped, /checksum mismatch/],
      [Buffer.from('not a map at all, really not a map'), /bad magic/],
      [future, /version 2/],
    ]
    for (const [buf, why] of cases) {
      expect(() => decodeMap(buf)).toThrow(CorruptMapError)
      expect(() => decodeMap(buf)).toThrow(why)
    }
  })
})
