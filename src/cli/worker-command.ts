// `virt-dib worker --redis URL …`: takes build jobs from the queue (src/queue/worker.ts) until
// SIGTERM/SIGINT; each running build's lines prefixed with its name, as `virt-dib batch` shows
// them, and one line per job taken and ended.
import { statSync } from 'node:fs'
import { resolve } from 'node:path'

import { Command, CommanderError } from 'commander'

import type { WorkerEvent, WorkerHandle, WorkerOptions } from '../queue/worker.js'
import { BuildAbortedError, UsageError, VirtDibError } from '../errors.js'
import type { BatchIo } from './batch-command.js'
import { parseJobs } from './batch-command.js'
import { createBatchRenderer } from './batch-render.js'
import { describeSystemError } from './channel.js'
import { createInterrupts, type StopSignal } from './interrupt.js'
import { durationOption, sizeOption } from './options.js'
import { GetoptError, getoptText } from './parse.js'

export const WORKER_USAGE = `virt-dib worker: runs build jobs taken from a queue on Redis (virt-dib submit adds them)

 virt-dib worker --redis URL [--queue NAME] [-j N] [--cache-dir DIR] [--cache-max-size SIZE]
                 [--cache-max-age DURATION] [--lock-duration DURATION]
                 --allow-elements DIR… --allow-output DIR… [-q] [-v] [--color]

A job runs the scripts of its elements on this machine: the worker refuses a job whose element
paths or -B lib are outside the --allow-elements folders, or whose output or image cache is
outside the --allow-output folders. Protect Redis: a password or ACL user in the URL
(redis://USER:PASSWORD@HOST:6379), rediss:// for TLS.

  --redis URL                         the queue's Redis (redis:// or rediss://)
  --queue NAME                        the queue (default virt-dib)
  -j, --jobs N                        jobs at once (default 1)
  --cache-dir DIR                     this machine's step cache
  --cache-max-size SIZE               its size cap (20G)
  --cache-max-age DURATION            older snapshots are not reused (30m, 2h, 7d, 1w)
  --lock-duration DURATION            a dead worker's job is taken by another within one to
                                      two times this (default 30s)
  --allow-elements DIR…               folders element paths and -B may be in (one or more; repeatable)
  --allow-output DIR…                 folders outputs and image caches may be in (one or more; repeatable)
  -q, --quiet                         only what went wrong
  -v, --verbose                       every line of every build, prefixed with its name
  --color, --colors                   colours even when the output is not a terminal

SIGTERM or SIGINT: stops taking jobs, aborts the running builds and hands their jobs back to the
queue at once, then exits 0; a second one stops at once (exit 143/130).
`

export interface WorkerApi {
  startWorker: (o: WorkerOptions) => Promise<WorkerHandle>
  stopBuildsNow: () => unknown
}

export interface WorkerIo extends Omit<BatchIo, 'api'> {
  /** The worker API (tests: wrapped); loaded late by default, so --help stays fast. */
  api?: () => Promise<WorkerApi>
}

async function loadApi(): Promise<WorkerApi> {
  const [w, api] = await Promise.all([import('../queue/worker.js'), import('../api/index.js')])
  return { startWorker: w.startWorker, stopBuildsNow: api.stopBuildsNow }
}

export interface WorkerFlags {
  redis: string
  queue?: string
  jobs?: number
  cacheDir?: string
  cacheMaxSize?: number
  cacheMaxAge?: number
  lockDuration?: number
  allowElements: string[]
  allowOutput: string[]
  quiet: boolean
  verbose: boolean
  color: boolean
  help: boolean
}

function usage(message: string): GetoptError {
  const e = new GetoptError(message)
  e.tryHelp = 'virt-dib worker --help'
  return e
}

/** Folders that exist, as absolute paths; a one-line error naming the option otherwise. */
function folders(option: string, dirs: readonly string[]): string[] {
  return dirs.map((d) => {
    if (d === '') throw new UsageError(`${option} must not be empty`)
    // commander takes the next word whatever it is: `--allow-elements --allow-output DIR`.
    if (d.startsWith('-')) throw usage(`worker: option '${option}' requires an argument, not ${d}`)
    const abs = resolve(d)
    let st
    try {
      st = statSync(abs)
    } catch (e) {
      throw new UsageError(`${option} ${d}: ${describeSystemError(e)}`)
    }
    if (!st.isDirectory()) throw new UsageError(`${option} ${d} is not a folder`)
    return abs
  })
}

