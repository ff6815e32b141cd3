package appletest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The fake Apps and Books service follows Apple's "Apps and Books for
// Organizations" v2 documents (apple-protocols.md h.2): "Service Config",
// "Client Config", "Get Assets", "Get Assignments", "Managing assets",
// "Managing users", "Using paginated endpoints" and "Handling error
// responses", with the legacy 9616/9630 behaviour of v1 (h.1).
const (
	vppBasePath       = "/mdm/v2"
	vppInvitePath     = "/WebObjects/MZFinance.woa/wa/associateVPPUserWithITSAccount"
	vppMaxBody        = 1 << 20
	vppDefaultPage    = 100
	vppTimeLayout     = "2006-01-02T15:04:05-0700"
	vppPricingDefault = "STDQ"
)

// vppLimits are Apple's documented limits, which the fake serves and enforces.
var vppLimits = map[string]int{
	"maxAssets": 25, "maxUsers": 100, "maxNotificationLength": 512, "maxRevokeClientUserIds": 100,
	"maxClientUserIds": 1000, "maxSerialNumbers": 1000, "maxRevokeSerialNumbers": 100,
	"maxRequestPerSecond": 15, "maxSubscriptions": 25, "maxSubscriptionClientUserIds": 1000,
	"maxMdmNameLength": 100, "maxMdmMetadataLength": 255, "maxMdmIdLength": 100,
}

// vppErrors are the error numbers the fake answers with, and Apple's
// messages for them.
var vppErrors = map[int]string{
	9601: "Login required.",
	9602: "Invalid argument.",
	9603: "Internal error.",
	9609: "Unable to find the registered user.",
	9616: "License already assigned.",
	9621: "The token has expired. You need to generate a new token online using your organization's account at either school.apple.com or business.apple.com.",
	9622: "Invalid authentication token.",
	9625: "The server has revoked the sToken.",
	9630: "Too many recent already assigned errors.",
	9646: "There are too many recent requests. Try again momentarily.",
	9650: "The provided page index must be greater than 0, and less than the total number of pages.",
	9700: "Max assets limit on request has been passed, please stay within given limit.",
	9701: "Max clientUserIds limit on request has been passed, please stay within given limit.",
	9702: "Max serialNumbers limit on request has been passed, please stay within given limit.",
	9703: "Duplicate assets found in request, please send unique assets.",
	9704: "Duplicate clientUserIds found in request, please send unique clients.",
	9705: "Duplicate serialNumbers found in request, please send unique serials.",
	9707: "Asset in request is not device assignable, please send device assignable assets.",
	9708: "EventId could not be found.",
	9709: "There are not enough licenses for this app or book available to assign to the selected group.",
	9710: "Both the notification URL and the authentication token are necessary.",
	9711: "Either the notification URL or the authentication token exceeds its maximum length. Change the request to stay within the specified limit.",
	9712: "The provided notification URL must be a valid URL and use HTTPS as the protocol.",
	9713: "The MDM metadata exceeds the maximum length. Change the request to stay within the specified limit.",
	9714: "The number of users exceeds the maximum. Change the request to stay within the specified limit.",
	9715: "This request contains duplicate users. Change the request to send unique users.",
	9716: "A registered user already exists with the specified clientUserId.",
	9717: "This request contains an invalid email address. Change the request to send valid email addresses.",
	9718: "This request doesn't contain an asset, which is a required argument. Change the request to provide an asset.",
	9719: "Either clientUserIds or serialNumbers are required arguments. Change the request to provide assignable users and devices.",
	9720: "Users are a required argument. Change the request to provide a user.",
	9721: "This request contains an invalid version ID. Change the request to send the version ID from the read APIs.",
	9722: "This request contains an invalid authorization header. Change the request to send an authorization header that matches the format 'Bearer {sToken}'.",
	9723: "You must provide an MDM name, ID, and metadata when setting the MDM information.",
	9724: "The MDM ID exceeds the maximum length. Change the request to stay within the specified limit.",
	9725: "The MDM name exceeds the maximum length. Change the request to stay within the specified limit.",
	9726: "This request contains an unsupported HTTP method for the requested endpoint.",
	9727: "This request contains an unsupported Content-Type for the requested endpoint.",
	9729: "The service is temporarily unavailable. Try again later.",
}

// VPPAsset is an app or book the fake's location owns. The zero value of
// the flags is a typical paid app: revocable and device-assignable.
type VPPAsset struct {
	AdamID string
	// PricingParam defaults to "STDQ".
	PricingParam string
	// ProductType is "App" (default) or "Book".
	ProductType string
	// Total is the number of licences; Available is Total minus those
	// assigned.
	Total               int
	NotDeviceAssignable bool
	Irrevocable         bool
	SupportedPlatforms  []string
}

// VPPUser is a user of the fake, as Apple would list it.
type VPPUser struct {
	ClientUserID   string
	Email          string
	ManagedAppleID string
	Status         string // Registered, Associated, Retired
	InviteCode     string
	IDHash         string
}

// VPPFailure is an answer the fake gives instead of serving a request.
type VPPFailure struct {
	// Path limits the failure to requests to this path under /mdm/v2
	// ("/assets/associate"); empty matches every request.
	Path        string
	Status      int
	ErrorNumber int
	// RetryAfter, when set, is sent as Retry-After (whole seconds).
	RetryAfter time.Duration
}

// VPPRequest is one request the fake got, and how it answered.
type VPPRequest struct {
	Method string
	// Path is under /mdm/v2 ("/assets/associate").
	Path        string
	Query       url.Values
	Body        []byte
	Status      int
	ErrorNumber int
}

type vppAssetState struct {
	VPPAsset
	holders []vppHolder // in assignment order
	ver     int
}

