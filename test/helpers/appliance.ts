// Settings every appliance test uses: TCG when KVM is unusable here, modest memory.
import { Guestfs, type GuestfsCreateOptions } from '../../src/guestfs/index.js'
import { applianceAppend, chooseBackendSettings } from '../../src/host/kvm.js'

export function applianceOptions(extra: GuestfsCreateOptions = {}): GuestfsCreateOptions {
  const backendSettings = chooseBackendSettings()
  const append = applianceAppend()
  return { memsize: 1024, ...(backendSettings ? { backendSettings } : {}), ...(append ? { append } : {}), ...extra }
}

export function createHandle(extra: GuestfsCreateOptions = {}): Promise<Guestfs> {
  return Guestfs.create(applianceOptions(extra))
}
