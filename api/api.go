// Package api serves bramley's admin REST API under /api/v1/: devices, their
// command queues and commands, as JSON, to holders of an API key.
//
// api/openapi.yaml describes every route and is served at
// /api/v1/openapi.yaml; a test keeps it and the route table in step.
package api

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/storage"
)

// openAPI is the OpenAPI 3.0 document of this API.
//
//go:embed openapi.yaml
var openAPI []byte

const (
	prefix         = "/api/v1"
	defaultMaxBody = 1 << 20

	mediaJSON  = "application/json"
	mediaPlist = "application/x-apple-plist"
)

// API is the admin REST API.
type API struct {
	store   Store
	cmds    CommandStore
	keys    KeyStore
	enq     Enqueuer
	logger  *slog.Logger
	now     func() time.Time
	maxBody int64
	handler http.Handler
	tokens  EnrollmentTokens
	// pushCerts and pusher serve the push routes; nil: 503.
	pushCerts PushCertificates
	pusher    Pusher
	// renewals serves /identity-renewals; nil: 503.
	renewals RenewalLister
	// adeTokens and adeDevices serve the /ade routes; nil: 503.
	adeTokens  ADETokens
	adeDevices ADEDevices
	// adeProfiles and adeAssignments serve ADE profiles (adeprofiles.go).
	adeProfiles    ADEProfiles
	adeAssignments ADEAssignments
	// accounts serves /users (accounts.go); nil: 503.
	accounts Accounts
	// vpp serves /vpp and /devices/{id}/owner (vpp.go); nil: 503.
	vpp VPP
}

// Option configures an API.
type Option func(*API)

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(a *API) { a.logger = l } }

// WithClock sets the clock.
func WithClock(now func() time.Time) Option { return func(a *API) { a.now = now } }

// WithMaxBody caps request bodies at n bytes (default 1 MiB); larger ones
// are answered 413. A non-positive n keeps the default.
func WithMaxBody(n int64) Option {
	return func(a *API) {
		if n > 0 {
			a.maxBody = n
		}
	}
}

// New returns the admin API.
func New(store Store, cmds CommandStore, keys KeyStore, enq Enqueuer, opts ...Option) *API {
	a := &API{
		store: store, cmds: cmds, keys: keys, enq: enq,
		logger:  slog.New(slog.DiscardHandler),
		now:     time.Now,
		maxBody: defaultMaxBody,
	}
	for _, o := range opts {
		o(a)
	}
	a.handler = a.mux()
	return a
}

// Handler serves the full paths under /api/v1/; mount it there unchanged.
func (a *API) Handler() http.Handler { return a.handler }

// route is one entry of the route table. Everything but public routes
// needs an API key.
type route struct {
	pattern string
	public  bool
	serve   handler.Func
}

