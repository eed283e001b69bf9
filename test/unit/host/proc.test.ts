// /proc parsing and the guard against killing a reused pid: a process found earlier is killed
// only while its pid still names it (the same start time).
import { spawn } from 'node:child_process'

import { afterEach, describe, expect, it } from 'vitest'

import { killIfSame, parseStat, readStat, type HostProcess } from '../../../src/host/proc.js'
import { waitFor } from '../../helpers/processes.js'

const STAT = '4242 (a) b (c)) S 1 4240 4240 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 rest'

const alive = (pid: number) => readStat(pid) !== undefined && readStat(pid)!.state !== 'Z'

describe('proc', () => {
  const started: number[] = []
  afterEach(() => {
    for (const pid of started.splice(0)) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // gone
      }
    }
  })

  it('parses a stat line whose command holds spaces and parentheses', () => {
    expect(parseStat(4242, STAT)).toEqual({
      pid: 4242,
      command: 'a) b (c)',
      state: 'S',
      ppid: 1,
      pgid: 4240,
      startTime: 987654,
    })
  })

  it('reads this process’s own start time (field 22)', () => {
    const st = readStat(process.pid)!
    expect(st.ppid).toBe(process.ppid)
    expect(Number.isInteger(st.startTime) && st.startTime > 0).toBe(true)
  })

  it('a process found, then replaced under the same pid, is not killed', () => {
    const p = spawn('sleep', ['100'], { stdio: 'ignore' })
    started.push(p.pid!)
    const found: HostProcess = { pid: p.pid!, command: 'sleep', startTime: readStat(p.pid!)!.startTime }
    // What /proc says once the pid belongs to a later process: another start time.
    const replaced = (pid: number) => ({ ...readStat(pid)!, startTime: found.startTime! + 500 })
    expect(killIfSame(found, 'SIGKILL', replaced)).toBe(false)
    expect(alive(p.pid!)).toBe(true)
    // Found without a start time: not enough to be sure either.
    expect(killIfSame({ pid: p.pid!, command: 'sleep' }, 'SIGKILL')).toBe(false)
    expect(alive(p.pid!)).toBe(true)
  })

  it('the same process is killed', async () => {
    const p = spawn('sleep', ['100'], { stdio: 'ignore' })
    started.push(p.pid!)
    const exited = new Promise((r) => p.on('exit', r))
    const found: HostProcess = { pid: p.pid!, command: 'sleep', startTime: readStat(p.pid!)!.startTime }
    expect(killIfSame(found, 'SIGKILL')).toBe(true)
    await exited
    expect(await waitFor(() => !alive(p.pid!), 2000)).toBe(true)
    // Gone: nothing to kill.
    expect(killIfSame(found, 'SIGKILL')).toBe(false)
  })
})
