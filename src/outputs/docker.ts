// docker: `docker import` of the image root's archive, fed through stdin (no copy of it).
import { PrerequisiteError, UsageError } from '../errors.js'
import { runTool } from '../host/spawn.js'
import { findExecutable } from '../host/which.js'
import { runFromArchive } from './stream.js'
import { defineFormat } from './types.js'

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
  source: 'archive',
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
  async fromArchive(ctx, archive) {
    const input = archive.read()
    // The build's environment (DOCKER_HOST …); an early exit (no daemon) stops the read at once.
    const run = (signal: AbortSignal) =>
      runTool('docker', ['import', '-', ctx.settings.target], {
        input,
        signal,
        tailLines: 10,
        // (PATH from here if that environment has none: checkHost found docker on ours)
        env: { PATH: process.env['PATH'], ...ctx.env },
      })
    await runFromArchive(archive, [input], run, { signal: ctx.signal })
  },
})
