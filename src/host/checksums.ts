// md5 and sha256 of outputs, computed while they are written where possible, and the
// `.md5`/`.sha256` files in the form `md5sum -c` accepts from the output directory.
import { createHash, type Hash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { basename } from 'node:path'
import { Transform, type TransformCallback } from 'node:stream'

export interface Digests {
  md5: string
  sha256: string
  size: number
}

/** A pass-through stream that hashes what flows through it. */
export class HashingStream extends Transform {
  readonly #md5: Hash = createHash('md5')
  readonly #sha256: Hash = createHash('sha256')
  #size = 0
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#md5.update(chunk)
    this.#sha256.update(chunk)
    this.#size += chunk.length
    cb(null, chunk)
  }
  digests(): Digests {
    return { md5: this.#md5.digest('hex'), sha256: this.#sha256.digest('hex'), size: this.#size }
  }
}

/** Hashes a finished file in one read. */
export async function hashFile(path: string): Promise<Digests> {
  const h = new HashingStream()
  const rs = createReadStream(path)
  rs.pipe(h)
  h.resume()
  await new Promise<void>((resolve, reject) => {
    h.on('end', resolve)
    h.on('error', reject)
    rs.on('error', reject)
  })
  return h.digests()
}

/**
 * The line of a `.md5`/`.sha256` file, naming the output by its base name so that
 * `md5sum -c` works from the output directory.
 * divergence: the original wrote the --name path, which only works from where virt-dib ran.
 */
export function checksumLine(hex: string, file: string): string {
  return `${hex}  ${basename(file)}\n`
}

export async function writeChecksumFile(path: string, hex: string, file: string): Promise<void> {
  await writeFile(path, checksumLine(hex, file), { mode: 0o644 })
}
