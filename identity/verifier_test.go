package identity

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/pki"
)

// nginxEscape escapes a PEM certificate as nginx's $ssl_client_escaped_cert
// does (ngx_escape_uri with NGX_ESCAPE_URI_COMPONENT): everything but
// letters, digits and "-._~" becomes %XX, "+", "/" and "=" included.
func nginxEscape(pemText string) string {
	var b strings.Builder
	for _, c := range []byte(pemText) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.IndexByte("-._~", c) >= 0:
			b.WriteByte(c)
		default:
			b.WriteString("%" + strings.ToUpper(string("0123456789abcdef"[c>>4])+string("0123456789abcdef"[c&15])))
		}
	}
	return b.String()
}

// albEscape escapes as AWS ALB's X-Amzn-Mtls-Clientcert does: URL-encoded
// PEM with "+", "=" and "/" left as they are.
func albEscape(pemText string) string {
	s := url.PathEscape(pemText)
	return strings.NewReplacer("%2F", "/", "%3D", "=").Replace(s)
}

func certPEM(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

func rfc9440(c *x509.Certificate) string {
	return ":" + base64.StdEncoding.EncodeToString(c.Raw) + ":"
}

func TestIdentify(t *testing.T) {
	now := time.Now()
	caNow := now
	ca := newCA(t, func() time.Time { return caNow })
	good := issue(t, ca, 24*time.Hour)
	caNow = now.Add(-48 * time.Hour)
	expired := issue(t, ca, time.Hour)
	caNow = now
	stranger := issue(t, newCA(t, time.Now), 24*time.Hour)
	realHeader, realBody := realSignature(t)
	realCert, err := ParseSignature(realHeader)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(body []byte, d device) string {
		sig, err := pki.SignDetached(body, d.cert, d.key)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	alteredBody := bytes.Clone(realBody)
	alteredBody[10] ^= 0x01

	tests := []struct {
		name     string
		anchors  []*x509.Certificate
		clock    time.Time // when zero, now
		opts     []Option
		peer     []*x509.Certificate // TLS client certificates
		header   http.Header
		body     []byte
		want     *x509.Certificate
		wantCode int
	}{
		{name: "TLS client certificate from the CA", peer: []*x509.Certificate{good.cert}, want: good.cert},
		{name: "TLS client certificate from another CA", peer: []*x509.Certificate{stranger.cert}, wantCode: 403},
		{name: "expired TLS client certificate", peer: []*x509.Certificate{expired.cert}, wantCode: 403},
		{name: "second anchor", anchors: []*x509.Certificate{ca.Certificate(), stranger.cert}, peer: []*x509.Certificate{stranger.cert}, want: stranger.cert},
		{
			name:   "Mdm-Signature over the real body",
			header: http.Header{"Mdm-Signature": {sign(realBody, good)}},
			body:   realBody, want: good.cert,
		},
		{
			name:   "Mdm-Signature wins over the TLS certificate",
			peer:   []*x509.Certificate{stranger.cert},
			header: http.Header{"Mdm-Signature": {sign(realBody, good)}},
			body:   realBody, want: good.cert,
		},
		{
			name:   "Mdm-Signature over another body",
			header: http.Header{"Mdm-Signature": {sign(realBody, good)}},
			body:   alteredBody, wantCode: 403,
		},
		{
			name:   "Mdm-Signature from another CA",
			header: http.Header{"Mdm-Signature": {sign(realBody, stranger)}},
			body:   realBody, wantCode: 403,
		},
		{
			name:   "Mdm-Signature by an expired certificate",
			header: http.Header{"Mdm-Signature": {sign(realBody, expired)}},
			body:   realBody, wantCode: 403,
		},
		{
			// The captured device's CA was not published; trusting the device
			// certificate itself exercises the real SHA-1, no-attribute CMS
			// end to end.
			name:    "real device signature, its certificate trusted",
			anchors: []*x509.Certificate{realCert},
			clock:   time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), // within its validity, 2021-2031
			header:  http.Header{"Mdm-Signature": {realHeader}},
			body:    realBody, want: realCert,
		},
		{
			name:   "real device signature, CA not trusted",
			header: http.Header{"Mdm-Signature": {realHeader}},
			body:   realBody, wantCode: 403,
		},
		{
			name:     "malformed Mdm-Signature",
			header:   http.Header{"Mdm-Signature": {"bm90IENNUw=="}},
			wantCode: 403,
		},
		{
			name:   "RFC 9440 Client-Cert header",
			opts:   []Option{WithProxyHeader("Client-Cert")},
			header: http.Header{"Client-Cert": {rfc9440(good.cert)}},
			want:   good.cert,
		},
		{
			name:   "nginx escaped PEM",
			opts:   []Option{WithProxyHeader("X-SSL-Client-Cert")},
			header: http.Header{"X-Ssl-Client-Cert": {nginxEscape(certPEM(good.cert))}},
			want:   good.cert,
		},
		{
			name:   "AWS ALB escaped PEM with raw plus signs",
			opts:   []Option{WithProxyHeader("X-Amzn-Mtls-Clientcert")},
			header: http.Header{"X-Amzn-Mtls-Clientcert": {albEscape(certPEM(good.cert))}},
			want:   good.cert,
		},
		{
			name:     "proxy header from another CA",
			opts:     []Option{WithProxyHeader("Client-Cert")},
			header:   http.Header{"Client-Cert": {rfc9440(stranger.cert)}},
			wantCode: 403,
		},
		{
			name:     "malformed proxy header",
			opts:     []Option{WithProxyHeader("Client-Cert")},
			header:   http.Header{"Client-Cert": {":bm90IGEgY2VydA==:"}},
			wantCode: 400,
		},
		{
			name:     "proxy header not trusted unless configured",
			header:   http.Header{"Client-Cert": {rfc9440(good.cert)}},
			wantCode: 400,
		},
		{name: "no identity", wantCode: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			anchors := tt.anchors
			if anchors == nil {
				anchors = []*x509.Certificate{ca.Certificate()}
			}
			at := now
			if !tt.clock.IsZero() {
				at = tt.clock
			}
			v := NewVerifier(anchors, append([]Option{WithClock(func() time.Time { return at })}, tt.opts...)...)
			r := httptest.NewRequest(http.MethodPut, "/mdm/checkin", bytes.NewReader(tt.body))
			for k, vs := range tt.header {
				r.Header[k] = vs
			}
			if tt.peer != nil {
				r.TLS = &tls.ConnectionState{PeerCertificates: tt.peer}
			}
			id, err := v.Identify(r, tt.body)
			if tt.wantCode != 0 {
				if err == nil {
					t.Fatalf("accepted %v, want %d", id.Cert.Subject, tt.wantCode)
				}
				var he *handler.Error
				if !errors.As(err, &he) || he.Status != tt.wantCode {
					t.Fatalf("err = %v, want status %d", err, tt.wantCode)
				}
				if tt.wantCode == 401 {
					t.Fatal("devices must never get 401")
				}
				return
			}
			if err != nil {
				t.Fatalf("Identify: %v", err)
			}
			if !id.Cert.Equal(tt.want) {
				t.Errorf("identified %v, want %v", id.Cert.Subject, tt.want.Subject)
			}
			if sum := sha256.Sum256(tt.want.Raw); !bytes.Equal(id.Hash, sum[:]) {
				t.Errorf("Hash = %x, want the SHA-256 of the certificate", id.Hash)
			}
		})
	}
}