/** Parses `virt-dib worker ARGS…` (without the verb). Throws GetoptError/UsageError. */
export function parseWorkerArgs(args: readonly string[]): WorkerFlags {
  const flags: WorkerFlags = {
    redis: '',
    allowElements: [],
    allowOutput: [],
    quiet: false,
    verbose: false,
    color: false,
    help: false,
  }
  const collect = (v: string, prev: string[] | undefined) => [...(prev ?? []), v]
  const program = new Command('virt-dib worker')
    .exitOverride()
    .configureOutput({ writeOut: () => undefined, writeErr: () => undefined })
    .helpOption(false)
    .allowExcessArguments(true)
    .argument('[operands...]')
    .option('--redis <url>')
    .option('--queue <name>')
    .option('-j, --jobs <n>')
    .option('--cache-dir <directory>')
    .option('--cache-max-size <size>')
    .option('--cache-max-age <duration>')
    .option('--lock-duration <duration>')
    .option('--allow-elements <dirs...>', '', collect)
    .option('--allow-output <dirs...>', '', collect)
    .option('-q, --quiet')
    .option('-v, --verbose')
    .option('--color')
    .option('--colors')
    .option('--colour')
    .option('--colours')
    .option('--help')
  let operands: string[] = []
  program.action((_o: unknown, _opts: unknown, cmd: Command) => {
    operands = cmd.args
  })
  try {
    program.parse(args, { from: 'user' })
  } catch (e) {
    if (!(e instanceof CommanderError)) throw e
    throw usage(`worker: ${getoptText(e)}`)
  }
  const o = program.opts<Record<string, string | string[] | true | undefined>>()
  flags.help = o['help'] === true
  if (flags.help) return flags
  const str = (k: string) => (typeof o[k] === 'string' ? o[k] : undefined)
  const list = (k: string) => (Array.isArray(o[k]) ? o[k] : [])
  if (operands.length > 0) throw usage(`worker takes no operands: ${operands.join(' ')}`)
  const redis = str('redis')
  if (redis === undefined || redis === '') throw usage('worker needs the queue’s Redis: --redis URL')
  flags.redis = redis
  const queue = str('queue')
  if (queue !== undefined) {
    if (queue === '' || queue.includes(':')) throw new UsageError(`--queue ‘${queue}’: a name without ‘:’ is needed`)
    flags.queue = queue
  }
  const jobs = str('jobs')
  if (jobs !== undefined) flags.jobs = parseJobs(jobs)
  const cacheDir = str('cacheDir')
  if (cacheDir !== undefined) {
    if (cacheDir === '') throw new UsageError('--cache-dir must not be empty')
    flags.cacheDir = resolve(cacheDir)
  }
  const maxSize = str('cacheMaxSize')
  if (maxSize !== undefined) flags.cacheMaxSize = sizeOption('--cache-max-size', maxSize)
  const maxAge = str('cacheMaxAge')
  if (maxAge !== undefined) {
    flags.cacheMaxAge = durationOption('--cache-max-age', maxAge)
    if (flags.cacheMaxAge === 0) throw new UsageError('--cache-max-age must be greater than zero')
  }
  const lock = str('lockDuration')
  if (lock !== undefined) {
    flags.lockDuration = durationOption('--lock-duration', lock)
    if (flags.lockDuration < 1000) throw new UsageError('--lock-duration must be at least 1s')
  }
  flags.allowElements = folders('--allow-elements', list('allowElements'))
  flags.allowOutput = folders('--allow-output', list('allowOutput'))
  if (flags.allowElements.length === 0 || flags.allowOutput.length === 0) {
    const missing = [
      flags.allowElements.length === 0 && '--allow-elements',
      flags.allowOutput.length === 0 && '--allow-output',
    ]
      .filter(Boolean)
      .join(' and ')
    throw usage(`worker needs ${missing}: the folders jobs may use (a job runs its elements’ scripts here)`)
  }
  flags.quiet = o['quiet'] === true
  flags.verbose = o['verbose'] === true
  flags.color = ['color', 'colors', 'colour', 'colours'].some((k) => o[k] === true)
  if (flags.quiet && flags.verbose) throw new UsageError('worker: -q and -v contradict each other')
  return flags
}

const RED = '\x1b[1;31m'
const BLUE = '\x1b[1;34m'
const RESET = '\x1b[0m'

