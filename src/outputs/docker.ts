// docker: `docker import` of the image root's tarball, fed through stdin (no temp file).
import { PassThrough } from 'node:stream'

import { PrerequisiteError, UsageError } from '../errors.js'
import { runTool } from '../host/spawn.js'
import { findExecutable } from '../host/which.js'
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
    // The build's environment (DOCKER_HOST …); the signal stops docker when the stream stops.
    // An early exit (no daemon) rejects at once, and the pump then stops the guest's tar.
    const done = runTool('docker', ['import', '-', ctx.options.dockerTarget!], {
      input,
      signal: ctx.signal,
      tailLines: 10,
      // (PATH from here if that environment has none: checkHost found docker on ours)
      ...(ctx.options.env ? { env: { PATH: process.env['PATH'], ...ctx.options.env } } : {}),
    }).then(() => undefined)
    done.catch(() => undefined) // awaited by whoever pumps the stream; never unhandled
    return Object.assign(input, { done }) satisfies FileSink
  },
}
