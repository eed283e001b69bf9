// What an element name may be. Names become directory names on the host and in the guest,
// so path separators and dot-dot are refused outright.
import { ElementError } from '../errors.js'

export function checkElementName(name: string, context: string): void {
  if (name === '' || name.includes('/') || name === '.' || name === '..' || name.includes('\0') || /\s/.test(name)) {
    throw new ElementError(`invalid element name ‘${name}’ in ${context}`)
  }
}
