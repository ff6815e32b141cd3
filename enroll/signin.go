package enroll

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/bramley-mdm/bramley/handler"
)

// Authenticator checks a local user's password (Accounts does).
type Authenticator interface {
	// Authenticate returns the user, or ErrBadCredentials.
	Authenticate(ctx context.Context, username, password string) (*User, error)
}

// basicChallenge is the WWW-Authenticate of a sign-in (RFC 7617).
const basicChallenge = `Basic realm="bramley enrollment", charset="UTF-8"`

// Failed sign-ins are limited per client IP and per username with token
// buckets: a burst, then one more attempt each refill period. Successful
// sign-ins cost nothing. Per username: 10 guesses, then one a minute, so
// about 1,500 a day against a password of 12 characters or more. Per IP,
// looser, since several people may share an address.
const (
	userBurst  = 10
	userRefill = time.Minute
	ipBurst    = 30
	ipRefill   = 10 * time.Second
	// maxBuckets bounds each limiter's memory; see limiter.take.
	maxBuckets = 100_000
)

// SignInHandler serves GET /enroll for --enroll-auth basic: a person signs
// in with a local account (HTTP Basic) and gets the same signed enrollment
// profile a token gives. A request carrying ?token= still takes the token
// path, so links minted before switching modes keep working and an
// administrator can still hand out a one-off link.
func (s *Service) SignInHandler(users Authenticator) http.Handler {
	si := &signIn{
		s: s, users: users,
		byIP:   newLimiter(ipBurst, ipRefill),
		byUser: newLimiter(userBurst, userRefill),
	}
	return handler.Adapt(s.logger, writePage, si.serve)
}

type signIn struct {
	s      *Service
	users  Authenticator
	byIP   *limiter
	byUser *limiter
}

func (si *signIn) serve(w http.ResponseWriter, r *http.Request) error {
	if r.URL.Query().Has("token") {
		return si.s.enroll(w, r)
	}
	ctx := r.Context()
	// A person's browser, not a device: 401 with a challenge makes it ask
	// for a username and password.
	username, password, ok := r.BasicAuth()
	if !ok {
		w.Header().Set("WWW-Authenticate", basicChallenge)
		return handler.Errorf(http.StatusUnauthorized, "Sign in with your account to download the enrollment profile.")
	}
	ip, userKey := clientIP(r), username
	if len(userKey) > 4*maxUsername {
		userKey = userKey[:4*maxUsername] // never a valid username: it only bounds the key's memory
	}
	now := si.s.now()
	// Each attempt takes a token from both buckets up front, so parallel
	// guesses cannot all slip past the check; a success gives them back.
	if wait, ok := si.byIP.take(ip, now); !ok {
		return tooMany(w, wait, fmt.Errorf("sign-in rate limit for client %s", ip))
	}
	if wait, ok := si.byUser.take(userKey, now); !ok {
		si.byIP.refund(ip, now)
		return tooMany(w, wait, fmt.Errorf("sign-in rate limit for user %q", username))
	}
	u, err := si.users.Authenticate(ctx, username, password)
	if errors.Is(err, ErrBadCredentials) {
		si.s.logger.InfoContext(ctx, "enrollment sign-in failed", "username", username, "client_ip", ip)
		w.Header().Set("WWW-Authenticate", basicChallenge)
		return handler.Wrap(http.StatusUnauthorized, "The username or password is not right.", err)
	}
	si.byIP.refund(ip, now)
	si.byUser.refund(userKey, now)
	if err != nil {
		return fmt.Errorf("signing in: %w", err)
	}
	topic, err := si.s.topic(ctx)
	if err != nil {
		return topicError(err)
	}
	signed, err := si.s.Profile(ctx, topic, "user "+u.Username)
	if err != nil {
		return err
	}
	si.s.logger.InfoContext(ctx, "enrollment profile served", "username", u.Username)
	writeProfile(w, signed)
	return nil
}

func tooMany(w http.ResponseWriter, wait time.Duration, cause error) error {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	return handler.Wrap(http.StatusTooManyRequests, "Too many failed sign-ins. Wait a few minutes and try again.", cause)
}

// clientIP is the peer's address. Behind a proxy that is the proxy's, and
// the per-IP limit applies to everyone behind it together.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// limiter is a set of token buckets by key.
type limiter struct {
	burst   float64
	refill  time.Duration
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(burst int, refill time.Duration) *limiter {
	return &limiter{burst: float64(burst), refill: refill, buckets: make(map[string]*bucket)}
}

// level refills b up to now.
func (l *limiter) level(b *bucket, now time.Time) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = math.Min(l.burst, b.tokens+float64(d)/float64(l.refill))
		b.at = now
	}
}

// take spends one attempt of key; when none is left it says how long until
// one is. A full map first forgets the buckets that have refilled (they
// are as good as new); if every one is still in use, new keys are refused:
// under a flood of distinct names, sign-ins wait rather than the limit
// resetting.
func (l *limiter) take(key string, now time.Time) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= maxBuckets {
			for k, old := range l.buckets {
				if l.level(old, now); old.tokens >= l.burst {
					delete(l.buckets, k)
				}
			}
			if len(l.buckets) >= maxBuckets {
				return l.refill, false
			}
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	l.level(b, now)
	if b.tokens < 1 {
		return time.Duration((1 - b.tokens) * float64(l.refill)), false
	}
	b.tokens--
	return 0, true
}

// refund gives back the attempt take spent.
func (l *limiter) refund(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.buckets[key]; ok {
		l.level(b, now)
		b.tokens = math.Min(l.burst, b.tokens+1)
	}
}
