package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/micromdm/plist"
	"github.com/smallstep/pkcs7"
	"github.com/smallstep/scep"
	"github.com/smallstep/scep/x509util"

	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/sim"
)

// renewalView is an entry of GET /identity-renewals.
type renewalView struct {
	DeviceID        string    `json:"device_id"`
	SerialNumber    string    `json:"serial_number"`
	NotAfter        time.Time `json:"not_after"`
	Attempts        int       `json:"attempts"`
	LastCommandUUID string    `json:"last_command_uuid"`
	LastStatus      string    `json:"last_status"`
	State           string    `json:"state"`
	Reason          string    `json:"reason"`
}

// renewals returns GET /identity-renewals (with the query), by device ID.
func (e *env) renewals(query string) map[string]renewalView {
	e.t.Helper()
	var out struct {
		Renewals []renewalView `json:"renewals"`
	}
	if code := e.api("GET", "/api/v1/identity-renewals"+query, nil, &out); code != http.StatusOK {
		e.t.Fatalf("GET identity-renewals%s: %d", query, code)
	}
	if out.Renewals == nil {
		e.t.Fatalf("GET identity-renewals%s: no renewals list", query)
	}
	m := map[string]renewalView{}
	for _, r := range out.Renewals {
		m[r.DeviceID] = r
	}
	return m
}

// TestIdentityRenewal is item 5 of the enrollment-profiles issue, end to
// end on every database: a device whose identity is about to expire gets
// its enrollment profile again with a challenge issued for it, runs SCEP
// with it, and checks in with the new identity, which replaces the old one;
// a device that answers the InstallProfile with Error is listed as a failed
// renewal by the API and counted by the metric.
func TestIdentityRenewal(t *testing.T) {
	for name, db := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := start(t, db(t), func(c *server.Config) { c.PushTopic = testTopic })
			ctx := context.Background()
			// Identities for 20 days: within the 30-day renewal window,
			// not yet within the 7 days that make a renewal late.
			dev := deviceFor(t, e, 20*24*time.Hour)
			failing := deviceFor(t, e, 20*24*time.Hour)
			reenrolling := deviceFor(t, e, 20*24*time.Hour)
			for _, d := range []*sim.Device{dev, failing, reenrolling} {
				if err := d.Enroll(ctx); err != nil {
					t.Fatalf("enroll: %v", err)
				}
			}

			if n, err := e.srv.RenewIdentities(ctx); err != nil || n != 3 {
				t.Fatalf("renewal sweep: sent %d, %v; want 3", n, err)
			}
			// Each identity gets one profile per attempt.
			if n, err := e.srv.RenewIdentities(ctx); err != nil || n != 0 {
				t.Fatalf("second sweep: sent %d, %v; want none", n, err)
			}
			for _, d := range []*sim.Device{dev, failing} {
				r := e.renewals("")[d.UDID]
				if r.State != "pending" || r.Attempts != 1 || r.LastStatus != "Pending" || r.SerialNumber != d.SerialNumber ||
					!r.NotAfter.Equal(d.Certificate().NotAfter.UTC().Truncate(time.Microsecond)) {
					t.Errorf("%s before the device connects: %+v", d.UDID, r)
				}
			}

			// The device fetches the profile: the enrollment profile, with
			// a challenge and the subject of its current identity.
			uuid, signed := nextInstallProfile(t, dev)
			p := readRenewalProfile(t, signed, e)
			if p.cn != dev.Certificate().Subject.CommonName {
				t.Errorf("SCEP subject %q, want the current identity's %q", p.cn, dev.Certificate().Subject.CommonName)
			}
			key, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				t.Fatal(err)
			}
			cert, err := scepRequest(t, e, p, key)
			if err != nil {
				t.Fatalf("SCEP with the renewal challenge: %v", err)
			}
			if cert.Subject.CommonName != p.cn {
				t.Errorf("issued subject %q", cert.Subject)
			}
			if !cert.NotAfter.After(time.Now().Add(300 * 24 * time.Hour)) {
				t.Errorf("new identity expires %v: want a full lifetime", cert.NotAfter)
			}

			// Checking in with the new identity is accepted, and the
			// identity becomes the device's binding: the old one is refused.
			renewed := sim.New(e.url, cert, key, sim.WithRootCAs(e.roots), sim.WithTopic(testTopic))
			renewed.UDID, renewed.SerialNumber = dev.UDID, dev.SerialNumber
			if err := answerCommand(renewed, uuid, "Acknowledged"); err != nil {
				t.Fatalf("result with the renewed identity: %v", err)
			}
			if _, err := renewed.Connect(ctx); err != nil {
				t.Fatalf("connect with the renewed identity: %v", err)
			}
			if _, err := dev.Connect(ctx); statusOf(err) != http.StatusForbidden {
				t.Fatalf("connect with the replaced identity: %v, want 403", err)
			}
			// The challenge was one-time.
			if _, err := scepRequest(t, e, p, key); err == nil {
				t.Error("the renewal challenge issued a second identity")
			}

			// A device may also restart check-in with the new identity, as
			// replacing its MDM profile does: Authenticate and TokenUpdate
			// are accepted from the identity issued to it.
			_, signed = nextInstallProfile(t, reenrolling)
			cert, err = scepRequest(t, e, readRenewalProfile(t, signed, e), key)
			if err != nil {
				t.Fatalf("SCEP with the second renewal challenge: %v", err)
			}
			again := sim.New(e.url, cert, key, sim.WithRootCAs(e.roots), sim.WithTopic(testTopic))
			again.UDID, again.SerialNumber = reenrolling.UDID, reenrolling.SerialNumber
			if err := again.Enroll(ctx); err != nil {
				t.Fatalf("check-in with the renewed identity: %v", err)
			}
			if _, err := reenrolling.Connect(ctx); statusOf(err) != http.StatusForbidden {
				t.Fatalf("connect with the replaced identity: %v, want 403", err)
			}

			// The other device cannot install the profile.
			failedUUID, _ := nextInstallProfile(t, failing)
			if err := answerCommand(failing, failedUUID, "Error"); err != nil {
				t.Fatalf("Error result: %v", err)
			}

			all := e.renewals("")
			if r := all[dev.UDID]; r.State != "renewed" || r.LastCommandUUID != uuid || r.LastStatus != "Acknowledged" {
				t.Errorf("renewed device: %+v", r)
			}
			if r := all[reenrolling.UDID]; r.State != "renewed" {
				t.Errorf("device renewed through Authenticate: %+v", r)
			}
			failed := e.renewals("?state=failed")
			if len(failed) != 1 {
				t.Fatalf("failed renewals: %+v, want the one device", failed)
			}
			want := renewalView{DeviceID: failing.UDID, SerialNumber: failing.SerialNumber,
				NotAfter: failing.Certificate().NotAfter.UTC().Truncate(time.Microsecond), Attempts: 1,
				LastCommandUUID: failedUUID, LastStatus: "Error", State: "failed", Reason: "command_failed"}
			if got := failed[failing.UDID]; got != want {
				t.Errorf("failed renewal:\n got  %+v\n want %+v", got, want)
			}
			if m := metrics(t, e); !strings.Contains(m, "\nbramley_identity_renewals_failed 1\n") {
				t.Errorf("metrics lack bramley_identity_renewals_failed 1:\n%s", grepLines(m, "renewal"))
			}

			// None is due again: two renewed for a year, the other failed
			// a moment ago.
			if n, err := e.srv.RenewIdentities(ctx); err != nil || n != 0 {
				t.Fatalf("sweep after the renewal: sent %d, %v; want none", n, err)
			}
		})
	}
}

