// Package webui serves bramley's server-rendered pages. The enrollment
// portal at /portal/: a person signs in (local account or directory) and
// downloads the signed Profile Service payload that starts over-the-air
// enrollment, the same payload GET /ota/profile-service gives scripted
// clients after HTTP Basic.
//
// Security: pages carry a CSP without scripts, X-Frame-Options DENY,
// Referrer-Policy no-referrer and nosniff. Forms are protected by a signed
// double-submit token: a random nonce in a SameSite=Strict cookie and, in
// the form, its HMAC under a server key, so a cookie planted by a sibling
// domain is useless without the key. The session is a SameSite=Strict,
// HttpOnly cookie carrying the username and an expiry, HMAC-signed with the
// same key, so replicas sharing the key need no session table. Failed
// sign-ins are rate-limited per client IP and per username, as /enroll's.
package webui

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/profile"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// ProfileServices builds the signed Profile Service payload for a person
// who has signed in; each call starts a new one-time enrollment.
type ProfileServices interface {
	ProfileService(ctx context.Context, username string) ([]byte, error)
}

// Portal is the enrollment portal.
type Portal struct {
	users    enroll.Authenticator
	payloads ProfileServices
	key      []byte
	limiter  *enroll.SignInLimiter
	logger   *slog.Logger
	now      func() time.Time
	secure   bool
	org      string
	maxBody  int64
	pages    *template.Template
	session  time.Duration
}

// Option configures a Portal.
type Option func(*Portal)

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(p *Portal) { p.logger = l } }

// WithClock sets the clock.
func WithClock(now func() time.Time) Option { return func(p *Portal) { p.now = now } }

// WithSecureCookies marks cookies Secure and gives them the __Host- prefix
// (RFC 6265bis): on whenever people reach bramley over HTTPS, including
// behind a TLS-terminating proxy.
func WithSecureCookies(on bool) Option { return func(p *Portal) { p.secure = on } }

// WithOrganization names the organisation on the pages.
func WithOrganization(name string) Option {
	return func(p *Portal) {
		if name != "" {
			p.org = name
		}
	}
}

// WithMaxBody caps sign-in form bodies (default 16 KiB).
func WithMaxBody(n int64) Option { return func(p *Portal) { p.maxBody = n } }

// minKey is the shortest cookie-signing key accepted.
const minKey = 32

// New returns the portal: users signs people in, payloads builds what they
// download, and key (at least 32 random bytes, the same on every replica)
// signs cookies.
func New(users enroll.Authenticator, payloads ProfileServices, key []byte, opts ...Option) (*Portal, error) {
	if len(key) < minKey {
		return nil, fmt.Errorf("portal cookie key: %d bytes, want at least %d", len(key), minKey)
	}
	pages, err := template.ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("parsing portal templates: %w", err)
	}
	p := &Portal{
		users: users, payloads: payloads, key: key, limiter: enroll.NewSignInLimiter(),
		logger: slog.New(slog.DiscardHandler), now: time.Now, org: "bramley", maxBody: 16 << 10,
		pages: pages, session: 15 * time.Minute,
	}
	for _, o := range opts {
		o(p)
	}
	return p, nil
}

// Handler serves everything under /portal/.
func (p *Portal) Handler() http.Handler {
	mux := http.NewServeMux()
	adapt := func(f handler.Func) http.Handler { return handler.Adapt(p.logger, p.writeError, f) }
	mux.Handle("GET /portal/{$}", adapt(p.home))
	mux.Handle("POST /portal/sign-in", adapt(p.signIn))
	mux.Handle("POST /portal/sign-out", adapt(p.signOut))
	mux.Handle("GET /portal/profile-service", adapt(p.download))
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /portal/static/", http.StripPrefix("/portal/static/", http.FileServerFS(static)))
	mux.Handle("/portal/", adapt(func(http.ResponseWriter, *http.Request) error {
		return handler.Errorf(http.StatusNotFound, "There is no such page.")
	}))
	return securityHeaders(mux)
}

