// `virt-dib batch` on the terminal: every build's lines prefixed with its name, or, on a TTY, one
// live line per running build redrawn in place; JSON lines for --machine-readable; the summary table.
import { relative, isAbsolute } from 'node:path'

import { describeFailure } from '../batch/describe-failure.js'
import type { BatchEvent, BuildOutcome } from '../batch/types.js'
import type { BuildEvent } from '../events.js'
import { createRenderer } from './render.js'

export { describeFailure }

export interface BatchRenderOptions {
  /** Every build of the batch, in file order (the live block's column and its `N/M finished`). */
  names: readonly string[]
  color: boolean
  quiet: boolean
  debug: boolean
  verbose: boolean
  out: NodeJS.WritableStream & { columns?: number }
  /** The live block instead of prefixed lines (the command chooses: a TTY, not -q, not -v, no JSON on stdout). */
  live: boolean
  machine?: { write(text: string): unknown }
  /** Least time between two redraws of the live block that no printed line asked for. */
  refreshMs?: number
}

export interface BatchRenderer {
  onEvent: (e: BatchEvent) => void
  /** Erases the live block and stops its timer; lines printed after it start on a clean line. */
  close: () => void
}

const GREEN = '\x1b[0;32m'
const RED = '\x1b[1;31m'
const BLUE = '\x1b[1;34m'
const BOLD = '\x1b[1m'
const RESET = '\x1b[0m'

// Plain ANSI: cursor up N lines, to column 1, clear to the end of the screen.
const up = (n: number) => (n > 0 ? `\x1b[${n}A\r\x1b[J` : '\r\x1b[J')

interface Running {
  name: string
  startedAt: number
  doing: string
}

/** One line each: createRenderer writes `text\n` per call; script output may hold several lines. */
function prefixedSink(prefix: string, write: (text: string) => void): NodeJS.WritableStream {
  const sink = {
    write(text: string) {
      const lines = text.split('\n')
      if (lines.at(-1) === '') lines.pop()
      write(lines.map((l) => `${prefix}${l}\n`).join(''))
      return true
    },
  }
  // createRenderer only ever calls write().
  return sink as unknown as NodeJS.WritableStream
}

export function createBatchRenderer(o: BatchRenderOptions): BatchRenderer {
  const paint = (code: string, text: string) => (o.color ? `${code}${text}${RESET}` : text)
  const width = Math.max(0, ...o.names.map((n) => n.length))
  const running = new Map<string, Running>()
  const perBuild = new Map<string, (e: BuildEvent) => void>()
  let finished = 0
  let drawn = 0 // lines of the live block on the screen
  let dirty = false
  let lastDraw = 0
  let timer: NodeJS.Timeout | undefined
  let closed = false

  const block = (): string[] => {
    const now = Date.now()
    const cols = Math.max(20, (o.out.columns || 80) - 1) // a wrapped line would break the count; 0: unknown
    const lines = [...running.values()].map((r) => {
      const elapsed = `${((now - r.startedAt) / 1000).toFixed(1).padStart(6)} s`
      const room = Math.min(48, cols - width - elapsed.length - 4) // elapsed near the phase on a wide terminal
      const doing = r.doing.length > room ? `${r.doing.slice(0, Math.max(0, room - 1))}…` : r.doing
      return `${r.name.padEnd(width)}  ${doing.padEnd(Math.max(0, room))}  ${elapsed}`.slice(0, cols)
    })
    lines.push(paint(BOLD, `${finished}/${o.names.length} finished`))
    return lines
  }
  /** Erases the block, prints `text` (whole lines) where it was, and draws the block again. */
  const draw = (text = '') => {
    const lines = closed ? [] : block()
    o.out.write(up(drawn) + text + lines.map((l) => l + '\n').join(''))
    drawn = lines.length
    dirty = false
    lastDraw = Date.now()
  }
  const tick = () => {
    if (dirty || running.size > 0) draw()
  }
  const print = o.live ? (text: string) => draw(text) : (text: string) => o.out.write(text)
  const changed = () => {
    dirty = true
    if (Date.now() - lastDraw >= (o.refreshMs ?? 250)) draw()
  }

  const rendererOf = (build: string) => {
    let r = perBuild.get(build)
    if (!r) {
      r = createRenderer({
        color: o.color,
        quiet: o.quiet,
        debug: o.debug,
        verbose: o.verbose,
        out: prefixedSink(`[${build}] `, print),
      })
      perBuild.set(build, r)
    }
    return r
  }

  const endLine = (e: Extract<BatchEvent, { kind: 'build-end' }>): string | undefined => {
    const tag = `[${e.build}] `
    if (e.status === 'ok') return o.quiet ? undefined : paint(GREEN, `${tag}finished in ${e.seconds.toFixed(1)} s`)
    if (e.status === 'failed') return paint(RED, `${tag}failed after ${e.seconds.toFixed(1)} s: ${e.reason ?? ''}`)
    return paint(BLUE, `${tag}skipped: ${e.reason ?? ''}`)
  }

  /** The live line's middle column: what the build is doing now. */
  const doingOf = (e: BuildEvent): string | undefined => {
    switch (e.kind) {
      case 'phase-start':
        return e.hook
      case 'script-start':
        return `${e.hook}/${e.script}`
      case 'script-end':
        return e.hook
      case 'progress':
        return e.text
      case 'cache-hit':
        return `reused ${phaseRange(e.steps)}`
      default:
        return undefined
    }
  }

  if (o.live) {
    timer = setInterval(tick, o.refreshMs ?? 250)
    timer.unref()
  }

  return {
    onEvent(e) {
      if (o.machine) o.machine.write(JSON.stringify({ ...e, timestamp: new Date().toISOString() }) + '\n')
      if (closed) return
      if (e.kind === 'build-start') {
        if (o.live) {
          running.set(e.build, { name: e.build, startedAt: Date.now(), doing: 'starting' })
          changed()
        }
        return
      }
      if (e.kind === 'build-end') {
        finished++
        running.delete(e.build)
        const line = endLine(e)
        if (line !== undefined) print(line + '\n')
        else if (o.live) changed()
        return
      }
      if (!o.live) {
        rendererOf(e.build)(e)
        return
      }
      // On the live block only what cannot wait for the summary is printed above it.
      if (e.kind === 'warning') {
        print(paint(BLUE, `[${e.build}] virt-dib: warning: ${e.text}`) + '\n')
        return
      }
      const r = running.get(e.build)
      const doing = doingOf(e)
      if (r && doing !== undefined && doing !== r.doing) {
        r.doing = doing
        changed()
      }
    },
    close() {
      if (closed) return
      closed = true
      clearInterval(timer)
      if (o.live && drawn > 0) o.out.write(up(drawn))
      drawn = 0
    },
  }
}

