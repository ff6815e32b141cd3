package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bramley-mdm/bramley/pki"
)

func TestADETokenImport(t *testing.T) {
	var got, contentType, path string
	env := fakeAPI(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path, contentType = r.Method+" "+r.URL.Path, r.Header.Get("Content-Type")
		b, _ := io.ReadAll(r.Body)
		got = string(b)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"id":"T1","consumer_key":"CK_1","server_name":"Main","access_token_expiry":"2026-03-01T00:00:00Z"}`)
	}))
	file := filepath.Join(t.TempDir(), "token.p7m")
	if err := os.WriteFile(file, []byte("MIME p7m\r\nbytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := bramley(t, envOf(env), "ade", "token", "import", file)
	if err != nil || path != "POST /api/v1/ade/tokens" || got != "MIME p7m\r\nbytes" || contentType != "application/pkcs7-mime" {
		t.Fatalf("import: %v, asked %q with %q %q", err, path, contentType, got)
	}
	if !strings.Contains(out, "T1") || !strings.Contains(out, "Main") || !strings.Contains(out, "2026-03-01") {
		t.Errorf("printed %q", out)
	}
	if out, err := bramley(t, envOf(env), "ade", "token", "import", "--json", file); err != nil || !strings.HasPrefix(out, `{"id":"T1"`) {
		t.Errorf("--json: %v %q", err, out)
	}
	if _, err := bramley(t, envOf(env), "ade", "token", "import", filepath.Join(t.TempDir(), "missing.p7m")); err == nil {
		t.Error("imported a missing file")
	}
}

func TestADETokenImportRefused(t *testing.T) {
	env := fakeAPI(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":"the ADE server token is encrypted to another certificate"}`)
	}))
	file := filepath.Join(t.TempDir(), "token.p7m")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := bramley(t, envOf(env), "ade", "token", "import", file); err == nil || !strings.Contains(err.Error(), "another certificate") {
		t.Fatalf("refused import: %v", err)
	}
}

func TestADETokenList(t *testing.T) {
	tests := []struct {
		name   string
		answer string
		want   []string
	}{
		{"none", `{"tokens":[]}`, []string{"No ADE server token yet"}},
		{"some", `{"tokens":[
			{"id":"T1","consumer_key":"CK_1","server_name":"Main","access_token_expiry":"2026-03-01T00:00:00Z","days_left":300,"expiring":false},
			{"id":"T2","consumer_key":"CK_2","access_token_expiry":"2025-03-20T00:00:00Z","days_left":19,"expiring":true},
			{"id":"T3","consumer_key":"CK_3","access_token_expiry":"2025-01-01T00:00:00Z","days_left":-59,"expiring":true}]}`,
			[]string{"DAYS LEFT", "T1", "Main", "300", "19 (renew now)", "T3", "expired"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var path string
			env := fakeAPI(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				path = r.Method + " " + r.URL.Path
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, tt.answer)
			}))
			out, err := bramley(t, envOf(env), "ade", "token", "list")
			if err != nil || path != "GET /api/v1/ade/tokens" {
				t.Fatalf("list: %v, asked %q", err, path)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if out, err := bramley(t, envOf(env), "ade", "token", "list", "--json"); err != nil || !strings.HasPrefix(out, `{"tokens":`) {
				t.Errorf("--json: %v %q", err, out)
			}
		})
	}
}

func TestADESync(t *testing.T) {
	var path string
	env := fakeAPI(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path = r.Method + " " + r.URL.Path
		w.Header().Set("Content-Type", "application/json")
		if !strings.Contains(r.URL.Path, "/T1/") {
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"error":"no ADE token NOPE"}`)
			return
		}
		_, _ = io.WriteString(w, `{"pages":1,"fetched":3,"added":2,"modified":1,"deleted":0,"refetched":false,"stalled":false}`)
	}))
	out, err := bramley(t, envOf(env), "ade", "sync", "T1")
	if err != nil || path != "POST /api/v1/ade/tokens/T1/sync" || !strings.Contains(out, "3 devices fetched, 2 added, 1 modified, 0 deleted") {
		t.Fatalf("sync: %v, asked %q, printed %q", err, path, out)
	}
	if _, err := bramley(t, envOf(env), "ade", "sync", "NOPE"); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Errorf("unknown token: %v", err)
	}
	if _, err := bramley(t, envOf(env), "ade", "sync"); err == nil {
		t.Error("sync without a token ID")
	}
}

func TestADECertificateRotate(t *testing.T) {
	cert, _ := pushCert(t)
	certPEM := pki.EncodeCertificatePEM(cert)
	var path, query string
	env := fakeAPI(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path, query = r.Method+" "+r.URL.Path, r.URL.RawQuery
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(certPEM)
	}))
	out, err := bramley(t, envOf(env), "ade", "certificate", "rotate")
	if err != nil || out != string(certPEM) || path != "POST /api/v1/ade/certificate/rotate" || query != "" {
		t.Fatalf("rotate: %v, asked %q ?%s, printed %q", err, path, query, out)
	}
	if _, err := bramley(t, envOf(env), "ade", "certificate", "rotate", "--force"); err != nil || query != "force=true" {
		t.Fatalf("--force: %v, query %q", err, query)
	}
	file := filepath.Join(t.TempDir(), "ade.pem")
	if out, err = bramley(t, envOf(env), "ade", "certificate", "rotate", "--out", file); err != nil || !strings.Contains(out, file) {
		t.Fatalf("--out: %v %q", err, out)
	}
	if got, _ := os.ReadFile(file); string(got) != string(certPEM) {
		t.Errorf("file holds %q", got)
	}
	path = ""
	if _, err := bramley(t, envOf(env), "ade", "certificate", "rotate", "--out", file); err == nil || path != "" {
		t.Errorf("--out an existing file: %v, asked %q", err, path)
	}
	// bramley ade certificate still downloads.
	if out, err := bramley(t, envOf(env), "ade", "certificate"); err != nil || out != string(certPEM) || path != "GET /api/v1/ade/certificate" {
		t.Errorf("ade certificate: %v %q %q", err, path, out)
	}
}

func TestADECertificateRotateRefused(t *testing.T) {
	env := fakeAPI(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		_, _ = io.WriteString(w, `{"error":"the certificate before the last rotation may still be in use"}`)
	}))
	if _, err := bramley(t, envOf(env), "ade", "certificate", "rotate"); err == nil || !strings.Contains(err.Error(), "HTTP 409") {
		t.Fatalf("refused rotation: %v", err)
	}
}
