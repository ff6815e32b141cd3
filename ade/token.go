package ade

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"mime"
	"net/textproto"
	"strings"
	"time"

	"github.com/bramley-mdm/bramley/pki"
	"github.com/smallstep/pkcs7"
)

// ServerToken is the OAuth credentials in the server token (.p7m) that
// Apple Business Manager gives for an MDM server (g.1). Its secrets are
// what bramley must keep encrypted at rest.
type ServerToken struct {
	ConsumerKey    string `json:"consumer_key"`
	ConsumerSecret string `json:"consumer_secret"`
	AccessToken    string `json:"access_token"`
	AccessSecret   string `json:"access_secret"`
	// AccessTokenExpiry is when Apple stops accepting the token; an
	// administrator downloads a new one each year.
	AccessTokenExpiry time.Time `json:"access_token_expiry"`
}

// Expired reports whether the token has expired at now.
func (t *ServerToken) Expired(now time.Time) bool {
	return !t.AccessTokenExpiry.IsZero() && !now.Before(t.AccessTokenExpiry)
}

// Errors of ParseServerToken, for the message an administrator sees.
var (
	// ErrTokenMalformed: not a server token, or a damaged one.
	ErrTokenMalformed = errors.New("not an ADE server token: upload the .p7m file exactly as Apple Business Manager gave it")
	// ErrTokenForeign: a server token encrypted to another certificate.
	ErrTokenForeign = errors.New("the ADE server token is encrypted to another certificate: upload this server's certificate (GET /api/v1/ade/certificate) to the MDM server in Apple Business Manager and download a new token")
	// ErrTokenTampered: a server token for this certificate that does not
	// decrypt to a token: bytes changed on the way.
	ErrTokenTampered = errors.New("the ADE server token was altered or damaged: download it again from Apple Business Manager")
)

const (
	// maxTokenSize bounds the upload: Apple's tokens are a few kilobytes.
	maxTokenSize = 64 << 10
	// tokenCertLifetime is how long the certificate Apple encrypts server
	// tokens to stays valid. Its key never leaves bramley and every
	// token renewal uses it, so it outlives many yearly tokens.
	tokenCertLifetime = 10 * 365 * 24 * time.Hour
)

// ParseServerToken decrypts a server token as Apple Business Manager gives
// it: an S/MIME message (MIME headers, then base64 of a CMS EnvelopedData
// encrypted to cert) whose plaintext is again a MIME part holding the JSON
// between "-----BEGIN MESSAGE-----" and "-----END MESSAGE-----". Raw DER
// and bare base64 are accepted too, for a file someone has unwrapped. The
// errors wrap ErrTokenMalformed, ErrTokenForeign or ErrTokenTampered. The
// caller compares AccessTokenExpiry with its clock.
func ParseServerToken(p7m []byte, cert *x509.Certificate, key crypto.PrivateKey) (*ServerToken, error) {
	if cert == nil || key == nil {
		return nil, errors.New("parsing ADE server token: no certificate or key")
	}
	if len(p7m) > maxTokenSize {
		return nil, fmt.Errorf("%w (larger than %d bytes)", ErrTokenMalformed, maxTokenSize)
	}
	der, err := unwrapSMIME(p7m)
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrTokenMalformed, err)
	}
	p7, err := pki.ParseCMS(der)
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrTokenMalformed, err)
	}
	plain, err := decryptEnveloped(p7, cert, key)
	if err != nil {
		return nil, err
	}
	// Past decryption, garbage means changed ciphertext: CBC has no
	// integrity check, and padding catches only most changes.
	body, err := unwrapMessage(plain)
	if err != nil {
		return nil, fmt.Errorf("%w (decrypted content: %v)", ErrTokenTampered, err)
	}
	var tok ServerToken
	if err := json.Unmarshal(body, &tok); err != nil {
		return nil, fmt.Errorf("%w (decrypted JSON: %v)", ErrTokenTampered, err)
	}
	var missing []string
	for _, f := range []struct{ name, value string }{
		{"consumer_key", tok.ConsumerKey}, {"consumer_secret", tok.ConsumerSecret},
		{"access_token", tok.AccessToken}, {"access_secret", tok.AccessSecret},
	} {
		if strings.TrimSpace(f.value) == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w (no %s)", ErrTokenMalformed, strings.Join(missing, ", "))
	}
	return &tok, nil
}

// decryptEnveloped decrypts p7 for cert and key, telling a token for
// another certificate from a damaged one.
func decryptEnveloped(p7 *pkcs7.PKCS7, cert *x509.Certificate, key crypto.PrivateKey) (plain []byte, err error) {
	// smallstep/pkcs7 slices padding without bounds checks; a tampered
	// ciphertext must not take the server down.
	defer func() {
		if r := recover(); r != nil {
			plain, err = nil, fmt.Errorf("%w (decryption failed: %v)", ErrTokenTampered, r)
		}
	}()
	plain, err = p7.Decrypt(cert, key)
	switch {
	case err == nil:
		return plain, nil
	case errors.Is(err, pkcs7.ErrNotEncryptedContent):
		return nil, fmt.Errorf("%w (CMS that is not EnvelopedData)", ErrTokenMalformed)
	case strings.Contains(err.Error(), "no enveloped recipient"):
		// The library's only way to say no RecipientInfo names cert.
		return nil, ErrTokenForeign
	case errors.Is(err, pkcs7.ErrUnsupportedAlgorithm), errors.Is(err, pkcs7.ErrUnsupportedAsymmetricEncryptionAlgorithm):
		return nil, fmt.Errorf("%w (%v)", ErrTokenMalformed, err)
	}
	// The recipient names cert, yet its key or the content does not
	// decrypt (rsa.ErrDecryption, bad padding).
	return nil, fmt.Errorf("%w (decryption failed: %v)", ErrTokenTampered, err)
}