/** Phases as one range: `root.d … install.d`, one phase alone, `-` for none. */
export function phaseRange(steps: readonly string[]): string {
  if (steps.length === 0) return '-'
  return steps.length > 1 ? `${steps[0]} … ${steps.at(-1)}` : steps[0]!
}

export interface SummaryOptions {
  color: boolean
  /** Output paths under it are shown relative to it. */
  cwd?: string
}

/**
 * The table printed at the end: build, result, seconds, outputs, reused phases; under a failed
 * build its error, under a skipped one why; then the count of each result.
 */
export function formatSummary(outcomes: readonly BuildOutcome[], o: SummaryOptions): string {
  const paint = (code: string, text: string) => (o.color ? `${code}${text}${RESET}` : text)
  const cwd = o.cwd ?? process.cwd()
  const shown = (p: string) => {
    const r = relative(cwd, p)
    return r !== '' && !r.startsWith('..') && !isAbsolute(r) ? r : p
  }
  const rows = outcomes.map((b) => {
    if (b.status === 'skipped') return { b, cells: [b.name, 'skipped', '-', '-', '-'], notes: [b.reason] }
    const outputs = b.status === 'ok' ? b.result.outputs.map((x) => shown(x.path)).join(' ') : ''
    const notes = b.status === 'failed' ? describeFailure(b.error) : []
    return {
      b,
      cells: [b.name, b.status, b.seconds.toFixed(1), outputs || '-', phaseRange(b.reused)],
      notes,
    }
  })
  const head = ['BUILD', 'RESULT', 'SECONDS', 'OUTPUTS', 'REUSED']
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r.cells[i]!.length)))
  const colour = { ok: GREEN, failed: RED, skipped: BLUE }
  const fmt = (cells: readonly string[], status?: BuildOutcome['status']) =>
    cells
      .map((c, i) => {
        if (i === cells.length - 1) return c
        const padded = i === 2 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)
        return i === 1 && status ? paint(colour[status], padded) : padded
      })
      .join('  ')
  const lines = [fmt(head)]
  for (const r of rows) {
    lines.push(fmt(r.cells, r.b.status))
    for (const n of r.notes) lines.push(`    ${n}`)
  }
  const count = (s: BuildOutcome['status']) => outcomes.filter((b) => b.status === s).length
  const total = outcomes.length
  lines.push(
    `${total} ${total === 1 ? 'build' : 'builds'}: ${count('ok')} ok, ${count('failed')} failed, ${count('skipped')} skipped`,
  )
  return lines.map((l) => l + '\n').join('')
}