// vppHolder is a user (clientUserId) or a device (serial number) holding a
// licence.
type vppHolder struct {
	id     string
	device bool
}

// index returns the position of the holder, or -1.
func (a *vppAssetState) index(id string, device bool) int {
	return slices.Index(a.holders, vppHolder{id: id, device: device})
}

type vppUserState struct {
	VPPUser
	ver int
}

type vppEvent struct {
	id, typ      string
	status       string
	numRequested int
	numCompleted int
	failures     []vppErrorBody
	polls        int
	apply        func(ev *vppEvent)
}

type vppErrorInfo struct {
	Assets        []vppAssetRef `json:"assets,omitempty"`
	ClientUserIDs []string      `json:"clientUserIds,omitempty"`
	SerialNumbers []string      `json:"serialNumbers,omitempty"`
}

type vppErrorBody struct {
	ErrorInfo    *vppErrorInfo `json:"errorInfo,omitempty"`
	ErrorMessage string        `json:"errorMessage"`
	ErrorNumber  int           `json:"errorNumber"`
}

type vppAssetRef struct {
	AdamID       string `json:"adamId"`
	PricingParam string `json:"pricingParam,omitempty"`
}

type vppMDMInfo struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Metadata string `json:"metadata"`
}

// VPP is a fake of Apple's Apps and Books for Organizations service (v2)
// for one location: content token authentication with Apple's answers to
// bad tokens, the service and client configuration, assets with licence
// counts that it enforces, users with invitations, assignments, and writes
// carried out by asynchronous events that complete when the test says so
// (CompleteEvents) or after a number of polls (WithVPPEventPolls). One
// Apple Account can accept several users' invitations, and then holds
// each item once: a second licence is refused with 9616, and repeated
// 9616s earn 9630 (WithVPPAlreadyAssignedLimit).
type VPP struct {
	srv   *httptest.Server
	ca    *testCA
	roots *x509.CertPool

	orgName      string
	locationName string
	uID          string
	sToken       string
	tokenExpiry  time.Time
	pageSize     int
	eventPolls   int // -1: events complete only in CompleteEvents
	aaLimit      int
	limits       map[string]int
	now          func() time.Time

	mu        sync.Mutex
	revoked   bool
	version   int
	assets    []*vppAssetState
	users     []*vppUserState
	events    map[string]*vppEvent
	order     []string // event IDs in submission order
	mdmInfo   *vppMDMInfo
	notifyURL string
	notifyTok string
	notifyTyp []string
	failures  []VPPFailure
	recent    int // 9616 answers since the last 9630
	requests  []VPPRequest
}

// VPPOption configures the fake Apps and Books service.
type VPPOption func(*VPP)

// WithVPPAssets gives the location assets.
func WithVPPAssets(assets ...VPPAsset) VPPOption {
	return func(v *VPP) {
		for _, a := range assets {
			v.addAsset(a)
		}
	}
}

// WithVPPClock sets the clock the fake judges the token's expiry by
// (default time.Now).
func WithVPPClock(now func() time.Time) VPPOption { return func(v *VPP) { v.now = now } }

// WithVPPPageSize sets how many records a page holds (default 100), so
// that tests can see paging with a few records.
func WithVPPPageSize(n int) VPPOption { return func(v *VPP) { v.pageSize = max(n, 1) } }

// WithVPPTokenExpiry sets the content token's expDate (default a year from
// now). Once it has passed, the fake answers 9621.
func WithVPPTokenExpiry(t time.Time) VPPOption { return func(v *VPP) { v.tokenExpiry = t } }

// WithVPPLocation names the organisation and the location.
func WithVPPLocation(orgName, locationName string) VPPOption {
	return func(v *VPP) { v.orgName, v.locationName = orgName, locationName }
}

// WithVPPEventPolls makes events complete by themselves: each answers
// PENDING to its first n status polls and completes at the next. Without
// it events complete only in CompleteEvents.
func WithVPPEventPolls(n int) VPPOption { return func(v *VPP) { v.eventPolls = max(n, 0) } }

// WithVPPAlreadyAssignedLimit makes the fake answer 9630 ("too many recent
// already-assigned errors") to the next associate request once n 9616
// failures have accumulated since the last 9630, as Apple does to clients
// that repeat 9616s. Off by default.
func WithVPPAlreadyAssignedLimit(n int) VPPOption { return func(v *VPP) { v.aaLimit = n } }

// WithVPPLimit overrides one limit of the service configuration, by its
// JSON name ("maxClientUserIds"); the fake enforces it too.
func WithVPPLimit(name string, value int) VPPOption { return func(v *VPP) { v.limits[name] = value } }

// NewVPP starts a fake Apps and Books service that t closes at the end of
// the test; with a nil t the caller must Close it. It fails t (or panics
// without one) if it cannot start.
func NewVPP(t TB, opts ...VPPOption) *VPP {
	if t != nil {
		t.Helper()
	}
	v, err := StartVPP(opts...)
	if err != nil {
		if t == nil {
			panic(err)
		}
		t.Fatalf("starting fake Apps and Books: %v", err)
	}
	if t != nil {
		t.Cleanup(v.Close)
	}
	return v
}

