package mdm

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"

	"github.com/micromdm/plist"
)

// maxPlistDepth bounds how deeply dictionaries and arrays may nest in a
// plist bramley decodes. Real check-ins, results and commands nest fewer
// than 20 levels; the plist library recurses once per level, so without a
// bound a 1 MB body of "<array>" costs some 64 MB of goroutine stack.
const maxPlistDepth = 256

// depthCheckMin is the body size from which unmarshalPlist checks nesting.
// A smaller body cannot nest deep enough to cost more than a few MB of
// stack, and skipping the extra pass over it keeps check-ins and ordinary
// results about a third cheaper (BenchmarkCheckPlistDepth).
const depthCheckMin = 64 << 10

// errBinaryPlist is returned for a binary plist. Apple's MDM protocol sends
// XML, and the binary parser of github.com/micromdm/plist v0.2.2 trusts the
// object table: a reference cycle recurses until the Go stack overflows and
// a forged count allocates without bound. Both are fatal errors that recover
// cannot catch, so binary input is refused before it reaches that parser.
var errBinaryPlist = errors.New("binary plists are not accepted; send an XML plist")

// unmarshalPlist decodes untrusted XML plist bytes into v. It is the only
// way package mdm reads a plist; see errBinaryPlist and maxPlistDepth for
// what it refuses before the plist library sees the bytes.
func unmarshalPlist(data []byte, v any) (err error) {
	if bytes.HasPrefix(data, []byte("bplist")) {
		return errBinaryPlist
	}
	if len(data) >= depthCheckMin {
		if err := checkPlistDepth(data); err != nil {
			return err
		}
	}
	// The plist library is not hardened against hostile input (its binary
	// parser, refused above, indexes past its tables). Should the XML path
	// panic too, that must become a 400 for this request, not a crash.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed plist: %v", r)
		}
	}()
	return plist.Unmarshal(data, v)
}

// marshalPlist encodes v, turning a panic of the plist library (it panics
// on a nil interface value inside a map, for instance) into an error.
func marshalPlist(v any) (raw []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("cannot encode plist: %v", r)
		}
	}()
	return plist.Marshal(v)
}

// checkPlistDepth scans the XML tokens (cheaply: no namespace or end-tag
// matching, which the real decode still does) and fails when elements nest
// deeper than maxPlistDepth. Syntax errors are left to the real decoder.
func checkPlistDepth(data []byte) error {
	d := xml.NewDecoder(bytes.NewReader(data))
	depth := 0
	for {
		tok, err := d.RawToken()
		if err != nil {
			return nil // io.EOF, or a syntax error the real decode reports
		}
		switch tok.(type) {
		case xml.StartElement:
			depth++
			if depth > maxPlistDepth {
				return fmt.Errorf("plist nests deeper than %d levels", maxPlistDepth)
			}
		case xml.EndElement:
			depth--
		}
	}
}
