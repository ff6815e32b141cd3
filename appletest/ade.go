package appletest

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
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

// ADE service limits and answers, as Apple documents them
// (apple-protocols.md g.1, g.2).
const (
	adeDefaultLimit = 100
	adeMaxLimit     = 1000
	// adeCursorLifetime: a sync cursor older than seven days is
	// EXPIRED_CURSOR.
	adeCursorLifetime = 7 * 24 * time.Hour
	adeMaxBody        = 1 << 20
	adeContentType    = "application/json;charset=UTF8"
	adeSessionHeader  = "X-ADM-Auth-Session"
	adeTimeFormat     = "2006-01-02T15:04:05Z"
)

// ADEServerToken is the content of a server token (.p7m): the OAuth
// credentials of one MDM server in Apple Business Manager.
type ADEServerToken struct {
	ConsumerKey       string    `json:"consumer_key"`
	ConsumerSecret    string    `json:"consumer_secret"`
	AccessToken       string    `json:"access_token"`
	AccessSecret      string    `json:"access_secret"`
	AccessTokenExpiry time.Time `json:"access_token_expiry"`
}

// ADEDevice is a device assigned to the fake's MDM server, as the test
// sets it up. Empty OS, DeviceFamily and Model are filled in as an iPhone.
type ADEDevice struct {
	SerialNumber       string
	Model              string
	Description        string
	Color              string
	AssetTag           string
	OS                 string
	DeviceFamily       string
	DeviceAssignedBy   string
	DeviceAssignedDate time.Time
	// ProfileUUID, ProfileStatus and ProfileAssignTime change as
	// profiles are assigned and removed.
	ProfileUUID       string
	ProfileStatus     string
	ProfileAssignTime time.Time
}

// ADERequest is one request the fake got, and its status.
type ADERequest struct {
	Method string
	Path   string
	Query  url.Values
	Header http.Header
	Body   []byte
	Status int
}

type adeEntry struct {
	dev      ADEDevice
	addedSeq int // order of assignment, for fetch
	present  bool
}

type adeEvent struct {
	seq  int
	op   string // added, modified, deleted
	date time.Time
	dev  ADEDevice
}

type adeFailure struct {
	path       string // "" for any
	n          int
	status     int
	body       string
	retryAfter string
}

// ADE is a fake of Apple's device assignment service
// (mdmenrollment.apple.com) for one MDM server: the OAuth session, the
// device endpoints with their cursors and limits, profiles, and Apple's
// error answers. The test controls the devices assigned to it and injects
// failures.
type ADE struct {
	srv   *httptest.Server
	ca    *testCA
	roots *x509.CertPool

	mu           sync.Mutex
	now          func() time.Time
	defLimit     int
	maxLimit     int
	token        ADEServerToken
	serverUUID   string
	sessions     map[string]bool
	nonces       map[string]bool
	sessionCount int
	rotate       bool
	termsPending bool
	cursorEpoch  int
	seq          int
	addedSeq     int
	devices      map[string]*adeEntry
	events       []adeEvent
	profiles     map[string]map[string]any
	failures     []adeFailure
	echoes       int
	requests     []ADERequest
}

// ADEOption configures the fake ADE service.
type ADEOption func(*ADE)

// WithADEClock sets the fake's clock: cursor ages, token expiry, dates.
func WithADEClock(now func() time.Time) ADEOption { return func(a *ADE) { a.now = now } }

// WithADELimits sets the page size of fetch and sync when the request
// names none, and the most allowed (defaults 100 and 1000, as Apple
// documents; larger requests are cut to the maximum).
func WithADELimits(def, maximum int) ADEOption {
	return func(a *ADE) { a.defLimit, a.maxLimit = def, maximum }
}

// NewADE starts a fake ADE service that t closes at the end of the test;
// with a nil t the caller must Close it. It fails t (or panics without
// one) if it cannot start.
func NewADE(t TB, opts ...ADEOption) *ADE {
	if t != nil {
		t.Helper()
	}
	a, err := StartADE(opts...)
	if err != nil {
		if t == nil {
			panic(err)
		}
		t.Fatalf("starting fake ADE service: %v", err)
	}
	if t != nil {
		t.Cleanup(a.Close)
	}
	return a
}

