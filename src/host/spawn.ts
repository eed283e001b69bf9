// Runs host programs virt-dib itself needs (qemu-img, tar, docker, vhd-util, fusermount).
// Output is captured (its tail goes into the error), never printed.
import { spawn, type SpawnOptions } from 'node:child_process'

import { HostToolError } from '../errors.js'
import { Tail } from '../util/lines.js'

export interface RunResult {
  stdout: string
  stderr: string
}

export interface RunOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
  input?: string | Buffer
  signal?: AbortSignal
  /** Lines of stderr kept for the error message. */
  tailLines?: number
}

/** Runs a command to completion; throws HostToolError on a non-zero exit or a signal. */
export function runTool(cmd: string, args: readonly string[], o: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const spawnOptions: SpawnOptions = { cwd: o.cwd, env: o.env, stdio: ['pipe', 'pipe', 'pipe'] }
    if (o.signal) spawnOptions.signal = o.signal
    const child = spawn(cmd, args, spawnOptions)
    const out: Buffer[] = []
    const errTail = new Tail<string>(o.tailLines ?? 20)
    let err = ''
    child.stdout!.on('data', (b: Buffer) => out.push(b))
    child.stderr!.on('data', (b: Buffer) => {
      err += b.toString()
      for (const l of b.toString().split('\n')) if (l) errTail.push(l)
    })
    child.on('error', (e) => reject(new HostToolError(cmd, null, e.message, { cause: e })))
    child.on('close', (code, signal) => {
      const stdout = Buffer.concat(out).toString()
      if (code === 0) resolve({ stdout, stderr: err })
      else reject(new HostToolError(cmd, code, errTail.items.join('\n'), signal ? { signal } : undefined))
    })
    child.stdin!.on('error', () => undefined)
    child.stdin!.end(o.input ?? '')
  })
}
