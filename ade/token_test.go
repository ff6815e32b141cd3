package ade

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/appletest"
	"github.com/bramley-mdm/bramley/pki"
)

// tokenJSON is a server token's content, with Apple's field names.
const tokenJSON = `{"consumer_key":"CK_48dd68d198350f51258e885ce9a5c37ab7f98543c4a697323d75682a6c10a32501cb247e3db08105db868f73f2c972bdb6ae77112aea803b9219eb52689d42e6","consumer_secret":"CS_34c7b2b531a600d99a0e4edcf4a78ded79b86ef318118c2f5bcfee1b011108c32d5302df801adbe29d446eb78f02b13144e323eb9aad51c79f01e50cb45c3a68","access_token":"AT_927696831c59ba510cfe4ec1a69e5267c19881257d4bca2906a99d0785b785a6f6fdeb09774954fdd5e2d0ad952e3af52c6d8d2f21c924ba0caf4a031c158b89","access_secret":"AS_c31afd7a09691d83548489336e8ff1cb11b82b6bca13f793344496a556b1f4972eaff4dde6deb5ac9cf076fdfa97ec97699c34d515947b9cf9ed31c99dded6ba","access_token_expiry":"2015-01-14T21:27:41Z"}`

// appleMessage wraps content as the decrypted part of Apple's token.
func appleMessage(content string) string {
	return "Content-Type: text/plain;charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n" +
		"-----BEGIN MESSAGE-----\r\n" + content + "\r\n-----END MESSAGE-----\r\n"
}

func encrypt(t *testing.T, content string, cert *x509.Certificate) []byte {
	t.Helper()
	p7m, err := appletest.EncryptSMIME([]byte(content), cert)
	if err != nil {
		t.Fatal(err)
	}
	return p7m
}

func TestNewTokenKeyPair(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cert, key := tokenKeyPair()
	if _, err := x509.ParseCertificate(cert.Raw); err != nil {
		t.Fatal(err)
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok || pub.N.BitLen() != 2048 || !pub.Equal(&key.PublicKey) {
		t.Fatalf("certificate key is not the RSA 2048 key returned")
	}
	if cert.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
		t.Error("no key encipherment: Apple wraps the content key with this key")
	}
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	c2, _, err := NewTokenKeyPair(now)
	if err != nil {
		t.Fatal(err)
	}
	if !c2.NotBefore.Before(now) || c2.NotAfter.Before(now.AddDate(9, 0, 0)) {
		t.Errorf("validity %v – %v around %v", c2.NotBefore, c2.NotAfter, now)
	}
	if c2.SerialNumber.Cmp(cert.SerialNumber) == 0 {
		t.Error("two certificates share a serial number")
	}
	// What GET /api/v1/ade/certificate serves.
	if _, err := pki.ParseCertificatePEM(pki.EncodeCertificatePEM(cert)); err != nil {
		t.Error(err)
	}
}

func TestParseServerToken(t *testing.T) {
	cert, key := tokenKeyPair()
	want := ServerToken{}
	want.ConsumerKey = "CK_48dd68d198350f51258e885ce9a5c37ab7f98543c4a697323d75682a6c10a32501cb247e3db08105db868f73f2c972bdb6ae77112aea803b9219eb52689d42e6"
	want.AccessSecret = "AS_c31afd7a09691d83548489336e8ff1cb11b82b6bca13f793344496a556b1f4972eaff4dde6deb5ac9cf076fdfa97ec97699c34d515947b9cf9ed31c99dded6ba"
	want.AccessTokenExpiry = time.Date(2015, 1, 14, 21, 27, 41, 0, time.UTC)

	appleP7M := encrypt(t, appleMessage(tokenJSON), cert)
	der := smimeDER(t, appleP7M)
	tests := []struct {
		name string
		p7m  []byte
	}{
		{"as Apple gives it", appleP7M},
		{"CRLF line ends", bytes.ReplaceAll(appleP7M, []byte("\n"), []byte("\r\n"))},
		{"raw DER", der},
		{"bare base64", []byte(base64.StdEncoding.EncodeToString(der))},
		{"no MIME headers inside", encrypt(t, "-----BEGIN MESSAGE-----\n"+tokenJSON+"\n-----END MESSAGE-----\n", cert)},
		{"bare JSON inside", encrypt(t, tokenJSON, cert)},
		// Apple may break the JSON over lines, even inside a value.
		{"JSON broken over lines", encrypt(t, appleMessage(tokenJSON[:70]+"\r\n"+tokenJSON[70:300]+"\r\n"+tokenJSON[300:]), cert)},
		{"base64 inner part", encrypt(t, "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"+
			base64.StdEncoding.EncodeToString([]byte("-----BEGIN MESSAGE-----\n"+tokenJSON+"\n-----END MESSAGE-----\n")), cert)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := ParseServerToken(tt.p7m, cert, key)
			if err != nil {
				t.Fatal(err)
			}
			if tok.ConsumerKey != want.ConsumerKey || tok.AccessSecret != want.AccessSecret ||
				!tok.AccessTokenExpiry.Equal(want.AccessTokenExpiry) ||
				!strings.HasPrefix(tok.ConsumerSecret, "CS_") || !strings.HasPrefix(tok.AccessToken, "AT_") {
				t.Errorf("token %+v", tok)
			}
			if !tok.Expired(time.Date(2016, 1, 1, 0, 0, 0, 0, time.UTC)) || tok.Expired(time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC)) {
				t.Error("Expired is wrong")
			}
		})
	}
}

