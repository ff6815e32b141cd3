package scep

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/smallstep/pkcs7"
	"github.com/smallstep/scep"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/storage"
)

// SCEP's signed attributes (RFC 8894 §3.2.1); smallstep/scep keeps its own
// unexported. failInfoText is RFC 8894's addition.
var (
	oidMessageType    = asn1.ObjectIdentifier{2, 16, 840, 1, 113733, 1, 9, 2}
	oidPKIStatus      = asn1.ObjectIdentifier{2, 16, 840, 1, 113733, 1, 9, 3}
	oidFailInfo       = asn1.ObjectIdentifier{2, 16, 840, 1, 113733, 1, 9, 4}
	oidSenderNonce    = asn1.ObjectIdentifier{2, 16, 840, 1, 113733, 1, 9, 5}
	oidRecipientNonce = asn1.ObjectIdentifier{2, 16, 840, 1, 113733, 1, 9, 6}
	oidTransactionID  = asn1.ObjectIdentifier{2, 16, 840, 1, 113733, 1, 9, 7}
	oidFailInfoText   = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 24, 1}
)

// Limits on what a request makes us echo or pass on. RFC 8894 suggests a
// hash for the transactionID and 16 bytes of nonce (Apple's fixture has 8).
const (
	maxTransactionID = 256
	maxNonce         = 64
	maxChallenge     = 1024
)

// request is a PKIOperation as far as it has been read: once transactionID
// and senderNonce are known, a refusal can be answered with a CertRep.
type request struct {
	// transactionIDRaw is echoed byte for byte, in whatever string type the
	// client chose; transactionID is its text, for the log.
	transactionIDRaw asn1.RawValue
	transactionID    string
	messageType      scep.MessageType
	senderNonce      []byte
	// digest is the request's digest algorithm, which the reply mirrors.
	digest   asn1.ObjectIdentifier
	p7       *pkcs7.PKCS7
	signer   *x509.Certificate
	envelope envelopeInfo
}

// op names the request for the observer and the log, from a fixed set.
func (r *request) op() string {
	switch r.messageType {
	case scep.PKCSReq:
		return "PKCSReq"
	case scep.RenewalReq:
		return "RenewalReq"
	}
	return opPKIOperation
}

// rejection is a refusal answered with a CertRep FAILURE.
type rejection struct {
	failInfo scep.FailInfo
	outcome  string // from a fixed set: metric label and log
	text     string // failInfoText, safe to show the client
	err      error  // the cause, for the log only
}

func reject(info scep.FailInfo, outcome, text string, err error) *rejection {
	return &rejection{failInfo: info, outcome: outcome, text: text, err: err}
}

// failInfoNames are for the log. scep.FailInfo's String panics on values it
// does not know, so it is never called.
var failInfoNames = map[scep.FailInfo]string{
	scep.BadAlg: "badAlg", scep.BadMessageCheck: "badMessageCheck", scep.BadRequest: "badRequest",
	scep.BadTime: "badTime", scep.BadCertID: "badCertId",
}

