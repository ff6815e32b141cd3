package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bramley-mdm/bramley/identity"
	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/storage"
	"github.com/bramley-mdm/bramley/vpp"
)

// personStore says who enrolled a device, when the route knew a person.
type personStore interface {
	// EnrollmentRoute returns how a device was last enrolled and for whom
	// (the OTA profile service records it); storage.ErrNotFound when no
	// route is recorded.
	EnrollmentRoute(ctx context.Context, deviceID string) (route, username string, err error)
	// ChallengeSource returns the Source of the used, non-renewal SCEP
	// challenge issued for subject (the identity's common name, unique
	// per challenge); storage.ErrNotFound when there is none.
	ChallengeSource(ctx context.Context, subject string) (string, error)
}

// withVPPCheckin runs next, then the Apps and Books check-in work.
func (s *Server) withVPPCheckin(next func(context.Context, mdm.CheckinMessage)) func(context.Context, mdm.CheckinMessage) {
	return func(ctx context.Context, msg mdm.CheckinMessage) {
		next(ctx, msg)
		s.linkOwner(ctx, msg)
		s.vppCheckin(ctx, msg)
	}
}

// linkOwner makes the person who enrolled a device its owner, so their
// assigned apps and books reach it without PUT /devices/{id}/owner. It
// runs at Authenticate, the start of each enrollment: the person is the
// one the OTA profile service recorded for the device (enrollment_routes)
// or else the one whose Basic sign-in or portal session was handed the
// SCEP challenge behind the device's identity (the challenge's Subject is
// the identity's common name, its Source "user <name>"). An owner an
// administrator sets later stands until the device enrolls again; an
// enrollment that knows no person (a token, ADE) leaves the owner as it
// was.
func (s *Server) linkOwner(ctx context.Context, msg mdm.CheckinMessage) {
	if s.vpp == nil || msg.Type() != mdm.MessageAuthenticate {
		return
	}
	id := msg.Identifiers()
	deviceID := id.DeviceID()
	if deviceID == "" || id.UserID != "" || id.EnrollmentUserID != "" {
		return
	}
	username, err := s.enrollingPerson(ctx, deviceID)
	if err != nil {
		s.logger.ErrorContext(ctx, "finding who enrolled the device", "enrollment_id", deviceID, "err", err)
		return
	}
	if username == "" {
		return
	}
	if _, err := s.store.UserByName(ctx, username); err != nil {
		// A directory user has no local account; owners are local users.
		if !errors.Is(err, storage.ErrNotFound) {
			s.logger.ErrorContext(ctx, "reading the enrolling user", "enrollment_id", deviceID, "err", err)
		}
		return
	}
	if err := s.store.SetDeviceOwner(ctx, deviceID, username, s.now()); err != nil {
		s.logger.ErrorContext(ctx, "linking device to its person", "enrollment_id", deviceID, "err", err)
		return
	}
	s.logger.InfoContext(ctx, "device linked to the person who enrolled it", "enrollment_id", deviceID, "username", username)
}

func (s *Server) enrollingPerson(ctx context.Context, deviceID string) (string, error) {
	_, username, err := s.store.EnrollmentRoute(ctx, deviceID)
	switch {
	case err == nil && username != "":
		return username, nil
	case err != nil && !errors.Is(err, storage.ErrNotFound):
		return "", err
	}
	cert, ok := identity.FromContext(ctx)
	if !ok || cert.Cert == nil || cert.Cert.Subject.CommonName == "" {
		return "", nil
	}
	source, err := s.store.ChallengeSource(ctx, cert.Cert.Subject.CommonName)
	if errors.Is(err, storage.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	// Sources naming a person: enroll.SignIn's "user <name>", the OTA
	// profile service's "ota user <name>".
	for _, prefix := range []string{"user ", "ota user "} {
		if name, ok := strings.CutPrefix(source, prefix); ok && name != "" {
			return name, nil
		}
	}
	return "", nil
}

// registerVPPMetrics adds bramley_vpp_token_days_left{location}.
func (s *Server) registerVPPMetrics() {
	s.metrics.registry.MustRegister(vppTokenCollector{s})
}

var vppDaysLeftDesc = prometheus.NewDesc("bramley_vpp_token_days_left",
	"Whole days until the location's Apps and Books content token expires (negative once expired).",
	[]string{"location"}, nil)

// vppTokenCollector reports each content token's days left at scrape time.
type vppTokenCollector struct{ s *Server }

func (c vppTokenCollector) Describe(ch chan<- *prometheus.Desc) { ch <- vppDaysLeftDesc }

func (c vppTokenCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	toks, err := c.s.store.ContentTokens(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(vppDaysLeftDesc, fmt.Errorf("listing content tokens: %w", err))
		return
	}
	now := c.s.now()
	for _, t := range toks {
		ct := vpp.ContentToken{ExpiresAt: t.ExpiresAt}
		ch <- prometheus.MustNewConstMetric(vppDaysLeftDesc, prometheus.GaugeValue, float64(ct.DaysLeft(now)), t.Location)
	}
}

// warnExpiringTokens logs a warning for each content token within Apple's
// warning period (vpp.ExpiryWarningPeriod) or past it; the sweep calls it.
func (s *Server) warnExpiringTokens(ctx context.Context) {
	toks, err := s.store.ContentTokens(ctx)
	if err != nil {
		s.logger.WarnContext(ctx, "listing content tokens", "err", err)
		return
	}
	now := s.now()
	for _, t := range toks {
		ct := vpp.ContentToken{ExpiresAt: t.ExpiresAt}
		if !ct.ExpiresWithin(now, vpp.ExpiryWarningPeriod) {
			continue
		}
		s.logger.WarnContext(ctx, "Apps and Books content token expiring: download a new one from Apple Business or School Manager and import it",
			"location", t.Location, "location_name", t.LocationName, "expires_at", t.ExpiresAt, "days_left", ct.DaysLeft(now))
	}
}