// StartADE starts a fake ADE service on 127.0.0.1 with a server
// certificate for loopback only, issued by a CA of its own (RootCAs). Its
// server token (ServerToken) expires in a year.
func StartADE(opts ...ADEOption) (*ADE, error) {
	a := &ADE{
		now:      time.Now,
		defLimit: adeDefaultLimit,
		maxLimit: adeMaxLimit,
		sessions: make(map[string]bool),
		nonces:   make(map[string]bool),
		devices:  make(map[string]*adeEntry),
		profiles: make(map[string]map[string]any),
	}
	for _, o := range opts {
		o(a)
	}
	a.token = ADEServerToken{
		ConsumerKey:       "CK_" + adeRandomHex(32),
		ConsumerSecret:    "CS_" + adeRandomHex(20),
		AccessToken:       "AT_" + adeRandomHex(32),
		AccessSecret:      "AS_" + adeRandomHex(20),
		AccessTokenExpiry: a.now().Add(365 * 24 * time.Hour).UTC().Truncate(time.Second),
	}
	a.serverUUID = strings.ToUpper(adeRandomHex(16))
	ca, err := newTestCA("bramley appletest ADE CA")
	if err != nil {
		return nil, fmt.Errorf("creating ADE CA: %w", err)
	}
	a.ca = ca
	a.roots = x509.NewCertPool()
	a.roots.AddCert(ca.cert)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	cert, err := ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "mdmenrollment.apple.com (appletest)"},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(365 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		// Loopback only: whoever trusts the fake's CA trusts it for no
		// name that leaves the machine.
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:    []string{"localhost"},
	}, key.Public())
	if err != nil {
		return nil, fmt.Errorf("issuing ADE server certificate: %w", err)
	}
	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(a.serveHTTP))
	a.srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}},
		MinVersion:   tls.VersionTLS12,
	}
	a.srv.Config.ReadHeaderTimeout = 10 * time.Second
	a.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	a.srv.StartTLS()
	return a, nil
}

// URL is the fake's base URL, for ade.WithURL (--ade-url).
func (a *ADE) URL() string { return a.srv.URL }

// RootCAs returns a pool holding the fake's CA, for ade.WithRootCAs.
func (a *ADE) RootCAs() *x509.CertPool { return a.roots }

// CACertificatePEM returns the fake's CA certificate.
func (a *ADE) CACertificatePEM() []byte { return certPEM(a.ca.cert) }

// Close stops the server.
func (a *ADE) Close() { a.srv.Close() }

// ServerToken returns the OAuth credentials the fake accepts.
func (a *ADE) ServerToken() ADEServerToken {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.token
}

// ServerTokenP7M returns the server token as Apple Business Manager
// gives it to an MDM server whose certificate is cert: S/MIME, encrypted
// to cert, around a MIME text part with the JSON between BEGIN and END
// MESSAGE lines (g.1).
func (a *ADE) ServerTokenP7M(cert *x509.Certificate) ([]byte, error) {
	js, err := json.Marshal(a.ServerToken())
	if err != nil {
		return nil, err
	}
	inner := "Content-Type: text/plain;charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n" +
		"-----BEGIN MESSAGE-----\r\n" + string(js) + "\r\n-----END MESSAGE-----\r\n"
	return EncryptSMIME([]byte(inner), cert)
}

// Oids of CMS EnvelopedData (RFC 5652) with AES-256-CBC content and RSA
// key transport.
var (
	oidCMSData          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidCMSEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	oidRSAEncryption    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidAES256CBC        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
)

type cmsIssuerAndSerial struct {
	Issuer asn1.RawValue
	Serial *big.Int
}

type cmsRecipientInfo struct {
	Version      int
	Recipient    cmsIssuerAndSerial
	KeyAlgorithm pkix.AlgorithmIdentifier
	EncryptedKey []byte
}

type cmsEncryptedContentInfo struct {
	ContentType      asn1.ObjectIdentifier
	ContentAlgorithm pkix.AlgorithmIdentifier
	EncryptedContent asn1.RawValue
}

type cmsEnvelopedData struct {
	Version        int
	RecipientInfos []cmsRecipientInfo `asn1:"set"`
	Content        cmsEncryptedContentInfo
}

type cmsContentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue
}

