// The default --arch: the host CPU in dpkg style, mapped as the original virt-dib does.

export function hostArch(nodeArch: string = process.arch): string {
  switch (nodeArch) {
    case 'x64':
      return 'amd64'
    case 'ia32':
      return 'i386'
    case 'arm':
      return 'armhf'
    // compat: the original passes other host_cpu names through (aarch64, ppc64le, s390x).
    case 'arm64':
      return 'aarch64'
    case 'ppc64':
      return process.platform === 'linux' ? 'ppc64le' : 'ppc64'
    default:
      return nodeArch
  }
}
