package profile

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Problem is one way a profile departs from Apple's schema.
type Problem struct {
	PayloadType string // of the payload, or of the profile for its own keys
	// Path leads from the profile's top level to the key, for example
	// PayloadContent[1].PayloadContent."Key Type".
	Path    string
	Message string
}

// String gives the problem as "<PayloadType> <Path>: <Message>".
func (p Problem) String() string { return p.PayloadType + " " + p.Path + ": " + p.Message }

// ValidationError lists every Problem Validate found.
type ValidationError struct {
	Problems []Problem
}

// Error lists every problem, so a log line says all that is wrong.
func (e *ValidationError) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		msgs[i] = p.String()
	}
	noun := "problems"
	if len(msgs) == 1 {
		noun = "problem"
	}
	return fmt.Sprintf("profile breaks Apple's schema (%d %s): %s", len(msgs), noun, strings.Join(msgs, "; "))
}

// Validate checks p, as Marshal would write it, against Apple's schema
// (schema_gen.go; for a Profile Service profile, the table in schema.go
// taken from Apple's OTA document): required keys present and not
// empty, every value of the right plist type and within its rangelist or
// format, no keys the schema does not list for the payload types it knows.
// It adds the rules a device enforces that the schema states in prose:
// unique PayloadUUIDs and PayloadIdentifiers, one MDM payload whose
// IdentityCertificateUUID names an identity payload of the same profile,
// consistent AccessRights, and certificate payloads that hold certificates.
// The error is a *ValidationError naming every problem.
func Validate(p *Profile) error {
	raw, err := p.encode()
	if err != nil {
		return err
	}
	return validateEncoded(raw)
}

// validateEncoded validates a profile as written, so that what is checked
// is exactly what a device would read.
func validateEncoded(raw []byte) error {
	var tree map[string]any
	if err := unmarshalPlist(raw, &tree); err != nil {
		return fmt.Errorf("reading back the encoded profile: %w", err)
	}
	var v validator
	v.profile(tree)
	if len(v.problems) > 0 {
		return &ValidationError{Problems: v.problems}
	}
	return nil
}

type validator struct {
	problems []Problem
}

func (v *validator) add(payloadType, path, format string, args ...any) {
	v.problems = append(v.problems, Problem{PayloadType: payloadType, Path: path, Message: fmt.Sprintf(format, args...)})
}

func (v *validator) profile(tree map[string]any) {
	label, _ := tree["PayloadType"].(string)
	if label == TypeProfileService {
		v.dict(label, "", tree, profileServiceSpec, profileServiceSpec.Keys, false)
		return
	}
	if label == "" {
		label = TypeConfiguration
	}
	encrypted, _ := tree["IsEncrypted"].(bool)
	// "If 'IsEncrypted' is 'true', this array isn't needed" (TopLevel.yaml):
	// the payloads then travel in EncryptedPayloadContent, which becomes
	// the required key. The items are checked as payloads below, each
	// against its own type's file.
	keys := slices.Clone(topLevelSpec.Keys)
	for i := range keys {
		switch keys[i].Name {
		case "PayloadContent":
			keys[i].Required = !encrypted
			keys[i].Subkeys = nil
		case "EncryptedPayloadContent":
			keys[i].Required = encrypted
		}
	}
	v.dict(label, "", tree, topLevelSpec, keys, false)
	if _, ok := tree["EncryptedPayloadContent"]; ok && !encrypted {
		v.add(label, "EncryptedPayloadContent", "is present but IsEncrypted is not true")
	}
	if _, ok := tree["PayloadContent"]; ok && encrypted {
		v.add(label, "PayloadContent", "is present in an encrypted profile")
	}
	items, _ := tree["PayloadContent"].([]any)
	v.payloads(tree, items)
}

