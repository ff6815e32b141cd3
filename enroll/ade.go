package enroll

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/micromdm/plist"

	"github.com/bramley-mdm/bramley/ade"
	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/storage"
)

// ADEDeviceFinder finds the device a Setup Assistant enrollment claims to
// be among those Apple assigned to bramley's tokens.
type ADEDeviceFinder interface {
	// ADEDeviceBySerial returns the record, not deleted, of the serial
	// number under any token (the most recently changed, should two
	// tokens hold it); storage.ErrNotFound when no token holds it.
	ADEDeviceBySerial(ctx context.Context, serial string) (ade.DeviceRecord, error)
}

// MachineInfoVerifier verifies CMS signed by a device's Apple-issued
// identity and returns the content; *pki.AppleDeviceVerifier is one.
// Its errors wrap pki.ErrMalformedCMS or pki.ErrUntrustedSigner.
type MachineInfoVerifier interface {
	Verify(der []byte) ([]byte, *x509.Certificate, error)
}

// MachineInfo is what a device in Setup Assistant says of itself when it
// asks for its enrollment profile (Apple's device-management schema,
// other/machineinfo.yaml).
type MachineInfo struct {
	UDID                        string
	Serial                      string `plist:"SERIAL"`
	Product                     string `plist:"PRODUCT,omitempty"`
	Version                     string `plist:"VERSION,omitempty"`
	OSVersion                   string `plist:"OS_VERSION,omitempty"`
	SupplementalBuildVersion    string `plist:"SUPPLEMENTAL_BUILD_VERSION,omitempty"`
	SupplementalOSVersionExtra  string `plist:"SUPPLEMENTAL_OS_VERSION_EXTRA,omitempty"`
	IMEI                        string `plist:"IMEI,omitempty"`
	MEID                        string `plist:"MEID,omitempty"`
	Language                    string `plist:"LANGUAGE,omitempty"`
	MDMCanRequestSoftwareUpdate bool   `plist:"MDM_CAN_REQUEST_SOFTWARE_UPDATE,omitempty"`
	SoftwareUpdateDeviceID      string `plist:"SOFTWARE_UPDATE_DEVICE_ID,omitempty"`
	PairingToken                []byte `plist:"PAIRING_TOKEN,omitempty"`
}

// DecodeMachineInfo decodes a MachineInfo plist; UDID and SERIAL are
// required.
func DecodeMachineInfo(data []byte) (*MachineInfo, error) {
	var mi MachineInfo
	if err := plist.Unmarshal(data, &mi); err != nil {
		return nil, fmt.Errorf("decoding MachineInfo: %w", err)
	}
	if mi.UDID == "" || mi.Serial == "" {
		return nil, errors.New("MachineInfo lacks UDID or SERIAL")
	}
	if len(mi.UDID) > 64 || len(mi.Serial) > 64 {
		return nil, errors.New("MachineInfo UDID or SERIAL is too long")
	}
	return &mi, nil
}

// DeviceInfoHeader carries base64 of the signed MachineInfo on the first
// GET of the web-view flow (configuration_web_url).
const DeviceInfoHeader = "x-apple-aspen-deviceinfo"

// ADEHandler serves /ade/enroll, the url of bramley's ADE profiles: the
// device in Setup Assistant GETs it with DeviceInfoHeader or POSTs the
// signed MachineInfo (application/pkcs7-signature), and gets the
// enrollment profile when the signature chains to Apple's device CA and
// its serial number is one Apple assigned to one of bramley's tokens.
// The device has no MDM identity yet, so none is asked for. A refusal
// records nothing; maxBody caps the POST.
func (s *Service) ADEHandler(devices ADEDeviceFinder, verifier MachineInfoVerifier, maxBody int64) http.Handler {
	return handler.Adapt(s.logger, handler.PlainText, func(w http.ResponseWriter, r *http.Request) error {
		return s.adeEnroll(w, r, devices, verifier, maxBody)
	})
}

func (s *Service) adeEnroll(w http.ResponseWriter, r *http.Request, devices ADEDeviceFinder, verifier MachineInfoVerifier, maxBody int64) error {
	ctx := r.Context()
	signed, err := readMachineInfo(w, r, maxBody)
	if err != nil {
		return err
	}
	content, signer, err := verifier.Verify(signed)
	switch {
	case errors.Is(err, pki.ErrMalformedCMS):
		return handler.Wrap(http.StatusBadRequest, "malformed device information", err)
	case err != nil:
		return handler.Wrap(http.StatusForbidden, "the device information is not signed by an Apple device", err)
	}
	mi, err := DecodeMachineInfo(content)
	if err != nil {
		return handler.Wrap(http.StatusBadRequest, "malformed device information", err)
	}
	dev, err := devices.ADEDeviceBySerial(ctx, mi.Serial)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return handler.Wrap(http.StatusForbidden, "this device is not assigned to this MDM server",
			fmt.Errorf("serial number %q is not an ADE device of any token", mi.Serial))
	case err != nil:
		return fmt.Errorf("finding ADE device: %w", err)
	}
	topic, err := s.topic(ctx)
	if err != nil {
		return topicError(err)
	}
	signedProfile, err := s.Profile(ctx, topic, "ade "+dev.TokenID+" "+mi.Serial)
	if err != nil {
		return err
	}
	s.logger.InfoContext(ctx, "ADE enrollment profile served", "serial_number", mi.Serial, "udid", mi.UDID,
		"token_id", dev.TokenID, "product", mi.Product, "os_version", mi.OSVersion, "signer", signer.Subject.CommonName)
	w.Header().Set("Content-Type", "application/x-apple-aspen-config")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(signedProfile)
	return nil
}

// readMachineInfo returns the signed MachineInfo of the request: the
// header's on GET, the body on POST.
func readMachineInfo(w http.ResponseWriter, r *http.Request, maxBody int64) ([]byte, error) {
	if r.Method == http.MethodGet {
		h := r.Header.Get(DeviceInfoHeader)
		if h == "" {
			return nil, handler.Errorf(http.StatusBadRequest, "no %s header", DeviceInfoHeader)
		}
		if int64(len(h)) > maxBody {
			return nil, handler.Errorf(http.StatusBadRequest, "%s header too large", DeviceInfoHeader)
		}
		der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(h), ""))
		if err != nil {
			return nil, handler.Wrap(http.StatusBadRequest, "malformed device information", err)
		}
		return der, nil
	}
	if media, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); media != "application/pkcs7-signature" {
		return nil, handler.Errorf(http.StatusUnsupportedMediaType, "want Content-Type application/pkcs7-signature")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return nil, err // a *http.MaxBytesError becomes 413
	}
	return body, nil
}
