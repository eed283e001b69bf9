// `virt-dib submit --redis URL FILE`: every build of a batch file put on the build queue for the
// workers (src/queue/submit.ts); with --wait, followed live as `virt-dib batch` shows its builds
// (batch-render.ts) and summed up with the same table; Ctrl-C then cancels the jobs it added.
import { Command, CommanderError } from 'commander'

import { loadBatchFile } from '../batch/batch-file.js'
import type { BatchEvent, BuildOutcome } from '../batch/types.js'
import { BuildAbortedError, VirtDibError } from '../errors.js'
import { DEFAULT_ATTEMPTS, DEFAULT_QUEUE } from '../queue/protocol.js'
import { checkRedisUrl } from '../queue/redis.js'
import type { SubmitJobEvent } from '../queue/submit.js'
import type { BatchIo } from './batch-command.js'
import { createBatchRenderer, formatSummary } from './batch-render.js'
import { describeSystemError, openMachineChannel, type MachineChannel } from './channel.js'
import { createInterrupts, type StopSignal } from './interrupt.js'
import { GetoptError, getoptText } from './parse.js'

export const SUBMIT_USAGE = `virt-dib submit: the builds of a batch file put on a build queue, for virt-dib workers

 virt-dib submit --redis URL [--queue NAME] [--attempts N] FILE [--wait] [-q] [-v]
                 [--machine-readable[=FORMAT]] [--color]

Every build of FILE (a batch file, as virt-dib batch reads it) becomes one job of the queue, built
by a worker (virt-dib worker) on whichever machine takes it; outputs go where the file names them,
on storage the workers share. A job's id comes from its output path: a build still queued or
running is not submitted again, it is followed; one that ended is submitted anew.

  --redis URL                         the queue's Redis: redis://[USER:PASSWORD@]HOST[:PORT][/DB],
                                      rediss:// for TLS
  --queue NAME                        the queue (default ${DEFAULT_QUEUE})
  --attempts N                        deliveries of a job whose worker was lost (default ${DEFAULT_ATTEMPTS});
                                      a build that fails is never retried
  --wait                              follow the jobs until they end: their progress, then the summary;
                                      Ctrl-C cancels the jobs it added (not those queued before it)
  -q, --quiet                         with --wait: no progress lines, only what went wrong and the summary
  -v, --verbose                       with --wait: every line the workers send, prefixed with its build
  --machine-readable[=FORMAT]         JSON lines of every event, with its build (stream:stdout,
                                      stream:stderr, file:PATH, fd:N)
  --color, --colors                   colours even when the output is not a terminal

Exit status: 0 when every build was submitted (with --wait: when every build succeeded), 1 when
any failed, 130/143 after SIGINT/SIGTERM (with --wait: once the jobs are cancelled).
`

/** What the verb needs from the CLI (main.ts): as `virt-dib batch`; tests may give their own submitBuilds. */
export interface SubmitIo extends Omit<BatchIo, 'api'> {
  submit?: typeof import('../queue/submit.js').submitBuilds
}

export interface SubmitFlags {
  file: string
  redis: string
  queue: string
  attempts: number
  wait: boolean
  quiet: boolean
  verbose: boolean
  machineReadable?: string | true
  color: boolean
  help: boolean
}

/** A usage error whose "Try …" line names `virt-dib submit --help`. */
function usage(message: string): GetoptError {
  const e = new GetoptError(message)
  e.tryHelp = 'virt-dib submit --help'
  return e
}

/** `--attempts`'s value: a whole number of deliveries, at least 1. */
export function parseAttempts(v: string): number {
  const n = /^\s*\d+\s*$/.test(v) ? Number(v) : NaN
  if (!Number.isSafeInteger(n) || n < 1) throw usage(`--attempts ‘${v}’ is not a number of deliveries (1 or more)`)
  return n
}

/** Parses `virt-dib submit ARGS…` (without the verb). Throws GetoptError. */
export function parseSubmitArgs(args: readonly string[]): SubmitFlags {
  const flags: SubmitFlags = {
    file: '',
    redis: '',
    queue: DEFAULT_QUEUE,
    attempts: DEFAULT_ATTEMPTS,
    wait: false,
    quiet: false,
    verbose: false,
    color: false,
    help: false,
  }
  // Its value is taken only with `=`, as in a build's options and batch.
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
  const program = new Command('virt-dib submit')
    .exitOverride()
    .configureOutput({ writeOut: () => undefined, writeErr: () => undefined })
    .helpOption(false)
    .argument('[file]')
    .allowExcessArguments(true)
    .option('--redis <url>')
    .option('--queue <name>')
    .option('--attempts <n>')
    .option('--wait')
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
    throw usage(`submit: ${getoptText(e)}`)
  }
  const o = program.opts<Record<string, string | true | undefined>>()
  flags.help = o['help'] === true
  if (flags.help) return flags
  if (operands.length === 0) throw usage('submit needs a batch file: virt-dib submit --redis URL FILE')
  if (operands.length > 1) throw usage(`submit takes one file, not ${operands.length}: ${operands.join(' ')}`)
  flags.file = operands[0]!
  if (typeof o['redis'] !== 'string') throw usage('submit needs --redis URL: the Redis of the workers’ queue')
  try {
    checkRedisUrl(o['redis'])
  } catch (e) {
    throw usage((e as Error).message)
  }
  flags.redis = o['redis']
  if (typeof o['queue'] === 'string') {
    if (o['queue'] === '' || o['queue'].includes(':')) {
      throw usage(`--queue ‘${o['queue']}’: a queue name must not be empty nor contain ‘:’`)
    }
    flags.queue = o['queue']
  }
  if (typeof o['attempts'] === 'string') flags.attempts = parseAttempts(o['attempts'])
  flags.wait = o['wait'] === true
  flags.quiet = o['quiet'] === true
  flags.verbose = o['verbose'] === true
  flags.color = ['color', 'colors', 'colour', 'colours'].some((k) => o[k] === true)
  if (flags.quiet && flags.verbose) throw usage('submit: -q and -v contradict each other')
  return flags
}

