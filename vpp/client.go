package vpp

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultURL is the base of Apple's Apps and Books API, version 2; the
// --vpp-url flag and tests point a Client elsewhere.
const DefaultURL = "https://vpp.itunes.apple.com/mdm/v2"

// Defaults of a Client, in one place.
const (
	defaultTimeout = 30 * time.Second
	// defaultRequestsPerSecond is Apple's documented maxRequestPerSecond
	// per location, used until the service configuration says otherwise.
	defaultRequestsPerSecond = 15
	// configTTL: Apple changes limits without notice and asks clients to
	// re-read them every 5 minutes.
	configTTL = 5 * time.Minute
	// defaultPollInterval: Apple asks for /status no more often than
	// every 30 seconds.
	defaultPollInterval = 30 * time.Second
	// defaultMaxPolls bounds WaitEvent at about 30 minutes of polling.
	defaultMaxPolls = 60
	// maxBody caps an answer: a page is several hundred records of a few
	// hundred bytes each.
	maxBody = 8 << 20
	// maxPages guards against an answer whose nextPageIndex never ends.
	maxPages = 10000
	// maxRestarts is how often a paged read starts over when versionId
	// changes under it before it settles for what it read.
	maxRestarts = 2
)

// RetryPolicy says how a Client retries refused requests. Only what Apple
// says to retry is retried: HTTP 429 (9646), 500 (9603), 502–504 (9729),
// 9630, and requests that got no answer. 9616 and every other error are
// returned at once.
type RetryPolicy struct {
	// MaxRetries bounds the retries of one call.
	MaxRetries int
	// Backoff is the first wait when Apple sends no Retry-After; it
	// doubles with each retry.
	Backoff time.Duration
	// AlreadyAssignedBackoff is the first wait after 9630 ("too many
	// recent already-assigned errors"), which Apple lifts only after a
	// while; it doubles too.
	AlreadyAssignedBackoff time.Duration
	// MaxWait is the longest the client sleeps in a call. A longer wait
	// (from Retry-After or back-off) is not slept: the error is returned
	// with Error.RetryAfter set, for a background job to reschedule.
	MaxWait time.Duration
}

// DefaultRetryPolicy is the policy of a Client without WithRetryPolicy.
var DefaultRetryPolicy = RetryPolicy{
	MaxRetries:             4,
	Backoff:                2 * time.Second,
	AlreadyAssignedBackoff: 30 * time.Second,
	MaxWait:                2 * time.Minute,
}

// Client calls the Apps and Books API for one location, with its content
// token. It is safe for concurrent use. It paces requests to Apple's
// per-location rate; one Client per location per process is expected
// (background work runs on one node: DESIGN.md, Storage).
type Client struct {
	base         string
	token        string
	mdm          MDMInfo
	hc           *http.Client
	sleep        func(context.Context, time.Duration) error
	now          func() time.Time
	retry        RetryPolicy
	rate         int // requests per second; 0 = Apple's; < 0 = unpaced
	pollInterval time.Duration
	maxPolls     int
	userAgent    string

	mu          sync.Mutex
	next        time.Time // earliest start of the next request, for pacing
	cfg         *ServiceConfig
	cfgAt       time.Time
	tokenExpiry time.Time
}

type clientConfig struct {
	url          string
	roots        *x509.CertPool
	hc           *http.Client
	mdm          MDMInfo
	sleep        func(context.Context, time.Duration) error
	now          func() time.Time
	retry        RetryPolicy
	rate         int
	pollInterval time.Duration
	maxPolls     int
	userAgent    string
}

// Option configures a Client.
type Option func(*clientConfig)

// WithURL sets the API base (default DefaultURL), for --vpp-url.
func WithURL(u string) Option {
	return func(c *clientConfig) { c.url = strings.TrimRight(u, "/") }
}

// WithRootCAs sets the CAs Apple's server certificate must chain to
// (default: the system's), for a fake or a proxy with its own CA.
func WithRootCAs(pool *x509.CertPool) Option { return func(c *clientConfig) { c.roots = pool } }

