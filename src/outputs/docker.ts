// docker: `docker import` of the image root's tarball, fed through stdin (no temp file).
import { spawn } from 'node:child_process'
import { PassThrough } from 'node:stream'

import { HostToolError, PrerequisiteError, UsageError } from '../errors.js'
import { findExecutable } from '../host/which.js'
import { Tail } from '../util/lines.js'
import type { FileSink, OutputFormat } from './types.js'

export const docker: OutputFormat = {
  name: 'docker',
  extension: undefined,
  source: 'tar-stream',
  progress: (o) => `Importing the image to docker as ‘${o.dockerTarget ?? ''}’`,
  checkHost(o) {
    // A usage error first: it does not depend on the host.
    if (!o.dockerTarget) throw new UsageError('docker: a target was not specified, use ‘--docker-target’')
    if (!findExecutable('docker')) throw new PrerequisiteError('docker needed but not found')
  },
  consumeTar(ctx) {
    const input = new PassThrough()
    const child = spawn('docker', ['import', '-', ctx.options.dockerTarget!], {
      stdio: ['pipe', 'pipe', 'pipe'],
      signal: ctx.signal,
    })
    const tail = new Tail<string>(10)
    child.stderr.on('data', (b: Buffer) =>
      b
        .toString()
        .split('\n')
        .filter(Boolean)
        .forEach((l) => tail.push(l)),
    )
    child.stdout.resume()
    child.stdin.on('error', () => undefined)
    input.pipe(child.stdin)
    const done = new Promise<void>((resolve, reject) => {
      child.on('error', (e) => reject(new HostToolError('docker', null, e.message, { cause: e })))
      child.on('close', (code, signal) =>
        code === 0
          ? resolve()
          : reject(new HostToolError('docker', code, tail.items.join('\n'), signal ? { signal } : undefined)),
      )
    })
    return Object.assign(input, { done }) as unknown as FileSink
  },
}
