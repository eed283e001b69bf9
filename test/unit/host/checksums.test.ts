import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { checksumLine, hashFile, HashingStream } from '../../../src/host/checksums.js'

describe('checksums', () => {
  it('hash while streaming equals hashing the file afterwards', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vdib-sum.'))
    try {
      const data = Buffer.alloc(3 * 1024 * 1024, 7)
      writeFileSync(join(dir, 'f'), data)
      const h = new HashingStream()
      h.end(data)
      h.resume()
      await new Promise((r) => h.on('end', r))
      const streamed = h.digests()
      expect(await hashFile(join(dir, 'f'))).toEqual(streamed)
      expect(streamed.sha256).toBe(createHash('sha256').update(data).digest('hex'))
      expect(streamed.size).toBe(data.length)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
  it('names the output by its base name, as md5sum -c expects from the output directory', () => {
    expect(checksumLine('abc', '/out/dir/img.qcow2')).toBe('abc  img.qcow2\n')
  })
})
