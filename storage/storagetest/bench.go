package storagetest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/mdm"
)

// Benchmark measures the paths devices drive: fetching the next command
// (the connect endpoint's every request), storing results, and enrolling.
// open must return a new, empty store and close it when the benchmark
// ends; the sub-benchmarks share it, on top of benchDevices enrolled
// devices, so that the setup is paid once.
func Benchmark(b *testing.B, open func(b *testing.B) Store) {
	s := open(b)
	for i := range benchDevices {
		enrollDevice(b, s, t0, benchDevice(i))
	}
	var seq atomic.Int64 // keeps UUIDs and device IDs unique across runs
	b.Run("NextCommandEmpty", func(b *testing.B) { benchNextCommandEmpty(b, s) })
	b.Run("NextCommandEmptyParallel", func(b *testing.B) { benchNextCommandEmptyParallel(b, s) })
	b.Run("NextCommandQueued", func(b *testing.B) { benchNextCommandQueued(b, s, &seq) })
	b.Run("StoreResult", func(b *testing.B) { benchStoreResult(b, s, &seq) })
	b.Run("NextCommandAndResult", func(b *testing.B) { benchNextCommandAndResult(b, s, &seq) })
	b.Run("AuthenticateAndTokenUpdate", func(b *testing.B) { benchEnroll(b, s, &seq) })
}

// benchDevices is how many devices share the store, so that indexes are
// not trivially small.
const benchDevices = 100

func benchDevice(i int) string { return fmt.Sprintf("DEV-%04d", i%benchDevices) }

// benchNextCommandEmpty is an idle device asking for work: the common case.
func benchNextCommandEmpty(b *testing.B, s Store) {
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		cmd, err := s.NextCommand(ctx, benchDevice(i), false, t0)
		if err != nil || cmd != nil {
			b.Fatal(cmd, err)
		}
	}
}

func benchNextCommandEmptyParallel(b *testing.B, s Store) {
	ctx := context.Background()
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := benchDevice(int(n.Add(1)))
			if cmd, err := s.NextCommand(ctx, id, false, t0); err != nil || cmd != nil {
				b.Error(cmd, err)
				return
			}
		}
	})
}

// benchNextCommandQueued is a device asked again for a command it was sent
// and has not answered, behind which 100 more wait.
func benchNextCommandQueued(b *testing.B, s Store, seq *atomic.Int64) {
	ctx := context.Background()
	id := fmt.Sprintf("QUEUED-%d", seq.Add(1))
	enrollDevice(b, s, t0, id)
	for i := range 101 {
		enqueue(b, s, command(fmt.Sprintf("%s-%03d", id, i), 0, t0), id)
	}
	first := next(b, s, id, false, t0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cmd, err := s.NextCommand(ctx, id, false, t0)
		if err != nil || cmd == nil || cmd.CommandUUID != first {
			b.Fatal(cmd, err)
		}
	}
}

// queueN queues n commands, spread over the devices, and returns their
// enrollment and UUID in queue order.
func queueN(b *testing.B, s Store, seq *atomic.Int64, n int) (ids, uuids []string) {
	run := seq.Add(1)
	for i := range n {
		id, uuid := benchDevice(i), fmt.Sprintf("C-%d-%08d", run, i)
		enqueue(b, s, command(uuid, 0, t0), id)
		ids, uuids = append(ids, id), append(uuids, uuid)
	}
	return ids, uuids
}

// benchStoreResult is a device acknowledging a command.
func benchStoreResult(b *testing.B, s Store, seq *atomic.Int64) {
	ctx := context.Background()
	ids, uuids := queueN(b, s, seq, b.N)
	results := make([]*mdm.CommandResults, b.N)
	for i := range results {
		results[i] = resultMsg(ids[i], uuids[i], mdm.StatusAcknowledged)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.StoreResult(ctx, ids[i], results[i], t0); err != nil {
			b.Fatal(err)
		}
	}
}

// benchNextCommandAndResult is one command's round trip: first delivery
// (a write) and its answer.
func benchNextCommandAndResult(b *testing.B, s Store, seq *atomic.Int64) {
	ctx := context.Background()
	ids, uuids := queueN(b, s, seq, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cmd, err := s.NextCommand(ctx, ids[i], false, t0)
		if err != nil || cmd == nil || cmd.CommandUUID != uuids[i] {
			b.Fatal(cmd, err)
		}
		if _, err := s.StoreResult(ctx, ids[i], resultMsg(ids[i], uuids[i], mdm.StatusAcknowledged), t0); err != nil {
			b.Fatal(err)
		}
	}
}

// benchEnroll is a new device enrolling: Authenticate, then TokenUpdate.
func benchEnroll(b *testing.B, s Store, seq *atomic.Int64) {
	ctx := context.Background()
	run := seq.Add(1)
	now := t0.Add(time.Hour)
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("NEW-%d-%08d", run, i)
		if err := s.StoreAuthenticate(ctx, authMsg(id), hash(id), now); err != nil {
			b.Fatal(err)
		}
		if err := s.StoreTokenUpdate(ctx, tokenMsg(id), nil, now); err != nil {
			b.Fatal(err)
		}
	}
}
