package scep

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
)

// The CMS EnvelopedData of a SCEP message (RFC 5652 §6, RFC 8894 §3.2.2).
//
// smallstep/pkcs7 decrypts requests for us, but it cannot be told which
// cipher to encrypt a CertRep with except through a process-wide variable
// (pkcs7.ContentEncryptionAlgorithm, single DES by default) that other
// packages may set at the same time, and it cannot encrypt with triple DES,
// which an old device that sent DES3 may be all it understands. So the reply
// envelope is built here, and the request's envelope is read here only as
// far as its algorithms and recipients.

var (
	oidData          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	oidRSAEncryption = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidRSAESOAEP     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 7}
)

// contentCipher is a content-encryption algorithm pkcs7 can decrypt.
type contentCipher struct {
	name   string
	oid    asn1.ObjectIdentifier
	keyLen int
	gcm    bool
}

// The ciphers a request may use. Single DES is accepted because it is what
// micromdm's scepclient and smallstep/scep's own client send whatever
// GetCACaps says; what it protects is a one-time challenge, consumed by the
// very request it travels in, normally inside TLS as well. bramley never
// answers with it.
var (
	cipherDES       = &contentCipher{name: "des-cbc", oid: asn1.ObjectIdentifier{1, 3, 14, 3, 2, 7}, keyLen: 8}
	cipherDES3      = &contentCipher{name: "des-ede3-cbc", oid: asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}, keyLen: 24}
	cipherAES128CBC = &contentCipher{name: "aes128-cbc", oid: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}, keyLen: 16}
	cipherAES256CBC = &contentCipher{name: "aes256-cbc", oid: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}, keyLen: 32}
	cipherAES128GCM = &contentCipher{name: "aes128-gcm", oid: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 6}, keyLen: 16, gcm: true}
	cipherAES256GCM = &contentCipher{name: "aes256-gcm", oid: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 46}, keyLen: 32, gcm: true}

	contentCiphers = []*contentCipher{cipherDES, cipherDES3, cipherAES128CBC, cipherAES256CBC, cipherAES128GCM, cipherAES256GCM}
)

func cipherFor(oid asn1.ObjectIdentifier) *contentCipher {
	for _, c := range contentCiphers {
		if c.oid.Equal(oid) {
			return c
		}
	}
	return nil
}

func (c *contentCipher) block(key []byte) (cipher.Block, error) {
	switch c {
	case cipherDES:
		return des.NewCipher(key)
	case cipherDES3:
		return des.NewTripleDESCipher(key)
	default:
		return aes.NewCipher(key)
	}
}