// unwrapSMIME returns the DER inside an S/MIME message: its headers are
// read and dropped, its body is base64.
func unwrapSMIME(data []byte) ([]byte, error) {
	data = bytes.TrimLeft(data, "\r\n\t ")
	if len(data) == 0 {
		return nil, errors.New("empty file")
	}
	if data[0] == 0x30 { // a DER SEQUENCE: already unwrapped
		return data, nil
	}
	body := data
	if looksLikeHeader(data) {
		r := textproto.NewReader(bufio.NewReader(bytes.NewReader(data)))
		h, err := r.ReadMIMEHeader()
		if err != nil {
			return nil, fmt.Errorf("reading S/MIME headers: %w", err)
		}
		if ct := h.Get("Content-Type"); ct != "" {
			mt, _, err := mime.ParseMediaType(ct)
			if err != nil || (mt != "application/pkcs7-mime" && mt != "application/x-pkcs7-mime") {
				return nil, fmt.Errorf("S/MIME content type %q, want application/pkcs7-mime", ct)
			}
		}
		if cte := h.Get("Content-Transfer-Encoding"); cte != "" && !strings.EqualFold(cte, "base64") {
			return nil, fmt.Errorf("S/MIME transfer encoding %q, want base64", cte)
		}
		rest, err := io.ReadAll(r.R)
		if err != nil {
			return nil, err
		}
		body = rest
	}
	der, err := decodeBase64(body)
	if err != nil {
		return nil, fmt.Errorf("decoding S/MIME body: %w", err)
	}
	if len(der) == 0 {
		return nil, errors.New("empty S/MIME body")
	}
	return der, nil
}

// unwrapMessage returns the JSON in a decrypted token: after optional MIME
// headers, between optional BEGIN/END MESSAGE lines. Apple may break the
// JSON over several lines, even inside a string, so the lines are joined
// without separators, as nanodep does.
func unwrapMessage(plain []byte) ([]byte, error) {
	plain = bytes.TrimLeft(plain, "\r\n\t ")
	body := plain
	if looksLikeHeader(plain) {
		r := textproto.NewReader(bufio.NewReader(bytes.NewReader(plain)))
		h, err := r.ReadMIMEHeader()
		if err != nil {
			return nil, fmt.Errorf("reading MIME headers: %w", err)
		}
		rest, err := io.ReadAll(r.R)
		if err != nil {
			return nil, err
		}
		body = rest
		if strings.EqualFold(h.Get("Content-Transfer-Encoding"), "base64") {
			if body, err = decodeBase64(body); err != nil {
				return nil, fmt.Errorf("decoding base64 body: %w", err)
			}
		}
	}
	var out bytes.Buffer
	began := false
	for line := range strings.Lines(string(body)) {
		line = strings.TrimRight(line, "\r\n")
		switch strings.TrimSpace(line) {
		case "-----BEGIN MESSAGE-----":
			began = true
			out.Reset() // anything before the marker is not the token
			continue
		case "-----END MESSAGE-----":
			if !began {
				return nil, errors.New("END MESSAGE without BEGIN MESSAGE")
			}
			return out.Bytes(), nil
		}
		out.WriteString(line)
	}
	if began {
		return nil, errors.New("BEGIN MESSAGE without END MESSAGE: the token is cut short")
	}
	return out.Bytes(), nil
}

// looksLikeHeader reports whether data begins with a MIME header line
// ("Name: value") rather than base64, JSON or a BEGIN line.
func looksLikeHeader(data []byte) bool {
	line, _, _ := bytes.Cut(data, []byte("\n"))
	name, _, ok := bytes.Cut(line, []byte(":"))
	if !ok || len(name) == 0 {
		return false
	}
	for _, c := range name {
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// decodeBase64 decodes base64 broken over lines, padded or not.
func decodeBase64(b []byte) ([]byte, error) {
	s := strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, string(b))
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// NewTokenKeyPair makes the RSA key and self-signed certificate whose PEM
// an administrator uploads to the MDM server in Apple Business Manager
// (GET /api/v1/ade/certificate); Apple encrypts the server token to it.
// RSA 2048 because Apple encrypts to RSA only. The key never leaves
// bramley: store it sealed.
func NewTokenKeyPair(now time.Time) (*x509.Certificate, *rsa.PrivateKey, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("generating ADE token key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial.Add(serial, big.NewInt(1)),
		Subject:      pkix.Name{CommonName: "bramley ADE server token", Organization: []string{"bramley"}},
		NotBefore:    now.Add(-10 * time.Minute),
		NotAfter:     now.Add(tokenCertLifetime),
		// Apple wraps the token's content key with this key (key
		// transport), hence key encipherment.
		KeyUsage:              x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating ADE token certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}
