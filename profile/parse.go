package profile

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"math"
	"reflect"

	"github.com/bramley-mdm/bramley/pki"
	"github.com/micromdm/plist"
)

// maxPlistDepth bounds how deeply a plist Parse reads may nest. Real
// profiles nest fewer than 15 levels; the plist library recurses once per
// level, so a body of nothing but "<array>" would otherwise cost stack in
// proportion to its size.
const maxPlistDepth = 128

// errBinaryPlist refuses binary plists. Profiles are XML, and the binary
// parser of github.com/micromdm/plist trusts its object table: a reference
// cycle overflows the stack, which no recover can catch.
var errBinaryPlist = errors.New("binary plists are not accepted; a profile is an XML plist")

// Parse reads a profile: an XML plist, or a CMS SignedData with the plist
// inside (a signed profile, DER or BER). It does not judge the signature;
// Verify does. It accepts what real profiles contain even where Apple's
// schema says otherwise — a <real> PayloadVersion, PEM text in a root
// payload's <data>, keys the schema does not list — and does not validate.
//
// A payload becomes *Root, *PEM, *PKCS12, *SCEP or *MDM when that struct
// holds every key it has; otherwise it stays *Raw, so that parsing and
// marshalling again loses nothing inside payloads. Top-level keys outside
// TopLevel.yaml are dropped.
func Parse(data []byte) (*Profile, error) {
	content, err := unwrapSigned(data)
	if err != nil {
		return nil, err
	}
	var w wireIn
	if err := unmarshalPlist(content, &w); err != nil {
		return nil, fmt.Errorf("parsing profile: %w", err)
	}
	p := w.Profile
	switch p.PayloadType {
	case TypeConfiguration:
		if w.PayloadContent.service != nil {
			return nil, errors.New("parsing profile: PayloadContent of a Configuration profile is a dictionary, not an array")
		}
		p.PayloadContent = w.PayloadContent.payloads
	case TypeProfileService:
		if w.PayloadContent.service == nil && w.PayloadContent.present {
			return nil, errors.New("parsing profile: PayloadContent of a Profile Service profile is not a dictionary")
		}
		p.Service = w.PayloadContent.service
	default:
		return nil, fmt.Errorf("parsing profile: PayloadType %q is neither %q nor %q", p.PayloadType, TypeConfiguration, TypeProfileService)
	}
	return &p, nil
}

// unwrapSigned returns the plist inside a signed profile, or data itself
// when it already is a plist.
func unwrapSigned(data []byte) ([]byte, error) {
	if looksLikePlist(data) {
		return data, nil
	}
	if bytes.HasPrefix(data, []byte("bplist")) {
		return nil, errBinaryPlist
	}
	p7, err := pki.ParseCMS(data)
	if err != nil {
		return nil, fmt.Errorf("parsing profile: neither an XML plist nor CMS: %w", err)
	}
	if len(p7.Content) == 0 {
		return nil, errors.New("parsing profile: the CMS message carries no content (encrypted, or a detached signature)")
	}
	if !looksLikePlist(p7.Content) {
		if bytes.HasPrefix(p7.Content, []byte("bplist")) {
			return nil, errBinaryPlist
		}
		return nil, errors.New("parsing profile: the signed content is not an XML plist")
	}
	return p7.Content, nil
}

func looksLikePlist(data []byte) bool {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	return bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("<"))
}

// wireIn is a Profile as read: PayloadContent may be either shape.
type wireIn struct {
	Profile
	PayloadContent contentIn
}

type contentIn struct {
	present  bool
	payloads []Payload
	service  *Service
}

// UnmarshalPlist implements plist.Unmarshaler.
func (c *contentIn) UnmarshalPlist(f func(any) error) error {
	c.present = true
	var probe any
	if err := f(&probe); err != nil {
		return err
	}
	switch probe.(type) {
	case []any:
		var slots []payloadSlot
		if err := f(&slots); err != nil {
			return err
		}
		c.payloads = make([]Payload, len(slots))
		for i, s := range slots {
			c.payloads[i] = s.p
		}
		return nil
	case map[string]any:
		var s Service
		if err := f(&s); err != nil {
			return fmt.Errorf("profile service PayloadContent: %w", err)
		}
		c.service = &s
		return nil
	}
	return errors.New("PayloadContent is neither an array nor a dictionary")
}

// payloadSlot reads one payload dictionary into the struct for its type,
// or into a Raw.
type payloadSlot struct{ p Payload }

