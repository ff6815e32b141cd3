package ade

import (
	"math"
	"time"
)

// ExpiryWarning is how long before its expiry a server token is called
// expiring: time to download a new one from Apple Business Manager.
const ExpiryWarning = 30 * 24 * time.Hour

// DaysLeft is the whole days until the token expires at now, negative once
// it has.
func (t Token) DaysLeft(now time.Time) int {
	return int(math.Floor(t.AccessTokenExpiry.Sub(now).Hours() / 24))
}

// Expiring reports whether the token expires within ExpiryWarning of now,
// or has expired.
func (t Token) Expiring(now time.Time) bool {
	return t.AccessTokenExpiry.Sub(now) < ExpiryWarning
}

// warnExpiring logs each token that is expiring, at each periodic run, so
// the warning repeats until an administrator uploads a new token.
func (s *Service) warnExpiring(tokens []Token) {
	now := s.now()
	for _, t := range tokens {
		if !t.Expiring(now) {
			continue
		}
		msg := "ADE server token expires soon: download a new one from Apple Business Manager and upload it"
		if !t.AccessTokenExpiry.After(now) {
			msg = "ADE server token has expired: download a new one from Apple Business Manager and upload it"
		}
		s.logger.Warn(msg, "token_id", t.ID, "server_name", t.ServerName,
			"access_token_expiry", t.AccessTokenExpiry, "days_left", t.DaysLeft(now))
	}
}
