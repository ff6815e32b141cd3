// Package scep serves bramley's SCEP endpoint (RFC 8894), mounted at /scep,
// from which Apple devices get their MDM identity through a
// com.apple.security.scep payload: GetCACaps, GetCACert and PKIOperation
// (PKCSReq with a one-time challenge; RenewalReq signed by the identity it
// renews).
//
// A request passes a chain of checks before the CA signs anything: the CMS
// signature, the envelope (decrypted with the CA key), the challenge or the
// renewing identity, then the CSR policy (its own signature, an RSA key of
// at least 2048 bits, the subject the challenge was issued for). A refusal
// of a request that parsed far enough to be answered is a signed CertRep
// FAILURE with the RFC's failInfo, and a failInfoText naming the rule;
// anything less gets a 400 with the reason.
package scep

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/smallstep/scep"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/pki"
)

// Defaults.
const (
	DefaultLifetime = 365 * 24 * time.Hour
	DefaultMaxBody  = 1 << 20
)

// Operations, as the ?operation= parameter names them.
const (
	opGetCACaps    = "GetCACaps"
	opGetCACert    = "GetCACert"
	opPKIOperation = "PKIOperation"
)

// Service is the SCEP endpoint.
type Service struct {
	ca         *pki.CA
	challenges ChallengeStore
	renewals   RenewalStore
	// staticChallenge is the SHA-256 of the operator's shared challenge.
	staticChallenge []byte
	noChallenge     bool
	logger          *slog.Logger
	now             func() time.Time
	lifetime        time.Duration
	maxBody         int64
	observe         func(op, outcome string)
	caps            string
	// previous are CA certificates rotated out: identities they issued may
	// still renew, onto the current CA.
	previous []*x509.Certificate
}

// Option configures a Service.
type Option func(*Service)

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(s *Service) { s.logger = l } }

// WithPreviousCAs accepts renewals signed by identities that CAs rotated out
// (bramley ca rotate, ca import) issued; the new identity comes from the
// current CA.
func WithPreviousCAs(certs []*x509.Certificate) Option {
	return func(s *Service) { s.previous = certs }
}

// WithClock sets the clock challenges and renewing identities are judged
// against. Certificates take their dates from the CA's own clock.
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// WithLifetime sets how long issued identities are valid (default 365 days,
// never past the CA's own expiry). Apple devices do not renew their MDM
// identity over SCEP: they get a new one when the enrollment profile is
// replaced, which must happen within this lifetime.
func WithLifetime(d time.Duration) Option { return func(s *Service) { s.lifetime = d } }

// WithStaticChallenge also accepts one shared challenge, for operators who
// put a fixed Challenge in their SCEP payloads. It is reusable and bound to
// no subject: anyone who reads one such profile can get identities, so
// one-time challenges are preferred and this is only for operators who ask
// for it. An empty challenge is ignored.
func WithStaticChallenge(challenge string) Option {
	return func(s *Service) {
		if challenge == "" {
			s.staticChallenge = nil
			return
		}
		// Hashed, so the constant-time comparison also hides the length.
		sum := sha256.Sum256([]byte(challenge))
		s.staticChallenge = sum[:]
	}
}

// WithoutChallenge issues to any PKCSReq, with no challenge at all.
//
// UNSAFE: anyone who can reach /scep gets a device identity from bramley's
// CA. It exists for tests and fixtures captured from profiles without a
// Challenge; never enable it on a server.
func WithoutChallenge() Option { return func(s *Service) { s.noChallenge = true } }

// WithRenewals accepts RenewalReq messages, signed by a still-valid identity
// from this CA that is bound to a device, and records the new certificate
// with that device so it is accepted at check-in. Without it, "Renewal" is
// not in GetCACaps and RenewalReq is refused.
func WithRenewals(store RenewalStore) Option { return func(s *Service) { s.renewals = store } }

// WithMaxBody caps a PKIOperation message (default 1 MiB; Apple's are a few
// kilobytes). Larger bodies are answered 413.
func WithMaxBody(n int64) Option { return func(s *Service) { s.maxBody = n } }

