package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe to read while run writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, func(string) string { return "" }, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "bramley ") {
		t.Fatalf("version printed %q", out.String())
	}
}

// TestServe runs `bramley serve` as a user would, configured through
// BRAMLEY_ variables with a flag taking precedence, and checks it answers
// /healthz over HTTPS, shows the admin key once, and stops cleanly.
func TestServe(t *testing.T) {
	data := t.TempDir()
	env := map[string]string{
		"BRAMLEY_DATA":   data,
		"BRAMLEY_LISTEN": "256.0.0.1:1", // invalid: the flag below must win
	}
	getenv := func(k string) string { return env[k] }
	serve := func() (addr, output string, stop func() error) {
		ctx, cancel := context.WithCancel(context.Background())
		stdout := new(syncBuffer)
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, []string{"serve", "--listen", "127.0.0.1:0"}, getenv, stdout, io.Discard)
		}()
		re := regexp.MustCompile(`listening on (127\.0\.0\.1:\d+)`)
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if m := re.FindStringSubmatch(stdout.String()); m != nil {
				time.Sleep(50 * time.Millisecond) // let the key lines follow
				return m[1], stdout.String(), func() error { cancel(); return <-done }
			}
			select {
			case err := <-done:
				t.Fatalf("serve exited: %v\n%s", err, stdout.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
		cancel()
		t.Fatalf("serve did not start:\n%s", stdout.String())
		return "", "", nil
	}

	addr, out, stop := serve()
	if !strings.Contains(out, "Admin API key") {
		t.Errorf("first start did not show an admin key:\n%s", out)
	}
	client := httpsClient(t, filepath.Join(data, "tls", "server.pem"))
	resp, err := client.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
		t.Fatalf("healthz: %d %q", resp.StatusCode, body)
	}
	if err := stop(); err != nil {
		t.Fatalf("serve returned %v after cancel, want nil", err)
	}
	for _, f := range []string{"bramley.db", "secret.key"} {
		if _, err := os.Stat(filepath.Join(data, f)); err != nil {
			t.Errorf("data dir lacks %s: %v", f, err)
		}
	}

	// A second start keeps the data and shows no new key.
	_, out, stop = serve()
	if strings.Contains(out, "Admin API key") {
		t.Errorf("second start showed an admin key again:\n%s", out)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestServeRejectsBadConfig(t *testing.T) {
	for name, args := range map[string][]string{
		"log format": {"serve", "--log-format", "xml"},
		"database":   {"serve", "--db", "mysql://x"},
		"tls pair":   {"serve", "--tls-cert", "a.pem"},
	} {
		t.Run(name, func(t *testing.T) {
			err := run(context.Background(), append(args, "--data", t.TempDir()), func(string) string { return "" }, io.Discard, io.Discard)
			if err == nil {
				t.Fatal("want an error")
			}
		})
	}
	err := run(context.Background(), []string{"serve", "--data", t.TempDir()},
		func(k string) string {
			if k == "BRAMLEY_MAX_BODY" {
				return "lots"
			}
			return ""
		}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "BRAMLEY_MAX_BODY") {
		t.Fatalf("bad environment value: err = %v", err)
	}
}

// httpsClient trusts the server certificate bramley wrote to its data dir.
func httpsClient(t *testing.T, certFile string) *http.Client {
	t.Helper()
	data, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("no PEM in server certificate file")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}
}