// payloads checks each payload against its type's schema file, then the
// rules between payloads that a device enforces at install time
// (MCProfileErrorDomain 1007 and 1008, MCMDMErrorDomain 12001 and 12016).
func (v *validator) payloads(top map[string]any, items []any) {
	uuids := map[string]string{}
	if u, ok := top["PayloadUUID"].(string); ok && u != "" {
		uuids[u] = "the profile"
	}
	identifiers := map[string]string{}
	seen := map[string]string{}
	types := map[string]string{} // PayloadUUID → PayloadType
	for i, item := range items {
		path := fmt.Sprintf("PayloadContent[%d]", i)
		m, ok := item.(map[string]any)
		if !ok {
			v.add("payload", path, "is %s, want <dictionary>", plistType(item))
			continue
		}
		ptype := v.payload(path, m)
		if u, ok := m["PayloadUUID"].(string); ok && u != "" {
			if other, dup := uuids[u]; dup {
				v.add(ptype, path+".PayloadUUID", "%q is also the PayloadUUID of %s", u, other)
			} else {
				uuids[u] = path
				types[u] = ptype
			}
		}
		if id, ok := m["PayloadIdentifier"].(string); ok && id != "" {
			if other, dup := identifiers[id]; dup {
				v.add(ptype, path+".PayloadIdentifier", "%q is also the PayloadIdentifier of %s", id, other)
			} else {
				identifiers[id] = path
			}
		}
		if spec, known := payloadSpecs[ptype]; known && !spec.Multiple {
			if other, dup := seen[ptype]; dup {
				v.add(ptype, path, "a profile may hold only one %s payload (%s); another is %s", ptype, spec.File, other)
			} else {
				seen[ptype] = path
			}
		}
	}
	for i, item := range items {
		m, _ := item.(map[string]any)
		if m["PayloadType"] != TypeMDM {
			continue
		}
		id, ok := m["IdentityCertificateUUID"].(string)
		if !ok || id == "" {
			continue // reported as missing or mistyped
		}
		path := fmt.Sprintf("PayloadContent[%d].IdentityCertificateUUID", i)
		switch t, found := types[id]; {
		case !found:
			v.add(TypeMDM, path, "%q names no payload of this profile", id)
		case !isIdentityType(t):
			v.add(TypeMDM, path, "%q names a %s payload, which gives the device no private key; want SCEP, ACME or PKCS#12", id, t)
		}
	}
}

func isIdentityType(payloadType string) bool {
	switch payloadType {
	case TypePKCS12, TypeSCEP, TypeACME:
		return true
	}
	return false
}

// payload checks one payload dictionary and returns its type.
func (v *validator) payload(path string, m map[string]any) string {
	ptype, _ := m["PayloadType"].(string)
	label := ptype
	if label == "" {
		label = "payload"
	}
	spec, known := payloadSpecs[ptype]
	keys := commonPayloadSpec.Keys
	if known {
		// The type's own file wins where it describes a common key again.
		keys = slices.DeleteFunc(slices.Clone(keys), func(k keySpec) bool {
			return slices.ContainsFunc(spec.Keys, func(s keySpec) bool { return s.Name == k.Name })
		})
		keys = append(keys, spec.Keys...)
	} else {
		spec = commonPayloadSpec
	}
	// Payload types bramley has no schema for are checked for the common
	// keys only; their other keys are theirs.
	v.dict(label, path, m, spec, keys, !known)

	switch ptype {
	case TypeRoot, TypePKCS1:
		if data, ok := m["PayloadContent"].([]byte); ok {
			if _, err := certificates(data); err != nil {
				v.add(ptype, path+".PayloadContent", "is not a certificate: %v", err)
			}
		}
	case TypePEM:
		if data, ok := m["PayloadContent"].([]byte); ok {
			if !bytes.Contains(data, []byte("-----BEGIN CERTIFICATE-----")) {
				v.add(ptype, path+".PayloadContent", "holds no PEM certificate")
			} else if _, err := certificates(data); err != nil {
				v.add(ptype, path+".PayloadContent", "%v", err)
			}
		}
	case TypeMDM:
		v.mdm(path, m)
	}
	return label
}

// mdm applies the AccessRights rules of com.apple.mdm.yaml ("Don't set to
// '0'. Specify '1' if you specify '2'. Specify '64' if you specify '128'.")
// and keeps ServerCapabilities "a unique array" as it says. A device
// refuses the payload otherwise (MCMDMErrorDomain 12000).
func (v *validator) mdm(path string, m map[string]any) {
	if n, ok := integer(m["AccessRights"]); ok {
		p := path + ".AccessRights"
		switch {
		case n == 0:
			v.add(TypeMDM, p, "must not be 0")
		case n < 0 || n&^AccessAll != 0:
			v.add(TypeMDM, p, "%d has bits outside %d", n, AccessAll)
		}
		if n&AccessInstallProfiles != 0 && n&AccessInspectProfiles == 0 {
			v.add(TypeMDM, p, "%d grants 2 (install profiles) without 1 (inspect profiles)", n)
		}
		if n&AccessInstallProvisioningProfiles != 0 && n&AccessInspectProvisioningProfiles == 0 {
			v.add(TypeMDM, p, "%d grants 128 (install provisioning profiles) without 64 (inspect them)", n)
		}
	}
	if caps, ok := m["ServerCapabilities"].([]any); ok {
		seen := map[any]bool{}
		for i, c := range caps {
			if seen[c] {
				v.add(TypeMDM, fmt.Sprintf("%s.ServerCapabilities[%d]", path, i), "%v is listed twice", c)
			}
			seen[c] = true
		}
	}
}

