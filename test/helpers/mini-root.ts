// A tiny root file system made from host files: dash as /bin/sh plus the libraries it needs.
// Enough for guestfs `sh`, which chroots into the guest.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** Writes a tarball of a minimal root and returns its path (caller deletes `dir`). */
export function makeMiniRootTarball(): { tarball: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'vdib-miniroot.'))
  const root = join(dir, 'root')
  const libs = execFileSync('ldd', ['/usr/bin/dash'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => /(\/\S+)\s+\(0x/.exec(l)?.[1])
    .filter((p): p is string => !!p)
  const script = [
    'set -e',
    `mkdir -p "${root}/bin" "${root}/tmp" "${root}/etc"`,
    `cp /usr/bin/dash "${root}/bin/sh"`,
    ...libs.map((l) => `mkdir -p "${root}$(dirname ${l})" && cp -L ${l} "${root}${l}"`),
    `echo mini > "${root}/etc/hostname"`,
    `tar -C "${root}" -cf "${dir}/root.tar" .`,
  ].join('\n')
  execFileSync('sh', ['-c', script])
  return { tarball: join(dir, 'root.tar'), dir }
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true })
}
