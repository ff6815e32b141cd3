package appletest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// APNs limits and defaults, as Apple documents them ("Sending notification
// requests to APNs").
const (
	apnsMaxPayload = 4096
	// apnsMaxStreams is what APNs advertises per connection once a
	// certificate has authenticated it.
	apnsMaxStreams = 1000
	devicePath     = "/3/device/"
)

var (
	oidUID = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}
	// Apple's markers of a push certificate's environment.
	oidAPNsDevelopment = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 6, 3, 1}
	oidAPNsProduction  = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 6, 3, 2}
	uuidRE             = regexp.MustCompile(`^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$`)
)

// Notification is one request the fake APNs got, and how it answered.
type Notification struct {
	Method     string
	Path       string
	ProtoMajor int
	// RemoteAddr tells the provider's connections apart.
	RemoteAddr string
	// CertTopic is the UID of the client certificate.
	CertTopic string
	// Token is the device token from the path; nil when it was not hex.
	Token []byte
	// Header holds the request's apns-* and Content-Type headers.
	Header http.Header
	Body   []byte
	// PushMagic is the body's "mdm" value, when the body was valid.
	PushMagic string
	// Status, Reason and APNsID are the answer.
	Status int
	Reason string
	APNsID string
}

type failure struct {
	status int
	reason string
}

// APNs is a fake of APNs' HTTP/2 provider API for MDM pushes: certificate
// authentication, Apple's checks of the request, and Apple's answers.
type APNs struct {
	srv     *httptest.Server
	ca      *testCA
	roots   *x509.CertPool
	latency time.Duration
	streams uint32

	mu         sync.Mutex
	received   []Notification
	failTokens map[string]failure
	failNext   int
	failWith   failure
	onPush     func(token []byte, pushMagic string)
	conns      map[string]struct{}

	inFlight    atomic.Int64
	maxInFlight atomic.Int64
	callbacks   sync.WaitGroup
}

// APNsOption configures the fake APNs.
type APNsOption func(*APNs)

// WithLatency delays every answer by d, so that pushes overlap as they do
// against the real service.
func WithLatency(d time.Duration) APNsOption { return func(a *APNs) { a.latency = d } }

// WithMaxConcurrentStreams sets the HTTP/2 streams allowed per connection
// (default 1000, as APNs).
func WithMaxConcurrentStreams(n uint32) APNsOption { return func(a *APNs) { a.streams = n } }

// NewAPNs starts a fake APNs that t closes at the end of the test; with a
// nil t the caller must Close it. It fails t (or panics without one) if
// it cannot start.
func NewAPNs(t TB, opts ...APNsOption) *APNs {
	if t != nil {
		t.Helper()
	}
	a, err := StartAPNs(opts...)
	if err != nil {
		if t == nil {
			panic(err)
		}
		t.Fatalf("starting fake APNs: %v", err)
	}
	if t != nil {
		t.Cleanup(a.Close)
	}
	return a
}

// StartAPNs starts a fake APNs on 127.0.0.1 with a server certificate for
// loopback only, issued by a CA of its own (RootCAs).
func StartAPNs(opts ...APNsOption) (*APNs, error) {
	a := &APNs{
		streams:    apnsMaxStreams,
		failTokens: make(map[string]failure),
		conns:      make(map[string]struct{}),
	}
	for _, o := range opts {
		o(a)
	}
	ca, err := newTestCA("bramley appletest APNs CA")
	if err != nil {
		return nil, fmt.Errorf("creating APNs CA: %w", err)
	}
	a.ca = ca
	a.roots = x509.NewCertPool()
	a.roots.AddCert(ca.cert)
	serverCert, err := a.serverCertificate()
	if err != nil {
		return nil, err
	}

	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(a.serveHTTP))
	a.srv.EnableHTTP2 = true
	a.srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		// APNs authenticates MDM providers by certificate only.
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  a.roots,
		MinVersion: tls.VersionTLS12,
	}
	a.srv.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: int(a.streams)}
	a.srv.Config.ReadHeaderTimeout = 10 * time.Second
	// Handshakes refused on purpose (wrong CA, no certificate) would
	// otherwise fill test output.
	a.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	a.srv.StartTLS()
	return a, nil
}

