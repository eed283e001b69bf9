// The fake hypervisor (test/fixtures/scripts/fake-qemu.cjs, shared with the child scripts that
// must stay CommonJS), typed once for the TypeScript tests.
import { createRequire } from 'node:module'

import type { NativeHandle } from '../../src/guestfs/native.js'

export interface FakeHypervisor {
  hv: string
  path: string
  cachedir: string
  qemu: string
}

export interface FakeQemu {
  /** Why the fake cannot run here (no qemu, no mke2fs), or undefined. */
  fakeHypervisorMissing(): string | undefined
  makeFakeHypervisor(dir: string): FakeHypervisor
  /** A launch on the fake that blocks in a sleeping "qemu-system-x86_64" until killed. */
  startStuckLaunch(h: NativeHandle, fake: FakeHypervisor): Promise<void>
  fakeQemuChildren(qemu: string): { tid: number; pid: number }[]
  until<T>(cond: () => T | undefined, ms: number, what: string): Promise<T>
  alive(pid: number): boolean
}

const require = createRequire(import.meta.url)
export const fakeQemu = require('../fixtures/scripts/fake-qemu.cjs') as FakeQemu
