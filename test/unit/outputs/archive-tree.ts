// A small image root with every kind of entry the archive formats must keep (device nodes in and
// out of ./dev, a hard link, sparse files, long names, xattrs), archived by GNU tar as the guest does.
import { execFileSync, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, linkSync, mkdirSync, openSync, readFileSync, symlinkSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'

/** Root only: device nodes need mknod. */
export const isRoot = process.getuid?.() === 0

export const LONG = 'n'.repeat(120)

/** The tree under `root` (made here); `bulk` bytes of random data in ./var/bulk make it bigger. */
export function makeTree(root: string, bulk = 0): void {
  for (const d of ['dev/pts', 'usr/dev', 'etc', 'var', `dev/${'d'.repeat(110)}`])
    mkdirSync(join(root, d), { recursive: true })
  const sh = (cmd: string, ...args: string[]) => execFileSync(cmd, args, { cwd: root, stdio: 'pipe' })
  sh('mknod', 'dev/null', 'c', '1', '3')
  sh('mknod', 'dev/zero', 'c', '1', '5')
  sh('mknod', 'usr/dev/x', 'c', '1', '5') // a device node outside ./dev: kept
  sh('mknod', 'etc/blk', 'b', '7', '0')
  writeFileSync(join(root, 'dev/pts/f'), 'under dev\n')
  writeFileSync(join(root, `dev/${LONG}`), 'long name under dev\n')
  writeFileSync(join(root, 'etc/a'), 'hard-linked\n')
  linkSync(join(root, 'etc/a'), join(root, 'etc/hl'))
  sh('setfattr', '-n', 'user.vdib', '-v', 'kept', 'etc/a')
  writeFileSync(join(root, `etc/${LONG}`), 'long name\n')
  linkSync(join(root, `etc/${LONG}`), join(root, 'etc/long-link')) // a hard link to a long name
  symlinkSync(`../etc/${LONG}`, join(root, 'var/long-symlink'))
  writeFileSync(join(root, 'usr/dev/y'), 'a file under a dev/ that is not ./dev\n')
  // Sparse: a few holes, and one with 40 data segments (GNU's old format needs extension blocks).
  sparse(join(root, 'var/sparse'), 8 << 20, [1 << 20, 5 << 20])
  sparse(
    join(root, 'var/holes'),
    4 << 20,
    [...Array(40).keys()].map((i) => i * 65536 + 4096),
  )
  if (bulk > 0) writeFileSync(join(root, 'var/bulk'), randomBytes(bulk))
}

function sparse(path: string, size: number, dataAt: readonly number[]): void {
  const fd = openSync(path, 'w')
  try {
    for (const at of dataAt) writeSync(fd, Buffer.from(`data at ${at}\n`), 0, undefined, at)
    writeSync(fd, Buffer.from('end'), 0, undefined, size - 3)
  } finally {
    closeSync(fd)
  }
}

/** The guest's archive of `root` (as the export step writes it): pax with xattrs, sparse, numeric owners. */
export function guestTar(root: string, file: string, format?: 'gnu'): void {
  // prettier-ignore
  execFileSync('tar', [
    '-C', root, '--numeric-owner', "--exclude=./sys/*", "--exclude=./proc/*",
    ...(format === 'gnu' ? ['--format=gnu'] : ['--xattrs']), '--sparse', '-cf', file, '.',
  ], { stdio: 'pipe' })
}

/**
 * What dropping ./dev/'s contents must leave of `file`, computed apart from the filter: Python's
 * tarfile gives each member's extent (its metadata headers included); the tail goes as is.
 */
export function withoutDevContents(file: string): Buffer {
  const script = `
import sys, tarfile, json
t = tarfile.open(sys.argv[1])
ms = t.getmembers()
ends = [m.offset for m in ms[1:]] + [t.offset]
print(json.dumps([[m.offset, e] for m, e in zip(ms, ends) if not m.name.startswith('./dev/')] + [[t.offset, -1]]))
`
  const ranges = JSON.parse(execFileSync('python3', ['-c', script, file], { encoding: 'utf8' })) as [number, number][]
  const all = readFileSync(file)
  return Buffer.concat(ranges.map(([a, b]) => all.subarray(a, b < 0 ? all.length : b)))
}

/** `tar -tv` of an archive: throws with tar's complaint if it is not clean. */
export function listArchive(file: string): string[] {
  const r = spawnSync('tar', ['--numeric-owner', '-tvf', file], { encoding: 'utf8' })
  if (r.status !== 0 || r.stderr !== '') throw new Error(`tar -tvf ${file}: ${r.status} ${r.stderr}`)
  return r.stdout.split('\n').filter(Boolean)
}