// deviceFor returns a simulated device holding an identity from bramley's
// CA that expires after lifetime.
func deviceFor(t *testing.T, e *env, lifetime time.Duration) *sim.Device {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := e.srv.CA().IssueClient(context.Background(), &key.PublicKey, pkix.Name{CommonName: "sim device"}, lifetime)
	if err != nil {
		t.Fatal(err)
	}
	return sim.New(e.url, cert, key, sim.WithRootCAs(e.roots), sim.WithTopic(testTopic))
}

// nextInstallProfile connects as the device and returns the InstallProfile
// it is sent, unanswered.
func nextInstallProfile(t *testing.T, d *sim.Device) (uuid string, profile []byte) {
	t.Helper()
	idle, err := plist.Marshal(map[string]any{"UDID": d.UDID, "Status": "Idle"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := d.Send(context.Background(), "/mdm/connect", "application/x-apple-aspen-mdm; charset=UTF-8", idle)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	var cmd struct {
		CommandUUID string
		Command     struct {
			RequestType string
			Payload     []byte
		}
	}
	if err := plist.Unmarshal(resp, &cmd); err != nil {
		t.Fatalf("decoding command %q: %v", resp, err)
	}
	if cmd.Command.RequestType != "InstallProfile" || len(cmd.Command.Payload) == 0 {
		t.Fatalf("sent %s, want an InstallProfile with a profile", cmd.Command.RequestType)
	}
	return cmd.CommandUUID, cmd.Command.Payload
}

// answerCommand reports a command's status as the device.
func answerCommand(d *sim.Device, uuid, status string) error {
	res := map[string]any{"UDID": d.UDID, "CommandUUID": uuid, "Status": status}
	if status == "Error" {
		res["ErrorChain"] = []any{map[string]any{"ErrorCode": 22013, "ErrorDomain": "MCSCEPErrorDomain",
			"LocalizedDescription": "The SCEP server returned an invalid response."}}
	}
	body, err := plist.Marshal(res)
	if err != nil {
		return err
	}
	_, err = d.Send(context.Background(), "/mdm/connect", "application/x-apple-aspen-mdm; charset=UTF-8", body)
	return err
}

// renewalProfile is what the device takes from the profile.
type renewalProfile struct {
	ca             *x509.Certificate
	url, challenge string
	cn             string
}

// readRenewalProfile checks the signed profile is bramley's enrollment
// profile for the device's topic, and returns its SCEP payload.
func readRenewalProfile(t *testing.T, signed []byte, e *env) renewalProfile {
	t.Helper()
	p7, err := pkcs7.Parse(signed)
	if err != nil {
		t.Fatalf("profile is not CMS: %v", err)
	}
	if err := p7.VerifyWithChain(e.roots); err != nil {
		t.Fatalf("profile signature: %v", err)
	}
	var p enrollmentProfile
	if err := plist.Unmarshal(p7.Content, &p); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(p.PayloadIdentifier, "com.bramley-mdm.enrollment.") {
		t.Errorf("PayloadIdentifier %q: not the enrollment profile's", p.PayloadIdentifier)
	}
	mdmPayload := p.payload(t, "com.apple.mdm")
	if mdmPayload["Topic"] != testTopic || mdmPayload["ServerURL"] != e.url+"/mdm/connect" {
		t.Errorf("MDM payload %v", mdmPayload)
	}
	scepPayload := p.payload(t, "com.apple.security.scep")
	if mdmPayload["IdentityCertificateUUID"] != scepPayload["PayloadUUID"] {
		t.Error("the MDM payload does not use the SCEP identity")
	}
	root, _ := p.payload(t, "com.apple.security.root")["PayloadContent"].([]byte)
	ca, err := x509.ParseCertificate(root)
	if err != nil || !ca.Equal(e.srv.CA().Root()) {
		t.Fatalf("root payload is not bramley's root CA: %v", err)
	}
	sc := scepPayload["PayloadContent"].(map[string]any)
	// SCEP requests are encrypted to the intermediate, which GetCACert
	// offers first.
	out := renewalProfile{ca: e.srv.CA().Certificate()}
	out.url, _ = sc["URL"].(string)
	out.challenge, _ = sc["Challenge"].(string)
	out.cn = sc["Subject"].([]any)[0].([]any)[0].([]any)[1].(string)
	if out.url != e.url+"/scep" || out.challenge == "" {
		t.Fatalf("SCEP payload %v", sc)
	}
	return out
}

// scepRequest runs the SCEP payload as a device does, for its new key: a
// PKCSReq with the challenge, signed with a transient self-signed
// certificate; it returns the identity issued, or the refusal.
func scepRequest(t *testing.T, e *env, p renewalProfile, key *rsa.PrivateKey) (*x509.Certificate, error) {
	t.Helper()
	csrDER, err := x509util.CreateCertificateRequest(rand.Reader, &x509util.CertificateRequest{
		CertificateRequest: x509.CertificateRequest{Subject: pkix.Name{CommonName: p.cn}},
		ChallengePassword:  p.challenge,
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "MDM SCEP SIGNER"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	signerDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := x509.ParseCertificate(signerDER)
	msg, err := scep.NewCSRRequest(csr, &scep.PKIMessage{MessageType: scep.PKCSReq,
		Recipients: []*x509.Certificate{p.ca}, SignerKey: key, SignerCert: signer})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.http.Post(p.url+"?operation=PKIOperation", "application/x-pki-message", bytes.NewReader(msg.Raw))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PKIOperation: %d %s", resp.StatusCode, body)
	}
	rep, err := scep.ParsePKIMessage(body, scep.WithCACerts([]*x509.Certificate{p.ca}))
	if err != nil {
		t.Fatalf("CertRep: %v", err)
	}
	if rep.PKIStatus != scep.SUCCESS {
		return nil, &scepFailure{rep.FailInfo}
	}
	if err := rep.DecryptPKIEnvelope(signer, key); err != nil {
		t.Fatalf("decrypting CertRep: %v", err)
	}
	return rep.CertRepMessage.Certificate, nil
}

type scepFailure struct{ info scep.FailInfo }

func (f *scepFailure) Error() string { return "SCEP request refused, failInfo " + string(f.info) }

func metrics(t *testing.T, e *env) string {
	t.Helper()
	resp, err := e.http.Get(e.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
