package push

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ProductionURL is APNs' production host. Push certificates from
// identity.apple.com are production certificates only, so MDM never uses the
// development host.
const ProductionURL = "https://api.push.apple.com"

// Defaults of a Provider, in one place.
const (
	defaultConnections = 2
	defaultConcurrency = 100
	defaultTimeout     = 15 * time.Second
	// defaultTTL is how long APNs keeps a push for a device that is offline.
	// APNs keeps only the latest one per device, so a long TTL costs nothing.
	defaultTTL = 24 * time.Hour
	// maxErrorBody caps what is read of an APNs error answer; a reason is a
	// few dozen bytes.
	maxErrorBody = 4 << 10
)

// Errors in a Result for pushes that were never sent.
var (
	ErrNoToken       = errors.New("no push token: the enrollment has not sent TokenUpdate")
	ErrTopicMismatch = errors.New("the target's topic is not the push certificate's topic")
	ErrNoCertificate = errors.New("no push certificate for the topic")
)

// Target is one channel to wake: the Token and PushMagic of its latest
// TokenUpdate and the Topic it enrolled with.
type Target struct {
	EnrollmentID string
	Token        []byte
	PushMagic    string
	Topic        string
}

// Result is what became of one push.
type Result struct {
	EnrollmentID string
	// Status is APNs' HTTP status; 0 when APNs never answered.
	Status int
	// Reason is APNs' reason for a refusal ("Unregistered", "BadDeviceToken" …).
	Reason string
	// APNsID is the apns-id APNs gave the notification.
	APNsID string
	// Err is nil only when APNs accepted the push (which does not mean the
	// device will connect: see apple-protocols.md f.1).
	Err error
	// Retryable is set for failures worth trying again later: 429, 5xx,
	// and no answer at all.
	Retryable bool
	// Unregistered is set when APNs says the token is no longer valid
	// (410 Unregistered or ExpiredToken, 400 BadDeviceToken): pushing it
	// again is useless until the device sends a new TokenUpdate.
	Unregistered bool
}

// StatusError is an APNs refusal.
type StatusError struct {
	Status int
	Reason string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("APNs answered %d %s", e.Status, e.Reason)
	if e.Status == http.StatusForbidden {
		msg += ": APNs refused the push certificate (revoked, expired or replaced?)"
	}
	return msg
}

// Provider sends MDM pushes with one push certificate over a small pool of
// HTTP/2 connections to APNs. Apple asks providers to keep their
// connections open rather than connect per push; each connection carries
// many concurrent streams. It is safe for concurrent use.
type Provider struct {
	cert       *Certificate
	base       string
	transports []*http.Transport
	next       atomic.Uint64
	sem        chan struct{} // bounds concurrent streams over all connections
	timeout    time.Duration
	ttl        time.Duration
	now        func() time.Time
}

type providerConfig struct {
	url         string
	roots       *x509.CertPool
	connections int
	concurrency int
	timeout     time.Duration
	ttl         time.Duration
	now         func() time.Time
}

// ProviderOption configures a Provider.
type ProviderOption func(*providerConfig)

// WithURL sets the APNs base URL (default ProductionURL); the
// --apns-url flag and tests point it at a fake.
func WithURL(url string) ProviderOption {
	return func(c *providerConfig) { c.url = strings.TrimRight(url, "/") }
}

// WithRootCAs sets the CAs that APNs' server certificate must chain to
// (default: the system's), for --apns-ca.
func WithRootCAs(pool *x509.CertPool) ProviderOption {
	return func(c *providerConfig) { c.roots = pool }
}

// WithConnections sets how many HTTP/2 connections the provider keeps to
// APNs (default 2), and spreads pushes over them in turn. Each is a
// transport of its own, because one http.Transport keeps a single HTTP/2
// connection per host while it has streams to spare. (Should APNs allow
// fewer streams per connection than WithConcurrency, a transport opens
// more connections rather than queue.)
func WithConnections(n int) ProviderOption {
	return func(c *providerConfig) { c.connections = n }
}

// WithConcurrency bounds the pushes in flight at once over all connections
// (default 100), below what APNs allows per connection.
func WithConcurrency(n int) ProviderOption {
	return func(c *providerConfig) { c.concurrency = n }
}

// WithTimeout bounds each push request (default 15s).
func WithTimeout(d time.Duration) ProviderOption {
	return func(c *providerConfig) { c.timeout = d }
}

