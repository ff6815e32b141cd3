package sqlite

import (
	"context"
	"fmt"
)

// ChallengeSource returns the Source of the used SCEP challenge issued for
// the identity subject (its common name, unique per challenge), ignoring
// identity renewals, which reuse the name; storage.ErrNotFound when there
// is none. It tells server who enrolled a device.
func (s *Store) ChallengeSource(ctx context.Context, subject string) (string, error) {
	var source string
	err := s.r.QueryRowContext(ctx, `SELECT source FROM scep_challenges
		WHERE subject = ?1 AND enrollment_id = '' AND used_at IS NOT NULL
		ORDER BY used_at DESC LIMIT 1`, subject).Scan(&source)
	if err != nil {
		return "", fmt.Errorf("reading the challenge of %q: %w", subject, notFound(err))
	}
	return source, nil
}