// StartVPP starts a fake Apps and Books service on 127.0.0.1 with a
// server certificate for loopback only, issued by a CA of its own
// (RootCAs).
func StartVPP(opts ...VPPOption) (*VPP, error) {
	v := &VPP{
		orgName:      "Appletest Org",
		locationName: "Appletest Location",
		uID:          strconv.FormatInt(int64(2049025000000000+vppRandomInt(999999)), 10),
		tokenExpiry:  time.Now().Add(365 * 24 * time.Hour),
		pageSize:     vppDefaultPage,
		eventPolls:   -1,
		limits:       make(map[string]int, len(vppLimits)),
		events:       make(map[string]*vppEvent),
		now:          time.Now,
	}
	for k, n := range vppLimits {
		v.limits[k] = n
	}
	for _, o := range opts {
		o(v)
	}
	v.sToken = v.makeToken()
	ca, err := newTestCA("bramley appletest Apps and Books CA")
	if err != nil {
		return nil, fmt.Errorf("creating Apps and Books CA: %w", err)
	}
	v.ca = ca
	v.roots = x509.NewCertPool()
	v.roots.AddCert(ca.cert)
	cert, err := v.serverCertificate()
	if err != nil {
		return nil, err
	}
	v.srv = httptest.NewUnstartedServer(http.HandlerFunc(v.serveHTTP))
	v.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	v.srv.Config.ReadHeaderTimeout = 10 * time.Second
	v.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	v.srv.StartTLS()
	return v, nil
}

func vppRandomInt(n int64) int64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	var x uint64
	for _, c := range b {
		x = x<<8 | uint64(c)
	}
	return int64(x % uint64(n))
}

// makeToken builds the content token as Apple's .vpptoken file holds it:
// base64 of {"token","expDate","orgName"}.
func (v *VPP) makeToken() string { return vppToken(v.orgName, v.tokenExpiry) }

func vppToken(orgName string, expiry time.Time) string {
	secret := make([]byte, 48)
	_, _ = rand.Read(secret)
	j, _ := json.Marshal(map[string]string{
		"token":   base64.StdEncoding.EncodeToString(secret),
		"expDate": expiry.UTC().Format(vppTimeLayout),
		"orgName": orgName,
	})
	return base64.StdEncoding.EncodeToString(j)
}

// serverCertificate issues the TLS certificate for loopback only. Its key
// is ECDSA: the fake starts in every test, and an RSA key takes a while.
func (v *VPP) serverCertificate() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	cert, err := v.ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "vpp.itunes.apple.com (appletest)"},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(365 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:    []string{"localhost"},
	}, key.Public())
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issuing Apps and Books server certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

// URL is the fake's API base, the counterpart of
// https://vpp.itunes.apple.com/mdm/v2, for vpp.WithURL (--vpp-url).
func (v *VPP) URL() string { return v.srv.URL + vppBasePath }

// RootCAs returns a pool holding the fake's CA, for vpp.WithRootCAs.
func (v *VPP) RootCAs() *x509.CertPool { return v.roots }

// CACertificatePEM returns the fake's CA certificate.
func (v *VPP) CACertificatePEM() []byte { return certPEM(v.ca.cert) }

// Close stops the server.
func (v *VPP) Close() { v.srv.Close() }

// ContentToken returns the location's .vpptoken file.
func (v *VPP) ContentToken() []byte { return []byte(v.sToken) }

// SToken returns the content token as it goes in "Authorization: Bearer".
func (v *VPP) SToken() string { return v.sToken }

// UID is the location's uId.
func (v *VPP) UID() string { return v.uID }

// OtherToken returns a well-formed content token the fake does not know,
// which it answers as Apple does: HTTP 200 with error 9622.
func (v *VPP) OtherToken() string { return vppToken(v.orgName, v.tokenExpiry) }

// VPPIDHash is the idHash the fake gives the Apple Account appleID.
func VPPIDHash(appleID string) string {
	sum := sha256.Sum256([]byte("appletest idHash:" + strings.ToLower(strings.TrimSpace(appleID))))
	return hex.EncodeToString(sum[:20])
}

// AddAsset gives the location an asset, or replaces its counts.
func (v *VPP) AddAsset(a VPPAsset) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.addAsset(a)
}

func (v *VPP) addAsset(a VPPAsset) {
	if a.PricingParam == "" {
		a.PricingParam = vppPricingDefault
	}
	if a.ProductType == "" {
		a.ProductType = "App"
	}
	v.version++
	for _, s := range v.assets {
		if s.AdamID == a.AdamID && s.PricingParam == a.PricingParam {
			s.VPPAsset, s.ver = a, v.version
			return
		}
	}
	v.assets = append(v.assets, &vppAssetState{VPPAsset: a, ver: v.version})
}

// AcceptInvitation has appleID accept the invitation of the active user
// clientUserID, as a person does by opening the invitation URL: the user
// becomes Associated, with idHash VPPIDHash(appleID). Several users can
// accept with one Apple ID; they then share an idHash.
func (v *VPP) AcceptInvitation(clientUserID, appleID string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	u := v.activeUser(clientUserID)
	if u == nil {
		return fmt.Errorf("appletest: no active Apps and Books user %q", clientUserID)
	}
	return v.accept(u, appleID)
}

func (v *VPP) accept(u *vppUserState, appleID string) error {
	h := VPPIDHash(appleID)
	if u.Status == "Associated" && u.IDHash != h {
		return fmt.Errorf("appletest: user %q is associated with another Apple Account", u.ClientUserID)
	}
	v.version++
	u.Status, u.IDHash, u.InviteCode, u.ver = "Associated", h, "", v.version
	return nil
}

// CompleteEvents carries out every pending event, in the order they were
// submitted, and returns how many it completed.
func (v *VPP) CompleteEvents() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for _, id := range v.order {
		if ev := v.events[id]; ev.status == "PENDING" {
			v.complete(ev)
			n++
		}
	}
	return n
}

// PendingEvents is the number of events not yet carried out.
func (v *VPP) PendingEvents() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for _, ev := range v.events {
		if ev.status == "PENDING" {
			n++
		}
	}
	return n
}

func (v *VPP) complete(ev *vppEvent) {
	ev.apply(ev)
	ev.status = "COMPLETE"
	if len(ev.failures) > 0 {
		ev.status = "FAILED"
	}
}

// FailNext makes the next n requests (to f.Path, or any) answer f instead.
func (v *VPP) FailNext(n int, f VPPFailure) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for range n {
		v.failures = append(v.failures, f)
	}
}

