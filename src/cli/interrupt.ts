// What SIGINT and SIGTERM do during a build. The first one aborts the build through its
// AbortController: every step stops and the cleanup runs as after any failure. A second one
// means "now": every appliance is killed at once and the cleanup is hurried (stopBuildsNow),
// and if the build has still not ended after `hardExitMs`, the process exits anyway: qemu is
// already gone by then, so nothing that matters can be left running.
import { BuildAbortedError } from '../errors.js'

export type StopSignal = 'SIGINT' | 'SIGTERM'

export interface InterruptDeps {
  controller: AbortController
  /** Says, on the first signal, that the build is stopping and how to stop at once. */
  notify?: (signal: StopSignal) => void
  /** Kills every appliance and hurries the cleanups (the library's stopBuildsNow). */
  stopNow: () => void
  /** Prints the final line for `reason` and exits with its code (main.ts: report + process.exit). */
  exit: (reason: unknown) => void
  hardExitMs: number
}

export interface Interrupts {
  /** The signal listener. */
  onSignal: (signal: StopSignal) => void
  /** True once a second signal asked to stop at once: the caller exits as soon as main returns. */
  readonly forced: boolean
  /** Stops the hard-exit timer (the build ended). */
  dispose: () => void
}

export function createInterrupts(deps: InterruptDeps): Interrupts {
  let forced = false
  let timer: NodeJS.Timeout | undefined
  return {
    onSignal(signal) {
      const { controller } = deps
      if (!controller.signal.aborted) {
        controller.abort(new BuildAbortedError(`exiting on signal ${signal}`, { signal }))
        deps.notify?.(signal)
        return
      }
      // A third signal changes nothing: the appliances are dead and the deadline is set.
      if (forced) return
      forced = true
      deps.stopNow()
      timer = setTimeout(() => deps.exit(controller.signal.reason), deps.hardExitMs)
    },
    get forced() {
      return forced
    },
    dispose() {
      clearTimeout(timer)
    },
  }
}
