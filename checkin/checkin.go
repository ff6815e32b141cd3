// Package checkin serves the MDM check-in endpoint: Authenticate,
// TokenUpdate, CheckOut, UserAuthenticate, Set/GetBootstrapToken,
// DeclarativeManagement and GetToken (Apple's "Check-in" protocol,
// apple-device-management/mdm/checkin).
package checkin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/micromdm/plist"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/identity"
	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/storage"
)

// Store records what check-ins say.
type Store interface {
	// StoreAuthenticate records the device and starts a fresh enrollment:
	// the device's queued commands are dropped, its push tokens cleared, its
	// channels disabled until their TokenUpdate, and certHash becomes its
	// certificate binding. Idempotent.
	StoreAuthenticate(ctx context.Context, msg *mdm.Authenticate, certHash []byte, now time.Time) error
	// StoreTokenUpdate creates or updates the enrollment of the message's
	// channel and enables it. storage.ErrNotFound when the device is unknown;
	// storage.ErrConflict, storing nothing, when a Mac user's short name is
	// held by an enabled user of the device with another UserID.
	StoreTokenUpdate(ctx context.Context, msg *mdm.TokenUpdate, sealedUnlockToken []byte, now time.Time) error
	// CheckOut disables the enrollment, and for a device channel every user
	// channel of the device. Idempotent; storage.ErrNotFound when unknown.
	CheckOut(ctx context.Context, enrollmentID string, now time.Time) error
}

// BootstrapStore escrows bootstrap tokens, sealed.
type BootstrapStore interface {
	// StoreBootstrapToken replaces the device's sealed token; nil deletes it.
	// storage.ErrNotFound when the device is unknown.
	StoreBootstrapToken(ctx context.Context, deviceID string, sealed []byte, now time.Time) error
	// BootstrapToken returns the sealed token; storage.ErrNotFound when none.
	BootstrapToken(ctx context.Context, deviceID string) ([]byte, error)
}

// Sealer encrypts secrets before they reach the database.
type Sealer interface {
	Seal(plaintext []byte) ([]byte, error)
	Open(sealed []byte) ([]byte, error)
}

// Binder decides whether a verified identity may act as a device.
type Binder interface {
	Check(ctx context.Context, deviceID string, id *identity.Identity) error
	CheckAuthenticate(ctx context.Context, deviceID string, id *identity.Identity) error
}

// UserDirectory knows the network and mobile users of a Mac (Open
// Directory accounts) that bramley may manage.
type UserDirectory interface {
	// LookupUser reports whether the directory holds the user whose GUID
	// is userID (the UserID of UserAuthenticate); shortName is what the
	// device said, for the log. An error means the directory could not
	// answer, which is not the same as not knowing the user.
	LookupUser(ctx context.Context, userID, shortName string) (found bool, err error)
}

// Service handles check-in messages.
type Service struct {
	store     Store
	bootstrap BootstrapStore
	sealer    Sealer
	binder    Binder
	users     UserDirectory
	logger    *slog.Logger
	now       func() time.Time
	observe   func(messageType string, status int)
	onEvent   func(ctx context.Context, msg mdm.CheckinMessage)
}

// Option configures a Service.
type Option func(*Service)

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(s *Service) { s.logger = l } }

// WithClock sets the clock.
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// WithObserver is called once per check-in with its message type ("" when
// it did not decode) and the HTTP status answered; metrics use it.
func WithObserver(f func(messageType string, status int)) Option {
	return func(s *Service) { s.observe = f }
}

// WithEvents is called after a check-in was stored; pushes and webhooks
// hang off it.
func WithEvents(f func(ctx context.Context, msg mdm.CheckinMessage)) Option {
	return func(s *Service) { s.onEvent = f }
}

// WithUserDirectory lets the network users dir knows be managed
// (UserAuthenticate); without it every such user is declined with 410.
func WithUserDirectory(dir UserDirectory) Option { return func(s *Service) { s.users = dir } }

