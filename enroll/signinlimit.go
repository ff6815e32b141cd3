package enroll

import "time"

// SignInLimiter limits failed sign-ins per client IP and per username with
// the same token buckets as GET /enroll (see userBurst), for other sign-in
// forms such as the enrollment portal. Each attempt takes from both buckets
// up front; a success gives the attempts back.
type SignInLimiter struct {
	byIP, byUser *limiter
}

// NewSignInLimiter returns a limiter with GET /enroll's limits.
func NewSignInLimiter() *SignInLimiter {
	return &SignInLimiter{byIP: newLimiter(ipBurst, ipRefill), byUser: newLimiter(userBurst, userRefill)}
}

// Take spends one attempt for ip and username. When either is used up it
// reports false and how long until the next attempt, and spends nothing.
func (l *SignInLimiter) Take(ip, username string, now time.Time) (time.Duration, bool) {
	key := userKey(username)
	if wait, ok := l.byIP.take(ip, now); !ok {
		return wait, false
	}
	if wait, ok := l.byUser.take(key, now); !ok {
		l.byIP.refund(ip, now)
		return wait, false
	}
	return 0, true
}

// Succeeded gives back the attempt Take spent.
func (l *SignInLimiter) Succeeded(ip, username string, now time.Time) {
	l.byIP.refund(ip, now)
	l.byUser.refund(userKey(username), now)
}

// userKey bounds a username's memory as a bucket key; a name that long is
// never valid anyway.
func userKey(username string) string {
	if len(username) > 4*maxUsername {
		return username[:4*maxUsername]
	}
	return username
}