// readRequest parses der far enough to answer it. Anything short of that is
// a 400: a CertRep without the client's transactionID and nonce would be
// refused by the client anyway.
func readRequest(der []byte) (*request, error) {
	p7, err := pki.ParseCMS(der)
	if err != nil {
		return nil, handler.Wrap(http.StatusBadRequest, "PKIOperation message is not a CMS SignedData", err)
	}
	req := &request{p7: p7}
	if err := p7.UnmarshalSignedAttribute(oidTransactionID, &req.transactionIDRaw); err != nil {
		return nil, handler.Wrap(http.StatusBadRequest, "not a SCEP message: no transactionID", err)
	}
	if !isString(req.transactionIDRaw) || len(req.transactionIDRaw.Bytes) == 0 || len(req.transactionIDRaw.Bytes) > maxTransactionID {
		return nil, handler.Errorf(http.StatusBadRequest, "SCEP transactionID must be a string of 1 to %d bytes", maxTransactionID)
	}
	req.transactionID = string(req.transactionIDRaw.Bytes)
	var msgType string
	if err := p7.UnmarshalSignedAttribute(oidMessageType, &msgType); err != nil || msgType == "" || len(msgType) > 8 {
		return nil, handler.Wrap(http.StatusBadRequest, "not a SCEP message: no messageType", err)
	}
	req.messageType = scep.MessageType(msgType)
	if err := p7.UnmarshalSignedAttribute(oidSenderNonce, &req.senderNonce); err != nil {
		return nil, handler.Wrap(http.StatusBadRequest, "not a SCEP request: no senderNonce", err)
	}
	if len(req.senderNonce) == 0 || len(req.senderNonce) > maxNonce {
		return nil, handler.Errorf(http.StatusBadRequest, "SCEP senderNonce must be 1 to %d bytes", maxNonce)
	}
	req.digest = pkcs7.OIDDigestAlgorithmSHA256
	if len(p7.Signers) == 1 {
		// The reply is signed with the request's digest: a client that
		// signs with SHA-1 may verify nothing else. Both are supported.
		d := p7.Signers[0].DigestAlgorithm.Algorithm
		for _, known := range []asn1.ObjectIdentifier{pkcs7.OIDDigestAlgorithmSHA1, pkcs7.OIDDigestAlgorithmSHA256,
			pkcs7.OIDDigestAlgorithmSHA384, pkcs7.OIDDigestAlgorithmSHA512} {
			if d.Equal(known) {
				req.digest = known
			}
		}
	}
	return req, nil
}

func isString(v asn1.RawValue) bool {
	if v.Class != asn1.ClassUniversal || v.IsCompound {
		return false
	}
	switch v.Tag {
	case asn1.TagPrintableString, asn1.TagUTF8String, asn1.TagIA5String, asn1.TagT61String, asn1.TagNumericString:
		return true
	}
	return false
}

// pkiOperation answers one pkiMessage with a CertRep, or an error for the
// handler: a 400 when it cannot be answered, a 500 when bramley failed.
func (s *Service) pkiOperation(ctx context.Context, der []byte, obs *observation) ([]byte, error) {
	req, err := readRequest(der)
	if err != nil {
		return nil, err
	}
	obs.op = req.op()
	attrs := logAttrs{"transaction_id", req.transactionID, "message_type", string(req.messageType)}
	cert, rej, err := s.process(ctx, der, req, &attrs)
	if err != nil {
		return nil, fmt.Errorf("SCEP transaction %q: %w", req.transactionID, err)
	}
	if rej != nil {
		obs.outcome = rej.outcome
		attrs.add("outcome", rej.outcome, "fail_info", failInfoNames[rej.failInfo], "reason", rej.text)
		if rej.err != nil {
			attrs.add("err", rej.err.Error())
		}
		s.logRequest(ctx, slog.LevelInfo, "SCEP request refused", attrs)
		return s.failure(req, rej)
	}
	obs.outcome = "issued"
	if req.messageType == scep.RenewalReq {
		obs.outcome = "renewed"
	}
	reply, err := s.success(req, cert)
	if err != nil {
		return nil, fmt.Errorf("SCEP transaction %q: answering with certificate %x: %w", req.transactionID, cert.SerialNumber, err)
	}
	attrs.add("outcome", obs.outcome, "serial", hex.EncodeToString(cert.SerialNumber.Bytes()),
		"not_after", cert.NotAfter.UTC().Format(time.RFC3339))
	s.logRequest(ctx, slog.LevelInfo, "SCEP identity issued", attrs)
	return reply, nil
}

