package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bramley-mdm/bramley/enroll"
)

// setUpRenewals builds the identity renewal service over enrollment and
// the command queue, and its gauge of failed renewals.
func (s *Server) setUpRenewals(enrollment *enroll.Service, commands enroll.Enqueuer) error {
	s.renewals = enroll.NewRenewalService(enrollment, s.store, commands,
		enroll.RenewalConfig{Window: s.cfg.IdentityRenewalWindow})
	return s.metrics.registry.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bramley_identity_renewals_failed",
		Help: "Devices whose identity renewal failed: still on the old identity, and the InstallProfile failed or it expires within 7 days.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, err := s.renewals.FailedCount(ctx)
		if err != nil {
			return -1
		}
		return float64(n)
	}))
}

// RenewIdentities runs one identity renewal sweep now, as the background
// one does every hour, and returns how many renewal profiles it queued.
func (s *Server) RenewIdentities(ctx context.Context) (int, error) { return s.renewals.Sweep(ctx) }