// RateLimitNext makes the next n requests answer 429 with error 9646 and
// Retry-After, as Apple does to a client over maxRequestPerSecond.
func (v *VPP) RateLimitNext(n int, retryAfter time.Duration) {
	v.FailNext(n, VPPFailure{Status: http.StatusTooManyRequests, ErrorNumber: 9646, RetryAfter: retryAfter})
}

// RevokeToken revokes the content token: every call then fails 9625, as
// after an administrator downloads a new token for the location.
func (v *VPP) RevokeToken() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.revoked = true
}

// ClaimAs writes another MDM server's mdmInfo into the client
// configuration, as when another server takes the location over.
func (v *VPP) ClaimAs(id, name string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.mdmInfo = &vppMDMInfo{ID: id, Name: name, Metadata: "appletest"}
}

// User returns the active user clientUserID.
func (v *VPP) User(clientUserID string) (VPPUser, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if u := v.activeUser(clientUserID); u != nil {
		return u.VPPUser, true
	}
	return VPPUser{}, false
}

// Users returns every user record, retired ones included.
func (v *VPP) Users() []VPPUser {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]VPPUser, len(v.users))
	for i, u := range v.users {
		out[i] = u.VPPUser
	}
	return out
}

// Holders returns the clientUserIds and serial numbers holding a licence of
// adamID (standard quality), in the order they got it.
func (v *VPP) Holders(adamID string) []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if a := v.asset(adamID, ""); a != nil {
		out := make([]string, len(a.holders))
		for i, h := range a.holders {
			out[i] = h.id
		}
		return out
	}
	return nil
}

// Counts returns the assigned and available licences of adamID.
func (v *VPP) Counts(adamID string) (assigned, available int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if a := v.asset(adamID, ""); a != nil {
		return len(a.holders), a.available()
	}
	return 0, 0
}

// Requests returns the requests the fake got, in order.
func (v *VPP) Requests() []VPPRequest {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.requests)
}

// CountRequests counts the requests to method and path (under /mdm/v2).
func (v *VPP) CountRequests(method, path string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for _, r := range v.requests {
		if r.Method == method && r.Path == path {
			n++
		}
	}
	return n
}

func (a *vppAssetState) available() int {
	if a.Total >= math.MaxInt32 {
		return math.MaxInt32
	}
	return max(a.Total-len(a.holders), 0)
}

func (v *VPP) asset(adamID, pricing string) *vppAssetState {
	for _, a := range v.assets {
		if a.AdamID == adamID && (pricing == "" && a.PricingParam == vppPricingDefault || a.PricingParam == pricing) {
			return a
		}
	}
	if pricing == "" {
		for _, a := range v.assets {
			if a.AdamID == adamID {
				return a
			}
		}
	}
	return nil
}

func (v *VPP) activeUser(clientUserID string) *vppUserState {
	for _, u := range v.users {
		if u.ClientUserID == clientUserID && u.Status != "Retired" {
			return u
		}
	}
	return nil
}

// holdsThroughAccount reports whether another active user on the Apple
// Account idHash holds a.
func (v *VPP) holdsThroughAccount(a *vppAssetState, idHash, except string) bool {
	if idHash == "" {
		return false
	}
	for _, u := range v.users {
		if u.ClientUserID != except && u.Status == "Associated" && u.IDHash == idHash && a.index(u.ClientUserID, false) >= 0 {
			return true
		}
	}
	return false
}

// vppAnswer is the fake's answer to a request.
type vppAnswer struct {
	status     int
	body       any
	errNumber  int
	retryAfter time.Duration
}

func vppErr(status, number int) vppAnswer {
	return vppAnswer{status: status, errNumber: number,
		body: vppErrorBody{ErrorNumber: number, ErrorMessage: vppErrors[number]}}
}

func (v *VPP) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == vppInvitePath {
		v.serveInvitation(w, r)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, vppMaxBody))
	path := strings.TrimPrefix(r.URL.Path, vppBasePath)
	v.mu.Lock()
	var ans vppAnswer
	switch {
	case !strings.HasPrefix(r.URL.Path, vppBasePath+"/"):
		ans = vppAnswer{status: http.StatusNotFound}
	case err != nil:
		ans = vppErr(http.StatusBadRequest, 9602)
	default:
		ans = v.answer(r, path, body)
	}
	v.requests = append(v.requests, VPPRequest{Method: r.Method, Path: path, Query: r.URL.Query(),
		Body: body, Status: ans.status, ErrorNumber: ans.errNumber})
	v.mu.Unlock()

	if ans.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(ans.retryAfter.Seconds()))))
	}
	if ans.body == nil {
		w.WriteHeader(ans.status)
		return
	}
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(ans.status)
	_ = json.NewEncoder(w).Encode(ans.body)
}

// endpoints maps a path under /mdm/v2 to its method and whether it needs
// the token.
var vppEndpoints = map[string]struct {
	methods []string
	public  bool
}{
	"/service/config":      {methods: []string{http.MethodGet}, public: true},
	"/client/config":       {methods: []string{http.MethodGet, http.MethodPost}},
	"/assets":              {methods: []string{http.MethodGet}},
	"/assignments":         {methods: []string{http.MethodGet}},
	"/assets/associate":    {methods: []string{http.MethodPost}},
	"/assets/disassociate": {methods: []string{http.MethodPost}},
	"/users":               {methods: []string{http.MethodGet}},
	"/users/create":        {methods: []string{http.MethodPost}},
	"/users/update":        {methods: []string{http.MethodPost}},
	"/users/retire":        {methods: []string{http.MethodPost}},
	"/status":              {methods: []string{http.MethodGet}},
}