// process runs the checks, in order, and issues. It returns the
// certificate, or the rejection, or an internal error.
func (s *Service) process(ctx context.Context, der []byte, req *request, attrs *logAttrs) (*x509.Certificate, *rejection, error) {
	if req.messageType != scep.PKCSReq && req.messageType != scep.RenewalReq {
		// CertPoll, GetCert and GetCRL need a pending or issued-certificate
		// store; bramley never answers PENDING, so a client has nothing to
		// poll. UpdateReq (18) predates RFC 8894.
		return nil, reject(scep.BadRequest, "unsupported_message_type",
			"only PKCSReq (19) and RenewalReq (17) are offered", nil), nil
	}
	req.signer = req.p7.GetOnlySigner()
	if req.signer == nil {
		return nil, reject(scep.BadMessageCheck, "bad_signature",
			"the message must have exactly one signer, with its certificate", nil), nil
	}
	if _, ok := req.signer.PublicKey.(*rsa.PublicKey); !ok {
		// Checked before anything is issued: the reply is encrypted to
		// this key, and only to RSA.
		return nil, reject(scep.BadAlg, "signer_key",
			"the signing certificate's key must be RSA: the reply is encrypted to it", nil), nil
	}
	// pkcs7 refuses a message whose signingTime — which the client chooses
	// — lies outside its signer certificate's dates. For a PKCSReq the
	// signer is a transient self-signed certificate whose dates mean
	// nothing (the fixture device's expired in 2017), and a renewing
	// identity is judged against our own clock below; so the signature is
	// checked against a copy of the certificate without dates.
	msg, err := scep.ParsePKIMessage(der, scep.WithCACerts([]*x509.Certificate{undated(req.signer)}))
	if err != nil {
		return nil, verifyRejection(err), nil
	}
	decrypter, err := s.decrypter()
	if err != nil {
		return nil, nil, err
	}
	// The envelope is CMS of its own, parsed by smallstep/pkcs7 when it is
	// decrypted: check its structure first, as pki.ParseCMS did the
	// message's (key-independent, so it leaks nothing about the CA key).
	if err := pki.CheckBER(req.p7.Content); err != nil {
		return nil, reject(scep.BadMessageCheck, "malformed", "the envelope is not well-formed CMS", err), nil
	}
	req.envelope = inspectEnvelope(req.p7.Content, s.ca.Certificate())
	if rej := envelopeRejection(req.envelope); rej != nil {
		return nil, rej, nil
	}
	keyLen := 0
	if req.envelope.cipher != nil {
		keyLen = req.envelope.cipher.keyLen
		attrs.add("cipher", req.envelope.cipher.name)
	}
	if err := msg.DecryptPKIEnvelope(s.ca.Certificate(), implicitRejection{Decrypter: decrypter, keyLen: keyLen}); err != nil {
		// One answer for every failure from here to a parsed CSR, whatever
		// went wrong (see implicitRejection).
		return nil, reject(scep.BadMessageCheck, "undecryptable",
			"the envelope could not be decrypted with this CA's key", err), nil
	}
	csr := msg.CSR
	attrs.add("subject", csr.Subject.String())
	if req.messageType == scep.RenewalReq {
		return s.renew(ctx, req, csr, attrs)
	}
	return s.enroll(ctx, csr, msg.ChallengePassword, attrs)
}

// undated returns a copy of cert valid at any time.
func undated(cert *x509.Certificate) *x509.Certificate {
	c := *cert
	c.NotBefore = time.Time{}
	c.NotAfter = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
	return &c
}

func verifyRejection(err error) *rejection {
	var insecure x509.InsecureAlgorithmError
	if errors.Is(err, pkcs7.ErrUnsupportedAlgorithm) || errors.Is(err, x509.ErrUnsupportedAlgorithm) || errors.As(err, &insecure) {
		return reject(scep.BadAlg, "unsupported_algorithm",
			"the message's digest or signature algorithm is not supported: use SHA-256 with RSA", err)
	}
	return reject(scep.BadMessageCheck, "bad_signature", "the message signature does not verify", err)
}

// envelopeRejection refuses, from what the envelope says in the clear, what
// cannot be decrypted. Nothing here depends on the CA key, so these answers
// may differ from the undecryptable one.
func envelopeRejection(info envelopeInfo) *rejection {
	switch {
	case !info.parsed:
		return nil // not DER; pkcs7 may still manage
	case info.cipher == nil:
		return reject(scep.BadAlg, "unsupported_algorithm",
			fmt.Sprintf("content encryption %s is not supported: use AES-128-CBC", info.cipherOID), nil)
	case !info.toCA:
		// badCertId: no certificate of ours matches the recipient the
		// client named — typically a CA certificate cached from before.
		return reject(scep.BadCertID, "wrong_recipient",
			"the request is not encrypted to this CA's certificate: fetch it again with GetCACert", nil)
	case !info.rsaTransport:
		return reject(scep.BadAlg, "unsupported_algorithm", "the content key must be RSA-encrypted", nil)
	}
	return nil
}