// WithHTTPClient replaces the HTTP client; WithRootCAs is then ignored.
func WithHTTPClient(hc *http.Client) Option { return func(c *clientConfig) { c.hc = hc } }

// WithMDMInfo names this server to Apple. Claim writes it into the
// location's client configuration, and the Client then checks every
// answer's mdmInfo against it: an answer naming another server fails
// with a *ClaimError, because two servers managing one location allocate
// licences unpredictably.
func WithMDMInfo(info MDMInfo) Option { return func(c *clientConfig) { c.mdm = info } }

// WithSleeper replaces time.Sleep for waits (Retry-After, back-off,
// pacing, event polling); tests make time pass without waiting. The
// sleeper returns ctx.Err() when ctx ends first.
func WithSleeper(sleep func(ctx context.Context, d time.Duration) error) Option {
	return func(c *clientConfig) { c.sleep = sleep }
}

// WithNow sets the clock (default time.Now).
func WithNow(now func() time.Time) Option { return func(c *clientConfig) { c.now = now } }

// WithRetryPolicy replaces DefaultRetryPolicy.
func WithRetryPolicy(p RetryPolicy) Option { return func(c *clientConfig) { c.retry = p } }

// WithRateLimit paces requests to perSecond instead of the service
// configuration's maxRequestPerSecond; a negative value turns pacing off.
func WithRateLimit(perSecond int) Option { return func(c *clientConfig) { c.rate = perSecond } }

// WithPollInterval sets how often WaitEvent polls (default 30 s, the least
// Apple allows) and how many polls it makes before giving up.
func WithPollInterval(d time.Duration, maxPolls int) Option {
	return func(c *clientConfig) { c.pollInterval, c.maxPolls = d, maxPolls }
}

// WithUserAgent sets the User-Agent header (default "bramley").
func WithUserAgent(ua string) Option { return func(c *clientConfig) { c.userAgent = ua } }

// NewClient returns a client that authenticates with sToken, the content
// token as downloaded (ContentToken.Raw).
func NewClient(sToken string, opts ...Option) *Client {
	cfg := clientConfig{
		url:          DefaultURL,
		sleep:        sleepContext,
		now:          time.Now,
		retry:        DefaultRetryPolicy,
		pollInterval: defaultPollInterval,
		maxPolls:     defaultMaxPolls,
		userAgent:    "bramley",
	}
	for _, o := range opts {
		o(&cfg)
	}
	hc := cfg.hc
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: cfg.roots, MinVersion: tls.VersionTLS12}
		hc = &http.Client{Transport: tr, Timeout: defaultTimeout}
	}
	return &Client{
		base:         cfg.url,
		token:        strings.TrimSpace(sToken),
		mdm:          cfg.mdm,
		hc:           hc,
		sleep:        cfg.sleep,
		now:          cfg.now,
		retry:        cfg.retry,
		rate:         cfg.rate,
		pollInterval: cfg.pollInterval,
		maxPolls:     max(cfg.maxPolls, 1),
		userAgent:    cfg.userAgent,
	}
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

// TokenExpiration is the latest tokenExpirationDate Apple sent; zero until
// an answer carried one. It is Apple's word on the token's expiry, which
// may differ from the file's expDate once the token is renewed or revoked;
// compare it with ExpiryWarningPeriod for warnings.
func (c *Client) TokenExpiration() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tokenExpiry
}

// request is one call to the API.
type request struct {
	method string
	path   string
	query  url.Values
	body   any  // JSON-encoded when non-nil
	public bool // no Authorization: only the service configuration is public
	// ownClaimCheck: client/config answers name the location's holder,
	// which Claim inspects itself.
	ownClaimCheck bool
}

// envelope holds what every answer may carry besides its payload.
type envelope struct {
	MDMInfo             *MDMInfo  `json:"mdmInfo"`
	TokenExpirationDate Timestamp `json:"tokenExpirationDate"`
}

