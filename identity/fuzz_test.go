package identity

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/pki"
)

// FuzzVerifySignature feeds the CMS parser what a hostile client can put in
// the Mdm-Signature header. The fuzzer mutates the DER, which is base64
// encoded on the way in so mutations reach the parser, and the raw bytes are
// also tried as a header as they are.
func FuzzVerifySignature(f *testing.F) {
	header2, body := realSignature(f)
	header1 := strings.TrimSpace(string(readTestdata(f, "nanomdm-Mdm-Signature.1.header.b64")))
	d := issue(f, newCA(f, time.Now), time.Hour)
	ours, err := pki.SignDetached(body, d.cert, d.key)
	if err != nil {
		f.Fatal(err)
	}
	for _, h := range []string{header2, header1, ours} {
		der, err := base64.StdEncoding.DecodeString(h)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der, body)
	}
	f.Add([]byte{}, []byte{})
	f.Add([]byte{0x30, 0x80, 0x00, 0x00}, body) // an empty indefinite-length SEQUENCE

	f.Fuzz(func(t *testing.T, der, body []byte) {
		for _, header := range []string{base64.StdEncoding.EncodeToString(der), string(der)} {
			cert, err := VerifySignature(header, body)
			if err == nil && cert == nil {
				t.Fatal("VerifySignature succeeded without a certificate")
			}
			cert, err = ParseSignature(header)
			if err == nil && cert == nil {
				t.Fatal("ParseSignature succeeded without a certificate")
			}
		}
	})
}

// FuzzParseProxyHeader feeds ParseProxyHeader what a client could put in the
// proxy's certificate header if the proxy failed to strip it.
func FuzzParseProxyHeader(f *testing.F) {
	cert, err := ParseSignature(strings.TrimSpace(string(readTestdata(f, "nanomdm-Mdm-Signature.2.header.b64"))))
	if err != nil {
		f.Fatal(err)
	}
	p := certPEM(cert)
	for _, h := range []string{rfc9440(cert), nginxEscape(p), albEscape(p), p, "", "::", ":%:", "%", "%zz"} {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, h string) {
		cert, err := ParseProxyHeader(h)
		if err == nil && cert == nil {
			t.Fatal("ParseProxyHeader succeeded without a certificate")
		}
	})
}
