// The runner protocol's one line parser: every kind, the token anywhere in the line, noise ignored.
import { describe, expect, it } from 'vitest'

import { parseRunnerLine } from '../../../src/phases/runner/protocol.js'

const p = (line: string) => parseRunnerLine(line, 'TOK')

describe('parseRunnerLine', () => {
  it('reads the live lines', () => {
    expect(p('TOK|L|start|10-a')).toEqual({ channel: 'live', kind: 'start', script: '10-a' })
    expect(p('TOK|L|o|a|b  c')).toEqual({ channel: 'live', kind: 'output', text: 'a|b  c' })
    expect(p('TOK|L|o|')).toEqual({ channel: 'live', kind: 'output', text: '' })
    expect(p('TOK|L|end|10-a|3|1500')).toEqual({ channel: 'live', kind: 'end', script: '10-a', status: 3, ms: 1500 })
    expect(p('TOK|L|list|a b')).toEqual({ channel: 'live', kind: 'list', scripts: ['a', 'b'] })
    expect(p('TOK|L|list|')).toEqual({ channel: 'live', kind: 'list', scripts: [] })
  })

  it('reads the summary lines', () => {
    expect(p('TOK|S|list|zz 05-a')).toEqual({ channel: 'summary', kind: 'list', scripts: ['zz', '05-a'] })
    expect(p('TOK|S|list|')).toEqual({ channel: 'summary', kind: 'list', scripts: [] })
    expect(p('TOK|S|env|10-x.bash')).toEqual({ channel: 'summary', kind: 'env', file: '10-x.bash' })
    expect(p('TOK|S|end|a|0|12')).toEqual({ channel: 'summary', kind: 'end', script: 'a', status: 0, ms: 12 })
    expect(p('TOK|S|tail|x|y')).toEqual({ channel: 'summary', kind: 'tail', text: 'x|y' })
    expect(p('TOK|S|envfail|10-bad.bash|1')).toEqual({
      channel: 'summary',
      kind: 'envfail',
      file: '10-bad.bash',
      status: 1,
    })
    expect(p("TOK|S|var|IMAGE_BLOCK_DEVICE|'/dev/a|b'")).toEqual({
      channel: 'summary',
      kind: 'var',
      name: 'IMAGE_BLOCK_DEVICE',
      value: "'/dev/a|b'",
    })
    expect(p('TOK|S|done|3')).toEqual({ channel: 'summary', kind: 'done', status: 3 })
  })

  it('finds the token after console noise and drops a trailing CR', () => {
    expect(p('[  1.2] kernel: TOK|L|o|text\r')).toEqual({ channel: 'live', kind: 'output', text: 'text' })
    expect(p('\rTOK|S|done|0\r')).toEqual({ channel: 'summary', kind: 'done', status: 0 })
  })

  it('has no record for lines without the token, and says which ones it does not know', () => {
    expect(p('kernel: something')).toBeUndefined()
    expect(p('OTHER|S|done|0')).toBeUndefined()
    expect(p('TOK|X|done|0')).toBeUndefined()
    expect(p('TOK|L|what|x')).toEqual({ channel: 'live', kind: 'unknown', body: 'what|x' })
    // a live kind always has its bar
    expect(p('TOK|L|o')).toEqual({ channel: 'live', kind: 'unknown', body: 'o' })
    expect(p('TOK|S|what')).toEqual({ channel: 'summary', kind: 'unknown', body: 'what' })
  })

  it('takes the first marker of a line (a later one is the text of the first)', () => {
    expect(p('TOK|S|tail|TOK|L|o|x')).toEqual({ channel: 'summary', kind: 'tail', text: 'TOK|L|o|x' })
    expect(p('TOK|L|o|TOK|S|done|0')).toEqual({ channel: 'live', kind: 'output', text: 'TOK|S|done|0' })
  })
})
