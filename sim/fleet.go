package sim

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sort"
	"sync"
	"time"
)

// MaxFleet bounds how many devices one Fleet runs: the simulator makes
// traffic for test servers, not a flood.
const MaxFleet = 10000

// maxErrorSamples is how many error messages Stats keeps.
const maxErrorSamples = 5

// Fleet keeps enrolled devices connected the way real ones stay: each
// sleeps until APNs wakes it — Push, which a fake APNs's OnPush calls —
// or, where no push can reach it, until its poll interval has passed, and
// then connects and answers whatever the server queued for it (Connect).
// Each device runs in a goroutine of its own, one session at a time.
type Fleet struct {
	members   []*member
	byToken   map[string]*member
	poll      time.Duration
	onHandled func(*Device, Handled)

	mu      sync.Mutex
	running bool
	stats   Stats
}

type member struct {
	dev *Device
	// wake holds at most one pending wake-up: pushes that arrive while the
	// device is asleep or busy coalesce, as APNs coalesces them.
	wake chan struct{}
}

// FleetOption configures a Fleet.
type FleetOption func(*Fleet)

// WithPoll makes every device also connect each d, staggered so that they
// do not all arrive at once: a stand-in for pushes where none can reach the
// devices (a real APNs, or none). 0, the default, means pushes only.
func WithPoll(d time.Duration) FleetOption { return func(f *Fleet) { f.poll = d } }

// WithHandled calls fn for each command a device answered, from that
// device's goroutine, so fn must be safe for concurrent use.
func WithHandled(fn func(d *Device, h Handled)) FleetOption {
	return func(f *Fleet) { f.onHandled = fn }
}

// Stats is what a Fleet did.
type Stats struct {
	Devices  int
	Pushes   int // pushes that woke one of the devices
	Sessions int // connections: Idle, then the commands answered in it
	// Answered counts answers by request type, then status
	// (Acknowledged, Error, NotNow, CommandFormatError).
	Answered map[string]map[string]int
	Errors   int
	// ErrorSamples are the first few error messages.
	ErrorSamples []string
}

// Commands returns how many commands were answered, whatever the status.
func (s Stats) Commands() int {
	n := 0
	for _, byStatus := range s.Answered {
		for _, c := range byStatus {
			n += c
		}
	}
	return n
}

// RequestTypes returns the request types answered, sorted.
func (s Stats) RequestTypes() []string {
	out := make([]string, 0, len(s.Answered))
	for t := range s.Answered {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// NewFleet returns a fleet of the given devices, each already enrolled.
func NewFleet(devices []*Device, opts ...FleetOption) (*Fleet, error) {
	if len(devices) > MaxFleet {
		return nil, fmt.Errorf("a fleet runs at most %d devices, not %d", MaxFleet, len(devices))
	}
	f := &Fleet{byToken: make(map[string]*member, len(devices))}
	for _, o := range opts {
		o(f)
	}
	if f.poll < 0 {
		return nil, errors.New("the poll interval must not be negative")
	}
	for _, d := range devices {
		m := &member{dev: d, wake: make(chan struct{}, 1)}
		key := hex.EncodeToString(d.Token)
		if _, dup := f.byToken[key]; dup {
			return nil, fmt.Errorf("two devices have push token %s", key)
		}
		f.byToken[key] = m
		f.members = append(f.members, m)
	}
	f.stats = Stats{Devices: len(devices), Answered: make(map[string]map[string]int)}
	return f, nil
}

// Devices returns the fleet's devices.
func (f *Fleet) Devices() []*Device {
	out := make([]*Device, len(f.members))
	for i, m := range f.members {
		out[i] = m.dev
	}
	return out
}

// Push wakes the device registered with token, as APNs does — when
// pushMagic is the one it registered; a device ignores any other push.
// Its signature is appletest.APNs.OnPush's. It does not wait for the
// session, and a push to a fleet not running waits for Run.
func (f *Fleet) Push(token []byte, pushMagic string) {
	m, ok := f.byToken[hex.EncodeToString(token)]
	if !ok || m.dev.PushMagic != pushMagic {
		return
	}
	f.mu.Lock()
	f.stats.Pushes++
	f.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default: // already to wake
	}
}

// Run keeps the devices connected until ctx ends: each connects once at
// the start, as a device does once enrolled, then whenever pushed or its
// poll interval passes. It returns nil when ctx ends; errors of single
// sessions are counted in Stats, and the device carries on.
func (f *Fleet) Run(ctx context.Context) error {
	f.mu.Lock()
	if f.running {
		f.mu.Unlock()
		return errors.New("the fleet is already running")
	}
	f.running = true
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running = false
		f.mu.Unlock()
	}()

	rng := mrand.New(mrand.NewPCG(mrand.Uint64(), mrand.Uint64()))
	var wg sync.WaitGroup
	for _, m := range f.members {
		var firstPoll time.Duration
		if f.poll > 0 {
			firstPoll = time.Duration(rng.Int64N(int64(f.poll))) + 1
		}
		wg.Go(func() { f.live(ctx, m, firstPoll) })
	}
	wg.Wait()
	return nil
}

// live is one device's life: sessions on waking, until ctx ends.
func (f *Fleet) live(ctx context.Context, m *member, firstPoll time.Duration) {
	var poll <-chan time.Time
	var timer *time.Timer
	if f.poll > 0 {
		timer = time.NewTimer(firstPoll)
		defer timer.Stop()
		poll = timer.C
	}
	f.session(ctx, m.dev)
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		case <-poll:
		}
		f.session(ctx, m.dev)
		if timer != nil {
			timer.Reset(f.poll) // the next poll counts from this session
		}
	}
}

func (f *Fleet) session(ctx context.Context, d *Device) {
	handled, err := d.Connect(ctx)
	if ctx.Err() != nil && err != nil {
		err = nil // stopped, not failed
	}
	if f.onHandled != nil {
		for _, h := range handled {
			f.onHandled(d, h)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats.Sessions++
	for _, h := range handled {
		byStatus := f.stats.Answered[h.RequestType]
		if byStatus == nil {
			byStatus = make(map[string]int)
			f.stats.Answered[h.RequestType] = byStatus
		}
		byStatus[h.Status]++
	}
	if err != nil {
		f.stats.Errors++
		msg := fmt.Sprintf("%s: %v", d.UDID, err)
		if len(f.stats.ErrorSamples) < maxErrorSamples {
			f.stats.ErrorSamples = append(f.stats.ErrorSamples, msg)
		}
	}
}

// Stats returns a copy of what the fleet has done so far.
func (f *Fleet) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.stats
	s.Answered = make(map[string]map[string]int, len(f.stats.Answered))
	for t, byStatus := range f.stats.Answered {
		c := make(map[string]int, len(byStatus))
		for k, v := range byStatus {
			c[k] = v
		}
		s.Answered[t] = c
	}
	s.ErrorSamples = append([]string(nil), f.stats.ErrorSamples...)
	return s
}