// do sends r, retrying as the policy says, and decodes a successful answer
// into out.
func (c *Client) do(ctx context.Context, r request, out any) error {
	var body []byte
	if r.body != nil {
		var err error
		if body, err = json.Marshal(r.body); err != nil {
			return fmt.Errorf("encoding request: %w", err)
		}
	}
	u := c.base + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	for attempt := 0; ; attempt++ {
		if err := c.pace(ctx); err != nil {
			return err
		}
		answer, apiErr, err := c.send(ctx, r, u, body)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, errAnswerTooLarge) {
				return err // the same request would get the same answer
			}
			// No answer: the request may or may not have been processed.
			// Retrying is safe: Apple's writes are idempotent in effect
			// (a second create is 9716, a second associate 9616 or a no-op).
			if attempt >= c.retry.MaxRetries {
				return err
			}
			if err := c.sleep(ctx, c.backoff(c.retry.Backoff, attempt)); err != nil {
				return err
			}
			continue
		}
		if apiErr == nil {
			return c.decode(r, answer, out)
		}
		wait, retry := c.retryWait(apiErr, attempt)
		if !retry {
			return apiErr
		}
		if attempt >= c.retry.MaxRetries || wait > c.retry.MaxWait {
			apiErr.RetryAfter = max(apiErr.RetryAfter, wait)
			return apiErr
		}
		if err := c.sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// send makes one attempt. It returns the body of a successful answer, or
// Apple's error, or a transport error.
func (c *Client) send(ctx context.Context, r request, u string, body []byte) ([]byte, *Error, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, rd)
	if err != nil {
		return nil, nil, fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if !r.public {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("calling Apps and Books %s: %w", r.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, nil, fmt.Errorf("reading Apps and Books answer to %s: %w", r.path, err)
	}
	if len(b) > maxBody {
		return nil, nil, fmt.Errorf("reading the Apps and Books answer to %s: %w", r.path, errAnswerTooLarge)
	}
	apiErr := parseErrorBody(b)
	if apiErr == nil && (resp.StatusCode < 200 || resp.StatusCode > 299) {
		apiErr = statusError(resp.StatusCode)
	}
	if apiErr != nil {
		apiErr.Status = resp.StatusCode
		apiErr.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), c.now())
		return nil, apiErr, nil
	}
	return b, nil, nil
}

func (c *Client) decode(r request, b []byte, out any) error {
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return fmt.Errorf("decoding Apps and Books answer to %s: %w", r.path, err)
	}
	if !env.TokenExpirationDate.IsZero() {
		c.mu.Lock()
		c.tokenExpiry = env.TokenExpirationDate.Time
		c.mu.Unlock()
	}
	// Apple asks MDM servers to check mdmInfo in every answer, so that one
	// that has lost the location stops before it assigns licences. Reads
	// are checked; a write's answer is not, because the write has happened
	// and its eventId must reach the caller.
	if r.method == http.MethodGet && !r.ownClaimCheck && c.mdm.ID != "" && env.MDMInfo != nil && env.MDMInfo.ID != c.mdm.ID {
		return &ClaimError{Holder: *env.MDMInfo}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decoding Apps and Books answer to %s: %w", r.path, err)
	}
	return nil
}

// retryWait says whether e is worth retrying and after how long.
func (c *Client) retryWait(e *Error, attempt int) (time.Duration, bool) {
	switch Code(e.Number) {
	case ErrAlreadyAssigned:
		// The user has the item. Asking again only earns 9630.
		return 0, false
	case ErrTooManyAlreadyAssigned:
		return max(e.RetryAfter, c.backoff(c.retry.AlreadyAssignedBackoff, attempt)), true
	case ErrTooManyRequests, ErrInternal, ErrUnavailable, ErrMaintenance:
	default:
		switch e.Status {
		case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
			http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		default:
			return 0, false
		}
	}
	if e.RetryAfter > 0 {
		return e.RetryAfter, true
	}
	return c.backoff(c.retry.Backoff, attempt), true
}