func TestParseProxyHeader(t *testing.T) {
	d := issue(t, newCA(t, time.Now), time.Hour)
	p := certPEM(d.cert)
	tests := []struct {
		name    string
		header  string
		wantErr bool
	}{
		{name: "RFC 9440", header: rfc9440(d.cert)},
		{name: "RFC 9440 with spaces around", header: " " + rfc9440(d.cert) + " "},
		{name: "nginx escaped PEM", header: nginxEscape(p)},
		{name: "AWS ALB escaped PEM", header: albEscape(p)},
		{name: "plain PEM", header: p},
		{name: "empty", header: "", wantErr: true},
		{name: "colons only", header: "::", wantErr: true},
		{name: "RFC 9440 not base64", header: ":***:", wantErr: true},
		{name: "RFC 9440 not a certificate", header: ":bm90IGEgY2VydA==:", wantErr: true},
		{name: "bad escape", header: "%zz" + nginxEscape(p), wantErr: true},
		{name: "PEM of another type", header: nginxEscape(strings.Replace(p, "CERTIFICATE", "PRIVATE KEY", 2)), wantErr: true},
		{name: "truncated PEM", header: nginxEscape(p[:len(p)/2]), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, err := ParseProxyHeader(tt.header)
			if tt.wantErr {
				if err == nil {
					t.Fatal("want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !cert.Equal(d.cert) {
				t.Error("parsed another certificate")
			}
		})
	}
}

// TestMiddlewareMTLS runs the middleware behind a real TLS server that asks
// for, but does not verify, client certificates: verification is ours, so a
// device with a certificate we refuse still gets a 403 rather than a failed
// handshake, and devices that sign messages need no client certificate.
func TestMiddlewareMTLS(t *testing.T) {
	ca := newCA(t, time.Now)
	good := issue(t, ca, 24*time.Hour)
	stranger := issue(t, newCA(t, time.Now), 24*time.Hour)
	serverCert, err := pki.LoadOrCreateServerCert(t.TempDir(), nil, ca, time.Now)
	if err != nil {
		t.Fatal(err)
	}

	const maxBody = 4096
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := FromContext(r.Context())
		if !ok {
			http.Error(w, "no identity in context", http.StatusInternalServerError)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("X-Identity", id.Cert.SerialNumber.Text(16))
		w.Write(body) // echo, to show the body arrived intact
	})
	v := NewVerifier([]*x509.Certificate{ca.Certificate()})
	srv := httptest.NewUnstartedServer(v.Middleware(maxBody)(next))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequestClientCert,
	}
	srv.StartTLS()
	defer srv.Close()

	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	client := func(d *device) *http.Client {
		cfg := &tls.Config{RootCAs: roots, ServerName: "localhost"}
		if d != nil {
			cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{d.cert.Raw}, PrivateKey: d.key, Leaf: d.cert}}
		}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	_, body := realSignature(t)
	sig, err := pki.SignDetached(body, good.cert, good.key)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		device     *device
		header     http.Header
		body       []byte
		wantStatus int
	}{
		{name: "client certificate from the CA", device: &good, body: body, wantStatus: 200},
		{name: "client certificate from another CA", device: &stranger, body: body, wantStatus: 403},
		{name: "no client certificate", body: body, wantStatus: 400},
		{name: "Mdm-Signature, no client certificate", header: http.Header{"Mdm-Signature": {sig}}, body: body, wantStatus: 200},
		{name: "empty body", device: &good, body: []byte{}, wantStatus: 200},
		{name: "body at the cap", device: &good, body: bytes.Repeat([]byte("a"), maxBody), wantStatus: 200},
		{name: "body over the cap", device: &good, body: bytes.Repeat([]byte("a"), maxBody+1), wantStatus: 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPut, srv.URL+"/mdm/checkin", bytes.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, vs := range tt.header {
				req.Header[k] = vs
			}
			resp, err := client(tt.device).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, bytes.TrimSpace(got), tt.wantStatus)
			}
			if tt.wantStatus != 200 {
				return
			}
			if !bytes.Equal(got, tt.body) {
				t.Errorf("the next handler got %d bytes, want the %d sent", len(got), len(tt.body))
			}
			if want := good.cert.SerialNumber.Text(16); resp.Header.Get("X-Identity") != want {
				t.Errorf("identity serial %s, want %s", resp.Header.Get("X-Identity"), want)
			}
		})
	}
}
