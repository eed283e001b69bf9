// What a phase is, and what the shared runner needs from the build to run one.
import type { HookName, Where } from '../elements/environment.js'
import type { BuildEvent } from '../events.js'
import type { Guestfs } from '../guestfs/index.js'

/** One diskimage-builder hook directory and how it runs. */
export interface Phase {
  hook: HookName | 'extra-packages'
  where: Where
  /** Working directory: the image's `$NAME.d` (cleanup.d) or the default. */
  cwd?: 'out'
}

/** Distributive Omit, so each event variant keeps its own fields. */
export type EventInput = BuildEvent extends infer E ? (E extends BuildEvent ? Omit<E, 'elapsed'> : never) : never

/** The parts of the build a phase run uses (BuildContext provides them). */
export interface PhaseContext {
  readonly g: Guestfs
  /** Random per build: marks the runner's lines on the console and in its output. */
  readonly token: string
  readonly signal: AbortSignal
  emit(event: EventInput): void
  /** Control file of a phase: guest path (appliance/chroot) or host path (host). */
  controlFile(phase: Phase): string
  /** The runner: guest path inside the image, or host path. */
  runnerPath(where: Where): string
  /** For host phases: the environment and working directory to run with. */
  hostEnv?: NodeJS.ProcessEnv
  hostCwd?: string
  /** Where the full log is, for failure messages. */
  logPath?: string
}

/** What one phase run produced. */
export interface PhaseResult {
  scripts: string[]
  ran: { name: string; status: number; ms: number }[]
  envFiles: string[]
  /** Value of the last `IMAGE_BLOCK_DEVICE=` line printed by a block-device.d script. */
  blockDevice?: string
  seconds: number
}
