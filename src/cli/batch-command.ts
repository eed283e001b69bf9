// `virt-dib batch FILE`: many builds from one file (src/batch/batch-file.ts), planned together, run
// side by side (src/batch/run-many.ts), shown with batch-render.ts, and a summary table at the end.
import { resolve } from 'node:path'

import { Command, CommanderError } from 'commander'

import { loadBatchFile } from '../batch/batch-file.js'
import type { BuildOutcome, ManyBuild } from '../batch/types.js'
import { BuildAbortedError, UsageError, VirtDibError } from '../errors.js'
import { createBatchRenderer, formatSummary } from './batch-render.js'
import { describeSystemError, openMachineChannel, type MachineChannel } from './channel.js'
import { createInterrupts, type StopSignal } from './interrupt.js'
import { durationOption, sizeOption } from './options.js'
import { GetoptError, getoptText } from './parse.js'

export const BATCH_USAGE = `virt-dib batch: many builds from one file, in parallel, sharing what they have in common

 virt-dib batch FILE [-j N] [--fail-fast] [--cache-dir DIR] [--dry-run] [-q] [-v]
                     [--machine-readable[=FORMAT]] [--color]

FILE is YAML (or JSON) with a defaults: map and a builds: list; each build has the API's
BuildOptions keys (name, elements, libPath, elementPaths, formats, size …) and may be a layer
over another (base: NAME). Every build is checked and planned before the first one starts.

  -j, --jobs N                        builds at once (default: what the memory and cores hold)
  --fail-fast                         the first failure stops the others
  --cache-dir DIR                     the step cache's folder (the cache is always on for a batch)
  --cache-max-size SIZE               its size cap (20G)
  --cache-max-age DURATION            older snapshots are not reused (30m, 2h, 7d, 1w)
  --dry-run                           print each build's plan and what it shares or reuses; run nothing
  -q, --quiet                         no progress lines, only what went wrong and the summary
  -v, --verbose                       every line of every build, prefixed with its name
  --machine-readable[=FORMAT]         JSON lines of every event, with its build (stream:stdout,
                                      stream:stderr, file:PATH, fd:N)
  --color, --colors                   colours even when the output is not a terminal

Exit status: 0 when every build succeeded, 1 when any failed or was skipped, 130/143 after
SIGINT/SIGTERM.
`

export interface BatchIo {
  out: NodeJS.WriteStream | (NodeJS.WritableStream & { isTTY?: boolean; columns?: number })
  /** Colours by default (stdout is a terminal). */
  color: boolean
  /** The CLI's crash and write-error listeners stop the batch through this controller (undefined: none). */
  setSession: (controller: AbortController | undefined) => void
  /** Prints the final line for `reason` and exits (a second signal's hard deadline). */
  exit: (reason: unknown) => void
  /** A second signal asked to stop at once: the CLI exits as soon as this returns. */
  onForced: () => void
  hardExitMs: number
  /** The batch API (tests: fakes); loaded late by default, so --help and a bad file stay fast. */
  api?: () => Promise<BatchApi>
}

export interface BatchApi {
  planBatch: typeof import('../batch/run-many.js').planBatch
  buildMany: typeof import('../batch/run-many.js').buildMany
  forecastBatch: typeof import('../batch/forecast.js').forecastBatch
  formatBatchForecast: typeof import('../batch/forecast.js').formatBatchForecast
  stopBuildsNow: () => unknown
}

async function loadApi(): Promise<BatchApi> {
  const [many, forecast, api] = await Promise.all([
    import('../batch/run-many.js'),
    import('../batch/forecast.js'),
    import('../api/index.js'),
  ])
  return { ...many, ...forecast, stopBuildsNow: api.stopBuildsNow }
}

export interface BatchFlags {
  file: string
  jobs?: number
  failFast: boolean
  cacheDir?: string
  cacheMaxSize?: number
  cacheMaxAge?: number
  dryRun: boolean
  quiet: boolean
  verbose: boolean
  machineReadable?: string | true
  color: boolean
  help: boolean
}

