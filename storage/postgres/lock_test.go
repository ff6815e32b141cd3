package postgres

import (
	"crypto/rand"
	"sync"
	"sync/atomic"
	"testing"
)

// TestLock: two replicas running at once, each on its own pool, take the
// same advisory lock; only one runs, and the lock is free again after.
func TestLock(t *testing.T) {
	replicas := []*Store{openTest(t), openTest(t)}
	name := "locktest." + rand.Text()
	var ran atomic.Int32
	var tried, done sync.WaitGroup
	tried.Add(len(replicas))
	done.Add(len(replicas))
	for _, s := range replicas {
		go func() {
			defer done.Done()
			unlock, ok, err := s.Lock(t.Context(), name)
			tried.Done()
			if err != nil {
				t.Error(err)
				return
			}
			if !ok {
				return
			}
			ran.Add(1)
			tried.Wait() // hold the lock until the other replica has tried
			unlock()
		}()
	}
	done.Wait()
	if n := ran.Load(); n != 1 {
		t.Fatalf("%d replicas ran, want 1", n)
	}
	for i, s := range replicas {
		unlock, ok, err := s.Lock(t.Context(), name)
		if err != nil || !ok {
			t.Fatalf("replica %d, lock after release: ok %v, err %v", i, ok, err)
		}
		unlock()
	}
}
