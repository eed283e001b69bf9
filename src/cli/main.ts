// The command line: parse, translate to build() options, render events, and map errors to
// messages and exit codes. The only code that prints errors or exits.
import { readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'

import { ScriptError, UsageError, VirtDibError, BuildAbortedError } from '../errors.js'
import { openMachineChannel, describeSystemError, type MachineChannel } from './channel.js'
import type { CliFlags } from './flags.js'
import { helpText, longOptionsText, shortOptionsText } from './help.js'
import { createInterrupts, type StopSignal } from './interrupt.js'
import { GetoptError, parseArgv } from './parse.js'
import { toBuildOptions } from './options.js'
import { createRenderer } from './render.js'
import { isVerb, notAvailable } from './verbs.js'

const PROG = 'virt-dib'
const RED = '\x1b[1;31m'
const BLUE = '\x1b[1;34m'
const RESET = '\x1b[0m'
/** After a second signal, exit this long after it at the latest (the cleanup is hurried meanwhile). */
export const HARD_EXIT_MS = 5000

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
  return pkg.version
}

/** The build in progress, for the listeners that must stop it (signals, write errors, crashes). */
interface Session {
  controller: AbortController
}
let session: Session | undefined
let exitNow = false
let reportState = { color: false, debug: false }

/** Stops the running build with `reason` (the first reason wins); false if none is running. */
function abortSession(reason: unknown): boolean {
  if (!session || session.controller.signal.aborted) return session !== undefined
  session.controller.abort(reason)
  return true
}

export async function main(argv: string[] = process.argv.slice(2)): Promise<number> {
  reportState = { color: process.stdout.isTTY === true, debug: false }
  let machine: MachineChannel | undefined
  try {
    if (isVerb(argv[0])) return await verb(argv[0], argv.slice(1))
    const { flags, elements } = parseArgv(argv)
    reportState.debug = flags.verbose || flags.debug !== undefined
    if (flags.help || flags.version || flags.longOptions || flags.shortOptions) return information(flags)
    // Opened first, synchronously: a bad path is refused before anything starts.
    if (flags.machineReadable !== undefined) machine = openMachineChannel(flags.machineReadable, abortSession)
    const code = await command(flags, elements, argv, machine)
    const channel = machine
    machine = undefined
    // After a second signal, a reader that does not read (fd:N on a full pipe) must not keep us.
    await (exitNow ? Promise.race([channel?.close(), sleep(1000, undefined, { ref: false })]) : channel?.close())
    return code
  } catch (e) {
    await machine?.close().catch(() => undefined)
    return report(e, reportState.color, reportState.debug)
  }
}

/** `virt-dib VERB …` (verbs.ts): `cache`, `batch`, `worker` and `submit`. */
async function verb(name: string, args: string[]): Promise<number> {
  const missing = notAvailable(name)
  if (missing) throw missing
  const color = reportState.color
  if (name === 'batch' || name === 'worker' || name === 'submit') {
    reportState.debug = args.some((a) => a === '-v' || a === '--verbose')
    const io = {
      out: process.stdout,
      color,
      setSession: (controller: AbortController | undefined) => (session = controller ? { controller } : undefined),
      exit: (reason: unknown) => process.exit(report(reason, reportState.color, reportState.debug)),
      onForced: () => (exitNow = true),
      hardExitMs: HARD_EXIT_MS,
    }
    if (name === 'worker') return (await import('./worker-command.js')).runWorkerVerb(args, io)
    if (name === 'submit') return (await import('./submit-command.js')).runSubmitVerb(args, io)
    return (await import('./batch-command.js')).runBatchVerb(args, io)
  }
  const { runCacheVerb } = await import('./cache-command.js')
  return runCacheVerb(args, {
    out: process.stdout,
    env: process.env,
    warn: (text) => process.stdout.write(`${color ? BLUE : ''}${PROG}: warning: ${text}${color ? RESET : ''}\n`),
  })
}

function information(flags: CliFlags): number {
  if (flags.help) process.stdout.write(helpText())
  else if (flags.version) process.stdout.write(`${PROG} ${version()}\n`)
  else process.stdout.write(flags.longOptions ? longOptionsText() : shortOptionsText())
  return 0
}