// answer serves one request; v.mu is held.
func (v *VPP) answer(r *http.Request, path string, body []byte) vppAnswer {
	for i, f := range v.failures {
		if f.Path == "" || f.Path == path {
			v.failures = slices.Delete(v.failures, i, i+1)
			a := vppErr(f.Status, f.ErrorNumber)
			a.retryAfter = f.RetryAfter
			return a
		}
	}
	ep, ok := vppEndpoints[path]
	if !ok {
		return vppAnswer{status: http.StatusNotFound}
	}
	if !ep.public {
		if a, ok := v.authenticate(r); !ok {
			return a
		}
	}
	if !slices.Contains(ep.methods, r.Method) {
		return vppErr(http.StatusMethodNotAllowed, 9726)
	}
	if r.Method == http.MethodPost && !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		return vppErr(http.StatusUnsupportedMediaType, 9727)
	}
	q := r.URL.Query()
	switch path {
	case "/service/config":
		return vppAnswer{status: http.StatusOK, body: v.serviceConfig()}
	case "/client/config":
		if r.Method == http.MethodPost {
			if a, ok := v.setClientConfig(body); !ok {
				return a
			}
		}
		return vppAnswer{status: http.StatusOK, body: v.clientConfig()}
	case "/assets":
		return v.getAssets(q)
	case "/assignments":
		return v.getAssignments(q)
	case "/assets/associate":
		return v.manageAssets(body, true)
	case "/assets/disassociate":
		return v.manageAssets(body, false)
	case "/users":
		return v.getUsers(q)
	case "/users/create", "/users/update", "/users/retire":
		return v.manageUsers(body, strings.TrimPrefix(path, "/users/"))
	case "/status":
		return v.status(q.Get("eventId"))
	}
	return vppAnswer{status: http.StatusNotFound}
}

// authenticate checks "Authorization: Bearer <sToken>" as Apple does.
func (v *VPP) authenticate(r *http.Request) (vppAnswer, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	switch {
	case !ok || strings.TrimSpace(tok) == "":
		return vppErr(http.StatusUnauthorized, 9722), false
	case tok != v.sToken:
		// Apple answers a token it does not know with HTTP 200 and 9622.
		return vppErr(http.StatusOK, 9622), false
	case v.revoked:
		return vppErr(http.StatusUnauthorized, 9625), false
	case !v.now().Before(v.tokenExpiry):
		return vppErr(http.StatusUnauthorized, 9621), false
	}
	return vppAnswer{}, true
}

// stamp adds what every answer carries.
func (v *VPP) stamp(m map[string]any) map[string]any {
	m["tokenExpirationDate"] = v.tokenExpiry.UTC().Format(vppTimeLayout)
	m["uId"] = v.uID
	if v.mdmInfo != nil {
		m["mdmInfo"] = *v.mdmInfo
	}
	return m
}

func (v *VPP) serviceConfig() map[string]any {
	codes := make([]vppErrorBody, 0, len(vppErrors))
	for _, n := range slices.Sorted(maps.Keys(vppErrors)) {
		codes = append(codes, vppErrorBody{ErrorNumber: n, ErrorMessage: vppErrors[n]})
	}
	base := v.URL()
	return map[string]any{
		"errorCodes":        codes,
		"limits":            v.limits,
		"notificationTypes": []string{"ASSET_MANAGEMENT", "USER_MANAGEMENT", "USER_ASSOCIATED", "ASSET_COUNT"},
		"urls": map[string]string{
			// Apple's template, on the fake's host, so that a demo stays
			// on the machine.
			"invitationEmail":       v.srv.URL + vppInvitePath + "?inviteCode=%25inviteCode%25&mt=8",
			"clientConfig":          base + "/client/config",
			"createUsers":           base + "/users/create",
			"getAssignments":        base + "/assignments",
			"revokeAssets":          base + "/assets/revoke",
			"contentMetadataLookup": v.srv.URL + "/lookup",
			"getUsers":              base + "/users",
			"eventStatus":           base + "/status",
			"associateAssets":       base + "/assets/associate",
			"disassociateAssets":    base + "/assets/disassociate",
			"updateUsers":           base + "/users/update",
			"getAssets":             base + "/assets",
			"retireUsers":           base + "/users/retire",
		},
	}
}

func (v *VPP) clientConfig() map[string]any {
	m := map[string]any{
		"countryISO2ACode": "US",
		"defaultPlatform":  "volumestore",
		"locationName":     v.locationName,
		"websiteURL":       "https://business.apple.com",
	}
	if v.notifyURL != "" {
		m["notificationUrl"], m["notificationAuthToken"] = v.notifyURL, v.notifyTok
		m["subscribedNotificationTypes"] = v.notifyTyp
	}
	return v.stamp(m)
}

func (v *VPP) setClientConfig(body []byte) (vppAnswer, bool) {
	var req struct {
		MDMInfo               *vppMDMInfo `json:"mdmInfo"`
		NotificationAuthToken string      `json:"notificationAuthToken"`
		NotificationURL       string      `json:"notificationUrl"`
		NotificationTypes     []string    `json:"notificationTypes"`
	}
	if json.Unmarshal(body, &req) != nil {
		return vppErr(http.StatusBadRequest, 9602), false
	}
	if m := req.MDMInfo; m != nil {
		switch {
		case m.ID == "" || m.Name == "" || m.Metadata == "":
			return vppErr(http.StatusBadRequest, 9723), false
		case len(m.ID) > v.limits["maxMdmIdLength"]:
			return vppErr(http.StatusBadRequest, 9724), false
		case len(m.Name) > v.limits["maxMdmNameLength"]:
			return vppErr(http.StatusBadRequest, 9725), false
		case len(m.Metadata) > v.limits["maxMdmMetadataLength"]:
			return vppErr(http.StatusBadRequest, 9713), false
		}
	}
	if (req.NotificationURL == "") != (req.NotificationAuthToken == "") {
		return vppErr(http.StatusBadRequest, 9710), false
	}
	if req.NotificationURL != "" {
		if len(req.NotificationURL) > v.limits["maxNotificationLength"] || len(req.NotificationAuthToken) > v.limits["maxNotificationLength"] {
			return vppErr(http.StatusBadRequest, 9711), false
		}
		if u, err := url.Parse(req.NotificationURL); err != nil || u.Scheme != "https" || u.Host == "" {
			return vppErr(http.StatusBadRequest, 9712), false
		}
		v.notifyURL, v.notifyTok, v.notifyTyp = req.NotificationURL, req.NotificationAuthToken, req.NotificationTypes
	}
	if req.MDMInfo != nil {
		m := *req.MDMInfo
		v.mdmInfo = &m
	}
	return vppAnswer{}, true
}

