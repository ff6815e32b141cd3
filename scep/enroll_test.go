package scep

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"
	"github.com/smallstep/scep"
)

// TestEnroll issues identities for PKCSReq messages in each cipher and
// digest devices send, and checks the CertRep a device gets back.
func TestEnroll(t *testing.T) {
	tests := []struct {
		name        string
		library     bool // built by smallstep/scep's client: single DES, SHA-1
		cipher      *contentCipher
		digest      asn1.ObjectIdentifier
		replyCipher *contentCipher
	}{
		{name: "AES-128 SHA-256 (current Apple devices)", cipher: cipherAES128CBC, digest: pkcs7.OIDDigestAlgorithmSHA256, replyCipher: cipherAES128CBC},
		{name: "DES3 SHA-1 (the fixture device)", cipher: cipherDES3, digest: pkcs7.OIDDigestAlgorithmSHA1, replyCipher: cipherDES3},
		{name: "AES-256 SHA-512", cipher: cipherAES256CBC, digest: pkcs7.OIDDigestAlgorithmSHA512, replyCipher: cipherAES128CBC},
		{name: "single DES SHA-1 (smallstep/scep and micromdm clients)", library: true, digest: pkcs7.OIDDigestAlgorithmSHA1, replyCipher: cipherAES128CBC},
	}
	ca, issued := testCA(t)
	challenges := &memChallenges{}
	obs := &observations{}
	s := New(ca, challenges, WithObserver(obs.observe), WithLifetime(30*24*time.Hour))
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := newDevice(t, rsaKey(t, 2048, i))
			cn := "device-" + tt.name[:3]
			secret := "challenge-" + tt.name
			challenges.add(secret, Challenge{Subject: cn, EnrollmentID: "enr-1", Source: "test", ExpiresAt: time.Now().Add(time.Hour)})
			csr := makeCSR(t, dev.key, cn, secret)
			var req builtRequest
			if tt.library {
				req = libraryRequest(t, scep.PKCSReq, csr, dev, ca.Certificate())
			} else {
				req = buildRequest(t, reqSpec{content: csr.Raw, recipient: ca.Certificate(), cipher: tt.cipher, digest: tt.digest, signer: dev})
			}
			before := issued.count()

			r := parseReply(t, post(t, s.Handler(), req.der), ca.Certificate(), dev)
			if r.msg.PKIStatus != scep.SUCCESS {
				t.Fatalf("pkiStatus %q, failInfo %q: %s", r.msg.PKIStatus, r.msg.FailInfo, r.failInfoText)
			}
			checkEcho(t, r, req)
			if got := obs.last(); got != [2]string{"PKCSReq", "issued"} {
				t.Errorf("observed %v", got)
			}
			if !r.digest.Equal(tt.digest) {
				t.Errorf("reply digest %v, want the request's %v", r.digest, tt.digest)
			}
			if r.certs != 2 {
				t.Errorf("reply carries %d certificates, want the issued one and the CA's", r.certs)
			}
			checkReplyCipher(t, r, dev, tt.replyCipher)

			cert := r.msg.Certificate
			if err := cert.CheckSignatureFrom(ca.Certificate()); err != nil {
				t.Errorf("not issued by the CA: %v", err)
			}
			if !cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(csr.PublicKey) {
				t.Error("certificate is not for the CSR's key")
			}
			if cert.Subject.CommonName != cn || len(cert.Subject.Organization) != 1 {
				t.Errorf("subject = %v, want the CSR's", cert.Subject)
			}
			if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
				t.Errorf("ExtKeyUsage = %v", cert.ExtKeyUsage)
			}
			if d := cert.NotAfter.Sub(cert.NotBefore); d < 30*24*time.Hour || d > 30*24*time.Hour+2*time.Minute {
				t.Errorf("lifetime %v, want the configured 30 days", d)
			}
			if issued.count() != before+1 {
				t.Errorf("recorded %d certificates, want 1", issued.count()-before)
			}

			// The challenge was one-time.
			again := buildRequest(t, reqSpec{content: csr.Raw, recipient: ca.Certificate(), signer: dev})
			r = parseReply(t, post(t, s.Handler(), again.der), ca.Certificate(), dev)
			checkFailure(t, r, scep.BadRequest)
			checkEcho(t, r, again)
			if got := obs.last(); got != [2]string{"PKCSReq", "challenge_invalid"} {
				t.Errorf("observed %v", got)
			}
			if issued.count() != before+1 {
				t.Error("a used challenge issued again")
			}
		})
	}
}

