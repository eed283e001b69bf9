// The aux drive (hooks, lib, runners, out dir) as an ext4 image made on the host with
// `mke2fs -d`: the guest reads it as a disk instead of receiving it through the daemon, which
// under TCG moves ~11 MB/s (a 550 MB element took 48 s to upload, the image 3 s to make).
import { truncate, writeFile } from 'node:fs/promises'

import { VirtDibError } from '../errors.js'
import { runTool } from './spawn.js'
import { findExecutable } from './which.js'

/** mke2fs lives in /sbin, which is not on a normal user's PATH on Debian. */
export function findMke2fs(path: string = process.env['PATH'] ?? ''): string {
  const found = findExecutable('mke2fs', `${path}:/usr/sbin:/sbin`)
  if (!found) throw new VirtDibError('mke2fs needed but not found', { hint: 'install e2fsprogs' })
  return found
}

/**
 * Writes a sparse ext4 image of `size` bytes at `file` holding the tree `dir`. Inode tables are
 * initialised now (cheap on a sparse file) so the guest kernel does not zero them in the
 * background under emulation; the journal of a fresh sparse file is already zero.
 */
export async function makeAuxImage(dir: string, file: string, size: number, signal?: AbortSignal): Promise<void> {
  await writeFile(file, '')
  await truncate(file, size)
  // prettier-ignore
  await runTool(findMke2fs(), [
    '-q', '-F', '-t', 'ext4', '-L', 'vdib-aux', '-d', dir,
    '-E', 'root_owner=0:0,lazy_itable_init=0,lazy_journal_init=1',
    file,
  ], signal ? { signal } : {})
}