// New returns a check-in Service.
func New(store Store, bootstrap BootstrapStore, sealer Sealer, binder Binder, opts ...Option) *Service {
	s := &Service{
		store: store, bootstrap: bootstrap, sealer: sealer, binder: binder,
		logger:  slog.New(slog.DiscardHandler),
		now:     time.Now,
		observe: func(string, int) {},
		onEvent: func(context.Context, mdm.CheckinMessage) {},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Handler returns the check-in endpoint. It expects the identity middleware
// in front of it (the body is already capped and read there).
func (s *Service) Handler() http.Handler {
	return handler.Adapt(s.logger, handler.PlainText, s.serve)
}

// statusWriter remembers the status for the observer.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (s *Service) serve(w http.ResponseWriter, r *http.Request) (err error) {
	msgType := ""
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		status := sw.status
		if err != nil {
			status, _ = handler.Status(err)
		} else if status == 0 {
			status = http.StatusOK
		}
		s.observe(msgType, status)
	}()
	id, ok := identity.FromContext(r.Context())
	if !ok {
		return handler.Errorf(http.StatusBadRequest, "no device identity")
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return handler.Wrap(http.StatusBadRequest, "reading body", err)
	}
	msg, err := mdm.DecodeCheckin(body)
	if err != nil {
		return handler.Wrap(http.StatusBadRequest, "malformed check-in message", err)
	}
	msgType = msg.Type()
	ctx := r.Context()
	e := msg.Identifiers()
	logger := s.logger.With("enrollment_id", e.ID(), "message_type", msgType)
	if _, isAuth := msg.(*mdm.Authenticate); isAuth {
		err = s.binder.CheckAuthenticate(ctx, e.DeviceID(), id)
	} else {
		err = s.binder.Check(ctx, e.DeviceID(), id)
	}
	if err != nil {
		return err
	}
	if err := s.handle(ctx, sw, msg); err != nil {
		return err
	}
	logger.InfoContext(ctx, "check-in")
	s.onEvent(ctx, msg)
	return nil
}

func (s *Service) handle(ctx context.Context, w http.ResponseWriter, msg mdm.CheckinMessage) error {
	now := s.now()
	switch m := msg.(type) {
	case *mdm.Authenticate:
		id, _ := identity.FromContext(ctx)
		if err := s.store.StoreAuthenticate(ctx, m, id.Hash, now); err != nil {
			return fmt.Errorf("storing Authenticate: %w", err)
		}
	case *mdm.TokenUpdate:
		var sealed []byte
		if len(m.UnlockToken) > 0 {
			var err error
			if sealed, err = s.sealer.Seal(m.UnlockToken); err != nil {
				return fmt.Errorf("sealing unlock token: %w", err)
			}
		}
		if err := s.store.StoreTokenUpdate(ctx, m, sealed, now); err != nil {
			return storeErr("storing TokenUpdate", err)
		}
	case *mdm.CheckOut:
		if err := s.store.CheckOut(ctx, m.ID(), now); err != nil {
			return storeErr("storing CheckOut", err)
		}
	case *mdm.UserAuthenticate:
		return s.userAuthenticate(ctx, w, m)
	case *mdm.SetBootstrapToken:
		if m.IsUserChannel() {
			return handler.Errorf(http.StatusBadRequest, "SetBootstrapToken is sent on the device channel only")
		}
		var sealed []byte
		if len(m.BootstrapToken) > 0 {
			var err error
			if sealed, err = s.sealer.Seal(m.BootstrapToken); err != nil {
				return fmt.Errorf("sealing bootstrap token: %w", err)
			}
		}
		if err := s.bootstrap.StoreBootstrapToken(ctx, m.DeviceID(), sealed, now); err != nil {
			return storeErr("storing bootstrap token", err)
		}
	case *mdm.GetBootstrapToken:
		if m.IsUserChannel() {
			return handler.Errorf(http.StatusBadRequest, "GetBootstrapToken is sent on the device channel only")
		}
		return s.getBootstrapToken(ctx, w, m.DeviceID())
	case *mdm.DeclarativeManagement:
		return declarativeManagement(w, m)
	case *mdm.GetToken:
		// bramley does not advertise com.apple.mdm.token, so a device has
		// no reason to ask; say so rather than hand out an empty token.
		return handler.Errorf(http.StatusBadRequest, "token service %q not offered", m.TokenServiceType)
	default:
		return handler.Errorf(http.StatusBadRequest, "unhandled message type %q", msg.Type())
	}
	return nil
}

