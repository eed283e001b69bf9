// Every handle of this process whose appliance may still run, so that one synchronous call can
// stop them all (the CLI's second Ctrl-C, a crash): qemu must never outlive virt-dib, even when
// the cleanup that would close the handles normally is stuck. Weak references, so a forgotten
// handle can still be collected.

interface Killable {
  killAppliance(): boolean
}

const handles = new Set<WeakRef<Killable>>()

/** Called by Guestfs.create. */
export function trackHandle(g: Killable): void {
  handles.add(new WeakRef(g))
}

/** Called once a handle is closed (its qemu is gone). */
export function untrackHandle(g: Killable): void {
  for (const r of handles) {
    const h = r.deref()
    if (h === undefined || h === g) handles.delete(r)
  }
}

/** How many handles may have a running appliance. */
export function liveHandleCount(): number {
  let n = 0
  for (const r of handles) if (r.deref() !== undefined) n++
  return n
}

/**
 * SIGKILLs the qemu of every open handle of this process, at once and synchronously (a launch in
 * progress included). Their running calls fail as `applianceDied`; the handles still need close.
 * Returns how many appliances were killed.
 */
export function killAllAppliances(): number {
  let killed = 0
  for (const r of handles) {
    const g = r.deref()
    if (g === undefined) {
      handles.delete(r)
      continue
    }
    try {
      if (g.killAppliance()) killed++
    } catch {
      // A handle already closed natively: nothing left to kill.
    }
  }
  return killed
}