// serverCertificate issues the TLS certificate for 127.0.0.1, ::1 and
// localhost only: the fake's CA is trusted by whoever tests against it, so
// it must vouch for no name that leaves the machine.
func (a *APNs) serverCertificate() (tls.Certificate, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	cert, err := a.ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "api.push.apple.com (appletest)"},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(365 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:    []string{"localhost"},
	}, key.Public())
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issuing APNs server certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

// URL is the fake's base URL, for push.WithURL (--apns-url).
func (a *APNs) URL() string { return a.srv.URL }

// RootCAs returns a pool holding the fake's CA, for push.WithRootCAs.
func (a *APNs) RootCAs() *x509.CertPool { return a.roots }

// CACertificatePEM returns the fake's CA certificate, for an --apns-ca file.
func (a *APNs) CACertificatePEM() []byte { return certPEM(a.ca.cert) }

// Close stops the server and waits for OnPush callbacks to return.
func (a *APNs) Close() {
	a.srv.Close()
	a.callbacks.Wait()
}

// PushCertificate returns a production MDM push certificate for topic,
// issued by the fake's CA and shaped like Apple's: subject UID (as a
// UTF8String) = topic, CN "APSP:<id>", client authentication, the APNs
// production marker, and an RSA 2048 key.
func (a *APNs) PushCertificate(topic string) (certPEM, keyPEM []byte) {
	return a.pushCertificate(topic, oidAPNsProduction)
}

// DevelopmentPushCertificate returns a push certificate for APNs'
// development environment, which the fake (a production host) refuses with
// 403 BadCertificateEnvironment.
func (a *APNs) DevelopmentPushCertificate(topic string) (certPEM, keyPEM []byte) {
	return a.pushCertificate(topic, oidAPNsDevelopment)
}

func (a *APNs) pushCertificate(topic string, env asn1.ObjectIdentifier) ([]byte, []byte) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(fmt.Sprintf("appletest: generating push key: %v", err))
	}
	id := topic[strings.LastIndex(topic, ".")+1:]
	utf8 := func(s string) asn1.RawValue {
		return asn1.RawValue{Tag: asn1.TagUTF8String, Bytes: []byte(s)}
	}
	// Apple encodes the UID as a UTF8String; Go's pkix.Name would write a
	// PrintableString, so the subject is built by hand.
	rawSubject, err := asn1.Marshal([]pkix.RelativeDistinguishedNameSET{
		{{Type: oidUID, Value: utf8(topic)}},
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: utf8("APSP:" + id)}},
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 6}, Value: "US"}},
	})
	if err != nil {
		panic(fmt.Sprintf("appletest: encoding push certificate subject: %v", err))
	}
	now := time.Now()
	cert, err := a.ca.issue(&x509.Certificate{
		RawSubject:      rawSubject,
		NotBefore:       now.Add(-time.Hour),
		NotAfter:        now.Add(365 * 24 * time.Hour),
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		ExtraExtensions: []pkix.Extension{{Id: env, Value: []byte{0x05, 0x00}}}, // ASN.1 NULL, as Apple's
	}, key.Public())
	if err != nil {
		panic(fmt.Sprintf("appletest: issuing push certificate: %v", err))
	}
	k, err := keyPEM(key)
	if err != nil {
		panic(fmt.Sprintf("appletest: encoding push key: %v", err))
	}
	return certPEM(cert), k
}

// FailToken makes every valid push to the token (hex, any case) answer
// status with reason, e.g. 410 "Unregistered" or 400 "BadDeviceToken".
func (a *APNs) FailToken(hexToken string, status int, reason string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failTokens[strings.ToLower(hexToken)] = failure{status, reason}
}