/** Runs `virt-dib worker ARGS…` until it is stopped; the exit code, or throws. */
export async function runWorkerVerb(args: readonly string[], io: WorkerIo): Promise<number> {
  const flags = parseWorkerArgs(args)
  if (flags.help) {
    io.out.write(WORKER_USAGE)
    return 0
  }
  const { startWorker, stopBuildsNow } = await (io.api ?? loadApi)()
  const color = io.color || flags.color
  const paint = (code: string, text: string) => (color ? `${code}${text}${RESET}` : text)
  const out = io.out
  const render = createBatchRenderer({
    names: [],
    color,
    quiet: flags.quiet,
    debug: flags.verbose,
    verbose: flags.verbose,
    out,
    live: false,
  })
  const say = (text: string) => out.write(text + '\n')
  const onEvent = (e: WorkerEvent) => {
    switch (e.kind) {
      case 'ready':
        if (!flags.quiet) say(`virt-dib: worker ${e.worker} is taking jobs from the queue ‘${e.queue}’`)
        return
      case 'job-start':
        if (!flags.quiet) say(`[${e.build}] job ${e.jobId} taken (delivery ${e.delivery})`)
        return
      case 'job-end': {
        const tag = `[${e.build}] job ${e.jobId}`
        if (e.status === 'ok' && !flags.quiet) say(`${tag} finished`)
        if (e.status === 'failed') say(paint(RED, `${tag} failed: ${e.reason ?? ''}`))
        if (e.status === 'cancelled') say(paint(BLUE, `${tag} cancelled`))
        if (e.status === 'handed-back') say(paint(BLUE, `${tag} handed back`))
        return
      }
      case 'worker-warning':
        say(paint(BLUE, `virt-dib: warning: ${e.text}`))
        return
      case 'worker-info':
        if (!flags.quiet) say(`virt-dib: ${e.text}`)
        return
      case 'job-taken':
      case 'job-failure':
        return // said by job-start / job-end
      default:
        render.onEvent(e)
    }
  }

  const controller = new AbortController()
  let handle: WorkerHandle | undefined
  const interrupts = createInterrupts({
    controller,
    notify: (signal) =>
      say(
        `virt-dib: ${signal}: handing the running jobs back to the queue and stopping; a second ${signal === 'SIGINT' ? 'Ctrl-C' : 'SIGTERM'} stops at once`,
      ),
    stopNow: () => void stopBuildsNow(),
    exit: io.exit,
    hardExitMs: io.hardExitMs,
  })
  const onSignal = (signal: StopSignal) => {
    interrupts.onSignal(signal)
    if (interrupts.forced) io.onForced()
  }
  const onStdoutError = (e: unknown) => {
    if (!controller.signal.aborted) {
      controller.abort(new VirtDibError(`cannot write to standard output: ${describeSystemError(e)}`, { cause: e }))
    }
  }
  // Whatever stops the worker (a signal, a crash listener, stdout gone) hands its jobs back.
  controller.signal.addEventListener('abort', () => void handle?.close({ handBack: true }), { once: true })
  io.setSession(controller)
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  out.on('error', onStdoutError)
  try {
    handle = await startWorker({
      redis: flags.redis,
      allowElements: flags.allowElements,
      allowOutput: flags.allowOutput,
      cache: {
        ...(flags.cacheDir !== undefined ? { dir: flags.cacheDir } : {}),
        ...(flags.cacheMaxSize !== undefined ? { maxSize: flags.cacheMaxSize } : {}),
        ...(flags.cacheMaxAge !== undefined ? { maxAge: flags.cacheMaxAge } : {}),
      },
      ...(flags.queue !== undefined ? { queue: flags.queue } : {}),
      ...(flags.jobs !== undefined ? { concurrency: flags.jobs } : {}),
      ...(flags.lockDuration !== undefined ? { lockDuration: flags.lockDuration } : {}),
      ...(flags.verbose ? { verbose: true } : {}),
      onEvent,
    })
    // A signal while it was starting.
    if (controller.signal.aborted) void handle.close({ handBack: true })
    await handle.closed
  } finally {
    render.close()
    interrupts.dispose()
    io.setSession(undefined)
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    out.off('error', onStdoutError)
  }
  const reason: unknown = controller.signal.reason
  // A second signal: stopped at once, said as such (130/143).
  if (interrupts.forced) throw reason
  if (reason instanceof BuildAbortedError && reason.signal !== undefined) return 0
  if (controller.signal.aborted) throw reason
  return 0
}
