// The tar filter on archives GNU tar made here (pax as the guest writes them, and GNU format):
// what it writes is the input, byte for byte, less the entries under ./dev/, and tar lists it cleanly.
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Readable } from 'node:stream'

import { beforeAll, describe, expect, it } from 'vitest'

import { VirtDibError } from '../../../src/errors.js'
import { dropDevContents, isUnderDev, TarFilter } from '../../../src/outputs/tar-filter.js'
import { tempDir } from '../../helpers/temp.js'
import { guestTar, isRoot, listArchive, LONG, makeTree, withoutDevContents } from './archive-tree.js'

/** A `tar -tv` line's name, without its link target. */
const entryName = (line: string) => line.replace(/^.* \d\d:\d\d /, '').replace(/ (link to|->) .*$/, '')

/** The header types of a GNU archive (S+: an old sparse header with extension blocks). */
const GNU_TYPES = `
import sys
d = open(sys.argv[1], 'rb').read()
i, seen = 0, set()
while i + 512 <= len(d) and d[i:i+512] != bytes(512):
    h = d[i:i+512]; t = chr(h[156]); size = int(h[124:136].strip(b' \\0') or b'0', 8)
    seen.add(t + ('+' if t == 'S' and h[482] else ''))
    i += 512
    if t == 'S' and h[482]:
        while True:
            e = d[i:i+512]; i += 512
            if not e[504]: break
    i += -(-size // 512) * 512
print(' '.join(sorted(seen)))
`

/** The filter's output for `input` fed in chunks of `chunk` bytes. */
async function filtered(input: Buffer, filter: TarFilter, chunk = 65536): Promise<Buffer> {
  const parts: Buffer[] = []
  for (let i = 0; i < input.length; i += chunk) parts.push(input.subarray(i, i + chunk))
  const out: Buffer[] = []
  for await (const b of Readable.from(parts).pipe(filter)) out.push(b as Buffer)
  return Buffer.concat(out)
}

describe('isUnderDev', () => {
  it('is the contents of ./dev, not ./dev itself nor a dev/ elsewhere', () => {
    for (const p of ['./dev/null', './dev/pts/', './dev/pts/0', 'dev/x', '/dev/x', './/dev/x'])
      expect(isUnderDev(p), p).toBe(true)
    for (const p of ['./dev/', './dev', 'dev', './usr/dev/x', './devices/x', './', '.', './dev//'])
      expect(isUnderDev(p), p).toBe(false)
  })
})

describe.skipIf(!isRoot)('the ./dev/ filter on GNU tar archives', () => {
  const dir = tempDir('vdib-tarfilter.')
  const pax = join(dir, 'pax.tar')
  const gnu = join(dir, 'gnu.tar')
  beforeAll(() => {
    makeTree(join(dir, 'root'))
    guestTar(join(dir, 'root'), pax)
    guestTar(join(dir, 'root'), gnu, 'gnu')
  })

  for (const [name, file] of [
    ['pax (--xattrs --numeric-owner --sparse, as the guest)', pax],
    ['GNU format (long-name headers, old sparse headers)', gnu],
  ] as const) {
    describe(name, () => {
      it('drops exactly the ./dev/ entries and their headers; every other byte as it came', async () => {
        const input = readFileSync(file)
        const out = await filtered(input, dropDevContents())
        expect(out.equals(withoutDevContents(file))).toBe(true)
        const listed = join(dir, `${name.slice(0, 3)}.out.tar`)
        writeFileSync(listed, out)
        const names = listArchive(listed).map(entryName)
        const before = listArchive(file).map(entryName)
        expect(names).toEqual(before.filter((n) => !n.startsWith('./dev/') || n === './dev/'))
        expect(names).toContain('./dev/')
        expect(names).toContain('./usr/dev/x')
        expect(names).toContain('./usr/dev/y')
        expect(names).toContain(`./etc/${LONG}`)
        expect(names.some((n) => n.startsWith('./dev/') && n !== './dev/')).toBe(false)
        expect(before.some((n) => n.includes(`./dev/${LONG}`))).toBe(true)
      })

      it('keeping everything gives back the input, whatever the chunking', async () => {
        const input = readFileSync(file)
        for (const chunk of [1, 100, 511, 512, 513, 7919, 1 << 20]) {
          const out = await filtered(input, new TarFilter(() => false), chunk)
          expect(out.equals(input), `chunks of ${chunk}`).toBe(true)
        }
      })

      it('the same drop in odd chunks', async () => {
        const input = readFileSync(file)
        const out = await filtered(input, dropDevContents(), 333)
        expect(out.equals(withoutDevContents(file))).toBe(true)
      })
    })
  }

  it('the pax archive has what the filter must walk: pax headers, xattrs, sparse 1.0, long names', () => {
    const text = readFileSync(pax).toString('latin1')
    expect(text).toContain('SCHILY.xattr.user.vdib=kept')
    expect(text).toContain('GNU.sparse.name=./var/holes')
    expect(text).toContain(`path=./dev/${LONG}`)
    // GNU format: long names ('L', 'K') and old sparse headers with extension blocks
    const gnuTypes = execFileSync('python3', ['-c', GNU_TYPES, gnu], { encoding: 'utf8' })
    expect(gnuTypes.trim().split(' ')).toEqual(expect.arrayContaining(['L', 'K', 'S', 'S+']))
  })
})

