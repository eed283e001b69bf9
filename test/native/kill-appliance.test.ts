// kill_appliance must kill exactly this handle's qemu: during a launch (no pid from libguestfs
// yet) it picks, among the direct children of the handle's worker thread, those whose executable
// or argv[0] is a qemu-system binary or the configured hypervisor; never a process that merely
// mentions "qemu" on its command line, and never another handle's qemu.
import { type ChildProcess, spawn } from 'node:child_process'
import { chmodSync, mkdirSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { afterEach, describe, expect, it } from 'vitest'

import { loadAddon } from '../../src/guestfs/native.js'
import { fakeQemu } from '../helpers/fake-qemu.js'
import { tempDir } from '../helpers/temp.js'

const fq = fakeQemu
const missing = fq.fakeHypervisorMissing()
const { addon } = loadAddon()

const spawned: ChildProcess[] = []
afterEach(() => {
  // Each sleeper leads its own process group: a shell's own `sleep` child goes with it.
  for (const c of spawned.splice(0)) {
    try {
      process.kill(-c.pid!, 'SIGKILL')
    } catch {
      // the whole group is gone already
    }
  }
})

/** A sleeping child of this (the main) thread, started as `argv0` with extra arguments. */
function sleeper(argv0: string, ...args: string[]): ChildProcess {
  const c = spawn(argv0, [...args], { stdio: 'ignore', detached: true })
  spawned.push(c)
  return c
}
const exited = (c: ChildProcess) =>
  new Promise<NodeJS.Signals | null>((resolve) => {
    if (c.exitCode !== null || c.signalCode !== null) resolve(c.signalCode)
    else c.once('exit', (_code, signal) => resolve(signal))
  })

describe('kill_appliance selection', () => {
  it('kills qemu-system-* and the configured hypervisor, not look-alikes', async () => {
    const dir = tempDir('vdib-kill.')
    const bin = join(dir, 'bin')
    mkdirSync(join(bin, 'qemu-system-x86_64.d'), { recursive: true })
    const link = (name: string) => {
      symlinkSync('/bin/sleep', join(bin, name))
      return join(bin, name)
    }
    const script = join(bin, 'hv-script')
    writeFileSync(script, '#!/bin/sh\nsleep 600\n')
    chmodSync(script, 0o755)
    const qemu = sleeper(link('qemu-system-x86_64'), '600')
    const hv = sleeper(link('my-hypervisor'), '600') // a link to sleep, like every decoy
    const hvScript = sleeper(script)
    const decoys = [
      sleeper(link('qemu-img'), '600'), // a qemu tool, not the VM
      sleeper(link('qemu-system-x86_64.d/sleep'), '600'), // "qemu" only in a directory name
      sleeper('/bin/sh', '-c', 'sleep 600; true', 'qemu-system-x86_64'), // only in an argument
    ]
    // Until exec, a child is still a copy of node: wait until each runs its program.
    await fq.until(
      () =>
        [qemu, hv, hvScript, ...decoys].every(
          (c) => c.pid && readlinkSync(`/proc/${c.pid}/exe`) !== process.execPath,
        ) || undefined,
      5000,
      'the children to exec',
    )
    const killed = addon.__test.killQemuChildrenOf(process.pid, join(bin, 'my-hypervisor'))
    expect(killed.sort()).toEqual([qemu.pid, hv.pid].sort())
    expect(await exited(qemu)).toBe('SIGKILL')
    expect(await exited(hv)).toBe('SIGKILL')
    expect(addon.__test.killQemuChildrenOf(process.pid, script)).toEqual([hvScript.pid])
    expect(await exited(hvScript)).toBe('SIGKILL')
    for (const d of decoys) expect(fq.alive(d.pid!)).toBe(true)
  })

  it('kills nothing for a thread that has no such children', () => {
    expect(addon.__test.killQemuChildrenOf(process.pid, '')).toEqual([])
    expect(addon.__test.killQemuChildrenOf(0, '')).toEqual([])
  })
})

describe.skipIf(missing)(`kill_appliance during a launch${missing ? ` (skipped: ${missing})` : ''}`, () => {
  it("kills this handle's qemu and leaves another handle's alone", async () => {
    const fake = fq.makeFakeHypervisor(tempDir('vdib-kill.'))
    const a = new addon.GuestfsHandle(() => undefined, { environment: false })
    const b = new addon.GuestfsHandle(() => undefined, { environment: false })
    const launchA = fq.startStuckLaunch(a, fake).then(
      () => 'launched',
      (e: unknown) => e,
    )
    const qa = await fq.until(() => fq.fakeQemuChildren(fake.qemu)[0], 60_000, "a's qemu")
    const launchB = fq.startStuckLaunch(b, fake).then(
      () => 'launched',
      (e: unknown) => e,
    )
    const qb = await fq.until(() => fq.fakeQemuChildren(fake.qemu).find((q) => q.pid !== qa.pid), 60_000, "b's qemu")
    expect(qb.tid).not.toBe(qa.tid) // each handle forks qemu from its own worker thread

    expect(a.kill_appliance()).toBe(true)
    expect(await launchA).toMatchObject({ op: 'launch' })
    expect(fq.alive(qb.pid)).toBe(true)
    expect(fq.fakeQemuChildren(fake.qemu).map((q) => q.pid)).toEqual([qb.pid])

    expect(b.kill_appliance()).toBe(true)
    expect(await launchB).toMatchObject({ op: 'launch' })
    await Promise.all([a.close(), b.close()])
    expect(fq.fakeQemuChildren(fake.qemu)).toEqual([])
    expect(fq.alive(qa.pid) || fq.alive(qb.pid)).toBe(false)
  })

  it('kills nothing once the launch failed and the handle is closed', async () => {
    const fake = fq.makeFakeHypervisor(tempDir('vdib-kill.'))
    const h = new addon.GuestfsHandle(() => undefined, { environment: false })
    const launch = fq.startStuckLaunch(h, fake).catch((e: unknown) => e)
    await fq.until(() => fq.fakeQemuChildren(fake.qemu)[0], 60_000, 'the qemu')
    expect(h.kill_appliance()).toBe(true)
    await launch
    expect(h.kill_appliance()).toBe(false)
    await h.close()
    expect(h.kill_appliance()).toBe(false)
  })
})
