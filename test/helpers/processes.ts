// Process and resource probes shared by tests: qemu children, threads, fds, temp dirs.
import { readdirSync, readFileSync } from 'node:fs'

import { pids, readStat } from '../../src/host/proc.js'

interface ProcInfo {
  pid: number
  ppid: number
  cmdline: string
}

function readProc(pid: number): ProcInfo | undefined {
  const st = readStat(pid) // the same parse as the code under test
  if (!st) return undefined
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ')
    return { pid, ppid: st.ppid, cmdline }
  } catch {
    return undefined
  }
}

export function allProcesses(): ProcInfo[] {
  return pids()
    .map(readProc)
    .filter((p): p is ProcInfo => p !== undefined)
}

/** qemu processes descended from `root` (default: this process). */
export function qemuDescendants(root = process.pid): ProcInfo[] {
  const procs = allProcesses()
  const children = new Map<number, ProcInfo[]>()
  for (const p of procs) children.set(p.ppid, [...(children.get(p.ppid) ?? []), p])
  const out: ProcInfo[] = []
  const walk = (pid: number) => {
    for (const c of children.get(pid) ?? []) {
      if (/qemu-system/.test(c.cmdline)) out.push(c)
      walk(c.pid)
    }
  }
  walk(root)
  return out
}

/** Every qemu process on the machine (pids). */
export function allQemuPids(): number[] {
  return allProcesses()
    .filter((p) => /qemu-system/.test(p.cmdline))
    .map((p) => p.pid)
}

export function threadCount(): number {
  return readdirSync('/proc/self/task').length
}

export function fdCount(): number {
  return readdirSync('/proc/self/fd').length
}

export async function waitFor(cond: () => boolean, timeoutMs: number, stepMs = 100): Promise<boolean> {
  const end = Date.now() + timeoutMs
  while (Date.now() < end) {
    if (cond()) return true
    await new Promise((r) => setTimeout(r, stepMs))
  }
  return cond()
}

/** True while `pid` exists (signal 0). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
