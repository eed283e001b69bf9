// Events a build emits: the CLI renders them, --machine-readable prints them as JSON lines,
// build() callers receive them. Types only, importing nothing: every layer may use them.

/** Where a phase runs: on the host, in the appliance outside the image, or chrooted into it. */
export type Where = 'host' | 'appliance' | 'chroot'

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
    /** The step cache reused the snapshot after `steps` (first…last, in run order): they do not run. */
    | { kind: 'cache-hit'; steps: string[]; key: string; ageSeconds: number }
    /** `step` is not in the cache; `reason` names the first input that differs ('' if none is known). */
    | { kind: 'cache-miss'; step: string; reason: string }
    /**
     * The snapshot after `step` went into the cache: `bytes` on disk; the build waited `seconds` for it
     * (its drives read while frozen), then it was written and committed in `writeSeconds` beside the next steps.
     */
    | { kind: 'cache-store'; step: string; key: string; bytes: number; seconds: number; writeSeconds: number }
  )

export type BuildEventKind = BuildEvent['kind']

/** An event as a step emits it: the `elapsed` field is added by the build's context. */
export type EventInput = BuildEvent extends infer E ? (E extends BuildEvent ? Omit<E, 'elapsed'> : never) : never