// securityHeaders go on every portal response, errors and assets included.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, "/portal/static/") {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

// view is what the templates see.
type view struct {
	Title, Organization string
	CSRF                string
	Username            string
	Error               string
}

func (p *Portal) render(w http.ResponseWriter, status int, name string, v view) error {
	v.Organization = p.org
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := p.pages.ExecuteTemplate(w, name, v); err != nil {
		p.logger.Error("rendering portal page", "page", name, "err", err)
	}
	return nil
}

// writeError answers an error with a page saying what went wrong.
func (p *Portal) writeError(w http.ResponseWriter, _ *http.Request, status int, message string) {
	title := "Something went wrong"
	switch status {
	case http.StatusForbidden:
		title = "Request refused"
	case http.StatusTooManyRequests:
		title = "Too many attempts"
	case http.StatusNotFound:
		title = "Not found"
	}
	if status >= 500 && message == "internal error" {
		message = "bramley could not finish this request. Try again in a moment."
	}
	_ = p.render(w, status, "message.html", view{Title: title, Error: message})
}

func (p *Portal) home(w http.ResponseWriter, r *http.Request) error {
	csrf := p.csrfToken(w, r)
	if user, ok := p.sessionUser(r); ok {
		return p.render(w, http.StatusOK, "download.html", view{Title: "Download", CSRF: csrf, Username: user})
	}
	return p.render(w, http.StatusOK, "signin.html", view{Title: "Sign in", CSRF: csrf})
}

// errCSRF refuses a form without a valid token.
var errCSRF = handler.Errorf(http.StatusForbidden,
	"This form has expired or did not come from this site. Go back, reload the page and try again.")

func (p *Portal) signIn(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, p.maxBody)
	if err := r.ParseForm(); err != nil {
		return handler.Wrap(http.StatusBadRequest, "The form could not be read.", err)
	}
	if !p.validCSRF(r) {
		return errCSRF
	}
	ctx := r.Context()
	username, password := r.PostForm.Get("username"), r.PostForm.Get("password")
	csrf := p.csrfToken(w, r)
	again := func(msg string) error {
		return p.render(w, http.StatusOK, "signin.html", view{Title: "Sign in", CSRF: csrf, Username: username, Error: msg})
	}
	if username == "" || password == "" {
		return again("Enter your username and password.")
	}
	ip, now := clientIP(r), p.now()
	if wait, ok := p.limiter.Take(ip, username, now); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		return handler.Wrap(http.StatusTooManyRequests, "Too many failed sign-ins. Wait a few minutes and try again.",
			fmt.Errorf("portal sign-in rate limit (client %s, user %q)", ip, username))
	}
	u, err := p.users.Authenticate(ctx, username, password)
	if errors.Is(err, enroll.ErrBadCredentials) {
		p.logger.InfoContext(ctx, "portal sign-in failed", "username", username, "client_ip", ip)
		return again("The username or password is not right.")
	}
	if err != nil {
		return fmt.Errorf("signing in: %w", err)
	}
	p.limiter.Succeeded(ip, username, now)
	p.logger.InfoContext(ctx, "portal sign-in", "username", u.Username, "client_ip", ip)
	p.setCookie(w, p.sessionCookieName(), p.newSession(u.Username, now), now.Add(p.session))
	// Post/Redirect/Get: a reload of the next page does not sign in again.
	http.Redirect(w, r, "/portal/", http.StatusSeeOther)
	return nil
}

func (p *Portal) signOut(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, p.maxBody)
	if err := r.ParseForm(); err != nil {
		return handler.Wrap(http.StatusBadRequest, "The form could not be read.", err)
	}
	if !p.validCSRF(r) {
		return errCSRF
	}
	p.setCookie(w, p.sessionCookieName(), "", time.Unix(1, 0))
	http.Redirect(w, r, "/portal/", http.StatusSeeOther)
	return nil
}

