// Events a build emits: the CLI renders them, --machine-readable prints them as JSON lines,
// build() callers receive them. Types only; shared by api/, phases/ and outputs/.
import type { Where } from './elements/environment.js'

/** A diskimage-builder hook (`install.d`…) or `extra-packages`. */
type Hook = string

interface EventBase {
  /** Seconds since the build started. */
  elapsed: number
}

export type BuildEvent = EventBase &
  (
    | { kind: 'info'; text: string }
    | { kind: 'warning'; text: string }
    | { kind: 'progress'; text: string }
    | { kind: 'debug'; text: string }
    | { kind: 'phase-start'; hook: Hook; where: Where }
    | { kind: 'phase-end'; hook: Hook; where: Where; seconds: number; status: number; scripts: string[] }
    | { kind: 'script-start'; hook: Hook; script: string }
    | { kind: 'script-output'; hook: Hook; script: string; line: string }
    | { kind: 'script-end'; hook: Hook; script: string; status: number; seconds: number }
    | { kind: 'appliance-log'; text: string }
    | { kind: 'step'; name: string; seconds: number }
    | { kind: 'output'; format: string; path: string; size: number; md5?: string; sha256?: string }
  )

export type BuildEventKind = BuildEvent['kind']