// FailNext makes the next n requests answer status with reason, before any
// other check, as an overloaded APNs does (429 TooManyRequests, 503
// ServiceUnavailable, 500 InternalServerError). An empty reason is
// filled in from the status.
func (a *APNs) FailNext(n, status int, reason string) {
	if reason == "" {
		reason = map[int]string{429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable"}[status]
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failNext, a.failWith = n, failure{status, reason}
}

// OnPush calls f, in a goroutine of its own, for every push the fake
// accepts: a simulated device connects to its MDM server when pushed.
// Calls are not ordered.
func (a *APNs) OnPush(f func(token []byte, pushMagic string)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.onPush = f
}

// Received returns every request the fake got, accepted or not, in the
// order they were answered.
func (a *APNs) Received() []Notification {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Notification(nil), a.received...)
}

// MaxInFlight returns the most requests the fake was answering at once.
func (a *APNs) MaxInFlight() int { return int(a.maxInFlight.Load()) }

// Connections returns how many connections carried requests.
func (a *APNs) Connections() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.conns)
}

// Reset forgets what was received and the counters; failures set with
// FailToken and FailNext stay.
func (a *APNs) Reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.received = nil
	a.conns = make(map[string]struct{})
	a.maxInFlight.Store(a.inFlight.Load())
}

func (a *APNs) serveHTTP(w http.ResponseWriter, r *http.Request) {
	n := a.inFlight.Add(1)
	defer a.inFlight.Add(-1)
	for m := a.maxInFlight.Load(); n > m && !a.maxInFlight.CompareAndSwap(m, n); m = a.maxInFlight.Load() {
	}

	note := Notification{
		Method: r.Method, Path: r.URL.Path, ProtoMajor: r.ProtoMajor, RemoteAddr: r.RemoteAddr,
		Header: make(http.Header),
	}
	for k, v := range r.Header {
		if strings.HasPrefix(strings.ToLower(k), "apns-") || k == "Content-Type" {
			note.Header[k] = v
		}
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		note.CertTopic = certTopic(r.TLS.PeerCertificates[0])
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, apnsMaxPayload))
	note.Body = body
	tooLarge := err != nil

	note.Status, note.Reason = a.check(r, &note, tooLarge)
	if a.latency > 0 {
		select {
		case <-time.After(a.latency):
		case <-r.Context().Done():
		}
	}
	note.APNsID = r.Header.Get("apns-id")
	if note.APNsID == "" || !uuidRE.MatchString(note.APNsID) {
		note.APNsID = newUUID()
	}

	a.mu.Lock()
	a.conns[r.RemoteAddr] = struct{}{}
	a.received = append(a.received, note)
	onPush := a.onPush
	a.mu.Unlock()

	w.Header().Set("apns-id", note.APNsID)
	if note.Status == http.StatusOK {
		w.WriteHeader(http.StatusOK)
		if onPush != nil {
			a.callbacks.Go(func() { onPush(note.Token, note.PushMagic) })
		}
		return
	}
	answer := map[string]any{"reason": note.Reason}
	if note.Status == http.StatusGone {
		// For a 410 APNs adds when the token stopped being valid, in
		// milliseconds since the epoch.
		answer["timestamp"] = time.Now().UnixMilli()
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(note.Status)
	_ = json.NewEncoder(w).Encode(answer)
}

