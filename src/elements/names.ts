// What an element name may be. Names become directory names on the host and in the guest,
// and words in shell code elements eval, so only plain names pass.
import { ElementError } from '../errors.js'

/**
 * Letters, digits and _ . + - (not first . + -): names are also keys of the array elements
 * `eval` from get_image_element_array, where `$(…)` or a quote would be code.
 */
const ELEMENT_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.+-]*$/

export function checkElementName(name: string, context: string): void {
  if (!ELEMENT_NAME.test(name)) throw new ElementError(`invalid element name ‘${name}’ in ${context}`)
}