// EncryptSMIME encrypts content to cert (RSA) as an S/MIME message, the
// form of Apple's server tokens: MIME headers, then the base64 of a CMS
// EnvelopedData (AES-256-CBC content key, wrapped with RSA PKCS #1 v1.5),
// as `openssl smime -encrypt -aes256` writes. Tests use it to make tokens
// of their own, broken ones included.
func EncryptSMIME(content []byte, cert *x509.Certificate) ([]byte, error) {
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("appletest: server tokens are encrypted to RSA certificates only")
	}
	key := make([]byte, 32)
	iv := make([]byte, aes.BlockSize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	pad := aes.BlockSize - len(content)%aes.BlockSize
	plain := append(slices.Clone(content), bytes.Repeat([]byte{byte(pad)}, pad)...)
	ciphertext := make([]byte, len(plain))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ciphertext, plain)
	wrapped, err := rsa.EncryptPKCS1v15(rand.Reader, pub, key)
	if err != nil {
		return nil, err
	}
	ivParam, err := asn1.Marshal(iv)
	if err != nil {
		return nil, err
	}
	env, err := asn1.Marshal(cmsEnvelopedData{
		RecipientInfos: []cmsRecipientInfo{{
			Recipient:    cmsIssuerAndSerial{Issuer: asn1.RawValue{FullBytes: cert.RawIssuer}, Serial: cert.SerialNumber},
			KeyAlgorithm: pkix.AlgorithmIdentifier{Algorithm: oidRSAEncryption, Parameters: asn1.NullRawValue},
			EncryptedKey: wrapped,
		}},
		Content: cmsEncryptedContentInfo{
			ContentType:      oidCMSData,
			ContentAlgorithm: pkix.AlgorithmIdentifier{Algorithm: oidAES256CBC, Parameters: asn1.RawValue{FullBytes: ivParam}},
			// [0] IMPLICIT OCTET STRING
			EncryptedContent: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, Bytes: ciphertext},
		},
	})
	if err != nil {
		return nil, err
	}
	der, err := asn1.Marshal(cmsContentInfo{
		ContentType: oidCMSEnvelopedData,
		Content:     asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: env},
	})
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString("MIME-Version: 1.0\n")
	b.WriteString("Content-Disposition: attachment; filename=\"smime.p7m\"\n")
	b.WriteString("Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=\"smime.p7m\"\n")
	b.WriteString("Content-Transfer-Encoding: base64\n\n")
	enc := base64.StdEncoding.EncodeToString(der)
	for len(enc) > 64 {
		b.WriteString(enc[:64] + "\n")
		enc = enc[64:]
	}
	b.WriteString(enc + "\n\n")
	return b.Bytes(), nil
}

// AddDevices assigns devices to the fake's MDM server, as an
// administrator does in Apple Business Manager: fetch lists them, and
// sync reports them "added". A device assigned before is assigned again.
func (a *ADE) AddDevices(devices ...ADEDevice) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, d := range devices {
		if d.Model == "" {
			d.Model = "iPhone 15"
		}
		if d.OS == "" {
			d.OS = "iOS"
		}
		if d.DeviceFamily == "" {
			d.DeviceFamily = "iPhone"
		}
		if d.ProfileStatus == "" {
			d.ProfileStatus = "empty"
		}
		if d.DeviceAssignedBy == "" {
			d.DeviceAssignedBy = "admin@example.com"
		}
		if d.DeviceAssignedDate.IsZero() {
			d.DeviceAssignedDate = a.now().UTC()
		}
		a.addedSeq++
		a.devices[d.SerialNumber] = &adeEntry{dev: d, addedSeq: a.addedSeq, present: true}
		a.record("added", d)
	}
}

// ModifyDevice changes a device's record; sync reports it "modified". It
// reports false for a device not assigned.
func (a *ADE) ModifyDevice(serial string, change func(*ADEDevice)) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.devices[serial]
	if !ok || !e.present {
		return false
	}
	change(&e.dev)
	e.dev.SerialNumber = serial
	a.record("modified", e.dev)
	return true
}

// RemoveDevice unassigns a device from the fake's MDM server; sync
// reports it "deleted". It reports false for a device not assigned.
func (a *ADE) RemoveDevice(serial string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.removeLocked(serial)
}

func (a *ADE) removeLocked(serial string) bool {
	e, ok := a.devices[serial]
	if !ok || !e.present {
		return false
	}
	e.present = false
	a.record("deleted", e.dev)
	return true
}

func (a *ADE) record(op string, d ADEDevice) {
	a.seq++
	a.events = append(a.events, adeEvent{seq: a.seq, op: op, date: a.now().UTC(), dev: d})
}

// Devices returns the devices assigned now, in the order they were.
func (a *ADE) Devices() []ADEDevice {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []ADEDevice
	for _, e := range a.presentLocked() {
		out = append(out, e.dev)
	}
	return out
}

func (a *ADE) presentLocked() []*adeEntry {
	var out []*adeEntry
	for _, e := range a.devices {
		if e.present {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(x, y *adeEntry) int { return x.addedSeq - y.addedSeq })
	return out
}

// Assignments returns the profile UUID assigned to each device that has
// one.
func (a *ADE) Assignments() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]string)
	for serial, e := range a.devices {
		if e.present && e.dev.ProfileUUID != "" {
			out[serial] = e.dev.ProfileUUID
		}
	}
	return out
}

// Profile returns the profile defined as uuid, as the fake stored it.
func (a *ADE) Profile(uuid string) (map[string]any, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.profiles[uuid]
	return p, ok
}

// ProfileUUIDs returns the UUIDs of the profiles defined, sorted.
func (a *ADE) ProfileUUIDs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, len(a.profiles))
	for u := range a.profiles {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// ExpireSessions ends every session: the next call with one gets 401
// UNAUTHORIZED, as when Apple's session times out.
func (a *ADE) ExpireSessions() {
	a.mu.Lock()
	defer a.mu.Unlock()
	clear(a.sessions)
}

// RotateSessions makes every answer carry a new X-ADM-Auth-Session and
// end the session the request used, so that a client not following the
// header gets 401s.
func (a *ADE) RotateSessions(on bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rotate = on
}

// SessionsOpened counts the successful GET /session calls.
func (a *ADE) SessionsOpened() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sessionCount
}