// page cuts items into the page q asks for.
func (v *VPP) page(q url.Values, n int) (from, to int, meta map[string]any, bad *vppAnswer) {
	idx := 0
	if s := q.Get("pageIndex"); s != "" {
		var err error
		if idx, err = strconv.Atoi(s); err != nil || idx < 0 {
			a := vppErr(http.StatusBadRequest, 9650)
			return 0, 0, nil, &a
		}
	}
	total := (n + v.pageSize - 1) / v.pageSize
	if idx > 0 && idx >= total {
		a := vppErr(http.StatusBadRequest, 9650)
		return 0, 0, nil, &a
	}
	from, to = min(idx*v.pageSize, n), min((idx+1)*v.pageSize, n)
	meta = map[string]any{"currentPageIndex": idx, "size": to - from, "totalPages": total,
		"versionId": vppVersionID(v.version)}
	if idx+1 < total {
		meta["nextPageIndex"] = idx + 1
	}
	return from, to, v.stamp(meta), nil
}

func vppVersionID(n int) string { return fmt.Sprintf("%08x-7035-11eb-9f67-appletest%03d", n, n%1000) }

// sinceVersion reads sinceVersionId; -1 when absent.
func (v *VPP) sinceVersion(q url.Values) (int, bool) {
	s := q.Get("sinceVersionId")
	if s == "" {
		return -1, true
	}
	n, err := strconv.ParseInt(strings.SplitN(s, "-", 2)[0], 16, 64)
	if err != nil || n < 0 || int(n) > v.version || vppVersionID(int(n)) != s {
		return 0, false
	}
	return int(n), true
}

func vppQueryBool(q url.Values, key string) (value, set bool) {
	s := q.Get(key)
	if s == "" {
		return false, false
	}
	b, _ := strconv.ParseBool(s)
	return b, true
}

func (v *VPP) getAssets(q url.Values) vppAnswer {
	type asset struct {
		AdamID             string   `json:"adamId"`
		AssignedCount      int      `json:"assignedCount"`
		AvailableCount     int      `json:"availableCount"`
		DeviceAssignable   bool     `json:"deviceAssignable"`
		PricingParam       string   `json:"pricingParam"`
		ProductType        string   `json:"productType"`
		RetiredCount       int      `json:"retiredCount"`
		Revocable          bool     `json:"revocable"`
		SupportedPlatforms []string `json:"supportedPlatforms,omitempty"`
		TotalCount         int      `json:"totalCount"`
	}
	var list []asset
	for _, a := range v.assets {
		da, daSet := vppQueryBool(q, "deviceAssignable")
		rv, rvSet := vppQueryBool(q, "revocable")
		switch {
		case q.Get("adamId") != "" && q.Get("adamId") != a.AdamID,
			q.Get("pricingParam") != "" && q.Get("pricingParam") != a.PricingParam,
			q.Get("productType") != "" && q.Get("productType") != a.ProductType,
			daSet && da == a.NotDeviceAssignable,
			rvSet && rv == a.Irrevocable:
			continue
		}
		list = append(list, asset{AdamID: a.AdamID, AssignedCount: len(a.holders), AvailableCount: a.available(),
			DeviceAssignable: !a.NotDeviceAssignable, PricingParam: a.PricingParam, ProductType: a.ProductType,
			Revocable: !a.Irrevocable, SupportedPlatforms: a.SupportedPlatforms, TotalCount: a.Total})
	}
	from, to, m, bad := v.page(q, len(list))
	if bad != nil {
		return *bad
	}
	m["assets"] = vppOrEmpty(list[from:to])
	return vppAnswer{status: http.StatusOK, body: m}
}

func vppOrEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (v *VPP) getAssignments(q url.Values) vppAnswer {
	type assignment struct {
		AdamID       string `json:"adamId"`
		ClientUserID string `json:"clientUserId,omitempty"`
		PricingParam string `json:"pricingParam"`
		SerialNumber string `json:"serialNumber,omitempty"`
	}
	since, ok := v.sinceVersion(q)
	if !ok {
		return vppErr(http.StatusBadRequest, 9721)
	}
	var list []assignment
	for _, a := range v.assets {
		if q.Get("adamId") != "" && q.Get("adamId") != a.AdamID || since >= a.ver {
			continue
		}
		for _, h := range a.holders {
			as := assignment{AdamID: a.AdamID, PricingParam: a.PricingParam}
			if h.device {
				as.SerialNumber = h.id
			} else {
				as.ClientUserID = h.id
			}
			if q.Get("clientUserId") != "" && q.Get("clientUserId") != as.ClientUserID ||
				q.Get("serialNumber") != "" && q.Get("serialNumber") != as.SerialNumber {
				continue
			}
			list = append(list, as)
		}
	}
	from, to, m, bad := v.page(q, len(list))
	if bad != nil {
		return *bad
	}
	m["assignments"] = vppOrEmpty(list[from:to])
	return vppAnswer{status: http.StatusOK, body: m}
}