/** The line a job's submission prints. */
export function jobLine(e: SubmitJobEvent): string {
  return e.kind === 'job-added'
    ? `submitted ‘${e.build}’ as ${e.jobId}\n`
    : `‘${e.build}’ is already queued as ${e.jobId}: not submitted again\n`
}

/** Runs `virt-dib submit ARGS…`; the exit code, or throws (a usage, file, connection or abort error). */
export async function runSubmitVerb(args: readonly string[], io: SubmitIo): Promise<number> {
  const flags = parseSubmitArgs(args)
  if (flags.help) {
    io.out.write(SUBMIT_USAGE)
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
    const code = await submit(flags, io, controller, machine)
    await machine?.close()
    return code
  } finally {
    await machine?.close().catch(() => undefined)
  }
}

async function submit(
  flags: SubmitFlags,
  io: SubmitIo,
  controller: AbortController,
  machine: MachineChannel | undefined,
): Promise<number> {
  const spec = loadBatchFile(flags.file)
  // Loaded late: --help and a bad file stay fast.
  const queueApi = await import('../queue/submit.js')
  const submitBuilds = io.submit ?? queueApi.submitBuilds
  const base = { redis: flags.redis, queue: flags.queue, attempts: flags.attempts }
  const out = io.out
  const onJob = (e: SubmitJobEvent) => {
    machine?.write(JSON.stringify({ ...e, timestamp: new Date().toISOString() }) + '\n')
    if (!(flags.wait && flags.quiet)) out.write(jobLine(e))
  }
  if (!flags.wait) {
    await submitBuilds(spec, { ...base, onJob })
    if (controller.signal.aborted) throw controller.signal.reason
    return 0
  }

  const color = io.color || flags.color
  const machineOnStdout = machine !== undefined && machine.what.startsWith('standard output')
  const render = createBatchRenderer({
    names: spec.builds.map((b) => b.name),
    color,
    quiet: flags.quiet,
    debug: flags.verbose,
    verbose: flags.verbose,
    out,
    live: out.isTTY === true && !flags.quiet && !flags.verbose && !machineOnStdout,
    ...(machine ? { machine } : {}),
  })
  // The submission lines come first: a worker's events wait for the last one (the live block
  // would be drawn over by them).
  let held: BatchEvent[] | undefined = []
  let submitted = 0
  const release = () => {
    const events = held ?? []
    held = undefined
    for (const e of events) render.onEvent(e)
  }
  const onEvent = (e: BatchEvent) => (held ? held.push(e) : render.onEvent(e))
  const onJobWaiting = (e: SubmitJobEvent) => {
    onJob(e)
    if (++submitted === spec.builds.length) release()
  }
  const interrupts = createInterrupts({
    controller,
    notify: (signal) => {
      release()
      render.close()
      out.write(
        `virt-dib: ${signal}: cancelling the jobs this submit added (queued ones removed, running ones stopped on their workers; those queued before it are left to run); a second ${signal === 'SIGINT' ? 'Ctrl-C' : 'SIGTERM'} exits at once\n`,
      )
    },
    // Nothing of ours runs here: leaving at once abandons only the wait for the cancel.
    stopNow: () => io.exit(controller.signal.reason),
    exit: io.exit,
    hardExitMs: io.hardExitMs,
  })
  const onSignal = (signal: StopSignal) => {
    interrupts.onSignal(signal)
    if (interrupts.forced) io.onForced()
  }
  // A closed stdout (virt-dib submit … | head) cancels like any other failure.
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
    const r = await submitBuilds(spec, { ...base, wait: true, signal: controller.signal, onEvent, onJob: onJobWaiting })
    outcomes = r.outcomes ?? []
  } catch (e) {
    release()
    render.close()
    if (e instanceof queueApi.SubmitAbortedError) out.write(formatSummary(e.outcomes, { color }))
    // An abort that was not a signal (a write error) is reported as what it was.
    const reason: unknown = controller.signal.reason
    if (controller.signal.aborted && !(reason instanceof BuildAbortedError)) throw reason
    throw e
  } finally {
    release()
    render.close()
    interrupts.dispose()
    io.setSession(undefined)
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    out.off('error', onStdoutError)
  }
  out.write(formatSummary(outcomes, { color }))
  if (controller.signal.aborted) throw controller.signal.reason
  return outcomes.every((b) => b.status === 'ok') ? 0 : 1
}
