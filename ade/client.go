package ade

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Wire constants of the ADE service (g.1, g.2).
const (
	// DefaultURL is Apple's ADE service; --ade-url replaces it.
	DefaultURL = "https://mdmenrollment.apple.com"
	// ProtocolVersion is sent as X-Server-Protocol-Version on every
	// request. Apple answers in the oldest format without it; 7 reports
	// iPads as "iPadOS" and 8 adds mdm_migration_deadline.
	ProtocolVersion = "8"
	// HeaderSession carries the session from /session, and sometimes a
	// newer one in any answer.
	HeaderSession = "X-ADM-Auth-Session"
	// HeaderProtocolVersion names the protocol version.
	HeaderProtocolVersion = "X-Server-Protocol-Version"
	// contentType is Apple's spelling, "UTF8" without the hyphen.
	contentType = "application/json;charset=UTF8"
)

// Defaults of a Client; see the options.
const (
	defaultTimeout      = 60 * time.Second
	defaultRetries      = 3
	defaultMaxRetryWait = time.Minute
	defaultUserAgent    = "bramley"
	firstBackoff        = time.Second
	// maxResponseSize bounds an answer: a page of 1000 devices is about
	// half a megabyte.
	maxResponseSize = 32 << 20
)

// Client calls Apple's ADE service for one server token. It gets a
// session at first use and a new one when Apple says it expired, follows
// the newest X-ADM-Auth-Session of any answer, waits as Retry-After asks
// (within bounds), and turns Apple's error bodies into *Error. It is safe
// for concurrent use.
type Client struct {
	base         *url.URL
	token        ServerToken
	http         *http.Client
	now          func() time.Time
	sleep        func(context.Context, time.Duration) error
	userAgent    string
	retries      int
	maxRetryWait time.Duration
	logger       *slog.Logger

	mu      sync.Mutex
	session string
	// renewing lets one request at a time open a session; the others
	// then use it.
	renewing sync.Mutex
}

type clientConfig struct {
	url          string
	roots        *x509.CertPool
	httpClient   *http.Client
	timeout      time.Duration
	now          func() time.Time
	sleep        func(context.Context, time.Duration) error
	userAgent    string
	retries      int
	maxRetryWait time.Duration
	logger       *slog.Logger
}

// ClientOption configures a Client.
type ClientOption func(*clientConfig)

// WithURL sets the service's base URL (default DefaultURL), for --ade-url
// and tests. It must be https, or http to a loopback address (a local
// simulator).
func WithURL(u string) ClientOption {
	return func(c *clientConfig) { c.url = strings.TrimRight(u, "/") }
}

// WithRootCAs sets the CAs the service's certificate must chain to
// (default: the system's). Ignored with WithHTTPClient.
func WithRootCAs(pool *x509.CertPool) ClientOption {
	return func(c *clientConfig) { c.roots = pool }
}

// WithHTTPClient replaces the HTTP client; it should have a timeout.
func WithHTTPClient(h *http.Client) ClientOption {
	return func(c *clientConfig) { c.httpClient = h }
}

// WithTimeout bounds each HTTP request (default 60s). Ignored with
// WithHTTPClient.
func WithTimeout(d time.Duration) ClientOption {
	return func(c *clientConfig) { c.timeout = d }
}

// WithClock sets the clock of OAuth timestamps and Retry-After dates.
func WithClock(now func() time.Time) ClientOption {
	return func(c *clientConfig) { c.now = now }
}

// WithSleep replaces how the client waits before a retry; tests pass one
// that records the wait and returns at once. It must return ctx.Err() when
// ctx ends first.
func WithSleep(sleep func(ctx context.Context, d time.Duration) error) ClientOption {
	return func(c *clientConfig) { c.sleep = sleep }
}

// WithUserAgent sets the User-Agent (default "bramley"); main adds its
// version.
func WithUserAgent(ua string) ClientOption {
	return func(c *clientConfig) { c.userAgent = ua }
}

// WithRetries sets how many times a request is retried after 429 or a
// 5xx (default 3).
func WithRetries(n int) ClientOption {
	return func(c *clientConfig) { c.retries = n }
}

// WithMaxRetryWait bounds the wait before a retry (default 1 minute). When
// Apple's Retry-After asks for longer, the client does not wait but
// returns the *Error with RetryAfter, for the caller to come back later.
func WithMaxRetryWait(d time.Duration) ClientOption {
	return func(c *clientConfig) { c.maxRetryWait = d }
}

// WithLogger sets the logger of retries and session renewals.
func WithLogger(l *slog.Logger) ClientOption {
	return func(c *clientConfig) { c.logger = l }
}