/** A usage error whose "Try …" line names `virt-dib batch --help`. */
function usage(message: string): GetoptError {
  const e = new GetoptError(message)
  e.tryHelp = 'virt-dib batch --help'
  return e
}

/** `-j`'s value: a whole number of builds, at least 1. */
export function parseJobs(v: string): number {
  const n = /^\s*\d+\s*$/.test(v) ? Number(v) : NaN
  if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`-j ‘${v}’ is not a number of builds (1 or more)`)
  return n
}

/** Parses `virt-dib batch ARGS…` (without the verb). Throws GetoptError/UsageError. */
export function parseBatchArgs(args: readonly string[]): BatchFlags {
  const flags: BatchFlags = {
    file: '',
    failFast: false,
    dryRun: false,
    quiet: false,
    verbose: false,
    color: false,
    help: false,
  }
  // Its value is taken only with `=`, as in a build's options: `--machine-readable FILE` keeps FILE.
  const rest: string[] = []
  for (const [i, a] of args.entries()) {
    if (a === '--') {
      rest.push(...args.slice(i))
      break
    }
    if (a === '--machine-readable') flags.machineReadable = true
    else if (a.startsWith('--machine-readable=')) flags.machineReadable = a.slice('--machine-readable='.length)
    else rest.push(a)
  }
  const program = new Command('virt-dib batch')
    .exitOverride()
    .configureOutput({ writeOut: () => undefined, writeErr: () => undefined })
    .helpOption(false)
    .argument('[file]')
    .allowExcessArguments(true)
    .option('-j, --jobs <n>')
    .option('--fail-fast')
    .option('--cache-dir <directory>')
    .option('--cache-max-size <size>')
    .option('--cache-max-age <duration>')
    .option('--dry-run')
    .option('-q, --quiet')
    .option('-v, --verbose')
    .option('--color')
    .option('--colors')
    .option('--colour')
    .option('--colours')
    .option('--help')
  let operands: string[] = []
  program.action((_file: string | undefined, _o: unknown, cmd: Command) => {
    operands = cmd.args
  })
  try {
    program.parse(rest, { from: 'user' })
  } catch (e) {
    if (!(e instanceof CommanderError)) throw e
    throw usage(`batch: ${getoptText(e)}`)
  }
  const o = program.opts<Record<string, string | true | undefined>>()
  flags.help = o['help'] === true
  if (flags.help) return flags
  if (operands.length === 0) throw usage('batch needs a batch file: virt-dib batch FILE')
  if (operands.length > 1) throw usage(`batch takes one file, not ${operands.length}: ${operands.join(' ')}`)
  flags.file = operands[0]!
  if (typeof o['jobs'] === 'string') flags.jobs = parseJobs(o['jobs'])
  flags.failFast = o['failFast'] === true
  if (typeof o['cacheDir'] === 'string') {
    if (o['cacheDir'] === '') throw new UsageError('--cache-dir must not be empty')
    flags.cacheDir = resolve(o['cacheDir'])
  }
  if (typeof o['cacheMaxSize'] === 'string') flags.cacheMaxSize = sizeOption('--cache-max-size', o['cacheMaxSize'])
  if (typeof o['cacheMaxAge'] === 'string') {
    flags.cacheMaxAge = durationOption('--cache-max-age', o['cacheMaxAge'])
    if (flags.cacheMaxAge === 0) throw new UsageError('--cache-max-age must be greater than zero')
  }
  flags.dryRun = o['dryRun'] === true
  flags.quiet = o['quiet'] === true
  flags.verbose = o['verbose'] === true
  flags.color = ['color', 'colors', 'colour', 'colours'].some((k) => o[k] === true)
  if (flags.quiet && flags.verbose) throw new UsageError('batch: -q and -v contradict each other')
  return flags
}

