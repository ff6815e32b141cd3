package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/server"
)

// startSimServer runs a real bramley on 127.0.0.1 until the test ends and
// returns the environment pointing the client subcommands at it.
func startSimServer(t *testing.T) (env map[string]string, api func(method, path string, body, out any) int) {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.PushTopic = "com.apple.mgmt.External.bramley-cmd-test"
	cfg.APIKey = testAPIKey
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	cfg.PublicURL = server.PublicURLFor(cfg, ln.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		ln.Close()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		srv.Close()
	})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pki.EncodeCertificatePEM(srv.CA().Certificate()), 0o600); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(srv.CA().Certificate())
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
	}}
	api = func(method, path string, body, out any) int {
		t.Helper()
		var r io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			r = bytes.NewReader(b)
		}
		req, err := http.NewRequest(method, srv.PublicURL()+"/api/v1"+path, r)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+testAPIKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		if out != nil {
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
		}
		return resp.StatusCode
	}
	return map[string]string{
		"BRAMLEY_SERVER":  srv.PublicURL(),
		"BRAMLEY_API_KEY": testAPIKey,
		"BRAMLEY_CA_FILE": caFile,
	}, api
}

// TestSim: bramley sim mints a token with the API key, enrolls five
// devices for real, and they answer a command queued while they run; the
// summary says so.
func TestSim(t *testing.T) {
	env, api := startSimServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout := new(syncBuffer)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"sim", "--devices", "5", "--poll", "100ms", "--for", "1m", "--not-now", "0"},
			envOf(env), stdout, io.Discard)
	}()

	var list struct {
		Devices []struct {
			UDID     string `json:"udid"`
			Enrolled bool   `json:"enrolled"`
		} `json:"devices"`
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if api("GET", "/devices", nil, &list) == http.StatusOK && len(list.Devices) == 5 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("sim ended: %v\n%s", err, stdout)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d devices after 60s:\n%s", len(list.Devices), stdout)
		}
	}
	var created struct {
		CommandUUID string `json:"command_uuid"`
	}
	if code := api("POST", "/devices/"+list.Devices[2].UDID+"/commands", map[string]any{"request_type": "ProfileList"}, &created); code != http.StatusCreated {
		t.Fatalf("enqueue: %d", code)
	}
	for {
		var cmd struct {
			Targets []struct {
				Status string `json:"status"`
			} `json:"targets"`
		}
		api("GET", "/commands/"+created.CommandUUID, nil, &cmd)
		if len(cmd.Targets) == 1 && cmd.Targets[0].Status == "Acknowledged" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("command not answered:\n%s", stdout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel() // as Ctrl-C: the summary follows
	if err := <-done; err != nil {
		t.Fatalf("sim: %v\n%s", err, stdout)
	}
	out := stdout.String()
	for _, want := range []string{`a token minted for 5 enrollments`, `Enrolled 5 of 5`, `devices enrolled\s+5\n`,
		`ProfileList\s+Acknowledged 1\n`, `errors\s+0\n`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestSimUntrustedServer: with a token but without the server's CA, the
// device cannot download its profile, and sim says what to pass.
func TestSimUntrustedServer(t *testing.T) {
	env, api := startSimServer(t)
	var tok struct {
		Token string `json:"token"`
	}
	if code := api("POST", "/enrollment-tokens", map[string]any{"max_uses": 1}, &tok); code != http.StatusCreated {
		t.Fatalf("minting a token: %d", code)
	}
	delete(env, "BRAMLEY_CA_FILE")
	delete(env, "BRAMLEY_API_KEY")
	out, err := bramley(t, envOf(env), "sim", "--token", tok.Token, "--for", "1s")
	if err == nil || !strings.Contains(err.Error(), "--ca-file") || !strings.Contains(out, "Enrolled 0 of 1") {
		t.Fatalf("err = %v\n%s", err, out)
	}
}

func TestSimRefuses(t *testing.T) {
	local := map[string]string{"BRAMLEY_API_KEY": testAPIKey}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"another machine", []string{"--server", "https://mdm.example.com:8443"}, local, "only talks to a server on this machine"},
		{"a private address", []string{"--server", "https://10.0.0.1:8443"}, local, "only talks to a server on this machine"},
		{"an IPv6 address", []string{"--server", "https://[2001:db8::1]:8443"}, local, "only talks to a server on this machine"},
		{"a name under localhost", []string{"--server", "https://localhost.example.com"}, local, "only talks to a server on this machine"},
		{"from the environment", nil, map[string]string{"BRAMLEY_SERVER": "https://192.0.2.1", "BRAMLEY_API_KEY": testAPIKey}, "only talks to a server on this machine"},
		{"OTA", []string{"--route", "ota"}, local, "not supported by this build yet"},
		{"ADE", []string{"--route", "ade"}, local, "not supported by this build yet"},
		{"no devices", []string{"--devices", "0"}, local, "--devices 0"},
		{"too many devices", []string{"--devices", "1001"}, local, "--devices 1001"},
		{"forever", []string{"--for", "48h"}, local, "--for 48h0m0s"},
		{"hammering", []string{"--poll", "1ms"}, local, "--poll 1ms"},
		{"neither token nor key", []string{"--server", "https://127.0.0.1:1"}, nil, "--token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := bramley(t, envOf(tt.env), append([]string{"sim"}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestSimStaysOnTheServer: a profile sending devices elsewhere is refused
// before they go there; here, another port on this machine.
func TestSimStaysOnTheServer(t *testing.T) {
	s, err := loopbackServer("https://localhost:8443")
	if err != nil {
		t.Fatal(err)
	}
	for raw, ok := range map[string]bool{
		"https://127.0.0.1:8443/scep":    true,
		"https://[::1]:8443/mdm/connect": true,
		"https://localhost:9443/scep":    false,
		"https://example.com:8443/scep":  false,
		"https://localhost/scep":         false,
	} {
		u, _ := url.Parse(raw)
		if err := s.check(u); (err == nil) != ok {
			t.Errorf("check(%s) = %v", raw, err)
		}
	}
}
