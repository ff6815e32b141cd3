package appletest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"time"
)

// DeviceCA is a simulated Apple device CA: the chain Apple builds into
// every iPhone and iPad, whose identity signs the MachineInfo of Setup
// Assistant and the attributes of OTA enrollment. As Apple's, its
// intermediate ("Apple iPhone Device CA") has expired while it still
// issues device certificates, so a verifier that checks its dates fails
// here as it would against Apple. bramley trusts it through
// --apple-device-ca with RootCertificatePEM.
type DeviceCA struct {
	root  *testCA
	inter *testCA
}

// NewDeviceCA returns a simulated Apple device CA.
func NewDeviceCA() (*DeviceCA, error) {
	root, err := newTestCA("Apple Root CA (simulated)")
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	inter, err := root.issue(&x509.Certificate{
		Subject:   pkix.Name{CommonName: "Apple iPhone Device CA (simulated)", Organization: []string{"bramley appletest"}},
		NotBefore: now.Add(-10 * 365 * 24 * time.Hour), NotAfter: now.Add(-365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true,
	}, key.Public())
	if err != nil {
		return nil, fmt.Errorf("device CA intermediate: %w", err)
	}
	return &DeviceCA{root: root, inter: &testCA{cert: inter, key: key}}, nil
}

// RootCertificatePEM is the anchor to give bramley (--apple-device-ca).
func (ca *DeviceCA) RootCertificatePEM() []byte { return certPEM(ca.root.cert) }

// Intermediate is the expired "Apple iPhone Device CA" of the chain.
func (ca *DeviceCA) Intermediate() *x509.Certificate { return ca.inter.cert }

// Issue returns a device identity for udid, valid now, and the chain a
// device sends with what it signs (the intermediate).
func (ca *DeviceCA) Issue(udid string) (*x509.Certificate, crypto.Signer, []*x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	now := time.Now()
	cert, err := ca.inter.issue(&x509.Certificate{
		Subject:   pkix.Name{CommonName: udid, Organization: []string{"Apple Inc."}, OrganizationalUnit: []string{"iPhone"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(3 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}, key.Public())
	if err != nil {
		return nil, nil, nil, fmt.Errorf("device certificate: %w", err)
	}
	return cert, key, []*x509.Certificate{ca.inter.cert}, nil
}