// NewClient returns a client of the ADE service authenticating with tok.
func NewClient(tok *ServerToken, opts ...ClientOption) (*Client, error) {
	cfg := clientConfig{
		url:          DefaultURL,
		timeout:      defaultTimeout,
		now:          time.Now,
		sleep:        sleepContext,
		userAgent:    defaultUserAgent,
		retries:      defaultRetries,
		maxRetryWait: defaultMaxRetryWait,
		logger:       slog.New(slog.DiscardHandler),
	}
	for _, o := range opts {
		o(&cfg)
	}
	if tok == nil || tok.ConsumerKey == "" || tok.ConsumerSecret == "" || tok.AccessToken == "" || tok.AccessSecret == "" {
		return nil, errors.New("ADE client: incomplete server token")
	}
	base, err := url.Parse(cfg.url)
	if err != nil {
		return nil, fmt.Errorf("ADE URL %q: %w", cfg.url, err)
	}
	if err := checkBaseURL(base); err != nil {
		return nil, err
	}
	switch {
	case cfg.retries < 0:
		return nil, fmt.Errorf("ADE retries must not be negative, got %d", cfg.retries)
	case cfg.timeout <= 0:
		return nil, fmt.Errorf("ADE timeout must be positive, got %v", cfg.timeout)
	}
	h := cfg.httpClient
	if h == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: cfg.roots, MinVersion: tls.VersionTLS12}
		h = &http.Client{Transport: tr, Timeout: cfg.timeout}
	}
	return &Client{
		base:         base,
		token:        *tok,
		http:         h,
		now:          cfg.now,
		sleep:        cfg.sleep,
		userAgent:    cfg.userAgent,
		retries:      cfg.retries,
		maxRetryWait: cfg.maxRetryWait,
		logger:       cfg.logger,
	}, nil
}

// checkBaseURL insists on TLS: the session in every request is a bearer
// credential. A simulator on loopback may speak plain HTTP.
func checkBaseURL(u *url.URL) error {
	switch {
	case u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("ADE URL %q: want scheme://host[:port][/path]", u)
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http":
		if ip := net.ParseIP(u.Hostname()); (ip != nil && ip.IsLoopback()) || u.Hostname() == "localhost" {
			return nil
		}
	}
	return fmt.Errorf("ADE URL %q must be https", u)
}

func sleepContext(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// URL returns the base URL of the service.
func (c *Client) URL() string { return c.base.String() }

func (c *Client) endpointURL(path string, query url.Values) *url.URL {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawPath = ""
	if query != nil {
		u.RawQuery = query.Encode()
	}
	return &u
}

func (c *Client) currentSession() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session
}

// adoptSession keeps a session Apple sent in an answer: Apple may hand
// out a newer one at any time, and the newest is the one to use.
func (c *Client) adoptSession(s string) {
	if s == "" {
		return
	}
	c.mu.Lock()
	c.session = s
	c.mu.Unlock()
}

// dropSession forgets stale unless another request already replaced it.
func (c *Client) dropSession(stale string) {
	c.mu.Lock()
	if c.session == stale {
		c.session = ""
	}
	c.mu.Unlock()
}

// ensureSession returns the current session, opening one when there is
// none.
func (c *Client) ensureSession(ctx context.Context) error {
	if c.currentSession() != "" {
		return nil
	}
	c.renewing.Lock()
	defer c.renewing.Unlock()
	if c.currentSession() != "" {
		return nil // another request opened one meanwhile
	}
	s, err := c.openSession(ctx)
	if err != nil {
		return err
	}
	c.adoptSession(s)
	return nil
}