/** Runs `virt-dib batch ARGS…`; the exit code, or throws (a usage, file, planning or abort error). */
export async function runBatchVerb(args: readonly string[], io: BatchIo): Promise<number> {
  const flags = parseBatchArgs(args)
  if (flags.help) {
    io.out.write(BATCH_USAGE)
    return 0
  }
  // Opened first, synchronously: a bad path is refused before anything starts.
  let machine: MachineChannel | undefined
  const controller = new AbortController()
  if (flags.machineReadable !== undefined) {
    machine = openMachineChannel(flags.machineReadable, (e) => {
      if (!controller.signal.aborted) controller.abort(e)
    })
  }
  try {
    const code = await batch(flags, args, io, controller, machine)
    await machine?.close()
    return code
  } finally {
    await machine?.close().catch(() => undefined)
  }
}

async function batch(
  flags: BatchFlags,
  args: readonly string[],
  io: BatchIo,
  controller: AbortController,
  machine: MachineChannel | undefined,
): Promise<number> {
  const spec = loadBatchFile(flags.file)
  const builds: ManyBuild[] = spec.builds.map((b) => ({
    name: b.name,
    ...(b.base !== undefined ? { base: b.base } : {}),
    options: { ...b.options, ...(flags.verbose ? { verbose: true } : {}), argv: ['virt-dib', 'batch', ...args] },
  }))
  const cache = {
    ...(flags.cacheDir !== undefined ? { dir: flags.cacheDir } : {}),
    ...(flags.cacheMaxSize !== undefined ? { maxSize: flags.cacheMaxSize } : {}),
    ...(flags.cacheMaxAge !== undefined ? { maxAge: flags.cacheMaxAge } : {}),
  }
  const { buildMany, planBatch, forecastBatch, formatBatchForecast, stopBuildsNow } = await (io.api ?? loadApi)()
  if (flags.dryRun) {
    const planned = await planBatch(builds, { cache })
    io.out.write(formatBatchForecast(await forecastBatch(planned)))
    return 0
  }
  const color = io.color || flags.color
  const out = io.out
  const machineOnStdout = machine !== undefined && machine.what.startsWith('standard output')
  const render = createBatchRenderer({
    names: builds.map((b) => b.name),
    color,
    quiet: flags.quiet,
    debug: flags.verbose,
    verbose: flags.verbose,
    out,
    live: out.isTTY === true && !flags.quiet && !flags.verbose && !machineOnStdout,
    ...(machine ? { machine } : {}),
  })
  const interrupts = createInterrupts({
    controller,
    notify: (signal) => {
      render.close()
      out.write(
        `virt-dib: ${signal}: stopping the builds and cleaning up; a second ${signal === 'SIGINT' ? 'Ctrl-C' : 'SIGTERM'} stops at once\n`,
      )
    },
    stopNow: () => void stopBuildsNow(),
    exit: io.exit,
    hardExitMs: io.hardExitMs,
  })
  const onSignal = (signal: StopSignal) => {
    interrupts.onSignal(signal)
    if (interrupts.forced) io.onForced()
  }
  // A closed stdout (virt-dib batch … | head) stops the batch like any other failure, with cleanup.
  const onStdoutError = (e: unknown) => {
    if (!controller.signal.aborted) {
      controller.abort(new VirtDibError(`cannot write to standard output: ${describeSystemError(e)}`, { cause: e }))
    }
  }
  io.setSession(controller)
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  out.on('error', onStdoutError)
  let outcomes: BuildOutcome[]
  try {
    outcomes = await buildMany(builds, {
      cache,
      failFast: flags.failFast,
      signal: controller.signal,
      onEvent: render.onEvent,
      ...(flags.jobs !== undefined ? { concurrency: flags.jobs } : {}),
    })
  } catch (e) {
    // The batch reports an abort as such; say why it was aborted when that was not a signal.
    const reason: unknown = controller.signal.reason
    if (controller.signal.aborted && !(reason instanceof BuildAbortedError)) throw reason
    throw e
  } finally {
    render.close()
    interrupts.dispose()
    io.setSession(undefined)
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    out.off('error', onStdoutError)
  }
  out.write(formatSummary(outcomes, { color }))
  // A write error on the channel after the last event still makes the run fail.
  if (controller.signal.aborted) throw controller.signal.reason
  return outcomes.every((b) => b.status === 'ok') ? 0 : 1
}
