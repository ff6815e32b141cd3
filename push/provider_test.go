package push

import (
	"context"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/appletest"
)

func TestProviderRequest(t *testing.T) {
	fake, cert := fakeAPNs(t, testTopic)
	clk := newClock()
	p := newProvider(t, fake, cert, WithProviderClock(clk.Now), WithTTL(6*time.Hour))
	tok := token(7)
	const magic = "CEFDF0BD-E342-4A27-8742-E930EA116B0A"

	res := p.Push(context.Background(), []Target{{EnrollmentID: "dev1", Token: tok, PushMagic: magic, Topic: testTopic}})
	if len(res) != 1 {
		t.Fatalf("%d results", len(res))
	}
	r := res[0]
	if r.Err != nil || r.Status != http.StatusOK || r.EnrollmentID != "dev1" || r.Retryable || r.Unregistered {
		t.Fatalf("result = %+v", r)
	}
	got := fake.Received()
	if len(got) != 1 {
		t.Fatalf("fake got %d requests", len(got))
	}
	n := got[0]
	if n.ProtoMajor != 2 {
		t.Errorf("HTTP/%d, want HTTP/2", n.ProtoMajor)
	}
	if n.Method != http.MethodPost || n.Path != "/3/device/"+hex.EncodeToString(tok) {
		t.Errorf("request line %s %s", n.Method, n.Path)
	}
	wantHeaders := map[string]string{
		"Content-Type":    "application/json",
		"Apns-Push-Type":  "mdm",
		"Apns-Topic":      testTopic,
		"Apns-Priority":   "10",
		"Apns-Expiration": strconv.FormatInt(clk.Now().Add(6*time.Hour).Unix(), 10),
	}
	for k, want := range wantHeaders {
		if v := n.Header.Values(k); len(v) != 1 || v[0] != want {
			t.Errorf("header %s = %q, want %q", k, v, want)
		}
	}
	for k := range n.Header {
		if _, ok := wantHeaders[k]; !ok {
			t.Errorf("unexpected header %s: %q", k, n.Header[k])
		}
	}
	if want := `{"mdm":"` + magic + `"}`; string(n.Body) != want {
		t.Errorf("body = %s, want %s", n.Body, want)
	}
	if n.CertTopic != testTopic || n.PushMagic != magic {
		t.Errorf("fake saw certificate topic %q and magic %q", n.CertTopic, n.PushMagic)
	}
	if r.APNsID == "" || r.APNsID != n.APNsID {
		t.Errorf("APNsID = %q, fake answered %q", r.APNsID, n.APNsID)
	}
}

func TestProviderResults(t *testing.T) {
	tests := []struct {
		name             string
		setup            func(fake *appletest.APNs, tokenHex string)
		status           int
		reason           string
		unregistered     bool
		retryable        bool
		certificateError bool
	}{
		{name: "accepted", status: 200},
		{name: "410 Unregistered", setup: func(f *appletest.APNs, h string) { f.FailToken(h, 410, "Unregistered") },
			status: 410, reason: "Unregistered", unregistered: true},
		{name: "400 BadDeviceToken", setup: func(f *appletest.APNs, h string) { f.FailToken(h, 400, "BadDeviceToken") },
			status: 400, reason: "BadDeviceToken", unregistered: true},
		{name: "400 DeviceTokenNotForTopic is not the token's end", setup: func(f *appletest.APNs, h string) { f.FailToken(h, 400, "DeviceTokenNotForTopic") },
			status: 400, reason: "DeviceTokenNotForTopic"},
		{name: "429 TooManyRequests", setup: func(f *appletest.APNs, _ string) { f.FailNext(1, 429, "") },
			status: 429, reason: "TooManyRequests", retryable: true},
		{name: "503 ServiceUnavailable", setup: func(f *appletest.APNs, _ string) { f.FailNext(1, 503, "") },
			status: 503, reason: "ServiceUnavailable", retryable: true},
		{name: "500 InternalServerError", setup: func(f *appletest.APNs, _ string) { f.FailNext(1, 500, "") },
			status: 500, reason: "InternalServerError", retryable: true},
		{name: "403 BadCertificate", setup: func(f *appletest.APNs, h string) { f.FailToken(h, 403, "BadCertificate") },
			status: 403, reason: "BadCertificate", certificateError: true},
	}
	fake, cert := fakeAPNs(t, testTopic)
	p := newProvider(t, fake, cert)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := token(100 + i)
			if tt.setup != nil {
				tt.setup(fake, hex.EncodeToString(tok))
			}
			r := p.Push(context.Background(), []Target{{EnrollmentID: "e", Token: tok, PushMagic: "m", Topic: testTopic}})[0]
			if r.Status != tt.status || r.Reason != tt.reason || r.Unregistered != tt.unregistered || r.Retryable != tt.retryable {
				t.Fatalf("result = %+v", r)
			}
			if (r.Err == nil) != (tt.status == 200) {
				t.Errorf("Err = %v for status %d", r.Err, r.Status)
			}
			var se *StatusError
			if tt.status != 200 && (!errors.As(r.Err, &se) || se.Status != tt.status) {
				t.Errorf("Err = %v, want a *StatusError", r.Err)
			}
			if got := Outcome(r) == OutcomeCertificateRefused; got != tt.certificateError {
				t.Errorf("Outcome = %s", Outcome(r))
			}
		})
	}
}

