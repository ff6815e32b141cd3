package identity

import (
	"bytes"
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
	ca := newCA(t, time.Now)
	good := issue(t, ca, 24*time.Hour)
	stranger := issue(t, newCA(t, time.Now), 24*time.Hour)
	past := now.Add(-48 * time.Hour)
	expired := issue(t, newCA(t, func() time.Time { return past }), time.Hour)
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
		opts     []Option
		peer     []*x509.Certificate // TLS client certificates
		header   http.Header
		body     []byte
		want     *x509.Certificate
		wantCode int
	}{
		{name: "TLS client certificate from the CA", peer: []*x509.Certificate{good.cert}, want: good.cert},
		{name: "TLS client certificate from another CA", peer: []*x509.Certificate{stranger.cert}, wantCode: 403},
		{name: "expired TLS client certificate", anchors: []*x509.Certificate{expired.cert, ca.Certificate()}, peer: []*x509.Certificate{expired.cert}, wantCode: 403},
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
			header:  http.Header{"Mdm-Signature": {realHeader}},
			body:    realBody, want: realCert,
		},
		{
			name:   "real device signature, CA not trusted",
			header: http.Header{"Mdm-Signature": {realHeader}},
			body:   realBody, wantCode: 403,
		},
		{
			name:   "malformed Mdm-Signature",
			header: http.Header{"Mdm-Signature": {"bm90IENNUw=="}},
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
			name:   "proxy header from another CA",
			opts:   []Option{WithProxyHeader("Client-Cert")},
			header: http.Header{"Client-Cert": {rfc9440(stranger.cert)}},
			wantCode: 403,
		},
		{
			name:   "malformed proxy header",
			opts:   []Option{WithProxyHeader("Client-Cert")},
			header: http.Header{"Client-Cert": {":bm90IGEgY2VydA==:"}},
			wantCode: 400,
		},
		{
			name:   "proxy header not trusted unless configured",
			header: http.Header{"Client-Cert": {rfc9440(good.cert)}},
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
			clock := func() time.Time { return now }
			if tt.name == "real device signature, its certificate trusted" {
				// Within the captured certificate's validity, 2021-2031.
				clock = func() time.Time { return time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC) }
			}
			v := NewVerifier(anchors, append([]Option{WithClock(clock)}, tt.opts...)...)
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
			if !bytes.Equal(id.Hash, tt.wantHash()) {
				t.Errorf("Hash = %x, want the SHA-256 of the certificate", id.Hash)
			}
		})
	}
}