// ExpireCursors makes every cursor handed out so far expired.
func (a *ADE) ExpireCursors() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cursorEpoch++
}

// RequireTerms makes every call answer 403 T_C_NOT_SIGNED, as Apple does
// until an administrator accepts new terms in Apple Business Manager.
func (a *ADE) RequireTerms(on bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.termsPending = on
}

// FailNext makes the next n requests to path ("" for any) answer status
// with body (an Apple code such as "INVALID_CURSOR", or any text).
func (a *ADE) FailNext(path string, n, status int, body string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failures = append(a.failures, adeFailure{path: path, n: n, status: status, body: body})
}

// ThrottleNext makes the next n requests to path ("" for any) answer 429
// with Retry-After in whole seconds.
func (a *ADE) ThrottleNext(path string, n int, retryAfter time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failures = append(a.failures, adeFailure{
		path: path, n: n, status: http.StatusTooManyRequests, body: "TOO_MANY_REQUESTS",
		retryAfter: strconv.Itoa(int(retryAfter / time.Second)),
	})
}

// EchoCursor makes the next n fetch or sync answers hand back the cursor
// of the request, with more_to_follow and no devices: the loop a client
// must guard against.
func (a *ADE) EchoCursor(n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.echoes = n
}

// Requests returns the requests received so far.
func (a *ADE) Requests() []ADERequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.requests)
}

// adeAnswer is what a handler answers.
type adeAnswer struct {
	status int
	body   any // JSON; a string is written as plain text (Apple's codes)
	header http.Header
}

func adeError(status int, code string) adeAnswer { return adeAnswer{status: status, body: code} }

func adeJSON(v any) adeAnswer { return adeAnswer{status: http.StatusOK, body: v} }

func (a *ADE) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, adeMaxBody))
	req := ADERequest{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Header: r.Header.Clone(), Body: body}
	var ans adeAnswer
	if err != nil {
		ans = adeError(http.StatusBadRequest, "MALFORMED_REQUEST_BODY")
	} else {
		ans = a.answer(r, body)
	}
	req.Status = ans.status
	a.mu.Lock()
	a.requests = append(a.requests, req)
	a.mu.Unlock()

	for k, v := range ans.header {
		w.Header()[k] = v
	}
	if s, ok := ans.body.(string); ok {
		w.Header().Set("Content-Type", "text/plain;charset=UTF8")
		w.WriteHeader(ans.status)
		_, _ = io.WriteString(w, s)
		return
	}
	w.Header().Set("Content-Type", adeContentType)
	w.WriteHeader(ans.status)
	_ = json.NewEncoder(w).Encode(ans.body)
}

