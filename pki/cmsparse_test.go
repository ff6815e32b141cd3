package pki

import (
	"strings"
	"testing"
)

func TestParseCMSRefusesMalformedBER(t *testing.T) {
	deep := strings.Repeat("\x30\x80", maxBERDepth+1) + strings.Repeat("\x00\x00", maxBERDepth+1)
	for name, data := range map[string]string{
		// A child running past its parent's end is what made the BER
		// reader of smallstep/pkcs7 re-read the same bytes exponentially.
		"child overruns parent": "\x30\x03\x30\x05\x00\x00\x00\x00\x00",
		"truncated":             "\x30\x10\x02\x01",
		"indefinite primitive":  "\x04\x80\x00\x00",
		"too deep":              deep,
		"empty":                 "",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseCMS([]byte(data)); err == nil {
				t.Fatal("ParseCMS accepted malformed input")
			}
		})
	}
}
