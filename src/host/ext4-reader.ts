// The image root's archive made on the host: fuse2fs serves the ext2/3/4 file system of the raw
// disk file (read-only, rootless) and host GNU tar archives it with the options the guest's tar
// used, on host CPU instead of emulated guest CPU. fuse2fs gives the real inode numbers (use_ino),
// so hard links stay hard links; fakeroot lets an unprivileged user read every file whatever its
// owner and mode, and owners, modes, device numbers and xattrs are passed through as stored.
// What it costs (2 CPUs here): data at 650 MB/s, but ~0.5 ms of fuse2fs CPU per file, since every
// operation resolves its path by scanning each directory on the way linearly (a 1.8 GB, 29k-file
// root: 27-38 s, where host tar of the same tree on the host's own file system takes 4.5 s). One
// very large directory costs the square of its size: such a file system is declined (see
// maxDirectoryBytes) for the guest's tar. fuse2fs 1.47.0 gives whole seconds only: the archive's
// times lose their nanoseconds.
import { reproducibleTarArgs } from '../repro/epoch.js'
import {
  closeSync,
  constants,
  mkdirSync,
  mkdtempSync,
  openSync,
  readSync,
  rmdirSync,
  rmSync,
  statfsSync,
  symlinkSync,
} from 'node:fs'
import { open } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

import { HostToolError, VirtDibError } from '../errors.js'
import { LineSplitter } from '../util/lines.js'
import { describeSystemError } from '../util/system-error.js'
import { fusermount, isMounted, releaseFuseMount, trackServing, waitForFuseMount } from './fuse.js'
import { abortError, runProcess, runTool } from './spawn.js'
import { findExecutable } from './which.js'

export type TreeReaderSupport = { ok: true } | { ok: false; reason: string }

/** Whether {@link archiveExt4} can run here; a quick synchronous probe for planning. */
export function hostTreeReaderSupport(): TreeReaderSupport {
  if (!findExecutable('fuse2fs')) return { ok: false, reason: 'fuse2fs is not installed (apt-get install fuse2fs)' }
  // fuse2fs's libfuse mounts through fusermount unless we are root.
  if (!findExecutable(fusermount())) return { ok: false, reason: 'fusermount is not installed (apt-get install fuse3)' }
  if (!findExecutable('tar')) return { ok: false, reason: 'tar is not installed' }
  try {
    closeSync(openSync('/dev/fuse', constants.O_RDWR))
  } catch (e) {
    return { ok: false, reason: `/dev/fuse cannot be opened: ${describeSystemError(e)}` }
  }
  return { ok: true }
}

export interface ArchiveExt4Options {
  /** The raw disk file. */
  image: string
  /** Where the file system starts in it, in bytes (the partition's start; 0 for a whole-disk fs). */
  offset: number
  /** The archive file; created, or truncated if it exists (tar -f opens it with O_TRUNC). */
  dest: string
  /** tar --exclude patterns, relative to the root (`./proc/*`): TREE_EXCLUDES. */
  excludes: readonly string[]
  /** SOURCE_DATE_EPOCH: the archive's entries sorted, their times clamped (src/repro/epoch.ts). */
  sourceDateEpoch?: number
  signal?: AbortSignal
  /** A private directory of the build: the mount point is made (and removed) under it. */
  workDir: string
  /** How errors name `dest` (its final name); `dest` by default. */
  destName?: string
  /**
   * Declines (throws {@link Ext4ReaderDeclined} before mounting) a file system with a directory
   * larger than this, in bytes: every fuse2fs operation resolves its path by scanning each
   * directory linearly, so archiving a directory costs about the square of its size (measured
   * here: 160 KiB (4000 entries) 2.6 s, 640 KiB 37 s, /usr/share/man/man1's 968 KiB (18677
   * entries) 77 s). Default {@link MAX_DIRECTORY_BYTES}; Infinity skips the check.
   */
  maxDirectoryBytes?: number
  onDebug?: (text: string) => void
  onWarning?: (text: string) => void
}

/** About 3.5 s of fuse2fs time for that one directory (some 4500 entries) on this machine. */
export const MAX_DIRECTORY_BYTES = 192 * 1024

/** A directory fuse2fs would take too long over: the caller uses the guest's tar instead. */
export class Ext4ReaderDeclined extends VirtDibError {
  override name = 'Ext4ReaderDeclined'
  constructor(
    readonly inode: number,
    readonly bytes: number,
  ) {
    super(`a directory of ${Math.round(bytes / 1024)} KiB (inode ${inode}) is too large to read through fuse2fs`)
  }
}

/** Less free space than this after a failed write: the file system was full. */
const FULL_BYTES = 1024 * 1024

