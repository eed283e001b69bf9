// Runs one phase: one appliance round trip (or one host process) for all of its scripts.
// Live lines come from the console (appliance events) or the host process's stdout; the
// summary the runner prints at the end decides success.
import { SYSROOT } from '../../elements/layout.js'
import { ScriptError, VirtDibError } from '../../errors.js'
import { GuestfsError } from '../../guestfs/index.js'
import { describeProcesses } from '../../host/proc.js'
import { runProcess } from '../../host/spawn.js'
import { LineSplitter } from '../../util/lines.js'
import { shellQuote } from '../../util/shell-quote.js'
import { parseRunnerLine } from './protocol.js'
import type { PhaseContext, PhaseResult, RunnablePhase } from '../types.js'

const LIVE_DRAIN_MS = 500

interface Summary {
  scripts: string[]
  ran: { name: string; status: number; ms: number }[]
  envFiles: string[]
  tail: string[]
  envFail?: { file: string; status: number }
  blockDevice?: string
  done?: number
}

/** Collects the runner's summary lines out of whatever else the output contains. */
export function parseSummary(output: string, token: string): Summary {
  const s: Summary = { scripts: [], ran: [], envFiles: [], tail: [] }
  for (const line of output.split('\n')) {
    const r = parseRunnerLine(line, token)
    if (r?.channel !== 'summary') continue
    switch (r.kind) {
      case 'list':
        s.scripts = r.scripts
        break
      case 'env':
        s.envFiles.push(r.file)
        break
      case 'end':
        s.ran.push({ name: r.script, status: r.status, ms: r.ms })
        break
      case 'tail':
        s.tail.push(r.text)
        break
      case 'envfail':
        s.envFail = { file: r.file, status: r.status }
        break
      case 'var':
        if (r.name === 'IMAGE_BLOCK_DEVICE') s.blockDevice = unquote(r.value)
        break
      case 'done':
        s.done = r.status
        break
    }
  }
  return s
}

function unquote(v: string): string {
  const t = v.trim()
  if ((t.startsWith("'") && t.endsWith("'")) || (t.startsWith('"') && t.endsWith('"'))) return t.slice(1, -1)
  return t
}

/** Turns live lines into events; remembers which scripts were seen ending. */
class LiveParser {
  readonly #split = new LineSplitter()
  readonly ended = new Set<string>()
  #current: string | undefined
  #lastListed: string[] | undefined
  constructor(
    private readonly ctx: PhaseContext,
    private readonly phase: RunnablePhase,
    private readonly onOther?: (line: string) => void,
  ) {}

