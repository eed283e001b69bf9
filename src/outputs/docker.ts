// docker: `docker import` of the image root's tarball, fed through stdin (no temp file).
import { PassThrough } from 'node:stream'

import { PrerequisiteError, UsageError } from '../errors.js'
import { runTool } from '../host/spawn.js'
import { findExecutable } from '../host/which.js'
import { defineFormat, type FileSink } from './types.js'

/** docker's fields of BuildOptions. */
export interface DockerOptions {
  /** docker: the repository and tag to import the image as (--docker-target); required with docker. */
  dockerTarget?: string
}

export interface DockerSettings {
  readonly target: string
}

export const docker = defineFormat({
  name: 'docker',
  extension: undefined,
  source: 'tar-stream',
  resolveSettings(o: DockerOptions): DockerSettings {
    if (!o.dockerTarget) throw new UsageError('docker: a target was not specified, use ‘--docker-target’')
    return { target: o.dockerTarget }
  },
  flags: [
    {
      keys: ['--docker-target'],
      arg: '<target>',
      help: 'Repo and tag for docker',
      apply: (o, v) => void (o.dockerTarget = v),
    },
  ],
  progress: (s) => `Importing the image to docker as ‘${s.target}’`,
  describeTarget: (_outputPath, s) => `docker:${s.target}`,
  checkHost() {
    if (!findExecutable('docker')) throw new PrerequisiteError('docker needed but not found')
  },
  consumeTar(ctx) {
    const input = new PassThrough()
    // The build's environment (DOCKER_HOST …); the signal stops docker when the stream stops.
    // An early exit (no daemon) rejects at once, and the pump then stops the guest's tar.
    const done = runTool('docker', ['import', '-', ctx.settings.target], {
      input,
      signal: ctx.signal,
      tailLines: 10,
      // (PATH from here if that environment has none: checkHost found docker on ours)
      env: { PATH: process.env['PATH'], ...ctx.env },
    }).then(() => undefined)
    done.catch(() => undefined) // awaited by whoever pumps the stream; never unhandled
    return Object.assign(input, { done }) satisfies FileSink
  },
})
