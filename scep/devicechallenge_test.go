package scep

import (
	"testing"
	"time"

	"github.com/smallstep/scep"
)

// TestDeviceChallenge: a PKCSReq whose challenge names a device (an
// identity renewal sent in an InstallProfile) issues an identity recorded
// for that device, once; other challenges, or a service without
// WithRenewals, issue as before, recorded for no device.
func TestDeviceChallenge(t *testing.T) {
	tests := []struct {
		name       string
		device     string // the challenge's EnrollmentID
		renewals   bool   // WithRenewals
		wantDevice string // "" when the identity must be recorded for no device
	}{
		{name: "device challenge", device: "UDID-1", renewals: true, wantDevice: "UDID-1"},
		{name: "enrollment challenge", device: "", renewals: true},
		{name: "device challenge without renewals", device: "UDID-1", renewals: false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca, issued := testCA(t)
			challenges := &memChallenges{}
			renewals := &memRenewals{}
			opts := []Option{}
			if tt.renewals {
				opts = append(opts, WithRenewals(renewals))
			}
			s := New(ca, challenges, opts...)
			challenges.add("secret", Challenge{Subject: "bramley 1", EnrollmentID: tt.device, Source: "test",
				ExpiresAt: time.Now().Add(time.Hour)})
			dev := newDevice(t, rsaKey(t, 2048, i))
			req := buildRequest(t, reqSpec{content: makeCSR(t, dev.key, "bramley 1", "secret").Raw,
				recipient: ca.Certificate(), signer: dev})
			r := parseReply(t, post(t, s.Handler(), req.der), ca.Certificate(), dev)
			if r.msg.PKIStatus != scep.SUCCESS {
				t.Fatalf("pkiStatus %q: %s", r.msg.PKIStatus, r.failInfoText)
			}
			cert := r.msg.Certificate
			device, inRenewals := renewals.issuedTo(cert)
			switch {
			case tt.wantDevice != "":
				if !inRenewals || device != tt.wantDevice {
					t.Errorf("recorded for %q (%v), want %s", device, inRenewals, tt.wantDevice)
				}
				// Once: a first record without the device would win, and
				// the device's check-in with it be refused.
				if issued.count() != 0 {
					t.Errorf("also recorded in the CA's store, without its device")
				}
			default:
				if inRenewals {
					t.Errorf("recorded for device %q", device)
				}
				if issued.count() != 1 {
					t.Errorf("recorded %d times in the CA's store, want once", issued.count())
				}
			}
		})
	}

	t.Run("subject still enforced", func(t *testing.T) {
		ca, issued := testCA(t)
		challenges := &memChallenges{}
		renewals := &memRenewals{}
		s := New(ca, challenges, WithRenewals(renewals))
		challenges.add("secret", Challenge{Subject: "bramley 1", EnrollmentID: "UDID-1", ExpiresAt: time.Now().Add(time.Hour)})
		dev := newDevice(t, rsaKey(t, 2048, 0))
		req := buildRequest(t, reqSpec{content: makeCSR(t, dev.key, "bramley 2", "secret").Raw,
			recipient: ca.Certificate(), signer: dev})
		checkFailure(t, parseReply(t, post(t, s.Handler(), req.der), ca.Certificate(), dev), scep.BadRequest)
		if issued.count() != 0 || len(renewals.records) != 0 {
			t.Error("a certificate was recorded")
		}
	})
}