// dict checks a dictionary against keys, which come from spec's file.
func (v *validator) dict(label, path string, m map[string]any, spec payloadSpec, keys []keySpec, allowUnknown bool) {
	if len(keys) == 1 && keys[0].Name == "ANY" {
		for _, k := range sortedKeys(m) {
			v.value(label, join(path, k), m[k], keys[0], spec)
		}
		return
	}
	// Apple describes a dictionary of arbitrary keys (ConsentText: language
	// → text) as one dictionary subkey that itself takes ANY key.
	if len(keys) == 1 && keys[0].Type == "<dictionary>" && len(keys[0].Subkeys) == 1 && keys[0].Subkeys[0].Name == "ANY" {
		v.dict(label, path, m, spec, keys[0].Subkeys, false)
		return
	}
	known := make(map[string]bool, len(keys))
	for _, k := range keys {
		known[k.Name] = true
		val, ok := m[k.Name]
		if !ok {
			if k.Required {
				v.add(label, join(path, k.Name), "required key is missing")
			}
			continue
		}
		v.value(label, join(path, k.Name), val, k, spec)
	}
	if allowUnknown {
		return
	}
	for _, k := range sortedKeys(m) {
		if !known[k] {
			// A device ignores keys it does not know, so a misspelt key
			// (the SCEP payload's "KeyType" for "Key Type") silently
			// falls back to a default: refuse it here instead.
			v.add(label, join(path, k), "unknown key: %s does not list it", spec.File)
		}
	}
}

func (v *validator) value(label, path string, val any, k keySpec, spec payloadSpec) {
	if k.Type == "<any>" {
		return
	}
	if got := plistType(val); got != k.Type {
		v.add(label, path, "is %s, want %s", got, k.Type)
		return
	}
	switch x := val.(type) {
	case string:
		if x == "" && k.Required {
			v.add(label, path, "must not be empty")
			return
		}
		v.inRange(label, path, strconv.Quote(x), x, k)
		if k.Format != "" {
			re, err := regexp.Compile(k.Format)
			if err == nil && !re.MatchString(x) {
				v.add(label, path, "%q does not match %s", x, k.Format)
			}
		}
	case int64, uint64:
		n := fmt.Sprint(x)
		v.inRange(label, path, n, n, k)
	case map[string]any:
		if len(k.Subkeys) > 0 {
			v.dict(label, path, x, spec, k.Subkeys, false)
		}
	case []any:
		if len(k.Subkeys) == 0 {
			return
		}
		item := k.Subkeys[0]
		switch {
		case item.RepeatMin > 0 && item.RepeatMin == item.RepeatMax && len(x) != item.RepeatMin:
			v.add(label, path, "has %d items, want %d", len(x), item.RepeatMin)
		case item.RepeatMin > 0 && len(x) < item.RepeatMin:
			v.add(label, path, "has %d items, want at least %d", len(x), item.RepeatMin)
		case item.RepeatMax > 0 && len(x) > item.RepeatMax:
			v.add(label, path, "has %d items, want at most %d", len(x), item.RepeatMax)
		}
		for i, e := range x {
			v.value(label, fmt.Sprintf("%s[%d]", path, i), e, item, spec)
		}
	}
}

func (v *validator) inRange(label, path, shown, text string, k keySpec) {
	if len(k.Range) > 0 && !slices.Contains(k.Range, text) {
		v.add(label, path, "%s is not one of %s", shown, strings.Join(k.Range, ", "))
	}
}

// plistType names the plist element a decoded value came from.
func plistType(v any) string {
	switch v.(type) {
	case string:
		return "<string>"
	case int64, uint64:
		return "<integer>"
	case float64, float32:
		return "<real>"
	case bool:
		return "<boolean>"
	case []byte:
		return "<data>"
	case time.Time:
		return "<date>"
	case []any:
		return "<array>"
	case map[string]any:
		return "<dictionary>"
	}
	return fmt.Sprintf("%T", v)
}

func integer(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case uint64:
		if n > 1<<62 {
			return -1, true
		}
		return int64(n), true
	}
	return 0, false
}

// join extends a key path; keys that are not plain words are quoted, as
// "Key Type" is.
func join(path, key string) string {
	if key == "" || strings.ContainsAny(key, " .[]\"") {
		key = strconv.Quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