const EXT_MAGIC = 0xef53
const COMPAT_HAS_JOURNAL = 0x4
const INCOMPAT_RECOVER = 0x4
const INCOMPAT_JOURNAL_DEV = 0x8

/**
 * Checks the superblock before mounting, for a clear one-line reason: not ext2/3/4 at all, or a
 * journal that still needs replaying. fuse2fs refuses the latter read-only (it would need
 * norecovery, which reads a half-written file system).
 */
function checkSuperblock(image: string, offset: number): Buffer {
  const sb = Buffer.alloc(1024)
  let fd: number
  try {
    fd = openSync(image, 'r')
  } catch (e) {
    throw new VirtDibError(`cannot read the disk image ‘${image}’: ${describeSystemError(e)}`, { cause: e })
  }
  let got: number
  try {
    got = readSync(fd, sb, 0, sb.length, offset + 1024)
  } catch (e) {
    throw new VirtDibError(`cannot read the disk image ‘${image}’: ${describeSystemError(e)}`, { cause: e })
  } finally {
    closeSync(fd)
  }
  const at = offset === 0 ? '' : ` at byte ${offset}`
  if (got < sb.length || sb.readUInt16LE(0x38) !== EXT_MAGIC)
    throw new VirtDibError(`‘${image}’ has no ext2/3/4 file system${at}`)
  const incompat = sb.readUInt32LE(0x60)
  if (incompat & INCOMPAT_JOURNAL_DEV)
    throw new VirtDibError(`‘${image}’ holds an ext4 journal device${at}, not a file system`)
  if (sb.readUInt32LE(0x5c) & COMPAT_HAS_JOURNAL && incompat & INCOMPAT_RECOVER)
    throw new VirtDibError(
      `the file system in ‘${image}’${at} needs journal recovery (it is still mounted read-write, or was not unmounted cleanly): not reading it`,
    )
  return sb
}

const INCOMPAT_META_BG = 0x10
const INCOMPAT_64BIT = 0x80
const RO_COMPAT_GDT_CSUM = 0x10
const RO_COMPAT_METADATA_CSUM = 0x400
const BG_INODE_UNINIT = 0x1
const S_IFMT = 0xf000
const S_IFDIR = 0x4000

/**
 * The largest directory of the file system, from its inode tables (read straight from the image:
 * a few MB per GB of file system, no mount). Undefined with meta_bg, whose group descriptors are
 * scattered (only file systems grown past 256 TiB or made so).
 */
export async function largestDirectory(
  image: string,
  offset: number,
  sb: Buffer,
): Promise<{ inode: number; bytes: number } | undefined> {
  const incompat = sb.readUInt32LE(0x60)
  if (incompat & INCOMPAT_META_BG) return undefined
  const is64 = (incompat & INCOMPAT_64BIT) !== 0
  const roCompat = sb.readUInt32LE(0x64)
  const unusedKnown = (roCompat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM)) !== 0
  const blockSize = 1024 << sb.readUInt32LE(0x18)
  const blocks = sb.readUInt32LE(0x4) + (is64 ? sb.readUInt32LE(0x150) * 2 ** 32 : 0)
  const firstDataBlock = sb.readUInt32LE(0x14)
  const blocksPerGroup = sb.readUInt32LE(0x20)
  const inodesPerGroup = sb.readUInt32LE(0x28)
  const inodeSize = sb.readUInt16LE(0x58) || 128
  const descSize = is64 ? sb.readUInt16LE(0xfe) || 32 : 32
  const groups = Math.ceil((blocks - firstDataBlock) / blocksPerGroup)
  const f = await open(image, 'r')
  try {
    const read = async (at: number, length: number): Promise<Buffer> => {
      const b = Buffer.alloc(length)
      const { bytesRead } = await f.read(b, 0, length, offset + at)
      if (bytesRead < length) throw new VirtDibError(`‘${image}’ ends inside its file system (at byte ${offset + at})`)
      return b
    }
    const gdt = await read((firstDataBlock + 1) * blockSize, groups * descSize)
    let largest = { inode: 0, bytes: 0 }
    for (let g = 0; g < groups; g++) {
      const d = gdt.subarray(g * descSize, (g + 1) * descSize)
      const table = d.readUInt32LE(0x8) + (descSize >= 64 ? d.readUInt32LE(0x28) * 2 ** 32 : 0)
      const unused = unusedKnown ? d.readUInt16LE(0x1c) + (descSize >= 64 ? d.readUInt16LE(0x32) << 16 : 0) : 0
      if (unusedKnown && d.readUInt16LE(0x12) & BG_INODE_UNINIT) continue
      const used = Math.max(0, inodesPerGroup - unused)
      if (used === 0) continue
      const t = await read(table * blockSize, used * inodeSize)
      for (let i = 0; i < used; i++) {
        const ino = t.subarray(i * inodeSize, i * inodeSize + 0x70)
        if ((ino.readUInt16LE(0) & S_IFMT) !== S_IFDIR || ino.readUInt16LE(0x1a) === 0) continue
        const bytes = ino.readUInt32LE(0x4) + ino.readUInt32LE(0x6c) * 2 ** 32
        if (bytes > largest.bytes) largest = { inode: g * inodesPerGroup + i + 1, bytes }
      }
    }
    return largest
  } finally {
    await f.close()
  }
}