func smimeDER(t *testing.T, p7m []byte) []byte {
	t.Helper()
	_, body, ok := bytes.Cut(p7m, []byte("\n\n"))
	if !ok {
		t.Fatal("no S/MIME body")
	}
	der, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(body), "\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestParseServerTokenOpenSSL decrypts tokens made by openssl smime, the
// tool Apple's format comes from: BER with indefinite lengths, and other
// ciphers.
func TestParseServerTokenOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("no openssl")
	}
	cert, key := tokenKeyPair()
	dir := t.TempDir()
	certFile, msgFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "msg.txt")
	if err := os.WriteFile(certFile, pki.EncodeCertificatePEM(cert), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(msgFile, []byte(appleMessage(tokenJSON)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cipher := range []string{"-aes256", "-aes128", "-des3"} {
		t.Run(cipher, func(t *testing.T) {
			out := filepath.Join(dir, "token"+cipher+".p7m")
			cmd := exec.Command(openssl, "smime", "-encrypt", "-binary", cipher, "-in", msgFile, "-out", out, certFile)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("openssl: %v\n%s", err, b)
			}
			p7m, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(p7m, []byte("smime-type=enveloped-data")) {
				t.Fatalf("not S/MIME:\n%s", p7m)
			}
			tok, err := ParseServerToken(p7m, cert, key)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(tok.ConsumerKey, "CK_48dd") {
				t.Errorf("consumer key %q", tok.ConsumerKey)
			}
		})
	}
}

func TestParseServerTokenRefused(t *testing.T) {
	cert, key := tokenKeyPair()
	foreignCert, _, err := NewTokenKeyPair(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	good := encrypt(t, appleMessage(tokenJSON), cert)
	der := smimeDER(t, good)
	tampered := bytes.Clone(der)
	tampered[len(tampered)-1] ^= 0x01 // the last byte of the ciphertext
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})

	tests := []struct {
		name string
		p7m  []byte
		want error
	}{
		{"encrypted to another certificate", encrypt(t, appleMessage(tokenJSON), foreignCert), ErrTokenForeign},
		{"truncated", good[:len(good)/2], ErrTokenMalformed},
		{"truncated DER", der[:len(der)-40], ErrTokenMalformed},
		{"tampered ciphertext", tampered, ErrTokenTampered},
		{"empty", nil, ErrTokenMalformed},
		{"text", []byte("hello, world"), ErrTokenMalformed},
		{"a certificate", certPEM, ErrTokenMalformed},
		{"wrong content type", bytes.Replace(good, []byte("application/pkcs7-mime"), []byte("text/plain"), 1), ErrTokenMalformed},
		{"not base64", []byte("Content-Type: application/pkcs7-mime\n\n!!!!\n"), ErrTokenMalformed},
		{"too large", bytes.Repeat([]byte("A"), maxTokenSize+1), ErrTokenMalformed},
		{"signed, not encrypted", signedCMS(t), ErrTokenMalformed},
		{"no END MESSAGE", encrypt(t, "-----BEGIN MESSAGE-----\n"+tokenJSON+"\n", cert), ErrTokenTampered},
		{"not JSON", encrypt(t, appleMessage("consumer_key=CK_1"), cert), ErrTokenTampered},
		{"missing secrets", encrypt(t, appleMessage(`{"consumer_key":"CK_1","access_token":"AT_1"}`), cert), ErrTokenMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := ParseServerToken(tt.p7m, cert, key)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, %v; want %v", tok, err, tt.want)
			}
		})
	}
	if _, err := ParseServerToken(good, nil, key); err == nil {
		t.Error("no certificate: no error")
	}
}

func signedCMS(t *testing.T) []byte {
	t.Helper()
	cert, key := tokenKeyPair()
	sig, err := pki.SignDetached([]byte("hello"), cert, key)
	if err != nil {
		t.Fatal(err)
	}
	der, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func FuzzParseServerToken(f *testing.F) {
	cert, key := tokenKeyPair()
	good, err := appletest.EncryptSMIME([]byte(appleMessage(tokenJSON)), cert)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte("MIME-Version: 1.0\nContent-Type: application/pkcs7-mime\n\nMIAGCSqGSIb3DQEHA6CAMIACAQAx\n"))
	f.Add([]byte{0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03, 0xa0, 0x80})
	f.Fuzz(func(t *testing.T, p7m []byte) {
		tok, err := ParseServerToken(p7m, cert, key)
		if err == nil && (tok.ConsumerKey == "" || tok.AccessSecret == "") {
			t.Fatalf("incomplete token accepted: %+v", tok)
		}
		if err != nil && !errors.Is(err, ErrTokenMalformed) && !errors.Is(err, ErrTokenForeign) && !errors.Is(err, ErrTokenTampered) {
			t.Fatalf("error wraps no sentinel: %v", err)
		}
	})
}
