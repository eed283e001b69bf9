// The spawn wrapper with real processes: typed errors, and process groups stopped as a whole on
// abort and when the command leaves children behind (grandchildren included).
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { BuildAbortedError, HostToolError } from '../../../src/errors.js'
import { listProcessGroup } from '../../../src/host/proc.js'
import { probeSync, runProcess, runProcessSync, runTool } from '../../../src/host/spawn.js'
import { tempDir } from '../../helpers/temp.js'

const alive = (pid: number) => {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return st.slice(st.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
  }
}
const pidsIn = (file: string) => readFileSync(file, 'utf8').trim().split(/\s+/).map(Number)

describe('runTool', () => {
  it('returns stdout on success and throws HostToolError with the stderr tail otherwise', async () => {
    expect((await runTool('sh', ['-c', 'echo out; echo err >&2'])).stdout).toBe('out\n')
    const e = await runTool('sh', ['-c', 'echo first >&2; echo last >&2; exit 3']).catch((x: unknown) => x)
    expect(e).toBeInstanceOf(HostToolError)
    expect((e as HostToolError).message).toBe('external command ‘sh’ exited with error 3: last')
  })

  it('throws HostToolError for a program that does not exist, and for one killed by a signal', async () => {
    const e = await runTool('/nonexistent/tool', []).catch((x: unknown) => x)
    expect(e).toBeInstanceOf(HostToolError)
    expect((e as Error).message).toMatch(/^external command ‘\/nonexistent\/tool’ was killed by a signal: .*ENOENT/)
    const k = await runTool('sh', ['-c', 'kill -KILL $$']).catch((x: unknown) => x)
    expect((k as Error).message).toBe('external command ‘sh’ was killed by SIGKILL')
  })

  it('streams text to callbacks without splitting a character between two chunks', async () => {
    let text = ''
    // 'é' is c3 a9: its two bytes arrive 0.2 s apart, so in two chunks.
    const script = "printf '\\303'; sleep 0.2; printf '\\251\\342\\202\\254\\n'"
    const r = await runProcess('sh', ['-c', script], { onStdout: (s) => (text += s) })
    expect(r.code).toBe(0)
    expect(text).toBe('é€\n')
  })

  it('rejects an already aborted call without starting anything', async () => {
    const c = new AbortController()
    c.abort()
    await expect(runTool('sh', ['-c', 'exit 0'], { signal: c.signal })).rejects.toBeInstanceOf(BuildAbortedError)
  })
})

