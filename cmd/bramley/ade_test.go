package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bramley-mdm/bramley/pki"
)

func TestADECertificate(t *testing.T) {
	cert, _ := pushCert(t)
	certPEM := pki.EncodeCertificatePEM(cert)
	var path string
	env := fakeAPI(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path = r.Method + " " + r.URL.Path
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(certPEM)
	}))

	out, err := bramley(t, envOf(env), "ade", "certificate")
	if err != nil || out != string(certPEM) || path != "GET /api/v1/ade/certificate" {
		t.Fatalf("bramley ade certificate: %v, asked %q, printed %q", err, path, out)
	}
	file := filepath.Join(t.TempDir(), "ade.pem")
	if out, err = bramley(t, envOf(env), "ade", "certificate", "--out", file); err != nil || !strings.Contains(out, file) {
		t.Fatalf("--out: %v %q", err, out)
	}
	if got, _ := os.ReadFile(file); string(got) != string(certPEM) {
		t.Errorf("file holds %q", got)
	}
	if _, err := bramley(t, envOf(env), "ade", "certificate", "--out", file); err == nil {
		t.Error("--out overwrote an existing file")
	}
}
