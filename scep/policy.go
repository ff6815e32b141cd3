package scep

import (
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"

	"github.com/smallstep/scep"
)

// Key sizes accepted. Apple's SCEP payload defaults Keysize to 1024, which
// bramley's profiles never use; 8192 bounds the work a request can ask of us.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// checkCSR is the CSR policy, applied after the challenge or renewing
// identity was accepted: the CSR's own signature, its key, and the subject
// common name wantCN (when not empty).
//
// A key refused by size or type is answered badAlg: RFC 8894 defines
// badAlg as an unsupported algorithm, and an RSA-1024 key is one this CA
// does not support; badRequest ("not permitted") stays for a missing or
// wrong challenge, so the two causes an administrator must tell apart
// arrive as different failInfo values.
//
// Only the key and subject of the CSR make it into the certificate, never
// its extensions: a device cannot ask for serverAuth, a CA flag or names.
func checkCSR(csr *x509.CertificateRequest, wantCN string) *rejection {
	if err := csr.CheckSignature(); err != nil {
		var insecure x509.InsecureAlgorithmError
		if errors.Is(err, x509.ErrUnsupportedAlgorithm) || errors.As(err, &insecure) {
			return reject(scep.BadAlg, "csr_algorithm", "the CSR's signature algorithm is not supported", err)
		}
		return reject(scep.BadMessageCheck, "csr_signature", "the CSR's own signature does not verify", err)
	}
	pub, ok := csr.PublicKey.(*rsa.PublicKey)
	if !ok {
		return reject(scep.BadAlg, "key_policy",
			fmt.Sprintf("%v keys are not accepted: an RSA key of at least %d bits is required", csr.PublicKeyAlgorithm, minRSABits), nil)
	}
	if bits := pub.N.BitLen(); bits < minRSABits || bits > maxRSABits {
		return reject(scep.BadAlg, "key_policy",
			fmt.Sprintf("an RSA key of %d bits is not accepted: %d to %d bits are required (the SCEP payload's Keysize)", bits, minRSABits, maxRSABits), nil)
	}
	if wantCN != "" && csr.Subject.CommonName != wantCN {
		return reject(scep.BadRequest, "subject_mismatch",
			"the CSR subject's common name is not the one its challenge or identity was issued for", nil)
	}
	return nil
}

// subjectOf returns name in a form that issues it back whole and in order:
// pkix.Name's own fields keep only some attribute types, while Names holds
// every one that was parsed (an Apple Subject may carry UID or
// emailAddress).
func subjectOf(name pkix.Name) pkix.Name {
	return pkix.Name{ExtraNames: name.Names}
}