// enroll handles a PKCSReq: challenge, then CSR policy, then the CA. A
// challenge that names a device issues as a renewal for it (with
// WithRenewals; without, as any other identity).
func (s *Service) enroll(ctx context.Context, csr *x509.CertificateRequest, password string, attrs *logAttrs) (*x509.Certificate, *rejection, error) {
	ch, rej, err := s.consumeChallenge(ctx, password)
	if rej != nil || err != nil {
		return nil, rej, err
	}
	attrs.add("enrollment_id", ch.EnrollmentID, "source", ch.Source)
	if rej := checkCSR(csr, ch.Subject); rej != nil {
		return nil, rej, nil
	}
	if ch.EnrollmentID != "" && s.renewals != nil {
		// A challenge bramley handed one device (an identity renewal, sent
		// to it in an InstallProfile): the identity is recorded for that
		// device, which is what lets identity.Binder accept it from that
		// device, and only that one, at its next check-in.
		cert, err := s.ca.IssueRenewal(ctx, s.renewals, ch.EnrollmentID, csr.PublicKey, subjectOf(csr.Subject), s.lifetime)
		if err != nil {
			return nil, nil, fmt.Errorf("issuing identity for %s: %w", ch.EnrollmentID, err)
		}
		return cert, nil, nil
	}
	cert, err := s.ca.IssueClient(ctx, csr.PublicKey, subjectOf(csr.Subject), s.lifetime)
	if err != nil {
		return nil, nil, fmt.Errorf("issuing identity: %w", err)
	}
	return cert, nil, nil
}

// consumeChallenge checks the CSR's challengePassword. A challenge is used
// up by any request that presents it, whatever happens after: a one-time
// secret that survived a refusal could be used to probe the policy.
func (s *Service) consumeChallenge(ctx context.Context, password string) (Challenge, *rejection, error) {
	if s.noChallenge {
		return Challenge{Source: "no challenge (unsafe)"}, nil, nil
	}
	invalid := reject(scep.BadRequest, "challenge_invalid", "the challenge password is unknown, used or expired", nil)
	switch {
	case password == "":
		return Challenge{}, reject(scep.BadRequest, "challenge_missing", "a challenge password is required", nil), nil
	case len(password) > maxChallenge:
		return Challenge{}, invalid, nil
	}
	if s.staticChallenge != nil {
		sum := sha256.Sum256([]byte(password))
		if subtle.ConstantTimeCompare(sum[:], s.staticChallenge) == 1 {
			return Challenge{Source: "static challenge"}, nil, nil
		}
	}
	if s.challenges == nil {
		return Challenge{}, invalid, nil
	}
	now := s.now()
	ch, err := s.challenges.ConsumeChallenge(ctx, password, now)
	if errors.Is(err, storage.ErrNotFound) {
		return Challenge{}, invalid, nil
	}
	if err != nil {
		return Challenge{}, nil, fmt.Errorf("consuming challenge: %w", err)
	}
	if !ch.ExpiresAt.IsZero() && !now.Before(ch.ExpiresAt) {
		invalid.err = errors.New("the store returned an expired challenge")
		return Challenge{}, invalid, nil
	}
	return ch, nil, nil
}

