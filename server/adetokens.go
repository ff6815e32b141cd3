package server

import (
	"context"
	"crypto"
	"crypto/x509"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bramley-mdm/bramley/ade"
	"github.com/bramley-mdm/bramley/pki"
)

// adeKeys rotates the key pair Apple encrypts ADE server tokens to, in
// settings every replica reads (pki.RotateADEKeyPair).
type adeKeys struct {
	store  pki.CAStore
	sealer *pki.Sealer
	now    func() time.Time
}

func (k adeKeys) RotateKeyPair(ctx context.Context) (*x509.Certificate, error) {
	return pki.RotateADEKeyPair(ctx, k.store, k.sealer, k.now())
}

func (k adeKeys) PreviousKeyPair(ctx context.Context) (*x509.Certificate, crypto.PrivateKey, error) {
	cert, key, err := pki.PreviousADEKeyPair(ctx, k.store, k.sealer)
	if cert == nil || err != nil {
		return nil, nil, err // not a typed nil key
	}
	return cert, key, nil
}

func (k adeKeys) ForgetPreviousKeyPair(ctx context.Context, cert *x509.Certificate) error {
	return pki.ForgetPreviousADEKeyPair(ctx, k.store, cert)
}

// adeTokenCollector exports bramley_ade_token_days_left for each stored
// server token, read from storage at each scrape: a rule alerting below
// 30 warns an administrator before Apple stops accepting the token.
type adeTokenCollector struct {
	tokens func(ctx context.Context) ([]ade.Token, error)
	now    func() time.Time
	desc   *prometheus.Desc
}

func newADETokenCollector(tokens func(ctx context.Context) ([]ade.Token, error), now func() time.Time) *adeTokenCollector {
	return &adeTokenCollector{tokens: tokens, now: now, desc: prometheus.NewDesc("bramley_ade_token_days_left",
		"Whole days until the ADE server token expires; negative once it has. Upload a new one before it reaches 0.",
		[]string{"token_id"}, nil)}
}

func (c *adeTokenCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *adeTokenCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	tokens, err := c.tokens(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	now := c.now()
	for _, t := range tokens {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(t.DaysLeft(now)), t.ID)
	}
}