  push(chunk: string): void {
    for (const line of this.#split.push(chunk)) this.line(line)
  }

  flush(): void {
    for (const line of this.#split.flush()) this.line(line)
  }

  get listed(): string[] | undefined {
    return this.#lastListed
  }

  line(raw: string): void {
    const r = parseRunnerLine(raw, this.ctx.token)
    if (r === undefined) {
      this.onOther?.(raw)
      return
    }
    if (r.channel !== 'live') return
    const hook = this.phase.hook
    switch (r.kind) {
      case 'output':
        this.ctx.emit({ kind: 'script-output', hook, script: this.#current ?? '', line: r.text })
        break
      case 'start':
        this.#current = r.script
        this.ctx.emit({ kind: 'script-start', hook, script: r.script })
        break
      case 'end':
        this.ended.add(r.script)
        this.ctx.emit({ kind: 'script-end', hook, script: r.script, status: r.status, seconds: r.ms / 1000 })
        break
      case 'list':
        this.#lastListed = r.scripts
        break
    }
  }
}

/** How a host phase's runner starts: its environment and working directory. */
export interface HostRun {
  env: NodeJS.ProcessEnv
  cwd: string
}

/** Runs every script of `phase`; throws ScriptError if one fails. A host phase needs `host`. */
export async function runPhase(ctx: PhaseContext, phase: RunnablePhase, host?: HostRun): Promise<PhaseResult> {
  const t0 = Date.now()
  ctx.emit({ kind: 'phase-start', hook: phase.hook, where: phase.where })
  const live = new LiveParser(ctx, phase, (line) => {
    if (line.trim()) ctx.emit({ kind: 'appliance-log', text: line })
  })
  let output: string
  if (phase.where === 'host') {
    output = await runOnHost(ctx, phase, live, host)
  } else {
    output = await runInAppliance(ctx, phase, live)
  }
  const summary = parseSummary(output, ctx.token)
  for (const r of summary.ran) {
    if (!live.ended.has(r.name)) {
      ctx.emit({ kind: 'script-end', hook: phase.hook, script: r.name, status: r.status, seconds: r.ms / 1000 })
    }
  }
  const seconds = (Date.now() - t0) / 1000
  const status = summary.done ?? 1
  ctx.emit({ kind: 'phase-end', hook: phase.hook, where: phase.where, seconds, status, scripts: summary.scripts })
  if (summary.done === undefined) {
    throw new VirtDibError(`${phase.hook}: the phase runner did not finish`, {
      hint: output.trim().split('\n').slice(-5).join(' / ') || undefined,
    })
  }
  if (status !== 0) {
    const failed = summary.ran.find((r) => r.status !== 0)
    if (failed) {
      const outOfSpace = summary.tail.some((l) => ENOSPC.test(l)) || (await imageIsFull(ctx, phase))
      throw new ScriptError({
        hook: phase.hook,
        script: failed.name,
        status: failed.status,
        where: phase.where,
        outputTail: summary.tail,
        outOfSpace,
        ...(ctx.logPath ? { logPath: ctx.logPath } : {}),
      })
    }
    const env = summary.envFail
    throw new ScriptError({
      hook: phase.hook,
      script: env ? `../environment.d/${env.file}` : '(runner)',
      status: env?.status ?? status,
      where: phase.where,
    })
  }
  return {
    scripts: summary.scripts,
    ran: summary.ran,
    envFiles: summary.envFiles,
    ...(summary.blockDevice !== undefined ? { blockDevice: summary.blockDevice } : {}),
    seconds,
  }
}

const ENOSPC = /No space left on device|ENOSPC/

/** After a failure in the appliance: is the image's file system (nearly) full? */
async function imageIsFull(ctx: PhaseContext, phase: RunnablePhase): Promise<boolean> {
  if (phase.where === 'host') return false
  try {
    const df = await ctx.g.shOutside(`df -Pk ${SYSROOT} | tail -n 1`)
    const avail = Number(df.trim().split(/\s+/)[3])
    return Number.isFinite(avail) && avail < 1024
  } catch {
    return false
  }
}

async function runInAppliance(ctx: PhaseContext, phase: RunnablePhase, live: LiveParser): Promise<string> {
  const onConsole = (text: string) => live.push(text)
  ctx.g.on('appliance', onConsole)
  const runner = ctx.runnerPath(phase.where)
  const control = ctx.controlFile(phase)
  // The token is hex and the paths are virt-dib's own, but quoting costs nothing.
  const args = [runner, control, ctx.token, ctx.runLog?.(phase.where) ?? ''].map(shellQuote).join(' ')
  try {
    const call = { signal: ctx.signal, onAbort: 'kill-appliance' as const }
    if (phase.where === 'chroot') {
      // guestfs sh: /bin/sh -c in the chroot of the image; the image must have bash (as DIB needs).
      // env -i: nothing of guestfsd's own environment reaches the scripts.
      return await ctx.g.sh(`exec env -i /bin/bash ${args}`, call)
    }
    // Outside the chroot: the appliance's own root.
    return await ctx.g.shOutside(`exec env -i /bin/bash ${args}`, call)
  } catch (e) {
    if (e instanceof GuestfsError && !e.applianceDied) {
      throw new VirtDibError(`${phase.hook}: the phase could not run: ${e.message.trim().split('\n').pop()}`, {
        cause: e,
        hint: phase.where === 'chroot' ? 'chroot phases need /bin/sh and bash in the image' : undefined,
      })
    }
    throw e
  } finally {
    // Console lines can trail the call's reply: give the last ones a moment.
    const expected = live.listed
    const end = Date.now() + LIVE_DRAIN_MS
    while (expected && expected.some((s) => !live.ended.has(s)) && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 25))
    }
    live.flush()
    ctx.g.off('appliance', onConsole)
  }
}

/**
 * The host runner (extra-data.d) in a process group of its own: an abort stops the runner, its
 * scripts and whatever they started; processes a script left running are stopped once the runner
 * has finished (a warning names them).
 */
async function runOnHost(
  ctx: PhaseContext,
  phase: RunnablePhase,
  live: LiveParser,
  host: HostRun | undefined,
): Promise<string> {
  // A bug, not a user error (the CLI says internal error): the host runner would inherit ours.
  if (!host) throw new Error(`${phase.hook}: a host phase needs its environment and working directory`)
  // divergence: diskimage-builder leaves background processes of extra-data.d running; here they
  // would keep the FUSE view of the image busy, so they are stopped with the phase.
  const r = await runProcess('/bin/bash', [ctx.runnerPath('host'), ctx.controlFile(phase), ctx.token, ''], {
    cwd: host.cwd,
    env: host.env,
    stdin: 'inherit',
    signal: ctx.signal,
    processGroup: true,
    onStdout: (s) => live.push(s),
    onStderr: (s) => ctx.emit({ kind: 'appliance-log', text: s }),
  })
  live.flush()
  if (r.strays.length > 0) {
    const n = r.strays.length
    ctx.emit({
      kind: 'warning',
      text: `${phase.hook}: ${n === 1 ? 'a process was' : `${n} processes were`} left running by its scripts and stopped: ${describeProcesses(r.strays)}`,
    })
  }
  return r.stdout
}