// userAuthenticate answers a network or mobile user's login (Apple's
// "Network User Authentication Extensions"; apple-protocols.md i.2). The
// digest flow exists so that a server can check the user's password, but
// bramley never sees a directory user's password and so cannot verify a
// digest response. It answers the first message with an empty
// DigestChallenge, which Apple defines as "no AuthToken needed for this
// user": the user is managed, and later user-channel requests carry no
// AuthToken. A device that sends a DigestResponse anyway gets an empty
// AuthToken, since no challenge was issued and there is no token to give.
// 410 declines the user for this login session only; the device channel
// keeps working and the device asks again at the next login.
func (s *Service) userAuthenticate(ctx context.Context, w http.ResponseWriter, m *mdm.UserAuthenticate) error {
	if s.users == nil {
		return handler.Errorf(http.StatusGone, "user channel not managed")
	}
	if m.UserID == "" {
		return handler.Errorf(http.StatusBadRequest, "UserAuthenticate without a UserID")
	}
	if m.DigestResponse != "" {
		return writePlist(w, map[string]any{"AuthToken": ""})
	}
	found, err := s.users.LookupUser(ctx, m.UserID, m.UserShortName)
	if err != nil {
		// 503, never 401: the device retries at the next login, and a
		// directory outage must not look like a refusal.
		return handler.Wrap(http.StatusServiceUnavailable, "user directory unavailable", fmt.Errorf("looking up user %q: %w", m.UserID, err))
	}
	if !found {
		s.logger.InfoContext(ctx, "UserAuthenticate: user not in the directory", "user_id", m.UserID, "user_short_name", m.UserShortName)
		return handler.Errorf(http.StatusGone, "user not managed")
	}
	return writePlist(w, map[string]any{"DigestChallenge": ""})
}

func writePlist(w http.ResponseWriter, v any) error {
	out, err := plist.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding check-in response: %w", err)
	}
	w.Header().Set("Content-Type", "application/xml")
	_, _ = w.Write(out)
	return nil
}

func storeErr(what string, err error) error {
	if errors.Is(err, storage.ErrNotFound) {
		return handler.Wrap(http.StatusForbidden, "unknown enrollment", err)
	}
	if errors.Is(err, storage.ErrConflict) {
		// Only StoreTokenUpdate conflicts: a Mac user whose short name is
		// managed under another UserID.
		return handler.Wrap(http.StatusForbidden, "user short name is managed under another UserID", err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (s *Service) getBootstrapToken(ctx context.Context, w http.ResponseWriter, deviceID string) error {
	// No token escrowed: a dictionary without BootstrapToken (the
	// response type has no omitempty, and an empty <data/> would read as
	// an escrowed empty token).
	var resp any = map[string]any{}
	sealed, err := s.bootstrap.BootstrapToken(ctx, deviceID)
	switch {
	case errors.Is(err, storage.ErrNotFound):
	case err != nil:
		return fmt.Errorf("reading bootstrap token: %w", err)
	default:
		token, err := s.sealer.Open(sealed)
		if err != nil {
			return fmt.Errorf("opening bootstrap token: %w", err)
		}
		resp = mdm.BootstrapTokenResponse{BootstrapToken: token}
	}
	out, err := plist.Marshal(resp)
	if err != nil {
		return fmt.Errorf("encoding bootstrap token response: %w", err)
	}
	w.Header().Set("Content-Type", "application/xml")
	_, _ = w.Write(out)
	return nil
}

// emptyDeclarationsToken names the empty set of declarations bramley serves
// until it offers declarative management; any fixed string would do, as
// long as it changes when the set does.
const emptyDeclarationsToken = "bramley-no-declarations-v1"

// declarativeManagement answers for a server that offers no declarations
// yet: valid, empty answers for tokens and declaration-items, status
// accepted, and 404 for any declaration, as Apple documents for one the
// server does not have.
func declarativeManagement(w http.ResponseWriter, m *mdm.DeclarativeManagement) error {
	var body any
	switch {
	case m.Endpoint == "tokens":
		body = map[string]any{"SyncTokens": map[string]any{
			"DeclarationsToken": emptyDeclarationsToken,
			"Timestamp":         "2026-01-01T00:00:00Z",
		}}
	case m.Endpoint == "declaration-items":
		body = map[string]any{
			"Declarations": map[string]any{
				"Activations": []any{}, "Configurations": []any{}, "Assets": []any{}, "Management": []any{},
			},
			"DeclarationsToken": emptyDeclarationsToken,
		}
	case m.Endpoint == "status":
		w.WriteHeader(http.StatusOK)
		return nil
	case strings.HasPrefix(m.Endpoint, "declaration/"):
		return handler.Errorf(http.StatusNotFound, "no such declaration")
	default:
		return handler.Errorf(http.StatusBadRequest, "unknown declarative management endpoint %q", m.Endpoint)
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(body)
}
