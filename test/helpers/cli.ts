// Runs the built CLI (bin/virt-dib → dist/) as a child process.
import { spawnSync } from 'node:child_process'
import { join, resolve } from 'node:path'

export const root = resolve(import.meta.dirname, '..', '..')
export const DIB_LIB = '/usr/lib/python3/dist-packages/diskimage_builder/lib'
export const DIB_ELEMENTS = '/usr/lib/python3/dist-packages/diskimage_builder/elements'

export interface CliResult {
  status: number | null
  stdout: string
  stderr: string
}

export function runCli(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): CliResult {
  const r = spawnSync(process.execPath, [join(root, 'bin', 'virt-dib'), ...args], {
    encoding: 'utf8',
    cwd: opts.cwd ?? root,
    env: opts.env ?? process.env,
    timeout: 60_000,
  })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}
