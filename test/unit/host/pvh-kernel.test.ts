// The appliance's PVH kernel: picking the host kernel, the bzImage payload, the ELF note, extraction.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'

import {
  bzImagePayload,
  compareKernelVersions,
  extractPvhKernel,
  hasPvhNote,
  pickHostKernel,
} from '../../../src/host/pvh-kernel.js'
import { findExecutable } from '../../../src/host/which.js'

const dirs: string[] = []
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'vdib-pvh.'))
  dirs.push(d)
  return d
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
})

/** A minimal ELF64 with one PT_NOTE segment holding a note of `owner` and `type`. */
function elfWithNote(owner: string, type: number): Buffer {
  const name = Buffer.alloc(Math.ceil((owner.length + 1) / 4) * 4)
  name.write(owner, 'latin1')
  const note = Buffer.concat([Buffer.alloc(12), name, Buffer.alloc(4)])
  note.writeUInt32LE(owner.length + 1, 0)
  note.writeUInt32LE(4, 4)
  note.writeUInt32LE(type, 8)
  const eh = Buffer.alloc(64)
  eh.writeUInt32BE(0x7f454c46, 0)
  eh[4] = 2 // 64-bit
  eh[5] = 1 // little-endian
  eh.writeBigUInt64LE(64n, 0x20) // phoff
  eh.writeUInt16LE(56, 0x36) // phentsize
  eh.writeUInt16LE(1, 0x38) // phnum
  const ph = Buffer.alloc(56)
  ph.writeUInt32LE(4, 0) // PT_NOTE
  ph.writeBigUInt64LE(120n, 8) // offset
  ph.writeBigUInt64LE(BigInt(note.length), 32) // filesz
  return Buffer.concat([eh, ph, note])
}

/** A bzImage-shaped file: the setup header pointing at `payload` (plus the 4-byte size trailer). */
function bzImage(payload: Buffer): Buffer {
  const setupSects = 2
  const head = Buffer.alloc((setupSects + 1) * 512)
  head[0x1f1] = setupSects
  head.write('HdrS', 0x202, 'latin1')
  head.writeUInt16LE(0x20f, 0x206)
  const offset = 64
  head.writeUInt32LE(offset, 0x248)
  const withSize = Buffer.concat([payload, Buffer.from([1, 2, 3, 4])])
  head.writeUInt32LE(withSize.length, 0x24c)
  return Buffer.concat([head, Buffer.alloc(offset), withSize, Buffer.alloc(100)])
}

describe('the host kernel', () => {
  it('orders versions as sort -V does', () => {
    const v = ['6.1.0-100-amd64', '6.1.0-57-amd64', '5.10.0-9-amd64', '6.1.0-9-amd64']
    expect(v.sort(compareKernelVersions)).toEqual([
      '5.10.0-9-amd64',
      '6.1.0-9-amd64',
      '6.1.0-57-amd64',
      '6.1.0-100-amd64',
    ])
  })

  it('is the newest vmlinuz with its modules installed', () => {
    const d = tmp()
    mkdirSync(join(d, 'boot'))
    for (const v of ['6.1.0-9-amd64', '6.1.0-57-amd64', '6.1.0-100-amd64'])
      writeFileSync(join(d, 'boot', `vmlinuz-${v}`), '')
    mkdirSync(join(d, 'modules', '6.1.0-9-amd64'), { recursive: true })
    mkdirSync(join(d, 'modules', '6.1.0-57-amd64'))
    expect(pickHostKernel(join(d, 'boot'), join(d, 'modules'))).toEqual({
      version: '6.1.0-57-amd64',
      path: join(d, 'boot', 'vmlinuz-6.1.0-57-amd64'),
    })
    expect(pickHostKernel(join(d, 'none'), join(d, 'modules'))).toBeUndefined()
  })
})

describe('bzImage and ELF parsing', () => {
  it('finds the payload from the setup header, trailer included', () => {
    const p = Buffer.from('compressed kernel')
    expect(bzImagePayload(bzImage(p))?.toString('latin1')).toBe('compressed kernel\x01\x02\x03\x04')
  })

  it('refuses what is not a bzImage of boot protocol 2.08 or later', () => {
    expect(bzImagePayload(Buffer.alloc(4096))).toBeUndefined()
    const old = bzImage(Buffer.from('x'))
    old.writeUInt16LE(0x206, 0x206)
    expect(bzImagePayload(old)).toBeUndefined()
    const truncated = bzImage(Buffer.from('x'))
    truncated.writeUInt32LE(1 << 30, 0x24c)
    expect(bzImagePayload(truncated)).toBeUndefined()
  })

  it('sees the Xen PHYS32_ENTRY note qemu boots a vmlinux by', () => {
    const d = tmp()
    writeFileSync(join(d, 'pvh'), elfWithNote('Xen', 18))
    writeFileSync(join(d, 'xen-other'), elfWithNote('Xen', 5))
    writeFileSync(join(d, 'gnu'), elfWithNote('GNU', 18))
    writeFileSync(join(d, 'text'), 'not an ELF file at all, but long enough to have a header.......')
    expect(hasPvhNote(join(d, 'pvh'))).toBe(true)
    expect(hasPvhNote(join(d, 'xen-other'))).toBe(false)
    expect(hasPvhNote(join(d, 'gnu'))).toBe(false)
    expect(hasPvhNote(join(d, 'text'))).toBe(false)
  })
})

describe.skipIf(!findExecutable('xz'))('extraction', () => {
  const xz = (b: Buffer) => execFileSync('xz', ['-c', '--check=crc32'], { input: b })

  it('writes the vmlinux of an xz bzImage', async () => {
    const d = tmp()
    const elf = elfWithNote('Xen', 18)
    writeFileSync(join(d, 'vmlinuz'), bzImage(xz(elf)))
    expect(await extractPvhKernel(join(d, 'vmlinuz'), join(d, 'vmlinux'))).toBe(true)
    expect(readFileSync(join(d, 'vmlinux')).equals(elf)).toBe(true)
    expect(readdirSync(d).sort()).toEqual(['vmlinux', 'vmlinuz'])
  })

  it('declines a kernel without a PVH entry or an xz payload, leaving nothing behind', async () => {
    const d = tmp()
    writeFileSync(join(d, 'no-note'), bzImage(xz(elfWithNote('Xen', 5))))
    writeFileSync(join(d, 'gzip'), bzImage(execFileSync('gzip', ['-c'], { input: elfWithNote('Xen', 18) })))
    expect(await extractPvhKernel(join(d, 'no-note'), join(d, 'out1'))).toBe(false)
    expect(await extractPvhKernel(join(d, 'gzip'), join(d, 'out2'))).toBe(false)
    expect(await extractPvhKernel(join(d, 'missing'), join(d, 'out3'))).toBe(false)
    expect(existsSync(join(d, 'out1')) || existsSync(join(d, 'out2'))).toBe(false)
    expect(readdirSync(d).sort()).toEqual(['gzip', 'no-note'])
  })
})