// openSession calls GET /session, signed with OAuth 1.0a (g.1).
func (c *Client) openSession(ctx context.Context) (string, error) {
	const endpoint = "GET /session"
	u := c.endpointURL("/session", nil)
	resp, body, err := c.roundTrip(ctx, endpoint, func() (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, err
		}
		c.setHeaders(req)
		// A fresh timestamp and nonce for each attempt: Apple refuses a
		// nonce it has seen.
		req.Header.Set("Authorization", sessionAuthorization(&c.token, u, c.now(), newNonce()))
		return req, nil
	})
	if err != nil {
		return "", err
	}
	if resp.StatusCode/100 != 2 {
		return "", newError(endpoint, resp, body, c.now())
	}
	var out struct {
		Token string `json:"auth_session_token"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return "", fmt.Errorf("ADE %s: decoding answer: %w", endpoint, err)
	}
	if out.Token == "" {
		out.Token = resp.Header.Get(HeaderSession)
	}
	if out.Token == "" {
		return "", fmt.Errorf("ADE %s: no auth_session_token in the answer", endpoint)
	}
	c.logger.Debug("ADE session opened", "ade_url", c.base.String())
	return out.Token, nil
}

func (c *Client) setHeaders(req *http.Request) {
	req.Header.Set(HeaderProtocolVersion, ProtocolVersion)
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set("Accept", "application/json")
}

// do calls method path with in as the JSON body (none when nil) and
// decodes the answer into out (when not nil). An expired session (401, or
// 403 FORBIDDEN as Apple's simulators answer) opens a new one, once.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	endpoint := method + " " + path
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("ADE %s: encoding request: %w", endpoint, err)
		}
	}
	u := c.endpointURL(path, query)
	for renewed := false; ; renewed = true {
		if err := c.ensureSession(ctx); err != nil {
			return err
		}
		var sent string
		resp, respBody, err := c.roundTrip(ctx, endpoint, func() (*http.Request, error) {
			var r io.Reader
			if body != nil {
				r = bytes.NewReader(body)
			}
			req, err := http.NewRequestWithContext(ctx, method, u.String(), r)
			if err != nil {
				return nil, err
			}
			c.setHeaders(req)
			if body != nil {
				req.Header.Set("Content-Type", contentType)
			}
			// Read per attempt: a retried request carries the session
			// the throttling answer may have brought.
			sent = c.currentSession()
			req.Header.Set(HeaderSession, sent)
			return req, nil
		})
		if err != nil {
			return err
		}
		if resp.StatusCode/100 == 2 {
			if out == nil {
				return nil
			}
			if err := json.Unmarshal(respBody, out); err != nil {
				return fmt.Errorf("ADE %s: decoding answer: %w", endpoint, err)
			}
			return nil
		}
		apiErr := newError(endpoint, resp, respBody, c.now())
		if !renewed && sessionExpired(apiErr) {
			c.logger.Info("ADE session expired, opening a new one", "ade_url", c.base.String(), "http_status", apiErr.Status)
			c.dropSession(sent)
			continue
		}
		return apiErr
	}
}

// sessionExpired: Apple answers 401 UNAUTHORIZED to an expired session;
// nanodep also sees 403 FORBIDDEN (g.1.5). Other 403s (T_C_NOT_SIGNED,
// ACCESS_DENIED) are not cured by a new session.
func sessionExpired(e *Error) bool {
	return e.Status == http.StatusUnauthorized || (e.Status == http.StatusForbidden && e.Code == "FORBIDDEN")
}

// roundTrip sends the request build makes, again after 429 and 5xx
// answers as long as retries and the wait allow, and returns the last
// answer with its body. Every answer's session is adopted.
func (c *Client) roundTrip(ctx context.Context, endpoint string, build func() (*http.Request, error)) (*http.Response, []byte, error) {
	for attempt := 0; ; attempt++ {
		req, err := build()
		if err != nil {
			return nil, nil, fmt.Errorf("ADE %s: %w", endpoint, err)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, nil, fmt.Errorf("ADE %s: %w", endpoint, err)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseSize+1))
		resp.Body.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("ADE %s: reading answer: %w", endpoint, err)
		}
		if len(body) > maxResponseSize {
			return nil, nil, fmt.Errorf("ADE %s: answer larger than %d bytes", endpoint, maxResponseSize)
		}
		c.adoptSession(resp.Header.Get(HeaderSession))
		if !retryable(resp.StatusCode) || attempt >= c.retries {
			return resp, body, nil
		}
		wait, asked := retryAfter(resp.Header.Get("Retry-After"), c.now())
		if !asked {
			wait = firstBackoff << attempt
		}
		if wait > c.maxRetryWait {
			if asked {
				// Waiting here would hold a sync for longer than anyone
				// expects; the caller gets RetryAfter and comes back.
				return resp, body, nil
			}
			wait = c.maxRetryWait
		}
		c.logger.Info("ADE request retried", "endpoint", endpoint, "http_status", resp.StatusCode, "wait", wait, "attempt", attempt+1)
		if err := c.sleep(ctx, wait); err != nil {
			return nil, nil, fmt.Errorf("ADE %s: %w", endpoint, err)
		}
	}
}

func retryable(status int) bool {
	return status == http.StatusTooManyRequests || status >= 500
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
		if n > int64(24*time.Hour/time.Second) {
			n = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

func newError(endpoint string, resp *http.Response, body []byte, now time.Time) *Error {
	code, msg := parseErrorBody(body)
	e := &Error{Endpoint: endpoint, Status: resp.StatusCode, Code: code, Message: msg}
	if d, ok := retryAfter(resp.Header.Get("Retry-After"), now); ok {
		e.RetryAfter = d
	}
	return e
}