// UnmarshalPlist implements plist.Unmarshaler.
func (s *payloadSlot) UnmarshalPlist(f func(any) error) error {
	var m map[string]any
	if err := f(&m); err != nil {
		return errors.New("a PayloadContent item is not a dictionary")
	}
	var typed Payload
	switch t, _ := m["PayloadType"].(string); t {
	case TypeRoot, TypePKCS1:
		typed = &Root{}
	case TypePEM:
		typed = &PEM{}
	case TypePKCS12:
		typed = &PKCS12{}
	case TypeSCEP:
		typed = &SCEP{}
	case TypeMDM:
		typed = &MDM{}
	}
	if typed != nil && f(typed) == nil && holdsAll(typed, m) {
		s.p = typed
		return nil
	}
	s.p = newRaw(m)
	return nil
}

// holdsAll reports whether the typed payload writes back everything in m,
// leaving out only keys whose value is the zero value its omitempty drops.
func holdsAll(typed Payload, m map[string]any) bool {
	items, err := wirePayloads([]Payload{typed})
	if err != nil {
		return false
	}
	raw, err := marshalPlist(items[0])
	if err != nil {
		return false
	}
	var back map[string]any
	if err := unmarshalPlist(raw, &back); err != nil {
		return false
	}
	return sameValue(m, back)
}

// sameValue compares a value as read with the same value written back by
// a typed struct: numbers compare by value (a <real> 1 is the integer 1),
// and keys missing from the copy must have held a zero value.
func sameValue(orig, back any) bool {
	if a, ok := number(orig); ok {
		b, ok := number(back)
		return ok && a == b
	}
	switch o := orig.(type) {
	case map[string]any:
		b, ok := back.(map[string]any)
		if !ok {
			return false
		}
		for k, v := range o {
			bv, ok := b[k]
			if !ok {
				if !isZero(v) {
					return false
				}
				continue
			}
			if !sameValue(v, bv) {
				return false
			}
		}
		for k := range b {
			if _, ok := o[k]; !ok {
				return false
			}
		}
		return true
	case []any:
		b, ok := back.([]any)
		if !ok || len(o) != len(b) {
			return false
		}
		for i := range o {
			if !sameValue(o[i], b[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(orig, back)
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	case float64:
		return n, true
	case float32:
		return float64(n), true
	}
	return 0, false
}

func isZero(v any) bool {
	if n, ok := number(v); ok {
		return n == 0
	}
	switch x := v.(type) {
	case string:
		return x == ""
	case bool:
		return !x
	case []byte:
		return len(x) == 0
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}

func newRaw(m map[string]any) *Raw {
	r := &Raw{Keys: make(map[string]any, len(m))}
	strs := map[string]*string{
		"PayloadType":         &r.PayloadType,
		"PayloadIdentifier":   &r.PayloadIdentifier,
		"PayloadUUID":         &r.PayloadUUID,
		"PayloadDisplayName":  &r.PayloadDisplayName,
		"PayloadDescription":  &r.PayloadDescription,
		"PayloadOrganization": &r.PayloadOrganization,
	}
	for k, v := range m {
		if dst, ok := strs[k]; ok {
			if s, ok := v.(string); ok {
				*dst = s
				continue
			}
		}
		if k == "PayloadVersion" {
			if n, ok := number(v); ok && n == math.Trunc(n) && math.Abs(n) <= math.MaxInt32 {
				r.PayloadVersion = Version(n)
				continue
			}
		}
		r.Keys[k] = v
	}
	return r
}

// decodePayloads reads a plist whose top level is an array of payloads:
// the plaintext of EncryptedPayloadContent.
func decodePayloads(data []byte) ([]Payload, error) {
	var slots []payloadSlot
	if err := unmarshalPlist(data, &slots); err != nil {
		return nil, err
	}
	out := make([]Payload, len(slots))
	for i, s := range slots {
		out[i] = s.p
	}
	return out, nil
}

// unmarshalPlist decodes untrusted XML plist bytes into v.
func unmarshalPlist(data []byte, v any) (err error) {
	if bytes.HasPrefix(data, []byte("bplist")) {
		return errBinaryPlist
	}
	if err := checkPlistDepth(data); err != nil {
		return err
	}
	// The plist library type-asserts on values it built and indexes
	// without bounds checks in places; hostile input must become an error.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed plist: %v", r)
		}
	}()
	return plist.Unmarshal(data, v)
}

// checkPlistDepth fails when XML elements nest deeper than maxPlistDepth.
// Syntax errors are left to the real decoder.
func checkPlistDepth(data []byte) error {
	d := xml.NewDecoder(bytes.NewReader(data))
	depth := 0
	for {
		tok, err := d.RawToken()
		if err != nil {
			return nil
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
