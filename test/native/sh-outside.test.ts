// Guestfs.shOutside: the one finished command it hands to guestfsd's `debug sh` (no appliance:
// debug itself is replaced by a recorder).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { shellQuote } from '../../src/util/shell-quote.js'
import { Guestfs } from '../../src/guestfs/index.js'

describe('shOutside', () => {
  let g: Guestfs
  const sent: unknown[][] = []
  beforeAll(async () => {
    g = await Guestfs.create({ environment: false })
    g.debug = (...args: Parameters<Guestfs['debug']>) => {
      sent.push(args)
      return Promise.resolve('out\n')
    }
  })
  afterAll(() => g.close())

  it('passes the script as one argument of debug sh, with the call options', async () => {
    const signal = new AbortController().signal
    expect(await g.shOutside('readlink -f /dev/disk/guestfs/out')).toBe('out\n')
    await g.shOutside('df -Pk /sysroot | tail -n 1', { signal, onAbort: 'kill-appliance' })
    expect(sent.splice(0)).toEqual([
      ['sh', ['readlink -f /dev/disk/guestfs/out'], {}],
      ['sh', ['df -Pk /sysroot | tail -n 1'], { signal, onAbort: 'kill-appliance' }],
    ])
  })

  it('errexit prefixes set -e; bash runs it quoted under bash -c', async () => {
    await g.shOutside('sync; mount -o remount,ro /sysroot', { errexit: true })
    await g.shOutside(`echo 'it''s' "$x"`, { bash: true })
    await g.shOutside('false', { bash: true, errexit: true })
    expect(sent.splice(0).map((a) => (a[1] as string[])[0])).toEqual([
      'set -e; sync; mount -o remount,ro /sysroot',
      `exec bash -c 'echo '\\''it'\\'''\\''s'\\'' "$x"'`,
      `exec bash -c 'set -e; false'`,
    ])
    // The same quoting as the call sites used before (elements/environment.ts).
    const script = `a'b "c" $(d) \\ '`
    await g.shOutside(script, { bash: true })
    expect(sent.splice(0)[0]![1]).toEqual([`exec bash -c ${shellQuote(script)}`])
  })
})