// check applies APNs' rules to a request and returns the answer. Where APNs
// itself would accept a request the device would then drop, the fake is
// stricter, to catch the provider's bug here rather than on a device:
// those answers have reasons of the fake's own (HTTP2Required, BadPayload).
func (a *APNs) check(r *http.Request, note *Notification, tooLarge bool) (int, string) {
	if r.ProtoMajor != 2 {
		return http.StatusHTTPVersionNotSupported, "HTTP2Required"
	}
	a.mu.Lock()
	if a.failNext > 0 {
		a.failNext--
		f := a.failWith
		a.mu.Unlock()
		return f.status, f.reason
	}
	a.mu.Unlock()

	if r.Method != http.MethodPost {
		return http.StatusMethodNotAllowed, "MethodNotAllowed"
	}
	hexToken, ok := strings.CutPrefix(r.URL.Path, devicePath)
	if !ok || strings.Contains(hexToken, "/") {
		return http.StatusNotFound, "BadPath"
	}
	if hexToken == "" {
		return http.StatusBadRequest, "MissingDeviceToken"
	}
	token, err := hex.DecodeString(hexToken)
	if err != nil || len(token) < 32 {
		return http.StatusBadRequest, "BadDeviceToken"
	}
	note.Token = token

	cert := r.TLS.PeerCertificates[0]
	if hasExtension(cert, oidAPNsDevelopment) && !hasExtension(cert, oidAPNsProduction) {
		return http.StatusForbidden, "BadCertificateEnvironment"
	}
	if note.CertTopic == "" {
		return http.StatusForbidden, "BadCertificate"
	}
	for k, v := range r.Header {
		if strings.HasPrefix(strings.ToLower(k), "apns-") && len(v) > 1 {
			return http.StatusBadRequest, "DuplicateHeaders"
		}
	}
	// With a single-topic certificate APNs infers a missing apns-topic;
	// a topic the certificate does not carry is refused.
	if topic := r.Header.Get("apns-topic"); topic != "" && topic != note.CertTopic {
		return http.StatusBadRequest, "TopicDisallowed"
	}
	if !strings.HasPrefix(note.CertTopic, "com.apple.mgmt.") {
		return http.StatusBadRequest, "TopicDisallowed" // an app's certificate cannot send MDM pushes
	}
	if r.Header.Get("apns-push-type") != "mdm" {
		return http.StatusBadRequest, "InvalidPushType"
	}
	if p := r.Header.Get("apns-priority"); p != "" && p != "10" && p != "5" && p != "1" {
		return http.StatusBadRequest, "BadPriority"
	}
	if e := r.Header.Get("apns-expiration"); e != "" {
		if _, err := strconv.ParseInt(e, 10, 64); err != nil {
			return http.StatusBadRequest, "BadExpirationDate"
		}
	}
	if id := r.Header.Get("apns-id"); id != "" && !uuidRE.MatchString(id) {
		return http.StatusBadRequest, "BadMessageId"
	}
	if tooLarge {
		return http.StatusRequestEntityTooLarge, "PayloadTooLarge"
	}
	if len(note.Body) == 0 {
		return http.StatusBadRequest, "PayloadEmpty"
	}
	// An MDM push is exactly {"mdm": "<PushMagic>"}; a device drops any
	// other dictionary ("Rejecting MDM push dictionary").
	var payload map[string]any
	if err := json.Unmarshal(note.Body, &payload); err != nil || len(payload) != 1 {
		return http.StatusBadRequest, "BadPayload"
	}
	magic, ok := payload["mdm"].(string)
	if !ok || magic == "" {
		return http.StatusBadRequest, "BadPayload"
	}
	note.PushMagic = magic

	a.mu.Lock()
	f, failed := a.failTokens[strings.ToLower(hexToken)]
	a.mu.Unlock()
	if failed {
		return f.status, f.reason
	}
	return http.StatusOK, ""
}

func certTopic(c *x509.Certificate) string {
	for _, atv := range c.Subject.Names {
		if atv.Type.Equal(oidUID) {
			s, _ := atv.Value.(string)
			return s
		}
	}
	return ""
}

func hasExtension(c *x509.Certificate, id asn1.ObjectIdentifier) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(id) {
			return true
		}
	}
	return false
}

// newUUID returns a random (version 4) UUID, as APNs makes apns-ids.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