func (v *VPP) getUsers(q url.Values) vppAnswer {
	type user struct {
		ClientUserID   string `json:"clientUserId"`
		Email          string `json:"email,omitempty"`
		IDHash         string `json:"idHash,omitempty"`
		InviteCode     string `json:"inviteCode,omitempty"`
		ManagedAppleID string `json:"managedAppleId,omitempty"`
		Status         string `json:"status"`
	}
	since, ok := v.sinceVersion(q)
	if !ok {
		return vppErr(http.StatusBadRequest, 9721)
	}
	activeOnly, _ := vppQueryBool(q, "activeOnly")
	retiredOnly, _ := vppQueryBool(q, "retiredOnly")
	var list []user
	for _, u := range v.users {
		retired := u.Status == "Retired"
		if q.Get("clientUserId") != "" && q.Get("clientUserId") != u.ClientUserID ||
			activeOnly && retired || retiredOnly && !retired || since >= u.ver {
			continue
		}
		list = append(list, user{ClientUserID: u.ClientUserID, Email: u.Email, IDHash: u.IDHash,
			InviteCode: u.InviteCode, ManagedAppleID: u.ManagedAppleID, Status: u.Status})
	}
	from, to, m, bad := v.page(q, len(list))
	if bad != nil {
		return *bad
	}
	m["users"] = vppOrEmpty(list[from:to])
	return vppAnswer{status: http.StatusOK, body: m}
}

func vppHolders(ids []string, device bool) []vppHolder {
	out := make([]vppHolder, len(ids))
	for i, id := range ids {
		out[i] = vppHolder{id: id, device: device}
	}
	return out
}

func vppDuplicates(s []string) bool {
	seen := make(map[string]bool, len(s))
	for _, x := range s {
		if seen[x] {
			return true
		}
		seen[x] = true
	}
	return false
}

// newEvent queues an event and answers with its EventResponse.
func (v *VPP) newEvent(typ string, requested int, apply func(ev *vppEvent)) vppAnswer {
	ev := &vppEvent{id: newUUID(), typ: typ, status: "PENDING", numRequested: requested, apply: apply}
	v.events[ev.id] = ev
	v.order = append(v.order, ev.id)
	return vppAnswer{status: http.StatusOK, body: v.stamp(map[string]any{"eventId": ev.id})}
}

// fail adds a failure to an event, grouping items by error number as
// Apple's StatusResponse does.
func (ev *vppEvent) fail(number int, asset *vppAssetState, clientUserID, serial string) {
	var f *vppErrorBody
	for i := range ev.failures {
		if ev.failures[i].ErrorNumber == number {
			f = &ev.failures[i]
		}
	}
	if f == nil {
		ev.failures = append(ev.failures, vppErrorBody{ErrorNumber: number, ErrorMessage: vppErrors[number], ErrorInfo: &vppErrorInfo{}})
		f = &ev.failures[len(ev.failures)-1]
	}
	if asset != nil {
		ref := vppAssetRef{AdamID: asset.AdamID, PricingParam: asset.PricingParam}
		if !slices.Contains(f.ErrorInfo.Assets, ref) {
			f.ErrorInfo.Assets = append(f.ErrorInfo.Assets, ref)
		}
	}
	if clientUserID != "" && !slices.Contains(f.ErrorInfo.ClientUserIDs, clientUserID) {
		f.ErrorInfo.ClientUserIDs = append(f.ErrorInfo.ClientUserIDs, clientUserID)
	}
	if serial != "" && !slices.Contains(f.ErrorInfo.SerialNumbers, serial) {
		f.ErrorInfo.SerialNumbers = append(f.ErrorInfo.SerialNumbers, serial)
	}
}

func (v *VPP) manageAssets(body []byte, associate bool) vppAnswer {
	var req struct {
		Assets        []vppAssetRef `json:"assets"`
		ClientUserIDs []string      `json:"clientUserIds"`
		SerialNumbers []string      `json:"serialNumbers"`
	}
	if json.Unmarshal(body, &req) != nil {
		return vppErr(http.StatusBadRequest, 9602)
	}
	var refs []string
	for _, a := range req.Assets {
		refs = append(refs, a.AdamID+"/"+a.PricingParam)
	}
	switch {
	case len(req.Assets) == 0:
		return vppErr(http.StatusBadRequest, 9718)
	case len(req.ClientUserIDs) == 0 && len(req.SerialNumbers) == 0:
		return vppErr(http.StatusBadRequest, 9719)
	case len(req.Assets) > v.limits["maxAssets"]:
		return vppErr(http.StatusBadRequest, 9700)
	case len(req.ClientUserIDs) > v.limits["maxClientUserIds"]:
		return vppErr(http.StatusBadRequest, 9701)
	case len(req.SerialNumbers) > v.limits["maxSerialNumbers"]:
		return vppErr(http.StatusBadRequest, 9702)
	case vppDuplicates(refs):
		return vppErr(http.StatusBadRequest, 9703)
	case vppDuplicates(req.ClientUserIDs):
		return vppErr(http.StatusBadRequest, 9704)
	case vppDuplicates(req.SerialNumbers):
		return vppErr(http.StatusBadRequest, 9705)
	}
	assets := make([]*vppAssetState, len(req.Assets))
	for i, ref := range req.Assets {
		if assets[i] = v.asset(ref.AdamID, ref.PricingParam); assets[i] == nil {
			return vppErr(http.StatusBadRequest, 9602)
		}
		if len(req.SerialNumbers) > 0 && assets[i].NotDeviceAssignable {
			return vppErr(http.StatusBadRequest, 9707)
		}
	}
	if associate && v.aaLimit > 0 && v.recent >= v.aaLimit {
		v.recent = 0
		return vppErr(http.StatusBadRequest, 9630)
	}
	requested := len(assets) * (len(req.ClientUserIDs) + len(req.SerialNumbers))
	if !associate {
		return v.newEvent("DISASSOCIATE", requested, func(ev *vppEvent) {
			for _, a := range assets {
				for _, h := range slices.Concat(vppHolders(req.ClientUserIDs, false), vppHolders(req.SerialNumbers, true)) {
					if i := a.index(h.id, h.device); i >= 0 {
						v.version++
						a.holders, a.ver = slices.Delete(a.holders, i, i+1), v.version
					}
					ev.numCompleted++
				}
			}
		})
	}
	return v.newEvent("ASSOCIATE", requested, func(ev *vppEvent) {
		for _, a := range assets {
			for _, id := range req.ClientUserIDs {
				u := v.activeUser(id)
				switch {
				case u == nil:
					ev.fail(9609, a, id, "")
				case a.index(id, false) >= 0:
					ev.numCompleted++ // holds it already: nothing to do
				case v.holdsThroughAccount(a, u.IDHash, id):
					ev.fail(9616, a, id, "")
					v.recent++
				case a.available() == 0:
					ev.fail(9709, a, id, "")
				default:
					v.version++
					a.holders, a.ver = append(a.holders, vppHolder{id: id}), v.version
					ev.numCompleted++
				}
			}
			for _, sn := range req.SerialNumbers {
				switch {
				case a.index(sn, true) >= 0:
					ev.numCompleted++
				case a.available() == 0:
					ev.fail(9709, a, "", sn)
				default:
					v.version++
					a.holders, a.ver = append(a.holders, vppHolder{id: sn, device: true}), v.version
					ev.numCompleted++
				}
			}
		}
	})
}

