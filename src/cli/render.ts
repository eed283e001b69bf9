// Turns build events into terminal output like the original's ([  12.3] progress lines, info in
// magenta), plus live script output and durations; and JSON lines for --machine-readable.
import { formatDuration } from '../cache/duration.js'
import type { BuildEvent } from '../events.js'
import { formatSize } from '../util/sizes.js'

export interface RenderOptions {
  color: boolean
  quiet: boolean
  debug: boolean
  verbose: boolean
  out: NodeJS.WritableStream
  /** --machine-readable channel, if any (its write errors are its own business: channel.ts). */
  machine?: { write(text: string): unknown }
}

const GREEN = '\x1b[0;32m'
const MAGENTA = '\x1b[1;35m'
const BLUE = '\x1b[1;34m'
const DIM = '\x1b[2m'
const RESET = '\x1b[0m'

/** A cache key as `virt-dib cache list` shows it: its first 12 hex digits. */
export function shortKey(key: string): string {
  return key.slice(0, 12)
}

export function createRenderer(o: RenderOptions): (e: BuildEvent) => void {
  const paint = (code: string, text: string) => (o.color ? `${code}${text}${RESET}` : text)
  const stamp = (e: BuildEvent) => `[${e.elapsed.toFixed(1).padStart(6)}] `
  const line = (text: string) => o.out.write(text + '\n')
  // A phase is also a step: with --debug its phase-end line already says how long it took.
  const phases = new Set<string>()
  return (e) => {
    if (o.machine) o.machine.write(JSON.stringify({ ...e, timestamp: new Date().toISOString() }) + '\n')
    switch (e.kind) {
      case 'progress':
        if (!o.quiet) line(paint(GREEN, stamp(e) + e.text))
        break
      case 'info':
        line(paint(MAGENTA, `virt-dib: ${e.text}`))
        break
      case 'warning':
        line(paint(BLUE, `virt-dib: warning: ${e.text}`))
        break
      case 'debug':
        if (o.debug || o.verbose) line(e.text)
        break
      case 'appliance-log':
        if (o.verbose) line(paint(DIM, e.text))
        break
      case 'script-start':
        if (!o.quiet) line(paint(GREEN, `${stamp(e)}Running: ${e.hook}/${e.script}`))
        break
      case 'script-output':
        line(e.line)
        break
      case 'script-end':
        if (!o.quiet)
          line(
            paint(
              DIM,
              `${stamp(e)}${e.hook}/${e.script} ${e.status === 0 ? 'completed' : `failed with status ${e.status}`} after ${e.seconds.toFixed(3)} s`,
            ),
          )
        break
      case 'phase-end':
        if (o.debug) line(`${e.hook}: ${e.scripts.length} scripts in ${e.seconds.toFixed(1)} s`)
        break
      case 'step':
        if (o.debug && !phases.has(e.name)) line(`${e.name}: ${e.seconds.toFixed(1)} s`)
        break
      case 'output':
        if (!o.quiet) line(paint(GREEN, `${stamp(e)}Output: ${e.path} (${e.size} bytes)`))
        break
      case 'phase-start':
        phases.add(e.hook)
        break
      case 'cache-hit': {
        const steps = e.steps.length > 1 ? `${e.steps[0]} … ${e.steps.at(-1)}` : (e.steps[0] ?? '')
        const age = formatDuration(e.ageSeconds * 1000)
        if (!o.quiet)
          line(paint(GREEN, `${stamp(e)}Reusing ${steps} from the cache (key ${shortKey(e.key)}, ${age} old)`))
        break
      }
      case 'cache-miss':
        // Why a step runs again is worth a line; a miss with nothing to say only in verbose mode.
        if (e.reason !== '') {
          if (!o.quiet) line(paint(GREEN, `${stamp(e)}Not in the cache: ${e.step} (${e.reason})`))
        } else if (o.debug || o.verbose) line(`${stamp(e)}Not in the cache: ${e.step}`)
        break
      case 'cache-store':
        if (o.debug || o.verbose) {
          const took = `${e.seconds.toFixed(1)} s, written in ${e.writeSeconds.toFixed(1)} s beside the build`
          line(`${stamp(e)}Stored ${e.step} in the cache (key ${shortKey(e.key)}, ${formatSize(e.bytes)}, ${took})`)
        }
        break
    }
  }
}
