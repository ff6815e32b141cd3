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
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/micromdm/plist"

	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/storage/storagetest"
)

// benchServer is bramley's whole handler stack in-process: the benchmarks
// measure the server's path (identity, decode, binding, store), not TLS or
// the network.
type benchServer struct {
	b       *testing.B
	handler http.Handler
	srv     *server.Server
}

func newBenchServer(b *testing.B, db string) *benchServer {
	b.Helper()
	cfg := server.DefaultConfig()
	cfg.DataDir = b.TempDir()
	cfg.DB = db
	cfg.HTTP = true
	cfg.Listen = "127.0.0.1:0"
	cfg.APIKey = benchKey
	srv, err := server.New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	return &benchServer{b: b, handler: srv.Handler(), srv: srv}
}

type benchDevice struct {
	udid string
	tls  *tls.ConnectionState
}

func (s *benchServer) device(i int) *benchDevice {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert, err := s.srv.CA().IssueClient(context.Background(), &key.PublicKey, pkix.Name{CommonName: "bench"}, time.Hour)
	if err != nil {
		s.b.Fatal(err)
	}
	return &benchDevice{
		udid: fmt.Sprintf("BENCH-%08d-%x", i, randomBytes(s.b, 4)),
		tls:  &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}},
	}
}

// do sends body as the device and returns the response body; any status
// but 200 fails the benchmark.
func (s *benchServer) do(d *benchDevice, path string, body []byte) []byte {
	req := httptest.NewRequest(http.MethodPut, path, bytes.NewReader(body))
	req.TLS = d.tls
	rec := httptest.NewRecorder()
	s.handler.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		s.b.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
	}
	out, _ := io.ReadAll(rec.Body)
	return out
}

func (s *benchServer) enroll(d *benchDevice) {
	s.do(d, "/mdm/checkin", mustPlist(s.b, map[string]any{
		"MessageType": "Authenticate", "UDID": d.udid, "Topic": "com.apple.mgmt.External.bench",
		"SerialNumber": "C02BENCH", "Model": "MacBookPro18,3", "OSVersion": "14.5",
	}))
	s.do(d, "/mdm/checkin", tokenUpdate(s.b, d.udid))
}

func tokenUpdate(b testing.TB, udid string) []byte {
	return mustPlist(b, map[string]any{
		"MessageType": "TokenUpdate", "UDID": udid, "Topic": "com.apple.mgmt.External.bench",
		"Token": bytes.Repeat([]byte{0xab}, 32), "PushMagic": "6C0AF4B2-8E5B-4F0E-9C43-1F1A4C3E9D11",
	})
}

func mustPlist(b testing.TB, v any) []byte {
	out, err := plist.Marshal(v)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

func benchBackends(b *testing.B, f func(b *testing.B, db string)) {
	b.Run("sqlite", func(b *testing.B) { f(b, "") })
	b.Run("postgres", func(b *testing.B) { f(b, storagetest.PostgresURL(b)) })
}

// BenchmarkCheckin is the check-in path: a TokenUpdate from an enrolled
// device through identity, decoding, the binding check and the store.
func BenchmarkCheckin(b *testing.B) {
	benchBackends(b, func(b *testing.B, db string) {
		s := newBenchServer(b, db)
		devs := make([]*benchDevice, 64)
		bodies := make([][]byte, len(devs))
		for i := range devs {
			devs[i] = s.device(i)
			s.enroll(devs[i])
			bodies[i] = tokenUpdate(b, devs[i].udid)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			s.do(devs[i%len(devs)], "/mdm/checkin", bodies[i%len(devs)])
		}
	})
}

// BenchmarkConnectIdle is an Idle connect with nothing queued: the
// commonest request a fleet sends.
func BenchmarkConnectIdle(b *testing.B) {
	benchBackends(b, func(b *testing.B, db string) {
		s := newBenchServer(b, db)
		d := s.device(0)
		s.enroll(d)
		idle := mustPlist(b, map[string]any{"UDID": d.udid, "Status": "Idle"})
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if out := s.do(d, "/mdm/connect", idle); len(out) != 0 {
				b.Fatal("a command came back from an empty queue")
			}
		}
	})
}

// BenchmarkCommandRoundTrip is one command's life: enqueued through the
// admin API, fetched on Idle, acknowledged.
func BenchmarkCommandRoundTrip(b *testing.B) {
	benchBackends(b, func(b *testing.B, db string) {
		s := newBenchServer(b, db)
		key := benchKey
		d := s.device(0)
		s.enroll(d)
		idle := mustPlist(b, map[string]any{"UDID": d.udid, "Status": "Idle"})
		cmd := []byte(`{"request_type":"SecurityInfo","no_push":true}`)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			req := httptest.NewRequest(http.MethodPost, "/api/v1/devices/"+d.udid+"/commands", bytes.NewReader(cmd))
			req.Header.Set("Authorization", "Bearer "+key)
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			s.handler.ServeHTTP(rec, req)
			if rec.Code != http.StatusCreated {
				b.Fatalf("enqueue: %d %s", rec.Code, rec.Body)
			}
			var c struct{ CommandUUID string }
			if err := plist.Unmarshal(s.do(d, "/mdm/connect", idle), &c); err != nil || c.CommandUUID == "" {
				b.Fatalf("no command delivered: %v", err)
			}
			ack := mustPlist(b, map[string]any{"UDID": d.udid, "Status": "Acknowledged", "CommandUUID": c.CommandUUID})
			if out := s.do(d, "/mdm/connect", ack); len(out) != 0 {
				b.Fatal("queue not empty after acknowledge")
			}
		}
	})
}

const benchKey = "bench-admin-key-0123456789"