/** fuse2fs's own reason for not mounting, without its chatter and its advice to run e2fsck. */
function fuse2fsReason(lines: readonly string[], code: number | null, sig: string | null): string {
  const why = lines.find((l) => !/^Mounting read-only\.?$|^Please run e2fsck|^Warning:/i.test(l))
  if (why) return why.replace(/^image: /, '')
  return sig ? `fuse2fs was killed by ${sig}` : `fuse2fs exited with status ${code}`
}

/**
 * tar's first reason (`/x.tar: Cannot write: No space left on device`), not its closing summary;
 * said as out of space when the destination's file system is (nearly) full.
 */
function tarError(e: unknown, image: string, dest: string, destName: string, fuse2fsEnded?: string): unknown {
  if (!(e instanceof HostToolError)) return e
  const lines = e.outputTail
    .split('\n')
    .filter((l) => l && !/Exiting with failure status|Error is not recoverable|^Total bytes written/.test(l))
  // `tar: /x.tar: Cannot open: …`: the file is named once, by us.
  const why = (lines[0]?.replace(/^tar: /, '') ?? e.message).replace(`${dest}: `, '').replaceAll(dest, destName)
  let full = /No space left on device|Disk quota exceeded/.test(why)
  try {
    const s = statfsSync(dirname(dest))
    full ||= /Wrote only/.test(why) && s.bavail * s.bsize < FULL_BYTES
  } catch {
    // the directory is not there: report what tar said
  }
  if (fuse2fsEnded)
    return new VirtDibError(`fuse2fs ended (${fuse2fsEnded}) while tar read the file system of ‘${image}’: ${why}`, {
      cause: e,
    })
  if (full)
    return new VirtDibError(`out of space on the host: writing ‘${destName}’ failed: ${why}`, {
      cause: e,
      hint: 'free some space there, or build elsewhere (TMPDIR, --name)',
    })
  return new VirtDibError(`archiving the file system of ‘${image}’ into ‘${destName}’ failed: ${why}`, { cause: e })
}

/**
 * Archives the ext2/3/4 file system at byte `offset` of the raw file `image` into `dest` as the
 * guest's tar did (numeric owners, xattrs, sparse files as holes, the caller's excludes); returns
 * the archive's length (tar's total: the end-of-archive blocks and the padding to its record size
 * included). The file system must be clean: a journal that needs recovery is refused. Whatever
 * happens (tar failing, an abort) the mount is released, fuse2fs has exited and the mount point
 * is gone when this settles; a release that needed force is a warning, not a failure.
 */