/** One header block for `name` with `size`, checksummed; `base256` writes the size GNU's binary way. */
function header(name: string, size: number, type = '0', base256 = false): Buffer {
  const h = Buffer.alloc(512)
  h.write(name, 0, 'latin1')
  h.write('0000644\0', 100)
  h.write('0000000\0', 108)
  h.write('0000000\0', 116)
  if (base256) {
    h[124] = 0x80
    h.writeUIntBE(size, 130, 6)
  } else h.write(size.toString(8).padStart(11, '0') + '\0', 124)
  h.write('00000000000\0', 136)
  h.write(type, 156)
  h.write('ustar\0' + '00', 257, 'latin1')
  h.fill(0x20, 148, 156)
  let sum = 0
  for (const b of h) sum += b
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148)
  return h
}

function entry(name: string, data: string, base256 = false): Buffer {
  const d = Buffer.alloc(Math.ceil(data.length / 512) * 512)
  d.write(data)
  return Buffer.concat([header(name, data.length, '0', base256), d])
}

describe('crafted archives', () => {
  const end = Buffer.alloc(10240 - 0)

  it('a base-256 size (GNU, > 8 GiB files) is read as a size: the data is skipped whole', async () => {
    const data = 'x'.repeat(1500)
    const input = Buffer.concat([entry('./dev/big', data, true), entry('./etc/after', 'kept', true), end])
    const out = await filtered(input, dropDevContents())
    expect(out.equals(Buffer.concat([entry('./etc/after', 'kept', true), end]))).toBe(true)
    const dir = tempDir('vdib-b256.')
    writeFileSync(join(dir, 'in.tar'), input)
    writeFileSync(join(dir, 'out.tar'), out)
    expect(listArchive(join(dir, 'in.tar'))).toHaveLength(2) // GNU tar reads the crafted headers too
    expect(listArchive(join(dir, 'out.tar'))).toHaveLength(1)
  })

  it('a ustar prefix makes the name', async () => {
    const h = header('null', 0, '3')
    h.write('./dev', 345)
    h.fill(0x20, 148, 156)
    let sum = 0
    for (const b of h) sum += b
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148)
    const input = Buffer.concat([h, entry('./etc/a', 'a'), end])
    expect((await filtered(input, dropDevContents())).equals(Buffer.concat([entry('./etc/a', 'a'), end]))).toBe(true)
  })

  it('a header that fails its checksum: an error naming where', async () => {
    const bad = entry('./etc/a', 'a')
    bad[0] = 'X'.charCodeAt(0)
    const input = Buffer.concat([entry('./etc/ok', 'ok'), bad, end])
    const e = await filtered(input, dropDevContents()).catch((x: unknown) => x)
    expect(e).toBeInstanceOf(VirtDibError)
    expect((e as Error).message).toBe('the image archive cannot be read at byte 1024: a header fails its checksum')
  })

  it('an archive cut inside an entry: an error', async () => {
    const input = entry('./etc/a', 'x'.repeat(2000)).subarray(0, 1000)
    await expect(filtered(input, dropDevContents())).rejects.toThrow(
      /^the image archive cannot be read at byte 1000: the archive ends inside an entry$/,
    )
  })
})
