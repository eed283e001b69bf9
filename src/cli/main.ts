// The command line: parse, translate to build() options, render events, and map errors to
// messages and exit codes. The only code that prints errors or exits.
import { createWriteStream } from 'node:fs'
import { readFileSync } from 'node:fs'

import { ScriptError, UsageError, VirtDibError, BuildAbortedError } from '../errors.js'
import { helpText, longOptionsText, shortOptionsText } from './help.js'
import { GetoptError, parseArgv } from './parse.js'
import { toBuildOptions } from './options.js'
import { createRenderer } from './render.js'

const PROG = 'virt-dib'
const RED = '\x1b[1;31m'
const RESET = '\x1b[0m'

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
  return pkg.version
}

/** --machine-readable[=FORMAT]: where the JSON/facts go. */
function machineChannel(spec: string | true | undefined): NodeJS.WritableStream | undefined {
  if (spec === undefined) return undefined
  if (spec === true || spec === 'stream:stdout') return process.stdout
  if (spec === 'stream:stderr') return process.stderr
  if (spec.startsWith('file:') && spec.length > 5) return createWriteStream(spec.slice(5))
  const fd = /^fd:(\d+)$/.exec(spec)
  if (fd) return createWriteStream('', { fd: Number(fd[1]) })
  throw new UsageError(`invalid format string for --machine-readable: ${spec}`)
}

export async function main(argv: string[] = process.argv.slice(2)): Promise<number> {
  const color = process.stdout.isTTY === true
  let debug = false
  try {
    const { flags, elements } = parseArgv(argv)
    debug = flags.verbose || flags.debug !== undefined
    const useColor = color || flags.colors
    if (flags.help) {
      process.stdout.write(helpText())
      return 0
    }
    if (flags.version) {
      process.stdout.write(`${PROG} ${version()}\n`)
      return 0
    }
    if (flags.longOptions || flags.shortOptions) {
      process.stdout.write(flags.longOptions ? longOptionsText() : shortOptionsText())
      return 0
    }
    const machine = machineChannel(flags.machineReadable)
    if (machine && elements.length === 0) {
      const { availableFormats } = await import('../outputs/registry.js')
      machine.write(
        `${PROG}\n${availableFormats()
          .map((f) => `output:${f}\n`)
          .join('')}`,
      )
      return 0
    }
    const options = toBuildOptions(elements, flags, argv)
    // Heavy modules load late, so --help stays fast.
    const api = await import('../api/index.js')
    if (flags.dryRun) {
      const report = api.describePlan(api.planBuild(options))
      process.stdout.write(flags.dryRun === 'json' ? JSON.stringify(report, null, 2) + '\n' : api.formatDryRun(report))
      return 0
    }
    const controller = new AbortController()
    const onSignal = (signal: 'SIGINT' | 'SIGTERM') => {
      if (controller.signal.aborted) process.exit(signal === 'SIGINT' ? 130 : 143)
      controller.abort(new BuildAbortedError(`exiting on signal ${signal}`, { signal }))
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
    try {
      const render = createRenderer({
        color: useColor,
        quiet: flags.quiet,
        debug: (options.debug ?? 0) > 0 || flags.trace,
        verbose: flags.verbose,
        out: process.stdout,
        ...(machine ? { machine } : {}),
      })
      await api.build(options, { onEvent: render, signal: controller.signal })
    } finally {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
    }
    return 0
  } catch (e) {
    return report(e, color, debug)
  }
}

function report(e: unknown, color: boolean, debug: boolean): number {
  const err = (text: string) => process.stderr.write((color ? `${RED}${text}${RESET}` : text) + '\n')
  if (e instanceof GetoptError) {
    process.stderr.write(`${PROG}: ${e.message}\nTry ‘${PROG} --help’ or consult ${PROG}(1) for more information.\n`)
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
    err(`${PROG}: error: ${e.message}`)
    if (e.hint) process.stderr.write(`${PROG}: ${e.hint}\n`)
    if (debug && e.cause) process.stderr.write(`${String((e.cause as Error).stack ?? e.cause)}\n`)
    return e.exitCode
  }
  const name = (e as Error)?.name
  if (name === 'GuestfsError') {
    const g = e as Error & { op: string }
    err(`${PROG}: error: libguestfs error: ${g.op}: ${g.message.trim().split('\n').join(' ')}`)
    if (debug) process.stderr.write(`${g.stack}\n`)
    return 1
  }
  err(`${PROG}: error: internal error: ${(e as Error)?.message ?? String(e)}`)
  if (debug) process.stderr.write(`${(e as Error)?.stack ?? ''}\n`)
  return 1
}

/** Entry point for bin/virt-dib. */
export function run(): void {
  main().then(
    (code) => {
      process.exitCode = code
    },
    (e: unknown) => {
      process.stderr.write(`${PROG}: error: internal error: ${String(e)}\n`)
      process.exitCode = 1
    },
  )
}
