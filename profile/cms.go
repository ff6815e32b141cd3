package profile

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"

	"github.com/bramley-mdm/bramley/pki"
	"github.com/smallstep/pkcs7"
)

// Sign returns profile (the bytes Marshal made) as a signed profile: a DER
// CMS SignedData with the plist attached and the signer's certificate plus
// chain included, as Apple's "Signing a Profile" describes. Serve it as
// ContentType. A device shows a signed profile as verified when the chain
// leads to a root it trusts, and accepts a replacement MDM profile only
// when the same identity signed both, so sign every enrollment profile of
// a server with one identity.
//
// chain lists the certificates above cert, issuer first; the root may be
// left out. The digest is SHA-256.
func Sign(profile []byte, cert *x509.Certificate, key crypto.Signer, chain []*x509.Certificate) ([]byte, error) {
	if cert == nil || key == nil {
		return nil, errors.New("signing profile: no certificate or key")
	}
	sd, err := pkcs7.NewSignedData(profile)
	if err != nil {
		return nil, fmt.Errorf("signing profile: %w", err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSignerChain(cert, key, chain, pkcs7.SignerInfoConfig{}); err != nil {
		return nil, fmt.Errorf("signing profile: %w", err)
	}
	der, err := sd.Finish()
	if err != nil {
		return nil, fmt.Errorf("signing profile: %w", err)
	}
	return der, nil
}

// Verify checks a signed profile: one signer, whose signature covers the
// attached content and whose certificate chains, through the certificates
// the message carries, to one of roots. It returns the content (the
// profile's plist; Parse reads it) and the signer's certificate.
func Verify(signed []byte, roots *x509.CertPool) (content []byte, signer *x509.Certificate, err error) {
	if roots == nil {
		return nil, nil, errors.New("verifying profile: no trusted roots")
	}
	p7, err := pki.ParseCMS(signed)
	if err != nil {
		return nil, nil, fmt.Errorf("verifying profile: %w", err)
	}
	if len(p7.Content) == 0 {
		return nil, nil, errors.New("verifying profile: the CMS message carries no content")
	}
	if len(p7.Signers) != 1 {
		return nil, nil, fmt.Errorf("verifying profile: %d signers, want 1", len(p7.Signers))
	}
	signer = p7.GetOnlySigner()
	if signer == nil {
		return nil, nil, errors.New("verifying profile: the signer's certificate is not in the message")
	}
	if err := verifyPKCS7(p7, roots); err != nil {
		return nil, nil, fmt.Errorf("verifying profile: %w", err)
	}
	return p7.Content, signer, nil
}

func verifyPKCS7(p7 *pkcs7.PKCS7, roots *x509.CertPool) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed CMS: %v", r)
		}
	}()
	return p7.VerifyWithChain(roots)
}

// EncryptPayloads encrypts p's payloads to recipient, following Apple's
// "Encrypted Profiles": PayloadContent, serialized alone as a plist whose
// top level is an array, becomes EncryptedPayloadContent, a DER CMS
// EnvelopedData that only the holder of recipient's key can open, and
// IsEncrypted is set. p is validated first, because once encrypted its
// payloads can no longer be checked. Sign the result as usual.
//
// The recipient is a certificate whose key is on the device — in OTA
// phase 3, the identity the device obtained over SCEP in phase 2 — and
// must be RSA, the only key transport Apple devices offer for this. The
// content is encrypted with AES-256-CBC, which Apple's devices decrypt.
func EncryptPayloads(p *Profile, recipient *x509.Certificate) error {
	if p.PayloadType != TypeConfiguration {
		return fmt.Errorf("encrypting payloads: a %q profile has no payload array", p.PayloadType)
	}
	if p.IsEncrypted {
		return errors.New("encrypting payloads: the profile is already encrypted")
	}
	if err := Validate(p); err != nil {
		return err
	}
	items, err := wirePayloads(p.PayloadContent)
	if err != nil {
		return fmt.Errorf("encrypting payloads: %w", err)
	}
	plain, err := marshalPlist(items)
	if err != nil {
		return fmt.Errorf("encrypting payloads: %w", err)
	}
	env, err := envelope(plain, recipient)
	if err != nil {
		return fmt.Errorf("encrypting payloads: %w", err)
	}
	p.PayloadContent = nil
	p.IsEncrypted = true
	p.EncryptedPayloadContent = env
	return nil
}

