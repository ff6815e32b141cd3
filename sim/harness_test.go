package sim_test

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
	"sync"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/storage/storagetest"
)

const testTopic = "com.apple.mgmt.External.bramley-sim-test"

// backends are the databases the end-to-end tests run on.
func backends() map[string]func(t *testing.T) string {
	return map[string]func(t *testing.T) string{
		"sqlite":   func(*testing.T) string { return "" }, // the default: SQLite in the data dir
		"postgres": func(t *testing.T) string { return storagetest.PostgresURL(t) },
	}
}

// env is one running bramley for a test.
type env struct {
	t    *testing.T
	srv  *server.Server
	url  string
	key  string
	ca   *x509.Certificate
	http *http.Client
}

// start runs a server on 127.0.0.1:0 over real HTTPS until the test ends.
func start(t *testing.T, db string, edit func(*server.Config)) *env {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.DB = db
	cfg.Listen = "127.0.0.1:0"
	cfg.PushTopic = testTopic
	if edit != nil {
		edit(&cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.PublicURL = server.PublicURLFor(cfg, ln.Addr().String())
	logs := &lockedBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, logger)
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
	return &env{
		t: t, srv: srv, url: srv.PublicURL(), key: srv.AdminKey(), ca: srv.CA().Root(),
		http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		}},
	}
}

// api calls the admin API and decodes a JSON answer into out (when not nil).
func (e *env) api(method, path string, body, out any) int {
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
	req.Header.Set("Authorization", "Bearer "+e.key)
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

// token mints an enrollment token for uses enrollments and returns its URL.
func (e *env) token(uses int) string {
	e.t.Helper()
	var tok struct{ URL string }
	if code := e.api("POST", "/api/v1/enrollment-tokens", map[string]any{"max_uses": uses, "expires_in": "1h"}, &tok); code != http.StatusCreated {
		e.t.Fatalf("minting a token: %d", code)
	}
	return tok.URL
}

// enqueue queues a JSON command for one enrollment and returns its UUID.
func (e *env) enqueue(id string, cmd map[string]any) string {
	e.t.Helper()
	var out struct {
		CommandUUID string `json:"command_uuid"`
	}
	if code := e.api("POST", "/api/v1/devices/"+id+"/commands", cmd, &out); code != http.StatusCreated {
		e.t.Fatalf("enqueue %v: %d", cmd, code)
	}
	return out.CommandUUID
}

// commandStatus is the status of a command on its (one) target.
func (e *env) commandStatus(uuid string) (string, map[string]any) {
	e.t.Helper()
	var v struct {
		Targets []struct {
			Status string         `json:"status"`
			Result map[string]any `json:"result"`
		} `json:"targets"`
	}
	if code := e.api("GET", "/api/v1/commands/"+uuid, nil, &v); code != http.StatusOK || len(v.Targets) != 1 {
		e.t.Fatalf("GET command %s: %d %+v", uuid, code, v)
	}
	return v.Targets[0].Status, v.Targets[0].Result
}

// waitStatus waits until the command reaches status.
func (e *env) waitStatus(uuid, status string) map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, result := e.commandStatus(uuid)
		if got == status {
			return result
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("command %s is %q, not %q, after 20s", uuid, got, status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