// download issues a Profile Service payload. It is a GET, so that a phone's
// browser hands the file to the profile installer; the SameSite=Strict
// session cookie keeps other sites from triggering it.
func (p *Portal) download(w http.ResponseWriter, r *http.Request) error {
	user, ok := p.sessionUser(r)
	if !ok {
		return handler.Errorf(http.StatusForbidden, "Your sign-in has expired. Sign in again to download the profile.")
	}
	signed, err := p.payloads.ProfileService(r.Context(), user)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", profile.ContentType)
	w.Header().Set("Content-Disposition", `attachment; filename="bramley-enrollment.mobileconfig"`)
	_, _ = w.Write(signed)
	return nil
}

// Cookies.

func (p *Portal) cookieName(base string) string {
	if p.secure {
		return "__Host-" + base
	}
	return base
}

func (p *Portal) sessionCookieName() string { return p.cookieName("bramley-portal") }
func (p *Portal) csrfCookieName() string    { return p.cookieName("bramley-csrf") }

func (p *Portal) setCookie(w http.ResponseWriter, name, value string, expires time.Time) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: "/", Expires: expires,
		Secure: p.secure, HttpOnly: true, SameSite: http.SameSiteStrictMode,
	})
}

// mac is HMAC-SHA256 under the portal key of a purpose and its parts,
// NUL-separated so that no two lists of parts sign the same bytes.
func (p *Portal) mac(purpose string, parts ...string) []byte {
	m := hmac.New(sha256.New, p.key)
	m.Write([]byte(purpose))
	for _, s := range parts {
		m.Write([]byte{0})
		m.Write([]byte(s))
	}
	return m.Sum(nil)
}

var b64 = base64.RawURLEncoding

// csrfToken returns the form token for the request's CSRF cookie, setting
// a fresh cookie when there is none.
func (p *Portal) csrfToken(w http.ResponseWriter, r *http.Request) string {
	nonce := ""
	if c, err := r.Cookie(p.csrfCookieName()); err == nil && len(c.Value) == 22 {
		nonce = c.Value
	} else {
		buf := make([]byte, 16)
		_, _ = rand.Read(buf)
		nonce = b64.EncodeToString(buf)
		// A session cookie (no Expires): it lasts as long as the tab.
		http.SetCookie(w, &http.Cookie{
			Name: p.csrfCookieName(), Value: nonce, Path: "/",
			Secure: p.secure, HttpOnly: true, SameSite: http.SameSiteStrictMode,
		})
	}
	return b64.EncodeToString(p.mac("csrf", nonce))
}

func (p *Portal) validCSRF(r *http.Request) bool {
	c, err := r.Cookie(p.csrfCookieName())
	if err != nil {
		return false
	}
	got, err := b64.DecodeString(r.PostForm.Get("csrf_token"))
	return err == nil && hmac.Equal(got, p.mac("csrf", c.Value))
}

// newSession is username.expiry.mac.
func (p *Portal) newSession(username string, now time.Time) string {
	user := b64.EncodeToString([]byte(username))
	exp := strconv.FormatInt(now.Add(p.session).Unix(), 10)
	return user + "." + exp + "." + b64.EncodeToString(p.mac("session", user, exp))
}

func (p *Portal) sessionUser(r *http.Request) (string, bool) {
	c, err := r.Cookie(p.sessionCookieName())
	if err != nil {
		return "", false
	}
	parts := strings.Split(c.Value, ".")
	if len(parts) != 3 {
		return "", false
	}
	sum, err := b64.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sum, p.mac("session", parts[0], parts[1])) {
		return "", false
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || p.now().Unix() >= exp {
		return "", false
	}
	user, err := b64.DecodeString(parts[0])
	if err != nil {
		return "", false
	}
	return string(user), true
}

// clientIP is the peer's address; behind a proxy, the proxy's.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
