package scep

import (
	"encoding/hex"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"
	"github.com/smallstep/scep"
)

// TestFixturePKCSReq answers the real device capture
// testdata/scep-PKCSReq.der: SHA-1, 3DES, an expired transient signer, no
// challenge, an RSA-1024 key. It must be verified and decrypted, and then
// refused — for the missing challenge when challenges are required, for
// the key size when they are not — with nothing issued either way.
func TestFixturePKCSReq(t *testing.T) {
	der, err := os.ReadFile("testdata/scep-PKCSReq.der")
	if err != nil {
		t.Fatal(err)
	}
	// Inside the test CA's validity (2016-05-29 to 2026-05-29); the
	// request's own signer expired in 2017, which must not matter.
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	want := builtRequest{transactionID: "A13090761A30F66664F85D37433D2065E1112BA1"}
	want.senderNonce, _ = hex.DecodeString("ae7fe8816cc6bedd")

	tests := []struct {
		name     string
		opts     []Option
		failInfo scep.FailInfo
		outcome  string
		text     string
	}{
		{
			name:     "challenge required",
			failInfo: scep.BadRequest, outcome: "challenge_missing",
			text: "a challenge password is required",
		},
		{
			name:     "static challenge configured",
			opts:     []Option{WithStaticChallenge("s3cret")},
			failInfo: scep.BadRequest, outcome: "challenge_missing",
			text: "a challenge password is required",
		},
		{
			// With no challenge policy the CSR policy is reached, and the
			// device's Keysize 1024 is what fails.
			name:     "without challenge",
			opts:     []Option{WithoutChallenge()},
			failInfo: scep.BadAlg, outcome: "key_policy",
			text: "an RSA key of 1024 bits is not accepted",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca, issued := fixtureCA(t, now)
			logs := &syncBuffer{}
			obs := &observations{}
			opts := append([]Option{
				WithClock(func() time.Time { return now }),
				WithLogger(slog.New(slog.NewTextHandler(logs, nil))),
				WithObserver(obs.observe),
			}, tt.opts...)
			s := New(ca, &memChallenges{}, opts...)

			w := post(t, s.Handler(), der)
			r := parseReply(t, w, ca.Certificate(), nil)
			checkFailure(t, r, tt.failInfo)
			checkEcho(t, r, want)
			if !strings.Contains(r.failInfoText, tt.text) {
				t.Errorf("failInfoText = %q, want it to say %q", r.failInfoText, tt.text)
			}
			if got := obs.last(); got != [2]string{"PKCSReq", tt.outcome} {
				t.Errorf("observed %v, want PKCSReq %s", got, tt.outcome)
			}
			if !r.digest.Equal(pkcs7.OIDDigestAlgorithmSHA1) {
				t.Errorf("reply digest %v: the device signed with SHA-1 and gets SHA-1 back", r.digest)
			}
			if n := issued.count(); n != 0 {
				t.Errorf("%d certificates issued", n)
			}
			// It got as far as the CSR: decrypted from 3DES, subject read.
			for _, s := range []string{
				"transaction_id=A13090761A30F66664F85D37433D2065E1112BA1",
				"cipher=des-ede3-cbc",
				`subject="CN=com.apple.security.scep.063D7953-1338-4BF0-8F99-913382996224"`,
				"outcome=" + tt.outcome,
				"fail_info=" + failInfoNames[tt.failInfo],
			} {
				if !strings.Contains(logs.String(), s) {
					t.Errorf("log lacks %q:\n%s", s, logs)
				}
			}
		})
	}
}

// TestFixtureWrongCA sends the fixture to a CA it was not encrypted to.
func TestFixtureWrongCA(t *testing.T) {
	der, err := os.ReadFile("testdata/scep-PKCSReq.der")
	if err != nil {
		t.Fatal(err)
	}
	ca, issued := testCA(t)
	s := New(ca, nil, WithoutChallenge())
	r := parseReply(t, post(t, s.Handler(), der), ca.Certificate(), nil)
	checkFailure(t, r, scep.BadCertID)
	if issued.count() != 0 {
		t.Error("issued")
	}
}