// checkReplyCipher checks which cipher the reply's envelope uses.
func checkReplyCipher(t *testing.T, r *reply, dev *device, want *contentCipher) {
	t.Helper()
	p7, err := pkcs7.Parse(r.raw)
	if err != nil {
		t.Fatal(err)
	}
	info := inspectEnvelope(p7.Content, dev.cert)
	if !info.parsed || !info.toCA {
		t.Fatalf("reply envelope: %+v; want one for the requester's certificate", info)
	}
	if info.cipher != want {
		t.Errorf("reply encrypted with %v, want %s", info.cipherOID, want.name)
	}
}

// TestEnrollRefused runs the PKCSReq rules: each request breaks one, gets
// the failInfo the rule answers, and nothing is issued.
func TestEnrollRefused(t *testing.T) {
	ca, issued := testCA(t)
	other, _ := testCA(t)
	dev := newDevice(t, rsaKey(t, 2048, 0))
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecSigner := selfSigned(t, ecKey, "EC SIGNER")
	aes192 := &contentCipher{name: "aes192-cbc", oid: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}, keyLen: 24}
	// A recipient with the CA's issuer and serial but another key: the CA
	// key decrypts the content key into bad padding.
	impostor := *ca.Certificate()
	impostor.PublicKey = rsaKey(t, 2048, 1).Public()

	tests := []struct {
		name      string
		challenge Challenge // added under the secret "good"
		request   func(t *testing.T) builtRequest
		failInfo  scep.FailInfo
		outcome   string
	}{
		{
			name: "no challenge",
			request: func(t *testing.T) builtRequest {
				return buildRequest(t, reqSpec{content: makeCSR(t, dev.key, "d", "").Raw, recipient: ca.Certificate(), signer: dev})
			},
			failInfo: scep.BadRequest, outcome: "challenge_missing",
		},
		{
			name: "wrong challenge",
			request: func(t *testing.T) builtRequest {
				return buildRequest(t, reqSpec{content: makeCSR(t, dev.key, "d", "bad").Raw, recipient: ca.Certificate(), signer: dev})
			},
			failInfo: scep.BadRequest, outcome: "challenge_invalid",
		},
		{
			name:      "expired challenge",
			challenge: Challenge{ExpiresAt: time.Now().Add(-time.Second)},
			request: func(t *testing.T) builtRequest {
				return buildRequest(t, reqSpec{content: makeCSR(t, dev.key, "d", "good").Raw, recipient: ca.Certificate(), signer: dev})
			},
			failInfo: scep.BadRequest, outcome: "challenge_invalid",
		},
		{
			name:      "subject not the challenge's",
			challenge: Challenge{Subject: "device-A"},
			request: func(t *testing.T) builtRequest {
				return buildRequest(t, reqSpec{content: makeCSR(t, dev.key, "device-B", "good").Raw, recipient: ca.Certificate(), signer: dev})
			},
			failInfo: scep.BadRequest, outcome: "subject_mismatch",
		},
		{
			name: "RSA-1024 key",
			request: func(t *testing.T) builtRequest {
				return buildRequest(t, reqSpec{content: makeCSR(t, rsaKey(t, 1024, 0), "d", "good").Raw, recipient: ca.Certificate(), signer: dev})
			},
			failInfo: scep.BadAlg, outcome: "key_policy",
		},
		{
			name: "EC key in the CSR",
			request: func(t *testing.T) builtRequest {
				return buildRequest(t, reqSpec{content: makeCSR(t, ecKey, "d", "good").Raw, recipient: ca.Certificate(), signer: dev})
			},
			failInfo: scep.BadAlg, outcome: "key_policy",
		},
		{
			name: "CSR signature broken",
			request: func(t *testing.T) builtRequest {
				raw := makeCSR(t, dev.key, "d", "good").Raw
				raw[len(raw)-1] ^= 1
				return buildRequest(t, reqSpec{content: raw, recipient: ca.Certificate(), signer: dev})
			},
			failInfo: scep.BadMessageCheck, outcome: "csr_signature",
		},
		{
			name: "signed with an EC certificate",
			request: func(t *testing.T) builtRequest {
				return buildSignedEC(t, ecKey, ecSigner, makeCSR(t, dev.key, "d", "good").Raw, ca.Certificate())
			},
			failInfo: scep.BadAlg, outcome: "signer_key",
		},
		{
			name: "outer signature broken",
			request: func(t *testing.T) builtRequest {
				req := buildRequest(t, reqSpec{content: makeCSR(t, dev.key, "d", "good").Raw, recipient: ca.Certificate(), signer: dev})
				flipInContent(t, req.der)
				return req
			},
			failInfo: scep.BadMessageCheck, outcome: "bad_signature",
		},
		{
			name: "encrypted to another CA",
			request: func(t *testing.T) builtRequest {
				return buildRequest(t, reqSpec{content: makeCSR(t, dev.key, "d", "good").Raw, recipient: other.Certificate(), signer: dev})
			},
			failInfo: scep.BadCertID, outcome: "wrong_recipient",
		},
		{
			name: "AES-192",
			request: func(t *testing.T) builtRequest {
				return buildRequest(t, reqSpec{content: makeCSR(t, dev.key, "d", "good").Raw, recipient: ca.Certificate(), cipher: aes192, signer: dev})
			},
			failInfo: scep.BadAlg, outcome: "unsupported_algorithm",
		},
		{
			name: "envelope holds no CSR",
			request: func(t *testing.T) builtRequest {
				return buildRequest(t, reqSpec{content: []byte("not a CSR"), recipient: ca.Certificate(), signer: dev})
			},
			failInfo: scep.BadMessageCheck, outcome: "undecryptable",
		},
		{
			// Must be answered exactly like the CSR that does not parse:
			// otherwise the answer is a padding oracle on the CA key.
			name: "content key with bad padding",
			request: func(t *testing.T) builtRequest {
				return buildRequest(t, reqSpec{content: makeCSR(t, dev.key, "d", "good").Raw, recipient: &impostor, signer: dev})
			},
			failInfo: scep.BadMessageCheck, outcome: "undecryptable",
		},
		{
			name: "CertPoll",
			request: func(t *testing.T) builtRequest {
				return buildRequest(t, reqSpec{messageType: scep.CertPoll, content: makeCSR(t, dev.key, "d", "good").Raw, recipient: ca.Certificate(), signer: dev})
			},
			failInfo: scep.BadRequest, outcome: "unsupported_message_type",
		},
	}
	texts := map[string]string{} // failInfoText by outcome
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			challenges := &memChallenges{}
			ch := tt.challenge
			if ch.ExpiresAt.IsZero() {
				ch.ExpiresAt = time.Now().Add(time.Hour)
			}
			challenges.add("good", ch)
			obs := &observations{}
			s := New(ca, challenges, WithObserver(obs.observe))
			req := tt.request(t)

			r := parseReply(t, post(t, s.Handler(), req.der), ca.Certificate(), nil)
			checkFailure(t, r, tt.failInfo)
			checkEcho(t, r, req)
			if got := obs.last(); got[1] != tt.outcome {
				t.Errorf("outcome %q (%s), want %q", got[1], r.failInfoText, tt.outcome)
			}
			if r.certs != 1 {
				t.Errorf("FAILURE carries %d certificates, want the CA's alone", r.certs)
			}
			if n := issued.count(); n != 0 {
				t.Fatalf("%d certificates issued", n)
			}
			if tt.outcome == "undecryptable" {
				if prev, ok := texts[tt.outcome]; ok && prev != r.failInfoText {
					t.Errorf("failInfoText %q, but %q for the other undecryptable request", r.failInfoText, prev)
				}
				texts[tt.outcome] = r.failInfoText
			}
		})
	}
}