// renew handles a RenewalReq: the signer must be a valid identity from this
// CA, bound to a device; the new certificate keeps its subject and is
// recorded with that device.
func (s *Service) renew(ctx context.Context, req *request, csr *x509.CertificateRequest, attrs *logAttrs) (*x509.Certificate, *rejection, error) {
	if s.renewals == nil {
		return nil, reject(scep.BadRequest, "renewals_disabled", "renewal is not offered: enroll again", nil), nil
	}
	old := req.signer
	roots := x509.NewCertPool()
	roots.AddCert(s.ca.Root())
	for _, c := range s.previous {
		roots.AddCert(c)
	}
	intermediates := x509.NewCertPool()
	intermediates.AddCert(s.ca.Certificate())
	_, err := old.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		CurrentTime:   s.now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		var invalid x509.CertificateInvalidError
		if errors.As(err, &invalid) && invalid.Reason == x509.Expired {
			return nil, reject(scep.BadTime, "signer_expired",
				"the identity signing the renewal is expired or not yet valid: enroll again", err), nil
		}
		return nil, reject(scep.BadCertID, "signer_unknown",
			"the renewal is not signed by an identity this CA issued", err), nil
	}
	sum := sha256.Sum256(old.Raw)
	deviceID, err := s.renewals.CertDevice(ctx, sum[:])
	if errors.Is(err, storage.ErrNotFound) {
		return nil, reject(scep.BadCertID, "signer_unbound",
			"the identity signing the renewal is not bound to an enrolled device", nil), nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("looking up the renewing certificate's device: %w", err)
	}
	attrs.add("device_id", deviceID)
	if rej := checkCSR(csr, old.Subject.CommonName); rej != nil {
		return nil, rej, nil
	}
	cert, err := s.ca.IssueRenewal(ctx, s.renewals, deviceID, csr.PublicKey, subjectOf(old.Subject), s.lifetime)
	if err != nil {
		return nil, nil, fmt.Errorf("issuing renewal: %w", err)
	}
	return cert, nil, nil
}

// failure answers a rejection: a CertRep FAILURE with no content.
func (s *Service) failure(req *request, rej *rejection) ([]byte, error) {
	return s.certRep(req, scep.FAILURE, nil, nil,
		pkcs7.Attribute{Type: oidFailInfo, Value: rej.failInfo},
		pkcs7.Attribute{Type: oidFailInfoText, Value: asn1.RawValue{Tag: asn1.TagUTF8String, Bytes: []byte(rej.text)}})
}

// success answers with the issued certificate: a degenerate SignedData
// holding it, encrypted to the key of the certificate that signed the
// request (the device's transient one for a PKCSReq), as RFC 8894 §3.3.2
// says.
func (s *Service) success(req *request, cert *x509.Certificate) ([]byte, error) {
	degenerate, err := scep.DegenerateCertificates([]*x509.Certificate{cert})
	if err != nil {
		return nil, err
	}
	env, err := encryptEnvelope(degenerate, req.signer, replyCipher(req.envelope))
	if err != nil {
		return nil, err
	}
	return s.certRep(req, scep.SUCCESS, env, cert)
}

// certRep builds a CertRep signed by the CA. smallstep/scep's own
// Success and Fail are not used: they copy the request's senderNonce as the
// reply's (RFC 8894 §3.2.1.5 wants a fresh one), sign with the library's
// process-wide default digest, and encrypt to every certificate in the
// request with its process-wide default cipher (single DES).
func (s *Service) certRep(req *request, status scep.PKIStatus, content []byte, issued *x509.Certificate, extra ...pkcs7.Attribute) ([]byte, error) {
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	attrs := append([]pkcs7.Attribute{
		{Type: oidTransactionID, Value: asn1.RawValue{FullBytes: req.transactionIDRaw.FullBytes}},
		{Type: oidMessageType, Value: scep.CertRep},
		{Type: oidPKIStatus, Value: status},
		{Type: oidSenderNonce, Value: nonce},
		{Type: oidRecipientNonce, Value: req.senderNonce},
	}, extra...)
	sd, err := pkcs7.NewSignedData(content)
	if err != nil {
		return nil, fmt.Errorf("building CertRep: %w", err)
	}
	sd.SetDigestAlgorithm(req.digest)
	if issued != nil {
		// Ahead of the CA certificate, as micromdm and smallstep/scep have
		// long answered Apple devices.
		sd.AddCertificate(issued)
	}
	if err := sd.AddSigner(s.ca.Certificate(), s.ca.Signer(), pkcs7.SignerInfoConfig{ExtraSignedAttributes: attrs}); err != nil {
		return nil, fmt.Errorf("signing CertRep: %w", err)
	}
	der, err := sd.Finish()
	if err != nil {
		return nil, fmt.Errorf("building CertRep: %w", err)
	}
	return der, nil
}
