// The guest's side of a phase snapshot: the image's file systems and the aux drive made
// consistent on their disks before the host reads the raw files, and released after. The live
// drives are raw files, so once the guest's writes have completed they are in the host's page
// cache (qemu keeps no write cache of its own for raw, whatever the drive's cache mode): a sync
// and a freeze are enough. fstrim first gives freed blocks back as holes, so files a phase
// deleted (apt's downloads) are not carried in its snapshot.
import * as L from '../elements/layout.js'
import { shellQuote } from '../util/shell-quote.js'

/**
 * Sets `mounts` to the mounts under the image root that hold build state, deepest first (the helper
 * drive is not snapshotted). Shell builtins only: each program started costs tens of milliseconds
 * in an emulated guest, and this runs after every phase.
 */
const LIST_MOUNTS = [
  `root=${shellQuote(L.SYSROOT)} perm=${shellQuote(L.inAppliance(L.PERM))} mounts= seen=' '`,
  'while read -r dev mnt rest; do',
  '  case $dev in /dev/*) ;; *) continue ;; esac',
  '  case $mnt in "$root" | "$root"/*) ;; *) continue ;; esac',
  '  case $mnt in "$perm" | "$perm"/*) continue ;; esac',
  // One mount per device: a second freeze of the same file system (a bind mount, a btrfs subvolume) fails.
  '  case $seen in *" $dev "*) continue ;; esac',
  '  seen="$seen$dev "',
  // /proc/mounts lists a mount after the one it is under.
  '  mounts="$mnt $mounts"',
  'done < /proc/mounts',
].join('\n')

/** Sync, trim and freeze every file system the snapshot covers; prints each, one per line (see the marks below). */
export function freezeScript(): string {
  return [
    LIST_MOUNTS,
    // Blocks freed since the last journal commit are trimmable only once committed.
    'sync',
    // A file system without discard support (or a drive without it) keeps its freed blocks: harmless.
    'for m in $mounts; do fstrim "$m" >/dev/null 2>&1 || true; done',
    // The host thaws what is printed; a freeze syncs its file system first. A file system that cannot
    // freeze (vfat has no freeze; one frozen already through another mount) is synced instead (~):
    // nothing writes between phases. ! means neither worked.
    // Its messages go to /dev/null: the host reads only the marked lines (sh's stderr is merged).
    'for m in $mounts; do if fsfreeze -f "$m" 2>/dev/null; then echo "$m"; elif sync -f "$m" 2>/dev/null; then echo "~$m"; else echo "!$m"; fi; done',
  ].join('\n')
}

/** The mounts freezeScript printed, by what it did; any other output (a stray message) is ignored. */
export function frozenMounts(output: string): { frozen: string[]; synced: string[]; failed: string[] } {
  const lines = output.split('\n')
  const marked = (mark: string) => lines.filter((l) => l.startsWith(`${mark}/`)).map((l) => l.slice(mark.length))
  return { frozen: marked(''), synced: marked('~'), failed: marked('!') }
}

/** Thaws what freezeScript froze (every one, even if one fails). */
export function thawScript(mounts: readonly string[]): string {
  return ['rc=0', ...mounts.map((m) => `fsfreeze -u ${shellQuote(m)} || rc=1`), 'exit $rc'].join('\n')
}
