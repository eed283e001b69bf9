// Decides whether qemu may use KVM. A /dev/kvm can exist and still be unusable (nested
// virtualisation without MSR support aborts qemu at start), and libguestfs's default
// accel=kvm:tcg does not fall back then: it dies. A 0.1 s probe with libguestfs's own CPU
// model tells us whether to force TCG.
import { accessSync, constants } from 'node:fs'

import { probeSync } from './spawn.js'

let cached: boolean | undefined

/** True when qemu starts with KVM and the CPU model libguestfs uses. Cached per process. */
export function isKvmUsable(qemu = 'qemu-system-x86_64'): boolean {
  if (cached !== undefined) return cached
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK)
  } catch {
    return (cached = false)
  }
  // prettier-ignore
  return (cached = probeSync(qemu, [
    '-machine', 'accel=kvm',
    '-cpu', 'max,la57=off',
    '-display', 'none',
    '-nodefaults',
    '-no-user-config',
    '-qmp', 'stdio',
  ], { input: '{ "execute": "qmp_capabilities" }\n{ "execute": "quit" }\n', timeoutMs: 20_000 }))
}

/**
 * The libguestfs backend settings to use: the user's LIBGUESTFS_BACKEND_SETTINGS if set,
 * otherwise `force_tcg` when KVM is not usable (undefined: leave libguestfs's default).
 */
export function chooseBackendSettings(env: NodeJS.ProcessEnv = process.env): string[] | undefined {
  if (env['LIBGUESTFS_BACKEND_SETTINGS'] !== undefined) return undefined
  return isKvmUsable() ? undefined : ['force_tcg']
}

/** True when the appliance will run under software emulation (TCG) rather than KVM. */
export function willUseTcg(env: NodeJS.ProcessEnv = process.env): boolean {
  const settings = env['LIBGUESTFS_BACKEND_SETTINGS']
  if (settings !== undefined && settings.split(':').includes('force_tcg')) return true
  return !isKvmUsable()
}

/**
 * Extra kernel arguments for the appliance. Under TCG, qemu 7.2 finds translated code by
 * virtual address, so with address-space randomisation every exec lands the loader and libc at
 * new addresses and is translated again: `norandmaps` makes a dynamically linked exec ~5x faster
 * (32 ms -> 6 ms here), which is most of the guest time of script phases. Everything in the
 * appliance runs as root and is thrown away, so ASLR protects nothing there; VIRT_DIB_GUEST_ASLR=1
 * keeps it. LIBGUESTFS_APPEND is kept because setting the append string replaces it.
 */
export function applianceAppend(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const user = env['LIBGUESTFS_APPEND']?.trim()
  const ours = env['VIRT_DIB_GUEST_ASLR'] === '1' || !willUseTcg(env) ? '' : 'norandmaps'
  const all = [user, ours].filter((s) => s).join(' ')
  return all === '' ? undefined : all
}
