package appletest

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

const topic = "com.apple.mgmt.External.3c1a5b8e-8d7e-4f0e-a1f5-0d9c2b7e6a44"

var tokenHex = strings.Repeat("ab", 32)

// client returns an HTTP/2 client presenting the push certificate.
func client(t *testing.T, a *APNs, certPEM, keyPEM []byte) *http.Client {
	t.Helper()
	var protocols http.Protocols
	protocols.SetHTTP2(true)
	cfg := &tls.Config{RootCAs: a.RootCAs()}
	if certPEM != nil {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	tr := &http.Transport{TLSClientConfig: cfg, Protocols: &protocols, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

type answer struct {
	status int
	reason string
	apnsID string
	body   map[string]any
}

func send(t *testing.T, c *http.Client, method, url string, header map[string]string, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, apnsID: resp.Header.Get("apns-id")}
	b, _ := io.ReadAll(resp.Body)
	if len(b) > 0 {
		if err := json.Unmarshal(b, &a.body); err != nil {
			t.Fatalf("answer %q is not JSON: %v", b, err)
		}
		a.reason, _ = a.body["reason"].(string)
	}
	return a
}

func mdmHeaders() map[string]string {
	return map[string]string{"apns-push-type": "mdm", "apns-topic": topic, "apns-priority": "10",
		"apns-expiration": "1900000000", "Content-Type": "application/json"}
}

func with(h map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(h))
	for hk, hv := range h {
		if hk != k {
			out[hk] = hv
		}
	}
	if v != "" {
		out[k] = v
	}
	return out
}

func TestAPNsChecks(t *testing.T) {
	a := NewAPNs(t)
	certPEM, keyPEM := a.PushCertificate(topic)
	c := client(t, a, certPEM, keyPEM)
	ok := `{"mdm":"CEFDF0BD-E342-4A27-8742-E930EA116B0A"}`
	path := "/3/device/" + tokenHex

	tests := []struct {
		name   string
		method string
		path   string
		header map[string]string
		body   string
		status int
		reason string
	}{
		{"accepted", "POST", path, mdmHeaders(), ok, 200, ""},
		{"topic inferred from the certificate", "POST", path, with(mdmHeaders(), "apns-topic", ""), ok, 200, ""},
		{"upper-case token", "POST", "/3/device/" + strings.ToUpper(tokenHex), mdmHeaders(), ok, 200, ""},
		{"GET", "GET", path, mdmHeaders(), "", 405, "MethodNotAllowed"},
		{"other path", "POST", "/3/devices/" + tokenHex, mdmHeaders(), ok, 404, "BadPath"},
		{"no token", "POST", "/3/device/", mdmHeaders(), ok, 400, "MissingDeviceToken"},
		{"short token", "POST", "/3/device/abcd", mdmHeaders(), ok, 400, "BadDeviceToken"},
		{"token not hex", "POST", "/3/device/" + strings.Repeat("zz", 32), mdmHeaders(), ok, 400, "BadDeviceToken"},
		{"another topic", "POST", path, with(mdmHeaders(), "apns-topic", "com.apple.mgmt.External.other"), ok, 400, "TopicDisallowed"},
		{"alert push type", "POST", path, with(mdmHeaders(), "apns-push-type", "alert"), ok, 400, "InvalidPushType"},
		{"no push type", "POST", path, with(mdmHeaders(), "apns-push-type", ""), ok, 400, "InvalidPushType"},
		{"priority 7", "POST", path, with(mdmHeaders(), "apns-priority", "7"), ok, 400, "BadPriority"},
		{"expiration not a number", "POST", path, with(mdmHeaders(), "apns-expiration", "tomorrow"), ok, 400, "BadExpirationDate"},
		{"apns-id not a UUID", "POST", path, with(mdmHeaders(), "apns-id", "42"), ok, 400, "BadMessageId"},
		{"empty body", "POST", path, mdmHeaders(), "", 400, "PayloadEmpty"},
		{"aps payload", "POST", path, mdmHeaders(), `{"aps":{"alert":"hi"}}`, 400, "BadPayload"},
		{"mdm and aps", "POST", path, mdmHeaders(), `{"mdm":"x","aps":{}}`, 400, "BadPayload"},
		{"mdm not a string", "POST", path, mdmHeaders(), `{"mdm":1}`, 400, "BadPayload"},
		{"not JSON", "POST", path, mdmHeaders(), `mdm=x`, 400, "BadPayload"},
		{"too large", "POST", path, mdmHeaders(), `{"mdm":"` + strings.Repeat("x", 5000) + `"}`, 413, "PayloadTooLarge"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := send(t, c, tt.method, a.URL()+tt.path, tt.header, tt.body)
			if got.status != tt.status || got.reason != tt.reason {
				t.Errorf("answer %d %q, want %d %q", got.status, got.reason, tt.status, tt.reason)
			}
			if got.apnsID == "" {
				t.Error("no apns-id header")
			}
			if tt.status == 200 && got.body != nil {
				t.Errorf("200 with a body: %v", got.body)
			}
		})
	}
	if n := len(a.Received()); n != len(tests) {
		t.Errorf("recorded %d notifications, want %d", n, len(tests))
	}
}