// buildSignedEC signs a request with an EC certificate, which no reply
// could be encrypted to.
func buildSignedEC(t *testing.T, key *ecdsa.PrivateKey, cert *x509.Certificate, content []byte, ca *x509.Certificate) builtRequest {
	t.Helper()
	env, err := encryptEnvelope(content, ca, cipherAES128CBC)
	if err != nil {
		t.Fatal(err)
	}
	sd, _ := pkcs7.NewSignedData(env)
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	nonce := []byte("0123456789abcdef")
	if err := sd.AddSigner(cert, key, pkcs7.SignerInfoConfig{ExtraSignedAttributes: []pkcs7.Attribute{
		{Type: oidTransactionID, Value: "ec-1"},
		{Type: oidMessageType, Value: scep.PKCSReq},
		{Type: oidSenderNonce, Value: nonce},
	}}); err != nil {
		t.Fatal(err)
	}
	der, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return builtRequest{der: der, transactionID: "ec-1", senderNonce: nonce}
}

// flipInContent changes one byte of the signed content (in the envelope's
// ciphertext, near its end), so the message digest no longer matches.
func flipInContent(t *testing.T, der []byte) {
	t.Helper()
	p7, err := pkcs7.Parse(der)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(der), string(p7.Content))
	if i < 0 {
		t.Fatal("content not found in the message")
	}
	der[i+len(p7.Content)-3] ^= 0xff
}

