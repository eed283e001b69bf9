// What a phase is, and what the shared runner needs from the build to run one.
import type { HookName, PhaseFacts, Where } from '../elements/environment.js'
import type { AuxPath } from '../elements/layout.js'
import type { EventInput } from '../events.js'
import type { Guestfs } from '../guestfs/index.js'
import type { ExtraPackagesHook } from './extra-packages.js'

/** One diskimage-builder hook directory (or virt-dib's extra-packages step) and how it runs. */
export interface Phase extends PhaseFacts {
  hook: HookName | ExtraPackagesHook
  /** Working directory: `/`, the image's `$NAME.d` (cleanup.d), or virt-dib's own (extra-data.d). */
  cwd: '/' | 'out' | 'caller'
  /** Where its scripts are when they are not the elements' `hooks/<hook>` (extra-packages). */
  scriptsDir?: AuxPath
}

/** What the runner needs of a phase to run it. */
export type RunnablePhase = Pick<Phase, 'hook' | 'where'>

export type { EventInput }

/** The parts of the build a phase run uses (BuildContext provides them). */
export interface PhaseContext {
  readonly g: Guestfs
  /** Random per build: marks the runner's lines on the console and in its output. */
  readonly token: string
  readonly signal: AbortSignal
  emit(event: EventInput): void
  /** Control file of a phase: guest path (appliance/chroot) or host path (host). */
  controlFile(phase: RunnablePhase): string
  /** The runner: guest path inside the image, or host path. */
  runnerPath(where: Where): string
  /** The runner's log file as a runner at `where` sees it ('' for none): the runner's argument. */
  runLog?(where: Where): string
  /** Where the full log is, for failure messages. */
  readonly logPath?: string | undefined
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
