// The image root's archive read on the host through fuse2fs, with real tools and no appliance:
// mke2fs -d builds an ext4 image from a source tree holding every kind of file the guest's archive
// must keep (owners, setuid, hard links, a device, a FIFO, symlinks, a sparse file, xattrs), and
// archiveExt4's archive must list exactly as host tar's archive of the source tree does.
import { execFileSync } from 'node:child_process'
import {
  createReadStream,
  existsSync,
  linkSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { BuildAbortedError, VirtDibError } from '../../../src/errors.js'
import {
  archiveExt4,
  Ext4ReaderDeclined,
  hostTreeReaderSupport,
  MAX_DIRECTORY_BYTES,
} from '../../../src/host/ext4-reader.js'
import { isMounted, mountPoints } from '../../../src/host/fuse.js'
import { findExecutable } from '../../../src/host/which.js'
import { TREE_EXCLUDES } from '../../../src/outputs/types.js'
import { waitFor } from '../../helpers/processes.js'
import { tempDir } from '../../helpers/temp.js'

const find = (t: string) => findExecutable(t, `${process.env['PATH']}:/usr/sbin:/sbin`)
const support = hostTreeReaderSupport()
const missingTools = ['fuse2fs', 'mke2fs', 'debugfs', 'mkfifo', 'mknod'].filter((t) => !find(t))
const missing =
  missingTools.length > 0
    ? `needs ${missingTools.join(', ')}`
    : !support.ok
      ? support.reason
      : process.getuid?.() !== 0
        ? 'needs root to build the source tree (chown, mknod)'
        : ''
const setfattr = find('setfattr')
const getfattr = find('getfattr')

const run = (cmd: string, args: readonly string[]) =>
  execFileSync(find(cmd) ?? cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })

/** Set by buildTree: setfattr is there and the temp dir's file system takes user.* xattrs. */
let xattrs = false

/** Every kind of file the guest's archive keeps; xattrs where they can be set. */
function buildTree(src: string): void {
  const at = (p: string) => join(src, p)
  for (const d of ['bin', 'sub/dir2', 'dev', 'empty', 'proc', 'sys']) mkdirSync(at(d), { recursive: true })
  writeFileSync(at('bin/su'), 'setuid\n')
  run('chown', ['123:456', at('bin/su')])
  run('chmod', ['4755', at('bin/su')])
  linkSync(at('bin/su'), at('sub/su-link'))
  writeFileSync(at('a1'), 'second pair\n')
  linkSync(at('a1'), at('sub/dir2/a2'))
  run('mknod', [at('dev/null'), 'c', '1', '3'])
  // numbers past 8 bits: the inode's new device encoding
  run('mknod', [at('dev/big'), 'b', '259', '300'])
  run('mkfifo', [at('fifo')])
  symlinkSync('/etc/passwd', at('abs'))
  symlinkSync('../bin/su', at('sub/rel'))
  writeFileSync(at('sparse'), '')
  run('truncate', ['-s', '100M', at('sparse')])
  writeFileSync(at('sparse'), 'x', { flag: 'a' })
  writeFileSync(at('proc/x'), 'excluded\n')
  writeFileSync(at('sys/y'), 'excluded\n')
  writeFileSync(at('odd name\nline'), 'spaces and a newline\n')
  if (setfattr) {
    writeFileSync(at('xa'), 'user xattr\n')
    writeFileSync(at('cap'), 'capability\n')
    try {
      run('setfattr', ['-n', 'user.test', '-v', 'value', at('xa')])
      // VFS_CAP_REVISION_2 with the effective bit, cap_net_raw (13) permitted
      run('setfattr', ['-n', 'security.capability', '-v', '0x0100000200200000000000000000000000000000', at('cap')])
      xattrs = true
    } catch {
      console.log('the temp dir takes no user xattrs: the xattr checks are skipped')
    }
  }
}

/** Host tar's archive of `src`, with the options of the guest's (and archiveExt4's) tar. */
function referenceTar(src: string, dest: string): void {
  // prettier-ignore
  run('tar', ['-C', src, '--numeric-owner', ...TREE_EXCLUDES.map((e) => `--exclude=${e}`), '--xattrs', '--sparse', '-cf', dest, '.'])
}

interface Member {
  perm: string
  owner: string
  /** Size, or `major,minor` of a device. */
  size: string
  mtime: string
  name: string
  symlink?: string
  hardlink?: string
  xattrs: string[]
}

