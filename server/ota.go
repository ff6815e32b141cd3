package server

import (
	"crypto/x509"
	"fmt"
	"net/http"
	"os"

	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/pki"
)

// setUpOTA mounts over-the-air profile-service enrollment (enroll.OTA):
// GET /ota/profile-service (HTTP Basic with a local or directory account, in either
// --enroll-auth mode) and POST /ota/enroll (the device's two signed
// requests). Devices whose serial number or product is in --ota-deny are
// refused after their first request.
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
	ota := enrollment.NewOTA(s.store, users, pki.NewAppleDeviceVerifier(extra, s.now),
		enroll.WithOTAPreviousCAs(previous), enroll.WithOTAPolicy(enroll.DenyList(s.cfg.OTADeny)))
	mux.Handle("GET /ota/profile-service", ota.ProfileServiceHandler())
	mux.Handle("POST /ota/enroll", ota.EnrollHandler())
	return ota, nil
}