// routes is the route table; openapi.yaml documents exactly these.
func (a *API) routes() []route {
	return []route{
		{pattern: "GET " + prefix + "/openapi.yaml", public: true, serve: a.serveOpenAPI},
		{pattern: "GET " + prefix + "/devices", serve: a.listDevices},
		{pattern: "GET " + prefix + "/devices/{id}", serve: a.getDevice},
		{pattern: "GET " + prefix + "/devices/{id}/queue", serve: a.deviceQueue},
		{pattern: "GET " + prefix + "/devices/{id}/users", serve: a.listDeviceUsers},
		{pattern: "POST " + prefix + "/devices/{id}/commands", serve: a.enqueueForDevice},
		{pattern: "POST " + prefix + "/commands", serve: a.enqueueForMany},
		{pattern: "GET " + prefix + "/commands/{uuid}", serve: a.getCommand},
		{pattern: "DELETE " + prefix + "/commands/{uuid}", serve: a.cancelCommand},
		{pattern: "POST " + prefix + "/enrollment-tokens", serve: a.createEnrollmentToken},
		{pattern: "GET " + prefix + "/push-certificates", serve: a.listPushCertificates},
		{pattern: "PUT " + prefix + "/push-certificates", serve: a.uploadPushCertificate},
		{pattern: "POST " + prefix + "/devices/{id}/push", serve: a.pushDevice},
		{pattern: "POST " + prefix + "/push", serve: a.pushMany},
		{pattern: "GET " + prefix + "/identity-renewals", serve: a.listRenewals},
		{pattern: "GET " + prefix + "/ade/certificate", serve: a.adeCertificate},
		{pattern: "POST " + prefix + "/ade/certificate/rotate", serve: a.rotateADECertificate},
		{pattern: "POST " + prefix + "/ade/tokens", serve: a.uploadADEToken},
		{pattern: "GET " + prefix + "/ade/tokens", serve: a.listADETokens},
		{pattern: "POST " + prefix + "/ade/tokens/{id}/sync", serve: a.syncADEToken},
		{pattern: "GET " + prefix + "/ade/devices", serve: a.listADEDevices},
		{pattern: "POST " + prefix + "/ade/profiles", serve: a.createADEProfile},
		{pattern: "GET " + prefix + "/ade/profiles", serve: a.listADEProfiles},
		{pattern: "GET " + prefix + "/ade/profiles/{id}", serve: a.getADEProfile},
		{pattern: "PUT " + prefix + "/ade/assignment-rules", serve: a.putADEAssignmentRules},
		{pattern: "GET " + prefix + "/ade/assignment-rules", serve: a.getADEAssignmentRules},
		{pattern: "POST " + prefix + "/ade/tokens/{id}/assign", serve: a.assignADEToken},
		{pattern: "POST " + prefix + "/users", serve: a.createUser},
		{pattern: "POST " + prefix + "/vpp/tokens", serve: a.importVPPToken},
		{pattern: "GET " + prefix + "/vpp/tokens", serve: a.listVPPTokens},
		{pattern: "POST " + prefix + "/vpp/users", serve: a.registerVPPUser},
		{pattern: "GET " + prefix + "/vpp/users", serve: a.listVPPUsers},
		{pattern: "POST " + prefix + "/vpp/assignments", serve: a.assignVPP},
		{pattern: "GET " + prefix + "/vpp/assignments", serve: a.listVPPAssignments},
		{pattern: "POST " + prefix + "/vpp/sync", serve: a.syncVPP},
		{pattern: "PUT " + prefix + "/devices/{id}/owner", serve: a.setDeviceOwner},
	}
}

func (a *API) mux() http.Handler {
	mux := http.NewServeMux()
	// paths matches the same routes regardless of method, so that a known
	// path with the wrong method answers 405 in JSON rather than 404.
	paths := http.NewServeMux()
	allow := make(map[string][]string)
	for _, rt := range a.routes() {
		f := rt.serve
		if !rt.public {
			f = a.authenticate(f)
		}
		mux.Handle(rt.pattern, handler.Adapt(a.logger, writeError, f))
		method, path, _ := strings.Cut(rt.pattern, " ")
		if _, seen := allow[path]; !seen {
			paths.Handle(path, http.NotFoundHandler())
		}
		allow[path] = append(allow[path], method)
		if method == http.MethodGet {
			allow[path] = append(allow[path], http.MethodHead)
		}
	}
	// The catch-all asks for a key too, so that callers without one learn
	// nothing about which routes exist.
	mux.Handle(prefix+"/", handler.Adapt(a.logger, writeError, a.authenticate(
		func(w http.ResponseWriter, r *http.Request) error {
			if _, pattern := paths.Handler(r); pattern != "" {
				w.Header().Set("Allow", strings.Join(allow[pattern], ", "))
				return handler.Errorf(http.StatusMethodNotAllowed, "method %s not allowed", r.Method)
			}
			return handler.Errorf(http.StatusNotFound, "no such route")
		})))
	return mux
}

func (a *API) serveOpenAPI(w http.ResponseWriter, _ *http.Request) error {
	// application/yaml is RFC 9512's media type for YAML.
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(openAPI)
	return nil
}

// errorBody is every error response: {"error": "..."}.
type errorBody struct {
	Error string `json:"error"`
}

// writeError is the handler.Writer of this API.
func writeError(w http.ResponseWriter, _ *http.Request, status int, message string) {
	b, _ := json.Marshal(errorBody{Error: message}) // a struct of one string always encodes
	setJSONHeaders(w)
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// writeJSON encodes v before writing anything, so an encoding failure can
// still become a clean 500.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding response: %w", err)
	}
	setJSONHeaders(w)
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
	return nil
}

func setJSONHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", mediaJSON)
	h.Set("X-Content-Type-Options", "nosniff")
	// Answers carry device inventory; no cache in between should keep them.
	h.Set("Cache-Control", "no-store")
}

// lookupError turns storage.ErrNotFound into a 404 naming what was missing;
// other errors stay internal.
func lookupError(err error, what, id string) error {
	if errors.Is(err, storage.ErrNotFound) {
		return handler.Wrap(http.StatusNotFound, fmt.Sprintf("%s %q not found", what, id), err)
	}
	return fmt.Errorf("reading %s %s: %w", what, id, err)
}
