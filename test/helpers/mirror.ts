// The Debian mirror this machine's apt uses (the appliance reaches the same one): the slow
// tests' real Debian builds fetch from it.
import { execFileSync } from 'node:child_process'

export function hostMirror(): string {
  try {
    const sources = execFileSync(
      'sh',
      ['-c', 'cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null'],
      { encoding: 'utf8' },
    )
    const m = /(https?:\/\/[^\s]+\/debian)\b(?!-)/.exec(sources)
    if (m) return m[1]!
  } catch {
    // fall through
  }
  return 'http://deb.debian.org/debian'
}

/** The --envvar list of the slow tests' Debian builds: bookworm from this machine's mirror. */
export function debianEnvvars(): { name: string; value: string }[] {
  const mirror = hostMirror()
  return [
    { name: 'DIB_RELEASE', value: 'bookworm' },
    { name: 'DIB_DISTRIBUTION_MIRROR', value: mirror },
    { name: 'DIB_DEBIAN_SECURITY_MIRROR', value: `${mirror}-security` },
    { name: 'DIB_DEBIAN_SECURITY_SUBPATH', value: '-security' },
  ]
}
