// The qcow2 delta writer against the real qemu-img: check finds no errors or leaks, the data reads back.
import { execFileSync, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { hashFile } from '../../../src/cache/file-hash.js'
import { CLUSTER_SIZE, openQcow2Delta } from '../../../src/cache/qcow2.js'
import { tempDir } from '../../helpers/temp.js'

const GiB = 2 ** 30

/** qemu-img check: exit 0 and no errors, leaks or corruptions in its report. */
function expectCleanCheck(file: string): void {
  const r = spawnSync('qemu-img', ['check', '--output=json', file], { encoding: 'utf8' })
  expect(r.stderr).toBe('')
  expect(r.status).toBe(0)
  const report = JSON.parse(r.stdout) as Record<string, unknown>
  expect(report['check-errors']).toBe(0)
  expect(report).not.toHaveProperty('leaks')
  expect(report).not.toHaveProperty('corruptions')
}

function info(file: string): Record<string, unknown> {
  return JSON.parse(execFileSync('qemu-img', ['info', '--output=json', file], { encoding: 'utf8' })) as Record<
    string,
    unknown
  >
}

/** The image flattened to raw bytes (small images only). */
function flatten(file: string, dir: string): Buffer {
  const raw = join(dir, 'flat.raw')
  execFileSync('qemu-img', ['convert', '-O', 'raw', file, raw])
  return readFileSync(raw)
}

const fill = (v: number, n = CLUSTER_SIZE) => Buffer.alloc(n, v)

describe('qcow2 delta writer', () => {
  it('writes an image qemu-img checks clean, with data across L2 tables and zero entries', async () => {
    const dir = tempDir('vdib-qcow2.')
    const file = join(dir, 'a.qcow2')
    const size = 64 * GiB
    const w = await openQcow2Delta(file, { virtualSize: size })
    const indexes = [0, 1, 7, 8191, 8192, 8193, 100_000, size / CLUSTER_SIZE - 1]
    for (const [n, i] of indexes.entries()) {
      if (i === 7) await w.cluster(5, null)
      await w.cluster(i, fill(n + 1))
    }
    const r = await w.finish()
    expectCleanCheck(file)
    expect(r.bytes).toBe(statSync(file).size)
    expect(r.sha256).toBe((await hashFile(file)).sha256)
    // header + L1 + 8 data + 4 L2 tables (clusters 0.., 8192.., 98304.., the last) + refcount block + table
    expect(r.bytes).toBe((2 + indexes.length + 4 + 2) * CLUSTER_SIZE)
    const i = info(file)
    expect(i['virtual-size']).toBe(size)
    expect(i).not.toHaveProperty('backing-filename')
    const map = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', file], { encoding: 'utf8' })) as Array<{
      start: number
      length: number
      data: boolean
    }>
    const data = map
      .filter((e) => e.data)
      .flatMap((e) => Array.from({ length: e.length / CLUSTER_SIZE }, (_, k) => e.start / CLUSTER_SIZE + k))
    expect(data).toEqual(indexes)
  })

  it('compressed: packed runs across host clusters, over a backing file and among plain clusters, check clean and read back', async () => {
    const dir = tempDir('vdib-qcow2z.')
    const size = 8192 * 3 * CLUSTER_SIZE + 4096 // three L2 tables and a short last cluster
    const clusters = size / CLUSTER_SIZE
    const base = join(dir, 'base.qcow2')
    const b = await openQcow2Delta(base, { virtualSize: size })
    for (let i = 0; i < clusters; i += 97)
      await b.cluster(i, fill(0xee, Math.min(CLUSTER_SIZE, size - i * CLUSTER_SIZE)))
    await b.finish()
    const expected = Buffer.alloc(size)
    for (let i = 0; i < clusters; i += 97) expected.fill(0xee, i * CLUSTER_SIZE, Math.min(size, (i + 1) * CLUSTER_SIZE))
    const file = join(dir, 'z.qcow2')
    const w = await openQcow2Delta(file, {
      virtualSize: size,
      compress: true,
      backing: { file: 'base.qcow2', format: 'qcow2' },
    })
    let plain = 0
    for (let i = 0; i < clusters; i += 3) {
      const n = Math.min(CLUSTER_SIZE, size - i * CLUSTER_SIZE)
      let data: Buffer | null
      if (i % 11 === 0)
        data = null // zero over whatever the backing holds
      else if (i % 7 === 0)
        data = randomBytes(n) // does not shrink: stored as is
      else {
        // text-like: shrinks to a few KiB, several per host cluster, some runs across a boundary
        data = Buffer.from(`cluster ${i} `.repeat(Math.ceil(n / 8))).subarray(0, n)
        randomBytes(1500 + (i % 5) * 3000).copy(data, 64)
      }
      if (data) plain++
      if (data) data.copy(expected, i * CLUSTER_SIZE)
      else expected.fill(0, i * CLUSTER_SIZE, i * CLUSTER_SIZE + n)
      await w.cluster(i, data)
    }
    const r = await w.finish()
    expectCleanCheck(file)
    expect(r.sha256).toBe((await hashFile(file)).sha256)
    expect(r.bytes).toBeLessThan((plain * CLUSTER_SIZE) / 2)
    expect(flatten(file, dir).equals(expected)).toBe(true)
  })

  it('compressed: data that does not shrink stops being deflated after a trial, and stays readable', async () => {
    const dir = tempDir('vdib-qcow2r.')
    const file = join(dir, 'r.qcow2')
    const n = 1024 // 64 MiB of random data
    const w = await openQcow2Delta(file, { virtualSize: n * CLUSTER_SIZE, compress: true })
    const expected = randomBytes(n * CLUSTER_SIZE)
    for (let i = 0; i < n; i++) await w.cluster(i, expected.subarray(i * CLUSTER_SIZE, (i + 1) * CLUSTER_SIZE))
    const r = await w.finish()
    expectCleanCheck(file)
    expect(r.bytes).toBeGreaterThanOrEqual(n * CLUSTER_SIZE)
    expect(flatten(file, dir).equals(expected)).toBe(true)
  })

  it('names the backing file and its format; a zero entry hides what the backing file holds', async () => {
    const dir = tempDir('vdib-qcow2.')
    const size = 4 * 2 ** 20
    const base = await openQcow2Delta(join(dir, 'base.qcow2'), { virtualSize: size })
    for (let i = 0; i < 4; i++) await base.cluster(i, fill(0x10 + i))
    await base.finish()
    const top = await openQcow2Delta(join(dir, 'top.qcow2'), {
      virtualSize: size,
      backing: { file: 'base.qcow2', format: 'qcow2' },
    })
    await top.cluster(1, null)
    await top.cluster(2, fill(0x99))
    await top.cluster(9, fill(0x77))
    await top.finish()
    expectCleanCheck(join(dir, 'top.qcow2'))
    const i = info(join(dir, 'top.qcow2'))
    expect(i['backing-filename']).toBe('base.qcow2')
    expect(i['backing-filename-format']).toBe('qcow2')
    const flat = flatten(join(dir, 'top.qcow2'), dir)
    expect(flat.length).toBe(size)
    const expected = Buffer.concat([
      fill(0x10),
      fill(0),
      fill(0x99),
      fill(0x13),
      Buffer.alloc(5 * CLUSTER_SIZE),
      fill(0x77),
    ])
    expect(flat.subarray(0, 10 * CLUSTER_SIZE).equals(expected)).toBe(true)
    expect(flat.subarray(10 * CLUSTER_SIZE).equals(Buffer.alloc(size - 10 * CLUSTER_SIZE))).toBe(true)
  })

  it('a raw backing file works too', async () => {
    const dir = tempDir('vdib-qcow2.')
    const size = 1 << 20
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', join(dir, 'base.raw'), String(size)])
    const top = await openQcow2Delta(join(dir, 'top.qcow2'), {
      virtualSize: size,
      backing: { file: 'base.raw', format: 'raw' },
    })
    await top.cluster(3, fill(5))
    await top.finish()
    expectCleanCheck(join(dir, 'top.qcow2'))
    expect(info(join(dir, 'top.qcow2'))['backing-filename-format']).toBe('raw')
    expect(
      flatten(join(dir, 'top.qcow2'), dir)
        .subarray(3 * CLUSTER_SIZE, 4 * CLUSTER_SIZE)
        .equals(fill(5)),
    ).toBe(true)
  })

  it('pads the short last cluster of a virtual size that is not a multiple of the cluster size', async () => {
    const dir = tempDir('vdib-qcow2.')
    const size = 3 * CLUSTER_SIZE + 4608
    const w = await openQcow2Delta(join(dir, 'a.qcow2'), { virtualSize: size })
    await w.cluster(3, fill(0xab, 4608))
    await w.finish()
    expectCleanCheck(join(dir, 'a.qcow2'))
    const flat = flatten(join(dir, 'a.qcow2'), dir)
    expect(flat.length).toBe(size)
    expect(flat.subarray(3 * CLUSTER_SIZE).equals(fill(0xab, 4608))).toBe(true)
  })

  it('an L1 table of several clusters (a virtual size above 4 TiB)', async () => {
    const dir = tempDir('vdib-qcow2.')
    const size = 5 * 1024 * GiB
    const w = await openQcow2Delta(join(dir, 'a.qcow2'), { virtualSize: size })
    await w.cluster(0, fill(1))
    await w.cluster(size / CLUSTER_SIZE - 1, fill(2))
    const r = await w.finish()
    expectCleanCheck(join(dir, 'a.qcow2'))
    // header + 2 L1 clusters + 2 data + 2 L2 + refcount block + table
    expect(r.bytes).toBe(9 * CLUSTER_SIZE)
  })

  it('abort removes the file, before or after finish', async () => {
    const dir = tempDir('vdib-qcow2.')
    const a = await openQcow2Delta(join(dir, 'a.qcow2'), { virtualSize: 1 << 20 })
    await a.cluster(0, fill(1))
    await a.abort()
    expect(existsSync(join(dir, 'a.qcow2'))).toBe(false)
    const b = await openQcow2Delta(join(dir, 'b.qcow2'), { virtualSize: 1 << 20 })
    await b.finish()
    await b.abort()
    expect(existsSync(join(dir, 'b.qcow2'))).toBe(false)
  })

  it('rejects clusters out of order, out of range or of the wrong size, and bad sizes', async () => {
    const dir = tempDir('vdib-qcow2.')
    const w = await openQcow2Delta(join(dir, 'a.qcow2'), { virtualSize: 1 << 20 })
    await w.cluster(2, fill(1))
    await expect(w.cluster(2, fill(1))).rejects.toThrow(/out of order/)
    await expect(w.cluster(16, null)).rejects.toThrow(/out of order or range/)
    await expect(w.cluster(3, fill(1, 512))).rejects.toThrow(/512 bytes/)
    await w.abort()
    await expect(openQcow2Delta(join(dir, 'b.qcow2'), { virtualSize: 1000 })).rejects.toThrow(/multiple of 512/)
    await expect(
      openQcow2Delta(join(dir, 'b.qcow2'), {
        virtualSize: 1 << 20,
        backing: { file: 'x'.repeat(1024), format: 'qcow2' },
      }),
    ).rejects.toThrow(/bad backing file name/)
    expect(existsSync(join(dir, 'b.qcow2'))).toBe(false)
  })
})
