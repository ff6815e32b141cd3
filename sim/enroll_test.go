package sim_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/profile"
	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/sim"
)

// TestEnrollDirect enrolls as a person does: the link's profile, verified
// with the root it carries (or a pinned one), SCEP, check-in with the
// issued identity; then the device answers a command and the spent link
// is refused.
func TestEnrollDirect(t *testing.T) {
	for name, db := range backends() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tests := []struct {
				name        string
				signMessage bool
				opts        func(e *env) []sim.EnrollOption
			}{
				{name: "mTLS, the profile's own root", opts: func(e *env) []sim.EnrollOption {
					// Trusted for the download only: the device's TLS
					// trust afterwards comes from the profile's root.
					return []sim.EnrollOption{sim.WithDownloadRoots(e.ca)}
				}},
				{name: "Mdm-Signature, pinned root", signMessage: true, opts: func(e *env) []sim.EnrollOption {
					return []sim.EnrollOption{sim.WithProfileRoots(e.ca)}
				}},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					e := start(t, db(t), func(c *server.Config) { c.SignMessage = tt.signMessage })
					link := e.token(1)
					var opts []sim.EnrollOption
					if tt.opts != nil {
						opts = tt.opts(e)
					}
					opts = append(opts, sim.WithDeviceOptions(func(d *sim.Device) { d.DeviceName = "Test iPhone" }))
					ctx := context.Background()
					dev, err := sim.EnrollDirect(ctx, link, opts...)
					if err != nil {
						t.Fatalf("EnrollDirect: %v", err)
					}

					// The identity is bramley's, for the subject the profile asked.
					cert := dev.Certificate()
					roots, inter := x509.NewCertPool(), x509.NewCertPool()
					roots.AddCert(e.ca)
					inter.AddCert(e.srv.CA().Certificate())
					if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
						t.Fatalf("issued identity does not chain to bramley's CA: %v", err)
					}
					if !strings.HasPrefix(cert.Subject.CommonName, "bramley ") {
						t.Errorf("identity subject %q", cert.Subject)
					}

					// Checked in: bramley knows the device, enrolled, on the profile's topic.
					var got struct {
						DeviceName string `json:"device_name"`
						Topic      string `json:"topic"`
						Enrolled   bool   `json:"enrolled"`
					}
					if code := e.api("GET", "/api/v1/devices/"+dev.UDID, nil, &got); code != http.StatusOK ||
						!got.Enrolled || got.Topic != testTopic || got.DeviceName != "Test iPhone" {
						t.Fatalf("device after enrollment: %d %+v", code, got)
					}

					uuid := e.enqueue(dev.UDID, map[string]any{"request_type": "ProfileList"})
					handled, err := dev.Connect(ctx)
					if err != nil || len(handled) != 1 || handled[0].CommandUUID != uuid || handled[0].Status != "Acknowledged" {
						t.Fatalf("Connect: %+v %v", handled, err)
					}

					// The link allowed one enrollment.
					_, err = sim.EnrollDirect(ctx, link, opts...)
					var se *sim.StatusError
					if !errors.As(err, &se) || se.Status != http.StatusGone || !strings.Contains(se.Body, "already been used") {
						t.Fatalf("second enrollment with a spent link: %v", err)
					}
				})
			}
		})
	}
}

// TestEnrollDirectRefusesBadProfiles serves the device profiles that are
// not what bramley signed; each is refused before SCEP, so no certificate
// is issued.
func TestEnrollDirectRefusesBadProfiles(t *testing.T) {
	e := start(t, "", nil)
	foreignCA, foreignKey := newCA(t, "someone else's CA")

	tests := []struct {
		name    string
		tamper  func(t *testing.T, signed []byte) []byte
		opts    []sim.EnrollOption
		wantErr string
	}{
		{
			name: "a changed byte",
			tamper: func(t *testing.T, signed []byte) []byte {
				i := bytes.Index(signed, []byte("com.apple.mdm"))
				if i < 0 {
					t.Fatal("no MDM payload in the profile")
				}
				out := bytes.Clone(signed)
				out[i+len("com.apple.md")] ^= 0x01
				return out
			},
			wantErr: "signature",
		},
		{
			name: "bramley's content signed by someone else",
			tamper: func(t *testing.T, signed []byte) []byte {
				return resign(t, content(t, e, signed), foreignCA, foreignKey)
			},
			wantErr: "signature",
		},
		{
			name: "someone else's root and signature, with bramley's root pinned",
			tamper: func(t *testing.T, signed []byte) []byte {
				p, err := profile.Parse(content(t, e, signed))
				if err != nil {
					t.Fatal(err)
				}
				for _, pl := range p.PayloadContent {
					if r, ok := pl.(*profile.Root); ok {
						r.PayloadContent = foreignCA.Raw
					}
				}
				raw, err := p.Marshal()
				if err != nil {
					t.Fatal(err)
				}
				return resign(t, raw, foreignCA, foreignKey)
			},
			opts:    []sim.EnrollOption{sim.WithProfileRoots(e.ca)},
			wantErr: "signature",
		},
		{
			name:    "unsigned",
			tamper:  func(t *testing.T, signed []byte) []byte { return content(t, e, signed) },
			wantErr: "signature",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A man in the middle hands the device its own profile for
			// bramley's.
			resp, err := e.http.Get(e.token(1))
			if err != nil {
				t.Fatal(err)
			}
			signed, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			served := tt.tamper(t, signed)
			mitm := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", profile.ContentType)
				w.Write(served)
			}))
			defer mitm.Close()
			opts := append([]sim.EnrollOption{sim.WithExtraRoots(mitm.Certificate())}, tt.opts...)
			dev, err := sim.EnrollDirect(context.Background(), mitm.URL+"/enroll?token=x", opts...)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("EnrollDirect = %v, %v; want an error about the %s", dev, err, tt.wantErr)
			}
		})
	}
}

// TestEnrollDirectURLCheck: the check sees the link and every URL the
// profile names, and its refusal stops the device before it goes there.
func TestEnrollDirectURLCheck(t *testing.T) {
	e := start(t, "", nil)
	var seen []string
	_, err := sim.EnrollDirect(context.Background(), e.token(1), sim.WithDownloadRoots(e.ca), sim.WithURLCheck(func(u *url.URL) error {
		seen = append(seen, u.Path)
		if u.Path == "/scep" {
			return errors.New("not this one")
		}
		return nil
	}))
	if err == nil || !strings.Contains(err.Error(), "not this one") || !strings.Contains(err.Error(), "SCEP URL") {
		t.Fatalf("EnrollDirect: %v", err)
	}
	if strings.Join(seen, " ") != "/enroll /scep" {
		t.Fatalf("checked %q", seen)
	}
}

// content returns the verified plist inside a signed profile.
func content(t *testing.T, e *env, signed []byte) []byte {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(e.ca)
	c, _, err := profile.Verify(signed, roots)
	if err != nil {
		t.Fatalf("bramley's own profile: %v", err)
	}
	return c
}

func resign(t *testing.T, content []byte, cert *x509.Certificate, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	signed, err := profile.Sign(content, cert, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// newCA returns a self-signed CA that signs its own profiles.
func newCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}
