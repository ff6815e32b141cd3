package server

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/bramley-mdm/bramley/ade"
	"github.com/bramley-mdm/bramley/pki"
)

// setUpADE builds the Automated Device Enrollment service: the key pair
// Apple encrypts server tokens to (made on first use, sealed in
// settings), and one client per token of Apple's device assignment
// service, or of --ade-url. Syncs run when an administrator asks (POST
// /api/v1/ade/tokens/{id}/sync) and every --ade-sync-interval (runADE),
// each followed by the profile assignment rules.
func (s *Server) setUpADE(_ context.Context, sealer *pki.Sealer) error {
	var opts []ade.ClientOption
	if s.cfg.ADEURL != "" {
		opts = append(opts, ade.WithURL(s.cfg.ADEURL))
	}
	if s.cfg.ADECA != "" {
		data, err := os.ReadFile(s.cfg.ADECA)
		if err != nil {
			return fmt.Errorf("--ade-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return fmt.Errorf("--ade-ca %s: no PEM certificate", s.cfg.ADECA)
		}
		opts = append(opts, ade.WithRootCAs(pool))
	}
	opts = append(opts, ade.WithClock(s.now), ade.WithLogger(s.logger))
	keyPair := func(ctx context.Context) (*x509.Certificate, crypto.PrivateKey, error) {
		return pki.LoadOrCreateADEKeyPair(ctx, s.store, sealer, s.now())
	}
	s.ade = ade.NewService(keyPair, s.store, s.store, s.store, sealer,
		ade.WithServiceClock(s.now), ade.WithServiceLogger(s.logger),
		ade.WithClientOptions(opts...), ade.WithSyncerOptions(ade.WithSyncLogger(s.logger)),
		ade.WithProfiles(s.store, s.store, s.cfg.publicURL(s.cfg.Listen)+"/ade/enroll"),
		ade.WithLocker(s.store), ade.WithKeyRotation(adeKeys{s.store, sealer, s.now})) // adetokens.go
	return s.metrics.registry.Register(newADETokenCollector(s.ade.Tokens, s.now))
}

// runADE syncs every token and applies the assignment rules every
// --ade-sync-interval until ctx ends; on PostgreSQL one replica at a time
// (an advisory lock), the others skipping that round.
func (s *Server) runADE(ctx context.Context) {
	if s.cfg.ADESyncInterval <= 0 {
		return
	}
	if err := s.ade.Run(ctx, s.cfg.ADESyncInterval); err != nil && !errors.Is(err, context.Canceled) {
		s.logger.Error("ADE periodic sync stopped", "err", err)
	}
}
