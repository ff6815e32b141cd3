package server_test

import (
	"bytes"
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

// raw calls the admin API with a body of bytes and returns the status and
// the answer.
func (e *env) raw(method, path, contentType string, body []byte) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.apiKey)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

type adeDeviceView struct {
	TokenID       string `json:"token_id"`
	SerialNumber  string `json:"serial_number"`
	Model         string `json:"model"`
	Color         string `json:"color"`
	OS            string `json:"os"`
	DeviceFamily  string `json:"device_family"`
	ProfileStatus string `json:"profile_status"`
	OpType        string `json:"op_type"`
	Deleted       bool   `json:"deleted"`
}

func (e *env) adeDevices() map[string]adeDeviceView {
	e.t.Helper()
	var out struct {
		Devices []adeDeviceView `json:"devices"`
	}
	if code := e.api(http.MethodGet, "/api/v1/ade/devices", nil, &out); code != http.StatusOK {
		e.t.Fatalf("GET /ade/devices: %d", code)
	}
	m := map[string]adeDeviceView{}
	for _, d := range out.Devices {
		m[d.SerialNumber] = d
	}
	return m
}

func (e *env) adeSync(id string) map[string]any {
	e.t.Helper()
	var res map[string]any
	if code := e.api(http.MethodPost, "/api/v1/ade/tokens/"+id+"/sync", nil, &res); code != http.StatusOK {
		e.t.Fatalf("POST /ade/tokens/%s/sync: %d %v", id, code, res)
	}
	return res
}

// TestADE: an administrator downloads bramley's certificate, Apple (the
// fake) encrypts a server token to it, bramley stores the uploaded token
// without echoing a secret, and syncs see the devices Apple assigns,
// changes and removes.
func TestADE(t *testing.T) {
	for name, db := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fake := appletest.NewADE(t)
			caFile := filepath.Join(t.TempDir(), "ade-ca.pem")
			if err := os.WriteFile(caFile, fake.CACertificatePEM(), 0o600); err != nil {
				t.Fatal(err)
			}
			e := start(t, db(t), func(c *server.Config) { c.ADEURL = fake.URL(); c.ADECA = caFile })

			code, certPEM := e.raw(http.MethodGet, "/api/v1/ade/certificate", "", nil)
			if code != http.StatusOK {
				t.Fatalf("GET /ade/certificate: %d %s", code, certPEM)
			}
			cert, err := pki.ParseCertificatePEM(certPEM)
			if err != nil {
				t.Fatalf("certificate: %v", err)
			}
			if _, again := e.raw(http.MethodGet, "/api/v1/ade/certificate", "", nil); !bytes.Equal(again, certPEM) {
				t.Error("the certificate changed between two downloads")
			}
			p7m, err := fake.ServerTokenP7M(cert)
			if err != nil {
				t.Fatal(err)
			}

			// A damaged token is refused and nothing is stored.
			tampered := tamper(p7m)
			if code, body := e.raw(http.MethodPost, "/api/v1/ade/tokens", "application/pkcs7-mime", tampered); code != http.StatusBadRequest {
				t.Errorf("tampered token: %d %s, want 400", code, body)
			}
			if code, body := e.raw(http.MethodGet, "/api/v1/ade/tokens", "", nil); code != http.StatusOK || string(body) != "{\"tokens\":[]}\n" {
				t.Errorf("tokens after a refused upload: %d %s", code, body)
			}

			code, body := e.raw(http.MethodPost, "/api/v1/ade/tokens", "application/pkcs7-mime", p7m)
			if code != http.StatusCreated {
				t.Fatalf("POST /ade/tokens: %d %s", code, body)
			}
			secrets := fake.ServerToken()
			for _, s := range []string{secrets.ConsumerSecret, secrets.AccessToken, secrets.AccessSecret} {
				if bytes.Contains(body, []byte(s)) {
					t.Errorf("the answer carries a secret: %s", body)
				}
			}
			var tok struct {
				ID          string `json:"id"`
				ConsumerKey string `json:"consumer_key"`
				Expiry      string `json:"access_token_expiry"`
			}
			if err := json.Unmarshal(body, &tok); err != nil {
				t.Fatalf("decoding %s: %v", body, err)
			}
			if tok.ID == "" || tok.ConsumerKey != secrets.ConsumerKey || tok.Expiry == "" {
				t.Fatalf("token %s", body)
			}
			if _, list := e.raw(http.MethodGet, "/api/v1/ade/tokens", "", nil); !strings.Contains(string(list), tok.ID) ||
				strings.Contains(string(list), secrets.AccessSecret) {
				t.Errorf("GET /ade/tokens: %s", list)
			}

			fake.AddDevices(
				appletest.ADEDevice{SerialNumber: "C02AAA", Model: "MacBook Air", Color: "MIDNIGHT", OS: "OSX", DeviceFamily: "Mac"},
				appletest.ADEDevice{SerialNumber: "F17BBB"},
				appletest.ADEDevice{SerialNumber: "DMPCCC"},
			)
			if res := e.adeSync(tok.ID); res["fetched"] != 3.0 {
				t.Errorf("first sync %v, want 3 fetched", res)
			}
			devices := e.adeDevices()
			if len(devices) != 3 || devices["C02AAA"].Model != "MacBook Air" || devices["C02AAA"].DeviceFamily != "Mac" ||
				devices["C02AAA"].TokenID != tok.ID || devices["F17BBB"].Deleted {
				t.Fatalf("devices after the first sync: %+v", devices)
			}

			fake.ModifyDevice("F17BBB", func(d *appletest.ADEDevice) { d.Color = "GOLD" })
			fake.RemoveDevice("DMPCCC")
			fake.AddDevices(appletest.ADEDevice{SerialNumber: "HXDDDD"})
			if res := e.adeSync(tok.ID); res["modified"] != 1.0 || res["deleted"] != 1.0 || res["added"] != 1.0 {
				t.Errorf("second sync %v, want 1 added, 1 modified, 1 deleted", res)
			}
			devices = e.adeDevices()
			if d := devices["F17BBB"]; d.OpType != "modified" || d.Color != "GOLD" || d.Deleted {
				t.Errorf("modified device %+v", d)
			}
			if d := devices["DMPCCC"]; d.OpType != "deleted" || !d.Deleted {
				t.Errorf("removed device %+v", d)
			}
			if d := devices["HXDDDD"]; d.OpType != "added" || d.Deleted {
				t.Errorf("added device %+v", d)
			}

			if code := e.api(http.MethodPost, "/api/v1/ade/tokens/nope/sync", nil, nil); code != http.StatusNotFound {
				t.Errorf("sync of an unknown token: %d, want 404", code)
			}
			fake.RequireTerms(true)
			var errBody map[string]string
			if code := e.api(http.MethodPost, "/api/v1/ade/tokens/"+tok.ID+"/sync", nil, &errBody); code != http.StatusConflict ||
				!strings.Contains(errBody["error"], "accept the new terms") {
				t.Errorf("sync with terms to accept: %d %v, want 409", code, errBody)
			}
		})
	}
}

// tamper changes one character in the middle of the S/MIME body's
// base64, inside the ciphertext.
func tamper(p7m []byte) []byte {
	out := bytes.Clone(p7m)
	body := bytes.Index(out, []byte("\r\n\r\n"))
	if body < 0 {
		body = bytes.Index(out, []byte("\n\n"))
	}
	i := body + (len(out)-body)*3/4
	for out[i] == '\r' || out[i] == '\n' || out[i] == '=' {
		i--
	}
	if out[i] == 'A' {
		out[i] = 'B'
	} else {
		out[i] = 'A'
	}
	return out
}
