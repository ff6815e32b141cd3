package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bramley-mdm/bramley/appletest"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/server"
)

// TestADECertificateRotation: after a rotation bramley serves the new
// certificate, still accepts a token Apple encrypted to the old one (an
// MDM server in Apple Business Manager not yet given the new one), and
// accepts one for the new; the listing and the metric tell how long the
// token has left.
func TestADECertificateRotation(t *testing.T) {
	for name, db := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fake := appletest.NewADE(t)
			caFile := filepath.Join(t.TempDir(), "ade-ca.pem")
			if err := os.WriteFile(caFile, fake.CACertificatePEM(), 0o600); err != nil {
				t.Fatal(err)
			}
			e := start(t, db(t), func(c *server.Config) { c.ADEURL = fake.URL(); c.ADECA = caFile })
			get := func() []byte {
				t.Helper()
				code, body := e.raw(http.MethodGet, "/api/v1/ade/certificate", "", nil)
				if code != http.StatusOK {
					t.Fatalf("GET /ade/certificate: %d %s", code, body)
				}
				return body
			}
			upload := func(certPEM []byte) (int, []byte) {
				t.Helper()
				cert, err := pki.ParseCertificatePEM(certPEM)
				if err != nil {
					t.Fatal(err)
				}
				p7m, err := fake.ServerTokenP7M(cert)
				if err != nil {
					t.Fatal(err)
				}
				return e.raw(http.MethodPost, "/api/v1/ade/tokens", "application/pkcs7-mime", p7m)
			}

			oldPEM := get()
			if code, body := upload(oldPEM); code != http.StatusCreated {
				t.Fatalf("upload before rotation: %d %s", code, body)
			}
			code, newPEM := e.raw(http.MethodPost, "/api/v1/ade/certificate/rotate", "", nil)
			if code != http.StatusOK || string(newPEM) == string(oldPEM) {
				t.Fatalf("rotate: %d %s", code, newPEM)
			}
			if _, err := pki.ParseCertificatePEM(newPEM); err != nil {
				t.Fatalf("rotated certificate: %v", err)
			}
			if got := get(); string(got) != string(newPEM) {
				t.Fatal("GET /ade/certificate does not serve the new certificate")
			}

			if code, body := upload(oldPEM); code != http.StatusCreated {
				t.Fatalf("token for the old certificate after rotation: %d %s", code, body)
			}
			if code, body := e.raw(http.MethodPost, "/api/v1/ade/certificate/rotate", "", nil); code != http.StatusConflict {
				t.Errorf("rotating again while the old certificate is in use: %d %s", code, body)
			}
			if code, body := upload(newPEM); code != http.StatusCreated {
				t.Fatalf("token for the new certificate: %d %s", code, body)
			}
			// Every token is uploaded for the new certificate: the old key
			// is dropped.
			if code, body := upload(oldPEM); code != http.StatusBadRequest {
				t.Errorf("token for the old certificate once every token is uploaded again: %d %s", code, body)
			}

			var list struct {
				Tokens []struct {
					ID       string `json:"id"`
					DaysLeft int    `json:"days_left"`
					Expiring bool   `json:"expiring"`
				} `json:"tokens"`
			}
			code, body := e.raw(http.MethodGet, "/api/v1/ade/tokens", "", nil)
			if err := json.Unmarshal(body, &list); code != http.StatusOK || err != nil || len(list.Tokens) != 1 {
				t.Fatalf("GET /ade/tokens: %d %s", code, body)
			}
			// The fake's token expires in a year.
			if tok := list.Tokens[0]; tok.DaysLeft < 360 || tok.DaysLeft > 366 || tok.Expiring {
				t.Errorf("token %+v", tok)
			}

			resp, err := e.http.Get(e.url + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			metrics, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(metrics), `bramley_ade_token_days_left{token_id="`+list.Tokens[0].ID+`"} `) {
				t.Errorf("metrics lack bramley_ade_token_days_left for %s", list.Tokens[0].ID)
			}
		})
	}
}
