package schemagen

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const schemaRoot = "../../../../shared/apple-device-management"

func TestParseYAML(t *testing.T) {
	doc, err := parseYAML(`title: 'PKCS #12 ''quoted'''
description: Use this
  to test. # a comment
payload:
  payloadtype: com.example
payloadkeys:
- key: A B
  type: <string>
  rangelist:
  - one
  - 2
  content: |-
    Line one.

    * 1: Signing
- key: Nested
  type: <array>
  subkeys:
  - key: Item
    type: <dictionary>
    repetition:
      min: 2
      max: 2
  content: >
    folded
    text
`)
	if err != nil {
		t.Fatal(err)
	}
	if got := doc.get("title").str(); got != "PKCS #12 'quoted'" {
		t.Errorf("title = %q", got)
	}
	if got := doc.get("description").str(); got != "Use this to test." {
		t.Errorf("description = %q", got)
	}
	keys := doc.get("payloadkeys")
	if keys == nil || len(keys.items) != 2 {
		t.Fatalf("payloadkeys = %+v", keys)
	}
	first := keys.items[0]
	if got := first.get("key").str(); got != "A B" {
		t.Errorf("key = %q", got)
	}
	var rng []string
	for _, n := range first.get("rangelist").items {
		rng = append(rng, n.str())
	}
	if !reflect.DeepEqual(rng, []string{"one", "2"}) {
		t.Errorf("rangelist = %q", rng)
	}
	if got := first.get("content").str(); got != "Line one.\n\n* 1: Signing" {
		t.Errorf("content = %q", got)
	}
	second := keys.items[1]
	if got := second.get("subkeys").items[0].get("repetition").get("max").str(); got != "2" {
		t.Errorf("repetition max = %q", got)
	}
	if got := second.get("content").str(); got != "folded text\n" {
		t.Errorf("folded content = %q", got)
	}
}

func TestParseYAMLErrors(t *testing.T) {
	for name, src := range map[string]string{
		"tab":          "a:\n\tb: c\n",
		"flow":         "a: [1, 2]\n",
		"indent":       "a: b\n    c: d\n  e: f\n",
		"duplicate":    "a: 1\na: 2\n",
		"unterminated": "a: 'b\n",
	} {
		if _, err := parseYAML(src); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestReadAllProfiles reads every payload file of Apple's schema, not only
// the ones bramley uses, so the reader is known to cope with the format.
func TestReadAllProfiles(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(schemaRoot, "mdm", "profiles", "*.yaml"))
	if len(files) == 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("Apple's schema is missing")
		}
		t.Skip("Apple's schema is not checked out")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		p, err := ParsePayload(filepath.Base(f), string(data))
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if len(p.Keys) == 0 && !strings.Contains(f, "GlobalPreferences") {
			t.Logf("%s: no payload keys", filepath.Base(f))
		}
	}
	if _, err := Generate(schemaRoot); err != nil {
		t.Fatal(err)
	}
}

func TestSupplementNeedsItsQuote(t *testing.T) {
	payloads := []Payload{{File: "x.yaml", Keys: []Key{{Name: "K", Type: "<string>", content: "Something else."}}}}
	err := apply(payloads, supplement{file: "x.yaml", path: []string{"K"}, quotes: []string{"Always 'RSA'."}, rng: []string{"RSA"}})
	if err == nil || !strings.Contains(err.Error(), "no longer says") {
		t.Errorf("apply = %v, want a complaint about the missing quote", err)
	}
	payloads[0].Keys[0].content = "Always\n'RSA'."
	if err := apply(payloads, supplement{file: "x.yaml", path: []string{"K"}, quotes: []string{"Always 'RSA'."}, rng: []string{"RSA"}}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(payloads[0].Keys[0].Range, []string{"RSA"}) {
		t.Errorf("range = %q", payloads[0].Keys[0].Range)
	}
}
