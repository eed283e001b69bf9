// The phases in diskimage-builder's order. Each file says what is special about its hook;
// runner/run-scripts.ts runs any of them.
import { blockDevice } from './block-device.js'
import { cleanup } from './cleanup.js'
import { extraData } from './extra-data.js'
import { finalise } from './finalise.js'
import { install } from './install.js'
import { postInstall } from './post-install.js'
import { postRoot } from './post-root.js'
import { preFinalise } from './pre-finalise.js'
import { preInstall } from './pre-install.js'
import { root } from './root.js'
import type { Phase } from './types.js'
import type { HookName } from '../elements/environment.js'

export const PHASES: readonly Phase[] = Object.freeze([
  root,
  extraData,
  preInstall,
  install,
  postInstall,
  postRoot,
  blockDevice,
  preFinalise,
  finalise,
  cleanup,
])

export const PHASE_BY_HOOK: ReadonlyMap<string, Phase> = new Map(PHASES.map((p) => [p.hook, p]))

export function phase(hook: HookName): Phase {
  return PHASE_BY_HOOK.get(hook)!
}
