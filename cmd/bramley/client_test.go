package main

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/bramley-mdm/bramley/pki"
)

const testAPIKey = "bramley_test-key-0123456789"

// envOf is a getenv for the variables in m.
func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// bramley runs the command line args in-process and returns its output.
func bramley(t *testing.T, getenv func(string) string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), args, getenv, &out, io.Discard)
	return out.String(), err
}

// fakeAPI serves h over HTTPS and returns a getenv pointing the client
// subcommands at it (BRAMLEY_SERVER, BRAMLEY_API_KEY, BRAMLEY_CA_FILE).
func fakeAPI(t *testing.T, h http.Handler) (env map[string]string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are tested
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "server-ca.pem")
	if err := os.WriteFile(caFile, pki.EncodeCertificatePEM(srv.Certificate()), 0o644); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"BRAMLEY_SERVER":  srv.URL,
		"BRAMLEY_API_KEY": testAPIKey,
		"BRAMLEY_CA_FILE": caFile,
	}
}

func TestClientErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"JSON error", http.StatusUnauthorized, `{"error":"invalid API key"}` + "\n", "invalid API key (HTTP 401)"},
		{"proxy page", http.StatusBadGateway, "<html><body>nginx</body></html>", "Bad Gateway (HTTP 502)"},
		{"plain text", http.StatusServiceUnavailable, "database unavailable\n", "database unavailable (HTTP 503)"},
		{"no body", http.StatusNotFound, "", "Not Found (HTTP 404)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := fakeAPI(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			_, err := bramley(t, envOf(env), "push", "cert", "list")
			if err == nil || err.Error() != tt.want {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestClientSendsKeyAndTrustsCAFile(t *testing.T) {
	var auth atomic.Value
	env := fakeAPI(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth.Store(r.Header.Get("Authorization"))
		io.WriteString(w, `{"push_certificates":[]}`)
	}))
	if _, err := bramley(t, envOf(env), "push", "cert", "list"); err != nil {
		t.Fatal(err)
	}
	if got := auth.Load(); got != "Bearer "+testAPIKey {
		t.Errorf("Authorization = %q", got)
	}

	// Flags win over the environment.
	out, err := bramley(t, envOf(env), "push", "cert", "list", "--api-key", "bramley_flag-key-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	if got := auth.Load(); got != "Bearer bramley_flag-key-0123456789" {
		t.Errorf("with --api-key, Authorization = %q", got)
	}
	if !strings.Contains(out, "No push certificate") {
		t.Errorf("empty list printed %q", out)
	}

	// Without the CA file the server's certificate is not trusted, and the
	// error says what to do.
	delete(env, "BRAMLEY_CA_FILE")
	_, err = bramley(t, envOf(env), "push", "cert", "list")
	if err == nil || !strings.Contains(err.Error(), "--ca-file") {
		t.Fatalf("untrusted server: err = %v, want advice on --ca-file", err)
	}
}

func TestClientConfigErrors(t *testing.T) {
	var calls atomic.Int32
	env := fakeAPI(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1) }))
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no key", map[string]string{"BRAMLEY_API_KEY": ""}, nil, "BRAMLEY_API_KEY"},
		{"bad server", nil, []string{"--server", "localhost:8443"}, "--server"},
		{"missing CA file", map[string]string{"BRAMLEY_CA_FILE": "/nonexistent/ca.pem"}, nil, "--ca-file"},
		{"CA file without PEM", map[string]string{"BRAMLEY_CA_FILE": notPEM}, nil, "no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := map[string]string{}
			for k, v := range env {
				e[k] = v
			}
			for k, v := range tt.env {
				e[k] = v
			}
			_, err := bramley(t, envOf(e), append([]string{"push", "cert", "list"}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("%d requests reached the server", n)
	}
}

func TestClientEnvOnlyForConnectionFlags(t *testing.T) {
	var force atomic.Value
	env := fakeAPI(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		force.Store(r.URL.Query().Get("force"))
		io.WriteString(w, `{"topic":"com.apple.mgmt.External.x","not_after":"2030-01-01T00:00:00Z"}`)
	}))
	certFile, keyFile, _ := pushCertFiles(t)
	// A stray BRAMLEY_FORCE must not force an upload.
	env["BRAMLEY_FORCE"] = "true"
	if _, err := bramley(t, envOf(env), "push", "cert", "upload", "--cert", certFile, "--key", keyFile); err != nil {
		t.Fatal(err)
	}
	if got := force.Load(); got != "" {
		t.Errorf("BRAMLEY_FORCE reached the request: force=%q", got)
	}
}
