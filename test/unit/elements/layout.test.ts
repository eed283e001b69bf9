// The aux tree's one table: the guest paths element scripts and the runners rely on, written out
// literally, and the host paths from the same entries.
import { describe, expect, it } from 'vitest'

import * as L from '../../../src/elements/layout.js'

const T = L.AUX_TREE

describe('aux layout', () => {
  it('gives the guest paths as they have always been', () => {
    expect({
      AUX: L.AUX,
      HOOKS: L.HOOKS,
      LIB: L.LIB,
      RUNNERS: L.RUNNERS,
      FAKE_BIN: L.FAKE_BIN,
      PERM: L.PERM,
      PERM_HOME: L.PERM_HOME,
      PERM_IMAGE_CACHE: L.PERM_IMAGE_CACHE,
      PERM_LOGS: L.PERM_LOGS,
      OUT: L.OUT,
      BLOCKDEV: L.BLOCKDEV,
      BLOCKDEV_PARAMS: L.BLOCKDEV_PARAMS,
      BLOCK_DEVICE_ENV: L.BLOCK_DEVICE_ENV,
      outDir: L.outDir('img'),
      IN_TARGET_D: L.IN_TARGET_D,
      IN_TARGET_D_TARGET: L.IN_TARGET_D_TARGET,
      SYSROOT: L.SYSROOT,
    }).toEqual({
      AUX: '/tmp/in_target.aux',
      HOOKS: '/tmp/in_target.aux/hooks',
      LIB: '/tmp/in_target.aux/lib',
      RUNNERS: '/tmp/in_target.aux/run',
      FAKE_BIN: '/tmp/in_target.aux/fake-bin',
      PERM: '/tmp/in_target.aux/perm',
      PERM_HOME: '/tmp/in_target.aux/perm/home',
      PERM_IMAGE_CACHE: '/tmp/in_target.aux/perm/home/.cache/image-create',
      PERM_LOGS: '/tmp/in_target.aux/perm/logs',
      OUT: '/tmp/in_target.aux/out',
      BLOCKDEV: '/tmp/in_target.aux/blockdev',
      BLOCKDEV_PARAMS: '/tmp/in_target.aux/blockdev/params.yaml',
      BLOCK_DEVICE_ENV: '/tmp/in_target.aux/run/block-device.env',
      outDir: '/tmp/in_target.aux/out/img.d',
      IN_TARGET_D: '/tmp/in_target.d',
      IN_TARGET_D_TARGET: 'in_target.aux/hooks',
      SYSROOT: '/sysroot',
    })
    expect(L.guest(T.blockdevConfig)).toBe('/tmp/in_target.aux/blockdev/config.yaml')
    expect(L.guest(T.environmentD)).toBe('/tmp/in_target.aux/hooks/environment.d')
    expect(L.guest(L.logPath('x.log'))).toBe('/tmp/in_target.aux/perm/logs/x.log')
  })

  it('derives the host path under the aux directory from the same entry', () => {
    for (const rel of Object.values(T)) {
      expect(L.onHost('/ws/aux', rel)).toBe(`/ws/aux/${rel}`)
      expect(L.guest(rel)).toBe(`${L.AUX}/${rel}`)
    }
    expect(L.onHost('/ws/aux', L.outDirPath('img'))).toBe('/ws/aux/out/img.d')
  })

  it('shows a guest path as each place sees it', () => {
    expect(L.seenFrom('chroot', L.HOOKS)).toBe('/tmp/in_target.aux/hooks')
    expect(L.seenFrom('appliance', L.HOOKS)).toBe('/sysroot/tmp/in_target.aux/hooks')
    expect(L.seenFrom('host', L.HOOKS, '/mnt')).toBe('/mnt/tmp/in_target.aux/hooks')
  })

  it('places the control files and the runner: in the aux tree, or in the workspace for the host', () => {
    expect(L.controlFileAt('chroot', 'install.d', '/ws')).toBe('/tmp/in_target.aux/run/install.d.ctl')
    expect(L.controlFileAt('appliance', 'root.d', '/ws')).toBe('/sysroot/tmp/in_target.aux/run/root.d.ctl')
    expect(L.controlFileAt('host', 'extra-data.d', '/ws')).toBe('/ws/extra-data.d.ctl')
    expect(L.runnerAt('chroot', '/ws')).toBe('/tmp/in_target.aux/run/run-phase')
    expect(L.runnerAt('appliance', '/ws')).toBe('/sysroot/tmp/in_target.aux/run/run-phase')
    expect(L.runnerAt('host', '/ws')).toBe('/ws/run-phase.bash')
    expect(L.WORKSPACE).toEqual({
      aux: 'aux',
      runner: 'run-phase.bash',
      fakeBin: 'host-bin',
      imageView: 'extra-data.d',
      auxImage: 'aux.img',
      disk: 'image.raw',
      exportDrive: 'export.raw',
      treeDisk: 'tree.raw',
    })
  })
})
