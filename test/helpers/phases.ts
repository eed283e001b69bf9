// diskimage-builder's phase order (developing_elements.rst), written out independently of
// src/phases/registry.ts so that tests check the code against it rather than against itself.
export const DIB_PHASE_ORDER = [
  'root.d',
  'extra-data.d',
  'pre-install.d',
  'install.d',
  'post-install.d',
  'post-root.d',
  'block-device.d',
  'pre-finalise.d',
  'finalise.d',
  'cleanup.d',
] as const
