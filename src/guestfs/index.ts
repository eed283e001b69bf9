// The binding's public surface. Everything outside src/guestfs/ imports from here.
export { Guestfs } from './handle.js'
export { AbortError, GuestfsError, type GuestfsErrorCode } from './errors.js'
export { killAllAppliances, liveHandleCount } from './live.js'
export { loadAddon, type LoadedAddon } from './native.js'
export type * from './types.js'
