import { describe, expect, it } from 'vitest'

import { applianceAppend, willUseTcg } from '../../../src/host/kvm.js'

const tcg = { LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' }

describe('appliance kernel arguments', () => {
  it('forced TCG is TCG whatever /dev/kvm says', () => {
    expect(willUseTcg(tcg)).toBe(true)
    expect(willUseTcg({ LIBGUESTFS_BACKEND_SETTINGS: 'gdb:force_tcg' })).toBe(true)
  })

  it('turns off address randomisation in the appliance under TCG', () => {
    expect(applianceAppend(tcg)).toBe('norandmaps')
  })

  it('keeps the user LIBGUESTFS_APPEND, which setting the append string would replace', () => {
    expect(applianceAppend({ ...tcg, LIBGUESTFS_APPEND: ' console=ttyS1 ' })).toBe('console=ttyS1 norandmaps')
  })

  it('VIRT_DIB_GUEST_ASLR=1 keeps randomisation', () => {
    expect(applianceAppend({ ...tcg, VIRT_DIB_GUEST_ASLR: '1' })).toBeUndefined()
    expect(applianceAppend({ ...tcg, VIRT_DIB_GUEST_ASLR: '1', LIBGUESTFS_APPEND: 'x=1' })).toBe('x=1')
  })
})
