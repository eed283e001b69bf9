// qemu's own temporary files: a drive with snapshot=on gets an overlay `vl.XXXXXX` in qemu's
// TMPDIR (/var/tmp without one), removed when qemu closes it. A qemu killed during its boot (an
// abort while launching) leaves it behind; the build removes those nobody holds open any more.
import { readdirSync, readlinkSync, rmSync } from 'node:fs'
import { join } from 'node:path'

import { pids } from './proc.js'

const QEMU_TEMP = /^vl\.[A-Za-z0-9]{6}$/

/** The folder qemu puts its temporaries in: its TMPDIR (this process's), else /var/tmp. */
export function qemuTempDir(env: NodeJS.ProcessEnv = process.env): string {
  return env['TMPDIR'] || '/var/tmp'
}

/** qemu temporaries in `dir` now. */
export function listQemuTemps(dir: string): string[] {
  try {
    return readdirSync(dir).filter((f) => QEMU_TEMP.test(f))
  } catch {
    return []
  }
}

/** Every file some process holds open (readlink of /proc/PID/fd/N). */
function openFiles(): Set<string> {
  const open = new Set<string>()
  for (const pid of pids()) {
    let fds: string[]
    try {
      fds = readdirSync(`/proc/${pid}/fd`)
    } catch {
      continue
    }
    for (const fd of fds) {
      try {
        open.add(readlinkSync(`/proc/${pid}/fd/${fd}`))
      } catch {
        // closed meanwhile
      }
    }
  }
  return open
}

/** Removes the qemu temporaries of `dir` that were not there before (`before`) and are open nowhere. */
export function removeOrphanQemuTemps(dir: string, before: ReadonlySet<string>): string[] {
  const fresh = listQemuTemps(dir).filter((f) => !before.has(f))
  if (fresh.length === 0) return []
  const open = openFiles()
  const removed: string[] = []
  for (const f of fresh) {
    const path = join(dir, f)
    if (open.has(path)) continue
    rmSync(path, { force: true })
    removed.push(path)
  }
  return removed
}