func TestAPNsCertificates(t *testing.T) {
	a := NewAPNs(t)
	path := a.URL() + "/3/device/" + tokenHex
	body := `{"mdm":"m"}`

	t.Run("development certificate", func(t *testing.T) {
		certPEM, keyPEM := a.DevelopmentPushCertificate(topic)
		got := send(t, client(t, a, certPEM, keyPEM), "POST", path, mdmHeaders(), body)
		if got.status != 403 || got.reason != "BadCertificateEnvironment" {
			t.Errorf("answer %d %q", got.status, got.reason)
		}
	})
	t.Run("app push certificate", func(t *testing.T) {
		certPEM, keyPEM := a.PushCertificate("com.example.app")
		got := send(t, client(t, a, certPEM, keyPEM), "POST", path, with(mdmHeaders(), "apns-topic", ""), body)
		if got.status != 400 || got.reason != "TopicDisallowed" {
			t.Errorf("answer %d %q", got.status, got.reason)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		req, _ := http.NewRequest("POST", path, strings.NewReader(body))
		if resp, err := client(t, a, nil, nil).Do(req); err == nil {
			resp.Body.Close()
			t.Errorf("served without a client certificate: %d", resp.StatusCode)
		}
	})
	t.Run("certificate of another CA", func(t *testing.T) {
		other := NewAPNs(t)
		certPEM, keyPEM := other.PushCertificate(topic)
		req, _ := http.NewRequest("POST", path, strings.NewReader(body))
		if resp, err := client(t, a, certPEM, keyPEM).Do(req); err == nil {
			resp.Body.Close()
			t.Errorf("served a certificate of another CA: %d", resp.StatusCode)
		}
	})
	t.Run("HTTP/1.1", func(t *testing.T) {
		certPEM, keyPEM := a.PushCertificate(topic)
		pair, _ := tls.X509KeyPair(certPEM, keyPEM)
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: a.RootCAs(), Certificates: []tls.Certificate{pair}}}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest("POST", path, strings.NewReader(body))
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Errorf("accepted HTTP/%d", resp.ProtoMajor)
			}
		}
	})
}

