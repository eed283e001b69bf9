// `virt-dib batch` over a fake batch API: what it passes to buildMany, the exit codes, the summary,
// --dry-run, and a signal stopping every build.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, describe, expect, it, vi } from 'vitest'

import type { BuildManyOptions, BuildOutcome, ManyBuild } from '../../../src/batch/types.js'
import { parseBatchArgs, runBatchVerb, type BatchApi, type BatchIo } from '../../../src/cli/batch-command.js'
import { BuildAbortedError, ScriptError } from '../../../src/errors.js'

const dir = mkdtempSync(join(tmpdir(), 'vdib-batch-cmd.'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
const file = join(dir, 'batch.yaml')
writeFileSync(
  file,
  `defaults:
  libPath: /lib
  elementPaths: [els]
builds:
  - name: base
    elements: [os]
  - name: layer
    base: base
    elements: [extra]
`,
)

type Many = (builds: readonly ManyBuild[], o: BuildManyOptions) => Promise<BuildOutcome[]>

function setup(buildMany: Many, extra: Partial<BatchApi> = {}) {
  let out = ''
  const calls: { builds: readonly ManyBuild[]; o: BuildManyOptions }[] = []
  const api = {
    planBatch: vi.fn(() => Promise.resolve([])),
    buildMany: (builds: readonly ManyBuild[], o: BuildManyOptions) => {
      calls.push({ builds, o })
      return buildMany(builds, o)
    },
    forecastBatch: vi.fn(() => Promise.resolve({})),
    formatBatchForecast: vi.fn(() => 'the forecast\n'),
    stopBuildsNow: vi.fn(),
    ...extra,
  } as unknown as BatchApi
  const stream = { write: (t: string) => ((out += t), true), on: () => stream, off: () => stream, isTTY: false }
  const sessions: (AbortController | undefined)[] = []
  const io: BatchIo = {
    out: stream as unknown as BatchIo['out'],
    color: false,
    setSession: (c) => sessions.push(c),
    exit: vi.fn(),
    onForced: vi.fn(),
    hardExitMs: 5000,
    api: () => Promise.resolve(api),
  }
  return { io, api, calls, sessions, out: () => out }
}

const ok = (name: string, reused: string[] = []): BuildOutcome => ({
  name,
  status: 'ok',
  result: { outputs: [{ format: 'qcow2', path: join(dir, `${name}.qcow2`), size: 1 }], seconds: 1 },
  seconds: 1,
  reused,
})

describe('virt-dib batch over a fake API', () => {
  it('passes the builds (bases first, the layer tagged), -j, --fail-fast and the cache; exit 0 when all succeeded', async () => {
    const t = setup(async (builds, o) => {
      o.onEvent?.({ kind: 'build-start', build: 'base', elapsed: 0 })
      o.onEvent?.({ kind: 'progress', build: 'base', elapsed: 1.5, text: 'Opening the disks' })
      o.onEvent?.({ kind: 'build-end', build: 'base', elapsed: 2, status: 'ok', seconds: 2 })
      await Promise.resolve()
      return builds.map((b) => ok(b.name, b.base ? ['root.d', 'install.d'] : []))
    })
    const code = await runBatchVerb(['-j', '3', '--fail-fast', '--cache-dir', join(dir, 'c'), file], t.io)
    expect(code).toBe(0)
    const { builds, o } = t.calls[0]!
    expect(builds.map((b) => [b.name, b.base])).toEqual([
      ['base', undefined],
      ['layer', 'base'],
    ])
    expect(builds[1]!.options.elements).toEqual(['os', 'extra'])
    expect(builds[0]!.options.argv?.slice(0, 2)).toEqual(['virt-dib', 'batch'])
    expect(o).toMatchObject({ concurrency: 3, failFast: true, cache: { dir: join(dir, 'c') } })
    expect(o.signal).toBeInstanceOf(AbortSignal)
    expect(t.out()).toContain('[base] [   1.5] Opening the disks\n[base] finished in 2.0 s\n')
    expect(t.out()).toMatch(
      /\nbase +ok +1\.0 +\S*base\.qcow2 +-\nlayer +ok +1\.0 +\S*layer\.qcow2 +root\.d … install\.d\n/,
    )
    expect(t.out()).toContain('2 builds: 2 ok, 0 failed, 0 skipped\n')
    // The CLI's crash listeners could stop the batch while it ran; not after.
    expect(t.sessions.map((s) => s instanceof AbortController)).toEqual([true, false])
  })

  it('exit 1 when a build failed or was skipped; the summary says which and why', async () => {
    const t = setup(() =>
      Promise.resolve([
        {
          name: 'base',
          status: 'failed',
          seconds: 4,
          reused: [],
          error: new ScriptError({ hook: 'install.d', script: '10-x', status: 2, where: 'chroot' }),
        },
        { name: 'layer', status: 'skipped', reason: 'its base ‘base’ failed' },
      ]),
    )
    expect(await runBatchVerb([file], t.io)).toBe(1)
    expect(t.out()).toContain('    error: install.d/10-x failed with exit status 2 (in the image chroot)\n')
    expect(t.out()).toContain('    its base ‘base’ failed\n')
    expect(t.out()).toContain('2 builds: 0 ok, 1 failed, 1 skipped\n')
  })

  it('--dry-run prints the forecast of the planned builds and runs nothing', async () => {
    const many = vi.fn<Many>()
    const t = setup(many)
    expect(await runBatchVerb(['--dry-run', file], t.io)).toBe(0)
    expect(t.out()).toBe('the forecast\n')
    expect(many).not.toHaveBeenCalled()
    expect(t.api.planBatch).toHaveBeenCalledTimes(1)
  })

  it('SIGINT stops every build: the batch ends with the signal’s abort (exit 130)', async () => {
    const t = setup(
      (_builds, o) =>
        new Promise((_, reject) => {
          o.signal?.addEventListener('abort', () => reject(o.signal?.reason as Error))
          setImmediate(() => process.emit('SIGINT', 'SIGINT'))
        }),
    )
    const e: unknown = await runBatchVerb([file], t.io).catch((x: unknown) => x)
    expect(e).toBeInstanceOf(BuildAbortedError)
    expect((e as BuildAbortedError).exitCode).toBe(130)
    expect(t.out()).toContain('virt-dib: SIGINT: stopping the builds and cleaning up; a second Ctrl-C stops at once\n')
    expect(process.listenerCount('SIGINT')).toBe(0)
  })

  it('a planning error from buildMany goes to the CLI as it is', async () => {
    const t = setup(() => Promise.reject(new Error('build ‘layer’: unknown element ‘foo’')))
    await expect(runBatchVerb([file], t.io)).rejects.toThrow('build ‘layer’: unknown element ‘foo’')
  })
})

describe('batch flags', () => {
  it('--machine-readable takes its value only with =; the file stays the operand', () => {
    expect(parseBatchArgs(['--machine-readable', 'b.yaml'])).toMatchObject({ file: 'b.yaml', machineReadable: true })
    expect(parseBatchArgs(['--machine-readable=file:/x', 'b.yaml'])).toMatchObject({
      file: 'b.yaml',
      machineReadable: 'file:/x',
    })
    expect(parseBatchArgs(['b.yaml', '-j2', '-q', '--colour'])).toMatchObject({ jobs: 2, quiet: true, color: true })
    expect(parseBatchArgs(['--cache-max-size', '2G', 'b.yaml']).cacheMaxSize).toBe(2 * 1024 ** 3)
    expect(parseBatchArgs(['--help']).help).toBe(true)
  })
})