type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"explicit,optional,tag:0"`
}

type envelopedData struct {
	Version int
	// RecipientInfos stays raw: other kinds of recipient (key agreement,
	// KEK) are tagged alternatives that must not fail the whole parse.
	RecipientInfos       []asn1.RawValue `asn1:"set"`
	EncryptedContentInfo encryptedContentInfo
}

type keyTransRecipientInfo struct {
	Version                int
	IssuerAndSerialNumber  issuerAndSerial
	KeyEncryptionAlgorithm pkix.AlgorithmIdentifier
	EncryptedKey           []byte
}

type issuerAndSerial struct {
	IssuerName   asn1.RawValue
	SerialNumber *big.Int
}

type encryptedContentInfo struct {
	ContentType                asn1.ObjectIdentifier
	ContentEncryptionAlgorithm pkix.AlgorithmIdentifier
	EncryptedContent           asn1.RawValue `asn1:"tag:0,optional"`
}

// envelopeInfo is what a request's envelope says in the clear.
type envelopeInfo struct {
	// parsed is false when the envelope is not DER (BER is legal CMS, and
	// pkcs7 may still decrypt it); nothing else is then known.
	parsed bool
	// cipherOID is the content-encryption algorithm; cipher is nil when
	// pkcs7 cannot decrypt it.
	cipherOID asn1.ObjectIdentifier
	cipher    *contentCipher
	// toCA is whether a key-transport recipient is the CA certificate, and
	// rsaTransport whether that recipient's key is RSA-encrypted the way
	// pkcs7 can open (PKCS #1 v1.5 or OAEP).
	toCA         bool
	rsaTransport bool
}

// inspectEnvelope reads the clear-text parts of the EnvelopedData inside a
// request's signed content.
func inspectEnvelope(content []byte, ca *x509.Certificate) envelopeInfo {
	var ci contentInfo
	if rest, err := asn1.Unmarshal(content, &ci); err != nil || len(rest) != 0 || !ci.ContentType.Equal(oidEnvelopedData) {
		return envelopeInfo{}
	}
	// The explicit [0] is kept in the RawValue: the EnvelopedData is its
	// content.
	var ed envelopedData
	if rest, err := asn1.Unmarshal(ci.Content.Bytes, &ed); err != nil || len(rest) != 0 {
		return envelopeInfo{}
	}
	info := envelopeInfo{
		parsed:    true,
		cipherOID: ed.EncryptedContentInfo.ContentEncryptionAlgorithm.Algorithm,
		cipher:    cipherFor(ed.EncryptedContentInfo.ContentEncryptionAlgorithm.Algorithm),
	}
	for _, raw := range ed.RecipientInfos {
		var ri keyTransRecipientInfo
		if _, err := asn1.Unmarshal(raw.FullBytes, &ri); err != nil || ri.IssuerAndSerialNumber.SerialNumber == nil {
			continue
		}
		if ri.IssuerAndSerialNumber.SerialNumber.Cmp(ca.SerialNumber) != 0 ||
			!bytes.Equal(ri.IssuerAndSerialNumber.IssuerName.FullBytes, ca.RawIssuer) {
			continue
		}
		info.toCA = true
		alg := ri.KeyEncryptionAlgorithm.Algorithm
		info.rsaTransport = alg.Equal(oidRSAEncryption) || alg.Equal(oidRSAESOAEP)
		break
	}
	return info
}

// replyCipher picks the cipher of the CertRep's envelope: AES-128-CBC, the
// RFC 8894 "AES" capability, unless the device sent triple DES. A client
// that chose DES3 although GetCACaps offered AES (as the fixture device
// did) may understand nothing else, so it gets DES3 back.
func replyCipher(req envelopeInfo) *contentCipher {
	if req.cipher == cipherDES3 {
		return cipherDES3
	}
	return cipherAES128CBC
}

// encryptEnvelope returns a CMS EnvelopedData (in its ContentInfo) of
// content for recipient's RSA key, with RSA PKCS #1 v1.5 key transport:
// the only kind RFC 8894 clients, Apple's among them, are required to open.
func encryptEnvelope(content []byte, recipient *x509.Certificate, c *contentCipher) ([]byte, error) {
	pub, ok := recipient.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("encrypting to a %T key: only RSA is supported", recipient.PublicKey)
	}
	if c.gcm {
		return nil, fmt.Errorf("encrypting with %s is not supported", c.name)
	}
	key := make([]byte, c.keyLen)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	block, err := c.block(key)
	if err != nil {
		return nil, err
	}
	iv := make([]byte, block.BlockSize())
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	padded := pad(content, block.BlockSize())
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(padded, padded)
	encryptedKey, err := rsa.EncryptPKCS1v15(rand.Reader, pub, key)
	if err != nil {
		return nil, fmt.Errorf("encrypting content key: %w", err)
	}
	ri, err := asn1.Marshal(keyTransRecipientInfo{
		Version: 0,
		IssuerAndSerialNumber: issuerAndSerial{
			IssuerName:   asn1.RawValue{FullBytes: recipient.RawIssuer},
			SerialNumber: recipient.SerialNumber,
		},
		KeyEncryptionAlgorithm: pkix.AlgorithmIdentifier{Algorithm: oidRSAEncryption, Parameters: asn1.NullRawValue},
		EncryptedKey:           encryptedKey,
	})
	if err != nil {
		return nil, err
	}
	ed, err := asn1.Marshal(envelopedData{
		Version:        0,
		RecipientInfos: []asn1.RawValue{{FullBytes: ri}},
		EncryptedContentInfo: encryptedContentInfo{
			ContentType: oidData,
			ContentEncryptionAlgorithm: pkix.AlgorithmIdentifier{
				Algorithm:  c.oid,
				Parameters: asn1.RawValue{Tag: asn1.TagOctetString, Bytes: iv},
			},
			EncryptedContent: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, Bytes: padded},
		},
	})
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(contentInfo{
		ContentType: oidEnvelopedData,
		Content:     asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: ed},
	})
}

// pad returns a copy of data with PKCS #7 padding (RFC 5652 §6.3).
func pad(data []byte, blockSize int) []byte {
	n := blockSize - len(data)%blockSize
	out := make([]byte, len(data), len(data)+n)
	copy(out, data)
	return append(out, bytes.Repeat([]byte{byte(n)}, n)...)
}

// implicitRejection wraps the CA key so that decrypting a request's content
// key never fails on bad PKCS #1 v1.5 padding: it yields a random key of the
// expected length instead, in constant time, and decryption then fails
// further on like any other corrupt envelope. Anyone can send a PKCSReq, so
// an answer that told bad padding apart from the rest would be a
// Bleichenbacher oracle on the CA key, with which an attacker could in time
// sign anything with it — device identities included (the TLS countermeasure
// of RFC 5246 §7.4.7.1, applied to CMS).
type implicitRejection struct {
	crypto.Decrypter
	keyLen int
}

func (d implicitRejection) Decrypt(r io.Reader, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	if o, ok := opts.(*rsa.PKCS1v15DecryptOptions); ok && o.SessionKeyLen == 0 && d.keyLen > 0 {
		opts = &rsa.PKCS1v15DecryptOptions{SessionKeyLen: d.keyLen}
	}
	return d.Decrypter.Decrypt(r, ciphertext, opts)
}

// errNotDecrypter means the CA key cannot decrypt what devices send: it is
// not RSA, or (say, in an HSM) offers no decryption.
var errNotDecrypter = errors.New("the CA key cannot decrypt SCEP requests: it must be an RSA key that can decrypt")
