// The public library surface of virt-dib: build(), batches, the build queue, their types and errors. Re-exports only.
export * from './api/index.js'
export * from './queue/index.js'
export * from './errors.js'
export type { BuildEvent, BuildEventKind } from './events.js'
export type { EnvvarSpec } from './elements/environment.js'
export { Guestfs, GuestfsError, AbortError } from './guestfs/index.js'
