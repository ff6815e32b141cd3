package sim

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"

	"github.com/micromdm/plist"
	"github.com/smallstep/pkcs7"

	"github.com/bramley-mdm/bramley/profile"
)

// CloudConfig is what Apple's activation service tells a device in Setup
// Assistant of the ADE profile assigned to it: the fields the simulator
// acts on. Supervision and whether the MDM profile can be removed come
// from here, on Apple's side, not from the MDM server.
type CloudConfig struct {
	// URL is the profile's url, where the device fetches its enrollment
	// profile (bramley's /ade/enroll).
	URL string
	// Supervised is is_supervised (always so since iOS 13).
	Supervised bool
	// MDMRemovable is is_mdm_removable.
	MDMRemovable bool
	// AwaitDeviceConfigured is await_device_configured: the device stays
	// in Setup Assistant until the server sends DeviceConfigured.
	AwaitDeviceConfigured bool
	// WebView fetches with GET and the x-apple-aspen-deviceinfo header,
	// as the first load of configuration_web_url does, instead of POST.
	WebView bool
}

// AppleIdentity is the identity Apple built into a device, with the
// chain the device sends along (appletest.DeviceCA issues simulated ones).
type AppleIdentity struct {
	Certificate *x509.Certificate
	Key         crypto.Signer
	Chain       []*x509.Certificate
}

// adeState is what Setup Assistant enrollment left on the device.
type adeState struct {
	enrolled, supervised, removable bool
}

// EnrollADE enrolls a new device the way Setup Assistant does under
// Automated Device Enrollment (Apple's "How the device fetches its
// enrollment profile", apple-protocols.md g.4): it signs its MachineInfo
// (UDID, SERIAL, PRODUCT, VERSION, OS_VERSION, LANGUAGE) with its Apple
// identity, POSTs it to cc.URL as application/pkcs7-signature (or GETs
// with x-apple-aspen-deviceinfo), verifies and installs the answered
// profile as EnrollDirect does, gets its identity over SCEP, and checks in
// with a TokenUpdate that says AwaitingConfiguration when cc asks to
// await DeviceConfigured. The device then reports itself supervised (and
// its MDM profile non-removable) as cc says.
func EnrollADE(ctx context.Context, cc CloudConfig, apple AppleIdentity, serial string, opts ...EnrollOption) (*Device, error) {
	var cfg enrollConfig
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.checkURL == nil {
		cfg.checkURL = func(*url.URL) error { return nil }
	}
	if err := vetURL(cfg.checkURL, cc.URL, "the ADE profile's url"); err != nil {
		return nil, err
	}
	tmpl := New(cc.URL, nil, nil, WithoutIdentity()) // the attributes of a new iPhone
	udid := randomUDID()
	info, err := plist.Marshal(map[string]any{
		"UDID": udid, "SERIAL": serial, "PRODUCT": tmpl.ProductName, "VERSION": tmpl.BuildVersion,
		"OS_VERSION": tmpl.OSVersion, "LANGUAGE": "en", "MDM_CAN_REQUEST_SOFTWARE_UPDATE": true,
	})
	if err != nil {
		return nil, err
	}
	signedInfo, err := signAttached(info, apple)
	if err != nil {
		return nil, fmt.Errorf("signing MachineInfo: %w", err)
	}
	download := newHTTPClient(rootPool(cfg.download, cfg.pinned, cfg.extra))
	defer download.CloseIdleConnections()
	signed, err := fetchADEProfile(ctx, download, cc, signedInfo)
	if err != nil {
		return nil, err
	}
	state := adeState{enrolled: true, supervised: cc.Supervised, removable: cc.MDMRemovable}
	return installProfile(ctx, &cfg, signed, func(d *Device) {
		d.UDID, d.SerialNumber = udid, serial
		d.ade, d.awaiting = state, cc.AwaitDeviceConfigured
	})
}

// AwaitingConfiguration reports whether the device still waits in Setup
// Assistant for DeviceConfigured.
func (d *Device) AwaitingConfiguration() bool { return d.awaiting }

// Supervised reports whether the device is supervised (ADE said so).
func (d *Device) Supervised() bool { return d.ade.supervised }

// signAttached signs content as a device does its MachineInfo: CMS
// SignedData with the content inside and the identity's chain.
func signAttached(content []byte, id AppleIdentity) ([]byte, error) {
	sd, err := pkcs7.NewSignedData(content)
	if err != nil {
		return nil, err
	}
	if err := sd.AddSignerChain(id.Certificate, id.Key, id.Chain, pkcs7.SignerInfoConfig{}); err != nil {
		return nil, err
	}
	return sd.Finish()
}

// fetchADEProfile asks cc.URL for the enrollment profile with the signed
// MachineInfo.
func fetchADEProfile(ctx context.Context, client *http.Client, cc CloudConfig, signedInfo []byte) ([]byte, error) {
	method, body := http.MethodPost, io.Reader(bytes.NewReader(signedInfo))
	if cc.WebView {
		method, body = http.MethodGet, nil
	}
	req, err := http.NewRequestWithContext(ctx, method, cc.URL, body)
	if err != nil {
		return nil, err
	}
	if cc.WebView {
		req.Header.Set("x-apple-aspen-deviceinfo", base64.StdEncoding.EncodeToString(signedInfo))
	} else {
		req.Header.Set("Content-Type", "application/pkcs7-signature")
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching the ADE enrollment profile: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxProfile+1))
	if err != nil {
		return nil, fmt.Errorf("fetching the ADE enrollment profile: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching the ADE enrollment profile: %w",
			&StatusError{Status: resp.StatusCode, Body: readableBody(resp.Header.Get("Content-Type"), data)})
	}
	if len(data) > maxProfile {
		return nil, fmt.Errorf("fetching the ADE enrollment profile: larger than %d bytes", maxProfile)
	}
	// Setup Assistant installs only what comes as a profile.
	if media, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); media != profile.ContentType {
		return nil, fmt.Errorf("fetching the ADE enrollment profile: served as %q, not %s", resp.Header.Get("Content-Type"), profile.ContentType)
	}
	return data, nil
}