async function command(
  flags: CliFlags,
  elements: string[],
  argv: string[],
  machine: MachineChannel | undefined,
): Promise<number> {
  if (machine && elements.length === 0) {
    const { availableFormats } = await import('../outputs/registry.js')
    machine.write(
      `${PROG}\n${availableFormats()
        .map((f) => `output:${f}\n`)
        .join('')}`,
    )
    return 0
  }
  if (flags.libPath === undefined && isVerb(elements[0])) {
    throw new UsageError('-B must be specified', {
      hint: `‘${elements[0]}’ is a verb only as the first argument: ${PROG} ${elements[0]} …`,
    })
  }
  const options = toBuildOptions(elements, flags, argv)
  // Heavy modules load late, so --help stays fast.
  const api = await import('../api/index.js')
  if (flags.dryRun) {
    const report = await api.describePlanWithCache(api.planBuild(options))
    process.stdout.write(flags.dryRun === 'json' ? JSON.stringify(report, null, 2) + '\n' : api.formatDryRun(report))
    return 0
  }
  const controller = new AbortController()
  const interrupts = createInterrupts({
    controller,
    // On stdout with the progress lines: stderr keeps the one line that ends the run.
    notify: (signal) =>
      process.stdout.write(
        `${PROG}: ${signal}: stopping the build and cleaning up; a second ${signal === 'SIGINT' ? 'Ctrl-C' : 'SIGTERM'} stops at once\n`,
      ),
    stopNow: () => void api.stopBuildsNow(),
    exit: (reason) => {
      const code = report(reason, reportState.color, reportState.debug)
      process.exit(code)
    },
    hardExitMs: HARD_EXIT_MS,
  })
  const onSignal = (signal: StopSignal) => {
    interrupts.onSignal(signal)
    if (interrupts.forced) exitNow = true
  }
  // A closed stdout (virt-dib … | head) stops the build like any other failure, with cleanup.
  const onBuildStdoutError = (e: unknown) => abortSession(stdoutError(e))
  session = { controller }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  process.stdout.on('error', onBuildStdoutError)
  try {
    const render = createRenderer({
      color: reportState.color || flags.colors,
      quiet: flags.quiet,
      debug: (options.debug ?? 0) > 0 || flags.trace,
      verbose: flags.verbose,
      out: process.stdout,
      ...(machine ? { machine } : {}),
    })
    await api.build(options, { onEvent: render, signal: controller.signal })
  } catch (e) {
    // The build reports an abort as such; say why it was aborted when that was not a signal.
    const reason: unknown = controller.signal.reason
    if (controller.signal.aborted && !(reason instanceof BuildAbortedError)) throw reason
    throw e
  } finally {
    interrupts.dispose()
    session = undefined
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    process.stdout.off('error', onBuildStdoutError)
  }
  // A write error on the channel after the build's last event still makes the run fail.
  if (controller.signal.aborted) throw controller.signal.reason
  return 0
}

function stdoutError(e: unknown): VirtDibError {
  return new VirtDibError(`cannot write to standard output: ${describeSystemError(e)}`, { cause: e })
}

function report(e: unknown, color: boolean, debug: boolean): number {
  const err = (text: string) => process.stderr.write((color ? `${RED}${text}${RESET}` : text) + '\n')
  if (e instanceof GetoptError) {
    process.stderr.write(`${PROG}: ${e.message}\nTry ‘${e.tryHelp}’ or consult ${PROG}(1) for more information.\n`)
    return 1
  }
  if (e instanceof BuildAbortedError) {
    err(`${PROG}: ${e.message}`)
    return e.exitCode
  }
  if (e instanceof ScriptError) {
    if (e.outputTail.length > 0) process.stderr.write(`${PROG}: last lines of ${e.hook}/${e.script}:\n`)
    for (const l of e.outputTail) process.stderr.write(`  ${l}\n`)
    err(`${PROG}: error: ${e.message}${e.where === 'chroot' ? ' (in the image chroot)' : ''}`)
    if (e.hint) process.stderr.write(`${PROG}: ${e.hint}\n`)
    if (e.logPath) process.stderr.write(`${PROG}: the full log is in ${e.logPath}\n`)
    return e.exitCode
  }
  if (e instanceof VirtDibError) {
    // A message listing several problems (a batch file's) says error on each line.
    err(
      e.message
        .split('\n')
        .map((l) => `${PROG}: error: ${l}`)
        .join('\n'),
    )
    if (e.hint) process.stderr.write(`${PROG}: ${e.hint}\n`)
    if (debug && e.cause) process.stderr.write(`${String((e.cause as Error).stack ?? (e.cause as unknown))}\n`)
    return e.exitCode
  }
  const name = (e as Error | undefined)?.name
  if (name === 'GuestfsError') {
    const g = e as Error & { op: string }
    err(`${PROG}: error: libguestfs error: ${g.op}: ${g.message.trim().split('\n').join(' ')}`)
    if (debug) process.stderr.write(`${g.stack}\n`)
    return 1
  }
  err(`${PROG}: error: internal error: ${oneLine(e)}`)
  if (debug) process.stderr.write(`${(e as Error | undefined)?.stack ?? ''}\n`)
  return 1
}

function oneLine(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e)
  return text.trim().split('\n')[0] ?? ''
}

/**
 * The last line of defence: a throw or rejection nobody handled. During a build it aborts the
 * build (cleanup runs, then main reports it as an internal error); after an abort it is a side
 * effect of stopping and only shown with --debug; otherwise it is reported and the process exits.
 */
function onCrash(e: unknown): void {
  if (abortSession(e)) {
    if (reportState.debug)
      process.stderr.write(`${PROG}: (while stopping) ${(e as Error | undefined)?.stack ?? String(e)}\n`)
    return
  }
  process.exit(report(e, reportState.color, reportState.debug))
}

/** A closed stdout outside a build (`virt-dib --help | true`): one line, exit 1. */
function onStdoutError(e: unknown): void {
  if (session) return // command() stops the build
  process.exit(report(stdoutError(e), reportState.color, reportState.debug))
}

/** Entry point for bin/virt-dib. */
export function run(): void {
  process.on('uncaughtException', onCrash)
  process.on('unhandledRejection', onCrash)
  process.stdout.on('error', onStdoutError)
  process.stderr.on('error', () => undefined) // nowhere left to say anything
  let settled = false
  // Node exits (status 0) when nothing is left to wait for: with main() still pending, that is
  // a promise that can never settle, and a silent success would be a lie.
  process.on('beforeExit', () => {
    if (settled) return
    process.exit(report(new Error('the build stopped making progress (nothing left to wait for)'), false, false))
  })
  main().then(
    (code) => {
      settled = true
      process.exitCode = code
      if (exitNow) process.exit(code)
    },
    (e: unknown) => {
      settled = true
      process.stderr.write(`${PROG}: error: internal error: ${oneLine(e)}\n`)
      process.exit(1)
    },
  )
}