/** tar's own listing (all xattr names and lengths), parsed; lost+found is the file system's. */
function listTar(file: string): Member[] {
  // prettier-ignore
  const out = run('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '--full-time', '-tvvf', file]).toString()
  const members: Member[] = []
  for (const line of out.split('\n').filter(Boolean)) {
    const x = /^ {2}x: (\d+) (.*)$/.exec(line)
    if (x) {
      members.at(-1)!.xattrs.push(`${x[2]}=${x[1]}`)
      continue
    }
    const m = /^(\S+)\s+(\d+\/\d+)\s+(\d+,\d+|\d+)\s+(\S+ \S+) (.*)$/.exec(line)
    if (!m) throw new Error(`unexpected listing line: ${line}`)
    const [, perm, owner, size, mtime, rest] = m as unknown as [string, string, string, string, string, string]
    // Whole seconds: mke2fs -d stores no nanoseconds (and fuse2fs 1.47.0 would not give them).
    const member: Member = { perm, owner, size, mtime: mtime.replace(/\.\d+$/, ''), name: rest, xattrs: [] }
    const link = / link to (.*)$/.exec(rest)
    const sym = / -> (.*)$/.exec(rest)
    if (perm.startsWith('h') && link) Object.assign(member, { name: rest.slice(0, link.index), hardlink: link[1] })
    else if (perm.startsWith('l') && sym) Object.assign(member, { name: rest.slice(0, sym.index), symlink: sym[1] })
    members.push(member)
  }
  return members.filter((m) => !m.name.startsWith('./lost+found/'))
}

/**
 * Members in a form that does not depend on readdir order: sorted by name, and each hard-link
 * group as its data member (the first name tar met) with the group's names, whichever came first.
 */
function canonical(members: Member[]): object[] {
  const groups = new Map<string, string[]>()
  for (const m of members.filter((x) => x.hardlink)) {
    const g = groups.get(m.hardlink!) ?? [m.hardlink!]
    groups.set(m.hardlink!, [...g, m.name])
  }
  return members
    .filter((m) => !m.hardlink)
    .map((m) => {
      const { perm, owner, size, mtime, name, symlink, xattrs } = m
      return { perm, owner, size, mtime, names: [...(groups.get(name) ?? [name])].sort(), symlink, xattrs }
    })
    .sort((a, b) => (a.names[0]! < b.names[0]! ? -1 : 1))
}

/** Processes named fuse2fs whose cwd is under `dir` (ours run in the mount point's folder). */
function fuse2fsUnder(dir: string): number[] {
  const pids: number[] = []
  for (const d of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      if (readFileSync(`/proc/${d}/comm`, 'utf8').trim() !== 'fuse2fs') continue
      if (readlinkSync(`/proc/${d}/cwd`).startsWith(dir)) pids.push(Number(d))
    } catch {
      // gone
    }
  }
  return pids
}

const timed = async <T>(what: string, f: () => Promise<T>): Promise<T> => {
  const t0 = performance.now()
  const r = await f()
  console.log(`${what}: ${((performance.now() - t0) / 1000).toFixed(2)} s`)
  return r
}

