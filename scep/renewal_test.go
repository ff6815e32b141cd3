package scep

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"
	"time"

	"github.com/smallstep/scep"

	"github.com/bramley-mdm/bramley/pki"
)

// enrolled issues a device identity from ca and binds it to deviceID, as
// Authenticate would.
func enrolled(t *testing.T, ca *pki.CA, renewals *memRenewals, i int, cn, deviceID string) *device {
	t.Helper()
	key := rsaKey(t, 2048, i)
	cert, err := ca.IssueClient(context.Background(), key.Public(), pkix.Name{CommonName: cn, Organization: []string{"bramley"}}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if renewals != nil {
		renewals.bind(cert, deviceID)
	}
	return &device{key: key, cert: cert}
}

// TestRenewal renews an identity with a RenewalReq built by smallstep/scep,
// signed by the current identity, for a new key.
func TestRenewal(t *testing.T) {
	ca, _ := testCA(t)
	renewals := &memRenewals{}
	obs := &observations{}
	s := New(ca, &memChallenges{}, WithRenewals(renewals), WithObserver(obs.observe))
	old := enrolled(t, ca, renewals, 0, "device-1", "UDID-1")
	newKey := rsaKey(t, 2048, 1)
	// No challenge: the signature of the current identity stands for it.
	csr := makeCSR(t, newKey, "device-1", "")
	req := libraryRequest(t, scep.RenewalReq, csr, old, ca.Certificate())

	r := parseReply(t, post(t, s.Handler(), req.der), ca.Certificate(), old)
	if r.msg.PKIStatus != scep.SUCCESS {
		t.Fatalf("pkiStatus %q, failInfo %q: %s", r.msg.PKIStatus, r.msg.FailInfo, r.failInfoText)
	}
	checkEcho(t, r, req)
	if got := obs.last(); got != [2]string{"RenewalReq", "renewed"} {
		t.Errorf("observed %v", got)
	}
	cert := r.msg.Certificate
	if !cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(newKey.Public()) {
		t.Error("renewed certificate is not for the new key")
	}
	if cert.Subject.String() != old.cert.Subject.String() {
		t.Errorf("subject %q, want the old one %q", cert.Subject, old.cert.Subject)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("renewed certificate does not verify: %v", err)
	}
	// Recorded with its device, which is how identity.Binder will accept
	// it from UDID-1 at the next check-in.
	if device, ok := renewals.issuedTo(cert); !ok || device != "UDID-1" {
		t.Errorf("renewal recorded for %q (%v), want UDID-1", device, ok)
	}
}

// TestRenewalRefused: a RenewalReq must be signed by a valid identity from
// this CA, bound to a device, for the same subject.
func TestRenewalRefused(t *testing.T) {
	ca, _ := testCA(t)
	other, _ := testCA(t)
	renewals := &memRenewals{}
	bound := enrolled(t, ca, renewals, 0, "device-1", "UDID-1")
	unbound := enrolled(t, ca, nil, 0, "device-2", "")
	foreign := enrolled(t, other, renewals, 0, "device-1", "UDID-1")
	newKey := rsaKey(t, 2048, 1)

	tests := []struct {
		name     string
		signer   *device
		cn       string
		opts     []Option
		failInfo scep.FailInfo
		outcome  string
	}{
		{name: "another CA's identity", signer: foreign, cn: "device-1", failInfo: scep.BadCertID, outcome: "signer_unknown"},
		{name: "self-signed", signer: newDevice(t, newKey), cn: "device-1", failInfo: scep.BadCertID, outcome: "signer_unknown"},
		{name: "not bound to a device", signer: unbound, cn: "device-2", failInfo: scep.BadCertID, outcome: "signer_unbound"},
		{
			name: "expired identity", signer: bound, cn: "device-1",
			opts:     []Option{WithClock(func() time.Time { return time.Now().Add(48 * time.Hour) })},
			failInfo: scep.BadTime, outcome: "signer_expired",
		},
		{name: "another subject", signer: bound, cn: "device-9", failInfo: scep.BadRequest, outcome: "subject_mismatch"},
		{name: "small key", signer: bound, cn: "device-1", failInfo: scep.BadAlg, outcome: "key_policy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs := &observations{}
			s := New(ca, &memChallenges{}, append([]Option{WithRenewals(renewals), WithObserver(obs.observe)}, tt.opts...)...)
			key := newKey
			if tt.outcome == "key_policy" {
				key = rsaKey(t, 1024, 0)
			}
			before := len(renewals.records)
			req := libraryRequest(t, scep.RenewalReq, makeCSR(t, key, tt.cn, ""), tt.signer, ca.Certificate())
			r := parseReply(t, post(t, s.Handler(), req.der), ca.Certificate(), nil)
			checkFailure(t, r, tt.failInfo)
			checkEcho(t, r, req)
			if got := obs.last(); got != [2]string{"RenewalReq", tt.outcome} {
				t.Errorf("observed %v (%s), want %s", got, r.failInfoText, tt.outcome)
			}
			if len(renewals.records) != before {
				t.Error("a certificate was recorded")
			}
		})
	}

	t.Run("renewals not offered", func(t *testing.T) {
		s := New(ca, &memChallenges{})
		req := libraryRequest(t, scep.RenewalReq, makeCSR(t, newKey, "device-1", ""), bound, ca.Certificate())
		r := parseReply(t, post(t, s.Handler(), req.der), ca.Certificate(), nil)
		checkFailure(t, r, scep.BadRequest)
	})
}

// TestRenewalFromPreviousCA: after the CA is rotated, an identity the old
// CA issued renews onto the new one — and only when the old CA is named.
func TestRenewalFromPreviousCA(t *testing.T) {
	oldCA, _ := testCA(t)
	newCA, _ := testCA(t)
	renewals := &memRenewals{}
	old := enrolled(t, oldCA, renewals, 0, "device-1", "UDID-1")
	csr := makeCSR(t, rsaKey(t, 2048, 1), "device-1", "")
	req := libraryRequest(t, scep.RenewalReq, csr, old, newCA.Certificate())

	without := New(newCA, &memChallenges{}, WithRenewals(renewals))
	if r := parseReply(t, post(t, without.Handler(), req.der), newCA.Certificate(), old); r.msg.PKIStatus != scep.FAILURE {
		t.Fatal("renewal from an unknown CA succeeded")
	}
	with := New(newCA, &memChallenges{}, WithRenewals(renewals), WithPreviousCAs([]*x509.Certificate{oldCA.Certificate()}))
	r := parseReply(t, post(t, with.Handler(), req.der), newCA.Certificate(), old)
	if r.msg.PKIStatus != scep.SUCCESS {
		t.Fatalf("pkiStatus %q: %s", r.msg.PKIStatus, r.failInfoText)
	}
	if err := r.msg.Certificate.CheckSignatureFrom(newCA.Certificate()); err != nil {
		t.Fatalf("renewed identity not issued by the current CA: %v", err)
	}
}