// TestStaticChallenge accepts the operator's shared challenge, repeatedly,
// alongside one-time challenges.
func TestStaticChallenge(t *testing.T) {
	ca, issued := testCA(t)
	challenges := &memChallenges{}
	challenges.add("one-time", Challenge{ExpiresAt: time.Now().Add(time.Hour)})
	s := New(ca, challenges, WithStaticChallenge("shared secret"))
	dev := newDevice(t, rsaKey(t, 2048, 0))
	for i, tt := range []struct {
		challenge string
		ok        bool
	}{
		{"shared secret", true},
		{"shared secret", true}, // static challenges are not one-time
		{"shared secreT", false},
		{"shared secret ", false},
		{"one-time", true},
		{"one-time", false},
	} {
		req := buildRequest(t, reqSpec{content: makeCSR(t, dev.key, "d", tt.challenge).Raw, recipient: ca.Certificate(), signer: dev})
		r := parseReply(t, post(t, s.Handler(), req.der), ca.Certificate(), dev)
		if got := r.msg.PKIStatus == scep.SUCCESS; got != tt.ok {
			t.Errorf("%d: challenge %q: success %v, want %v (%s)", i, tt.challenge, got, tt.ok, r.failInfoText)
		}
	}
	if n := issued.count(); n != 3 {
		t.Errorf("%d certificates issued, want 3", n)
	}
}

// TestChallengeStoreDown answers a failing store with a 500, not a refusal
// the device would take as final, and issues nothing.
func TestChallengeStoreDown(t *testing.T) {
	ca, issued := testCA(t)
	obs := &observations{}
	s := New(ca, &memChallenges{err: errors.New("database down")}, WithObserver(obs.observe))
	dev := newDevice(t, rsaKey(t, 2048, 0))
	req := buildRequest(t, reqSpec{content: makeCSR(t, dev.key, "d", "x").Raw, recipient: ca.Certificate(), signer: dev})
	if w := post(t, s.Handler(), req.der); w.Code != http.StatusInternalServerError {
		t.Errorf("status %d, want 500", w.Code)
	}
	if got := obs.last(); got != [2]string{"PKCSReq", "error"} {
		t.Errorf("observed %v", got)
	}
	if issued.count() != 0 {
		t.Error("issued")
	}
}