func TestProviderDevelopmentCertificate(t *testing.T) {
	fake := appletest.NewAPNs(t)
	certPEM, keyPEM := fake.DevelopmentPushCertificate(testTopic)
	cert, err := LoadKeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	p := newProvider(t, fake, cert)
	r := p.Push(context.Background(), []Target{{EnrollmentID: "e", Token: token(1), PushMagic: "m"}})[0]
	if r.Status != 403 || r.Reason != "BadCertificateEnvironment" || r.Retryable || r.Unregistered {
		t.Fatalf("result = %+v", r)
	}
}

func TestProviderNotSent(t *testing.T) {
	fake, cert := fakeAPNs(t, testTopic)
	p := newProvider(t, fake, cert)
	res := p.Push(context.Background(), []Target{
		{EnrollmentID: "no-token", PushMagic: "m", Topic: testTopic},
		{EnrollmentID: "other-topic", Token: token(1), PushMagic: "m", Topic: "com.apple.mgmt.External.other"},
	})
	if !errors.Is(res[0].Err, ErrNoToken) || !errors.Is(res[1].Err, ErrTopicMismatch) {
		t.Errorf("results = %+v", res)
	}
	if n := len(fake.Received()); n != 0 {
		t.Errorf("fake got %d requests", n)
	}
}