// WithTTL sets how long APNs should keep a push for an offline device: the
// apns-expiration header (default 24h).
func WithTTL(d time.Duration) ProviderOption {
	return func(c *providerConfig) { c.ttl = d }
}

// WithProviderClock sets the clock the apns-expiration header is computed from.
func WithProviderClock(now func() time.Time) ProviderOption {
	return func(c *providerConfig) { c.now = now }
}

// NewProvider returns a Provider pushing with cert. Connections are made on
// the first push.
func NewProvider(cert *Certificate, opts ...ProviderOption) (*Provider, error) {
	c := providerConfig{
		url:         ProductionURL,
		connections: defaultConnections,
		concurrency: defaultConcurrency,
		timeout:     defaultTimeout,
		ttl:         defaultTTL,
		now:         time.Now,
	}
	for _, o := range opts {
		o(&c)
	}
	switch {
	case cert == nil:
		return nil, errors.New("no push certificate")
	case c.connections < 1:
		return nil, fmt.Errorf("push connections must be at least 1, got %d", c.connections)
	case c.concurrency < 1:
		return nil, fmt.Errorf("push concurrency must be at least 1, got %d", c.concurrency)
	case c.timeout <= 0:
		return nil, fmt.Errorf("push timeout must be positive, got %v", c.timeout)
	case !strings.HasPrefix(c.url, "https://"):
		// Certificate authentication needs TLS; plain HTTP would also
		// leave devices' tokens on the wire.
		return nil, fmt.Errorf("APNs URL must be https, got %q", c.url)
	}
	p := &Provider{
		cert:    cert,
		base:    c.url + "/3/device/",
		sem:     make(chan struct{}, c.concurrency),
		timeout: c.timeout,
		ttl:     c.ttl,
		now:     c.now,
	}
	for range c.connections {
		p.transports = append(p.transports, newTransport(cert, c.roots))
	}
	return p, nil
}

func newTransport(cert *Certificate, roots *x509.CertPool) *http.Transport {
	var protocols http.Protocols
	protocols.SetHTTP2(true) // APNs speaks nothing else
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		TLSClientConfig: &tls.Config{
			RootCAs:    roots,
			MinVersion: tls.VersionTLS12,
			// Always present the push certificate: tls.Config.Certificates
			// would withhold it if the server's list of acceptable CAs did
			// not name its issuer, and APNs would then close the connection.
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return &cert.TLS, nil
			},
		},
		Protocols:           &protocols,
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 10 * time.Second,
		// One dial at a time: a burst of pushes on a cold transport would
		// otherwise race several connections open and throw all but one away.
		MaxConnsPerHost: 1,
		HTTP2: &http.HTTP2Config{
			// A connection that went quiet behind a NAT or load balancer is
			// found dead by a ping instead of by a push timing out.
			SendPingTimeout: 60 * time.Second,
			PingTimeout:     15 * time.Second,
		},
	}
}

// Certificate returns the provider's push certificate.
func (p *Provider) Certificate() *Certificate { return p.cert }

// Close closes the provider's idle connections; pushes in flight finish.
func (p *Provider) Close() {
	for _, t := range p.transports {
		t.CloseIdleConnections()
	}
}

// Push sends one push per target, at most the provider's concurrency at
// once over all calls, and returns one Result per target in the same order.
// When ctx ends, the targets not yet sent get ctx's error, marked Retryable.
func (p *Provider) Push(ctx context.Context, targets []Target) []Result {
	results := make([]Result, len(targets))
	// A few long-lived workers rather than a goroutine per push: each push
	// goes deep into the HTTP/2 stack, and a fresh goroutine pays for
	// growing its stack every time.
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(cap(p.sem), len(targets)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(targets) {
					return
				}
				select {
				case p.sem <- struct{}{}:
				case <-ctx.Done():
					results[i] = Result{EnrollmentID: targets[i].EnrollmentID, Err: ctx.Err(), Retryable: true}
					continue
				}
				results[i] = p.push(ctx, &targets[i])
				<-p.sem
			}
		})
	}
	wg.Wait()
	return results
}

