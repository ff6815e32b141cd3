package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/bramley-mdm/bramley/directory"
	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/storage"
)

// setUpOTA mounts over-the-air profile-service enrollment (enroll.OTA):
// GET /ota/profile-service (HTTP Basic with a local or directory account, in either
// --enroll-auth mode) and POST /ota/enroll (the device's two signed
// requests). The enrollment policy (otaPolicy) is applied to the first
// request.
func (s *Server) setUpOTA(mux *http.ServeMux, enrollment *enroll.Service, previous []*x509.Certificate, users enroll.Authenticator) (*enroll.OTA, error) {
	var extra []*x509.Certificate
	if s.cfg.AppleDeviceCA != "" {
		data, err := os.ReadFile(s.cfg.AppleDeviceCA)
		if err != nil {
			return nil, fmt.Errorf("--apple-device-ca: %w", err)
		}
		if extra, err = pki.ParseCertificatesPEM(data); err != nil {
			return nil, fmt.Errorf("--apple-device-ca %s: %w", s.cfg.AppleDeviceCA, err)
		}
	}
	policy, err := s.otaPolicy()
	if err != nil {
		return nil, err
	}
	ota := enrollment.NewOTA(s.store, users, pki.NewAppleDeviceVerifier(extra, s.now),
		enroll.WithOTAPreviousCAs(previous), enroll.WithOTAPolicy(policy))
	mux.Handle("GET /ota/profile-service", ota.ProfileServiceHandler())
	mux.Handle("POST /ota/enroll", ota.EnrollHandler())
	return ota, nil
}

// otaPolicy is the OTA enrollment policy, checked in this order: the
// serial or product is not in --ota-deny, the OS build is at least
// --ota-min-os for the platform, and, with --ota-group, the person who
// signed in is a directory user in that group (local accounts are in no
// group, so they are refused).
func (s *Server) otaPolicy() (enroll.OTAPolicy, error) {
	policies := []enroll.OTAPolicy{enroll.DenyList(s.cfg.OTADeny)}
	if len(s.cfg.OTAMinOS) > 0 {
		mins, err := enroll.ParseMinOS(s.cfg.OTAMinOS)
		if err != nil {
			return nil, fmt.Errorf("--ota-min-os %w", err)
		}
		p, err := enroll.MinOSBuild(mins)
		if err != nil {
			return nil, fmt.Errorf("--ota-min-os: %w", err)
		}
		policies = append(policies, p)
	}
	if s.cfg.OTAGroup != "" {
		d := directory.NewLDAP(s.cfg.LDAP, directory.WithLogger(s.logger))
		policies = append(policies, d.OTAGroupPolicy(s.cfg.OTAGroup, s.isLocalAccount))
	}
	return enroll.AllOf(policies...), nil
}

func (s *Server) isLocalAccount(ctx context.Context, username string) (bool, error) {
	_, err := s.store.UserByName(ctx, username)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// validateOTA checks the OTA policy flags.
func (c *Config) validateOTA() []error {
	var errs []error
	if _, err := enroll.ParseMinOS(c.OTAMinOS); err != nil {
		errs = append(errs, fmt.Errorf("--ota-min-os %w", err))
	}
	if c.OTAGroup != "" {
		if c.LDAP.URL == "" {
			errs = append(errs, errors.New("--ota-group names a directory group and needs --ldap-url"))
		}
		if err := directory.ValidateGroupDN(c.OTAGroup); err != nil {
			errs = append(errs, fmt.Errorf("--ota-group %w", err))
		}
	}
	return errs
}
