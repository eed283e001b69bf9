// The native calls src/ declares (NativeCalls in src/guestfs/native.ts) exist in the built addon.
// tsc checks that the table below names each declared call exactly once.
import { describe, expect, it } from 'vitest'

import { loadAddon, type NativeCallName } from '../../src/guestfs/native.js'

const declared = Object.keys({
  set_memsize: 0,
  get_memsize: 0,
  set_smp: 0,
  get_smp: 0,
  set_network: 0,
  get_network: 0,
  set_append: 0,
  get_append: 0,
  set_verbose: 0,
  set_trace: 0,
  set_backend_settings: 0,
  get_backend_settings: 0,
  set_path: 0,
  get_path: 0,
  set_cachedir: 0,
  get_tmpdir: 0,
  set_hv: 0,
  get_hv: 0,
  get_pgroup: 0,
  set_identifier: 0,
  get_identifier: 0,
  set_program: 0,
  get_state: 0,
  version: 0,
  add_drive: 0,
  add_drive_scratch: 0,
  disk_create: 0,
  launch: 0,
  shutdown: 0,
  get_pid: 0,
  feature_available: 0,
  list_devices: 0,
  list_partitions: 0,
  list_filesystems: 0,
  vfs_type: 0,
  vfs_label: 0,
  vfs_uuid: 0,
  part_init: 0,
  part_add: 0,
  part_list: 0,
  part_set_bootable: 0,
  part_set_name: 0,
  part_set_mbr_id: 0,
  part_get_mbr_id: 0,
  part_set_gpt_type: 0,
  part_get_gpt_type: 0,
  part_get_parttype: 0,
  pvcreate: 0,
  vgcreate: 0,
  lvcreate: 0,
  lvcreate_free: 0,
  vg_activate_all: 0,
  lvs: 0,
  mkfs: 0,
  mount: 0,
  mount_ro: 0,
  umount: 0,
  umount_all: 0,
  mount_local: 0,
  mount_local_run: 0,
  mkdir: 0,
  mkdir_p: 0,
  ls: 0,
  exists: 0,
  is_dir: 0,
  is_file: 0,
  statns: 0,
  read_file: 0,
  cat: 0,
  write: 0,
  write_append: 0,
  ln_sf: 0,
  chmod: 0,
  fallocate64: 0,
  checksum: 0,
  sh: 0,
  sh_lines: 0,
  command: 0,
  debug: 0,
  tar_in: 0,
  tar_out: 0,
  upload: 0,
  download: 0,
  mksquashfs: 0,
} satisfies Record<NativeCallName, 0>)

describe('declared native calls', () => {
  it('are all exported by the addon', () => {
    const { calls } = loadAddon().addon
    expect(declared.filter((name) => !calls.includes(name))).toEqual([])
  })

  it('are methods of a native handle', async () => {
    const h = new (loadAddon().addon.GuestfsHandle)(() => undefined, { environment: false })
    try {
      for (const name of declared) expect(typeof (h as unknown as Record<string, unknown>)[name], name).toBe('function')
    } finally {
      await h.close()
    }
  })
})