func TestProviderUnreachable(t *testing.T) {
	fake, cert := fakeAPNs(t, testTopic)
	t.Run("untrusted server", func(t *testing.T) {
		p, err := NewProvider(cert, WithURL(fake.URL())) // the system roots do not know the fake
		if err != nil {
			t.Fatal(err)
		}
		r := p.Push(context.Background(), []Target{{EnrollmentID: "e", Token: token(1), PushMagic: "m"}})[0]
		if r.Err == nil || r.Status != 0 || !r.Retryable {
			t.Errorf("result = %+v", r)
		}
	})
	t.Run("client certificate of another CA", func(t *testing.T) {
		other := appletest.NewAPNs(t)
		certPEM, keyPEM := other.PushCertificate(testTopic)
		c, err := LoadKeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		p := newProvider(t, fake, c)
		r := p.Push(context.Background(), []Target{{EnrollmentID: "e", Token: token(1), PushMagic: "m"}})[0]
		if r.Err == nil || r.Status != 0 {
			t.Errorf("result = %+v", r)
		}
		if n := len(fake.Received()); n != 0 {
			t.Errorf("fake served %d requests to an unknown certificate", n)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		p := newProvider(t, fake, cert)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		res := p.Push(ctx, []Target{{EnrollmentID: "a", Token: token(1), PushMagic: "m"}, {EnrollmentID: "b", Token: token(2), PushMagic: "m"}})
		for _, r := range res {
			if !errors.Is(r.Err, context.Canceled) || !r.Retryable {
				t.Errorf("result = %+v", r)
			}
		}
	})
}

func targets(n int) []Target {
	ts := make([]Target, n)
	for i := range ts {
		ts[i] = Target{EnrollmentID: "e" + strconv.Itoa(i), Token: token(i), PushMagic: "magic-" + strconv.Itoa(i), Topic: testTopic}
	}
	return ts
}

func TestProviderConcurrencyBound(t *testing.T) {
	tests := []struct {
		concurrency     int
		connections     int
		wantMaxInFlight func(got int) bool
	}{
		{concurrency: 5, connections: 2, wantMaxInFlight: func(got int) bool { return got >= 2 && got <= 5 }},
		{concurrency: 1, connections: 2, wantMaxInFlight: func(got int) bool { return got == 1 }},
		// The control: with a higher bound the fake does see more, so the
		// cases above measure the provider, not the fake.
		{concurrency: 40, connections: 1, wantMaxInFlight: func(got int) bool { return got > 5 && got <= 40 }},
	}
	for _, tt := range tests {
		t.Run("concurrency "+strconv.Itoa(tt.concurrency), func(t *testing.T) {
			fake, cert := fakeAPNs(t, testTopic, appletest.WithLatency(20*time.Millisecond))
			p := newProvider(t, fake, cert, WithConcurrency(tt.concurrency), WithConnections(tt.connections))
			for _, r := range p.Push(context.Background(), targets(30)) {
				if r.Err != nil {
					t.Fatalf("push failed: %+v", r)
				}
			}
			if got := fake.MaxInFlight(); !tt.wantMaxInFlight(got) {
				t.Errorf("fake saw at most %d pushes in flight with a bound of %d", got, tt.concurrency)
			}
		})
	}
}

func TestProviderConnectionPool(t *testing.T) {
	for _, conns := range []int{1, 2, 4} {
		t.Run(strconv.Itoa(conns)+" connections", func(t *testing.T) {
			fake, cert := fakeAPNs(t, testTopic, appletest.WithLatency(5*time.Millisecond))
			p := newProvider(t, fake, cert, WithConnections(conns))
			ts := targets(200)
			for _, r := range p.Push(context.Background(), ts) {
				if r.Err != nil {
					t.Fatalf("push failed: %+v", r)
				}
			}
			if got := fake.Connections(); got != conns {
				t.Errorf("pushes came over %d connections, want %d", got, conns)
			}
			perConn := make(map[string]int)
			for _, n := range fake.Received() {
				perConn[n.RemoteAddr]++
			}
			for addr, n := range perConn {
				if n != len(ts)/conns {
					t.Errorf("connection %s carried %d pushes, want %d", addr, n, len(ts)/conns)
				}
			}
			// A second batch reuses the connections.
			p.Push(context.Background(), targets(20))
			if got := fake.Connections(); got != conns {
				t.Errorf("after a second batch, %d connections, want %d", got, conns)
			}
		})
	}
}

func TestNewProviderRefuses(t *testing.T) {
	_, cert := fakeAPNs(t, testTopic)
	for name, opt := range map[string]ProviderOption{
		"no connections": WithConnections(0),
		"no concurrency": WithConcurrency(0),
		"no timeout":     WithTimeout(0),
		"plain http":     WithURL("http://127.0.0.1:1"),
	} {
		if _, err := NewProvider(cert, opt); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewProvider(nil); err == nil {
		t.Error("nil certificate accepted")
	}
}

func TestProviders(t *testing.T) {
	fake, cert := fakeAPNs(t, testTopic)
	ps := NewProviders()
	defer ps.Close()
	if _, ok := ps.Sender(testTopic); ok {
		t.Fatal("empty Providers has a sender")
	}
	p1 := newProvider(t, fake, cert)
	p2 := newProvider(t, fake, cert)
	ps.Set(p1)
	ps.Set(p2) // a renewed certificate for the same topic
	if got, _ := ps.Provider(testTopic); got != p2 {
		t.Error("Set did not replace the provider of the topic")
	}
	if certs := ps.Certificates(); len(certs) != 1 || certs[0].Topic != testTopic {
		t.Errorf("Certificates = %v", certs)
	}
	ps.Remove(testTopic)
	if _, ok := ps.Sender(testTopic); ok {
		t.Error("Remove kept the provider")
	}
}