// TestChallengeRace sends one challenge in many requests at once: exactly
// one gets a certificate.
func TestChallengeRace(t *testing.T) {
	ca, issued := testCA(t)
	challenges := &memChallenges{}
	challenges.add("once", Challenge{ExpiresAt: time.Now().Add(time.Hour)})
	s := New(ca, challenges)
	dev := newDevice(t, rsaKey(t, 2048, 0))
	const n = 8
	reqs := make([]builtRequest, n)
	for i := range reqs {
		reqs[i] = buildRequest(t, reqSpec{content: makeCSR(t, dev.key, "d", "once").Raw, recipient: ca.Certificate(), signer: dev})
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	successes := 0
	for _, req := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := post(t, s.Handler(), req.der)
			p7, err := pkcs7.Parse(w.Body.Bytes())
			if err != nil {
				t.Error(err)
				return
			}
			var status string
			p7.UnmarshalSignedAttribute(oidPKIStatus, &status)
			if status == string(scep.SUCCESS) {
				mu.Lock()
				successes++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if successes != 1 || issued.count() != 1 {
		t.Errorf("%d successes, %d issued; want 1", successes, issued.count())
	}
}

// TestStoreContext checks the store sees the request's context.
func TestStoreContext(t *testing.T) {
	ca, _ := testCA(t)
	type key struct{}
	var got any
	store := challengeFunc(func(ctx context.Context, _ string, _ time.Time) (Challenge, error) {
		got = ctx.Value(key{})
		return Challenge{}, nil
	})
	s := New(ca, store)
	dev := newDevice(t, rsaKey(t, 2048, 0))
	req := buildRequest(t, reqSpec{content: makeCSR(t, dev.key, "d", "x").Raw, recipient: ca.Certificate(), signer: dev})
	r, _ := http.NewRequestWithContext(context.WithValue(context.Background(), key{}, "v"), http.MethodPost, "/scep?operation=PKIOperation", strings.NewReader(string(req.der)))
	s.Handler().ServeHTTP(discardWriter{}, r)
	if got != "v" {
		t.Errorf("store context value %v", got)
	}
}

type challengeFunc func(ctx context.Context, challenge string, now time.Time) (Challenge, error)

func (f challengeFunc) ConsumeChallenge(ctx context.Context, challenge string, now time.Time) (Challenge, error) {
	return f(ctx, challenge, now)
}

type discardWriter struct{}

func (discardWriter) Header() http.Header         { return http.Header{} }
func (discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (discardWriter) WriteHeader(int)             {}

// TestExpiredTransientSigner: a PKCSReq signed with an expired self-signed
// certificate (whose signingTime therefore lies outside its dates) is
// accepted; the transient certificate only proves possession of the key.
func TestExpiredTransientSigner(t *testing.T) {
	ca, issued := testCA(t)
	s := New(ca, nil, WithoutChallenge())
	key := rsaKey(t, 2048, 0)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "MDM SCEP SIGNER"},
		NotBefore:    time.Date(2016, 5, 31, 11, 30, 13, 0, time.UTC),
		NotAfter:     time.Date(2017, 5, 31, 11, 30, 13, 0, time.UTC),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	dev := &device{key: key, cert: cert}
	req := buildRequest(t, reqSpec{content: makeCSR(t, key, "d", "").Raw, recipient: ca.Certificate(), signer: dev})
	r := parseReply(t, post(t, s.Handler(), req.der), ca.Certificate(), dev)
	if r.msg.PKIStatus != scep.SUCCESS {
		t.Fatalf("refused (%s): %s", failInfoNames[r.msg.FailInfo], r.failInfoText)
	}
	if issued.count() != 1 {
		t.Error("not issued")
	}
}
