package enroll

import (
	"fmt"

	"github.com/smallstep/pkcs7"

	"github.com/bramley-mdm/bramley/pki"
)

// parseCMS parses an OTA request body through pki.ParseCMS.
func parseCMS(body []byte) (*pkcs7.PKCS7, error) {
	p7, err := pki.ParseCMS(body)
	if err != nil {
		return nil, fmt.Errorf("signed attributes: %w", err)
	}
	return p7, nil
}

// verifyOnly checks the signature over the content and not the chain,
// which the caller judges against the anchors of the phase it is in
// (pki.AppleDeviceVerifier for the first POST, bramley's CA for the
// second).
func verifyOnly(p7 *pkcs7.PKCS7) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed CMS: %v", r)
		}
	}()
	return p7.Verify()
}
