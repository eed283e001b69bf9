// Script order must be exactly `LANG=C sort -n`, checked against GNU sort itself.
import { spawnSync } from 'node:child_process'

import fc from 'fast-check'
import { describe, expect, it } from 'vitest'

import {
  compareRunParts,
  ENV_FILE_NAME,
  SCRIPT_NAME,
  sortEnvFiles,
  sortRunParts,
} from '../../../src/elements/run-order.js'

const gnuSortN = (names: string[]): string[] => {
  const r = spawnSync('sort', ['-n'], {
    input: names.join('\n') + '\n',
    env: { LANG: 'C', LC_ALL: 'C' },
    encoding: 'utf8',
  })
  return r.stdout.split('\n').filter((l, i, a) => i < a.length - 1 || l !== '')
}

describe('run order (sort -n)', () => {
  it('runs names without a number first, then by number, ties byte-wise', () => {
    const names = ['10-b', '5-a', 'zz-noprefix', '100-late', '05-a', '5-A', 'abc', '0-x', '00-x', '9', '-1-neg']
    expect(sortRunParts(names, (n) => n)).toEqual([
      '-1-neg',
      '0-x',
      '00-x',
      'abc',
      'zz-noprefix',
      '05-a',
      '5-A',
      '5-a',
      '9',
      '10-b',
      '100-late',
    ])
  })

  it('compares numbers of any length without overflow', () => {
    expect(compareRunParts('99999999999999999999999-a', '100000000000000000000000-a')).toBeLessThan(0)
    expect(compareRunParts('-5-x', '-10-x')).toBeGreaterThan(0)
    expect(compareRunParts('-', '0')).toBeLessThan(0) // both 0, then bytes '-' < '0'
  })

  it('matches GNU sort -n on random script names', () => {
    const nameChar = fc.constantFrom(...'0123456789-_aAzZ9'.split(''))
    const name = fc.oneof(
      fc
        .tuple(fc.integer({ min: 0, max: 200 }), fc.string({ unit: nameChar, maxLength: 6 }))
        .map(([n, s]) => `${n}${s}`),
      fc
        .tuple(
          fc.constantFrom('0', '00', '000', '-', ''),
          fc.integer({ min: 0, max: 99 }),
          fc.string({ unit: nameChar, maxLength: 5 }),
        )
        .map(([p, n, s]) => `${p}${n}${s}`),
      fc.string({ unit: nameChar, minLength: 1, maxLength: 8 }),
    )
    fc.assert(
      fc.property(
        fc.uniqueArray(
          name.filter((n) => SCRIPT_NAME.test(n)),
          { minLength: 1, maxLength: 40 },
        ),
        (names) => {
          expect(sortRunParts(names, (n) => n)).toEqual(gnuSortN(names))
        },
      ),
      { numRuns: 300 },
    )
  })

  it('sorts environment.d files byte-wise (the numeric sort sees only full paths)', () => {
    expect(sortEnvFiles(['5-a.bash', '10-b.bash', 'noprefix.sh', '10-a'], (n) => n)).toEqual([
      '10-a',
      '10-b.bash',
      '5-a.bash',
      'noprefix.sh',
    ])
    // What dib-run-parts actually does: sort -n on absolute paths.
    const paths = ['5-a.bash', '10-b.bash', 'noprefix.sh', '10-a'].map((n) => `/tmp/hooks/environment.d/${n}`)
    expect(gnuSortN(paths).map((p) => p.split('/').pop())).toEqual(['10-a', '10-b.bash', '5-a.bash', 'noprefix.sh'])
  })

  it('knows which names are scripts and which are environment files', () => {
    expect(SCRIPT_NAME.test('10-foo')).toBe(true)
    expect(SCRIPT_NAME.test('10-foo.sh')).toBe(false)
    expect(SCRIPT_NAME.test('a b')).toBe(false)
    expect(ENV_FILE_NAME.test('10-foo.bash')).toBe(true)
    expect(ENV_FILE_NAME.test('10 foo')).toBe(false)
  })
})
