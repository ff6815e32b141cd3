// Package schemagen turns the payload files of Apple's device-management
// schema (mdm/profiles/*.yaml in github.com/apple/device-management) into
// the Go table package profile validates against. It runs at development
// time, through go generate or the profile tests; bramley never reads YAML
// at run time.
package schemagen

import (
	"bytes"
	"fmt"
	"go/format"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Files are the schema files bramley validates against, relative to the
// repository root: the top level, the keys common to every payload, and
// each payload type bramley emits or reads back. com.apple.security.pkcs1
// is here because com.apple.security.root is its alias.
var Files = []string{
	"mdm/profiles/TopLevel.yaml",
	"mdm/profiles/CommonPayloadKeys.yaml",
	"mdm/profiles/com.apple.mdm.yaml",
	"mdm/profiles/com.apple.security.scep.yaml",
	"mdm/profiles/com.apple.security.root.yaml",
	"mdm/profiles/com.apple.security.pkcs1.yaml",
	"mdm/profiles/com.apple.security.pem.yaml",
	"mdm/profiles/com.apple.security.pkcs12.yaml",
}

// Payload is what bramley takes from one schema file.
type Payload struct {
	File        string // path in Apple's repository
	PayloadType string // payload.payloadtype
	// Multiple is false when some OS allows only one payload of the type
	// (payload.supportedOS.*.multiple: false), as for com.apple.mdm.
	Multiple bool
	Keys     []Key
}

// Key is one entry of payloadkeys or of a key's subkeys.
type Key struct {
	Name     string
	Type     string // <string>, <integer>, <boolean>, <data>, <array>, <dictionary>, <real>, <date>, <any>
	Required bool   // presence: required
	Range    []string
	Format   string // a regular expression a string must match
	// RepeatMin and RepeatMax bound how often an array item repeats
	// (repetition: min/max), that is the length of the enclosing array.
	RepeatMin, RepeatMax int
	Subkeys              []Key
	// Note says where a constraint that is not in Apple's structured
	// fields came from; see supplements.
	Note    string
	content string
}

// supplement adds a constraint that Apple's schema states only in a key's
// prose. Each one quotes the sentences it rests on, and generation fails
// when they are no longer in the key's content, so a reworded schema is
// reviewed rather than silently trusted.
type supplement struct {
	file   string
	path   []string // key names from payloadkeys down
	quotes []string
	rng    []string
	format string
}

var supplements = []supplement{
	{
		// Devices reject a profile whose SCEP key type they cannot make;
		// the schema gives no rangelist, only this sentence.
		file:   "mdm/profiles/com.apple.security.scep.yaml",
		path:   []string{"PayloadContent", "Key Type"},
		quotes: []string{"Always 'RSA'."},
		rng:    []string{"RSA"},
	},
	{
		// A bitmask of the two documented bits: every combination of them.
		file:   "mdm/profiles/com.apple.security.scep.yaml",
		path:   []string{"PayloadContent", "Key Usage"},
		quotes: []string{"A bitmask indicating the use of the key.", "* 1: Signing", "* 4: Encryption"},
		rng:    []string{"0", "1", "4", "5"},
	},
	{
		// The device refuses any other topic (MCMDMErrorDomain 12022).
		file:   "mdm/profiles/com.apple.mdm.yaml",
		path:   []string{"Topic"},
		quotes: []string{"The topic must begin with the 'com.apple.mgmt.' prefix."},
		format: `^com\.apple\.mgmt\.`,
	},
}

// Read parses every file in Files under dir, the root of a checkout of
// Apple's schema repository, and applies the supplements.
func Read(dir string) ([]Payload, error) {
	var out []Payload
	for _, f := range Files {
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f)))
		if err != nil {
			return nil, err
		}
		p, err := ParsePayload(f, string(data))
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	for _, s := range supplements {
		if err := apply(out, s); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ParsePayload reads one schema file's payload type, multiplicity and keys.
func ParsePayload(file, data string) (Payload, error) {
	doc, err := parseYAML(data)
	if err != nil {
		return Payload{}, fmt.Errorf("%s: %w", file, err)
	}
	payload := doc.get("payload")
	p := Payload{File: file, PayloadType: payload.get("payloadtype").str(), Multiple: true}
	if p.PayloadType == "" {
		return Payload{}, fmt.Errorf("%s: no payload.payloadtype", file)
	}
	if oses := payload.get("supportedOS"); oses != nil {
		for _, sys := range oses.values {
			if sys.get("multiple").str() == "false" {
				p.Multiple = false
			}
		}
	}
	p.Keys, err = readKeys(doc.get("payloadkeys"), map[*node]bool{})
	if err != nil {
		return Payload{}, fmt.Errorf("%s: %w", file, err)
	}
	return p, nil
}

// readKeys reads a list of key entries. visiting holds the lists being
// read further up, because a YAML alias can make a list contain itself.
func readKeys(list *node, visiting map[*node]bool) ([]Key, error) {
	if list == nil {
		return nil, nil
	}
	visiting[list] = true
	defer delete(visiting, list)
	if list.kind != sequenceNode {
		return nil, fmt.Errorf("line %d: keys are not a list", list.line)
	}
	var keys []Key
	for _, item := range list.items {
		var err error
		k := Key{
			Name:     item.get("key").str(),
			Type:     item.get("type").str(),
			Required: item.get("presence").str() == "required",
			Format:   item.get("format").str(),
			content:  item.get("content").str(),
		}
		if k.Name == "" || k.Type == "" {
			return nil, fmt.Errorf("line %d: key without a name or type", item.line)
		}
		if r := item.get("rangelist"); r != nil {
			if r.kind != sequenceNode {
				return nil, fmt.Errorf("line %d: rangelist of %s is not a list", r.line, k.Name)
			}
			for _, v := range r.items {
				if v.kind != scalarNode {
					return nil, fmt.Errorf("line %d: rangelist of %s holds a collection", v.line, k.Name)
				}
				k.Range = append(k.Range, v.scalar)
			}
		}
		if rep := item.get("repetition"); rep != nil {
			if k.RepeatMin, err = optionalInt(rep.get("min")); err != nil {
				return nil, fmt.Errorf("%s repetition: %w", k.Name, err)
			}
			if k.RepeatMax, err = optionalInt(rep.get("max")); err != nil {
				return nil, fmt.Errorf("%s repetition: %w", k.Name, err)
			}
		}
		if sub := item.get("subkeys"); visiting[sub] {
			// A structure nested in itself: the table stops here and
			// checks only the type, since Go literals cannot loop.
			k.Note = "recursive: its contents are not checked below this depth"
		} else if k.Subkeys, err = readKeys(sub, visiting); err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func optionalInt(n *node) (int, error) {
	if n == nil || n.str() == "" {
		return 0, nil
	}
	return strconv.Atoi(n.str())
}

func apply(payloads []Payload, s supplement) error {
	for i := range payloads {
		if payloads[i].File != s.file {
			continue
		}
		keys := payloads[i].Keys
		var k *Key
		for _, name := range s.path {
			k = nil
			for j := range keys {
				if keys[j].Name == name {
					k = &keys[j]
				}
			}
			if k == nil {
				return fmt.Errorf("%s: supplement names %q, which the schema no longer has", s.file, strings.Join(s.path, "."))
			}
			keys = k.Subkeys
		}
		text := strings.Join(strings.Fields(k.content), " ")
		for _, q := range s.quotes {
			if !strings.Contains(text, strings.Join(strings.Fields(q), " ")) {
				return fmt.Errorf("%s: %s no longer says %q; review the supplement in schemagen", s.file, strings.Join(s.path, "."), q)
			}
		}
		if len(k.Range) > 0 && s.rng != nil || k.Format != "" && s.format != "" {
			return fmt.Errorf("%s: %s now has its own rangelist or format; drop the supplement", s.file, strings.Join(s.path, "."))
		}
		if s.rng != nil {
			k.Range = s.rng
		}
		if s.format != "" {
			k.Format = s.format
		}
		k.Note = "from the key's text: " + strings.Join(s.quotes, " … ")
		return nil
	}
	return fmt.Errorf("supplement for %s, which is not in Files", s.file)
}

// Generate returns schema_gen.go for package profile, gofmt-formatted.
func Generate(dir string) ([]byte, error) {
	payloads, err := Read(dir)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString("// Code generated by profile/internal/schemagen from Apple's device-management schema; DO NOT EDIT.\n")
	b.WriteString("// Regenerate with `go generate ./profile` (or `go test ./profile -run TestSchemaGenerated -update`).\n\n")
	b.WriteString("package profile\n\n")
	for _, p := range payloads {
		switch p.PayloadType {
		case "TopLevel":
			fmt.Fprintf(&b, "// topLevelSpec follows %s: the keys of a profile's outermost dictionary.\n", p.File)
			b.WriteString("var topLevelSpec = payloadSpec")
			writePayload(&b, p)
			b.WriteString("\n\n")
		case "CommonPayloadKeys":
			fmt.Fprintf(&b, "// commonPayloadSpec follows %s: the keys every payload dictionary carries.\n", p.File)
			b.WriteString("var commonPayloadSpec = payloadSpec")
			writePayload(&b, p)
			b.WriteString("\n\n")
		}
	}
	b.WriteString("// payloadSpecs maps a PayloadType to the keys of its file, to be checked\n")
	b.WriteString("// together with commonPayloadSpec.\n")
	b.WriteString("var payloadSpecs = map[string]payloadSpec{\n")
	sorted := slices.Clone(payloads)
	slices.SortFunc(sorted, func(a, b Payload) int { return strings.Compare(a.PayloadType, b.PayloadType) })
	for _, p := range sorted {
		if p.PayloadType == "TopLevel" || p.PayloadType == "CommonPayloadKeys" {
			continue
		}
		fmt.Fprintf(&b, "%q: ", p.PayloadType)
		writePayload(&b, p)
		b.WriteString(",\n")
	}
	b.WriteString("}\n")
	src, err := format.Source(b.Bytes())
	if err != nil {
		return nil, fmt.Errorf("formatting generated code: %w\n%s", err, b.Bytes())
	}
	return src, nil
}

func writePayload(b *bytes.Buffer, p Payload) {
	fmt.Fprintf(b, "{\nPayloadType: %q,\nFile: %q,\nMultiple: %t,\nKeys: ", p.PayloadType, p.File, p.Multiple)
	writeKeys(b, p.Keys)
	b.WriteString(",\n}")
}

func writeKeys(b *bytes.Buffer, keys []Key) {
	b.WriteString("[]keySpec{\n")
	for _, k := range keys {
		fmt.Fprintf(b, "{Name: %q, Type: %q", k.Name, k.Type)
		if k.Required {
			b.WriteString(", Required: true")
		}
		if len(k.Range) > 0 {
			b.WriteString(", Range: []string{")
			for i, r := range k.Range {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString(strconv.Quote(r))
			}
			b.WriteString("}")
		}
		if k.Format != "" {
			fmt.Fprintf(b, ", Format: %s", quote(k.Format))
		}
		if k.RepeatMin != 0 {
			fmt.Fprintf(b, ", RepeatMin: %d", k.RepeatMin)
		}
		if k.RepeatMax != 0 {
			fmt.Fprintf(b, ", RepeatMax: %d", k.RepeatMax)
		}
		if len(k.Subkeys) > 0 {
			b.WriteString(",\nSubkeys: ")
			writeKeys(b, k.Subkeys)
			b.WriteString(",\n")
		}
		b.WriteString("},")
		if k.Note != "" {
			fmt.Fprintf(b, " // %s", k.Note)
		}
		b.WriteString("\n")
	}
	b.WriteString("}")
}

// quote writes a regular expression as a raw string when it can be one,
// so the generated table reads like the schema.
func quote(s string) string {
	if !strings.Contains(s, "`") && strconv.CanBackquote(s) {
		return "`" + s + "`"
	}
	return strconv.Quote(s)
}
