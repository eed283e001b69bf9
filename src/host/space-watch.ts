// Watches the host file systems a running appliance writes to. qemu stops the guest when its
// disk file cannot grow (ENOSPC), and the libguestfs call in flight would then wait forever;
// when one of them is (nearly) full, `onFull` is called once so the build can stop with a message.
// The build watches the output directory too, for every format: outputs are staged there while
// the guest still streams them.
import { statfs as fsStatfs } from 'node:fs/promises'

const LOW_BYTES = 4 * 1024 * 1024

export interface SpaceWatch {
  stop(): void
}

export interface SpaceWatchOptions {
  intervalMs?: number
  /** Below this many bytes available a file system counts as full. */
  lowBytes?: number
  /** For tests: the statfs to use. */
  statfs?: (dir: string) => Promise<{ bavail: number; bsize: number }>
}

export function watchHostSpace(
  dirs: readonly string[],
  onFull: (dir: string) => void,
  { intervalMs = 1000, lowBytes = LOW_BYTES, statfs = fsStatfs }: SpaceWatchOptions = {},
): SpaceWatch {
  let done = false
  const check = async () => {
    for (const dir of new Set(dirs)) {
      try {
        const s = await statfs(dir)
        if (!done && s.bavail * s.bsize < lowBytes) {
          done = true
          clearInterval(timer)
          onFull(dir)
          return
        }
      } catch {
        // a directory that went away is not our concern here
      }
    }
  }
  const timer = setInterval(() => void check(), intervalMs)
  timer.unref()
  return {
    stop() {
      done = true
      clearInterval(timer)
    },
  }
}