// WithObserver is called once per request, for metrics. op is GetCACaps,
// GetCACert, PKCSReq, RenewalReq, PKIOperation (a message of another type,
// or that did not get as far as its type) or unknown. outcome is ok
// (GetCACaps, GetCACert), issued or renewed; for a CertRep FAILURE the rule
// that refused it: unsupported_message_type, bad_signature, signer_key,
// unsupported_algorithm, wrong_recipient, undecryptable, challenge_missing,
// challenge_invalid, csr_signature, csr_algorithm, key_policy,
// subject_mismatch, renewals_disabled, signer_unknown, signer_expired,
// signer_unbound; for an HTTP error bad_request, too_large,
// method_not_allowed or error. Both come from fixed sets, never from the
// request, so they are safe as metric labels.
func WithObserver(f func(op, outcome string)) Option { return func(s *Service) { s.observe = f } }

// New returns the SCEP endpoint of ca. challenges may be nil when only
// WithStaticChallenge (or, in tests, WithoutChallenge) is used. The CA key
// must be RSA: Apple devices encrypt their requests to it.
func New(ca *pki.CA, challenges ChallengeStore, opts ...Option) *Service {
	s := &Service{
		ca:         ca,
		challenges: challenges,
		logger:     slog.New(slog.DiscardHandler),
		now:        time.Now,
		lifetime:   DefaultLifetime,
		maxBody:    DefaultMaxBody,
		observe:    func(string, string) {},
	}
	for _, o := range opts {
		o(s)
	}
	if s.noChallenge {
		s.logger.Warn("SCEP challenges are disabled: anyone who reaches /scep gets a device identity")
	}
	if _, err := s.decrypter(); err != nil {
		s.logger.Error("SCEP cannot work with this CA", "err", err)
	}
	// RFC 8894 §3.5.2 asks clients to prefer AES (AES-128-CBC) and SHA-256
	// when the CA lists them, and SCEPStandard promises AES, SHA-256 and
	// POSTPKIOperation. DES3 and SHA-1 are not listed: they are what old
	// clients fall back to when a CA offers nothing better, and Apple devices
	// choose their cipher and digest from this list, so listing them would
	// only invite a capable device to pick them. Requests in DES3, single DES
	// and SHA-1 are still accepted: the fixture device and micromdm's
	// scepclient send them whatever is listed.
	caps := []string{"POSTPKIOperation", "SHA-256", "AES"}
	if s.renewals != nil {
		caps = append(caps, "Renewal")
	}
	s.caps = strings.Join(append(caps, "SCEPStandard"), "\n")
	return s
}

// Handler returns the endpoint, for GET and POST at /scep.
func (s *Service) Handler() http.Handler {
	return handler.Adapt(s.logger, handler.PlainText, s.serve)
}

// observation is the op and outcome reported to the observer.
type observation struct{ op, outcome string }

