package pki

import (
	"errors"
	"fmt"

	"github.com/smallstep/pkcs7"
)

// maxBERDepth bounds how deeply CMS from outside may nest: the BER reader
// of smallstep/pkcs7 recurses once per constructed value, and a signed
// profile with its certificates nests about 15 levels.
const maxBERDepth = 64

// ParseCMS parses CMS (PKCS #7) from outside — devices, SCEP clients,
// uploaded profiles — through smallstep/pkcs7 after checking its BER
// structure, and turns a panic of the library on malformed input into an
// error. Never hand outside bytes to pkcs7.Parse directly: see checkBER.
func ParseCMS(data []byte) (p7 *pkcs7.PKCS7, err error) {
	if err := CheckBER(data); err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed CMS: %v", r)
		}
	}()
	return pkcs7.Parse(data)
}

// CheckBER reports whether data is BER that smallstep/pkcs7 reads safely
// (see checkBER). Call it on CMS that another library will parse, such as a
// SCEP envelope nested inside a message.
func CheckBER(data []byte) error { return checkBER(data, maxBERDepth) }

// checkBER walks BER tag-length-value headers without recursion and
// refuses input whose structure the BER reader of smallstep/pkcs7 would
// mishandle: values nested deeper than max, and values running past the
// end of the value that encloses them. That reader resumes after a
// constructed value at the end its length declares, even when its
// contents ran further, so overlapping values make it read the same bytes
// again and again — exponential time for a few kilobytes (found by
// FuzzParse). With every value inside its parent, it reads each byte once.
func checkBER(data []byte, max int) error {
	errMalformed := errors.New("malformed BER")
	// limits[i] is where the i-th open constructed value must end: its
	// own end, or its nearest definite ancestor's for an indefinite one.
	// indefinite[i] says it ends with end-of-contents instead.
	var limits []int
	var indefinite []bool
	pos := 0
	for {
		for len(limits) > 0 && !indefinite[len(limits)-1] && pos >= limits[len(limits)-1] {
			if pos > limits[len(limits)-1] {
				return errMalformed
			}
			limits, indefinite = limits[:len(limits)-1], indefinite[:len(indefinite)-1]
		}
		if len(limits) == 0 && pos > 0 {
			return nil // the outermost value is complete; the parser judges what follows
		}
		if pos >= len(data) {
			if len(limits) > 0 {
				return errMalformed
			}
			return nil
		}
		limit := len(data)
		if len(limits) > 0 {
			limit = limits[len(limits)-1]
		}
		if len(limits) > 0 && indefinite[len(limits)-1] && pos+1 < len(data) && data[pos] == 0 && data[pos+1] == 0 {
			limits, indefinite = limits[:len(limits)-1], indefinite[:len(indefinite)-1]
			pos += 2 // end-of-contents
			continue
		}
		tag := data[pos]
		pos++
		if tag&0x1f == 0x1f { // high tag number: base-128 digits
			for pos < len(data) && data[pos]&0x80 != 0 {
				pos++
			}
			pos++
		}
		if pos >= len(data) {
			return errMalformed
		}
		l := int(data[pos])
		pos++
		length, isIndefinite := 0, false
		switch {
		case l < 0x80:
			length = l
		case l == 0x80:
			isIndefinite = true
		default:
			n := l & 0x7f
			if n > 4 || pos+n > len(data) {
				return errMalformed
			}
			for _, b := range data[pos : pos+n] {
				length = length<<8 | int(b)
			}
			pos += n
		}
		constructed := tag&0x20 != 0
		end := pos + length
		switch {
		case isIndefinite && !constructed:
			return errMalformed
		case isIndefinite:
			limits, indefinite = append(limits, limit), append(indefinite, true)
		case end > limit || end > len(data):
			return errMalformed
		case constructed:
			limits, indefinite = append(limits, end), append(indefinite, false)
		default:
			pos = end
		}
		if len(limits) > max {
			return fmt.Errorf("CMS nests deeper than %d levels", max)
		}
	}
}
