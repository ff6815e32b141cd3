package scep

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// BenchmarkIssue measures SCEP issuances end to end through the handler: a
// PKCSReq (AES-128, SHA-256, RSA-2048 device key) with a one-time
// challenge is parsed, verified, decrypted with bramley's RSA-2048 CA key,
// checked, issued and answered with an encrypted, signed CertRep. Building
// the requests, which is the device's work, is outside the timing.
func BenchmarkIssue(b *testing.B) {
	benchmarkIssue(b, false)
}

// BenchmarkIssueParallel is BenchmarkIssue on every CPU.
func BenchmarkIssueParallel(b *testing.B) {
	benchmarkIssue(b, true)
}

func benchmarkIssue(b *testing.B, parallel bool) {
	ca, issued := testCA(b)
	challenges := &memChallenges{}
	s := New(ca, challenges)
	h := s.Handler()
	dev := newDevice(b, rsaKey(b, 2048, 0))
	reqs := make([][]byte, b.N)
	for i := range reqs {
		secret := fmt.Sprintf("challenge-%d", i)
		challenges.add(secret, Challenge{ExpiresAt: time.Now().Add(time.Hour)})
		reqs[i] = buildRequest(b, reqSpec{content: makeCSR(b, dev.key, "device", secret).Raw, recipient: ca.Certificate(), signer: dev}).der
	}
	send := func(body []byte) {
		if w := post(b, h, body); w.Code != http.StatusOK {
			b.Errorf("status %d", w.Code)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	if parallel {
		next := make(chan []byte, len(reqs))
		for _, r := range reqs {
			next <- r
		}
		close(next)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				send(<-next)
			}
		})
	} else {
		for _, body := range reqs {
			send(body)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "issuances/s")
	if issued.count() != b.N {
		b.Fatalf("%d issued for %d requests", issued.count(), b.N)
	}
}
