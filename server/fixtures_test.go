package server_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bramley-mdm/bramley/server"
)

// The real iMac enrollment from the fixtures: Authenticate, TokenUpdate and
// the DeviceInformation result for command 76eda240-….
const (
	imacUDID        = "66ADE930-5FDF-5EC4-8429-15640684C489"
	imacCommandUUID = "76eda240-5488-4989-8339-f2ae160113c4"
)

// openssl runs the openssl command line in dir.
func openssl(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// outsideCA makes, with openssl, a CA bramley is told to trust and two
// client certificates it issues: "dev" and "other".
func outsideCA(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	openssl(t, dir, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
		"-days", "2", "-subj", "/O=Outside/CN=Outside Device CA",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	if err := os.WriteFile(filepath.Join(dir, "client.ext"),
		[]byte("keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"dev", "other"} {
		openssl(t, dir, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", name+".key", "-out", name+".csr", "-subj", "/CN="+name)
		openssl(t, dir, "x509", "-req", "-in", name+".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
			"-out", name+".pem", "-days", "1", "-extfile", "client.ext")
	}
	return dir
}

// signedPut sends body to path with an Mdm-Signature made by
// `openssl cms -sign` with the named certificate, as a device behind a
// TLS-terminating proxy does.
func signedPut(t *testing.T, e *env, dir, signer, path string, body []byte) (int, []byte) {
	t.Helper()
	in := filepath.Join(dir, "body")
	if err := os.WriteFile(in, body, 0o600); err != nil {
		t.Fatal(err)
	}
	openssl(t, dir, "cms", "-sign", "-binary", "-in", "body", "-signer", signer+".pem", "-inkey", signer+".key",
		"-outform", "DER", "-out", "sig.der")
	sig, err := os.ReadFile(filepath.Join(dir, "sig.der"))
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPut, e.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Mdm-Signature", base64.StdEncoding.EncodeToString(sig))
	req.Header.Set("Content-Type", "application/x-apple-aspen-mdm-checkin")
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "mdm", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTrustedCAWithOpenSSLSignatures is the MDM core's acceptance test: a
// device whose identity comes from a --trust-ca CA signs real captures with
// openssl, enrolls, receives a DeviceInformation command queued through the
// API, acknowledges it, and the result reads back; another certificate from
// the same CA cannot act as the device.
func TestTrustedCAWithOpenSSLSignatures(t *testing.T) {
	for name, db := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := outsideCA(t)
			e := start(t, db(t), func(c *server.Config) { c.TrustCA = []string{filepath.Join(dir, "ca.pem")} })

			for _, f := range []string{"nanomdm-Authenticate.2.imac-macos10.12.6.plist", "nanomdm-TokenUpdate.2.imac-macos10.12.6.plist"} {
				if code, out := signedPut(t, e, dir, "dev", "/mdm/checkin", fixture(t, f)); code != http.StatusOK {
					t.Fatalf("%s: %d %s", f, code, out)
				}
			}
			uuid := e.enqueue(imacUDID, map[string]any{
				"request_type": "DeviceInformation", "command_uuid": imacCommandUUID, "queries": []string{"HostName", "UDID"},
			})
			if uuid != imacCommandUUID {
				t.Fatalf("command_uuid = %s", uuid)
			}
			idle := []byte(fmt.Sprintf(idlePlist, imacUDID))
			code, cmd := signedPut(t, e, dir, "dev", "/mdm/connect", idle)
			if code != http.StatusOK || !bytes.Contains(cmd, []byte(imacCommandUUID)) || !bytes.Contains(cmd, []byte("<string>DeviceInformation</string>")) {
				t.Fatalf("Idle: %d %s", code, cmd)
			}
			code, next := signedPut(t, e, dir, "dev", "/mdm/connect", fixture(t, "nanomdm-DeviceInformation.1.imac-macos10.12.6.plist"))
			if code != http.StatusOK || len(next) != 0 {
				t.Fatalf("result: %d %q, want 200 with an empty body", code, next)
			}
			view := e.command(imacCommandUUID)
			if len(view.Targets) != 1 || view.Targets[0].Status != "Acknowledged" {
				t.Fatalf("command = %+v", view)
			}
			qr, _ := view.Targets[0].Result["QueryResponses"].(map[string]any)
			if qr["HostName"] != "fruit.example.com" {
				t.Fatalf("QueryResponses = %v", qr)
			}
			if dev := e.deviceJSON(imacUDID); !strings.Contains(dev, `"host_name":"fruit.example.com"`) || !strings.Contains(dev, `"serial_number":"C02MT66KFLHH"`) {
				t.Fatalf("device = %s", dev)
			}

			// Another certificate from the same trusted CA is not this device.
			for _, tc := range []struct {
				path string
				body []byte
			}{
				{"/mdm/checkin", fixture(t, "nanomdm-TokenUpdate.2.imac-macos10.12.6.plist")},
				{"/mdm/checkin", fixture(t, "nanomdm-Authenticate.2.imac-macos10.12.6.plist")},
				{"/mdm/connect", idle},
			} {
				if code, out := signedPut(t, e, dir, "other", tc.path, tc.body); code != http.StatusForbidden {
					t.Fatalf("other certificate on %s: %d %s, want 403", tc.path, code, out)
				}
			}
			// One changed byte breaks the signature.
			body := fixture(t, "nanomdm-TokenUpdate.2.imac-macos10.12.6.plist")
			in := filepath.Join(dir, "body")
			_ = os.WriteFile(in, body, 0o600)
			openssl(t, dir, "cms", "-sign", "-binary", "-in", "body", "-signer", "dev.pem", "-inkey", "dev.key", "-outform", "DER", "-out", "sig.der")
			sig, _ := os.ReadFile(filepath.Join(dir, "sig.der"))
			tampered := bytes.Replace(body, []byte("888CEB39"), []byte("888CEB3A"), 1)
			req, _ := http.NewRequest(http.MethodPut, e.url+"/mdm/checkin", bytes.NewReader(tampered))
			req.Header.Set("Mdm-Signature", base64.StdEncoding.EncodeToString(sig))
			resp, err := e.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("tampered body: %d, want 403", resp.StatusCode)
			}
		})
	}
}

const idlePlist = `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict><key>Status</key><string>Idle</string><key>UDID</key><string>%s</string></dict></plist>`