export async function archiveExt4(o: ArchiveExt4Options): Promise<number> {
  if (o.signal?.aborted) throw abortError(o.signal)
  const image = resolve(o.image)
  const dest = resolve(o.dest)
  const destName = o.destName ?? o.dest
  const sb = checkSuperblock(image, o.offset)
  const max = o.maxDirectoryBytes ?? MAX_DIRECTORY_BYTES
  if (max !== Infinity) {
    const t0 = Date.now()
    const largest = await largestDirectory(image, o.offset, sb)
    if (largest === undefined) o.onDebug?.(`the directory sizes of ${image} were not checked (meta_bg)`)
    else {
      o.onDebug?.(
        `the largest directory of ${image}: ${largest.bytes} bytes (inode ${largest.inode}), found in ${Date.now() - t0} ms`,
      )
      if (largest.bytes > max) throw new Ext4ReaderDeclined(largest.inode, largest.bytes)
    }
  }

  const fuse2fs = findExecutable('fuse2fs')
  if (!fuse2fs) throw new VirtDibError('fuse2fs is not installed (apt-get install fuse2fs)')
  const dir = mkdtempSync(join(o.workDir, 'ext4-'))
  const mnt = join(dir, 'root')
  const what = `the file system in ‘${image}’`
  // fuse2fs puts its device into `-o fsname=…` unquoted: a comma in the path would split the
  // options. A link of our own naming, opened relative to fuse2fs's cwd, has none.
  symlinkSync(image, join(dir, 'image'))
  mkdirSync(mnt)

  const output: string[] = []
  const split = new LineSplitter()
  const said = (lines: readonly string[]) => {
    for (const l of lines.filter((x) => x && !/^Mounting read-only\.?$/.test(x))) {
      output.push(l)
      if (/warning/i.test(l)) o.onWarning?.(`fuse2fs: ${l}`)
      else o.onDebug?.(`fuse2fs: ${l}`)
    }
  }
  // Our own stop, not the build's signal: on abort tar is stopped first and the mount released,
  // and fuse2fs then ends by itself; it is only killed if it does not.
  const stopServer = new AbortController()
  const opts = ['ro', 'fakeroot', ...(o.offset ? [`offset=${o.offset}`] : [])].join(',')
  o.onDebug?.(`fuse2fs ${image} ${mnt} -f -o ${opts}`)
  const server = runProcess(fuse2fs, ['image', 'root', '-f', '-o', opts], {
    cwd: dir,
    // a session of its own: a Ctrl-C at the terminal does not unmount it under tar
    processGroup: true,
    signal: stopServer.signal,
    onStdout: (s) => said(split.push(s)),
    onStderr: (s) => said(split.push(s)),
  })
  const served = trackServing(
    server.then((r) => {
      said(split.flush())
      // Any exit while we still need it is a failure (fuse2fs exits 0 on a bad mount point).
      throw new VirtDibError(fuse2fsReason(output, r.code, r.signal))
    }),
  )

  try {
    await waitForFuseMount(mnt, served, { what, ...(o.signal ? { signal: o.signal } : {}) })
    // prettier-ignore
    const args = [
      '-C', mnt,
      '--numeric-owner',
      ...o.excludes.map((e) => `--exclude=${e}`),
      '--xattrs',
      '--sparse',
      ...(o.sourceDateEpoch !== undefined ? reproducibleTarArgs(o.sourceDateEpoch) : []),
      '-cf', dest, '--totals', '.',
    ]
    const t0 = Date.now()
    const r = await runTool('tar', args, { ...(o.signal ? { signal: o.signal } : {}) }).catch(async (e: unknown) => {
      // fuse2fs ended under tar (killed, crashed): tar's own words for it are only a symptom.
      // Its exit may be seen a moment after tar's.
      if (!o.signal?.aborted) await Promise.race([served.done, sleep(250)])
      const died = served.settled
        ? await server.then(
            (x) => (x.signal ? `killed by ${x.signal}` : `exit status ${x.code}`),
            () => 'failed',
          )
        : undefined
      throw tarError(e, image, dest, destName, died)
    })
    const total = /Total bytes written: (\d+)/.exec(r.stderr)
    if (!total) throw new VirtDibError(`tar of ${what} gave no length: ${r.stderr.trim().split('\n').pop() ?? ''}`)
    for (const l of r.stderr.split('\n').filter((x) => x && !x.startsWith('Total bytes written')))
      o.onDebug?.(`tar: ${l.replace(/^tar: /, '')}`)
    o.onDebug?.(`archived ${what}: ${total[1]} bytes in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
    return Number(total[1])
  } finally {
    await release(mnt, served, stopServer, { what, ...o })
    // The link, then the (empty, unmounted) mount point, then the directory: never recursive, so
    // a mount that could not be released is not walked into.
    try {
      rmSync(join(dir, 'image'), { force: true })
      rmdirSync(mnt)
      rmdirSync(dir)
    } catch (e) {
      o.onWarning?.(`could not remove the mount point ${mnt}: ${describeSystemError(e)}`)
    }
  }
}

/**
 * Unmounts (tar has ended: nothing else of ours is in the mount), waits for fuse2fs to exit, and
 * kills it if it does not; a dead mount (fuse2fs killed) is detached. Never throws: the archive
 * is complete or its own error is the one reported.
 */
async function release(
  mnt: string,
  served: ReturnType<typeof trackServing>,
  stopServer: AbortController,
  o: { what: string; signal?: AbortSignal; onDebug?: (t: string) => void; onWarning?: (t: string) => void },
): Promise<void> {
  try {
    if (isMounted(mnt))
      await releaseFuseMount(mnt, served, {
        what: o.what,
        ...(o.signal ? { signal: o.signal } : {}),
        ...(o.onDebug ? { onDebug: o.onDebug } : {}),
        ...(o.onWarning ? { onWarning: o.onWarning } : {}),
      })
  } catch (e) {
    o.onWarning?.((e as Error).message)
  }
  if (!served.settled) {
    // not mounted yet (an abort while it started), or it did not end after the unmount
    stopServer.abort()
    await served.done
  }
  if (isMounted(mnt)) {
    await runTool(fusermount(), ['-u', '-z', mnt]).catch((e: unknown) => {
      o.onWarning?.(`could not detach ${mnt}: ${(e as Error).message}`)
    })
  }
}
