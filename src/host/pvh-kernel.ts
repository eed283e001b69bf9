// The appliance kernel as an uncompressed vmlinux that qemu starts at its PVH entry point. Under
// TCG, a bzImage spends ~3 s in SeaBIOS's linuxboot and the xz decompressor before the kernel's
// first line; qemu loads a vmlinux with a PVH note (Debian: CONFIG_PVH=y) straight into memory.
import {
  closeSync,
  createWriteStream,
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
} from 'node:fs'
import { join } from 'node:path'
import { finished } from 'node:stream/promises'

import { runTool } from './spawn.js'
import { findExecutable } from './which.js'

/** Compares kernel versions as `sort -V` would for Debian's names (6.1.0-57-amd64 < 6.1.0-100-amd64). */
export function compareKernelVersions(a: string, b: string): number {
  const pa = a.split(/(\d+)/)
  const pb = b.split(/(\d+)/)
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? ''
    const y = pb[i] ?? ''
    if (x === y) continue
    const nx = /^\d+$/.test(x)
    const ny = /^\d+$/.test(y)
    if (nx && ny) return Number(x) - Number(y)
    return x < y ? -1 : 1
  }
  return 0
}

/** The kernel supermin would pick: the newest /boot/vmlinuz-VERSION that has /lib/modules/VERSION. */
export function pickHostKernel(
  boot = '/boot',
  modules = '/lib/modules',
): { version: string; path: string } | undefined {
  let names: string[]
  try {
    names = readdirSync(boot)
  } catch {
    return undefined
  }
  const versions = names
    .filter((n) => n.startsWith('vmlinuz-'))
    .map((n) => n.slice('vmlinuz-'.length))
    .filter((v) => existsSync(join(modules, v)))
    .sort(compareKernelVersions)
  const version = versions.at(-1)
  return version === undefined ? undefined : { version, path: join(boot, `vmlinuz-${version}`) }
}

/**
 * The compressed kernel inside a bzImage (boot protocol ≥ 2.08: payload_offset and payload_length
 * in the setup header, from the start of the protected-mode code), or undefined if it is not one.
 */
export function bzImagePayload(image: Buffer): Buffer | undefined {
  if (image.length < 0x250 || image.toString('latin1', 0x202, 0x206) !== 'HdrS') return undefined
  if (image.readUInt16LE(0x206) < 0x208) return undefined
  const setupSects = image[0x1f1] || 4
  const start = (setupSects + 1) * 512 + image.readUInt32LE(0x248)
  const length = image.readUInt32LE(0x24c)
  if (length === 0 || start + length > image.length) return undefined
  return image.subarray(start, start + length)
}

const XZ_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])
/** Xen's ELF note type for the 32-bit PVH entry point, which qemu's -kernel looks for. */
const XEN_ELFNOTE_PHYS32_ENTRY = 18

/** True when `file` is a 64-bit ELF with a PT_NOTE segment holding the Xen PHYS32_ENTRY note. */
export function hasPvhNote(file: string): boolean {
  const fd = openSync(file, 'r')
  try {
    const read = (pos: number, len: number) => {
      const b = Buffer.alloc(len)
      return b.subarray(0, readSync(fd, b, 0, len, pos))
    }
    const eh = read(0, 64)
    if (eh.length < 64 || eh.readUInt32BE(0) !== 0x7f454c46 || eh[4] !== 2 || eh[5] !== 1) return false
    const phoff = Number(eh.readBigUInt64LE(0x20))
    const phentsize = eh.readUInt16LE(0x36)
    const phnum = eh.readUInt16LE(0x38)
    for (let i = 0; i < phnum; i++) {
      const ph = read(phoff + i * phentsize, 56)
      if (ph.length < 56 || ph.readUInt32LE(0) !== 4 /* PT_NOTE */) continue
      const notes = read(Number(ph.readBigUInt64LE(8)), Math.min(Number(ph.readBigUInt64LE(32)), 1 << 20))
      for (let p = 0; p + 12 <= notes.length;) {
        const namesz = notes.readUInt32LE(p)
        const descsz = notes.readUInt32LE(p + 4)
        const type = notes.readUInt32LE(p + 8)
        const name = notes.toString('latin1', p + 12, p + 12 + namesz).replace(/\0+$/, '')
        if (name === 'Xen' && type === XEN_ELFNOTE_PHYS32_ENTRY) return true
        p += 12 + Math.ceil(namesz / 4) * 4 + Math.ceil(descsz / 4) * 4
      }
    }
    return false
  } finally {
    closeSync(fd)
  }
}

/**
 * Writes the vmlinux inside the bzImage `image` to `target` (atomically) and returns true, or
 * returns false when that is not possible here (not an xz payload, no `xz`, no PVH note): the
 * caller then boots the bzImage as before.
 */
export async function extractPvhKernel(image: string, target: string, signal?: AbortSignal): Promise<boolean> {
  let payload: Buffer | undefined
  try {
    payload = bzImagePayload(readFileSync(image))
  } catch {
    return false // unreadable (some distributions keep /boot/vmlinuz-* root's only)
  }
  const xz = findExecutable('xz')
  if (!payload || !xz || !payload.subarray(0, 6).equals(XZ_MAGIC)) return false
  const tmp = `${target}.${process.pid}.tmp`
  try {
    const out = createWriteStream(tmp)
    // The payload ends with the decompressed size (4 bytes) after the xz stream.
    await runTool(xz, ['-dc', '--single-stream'], { input: payload, stdoutTo: out, ...(signal ? { signal } : {}) })
    out.end()
    await finished(out)
    if (!hasPvhNote(tmp)) {
      rmSync(tmp, { force: true })
      return false
    }
    renameSync(tmp, target)
    return true
  } catch (e) {
    rmSync(tmp, { force: true })
    if (signal?.aborted) throw e
    return false
  }
}