func (v *VPP) manageUsers(body []byte, op string) vppAnswer {
	var req struct {
		Users []struct {
			ClientUserID   string `json:"clientUserId"`
			Email          string `json:"email"`
			ManagedAppleID string `json:"managedAppleId"`
		} `json:"users"`
	}
	if json.Unmarshal(body, &req) != nil {
		return vppErr(http.StatusBadRequest, 9602)
	}
	ids := make([]string, len(req.Users))
	for i, u := range req.Users {
		ids[i] = u.ClientUserID
		switch {
		case u.ClientUserID == "":
			return vppErr(http.StatusBadRequest, 9602)
		case u.Email != "" && !strings.Contains(u.Email, "@"):
			return vppErr(http.StatusBadRequest, 9717)
		}
	}
	switch {
	case len(req.Users) == 0:
		return vppErr(http.StatusBadRequest, 9720)
	case len(req.Users) > v.limits["maxUsers"]:
		return vppErr(http.StatusBadRequest, 9714)
	case vppDuplicates(ids):
		return vppErr(http.StatusBadRequest, 9715)
	}
	users := req.Users
	return v.newEvent(strings.ToUpper(op), len(users), func(ev *vppEvent) {
		for _, ru := range users {
			u := v.activeUser(ru.ClientUserID)
			switch {
			case op == "create" && u != nil:
				ev.fail(9716, nil, ru.ClientUserID, "")
				continue
			case op == "create":
				v.version++
				code := make([]byte, 16)
				_, _ = rand.Read(code)
				v.users = append(v.users, &vppUserState{ver: v.version, VPPUser: VPPUser{
					ClientUserID: ru.ClientUserID, Email: ru.Email, ManagedAppleID: ru.ManagedAppleID,
					Status: "Registered", InviteCode: hex.EncodeToString(code)}})
			case u == nil:
				ev.fail(9609, nil, ru.ClientUserID, "")
				continue
			case op == "update":
				v.version++
				u.Email, u.ManagedAppleID, u.ver = ru.Email, ru.ManagedAppleID, v.version
			case op == "retire":
				v.version++
				u.Status, u.InviteCode, u.ver = "Retired", "", v.version
				// Retiring returns revocable licences; books stay.
				for _, a := range v.assets {
					if i := a.index(u.ClientUserID, false); i >= 0 && !a.Irrevocable {
						a.holders, a.ver = slices.Delete(a.holders, i, i+1), v.version
					}
				}
			}
			ev.numCompleted++
		}
	})
}

func (v *VPP) status(eventID string) vppAnswer {
	ev := v.events[eventID]
	if ev == nil {
		return vppErr(http.StatusBadRequest, 9708)
	}
	if ev.status == "PENDING" && v.eventPolls >= 0 {
		if ev.polls >= v.eventPolls {
			v.complete(ev)
		}
		ev.polls++
	}
	m := map[string]any{"eventStatus": ev.status, "eventType": ev.typ,
		"numCompleted": ev.numCompleted, "numRequested": ev.numRequested}
	if len(ev.failures) > 0 {
		m["failures"] = ev.failures
	}
	return vppAnswer{status: http.StatusOK, body: v.stamp(m)}
}

// serveInvitation stands in for Apple's invitation page: a person opens
// the invitation URL and signs in; here the Apple ID is a query parameter.
func (v *VPP) serveInvitation(w http.ResponseWriter, r *http.Request) {
	code, appleID := r.URL.Query().Get("inviteCode"), r.URL.Query().Get("appleId")
	v.mu.Lock()
	var u *vppUserState
	for _, x := range v.users {
		if x.Status == "Registered" && code != "" && x.InviteCode == code {
			u = x
		}
	}
	var err error
	switch {
	case u == nil:
		err = fmt.Errorf("no open invitation %q", code)
	case appleID == "":
		err = fmt.Errorf("sign in: add appleId=<Apple ID> to the URL")
	default:
		err = v.accept(u, appleID)
	}
	v.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintln(w, err)
		return
	}
	fmt.Fprintln(w, "Invitation accepted.")
}
