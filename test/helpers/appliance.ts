// Settings every appliance test uses: TCG when KVM is unusable here, modest memory.
import { Guestfs, type GuestfsCreateOptions } from '../../src/guestfs/index.js'
import { chooseBackendSettings } from '../../src/host/kvm.js'

export function applianceOptions(extra: GuestfsCreateOptions = {}): GuestfsCreateOptions {
  const backendSettings = chooseBackendSettings()
  return { memsize: 1024, ...(backendSettings ? { backendSettings } : {}), ...extra }
}

export function createHandle(extra: GuestfsCreateOptions = {}): Promise<Guestfs> {
  return Guestfs.create(applianceOptions(extra))
}
