// The signal policy of the CLI: first signal aborts (cleanup as usual), second stops at once
// (appliances killed, cleanup hurried) and exits by a hard deadline if the build still hangs.
import { describe, expect, it, vi } from 'vitest'

import { createInterrupts } from '../../../src/cli/interrupt.js'
import { BuildAbortedError } from '../../../src/errors.js'

function setup() {
  const controller = new AbortController()
  const stopNow = vi.fn()
  const exit = vi.fn()
  const notify = vi.fn()
  const i = createInterrupts({ controller, stopNow, exit, notify, hardExitMs: 5000 })
  return { controller, stopNow, exit, notify, i }
}

describe('CLI interrupts', () => {
  it('the first SIGINT aborts the build with exit code 130 and nothing else', () => {
    const { controller, stopNow, exit, notify, i } = setup()
    i.onSignal('SIGINT')
    expect(notify).toHaveBeenCalledWith('SIGINT')
    expect(controller.signal.aborted).toBe(true)
    expect(controller.signal.reason).toBeInstanceOf(BuildAbortedError)
    expect((controller.signal.reason as BuildAbortedError).exitCode).toBe(130)
    expect((controller.signal.reason as BuildAbortedError).message).toBe('exiting on signal SIGINT')
    expect(stopNow).not.toHaveBeenCalled()
    expect(i.forced).toBe(false)
    expect(exit).not.toHaveBeenCalled()
  })

  it('a second signal stops everything at once and exits at the hard deadline if the build still hangs', () => {
    vi.useFakeTimers()
    try {
      const { controller, stopNow, exit, notify, i } = setup()
      i.onSignal('SIGTERM')
      i.onSignal('SIGINT')
      expect(stopNow).toHaveBeenCalledTimes(1)
      expect(notify).toHaveBeenCalledTimes(1)
      expect(i.forced).toBe(true)
      i.onSignal('SIGINT') // a third changes nothing
      expect(stopNow).toHaveBeenCalledTimes(1)
      vi.advanceTimersByTime(4999)
      expect(exit).not.toHaveBeenCalled()
      vi.advanceTimersByTime(1)
      // The reason is the first signal's: exit 143, "exiting on signal SIGTERM".
      expect(exit).toHaveBeenCalledWith(controller.signal.reason)
      expect((exit.mock.calls[0]![0] as BuildAbortedError).exitCode).toBe(143)
    } finally {
      vi.useRealTimers()
    }
  })

  it('no hard exit once the build has ended (dispose)', () => {
    vi.useFakeTimers()
    try {
      const { exit, i } = setup()
      i.onSignal('SIGINT')
      i.onSignal('SIGINT')
      i.dispose()
      vi.advanceTimersByTime(60_000)
      expect(exit).not.toHaveBeenCalled()
    } finally {
      vi.useRealTimers()
    }
  })

  it('a signal after an abort for another reason (a write error) is the "now" one', () => {
    const { controller, stopNow, i } = setup()
    controller.abort(new Error('machine-readable write failed'))
    i.onSignal('SIGINT')
    expect(stopNow).toHaveBeenCalledTimes(1)
  })
})
