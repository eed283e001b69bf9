// The default number of builds a batch runs at once: cores, free memory against each appliance's -m.
import { describe, expect, it } from 'vitest'

import {
  applianceMemsizeMiB,
  BUILD_OVERHEAD_MIB,
  buildMemoryBytes,
  defaultConcurrency,
  LIBGUESTFS_DEFAULT_MEMSIZE_MIB,
} from '../../../src/batch/concurrency.js'

const MIB = 1024 ** 2
const plan = (memsize?: number) => ({ appliance: { memsize } }) as Parameters<typeof defaultConcurrency>[0][number]
const plans = (n: number, memsize?: number) => Array.from({ length: n }, () => plan(memsize))
const perDefault = (LIBGUESTFS_DEFAULT_MEMSIZE_MIB + BUILD_OVERHEAD_MIB) * MIB

describe('defaultConcurrency', () => {
  it('takes -m, else LIBGUESTFS_MEMSIZE, else libguestfs’s default, plus qemu’s overhead', () => {
    expect(applianceMemsizeMiB(plan(2048), {})).toBe(2048)
    expect(applianceMemsizeMiB(plan(), { LIBGUESTFS_MEMSIZE: '900' })).toBe(900)
    expect(applianceMemsizeMiB(plan(), { LIBGUESTFS_MEMSIZE: 'lots' })).toBe(1280)
    expect(applianceMemsizeMiB(plan(), {})).toBe(1280)
    expect(buildMemoryBytes(plan(1000), {})).toBe((1000 + BUILD_OVERHEAD_MIB) * MIB)
  })

  it('is bounded by the cores', () => {
    expect(defaultConcurrency(plans(8), { cores: 2, freeBytes: 100 * perDefault }, {})).toBe(2)
  })

  it('is bounded by the free memory, against the largest build', () => {
    expect(defaultConcurrency(plans(8), { cores: 16, freeBytes: 3.5 * perDefault }, {})).toBe(3)
    const mixed = [...plans(3), plan(4096)]
    expect(defaultConcurrency(mixed, { cores: 16, freeBytes: 2 * (4096 + BUILD_OVERHEAD_MIB) * MIB }, {})).toBe(2)
  })

  it('is never more than the builds, nor less than one', () => {
    expect(defaultConcurrency(plans(2), { cores: 16, freeBytes: 100 * perDefault }, {})).toBe(2)
    expect(defaultConcurrency(plans(4), { cores: 16, freeBytes: 0.5 * perDefault }, {})).toBe(1)
    expect(defaultConcurrency(plans(4), { cores: 0, freeBytes: 0 }, {})).toBe(1)
    expect(defaultConcurrency([], { cores: 4, freeBytes: 100 * perDefault }, {})).toBe(1)
  })
})
