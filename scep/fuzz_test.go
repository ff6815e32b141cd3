package scep

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/smallstep/scep"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/pki"
)

// FuzzPKIOperation feeds arbitrary bytes to the PKIOperation handler with
// challenges required: it must never panic, never issue, and answer
// either a CertRep or a 400 — never a 500.
func FuzzPKIOperation(f *testing.F) {
	fixture, err := os.ReadFile("testdata/scep-PKCSReq.der")
	if err != nil {
		f.Fatal(err)
	}
	ca, issued := fuzzCA(f)
	// The fuzzer cannot know this challenge, so nothing may be issued.
	challenges := &memChallenges{}
	challenges.add("unguessable-"+rand.Text(), Challenge{ExpiresAt: time.Now().Add(time.Hour)})
	s := New(ca, challenges, WithRenewals(&memRenewals{}))

	dev := newDevice(f, rsaKey(f, 1024, 1))
	// The fixture is encrypted to another CA: it reaches the envelope.
	f.Add(fixture)
	f.Add(buildRequest(f, reqSpec{content: makeCSR(f, dev.key, "d", "guess").Raw, recipient: ca.Certificate(), signer: dev}).der)
	f.Add(buildRequest(f, reqSpec{content: makeCSR(f, dev.key, "d", "").Raw, recipient: ca.Certificate(), cipher: cipherDES3, signer: dev}).der)
	f.Add(libraryRequest(f, scep.RenewalReq, makeCSR(f, dev.key, "d", ""), dev, ca.Certificate()).der)
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x80, 0x06, 0x09})

	f.Fuzz(func(t *testing.T, der []byte) {
		reply, err := s.pkiOperation(context.Background(), der, &observation{})
		if err != nil {
			var he *handler.Error
			if !errors.As(err, &he) || he.Status != http.StatusBadRequest {
				t.Fatalf("error %v is not a 400", err)
			}
			return
		}
		if len(reply) == 0 {
			t.Fatal("empty reply")
		}
		if n := issued.count(); n != 0 {
			t.Fatalf("issued %d certificates", n)
		}
	})
}

// fuzzCA returns a CA with an RSA-1024 key. Fuzzing instruments crypto too,
// and nearly every mutated request is answered with a CertRep signed by the
// CA: with bramley's RSA-2048 key (or the fixture's RSA-4096) the fuzzer
// manages a few executions a second. The size of the CA key changes no
// code path.
func fuzzCA(f *testing.F) (*pki.CA, *memCerts) {
	f.Helper()
	key := rsaKey(f, 1024, 0)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		Subject:               pkix.Name{CommonName: "fuzz CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		f.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		f.Fatal(err)
	}
	issued := &memCerts{}
	ca, err := pki.NewCAFromKeyPair(cert, key, time.Now, pki.WithCertificateStore(issued))
	if err != nil {
		f.Fatal(err)
	}
	return ca, issued
}

// FuzzCSR runs the CSR policy on arbitrary DER: it never panics, and what
// it accepts has a verified self-signature and an RSA key of an allowed size.
func FuzzCSR(f *testing.F) {
	rsaCSR := makeCSR(f, rsaKey(f, 2048, 0), "device", "challenge")
	small := makeCSR(f, rsaKey(f, 1024, 0), "device", "")
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec := makeCSR(f, ecKey, "device", "")
	f.Add(rsaCSR.Raw, "device")
	f.Add(rsaCSR.Raw, "")
	f.Add(small.Raw, "")
	f.Add(ec.Raw, "")
	f.Add([]byte{0x30, 0x00}, "")

	f.Fuzz(func(t *testing.T, der []byte, wantCN string) {
		csr, err := x509.ParseCertificateRequest(der)
		if err != nil {
			return
		}
		if checkCSR(csr, wantCN) != nil {
			return
		}
		pub, ok := csr.PublicKey.(*rsa.PublicKey)
		if !ok || pub.N.BitLen() < minRSABits || pub.N.BitLen() > maxRSABits {
			t.Fatalf("accepted a %T key", csr.PublicKey)
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("accepted a CSR whose signature does not verify: %v", err)
		}
		if wantCN != "" && csr.Subject.CommonName != wantCN {
			t.Fatalf("accepted CN %q for %q", csr.Subject.CommonName, wantCN)
		}
	})
}
