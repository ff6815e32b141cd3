package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/micromdm/plist"

	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/sim"
	"github.com/bramley-mdm/bramley/storage/storagetest"
)

// backends are the databases every end-to-end test runs on.
func backends(t *testing.T) map[string]func(t *testing.T) string {
	t.Helper()
	return map[string]func(t *testing.T) string{
		"sqlite":   func(t *testing.T) string { return "" }, // the default: SQLite in the data dir
		"postgres": func(t *testing.T) string { return storagetest.PostgresURL(t) },
	}
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// env is one running bramley for a test.
type env struct {
	t      *testing.T
	srv    *server.Server
	url    string
	apiKey string
	roots  *x509.CertPool
	http   *http.Client
	logs   *bytes.Buffer
}

// start runs a server on 127.0.0.1:0 over real HTTPS until the test ends.
func start(t *testing.T, db string, edit func(*server.Config)) *env {
	t.Helper()
	return startWith(t, db, edit)
}

// startWith is start with server options.
func startWith(t *testing.T, db string, edit func(*server.Config), opts ...server.Option) *env {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.DB = db
	cfg.Listen = "127.0.0.1:0"
	if edit != nil {
		edit(&cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PublicURL == "" {
		cfg.PublicURL = server.PublicURLFor(cfg, ln.Addr().String())
	}
	logs := new(bytes.Buffer)
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, logger, opts...)
	if err != nil {
		cancel()
		ln.Close()
		t.Fatalf("server.New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		srv.Close()
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	roots := x509.NewCertPool()
	roots.AddCert(srv.CA().Root())
	e := &env{t: t, srv: srv, url: srv.PublicURL(), apiKey: srv.AdminKey(), roots: roots, logs: logs}
	if cfg.HTTP {
		e.http = &http.Client{Timeout: 10 * time.Second}
	} else {
		e.http = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsClient(roots)}}
	}
	return e
}

// device returns a simulated device holding a fresh identity from
// bramley's CA.
func (e *env) device(opts ...sim.Option) *sim.Device {
	e.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		e.t.Fatal(err)
	}
	cert, err := e.srv.CA().IssueClient(context.Background(), &key.PublicKey, pkix.Name{CommonName: "sim device"}, 24*time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	return sim.New(e.url, cert, key, append([]sim.Option{sim.WithRootCAs(e.roots)}, opts...)...)
}

// api calls the admin API and decodes a JSON answer into out (when not nil).
func (e *env) api(method, path string, body any, out any) int {
	e.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.url+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.apiKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: decoding %q: %v", method, path, data, err)
		}
	}
	return resp.StatusCode
}

// enqueue sends a JSON command to one enrollment and returns its UUID.
func (e *env) enqueue(id string, cmd map[string]any) string {
	e.t.Helper()
	var out struct {
		CommandUUID string `json:"command_uuid"`
	}
	if code := e.api("POST", "/api/v1/devices/"+id+"/commands", cmd, &out); code != http.StatusCreated {
		e.t.Fatalf("enqueue %v: status %d", cmd, code)
	}
	return out.CommandUUID
}

type commandView struct {
	CommandUUID string `json:"command_uuid"`
	RequestType string `json:"request_type"`
	Targets     []struct {
		EnrollmentID string         `json:"enrollment_id"`
		Status       string         `json:"status"`
		Result       map[string]any `json:"result"`
	} `json:"targets"`
}

func (e *env) command(uuid string) commandView {
	e.t.Helper()
	var v commandView
	if code := e.api("GET", "/api/v1/commands/"+uuid, nil, &v); code != http.StatusOK {
		e.t.Fatalf("GET command %s: status %d", uuid, code)
	}
	return v
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func tlsClient(roots *x509.CertPool) *tls.Config {
	return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
}

// deviceJSON returns the admin API's JSON for a device, as text.
func (e *env) deviceJSON(id string) string {
	e.t.Helper()
	var raw json.RawMessage
	if code := e.api("GET", "/api/v1/devices/"+id, nil, &raw); code != http.StatusOK {
		e.t.Fatalf("GET device %s: %d", id, code)
	}
	return string(raw)
}

// foreignDevice returns a device whose identity comes from a CA bramley
// does not trust.
func foreignDevice(t *testing.T, e *env) *sim.Device {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "foreign device"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return sim.New(e.url, cert, key, sim.WithRootCAs(e.roots))
}

const plistArray = `<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><array><string>MessageType</string></array></plist>`

func plistDict(t *testing.T, m map[string]any) []byte {
	t.Helper()
	b, err := plist.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// statusOf returns the HTTP status of a *sim.StatusError, or 0.
func statusOf(err error) int {
	var se *sim.StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return 0
}