func (p *Provider) push(ctx context.Context, t *Target) Result {
	r := Result{EnrollmentID: t.EnrollmentID}
	if len(t.Token) == 0 {
		r.Err = ErrNoToken
		return r
	}
	if t.Topic != "" && t.Topic != p.cert.Topic {
		r.Err = fmt.Errorf("%w: %s, certificate %s", ErrTopicMismatch, t.Topic, p.cert.Topic)
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.base+hex.EncodeToString(t.Token),
		bytes.NewReader(payload(t.PushMagic)))
	if err != nil {
		r.Err = fmt.Errorf("building push request: %w", err)
		return r
	}
	// Canonical keys written directly: this runs for every device of a
	// bulk command.
	req.Header = http.Header{
		"Content-Type":    {"application/json"},
		"Apns-Push-Type":  {"mdm"},
		"Apns-Topic":      {p.cert.Topic},
		"Apns-Priority":   {"10"}, // at once, not when it suits the device's battery
		"Apns-Expiration": {strconv.FormatInt(p.now().Add(p.ttl).Unix(), 10)},
	}

	// Round robin, not least-loaded: pushes are alike, and it spreads a
	// batch evenly without bookkeeping.
	tr := p.transports[(p.next.Add(1)-1)%uint64(len(p.transports))]
	resp, err := tr.RoundTrip(req)
	if err != nil {
		r.Err = fmt.Errorf("sending push: %w", err)
		r.Retryable = true
		return r
	}
	defer resp.Body.Close()
	r.Status = resp.StatusCode
	r.APNsID = resp.Header.Get("apns-id")
	if r.Status == http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return r
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var apnsErr struct {
		Reason string `json:"reason"`
	}
	if json.Unmarshal(body, &apnsErr) == nil {
		r.Reason = apnsErr.Reason
	}
	r.Err = &StatusError{Status: r.Status, Reason: r.Reason}
	r.Unregistered, r.Retryable = classify(r.Status, r.Reason)
	return r
}

// classify sorts APNs' refusals ("Handling notification responses from
// APNs"). A 403 is neither: the certificate is at fault, not the device,
// and trying again will not help until an administrator acts.
func classify(status int, reason string) (unregistered, retryable bool) {
	switch {
	case status == http.StatusGone:
		return true, false // Unregistered, ExpiredToken
	case status == http.StatusBadRequest && reason == "BadDeviceToken":
		return true, false
	case status == http.StatusTooManyRequests, status >= 500:
		return false, true
	}
	return false, false
}

// payload returns exactly {"mdm":"<PushMagic>"}: MDM pushes carry no aps
// dictionary. HTML escaping is off so the magic goes as the device gave it.
func payload(pushMagic string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(struct {
		MDM string `json:"mdm"`
	}{pushMagic})
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// Providers holds one Provider per push topic: one per push certificate,
// so several customers' certificates can be loaded at once, and a renewed
// certificate replaces its predecessor without a restart. It is safe for
// concurrent use and implements ProviderSource.
type Providers struct {
	mu sync.RWMutex
	m  map[string]*Provider
}

// NewProviders returns an empty set of providers.
func NewProviders() *Providers { return &Providers{m: make(map[string]*Provider)} }

// Set adds p under its certificate's topic, replacing and closing the
// provider that had it; pushes in flight on the old one finish.
func (ps *Providers) Set(p *Provider) {
	ps.mu.Lock()
	old := ps.m[p.cert.Topic]
	ps.m[p.cert.Topic] = p
	ps.mu.Unlock()
	if old != nil && old != p {
		old.Close()
	}
}

// Remove closes and forgets the provider for topic, if any.
func (ps *Providers) Remove(topic string) {
	ps.mu.Lock()
	old := ps.m[topic]
	delete(ps.m, topic)
	ps.mu.Unlock()
	if old != nil {
		old.Close()
	}
}

// Provider returns the provider for topic.
func (ps *Providers) Provider(topic string) (*Provider, bool) {
	ps.mu.RLock()
	defer ps.mu.RUnlock()
	p, ok := ps.m[topic]
	return p, ok
}

// Sender returns the provider for topic as a Sender.
func (ps *Providers) Sender(topic string) (Sender, bool) {
	p, ok := ps.Provider(topic)
	if !ok {
		return nil, false
	}
	return p, true
}

// Certificates returns the loaded push certificates, by topic.
func (ps *Providers) Certificates() []*Certificate {
	ps.mu.RLock()
	certs := make([]*Certificate, 0, len(ps.m))
	for _, p := range ps.m {
		certs = append(certs, p.cert)
	}
	ps.mu.RUnlock()
	slices.SortFunc(certs, func(a, b *Certificate) int { return strings.Compare(a.Topic, b.Topic) })
	return certs
}

// Close closes every provider.
func (ps *Providers) Close() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for topic, p := range ps.m {
		p.Close()
		delete(ps.m, topic)
	}
}
