import { describe, expect, it } from 'vitest'

import { formatSize, parseSize } from '../../../src/util/sizes.js'

describe('--size values', () => {
  it('parses like the original: a mandatory unit b, K, M, G; fractions allowed', () => {
    expect(parseSize('5G')).toBe(5 * 1024 ** 3)
    expect(parseSize('512M')).toBe(512 * 1024 ** 2)
    expect(parseSize('1.5G')).toBe(1.5 * 1024 ** 3)
    expect(parseSize('100b')).toBe(100)
    expect(parseSize('.5K')).toBe(512)
    for (const bad of ['5', 'G', '5g', '5T', '-1G', '1 G', '', '5GB']) expect(parseSize(bad)).toBeUndefined()
  })
  it('formats sizes for messages', () => {
    expect(formatSize(5 * 1024 ** 3)).toBe('5G')
    expect(formatSize(1536 * 1024 ** 2)).toBe('1.5G')
    expect(formatSize(12)).toBe('12b')
  })
})