func TestAPNsServerCertificateIsLoopbackOnly(t *testing.T) {
	a := NewAPNs(t)
	host, _, err := net.SplitHostPort(strings.TrimPrefix(a.URL(), "https://"))
	if err != nil {
		t.Fatal(err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		t.Errorf("listening on %s, want loopback", host)
	}
	certPEM, keyPEM := a.PushCertificate(topic)
	pair, _ := tls.X509KeyPair(certPEM, keyPEM)
	conn, err := tls.Dial("tcp", strings.TrimPrefix(a.URL(), "https://"), &tls.Config{
		RootCAs: a.RootCAs(), Certificates: []tls.Certificate{pair}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	leaf := conn.ConnectionState().PeerCertificates[0]
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "localhost" {
		t.Errorf("DNS names %v", leaf.DNSNames)
	}
	for _, ip := range leaf.IPAddresses {
		if !ip.IsLoopback() {
			t.Errorf("certificate for %s", ip)
		}
	}
	if err := leaf.VerifyHostname("api.push.apple.com"); err == nil {
		t.Error("the fake's certificate is good for api.push.apple.com")
	}
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Errorf("ALPN %q, want h2", p)
	}
}

func TestAPNsFailures(t *testing.T) {
	a := NewAPNs(t)
	certPEM, keyPEM := a.PushCertificate(topic)
	c := client(t, a, certPEM, keyPEM)
	path := a.URL() + "/3/device/" + tokenHex
	body := `{"mdm":"m"}`

	a.FailNext(2, 503, "")
	for i, want := range []int{503, 503, 200} {
		if got := send(t, c, "POST", path, mdmHeaders(), body); got.status != want {
			t.Errorf("request %d: %d, want %d", i, got.status, want)
		} else if want == 503 && got.reason != "ServiceUnavailable" {
			t.Errorf("reason %q", got.reason)
		}
	}

	a.FailToken(strings.ToUpper(tokenHex), 410, "Unregistered")
	got := send(t, c, "POST", path, mdmHeaders(), body)
	if got.status != 410 || got.reason != "Unregistered" {
		t.Fatalf("answer %d %q", got.status, got.reason)
	}
	if ts, ok := got.body["timestamp"].(float64); !ok || ts < float64(time.Now().Add(-time.Minute).UnixMilli()) {
		t.Errorf("410 without a timestamp in milliseconds: %v", got.body)
	}
	// A failed token still has its request checked first.
	if got := send(t, c, "POST", path, with(mdmHeaders(), "apns-push-type", "alert"), body); got.reason != "InvalidPushType" {
		t.Errorf("answer %d %q", got.status, got.reason)
	}
	other := strings.Repeat("cd", 32)
	if got := send(t, c, "POST", a.URL()+"/3/device/"+other, mdmHeaders(), body); got.status != 200 {
		t.Errorf("another token: %d", got.status)
	}
}

func TestAPNsRecordsAndCallsBack(t *testing.T) {
	a, err := StartAPNs(WithLatency(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	certPEM, keyPEM := a.PushCertificate(topic)
	c := client(t, a, certPEM, keyPEM)

	var mu sync.Mutex
	woken := make(map[string]string)
	a.OnPush(func(token []byte, magic string) {
		mu.Lock()
		defer mu.Unlock()
		woken[hex.EncodeToString(token)] = magic
	})
	const id = "8C9A2F5E-1B4D-4E3A-9F6C-7D2E1A0B3C4D"
	got := send(t, c, "POST", a.URL()+"/3/device/"+tokenHex, with(mdmHeaders(), "apns-id", id), `{"mdm":"magic-1"}`)
	if got.status != 200 || got.apnsID != id {
		t.Fatalf("answer %d, apns-id %q (want the request's)", got.status, got.apnsID)
	}
	send(t, c, "POST", a.URL()+"/3/device/"+tokenHex, with(mdmHeaders(), "apns-push-type", ""), `{"mdm":"magic-2"}`)

	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(woken)
		mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	if len(woken) != 1 || woken[tokenHex] != "magic-1" {
		t.Errorf("OnPush calls: %v, want the accepted push only", woken)
	}
	mu.Unlock()

	rec := a.Received()
	if len(rec) != 2 {
		t.Fatalf("recorded %d", len(rec))
	}
	n := rec[0]
	if n.Method != "POST" || n.ProtoMajor != 2 || n.CertTopic != topic || n.PushMagic != "magic-1" ||
		!bytes.Equal(n.Token, bytes.Repeat([]byte{0xab}, 32)) || n.Status != 200 || n.APNsID != id ||
		n.Header.Get("apns-push-type") != "mdm" || string(n.Body) != `{"mdm":"magic-1"}` {
		t.Errorf("recorded %+v", n)
	}
	if rec[1].Status != 400 || rec[1].Reason != "InvalidPushType" {
		t.Errorf("recorded %+v", rec[1])
	}
	if a.Connections() != 1 || a.MaxInFlight() != 1 {
		t.Errorf("connections %d, max in flight %d", a.Connections(), a.MaxInFlight())
	}
	a.Reset()
	if len(a.Received()) != 0 || a.Connections() != 0 {
		t.Error("Reset kept records")
	}
	if !bytes.Contains(a.CACertificatePEM(), []byte("BEGIN CERTIFICATE")) {
		t.Error("no CA PEM")
	}
}

func TestAPNsConcurrentStreams(t *testing.T) {
	a := NewAPNs(t, WithLatency(20*time.Millisecond))
	certPEM, keyPEM := a.PushCertificate(topic)
	c := client(t, a, certPEM, keyPEM)
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, "POST", a.URL()+"/3/device/"+tokenHex, strings.NewReader(`{"mdm":"m"}`))
			for k, v := range mdmHeaders() {
				req.Header.Set(k, v)
			}
			if resp, err := c.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	if got := a.MaxInFlight(); got < 2 {
		t.Errorf("max in flight %d: streams did not overlap", got)
	}
	if got := a.Connections(); got != 1 {
		t.Errorf("%d connections for one HTTP/2 client", got)
	}
}
