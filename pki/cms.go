package pki

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"fmt"

	"github.com/smallstep/pkcs7"
)

// SignDetached returns what a device sends in the Mdm-Signature header when
// its profile says SignMessage: base64 of a DER CMS SignedData over body,
// detached (the body travels as the HTTP body), carrying cert. bramley's
// simulator and tests sign with it; devices use SHA-1 without signed
// attributes, this uses SHA-256 with them, and the verifier takes both.
func SignDetached(body []byte, cert *x509.Certificate, key crypto.Signer) (string, error) {
	sd, err := pkcs7.NewSignedData(body)
	if err != nil {
		return "", fmt.Errorf("signing: %w", err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSigner(cert, key, pkcs7.SignerInfoConfig{}); err != nil {
		return "", fmt.Errorf("signing: %w", err)
	}
	sd.Detach()
	der, err := sd.Finish()
	if err != nil {
		return "", fmt.Errorf("signing: %w", err)
	}
	return base64.StdEncoding.EncodeToString(der), nil
}