// DecryptPayloads reverses EncryptPayloads with the recipient's
// certificate and key, as a device does; bramley's device simulator uses
// it.
func DecryptPayloads(p *Profile, cert *x509.Certificate, key crypto.Decrypter) error {
	if !p.IsEncrypted || len(p.EncryptedPayloadContent) == 0 {
		return errors.New("decrypting payloads: the profile is not encrypted")
	}
	p7, err := pki.ParseCMS(p.EncryptedPayloadContent)
	if err != nil {
		return fmt.Errorf("decrypting payloads: %w", err)
	}
	plain, err := decryptPKCS7(p7, cert, key)
	if err != nil {
		return fmt.Errorf("decrypting payloads: %w", err)
	}
	payloads, err := decodePayloads(plain)
	if err != nil {
		return fmt.Errorf("decrypting payloads: %w", err)
	}
	p.PayloadContent = payloads
	p.IsEncrypted = false
	p.EncryptedPayloadContent = nil
	return nil
}

func decryptPKCS7(p7 *pkcs7.PKCS7, cert *x509.Certificate, key crypto.Decrypter) (plain []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed CMS: %v", r)
		}
	}()
	return p7.Decrypt(cert, key)
}

// Object identifiers for EnvelopedData (RFC 5652, RFC 3565, RFC 8017).
var (
	oidData          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	oidRSAEncryption = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidAES256CBC     = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
)

type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue
}

type envelopedData struct {
	Version              int
	RecipientInfos       []keyTransRecipientInfo `asn1:"set"`
	EncryptedContentInfo encryptedContentInfo
}

type keyTransRecipientInfo struct {
	Version                int
	IssuerAndSerialNumber  issuerAndSerialNumber
	KeyEncryptionAlgorithm pkix.AlgorithmIdentifier
	EncryptedKey           []byte
}

type issuerAndSerialNumber struct {
	Issuer       asn1.RawValue
	SerialNumber *big.Int
}

type encryptedContentInfo struct {
	ContentType                asn1.ObjectIdentifier
	ContentEncryptionAlgorithm pkix.AlgorithmIdentifier
	EncryptedContent           []byte `asn1:"tag:0"`
}

// envelope returns a DER CMS EnvelopedData of plain for recipient:
// AES-256-CBC content, RSA PKCS#1 v1.5 key transport. It is built here
// rather than with pkcs7.Encrypt because that function takes its content
// algorithm from a package variable (DES-CBC unless changed) that the SCEP
// library shares: setting it would race with, and change, SCEP replies.
func envelope(plain []byte, recipient *x509.Certificate) ([]byte, error) {
	if recipient == nil {
		return nil, errors.New("no recipient certificate")
	}
	pub, ok := recipient.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("recipient key is %T; profiles can be encrypted only to RSA keys", recipient.PublicKey)
	}
	key := make([]byte, 32)
	iv := make([]byte, aes.BlockSize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	// PKCS#7 padding (RFC 5652 section 6.3): always 1 to 16 bytes.
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	padded := make([]byte, len(plain)+pad)
	copy(padded, plain)
	for i := len(plain); i < len(padded); i++ {
		padded[i] = byte(pad)
	}
	ciphertext := make([]byte, len(padded))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ciphertext, padded)

	encKey, err := rsa.EncryptPKCS1v15(rand.Reader, pub, key)
	if err != nil {
		return nil, fmt.Errorf("encrypting the content key: %w", err)
	}
	ivParam, err := asn1.Marshal(iv)
	if err != nil {
		return nil, err
	}
	env := envelopedData{
		Version: 0, // issuerAndSerialNumber recipients only
		RecipientInfos: []keyTransRecipientInfo{{
			Version:                0,
			IssuerAndSerialNumber:  issuerAndSerialNumber{Issuer: asn1.RawValue{FullBytes: recipient.RawIssuer}, SerialNumber: recipient.SerialNumber},
			KeyEncryptionAlgorithm: pkix.AlgorithmIdentifier{Algorithm: oidRSAEncryption, Parameters: asn1.NullRawValue},
			EncryptedKey:           encKey,
		}},
		EncryptedContentInfo: encryptedContentInfo{
			ContentType:                oidData,
			ContentEncryptionAlgorithm: pkix.AlgorithmIdentifier{Algorithm: oidAES256CBC, Parameters: asn1.RawValue{FullBytes: ivParam}},
			EncryptedContent:           ciphertext,
		},
	}
	inner, err := asn1.Marshal(env)
	if err != nil {
		return nil, err
	}
	// encoding/asn1 ignores struct tags on a RawValue, so the explicit
	// [0] around the content is spelt out.
	return asn1.Marshal(contentInfo{
		ContentType: oidEnvelopedData,
		Content:     asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: inner},
	})
}
