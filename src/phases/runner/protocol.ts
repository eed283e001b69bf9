// The runner's protocol (assets/run-phase.bash), parsed in one place: every line virt-dib reads
// starts with the build's random token, anywhere in the line (console noise may precede it):
//   TOKEN|L|start|NAME        live: a script starts
//   TOKEN|L|o|TEXT            live: one line of its output (stdout and stderr)
//   TOKEN|L|end|NAME|STATUS|MS
//   TOKEN|S|list|NAME NAME…   summary: the scripts of the phase, in order
//   TOKEN|S|env|FILE          summary: an environment file sourced
//   TOKEN|S|end|NAME|STATUS|MS
//   TOKEN|S|tail|TEXT         summary: last output lines of a failed script
//   TOKEN|S|var|NAME|VALUE    summary: IMAGE_BLOCK_DEVICE= lines seen in block-device.d
//   TOKEN|S|envfail|FILE|STATUS
//   TOKEN|S|done|STATUS
// Live lines go to the console (the serial line in the appliance, stdout on the host) as scripts
// run; summary lines go to stdout, read when the call returns.

/** `live`: streamed as it happens; `summary`: printed by the runner, read at the end. */
export type RunnerChannel = 'live' | 'summary'

/** One protocol line. `unknown` is a line with the token but a kind this parser does not know. */
export type RunnerRecord =
  | { channel: 'live'; kind: 'start'; script: string }
  | { channel: 'live'; kind: 'output'; text: string }
  | { channel: RunnerChannel; kind: 'end'; script: string; status: number; ms: number }
  | { channel: RunnerChannel; kind: 'list'; scripts: string[] }
  | { channel: 'summary'; kind: 'env'; file: string }
  | { channel: 'summary'; kind: 'tail'; text: string }
  | { channel: 'summary'; kind: 'var'; name: string; value: string }
  | { channel: 'summary'; kind: 'envfail'; file: string; status: number }
  | { channel: 'summary'; kind: 'done'; status: number }
  | { channel: RunnerChannel; kind: 'unknown'; body: string }

/** The record of one line of runner output (without its line end), or undefined if it has none. */
export function parseRunnerLine(line: string, token: string): RunnerRecord | undefined {
  // The first marker in the line counts (a marker inside a script's text is data).
  const live = line.indexOf(`${token}|L|`)
  const summary = line.indexOf(`${token}|S|`)
  if (live === -1 && summary === -1) return undefined
  const isLive = live !== -1 && (summary === -1 || live < summary)
  const at = (isLive ? live : summary) + token.length + 3
  const body = line.slice(at).replace(/\r$/, '')
  return isLive ? liveRecord(body) : summaryRecord(body)
}

/** `KIND|REST`; rest is undefined without the bar. */
function split(body: string): { kind: string; rest: string | undefined } {
  const bar = body.indexOf('|')
  return bar === -1 ? { kind: body, rest: undefined } : { kind: body.slice(0, bar), rest: body.slice(bar + 1) }
}

/** `NAME NAME…`, or no scripts. */
function scriptList(rest: string): string[] {
  return rest === '' ? [] : rest.split(' ')
}

function liveRecord(body: string): RunnerRecord {
  const { kind, rest } = split(body)
  // A live kind always has its bar (the runner prints `KIND|…`).
  if (rest === undefined) return { channel: 'live', kind: 'unknown', body }
  switch (kind) {
    case 'o':
      return { channel: 'live', kind: 'output', text: rest }
    case 'start':
      return { channel: 'live', kind: 'start', script: rest }
    case 'end': {
      const [script = '', status = '0', ms = '0'] = rest.split('|')
      return { channel: 'live', kind: 'end', script, status: Number(status), ms: Number(ms) }
    }
    case 'list':
      return { channel: 'live', kind: 'list', scripts: scriptList(rest) }
  }
  return { channel: 'live', kind: 'unknown', body }
}

function summaryRecord(body: string): RunnerRecord {
  const { kind, rest = '' } = split(body)
  const f = rest.split('|')
  switch (kind) {
    case 'list':
      return { channel: 'summary', kind: 'list', scripts: scriptList(rest) }
    case 'env':
      return { channel: 'summary', kind: 'env', file: rest }
    case 'end':
      return { channel: 'summary', kind: 'end', script: f[0]!, status: Number(f[1]), ms: Number(f[2]) }
    case 'tail':
      return { channel: 'summary', kind: 'tail', text: rest }
    case 'envfail':
      return { channel: 'summary', kind: 'envfail', file: f[0]!, status: Number(f[1]) }
    case 'var':
      return { channel: 'summary', kind: 'var', name: f[0]!, value: f.slice(1).join('|') }
    case 'done':
      return { channel: 'summary', kind: 'done', status: Number(rest) }
  }
  return { channel: 'summary', kind: 'unknown', body }
}
