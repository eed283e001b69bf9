// Removing the build's workspace (dib.XXXX in TMPDIR). It may still hold a live mount (the
// extra-data.d FUSE view of the image, when its release was cut short): a plain `rm -r` would walk
// into it and delete the image's files through FUSE, or hang on a server that no longer answers.
// So every mount under it is first detached lazily, deepest first, and the removal itself never
// crosses into another file system (as `rm -r --one-file-system`).
import { lstat, readdir, realpath, rmdir, unlink } from 'node:fs/promises'
import { join } from 'node:path'

import { VirtDibError } from '../errors.js'
import { fusermount, mountPoints } from './fuse.js'
import { runTool } from './spawn.js'

export interface RemoveWorkspaceOptions {
  /** Tests replace these: the mount points now, and the lazy unmount of one. */
  mounts?: () => string[]
  unmount?: (mountpoint: string) => Promise<void>
}

/** `fusermount -uz`, else `umount -l` (a mount that is not FUSE; needs root). */
async function lazyUnmount(mountpoint: string): Promise<void> {
  try {
    await runTool(fusermount(), ['-u', '-z', mountpoint])
  } catch {
    await runTool('umount', ['-l', mountpoint]).catch(() => undefined)
  }
}

const depth = (p: string) => p.split('/').length

/** Mount points at or below `dir` (already resolved), deepest first. */
function mountsUnder(dir: string, mounts: () => string[]): string[] {
  return mounts()
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .sort((a, b) => depth(b) - depth(a))
}

/**
 * Removes `dir` and everything in it that is on its own file system. Throws a VirtDibError when
 * something was left: a mount that could not be detached (named), or a file that could not be
 * removed. A missing `dir` is not an error.
 */
export async function removeWorkspace(dir: string, o: RemoveWorkspaceOptions = {}): Promise<void> {
  const mounts = o.mounts ?? mountPoints
  const unmount = o.unmount ?? lazyUnmount
  let root: string
  try {
    root = await realpath(dir) // /proc/self/mounts has resolved paths
  } catch {
    return // gone already
  }
  for (const m of mountsUnder(root, mounts)) await unmount(m)
  const still = new Set(mountsUnder(root, mounts))
  const dev = (await lstat(root)).dev
  const skipped: string[] = []
  let failure: { error: unknown } | undefined
  const remove = async (path: string): Promise<void> => {
    // Checked before lstat: stat of a mount whose server hangs would hang too.
    if (still.has(path)) return void skipped.push(path)
    try {
      const st = await lstat(path)
      if (st.dev !== dev) return void skipped.push(path) // a mount /proc did not show us
      if (st.isDirectory()) {
        for (const e of await readdir(path)) await remove(join(path, e))
        await rmdir(path)
      } else {
        await unlink(path)
      }
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code
      // ENOTEMPTY: something below was kept, and is reported as such.
      if (code !== 'ENOENT' && !(code === 'ENOTEMPTY' && skipped.length > 0)) failure ??= { error: e }
    }
  }
  await remove(root)
  if (skipped.length > 0) {
    throw new VirtDibError(`the workspace ${dir} was not removed: ${skipped[0]} is still mounted`, {
      hint: `unmount it (fusermount -u, or umount), then remove ${dir}`,
    })
  }
  if (failure) {
    const { error } = failure
    const why = error instanceof Error ? error.message : String(error)
    throw new VirtDibError(`the workspace ${dir} was not removed completely: ${why}`, { cause: error })
  }
}