// backoff doubles base with each attempt, without overflowing.
func (c *Client) backoff(base time.Duration, attempt int) time.Duration {
	d := max(base, time.Millisecond)
	for range min(attempt, 30) {
		d *= 2
		if d > 24*time.Hour {
			return 24 * time.Hour
		}
	}
	return d
}

// parseRetryAfter reads Retry-After as seconds or an HTTP date; 0 when
// absent or unreadable. A day is the most it honours: a longer value is a
// mistake, and the caller reschedules anyway.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		d = time.Duration(min(n, 86400)) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), 24*time.Hour)
}

// pace keeps requests to the location's rate: Apple counts requests per
// location, and a server over it gets 9646 for all its work.
func (c *Client) pace(ctx context.Context) error {
	c.mu.Lock()
	rate := c.rate
	if rate == 0 {
		rate = defaultRequestsPerSecond
		if c.cfg != nil && c.cfg.Limits.MaxRequestPerSecond > 0 {
			rate = c.cfg.Limits.MaxRequestPerSecond
		}
	}
	if rate < 0 {
		c.mu.Unlock()
		return nil
	}
	now := c.now()
	if c.next.Before(now) {
		c.next = now
	}
	wait := c.next.Sub(now)
	c.next = c.next.Add(time.Second / time.Duration(rate))
	c.mu.Unlock()
	if wait <= 0 {
		return nil
	}
	return c.sleep(ctx, wait)
}

// Page describes one page of a paged answer.
type Page struct {
	CurrentPageIndex int `json:"currentPageIndex"`
	// NextPageIndex is 0 on the last page: Apple leaves it out there, and
	// a next page is never page 0.
	NextPageIndex int `json:"nextPageIndex"`
	Size          int `json:"size"`
	TotalPages    int `json:"totalPages"`
	// VersionID changes whenever the data changes; pass it back as
	// sinceVersionId to read only what changed since.
	VersionID string `json:"versionId"`
}

// collectPages reads every page from the first. When versionId changes
// during the traversal the data moved under it, and it starts over, at
// most maxRestarts times, then settles for what it read: callers treat the
// result as a snapshot that Apple remains the judge of (a licence read as
// free may turn out assigned: 9616).
func collectPages[T any](ctx context.Context, fetch func(ctx context.Context, page int) ([]T, Page, error)) ([]T, Page, error) {
	for restart := 0; ; restart++ {
		all, first, err := fetch(ctx, 0)
		if err != nil {
			return nil, Page{}, err
		}
		last, changed := first, false
		for n := 1; last.NextPageIndex > 0; n++ {
			if n >= maxPages || last.NextPageIndex <= last.CurrentPageIndex {
				return nil, last, fmt.Errorf("paging does not end: page %d names %d as next", last.CurrentPageIndex, last.NextPageIndex)
			}
			items, p, err := fetch(ctx, last.NextPageIndex)
			if err != nil {
				return nil, Page{}, err
			}
			all = append(all, items...)
			changed = changed || p.VersionID != first.VersionID
			last = p
		}
		if !changed || restart >= maxRestarts {
			return all, last, nil
		}
	}
}

// pageQuery adds pageIndex to q; the first page is asked for without it,
// as Apple's documents do (9650 "must be greater than 0").
func pageQuery(q url.Values, page int) url.Values {
	if q == nil {
		q = url.Values{}
	}
	if page > 0 {
		q.Set("pageIndex", strconv.Itoa(page))
	}
	return q
}

func setBool(q url.Values, key string, v *bool) {
	if v != nil {
		q.Set(key, strconv.FormatBool(*v))
	}
}

func setString(q url.Values, key, v string) {
	if v != "" {
		q.Set(key, v)
	}
}

// errAnswerTooLarge means an answer exceeded maxBody.
var errAnswerTooLarge = fmt.Errorf("answer larger than %d bytes", maxBody)

// ErrRequestTooLarge means a request exceeds a limit of the service
// configuration; Apple would refuse it (9700–9702, 9714).
var ErrRequestTooLarge = errors.New("request exceeds an Apps and Books limit")
