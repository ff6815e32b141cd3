package scep

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"
	"github.com/smallstep/scep"

	"github.com/bramley-mdm/bramley/pki"
)

// TestEnvelopeRoundTrip encrypts with each reply cipher and decrypts with
// pkcs7, as a client does.
func TestEnvelopeRoundTrip(t *testing.T) {
	key := rsaKey(t, 2048, 0)
	dev := newDevice(t, key)
	content := bytes.Repeat([]byte("certificate "), 50)
	for _, c := range []*contentCipher{cipherAES128CBC, cipherDES3, cipherAES256CBC, cipherDES} {
		t.Run(c.name, func(t *testing.T) {
			env, err := encryptEnvelope(content, dev.cert, c)
			if err != nil {
				t.Fatal(err)
			}
			info := inspectEnvelope(env, dev.cert)
			if !info.parsed || info.cipher != c || !info.toCA || !info.rsaTransport {
				t.Errorf("inspected %+v", info)
			}
			p7, err := pkcs7.Parse(env)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p7.Decrypt(dev.cert, key)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, content) {
				t.Error("decrypted content differs")
			}
		})
	}
	if _, err := encryptEnvelope(content, dev.cert, cipherAES128GCM); err == nil {
		t.Error("encrypted with GCM, which the reply never uses")
	}
}

// TestImplicitRejection: a content key with bad padding decrypts to a
// random key of the expected length, without an error, while a good one
// decrypts to itself.
func TestImplicitRejection(t *testing.T) {
	key := rsaKey(t, 2048, 0)
	d := implicitRejection{Decrypter: key, keyLen: 24}
	good := bytes.Repeat([]byte{7}, 24)
	ct, err := rsa.EncryptPKCS1v15(rand.Reader, &key.PublicKey, good)
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.Decrypt(rand.Reader, ct, &rsa.PKCS1v15DecryptOptions{})
	if err != nil || !bytes.Equal(got, good) {
		t.Errorf("good key: %x, %v", got, err)
	}
	garbage := make([]byte, 256)
	rand.Read(garbage)
	garbage[0] = 0
	got, err = d.Decrypt(rand.Reader, garbage, &rsa.PKCS1v15DecryptOptions{})
	if err != nil || len(got) != 24 {
		t.Errorf("bad padding: %d bytes, %v; want 24 random bytes and no error", len(got), err)
	}
	if _, err := key.Decrypt(rand.Reader, garbage, &rsa.PKCS1v15DecryptOptions{}); err == nil {
		t.Error("the bare key accepted garbage: the test proves nothing")
	}
}

// recordingKey is a CA key that records how it is asked to decrypt.
type recordingKey struct {
	*rsa.PrivateKey
	mu   sync.Mutex
	opts []crypto.DecrypterOpts
}

func (k *recordingKey) Decrypt(r io.Reader, ct []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	k.mu.Lock()
	k.opts = append(k.opts, opts)
	k.mu.Unlock()
	return k.PrivateKey.Decrypt(r, ct, opts)
}

// TestDecryptsWithImplicitRejection checks that the service decrypts a
// request's content key with implicit rejection, sized for its cipher.
func TestDecryptsWithImplicitRejection(t *testing.T) {
	ca, _ := testCA(t)
	key := &recordingKey{PrivateKey: ca.Signer().(*rsa.PrivateKey)}
	rec, err := pki.NewCAFromKeyPair(ca.Certificate(), key, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	s := New(rec, nil, WithoutChallenge())
	dev := newDevice(t, rsaKey(t, 2048, 0))
	for _, c := range []*contentCipher{cipherAES128CBC, cipherDES3} {
		req := buildRequest(t, reqSpec{content: makeCSR(t, dev.key, "d", "").Raw, recipient: ca.Certificate(), cipher: c, signer: dev})
		r := parseReply(t, post(t, s.Handler(), req.der), ca.Certificate(), dev)
		if r.msg.PKIStatus != scep.SUCCESS {
			t.Fatalf("%s: %s", c.name, r.failInfoText)
		}
		last := key.opts[len(key.opts)-1]
		if o, ok := last.(*rsa.PKCS1v15DecryptOptions); !ok || o.SessionKeyLen != c.keyLen {
			t.Errorf("%s: decrypted with %#v, want SessionKeyLen %d", c.name, last, c.keyLen)
		}
	}
}
