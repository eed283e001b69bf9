// The checksum the step cache keeps of every file of an entry.
import { createHash } from 'node:crypto'
import { open } from 'node:fs/promises'

/** A file's sha256 (hex) and size, read once in 4 MiB reads; with `sync`, fsync'd first. */
export async function hashFile(path: string, o: { sync?: boolean } = {}): Promise<{ sha256: string; bytes: number }> {
  const fh = await open(path, 'r')
  try {
    if (o.sync) await fh.sync()
    const hash = createHash('sha256')
    const buf = Buffer.allocUnsafe(4 << 20)
    let bytes = 0
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, bytes)
      if (bytesRead === 0) break
      hash.update(buf.subarray(0, bytesRead))
      bytes += bytesRead
    }
    return { sha256: hash.digest('hex'), bytes }
  } finally {
    await fh.close()
  }
}