describe('runProcess with a process group', () => {
  const dir = tempDir('vdib-spawn.')

  it('on abort, kills the whole group: the command, a background grandchild and a foreground one', async () => {
    const pids = join(dir, 'abort.pids')
    const c = new AbortController()
    const t0 = Date.now()
    const run = runProcess('bash', ['-c', `echo $$ > ${pids}; sleep 1000 & sleep 1000`], {
      signal: c.signal,
      processGroup: true,
    })
    const commands = () =>
      readIf(pids) === ''
        ? []
        : listProcessGroup(pidsIn(pids)[0]!)
            .map((p) => p.command)
            .sort()
    // Until both children have exec'd sleep (a fork is still called bash for a moment).
    await waitUntil(() => commands().join(' ') === 'bash sleep sleep').catch(() => c.abort())
    const leader = pidsIn(pids)[0]!
    const members = listProcessGroup(leader)
    c.abort(new BuildAbortedError('exiting on signal SIGINT', { signal: 'SIGINT' }))
    expect(members.map((p) => p.command).sort()).toEqual(['bash', 'sleep', 'sleep'])
    const e = await run.catch((x: unknown) => x)
    expect(e).toBeInstanceOf(BuildAbortedError)
    expect((e as BuildAbortedError).exitCode).toBe(130)
    expect(Date.now() - t0).toBeLessThan(10_000)
    expect(listProcessGroup(leader)).toEqual([])
    for (const p of members) expect(alive(p.pid), `${p.command} ${p.pid}`).toBe(false)
  })

  it('kills a group that ignores SIGTERM with SIGKILL after the grace time', async () => {
    const pids = join(dir, 'stubborn.pids')
    const c = new AbortController()
    const run = runProcess('bash', ['-c', `trap '' TERM; echo $$ > ${pids}; sleep 1000 & wait; sleep 1000`], {
      signal: c.signal,
      processGroup: true,
      killGraceMs: 300,
    })
    await waitUntil(() => readIf(pids) !== '')
    const t0 = Date.now()
    c.abort()
    await expect(run).rejects.toBeInstanceOf(BuildAbortedError)
    expect(Date.now() - t0).toBeLessThan(5000)
    expect(listProcessGroup(pidsIn(pids)[0]!)).toEqual([])
  })

  it('stops what the command left running when it exits, and names it', async () => {
    const pids = join(dir, 'strays.pids')
    const t0 = Date.now()
    // The background sleep keeps our stdout open: the call must not wait for it.
    const r = await runProcess('bash', ['-c', `sleep 1000 & echo $! > ${pids}; echo done`], { processGroup: true })
    expect(Date.now() - t0).toBeLessThan(10_000)
    expect(r.code).toBe(0)
    expect(r.stdout).toBe('done\n')
    // (named bash if it is caught between fork and exec)
    expect(r.strays.map((p) => p.pid)).toEqual(pidsIn(pids))
    expect(alive(pidsIn(pids)[0]!)).toBe(false)
  })

  it('does not wait forever for a process outside the group that holds its output', async () => {
    const pids = join(dir, 'escaped.pids')
    const t0 = Date.now()
    const r = await runProcess('bash', ['-c', `setsid sleep 1000 & echo $! > ${pids}; echo done`], {
      processGroup: true,
    })
    try {
      expect(Date.now() - t0).toBeLessThan(10_000)
      expect(r.code).toBe(0)
      expect(r.stdout).toBe('done\n')
    } finally {
      // It left our group: only the test can stop it.
      await waitUntil(() => readIf(pids) !== '')
      process.kill(pidsIn(pids)[0]!, 'SIGKILL')
    }
  })
})

describe('runProcessSync and probeSync', () => {
  it('runs to the end with any exit status, stdin fed, output captured', () => {
    const r = runProcessSync('sh', ['-c', 'cat; echo err >&2; exit 3'], { input: 'in\n' })
    expect(r).toEqual({ code: 3, signal: null, stdout: 'in\n', stderr: 'err\n' })
    expect(runProcessSync('sh', ['-c', 'echo $X'], { env: { X: 'y' } }).stdout).toBe('y\n')
    expect(runProcessSync('sh', ['-c', 'echo out'], { output: 'ignore' }).stdout).toBe('')
  })

  it('throws HostToolError when the command cannot start or times out', () => {
    const e = (() => {
      try {
        return runProcessSync('/nonexistent/vdib-tool', [])
      } catch (x) {
        return x
      }
    })()
    expect(e).toBeInstanceOf(HostToolError)
    expect(e).toMatchObject({ tool: '/nonexistent/vdib-tool', status: null })
    expect(() => runProcessSync('sleep', ['5'], { timeoutMs: 100 })).toThrow(HostToolError)
  })

  it('probeSync: exit 0 is true; a failure, a missing command or a timeout is false', () => {
    expect(probeSync('true', [])).toBe(true)
    expect(probeSync('sh', ['-c', 'exit 1'])).toBe(false)
    expect(probeSync('/nonexistent/vdib-tool', [])).toBe(false)
    expect(probeSync('sleep', ['5'], { timeoutMs: 100 })).toBe(false)
  })
})

function readIf(f: string): string {
  try {
    return readFileSync(f, 'utf8')
  } catch {
    return ''
  }
}

async function waitUntil(cond: () => boolean, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; !cond();) {
    if (Date.now() > end) throw new Error('timed out waiting')
    await new Promise((r) => setTimeout(r, 20))
  }
}