func (a *ADE) answer(r *http.Request, body []byte) adeAnswer {
	if f, ok := a.takeFailure(r.URL.Path); ok {
		ans := adeError(f.status, f.body)
		if f.retryAfter != "" {
			ans.header = http.Header{"Retry-After": {f.retryAfter}}
		}
		return ans
	}
	if r.URL.Path == "/session" {
		if r.Method != http.MethodGet {
			return adeError(http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED")
		}
		return a.session(r)
	}

	a.mu.Lock()
	sent := r.Header.Get(adeSessionHeader)
	valid := sent != "" && a.sessions[sent]
	terms := a.termsPending
	a.mu.Unlock()
	if !valid {
		return adeAnswer{
			status: http.StatusUnauthorized, body: "UNAUTHORIZED",
			header: http.Header{"Www-Authenticate": {"ADM-Auth-Token"}},
		}
	}
	if terms {
		return adeError(http.StatusForbidden, "T_C_NOT_SIGNED")
	}
	ans := a.route(r, body)
	a.mu.Lock()
	if a.rotate {
		// Apple may renew the session in any answer; here the old one
		// stops working at once.
		delete(a.sessions, sent)
		next := "appletest-session-" + adeRandomHex(16)
		a.sessions[next] = true
		if ans.header == nil {
			ans.header = http.Header{}
		}
		ans.header.Set(adeSessionHeader, next)
	}
	a.mu.Unlock()
	return ans
}

func (a *ADE) takeFailure(path string) (adeFailure, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range a.failures {
		f := &a.failures[i]
		if f.n > 0 && (f.path == "" || f.path == path) {
			f.n--
			return *f, true
		}
	}
	return adeFailure{}, false
}

func (a *ADE) route(r *http.Request, body []byte) adeAnswer {
	method := func(allowed ...string) bool { return slices.Contains(allowed, r.Method) }
	switch r.URL.Path {
	case "/account":
		if !method(http.MethodGet) {
			break
		}
		return adeJSON(a.account())
	case "/server/devices":
		if !method(http.MethodPost) {
			break
		}
		return a.fetch(body)
	case "/devices/sync":
		if !method(http.MethodPost) {
			break
		}
		return a.sync(body)
	case "/devices":
		if !method(http.MethodPost) {
			break
		}
		return a.details(body)
	case "/devices/disown":
		if !method(http.MethodPost) {
			break
		}
		return a.disown(body)
	case "/profile":
		switch r.Method {
		case http.MethodPost:
			return a.defineProfile(body)
		case http.MethodGet:
			return a.getProfile(r.URL.Query().Get("profile_uuid"))
		}
	case "/profile/devices":
		switch r.Method {
		case http.MethodPost, http.MethodPut: // both listed by /account
			return a.assign(body)
		case http.MethodDelete:
			return a.unassign(body)
		}
	default:
		return adeError(http.StatusNotFound, "NOT_FOUND")
	}
	return adeError(http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED")
}

// session checks an OAuth 1.0a request (RFC 5849, HMAC-SHA1, realm "ADM")
// as Apple does (g.1.6): 400 for missing, duplicated or unsupported
// parameters, 401 for unknown credentials, a bad signature, a reused
// nonce or an expired token.
func (a *ADE) session(r *http.Request) adeAnswer {
	params, err := adeParseOAuthHeader(r.Header.Get("Authorization"))
	if err != nil {
		return adeError(http.StatusBadRequest, "BAD_REQUEST")
	}
	for _, k := range []string{"realm", "oauth_consumer_key", "oauth_token", "oauth_signature_method", "oauth_signature", "oauth_timestamp", "oauth_nonce"} {
		if _, ok := params[k]; !ok {
			return adeError(http.StatusBadRequest, "BAD_REQUEST")
		}
	}
	if params["realm"] != "ADM" || params["oauth_signature_method"] != "HMAC-SHA1" {
		return adeError(http.StatusBadRequest, "BAD_REQUEST")
	}
	if v, ok := params["oauth_version"]; ok && v != "1.0" {
		return adeError(http.StatusBadRequest, "BAD_REQUEST")
	}
	if _, err := strconv.ParseInt(params["oauth_timestamp"], 10, 64); err != nil {
		return adeError(http.StatusBadRequest, "BAD_REQUEST")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	tok := a.token
	if params["oauth_consumer_key"] != tok.ConsumerKey || params["oauth_token"] != tok.AccessToken {
		return adeError(http.StatusUnauthorized, "UNAUTHORIZED")
	}
	u := &url.URL{Scheme: "https", Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	want := adeOAuthSignature(r.Method, u, params, tok.ConsumerSecret, tok.AccessSecret)
	if !hmac.Equal([]byte(want), []byte(params["oauth_signature"])) {
		return adeError(http.StatusUnauthorized, "UNAUTHORIZED")
	}
	nonce := params["oauth_timestamp"] + "/" + params["oauth_nonce"]
	if a.nonces[nonce] {
		return adeError(http.StatusUnauthorized, "UNAUTHORIZED")
	}
	a.nonces[nonce] = true
	if !a.now().Before(tok.AccessTokenExpiry) {
		return adeError(http.StatusUnauthorized, "UNAUTHORIZED")
	}
	if a.termsPending {
		return adeError(http.StatusForbidden, "T_C_NOT_SIGNED")
	}
	s := "appletest-session-" + adeRandomHex(16)
	a.sessions[s] = true
	a.sessionCount++
	return adeJSON(map[string]string{"auth_session_token": s})
}

// adeParseOAuthHeader reads `OAuth realm="ADM", name="value", ...`, values
// percent-decoded; a parameter given twice is an error.
func adeParseOAuthHeader(h string) (map[string]string, error) {
	rest, ok := strings.CutPrefix(h, "OAuth ")
	if !ok {
		return nil, errors.New("not OAuth")
	}
	params := make(map[string]string)
	for part := range strings.SplitSeq(rest, ",") {
		name, quoted, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || len(quoted) < 2 || quoted[0] != '"' || quoted[len(quoted)-1] != '"' {
			return nil, fmt.Errorf("bad parameter %q", part)
		}
		value, err := url.PathUnescape(quoted[1 : len(quoted)-1])
		if err != nil {
			return nil, err
		}
		if _, dup := params[name]; dup {
			return nil, fmt.Errorf("duplicate %s", name)
		}
		params[name] = value
	}
	return params, nil
}

// adeOAuthSignature recomputes an HMAC-SHA1 signature (RFC 5849 3.4),
// written apart from the client's so that the two check each other.
func adeOAuthSignature(method string, u *url.URL, params map[string]string, consumerSecret, tokenSecret string) string {
	enc := func(s string) string {
		var b strings.Builder
		for _, c := range []byte(s) {
			if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
				b.WriteByte(c)
			} else {
				fmt.Fprintf(&b, "%%%02X", c)
			}
		}
		return b.String()
	}
	var pairs [][2]string
	for k, vs := range u.Query() {
		for _, v := range vs {
			pairs = append(pairs, [2]string{enc(k), enc(v)})
		}
	}
	for k, v := range params {
		if k != "realm" && k != "oauth_signature" {
			pairs = append(pairs, [2]string{enc(k), enc(v)})
		}
	}
	slices.SortFunc(pairs, func(x, y [2]string) int {
		if c := strings.Compare(x[0], y[0]); c != 0 {
			return c
		}
		return strings.Compare(x[1], y[1])
	})
	joined := make([]string, len(pairs))
	for i, p := range pairs {
		joined[i] = p[0] + "=" + p[1]
	}
	host := strings.ToLower(u.Host)
	host = strings.TrimSuffix(host, ":443")
	base := strings.ToUpper(method) + "&" + enc("https://"+host+u.EscapedPath()) + "&" + enc(strings.Join(joined, "&"))
	mac := hmac.New(sha1.New, []byte(enc(consumerSecret)+"&"+enc(tokenSecret)))
	mac.Write([]byte(base))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

func (a *ADE) account() map[string]any {
	limit := map[string]int{"default": a.defLimit, "maximum": a.maxLimit}
	return map[string]any{
		"server_name":    "bramley appletest",
		"server_uuid":    a.serverUUID,
		"admin_id":       "admin@example.com",
		"facilitator_id": "admin@example.com",
		"org_name":       "Example Org",
		"org_email":      "admin@example.com",
		"org_phone":      "+1 555 0100",
		"org_address":    "1 Infinite Loop, Cupertino",
		"org_id":         "1234567",
		"org_id_hash":    adeRandomHex(32),
		"org_type":       "org",
		"org_version":    "v2",
		"urls": []map[string]any{
			{"uri": "/session", "http_method": []string{"GET"}},
			{"uri": "/account", "http_method": []string{"GET"}},
			{"uri": "/server/devices", "http_method": []string{"POST"}, "limit": limit},
			{"uri": "/devices/sync", "http_method": []string{"POST"}, "limit": limit},
			{"uri": "/devices", "http_method": []string{"POST"}},
			{"uri": "/devices/disown", "http_method": []string{"POST"}},
			{"uri": "/profile", "http_method": []string{"POST", "GET"}},
			{"uri": "/profile/devices", "http_method": []string{"DELETE", "POST", "PUT"}},
		},
	}
}

// An adeCursor is opaque to clients: base64 of
// kind:epoch:issued:from:after:done. A fetch cursor (kind f) pages
// through the devices assigned (after = the last one's assignment order)
// and remembers the event where its fetch began (from), where sync takes
// over; done marks the last page. A sync cursor (kind s) is the last
// event returned.
type adeCursor struct {
	kind   string
	epoch  int
	issued int64
	from   int
	after  int
	done   bool
}

func (c adeCursor) String() string {
	s := fmt.Sprintf("%s:%d:%d:%d:%d:%t", c.kind, c.epoch, c.issued, c.from, c.after, c.done)
	return base64.RawStdEncoding.EncodeToString([]byte(s))
}

func parseADECursor(s string) (adeCursor, bool) {
	raw, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		return adeCursor{}, false
	}
	var c adeCursor
	var done string
	parts := strings.Split(string(raw), ":")
	if len(parts) != 6 || (parts[0] != "f" && parts[0] != "s") {
		return adeCursor{}, false
	}
	c.kind, done = parts[0], parts[5]
	ints := []*int{&c.epoch, nil, &c.from, &c.after}
	for i, p := range ints {
		n, err := strconv.ParseInt(parts[i+1], 10, 64)
		if err != nil {
			return adeCursor{}, false
		}
		if p == nil {
			c.issued = n
		} else {
			*p = int(n)
		}
	}
	c.done = done == "true"
	return c, true
}

func (a *ADE) expiredLocked(c adeCursor) bool {
	return c.epoch < a.cursorEpoch || a.now().Sub(time.Unix(c.issued, 0)) > adeCursorLifetime
}

func (a *ADE) limitLocked(n int) int {
	switch {
	case n <= 0:
		return a.defLimit
	case n > a.maxLimit:
		return a.maxLimit
	}
	return n
}

type adeCursorRequest struct {
	Cursor *string `json:"cursor"`
	Limit  int     `json:"limit"`
}

func (a *ADE) fetch(body []byte) adeAnswer {
	var req adeCursorRequest
	if len(body) > 0 && json.Unmarshal(body, &req) != nil {
		return adeError(http.StatusBadRequest, "MALFORMED_REQUEST_BODY")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := adeCursor{kind: "f", from: a.seq}
	if req.Cursor != nil && *req.Cursor != "" {
		c, ok := parseADECursor(*req.Cursor)
		switch {
		case !ok:
			return adeError(http.StatusBadRequest, "INVALID_CURSOR")
		case c.kind == "s" || c.done:
			// Everything was returned before: only fetch says so.
			return adeError(http.StatusBadRequest, "EXHAUSTED_CURSOR")
		case a.expiredLocked(c):
			return adeError(http.StatusBadRequest, "EXPIRED_CURSOR")
		}
		cur = c
		if a.echoes > 0 {
			a.echoes--
			return adeJSON(a.page(nil, *req.Cursor, true))
		}
	}
	var devices []map[string]any
	var last int
	more := false
	limit := a.limitLocked(req.Limit)
	for _, e := range a.presentLocked() {
		if e.addedSeq <= cur.after {
			continue
		}
		if len(devices) == limit {
			more = true
			break
		}
		devices = append(devices, adeDeviceJSON(e.dev))
		last = e.addedSeq
	}
	if last > 0 {
		cur.after = last
	}
	cur.done = !more
	cur.epoch, cur.issued = a.cursorEpoch, a.now().Unix()
	return adeJSON(a.page(devices, cur.String(), more))
}

func (a *ADE) sync(body []byte) adeAnswer {
	var req adeCursorRequest
	if json.Unmarshal(body, &req) != nil {
		return adeError(http.StatusBadRequest, "MALFORMED_REQUEST_BODY")
	}
	if req.Cursor == nil || *req.Cursor == "" {
		return adeError(http.StatusBadRequest, "CURSOR_REQUIRED")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := parseADECursor(*req.Cursor)
	if !ok {
		return adeError(http.StatusBadRequest, "INVALID_CURSOR")
	}
	if a.expiredLocked(c) {
		return adeError(http.StatusBadRequest, "EXPIRED_CURSOR")
	}
	if a.echoes > 0 {
		a.echoes--
		return adeJSON(a.page(nil, *req.Cursor, true))
	}
	from := c.from
	if c.kind == "s" {
		from = c.after
	}
	limit := a.limitLocked(req.Limit)
	var devices []map[string]any
	last, more := from, false
	for _, ev := range a.events {
		if ev.seq <= from {
			continue
		}
		if len(devices) == limit {
			more = true
			break
		}
		d := adeDeviceJSON(ev.dev)
		d["op_type"] = ev.op
		d["op_date"] = ev.date.Format(adeTimeFormat)
		devices = append(devices, d)
		last = ev.seq
	}
	next := adeCursor{kind: "s", epoch: a.cursorEpoch, issued: a.now().Unix(), after: last}
	return adeJSON(a.page(devices, next.String(), more))
}

func (a *ADE) page(devices []map[string]any, cursor string, more bool) map[string]any {
	if devices == nil {
		devices = []map[string]any{}
	}
	return map[string]any{
		"devices":        devices,
		"cursor":         cursor,
		"fetched_until":  a.now().UTC().Format(adeTimeFormat),
		"more_to_follow": more,
	}
}

func adeDeviceJSON(d ADEDevice) map[string]any {
	m := map[string]any{
		"serial_number":        d.SerialNumber,
		"model":                d.Model,
		"description":          d.Description,
		"color":                d.Color,
		"os":                   d.OS,
		"device_family":        d.DeviceFamily,
		"profile_status":       d.ProfileStatus,
		"device_assigned_by":   d.DeviceAssignedBy,
		"device_assigned_date": d.DeviceAssignedDate.UTC().Format(adeTimeFormat),
	}
	if d.AssetTag != "" {
		m["asset_tag"] = d.AssetTag
	}
	if d.ProfileUUID != "" {
		m["profile_uuid"] = d.ProfileUUID
		m["profile_assign_time"] = d.ProfileAssignTime.UTC().Format(adeTimeFormat)
	}
	return m
}

type adeDevicesRequest struct {
	ProfileUUID string   `json:"profile_uuid"`
	Devices     []string `json:"devices"`
}

func parseDevicesRequest(body []byte) (adeDevicesRequest, *adeAnswer) {
	var req adeDevicesRequest
	if json.Unmarshal(body, &req) != nil {
		ans := adeError(http.StatusBadRequest, "MALFORMED_REQUEST_BODY")
		return req, &ans
	}
	return req, nil
}

func (a *ADE) details(body []byte) adeAnswer {
	req, bad := parseDevicesRequest(body)
	if bad != nil {
		return *bad
	}
	if len(req.Devices) == 0 {
		return adeError(http.StatusBadRequest, "DEVICE_ID_REQUIRED")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]any)
	for _, s := range req.Devices {
		e, ok := a.devices[s]
		if !ok || !e.present {
			out[s] = map[string]any{"serial_number": s, "response_status": "NOT_FOUND"}
			continue
		}
		d := adeDeviceJSON(e.dev)
		d["response_status"] = "SUCCESS"
		out[s] = d
	}
	return adeJSON(map[string]any{"devices": out})
}

func (a *ADE) disown(body []byte) adeAnswer {
	req, bad := parseDevicesRequest(body)
	if bad != nil {
		return *bad
	}
	if len(req.Devices) == 0 {
		return adeError(http.StatusBadRequest, "DEVICE_ID_REQUIRED")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]string)
	for _, s := range req.Devices {
		if a.removeLocked(s) {
			out[s] = "SUCCESS"
		} else {
			out[s] = "NOT_ACCESSIBLE"
		}
	}
	return adeJSON(map[string]any{"devices": out})
}

// defineProfile makes Apple's checks of a profile definition (g.3).
func (a *ADE) defineProfile(body []byte) adeAnswer {
	var p map[string]any
	if json.Unmarshal(body, &p) != nil || p == nil {
		return adeError(http.StatusBadRequest, "MALFORMED_REQUEST_BODY")
	}
	name, _ := p["profile_name"].(string)
	rawURL, _ := p["url"].(string)
	switch {
	case name == "":
		return adeError(http.StatusBadRequest, "CONFIG_NAME_REQUIRED")
	case len([]rune(name)) > 125:
		return adeError(http.StatusBadRequest, "CONFIG_NAME_INVALID")
	case rawURL == "":
		return adeError(http.StatusBadRequest, "CONFIG_URL_REQUIRED")
	}
	if u, err := url.Parse(rawURL); err != nil || u.Scheme != "https" || u.Host == "" || len(rawURL) > 2000 {
		return adeError(http.StatusBadRequest, "CONFIG_URL_INVALID")
	}
	removable, ok := p["is_mdm_removable"].(bool)
	supervised, _ := p["is_supervised"].(bool)
	if ok && !removable && !supervised {
		return adeError(http.StatusBadRequest, "FLAGS_INVALID")
	}
	var serials []string
	if ds, ok := p["devices"].([]any); ok {
		for _, d := range ds {
			if s, ok := d.(string); ok {
				serials = append(serials, s)
			}
		}
	}
	delete(p, "devices")
	uuid := strings.ToUpper(adeRandomHex(16))
	p["profile_uuid"] = uuid
	a.mu.Lock()
	defer a.mu.Unlock()
	a.profiles[uuid] = p
	ans := map[string]any{"profile_uuid": uuid}
	if len(serials) > 0 {
		ans["devices"] = a.assignLocked(uuid, serials)
	}
	return adeJSON(ans)
}

func (a *ADE) getProfile(uuid string) adeAnswer {
	if uuid == "" {
		return adeError(http.StatusBadRequest, "PROFILE_UUID_REQUIRED")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.profiles[uuid]
	if !ok {
		return adeError(http.StatusNotFound, "NOT_FOUND")
	}
	return adeJSON(p)
}

func (a *ADE) assign(body []byte) adeAnswer {
	req, bad := parseDevicesRequest(body)
	if bad != nil {
		return *bad
	}
	switch {
	case req.ProfileUUID == "":
		return adeError(http.StatusBadRequest, "PROFILE_UUID_REQUIRED")
	case len(req.Devices) == 0:
		return adeError(http.StatusBadRequest, "DEVICE_ID_REQUIRED")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.profiles[req.ProfileUUID]; !ok {
		return adeError(http.StatusNotFound, "NOT_FOUND")
	}
	return adeJSON(map[string]any{"profile_uuid": req.ProfileUUID, "devices": a.assignLocked(req.ProfileUUID, req.Devices)})
}

func (a *ADE) assignLocked(uuid string, serials []string) map[string]string {
	out := make(map[string]string)
	for _, s := range serials {
		e, ok := a.devices[s]
		if !ok || !e.present {
			out[s] = "NOT_ACCESSIBLE"
			continue
		}
		e.dev.ProfileUUID, e.dev.ProfileStatus, e.dev.ProfileAssignTime = uuid, "assigned", a.now().UTC()
		a.record("modified", e.dev)
		out[s] = "SUCCESS"
	}
	return out
}

func (a *ADE) unassign(body []byte) adeAnswer {
	req, bad := parseDevicesRequest(body)
	if bad != nil {
		return *bad
	}
	if len(req.Devices) == 0 {
		return adeError(http.StatusBadRequest, "DEVICE_ID_REQUIRED")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]string)
	for _, s := range req.Devices {
		e, ok := a.devices[s]
		if !ok || !e.present {
			out[s] = "NOT_ACCESSIBLE"
			continue
		}
		e.dev.ProfileUUID, e.dev.ProfileStatus, e.dev.ProfileAssignTime = "", "removed", time.Time{}
		a.record("modified", e.dev)
		out[s] = "SUCCESS"
	}
	return adeJSON(map[string]any{"devices": out})
}

func adeRandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