describe.skipIf(missing !== '')(`archiveExt4${missing ? ` (skipped: ${missing})` : ''}`, () => {
  const root = tempDir('vdib-ext4-')
  const src = join(root, 'src')
  const work = join(root, 'work')
  const image = join(root, 'whole.img')
  const partitioned = join(root, 'part, with comma.img')
  const ref = join(root, 'ref.tar')
  const OFFSET = 1024 * 1024
  if (missing === '') {
    mkdirSync(src)
    mkdirSync(work)
    buildTree(src)
    run('mke2fs', ['-q', '-t', 'ext4', '-d', src, image, '300M'])
    run('mke2fs', ['-q', '-t', 'ext4', '-E', `offset=${OFFSET}`, '-d', src, partitioned, '300M'])
    referenceTar(src, ref)
  }
  const expected = () => canonical(listTar(ref))

  const base = { excludes: TREE_EXCLUDES, workDir: work }
  const leftovers = () => ({
    entries: readdirSync(work),
    mounts: mountPoints().filter((m) => m.startsWith(work)),
    servers: fuse2fsUnder(work),
  })
  const clean = { entries: [], mounts: [], servers: [] }

  it('is supported here', () => {
    expect(support).toEqual({ ok: true })
  })

  it.each([
    ['a whole-disk file system', image, 0],
    ['a file system at 1 MiB (a partition), in a file named with a comma', partitioned, OFFSET],
  ])('archives %s exactly as host tar archives its source tree', async (what, img, offset) => {
    const dest = join(root, `out-${offset}.tar`)
    // A longer file there already: tar -f truncates it.
    writeFileSync(dest, Buffer.alloc(4 * 1024 * 1024, 1))
    const debug: string[] = []
    const warnings: string[] = []
    const bytes = await timed(`archiveExt4 of ${what}`, () =>
      archiveExt4({
        ...base,
        image: img,
        offset,
        dest,
        onDebug: (t) => debug.push(t),
        onWarning: (t) => warnings.push(t),
      }),
    )
    expect(warnings).toEqual([])
    expect(bytes).toBe(statSync(dest).size)
    expect(bytes % 10240).toBe(0)
    // the 100 MB file is stored as holes (GNU sparse map), not as zeros
    expect(bytes).toBeLessThan(1024 * 1024)
    expect(readFileSync(dest).includes('GNU.sparse')).toBe(true)
    const ours = listTar(dest)
    expect(canonical(ours)).toEqual(expected())
    // spot checks of what the comparison covers, in case both sides lost it
    const byName = new Map(ours.map((m) => [m.name, m]))
    expect(byName.get('./bin/su') ?? byName.get('./sub/su-link')).toMatchObject({
      perm: '-rwsr-xr-x',
      owner: '123/456',
    })
    expect([byName.get('./bin/su')?.hardlink, byName.get('./sub/su-link')?.hardlink]).toContain(
      byName.get('./bin/su')?.hardlink ? './sub/su-link' : './bin/su',
    )
    expect(byName.get('./dev/null')).toMatchObject({ perm: 'crw-r--r--', size: '1,3' })
    expect(byName.get('./dev/big')).toMatchObject({ perm: 'brw-r--r--', size: '259,300' })
    expect(byName.get('./fifo')?.perm).toMatch(/^p/)
    expect(byName.get('./abs')?.symlink).toBe('/etc/passwd')
    expect(byName.get('./sub/rel')?.symlink).toBe('../bin/su')
    expect(byName.get('./sparse')?.size).toBe(String(100 * 1024 * 1024 + 1))
    expect(byName.get('./odd name\\nline')).toBeDefined()
    expect(byName.get('./empty/')).toBeDefined()
    expect(byName.get('./proc/')).toBeDefined()
    expect(byName.get('./proc/x')).toBeUndefined()
    expect(byName.get('./sys/y')).toBeUndefined()
    if (xattrs) {
      expect(byName.get('./xa')?.xattrs).toEqual(['user.test=5'])
      expect(byName.get('./cap')?.xattrs).toEqual(['security.capability=20'])
    }
    expect(leftovers()).toEqual(clean)
  })

  it('with SOURCE_DATE_EPOCH, gives the same bytes for the same tree whatever its directory order and times', async () => {
    const epoch = 1_700_000_000
    // The same tree copied later (other ctimes and atimes) onto a file system with another hash seed (another readdir order).
    const src2 = join(root, 'src-copy')
    run('cp', ['-a', src, src2])
    const other = join(root, 'other-seed.img')
    run('mke2fs', [
      '-q',
      '-t',
      'ext4',
      '-E',
      'hash_seed=0b7a2c31-57a5-4b21-9d6e-2f0c1e3a4b5d',
      '-d',
      src2,
      other,
      '300M',
    ])
    const a = join(root, 'repro-a.tar')
    const b = join(root, 'repro-b.tar')
    await archiveExt4({ ...base, image, offset: 0, dest: a, sourceDateEpoch: epoch })
    await archiveExt4({ ...base, image: other, offset: 0, dest: b, sourceDateEpoch: epoch })
    expect(readFileSync(a).equals(readFileSync(b))).toBe(true)
    const names = run('tar', ['-tf', a]).toString().trim().split('\n')
    expect(names).toEqual([...names].sort((x, y) => (Buffer.from(x) < Buffer.from(y) ? -1 : x === y ? 0 : 1)))
    // every time was after the epoch (the tree was made now): all clamped to it, no pid in pax header names
    const times = run('tar', ['--full-time', '-tvf', a])
      .toString()
      .trim()
      .split('\n')
      .map((l) => /\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/.exec(l)?.[0])
    expect(new Set(times)).toEqual(new Set(['2023-11-14 22:13:20']))
    expect(readFileSync(a).includes('PaxHeaders.')).toBe(false)
    expect(readFileSync(a).includes('atime=')).toBe(false)
    expect(leftovers()).toEqual(clean)
  })

  it.skipIf(!setfattr || !getfattr)('keeps the xattrs’ values', async (t) => {
    if (!xattrs) t.skip()
    const dest = join(root, 'xattrs.tar')
    await archiveExt4({ ...base, image, offset: 0, dest })
    const out = join(root, 'extracted')
    mkdirSync(out)
    run('tar', ['--xattrs', '--xattrs-include=*', '-C', out, '-xf', dest, './xa', './cap'])
    expect(run('getfattr', ['--absolute-names', '-n', 'user.test', join(out, 'xa')]).toString()).toContain(
      'user.test="value"',
    )
    expect(
      run('getfattr', ['--absolute-names', '-e', 'hex', '-n', 'security.capability', join(out, 'cap')]).toString(),
    ).toContain('security.capability=0x0100000200200000000000000000000000000000')
  })

  it('stops on abort mid-way, leaving no mount, no fuse2fs and no mount point', async () => {
    const bigSrc = join(root, 'big-src')
    mkdirSync(bigSrc)
    execFileSync('sh', ['-c', `head -c 64M /dev/urandom > ${JSON.stringify(join(bigSrc, 'random'))}`])
    const big = join(root, 'big.img')
    run('mke2fs', ['-q', '-t', 'ext4', '-d', bigSrc, big, '200M'])
    const whole = join(root, 'big.tar')
    const bytes = await timed('archiveExt4 of 64 MiB of random data', () =>
      archiveExt4({ ...base, image: big, offset: 0, dest: whole }),
    )
    expect(bytes).toBeGreaterThan(64 * 1024 * 1024)
    // A FIFO read once then left alone: tar is stopped mid-archive, the mount in use.
    const fifo = join(root, 'stalled.tar')
    run('mkfifo', [fifo])
    const reader = createReadStream(fifo)
    let got = 0
    reader.once('data', (b) => {
      got = b.length
      reader.pause()
    })
    const ac = new AbortController()
    const done = archiveExt4({ ...base, image: big, offset: 0, dest: fifo, signal: ac.signal })
    await waitFor(() => got > 0, 10_000)
    const mounted = mountPoints().filter((m) => m.startsWith(work))
    expect(mounted).toHaveLength(1)
    expect(fuse2fsUnder(work)).toHaveLength(1)
    ac.abort()
    const t0 = performance.now()
    await expect(done).rejects.toBeInstanceOf(BuildAbortedError)
    console.log(`abort to settled: ${((performance.now() - t0) / 1000).toFixed(2)} s`)
    reader.destroy()
    expect(isMounted(mounted[0]!)).toBe(false)
    expect(leftovers()).toEqual(clean)
  })

  it('fails in one line when fuse2fs dies under tar, and still leaves nothing', async () => {
    const bigSrc = join(root, 'crash-src')
    mkdirSync(bigSrc)
    execFileSync('sh', ['-c', `head -c 32M /dev/urandom > ${JSON.stringify(join(bigSrc, 'random'))}`])
    const big = join(root, 'crash.img')
    run('mke2fs', ['-q', '-t', 'ext4', '-d', bigSrc, big, '100M'])
    const fifo = join(root, 'crash.tar')
    run('mkfifo', [fifo])
    const reader = createReadStream(fifo)
    let got = 0
    reader.on('data', (b) => {
      if (got === 0) reader.pause()
      got += b.length
    })
    const warnings: string[] = []
    const done = archiveExt4({ ...base, image: big, offset: 0, dest: fifo, onWarning: (t) => warnings.push(t) })
    await waitFor(() => got > 0, 10_000)
    const [server] = fuse2fsUnder(work)
    process.kill(server!, 'SIGKILL')
    await waitFor(() => fuse2fsUnder(work).length === 0, 5000)
    reader.resume()
    const e = await done.catch((x: unknown) => x)
    reader.destroy()
    expect(e).toBeInstanceOf(VirtDibError)
    expect((e as Error).message).toMatch(
      new RegExp(`^fuse2fs ended \\(killed by SIGKILL\\) while tar read the file system of ‘${big}’: \\./random: `),
    )
    expect((e as Error).message).not.toContain('\n')
    expect(leftovers()).toEqual(clean)
  })

  it.each([0, 1, 10, 30, 100])('stops on abort while mounting (after %i ms), leaving nothing', async (ms) => {
    const ac = new AbortController()
    const done = archiveExt4({ ...base, image, offset: 0, dest: join(root, `early-${ms}.tar`), signal: ac.signal })
    setTimeout(() => ac.abort(), ms)
    // Late enough, the (small) archive may be made before the abort is seen.
    await done.catch((e: unknown) => expect(e).toBeInstanceOf(BuildAbortedError))
    expect(leftovers()).toEqual(clean)
  })

  it('declines a file system with a directory too large for fuse2fs, before mounting', async () => {
    const wide = join(root, 'wide-src')
    mkdirSync(join(wide, 'many'), { recursive: true })
    // 2000 entries of 40 bytes: about 80 KiB of directory
    for (let i = 0; i < 2000; i++)
      writeFileSync(join(wide, 'many', `file-with-a-typical-name-${String(i).padStart(5, '0')}`), '')
    const img = join(root, 'wide.img')
    run('mke2fs', ['-q', '-t', 'ext4', '-d', wide, img, '64M'])
    const inode = Number(
      run('debugfs', ['-R', 'stat /many', img])
        .toString()
        .match(/Inode: (\d+)/)?.[1],
    )
    const dest = join(root, 'wide.tar')
    const debug: string[] = []
    const e = await archiveExt4({
      ...base,
      image: img,
      offset: 0,
      dest,
      maxDirectoryBytes: 64 * 1024,
      onDebug: (t) => debug.push(t),
    }).catch((x: unknown) => x)
    expect(e).toBeInstanceOf(Ext4ReaderDeclined)
    expect(e).toMatchObject({ inode })
    expect((e as Ext4ReaderDeclined).bytes).toBeGreaterThan(64 * 1024)
    expect((e as Error).message).toMatch(
      new RegExp(`^a directory of \\d+ KiB \\(inode ${inode}\\) is too large to read through fuse2fs$`),
    )
    expect(debug.some((l) => l.startsWith('fuse2fs '))).toBe(false) // never mounted
    expect(existsSync(dest)).toBe(false)
    expect(leftovers()).toEqual(clean)
    // under the default limit it is read (and timed: the lead's numbers for a 2000-entry directory)
    expect((e as Ext4ReaderDeclined).bytes).toBeLessThan(MAX_DIRECTORY_BYTES)
    await timed('archiveExt4 of a directory of 2000 entries', () =>
      archiveExt4({ ...base, image: img, offset: 0, dest }),
    )
    expect(listTar(dest).filter((m) => m.name.startsWith('./many/f'))).toHaveLength(2000)
  })

  it('refuses a file that holds no ext4 file system, naming it', async () => {
    const zeros = join(root, 'zeros.img')
    writeFileSync(zeros, Buffer.alloc(4 * 1024 * 1024))
    const e = await archiveExt4({ ...base, image: zeros, offset: 0, dest: join(root, 'z.tar') }).catch(
      (x: unknown) => x,
    )
    expect(e).toBeInstanceOf(VirtDibError)
    expect((e as Error).message).toBe(`‘${zeros}’ has no ext2/3/4 file system`)
    // at the wrong offset of a good image, too
    const e2 = await archiveExt4({ ...base, image: partitioned, offset: 0, dest: join(root, 'z.tar') }).catch(
      (x: unknown) => x,
    )
    expect((e2 as Error).message).toBe(`‘${partitioned}’ has no ext2/3/4 file system`)
    expect(leftovers()).toEqual(clean)
  })

  it('refuses a file system whose journal needs recovery', async () => {
    const dirty = join(root, 'dirty.img')
    run('cp', ['--sparse=always', image, dirty])
    run('debugfs', ['-w', '-R', 'feature needs_recovery', dirty])
    const e = await archiveExt4({ ...base, image: dirty, offset: 0, dest: join(root, 'd.tar') }).catch(
      (x: unknown) => x,
    )
    expect(e).toBeInstanceOf(VirtDibError)
    expect((e as Error).message).toBe(
      `the file system in ‘${dirty}’ needs journal recovery (it is still mounted read-write, or was not unmounted cleanly): not reading it`,
    )
    expect(leftovers()).toEqual(clean)
  })

  it('fails in one line on a destination in a missing folder', async () => {
    const dest = join(root, 'missing', 'out.tar')
    const e = await archiveExt4({ ...base, image, offset: 0, dest, destName: 'image.tar' }).catch((x: unknown) => x)
    expect(e).toBeInstanceOf(VirtDibError)
    expect((e as Error).message).toBe(
      `archiving the file system of ‘${image}’ into ‘image.tar’ failed: Cannot open: No such file or directory`,
    )
    expect(existsSync(join(root, 'missing'))).toBe(false)
    expect(leftovers()).toEqual(clean)
  })

  it.skipIf(!existsSync('/dev/full'))('says out of space when the destination is full', async () => {
    const e = await archiveExt4({ ...base, image, offset: 0, dest: '/dev/full', destName: 'image.tar' }).catch(
      (x: unknown) => x,
    )
    expect(e).toBeInstanceOf(VirtDibError)
    expect((e as Error).message).toBe(
      'out of space on the host: writing ‘image.tar’ failed: Cannot write: No space left on device',
    )
    expect((e as VirtDibError).hint).toMatch(/free some space/)
    expect(leftovers()).toEqual(clean)
  })
})
