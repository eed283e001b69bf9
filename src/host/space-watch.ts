// Watches the host file systems a running appliance writes to. qemu stops the guest when its
// disk file cannot grow (ENOSPC), and the libguestfs call in flight would then wait forever;
// when one of them is (nearly) full, `onFull` is called once so the build can stop with a message.
import { statfs } from 'node:fs/promises'

const LOW_BYTES = 4 * 1024 * 1024

export interface SpaceWatch {
  stop(): void
}

export function watchHostSpace(
  dirs: readonly string[],
  onFull: (dir: string) => void,
  { intervalMs = 1000, lowBytes = LOW_BYTES }: { intervalMs?: number; lowBytes?: number } = {},
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
