// Host processes read from /proc (Linux): the live members of a process group, and the processes
// that use a directory tree (their cwd, root or an open file in it), which is what `fuser -m` names.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs'

export interface HostProcess {
  pid: number
  /** The command name (/proc/PID/comm). */
  command: string
  /**
   * When it started (clock ticks since boot, field 22 of /proc/PID/stat): with the pid, it names
   * this process and not a later one that reuses the pid.
   */
  startTime?: number
}

export interface ProcStat {
  pid: number
  command: string
  state: string
  ppid: number
  pgid: number
  startTime: number
}

/** Parses /proc/PID/stat text; comm may hold spaces and parentheses, so it ends at the last ')'. */
export function parseStat(pid: number, s: string): ProcStat {
  const close = s.lastIndexOf(')')
  // Fields from the third (state) on: field n is rest[n - 3].
  const rest = s.slice(close + 2).split(' ')
  return {
    pid,
    command: s.slice(s.indexOf('(') + 1, close),
    state: rest[0] ?? '',
    ppid: Number(rest[1]),
    pgid: Number(rest[2]),
    startTime: Number(rest[19]),
  }
}

/** /proc/PID/stat, parsed; undefined when the process is gone. */
export function readStat(pid: number): ProcStat | undefined {
  try {
    return parseStat(pid, readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return undefined // gone meanwhile
  }
}

/** The pids in /proc now. */
export function pids(): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
}

/** Live (not zombie) processes of process group `pgid`. */
export function listProcessGroup(pgid: number): HostProcess[] {
  const out: HostProcess[] = []
  for (const pid of pids()) {
    const st = readStat(pid)
    // A zombie holds nothing, and may never be reaped where PID 1 does not reap orphans.
    if (st && st.pgid === pgid && st.state !== 'Z') out.push({ pid, command: st.command })
  }
  return out
}

function inside(link: string, dir: string): boolean {
  return link === dir || link.startsWith(`${dir}/`)
}

/**
 * Processes whose cwd, root or an open file is `dir` or below it (by path, so only while `dir` is
 * still mounted there). Processes of other users are skipped where /proc does not let us look.
 */
export function findProcessesUsing(dir: string): HostProcess[] {
  const out: HostProcess[] = []
  for (const pid of pids()) {
    if (pid === process.pid) continue
    const links: string[] = []
    for (const l of ['cwd', 'root', 'exe']) {
      try {
        links.push(readlinkSync(`/proc/${pid}/${l}`))
      } catch {
        // not ours to read, or gone
      }
    }
    try {
      for (const fd of readdirSync(`/proc/${pid}/fd`)) {
        try {
          links.push(readlinkSync(`/proc/${pid}/fd/${fd}`))
        } catch {
          // closed meanwhile
        }
      }
    } catch {
      // not ours to read, or gone
    }
    if (links.some((l) => inside(l, dir))) {
      const st = readStat(pid)
      if (st && st.state !== 'Z') out.push({ pid, command: st.command, startTime: st.startTime })
    }
  }
  return out
}

/**
 * Sends `sig` to `p` only if its pid still names the same process (the start time found with it
 * is unchanged): a pid found seconds earlier may have been reused since. False if not sent.
 */
export function killIfSame(
  p: HostProcess,
  sig: NodeJS.Signals,
  read: (pid: number) => ProcStat | undefined = readStat,
): boolean {
  const now = read(p.pid)
  if (!now || now.state === 'Z' || p.startTime === undefined || now.startTime !== p.startTime) return false
  try {
    process.kill(p.pid, sig)
    return true
  } catch {
    return false // gone meanwhile
  }
}

/** `sleep (pid 12), bash (pid 13)`, at most `max` of them. */
export function describeProcesses(ps: readonly HostProcess[], max = 3): string {
  const shown = ps.slice(0, max).map((p) => `${p.command} (pid ${p.pid})`)
  if (ps.length > max) shown.push(`${ps.length - max} more`)
  return shown.join(', ')
}