func (s *Service) serve(w http.ResponseWriter, r *http.Request) (err error) {
	obs := &observation{op: "unknown"}
	defer func() {
		if err != nil {
			obs.outcome = statusOutcome(err)
		}
		s.observe(obs.op, obs.outcome)
	}()
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		return handler.Errorf(http.StatusMethodNotAllowed, "SCEP takes GET and POST")
	}
	op := r.URL.Query().Get("operation")
	switch op {
	case opGetCACaps, opGetCACert:
		obs.op = op
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", "GET")
			return handler.Errorf(http.StatusMethodNotAllowed, "%s takes GET", op)
		}
		obs.outcome = "ok"
		if op == opGetCACaps {
			w.Header().Set("Content-Type", "text/plain")
			_, err := io.WriteString(w, s.caps)
			return ignoreWriteError(err)
		}
		chain := s.ca.Chain()
		if len(chain) == 1 {
			// One certificate: RFC 8894 §4.2.1.1 answers a CA without an
			// RA or intermediates with its DER certificate alone.
			w.Header().Set("Content-Type", "application/x-x509-ca-cert")
			_, err := w.Write(chain[0].Raw)
			return ignoreWriteError(err)
		}
		// The intermediate, which issues and which requests are encrypted
		// to, then the root: more than one certificate is a certs-only
		// SignedData (RFC 8894 §4.2.1.2).
		body, err := scep.DegenerateCertificates(chain)
		if err != nil {
			return fmt.Errorf("encoding GetCACert answer: %w", err)
		}
		w.Header().Set("Content-Type", "application/x-x509-ca-ra-cert")
		_, err = w.Write(body)
		return ignoreWriteError(err)
	case opPKIOperation:
		obs.op = opPKIOperation
		msg, err := s.readMessage(w, r)
		if err != nil {
			return err
		}
		reply, err := s.pkiOperation(r.Context(), msg, obs)
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/x-pki-message")
		_, err = w.Write(reply)
		return ignoreWriteError(err)
	case "":
		return handler.Errorf(http.StatusBadRequest, "missing operation parameter")
	default:
		if len(op) > 64 {
			op = op[:64] + "…"
		}
		return handler.Errorf(http.StatusBadRequest, "unknown SCEP operation %q (GetCACaps, GetCACert and PKIOperation are offered)", op)
	}
}

// readMessage returns the DER pkiMessage: the POST body, or for GET the
// base64 message parameter.
func (s *Service) readMessage(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.Method == http.MethodPost {
		// Clients send application/x-pki-message or, like micromdm's,
		// application/octet-stream; the type is not checked.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, err // 413, by handler.Status
		}
		if err != nil {
			return nil, handler.Wrap(http.StatusBadRequest, "reading PKIOperation body", err)
		}
		return body, nil
	}
	msg := r.URL.Query().Get("message")
	if msg == "" {
		return nil, handler.Errorf(http.StatusBadRequest, "PKIOperation by GET needs a message parameter")
	}
	if int64(base64.StdEncoding.DecodedLen(len(msg))) > s.maxBody {
		return nil, handler.Errorf(http.StatusRequestEntityTooLarge, "message larger than %d bytes", s.maxBody)
	}
	// The query is already URL-decoded once. Base64 has no '%', so one left
	// means a client escaped twice; and it has no spaces or line breaks, so
	// those are a '+' some client did not escape (and the query decoder read
	// as a space) or the line wrapping of a base64 encoder.
	if strings.Contains(msg, "%") {
		if unescaped, err := url.QueryUnescape(msg); err == nil {
			msg = unescaped
		}
	}
	msg = strings.NewReplacer(" ", "+", "\r", "", "\n", "").Replace(msg)
	der, err := base64.StdEncoding.DecodeString(msg)
	if err != nil {
		return nil, handler.Wrap(http.StatusBadRequest, "PKIOperation message is not base64", err)
	}
	return der, nil
}

// statusOutcome is the observer's outcome for a request answered with an
// HTTP error rather than a CertRep.
func statusOutcome(err error) string {
	switch status, _ := handler.Status(err); status {
	case http.StatusBadRequest:
		return "bad_request"
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusMethodNotAllowed:
		return "method_not_allowed"
	default:
		return "error"
	}
}

// ignoreWriteError drops an error writing the response: the client went
// away, and there is nobody left to tell.
func ignoreWriteError(error) error { return nil }

// decrypter returns the CA key as a crypto.Decrypter.
func (s *Service) decrypter() (crypto.Decrypter, error) {
	d, ok := s.ca.Signer().(crypto.Decrypter)
	if _, isRSA := s.ca.Signer().Public().(*rsa.PublicKey); !ok || !isRSA {
		return nil, errNotDecrypter
	}
	return d, nil
}

// logAttrs is the context of one PKIOperation for its log line.
type logAttrs []any

func (l *logAttrs) add(kv ...any) { *l = append(*l, kv...) }

func (s *Service) logRequest(ctx context.Context, level slog.Level, msg string, attrs logAttrs) {
	s.logger.Log(ctx, level, msg, attrs...)
}
