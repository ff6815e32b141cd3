package push

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkPush measures pushes per second to the fake APNs, which runs in
// the same process (so client and server share the CPUs), over one
// connection and over pools, at the default concurrency of 100 streams:
//
//	go test -bench BenchmarkPush -benchtime=1x ./push
func BenchmarkPush(b *testing.B) {
	ctx := context.Background()
	for _, conns := range []int{1, defaultConnections, 4} {
		for _, n := range []int{10_000, 100_000} {
			b.Run(fmt.Sprintf("connections=%d/targets=%d", conns, n), func(b *testing.B) {
				fake, cert := fakeAPNs(b, testTopic)
				p := newProvider(b, fake, cert, WithConnections(conns))
				ts := targets(n)
				// Connect first: the handshakes are not what is measured.
				p.Push(ctx, ts[:conns])
				fake.Reset()
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					for _, r := range p.Push(ctx, ts) {
						if r.Err != nil {
							b.Fatalf("push failed: %+v", r)
						}
					}
					b.StopTimer()
					if got := fake.Connections(); got != conns {
						b.Errorf("pushed over %d connections, want %d", got, conns)
					}
					fake.Reset()
					b.StartTimer()
				}
				b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "pushes/s")
			})
		}
	}
}
