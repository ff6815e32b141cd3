// Package server wires bramley together: configuration → storage, PKI,
// services → one http.Handler, and starts and stops serving. `bramley serve`
// and the end-to-end tests both use it.
//
// The middleware stack, outermost first:
//
//	recover + access log + request metrics (every route)
//	  /mdm/checkin, /mdm/connect: device identity (body cap, Mdm-Signature | mTLS | proxy header, chain)
//	  /api/v1/…:                  admin key (inside api)
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/bramley-mdm/bramley/api"
	"github.com/bramley-mdm/bramley/checkin"
	"github.com/bramley-mdm/bramley/identity"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/queue"
	"github.com/bramley-mdm/bramley/storage"
)

// Server is a configured bramley, ready to serve.
type Server struct {
	cfg      Config
	logger   *slog.Logger
	store    Store
	ca       *pki.CA
	handler  http.Handler
	tls      *tls.Config
	adminKey string
	metrics  *metrics
	now      func() time.Time
}

// Option configures a Server beyond its Config (tests use these).
type Option func(*Server)

// WithClock sets the clock.
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// New opens the database, loads or creates the CA and the server
// certificate, and builds the handler. Close releases what it opened.
func New(ctx context.Context, cfg Config, logger *slog.Logger, opts ...Option) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, logger: logger, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	store, err := openStore(ctx, cfg.dbDSN())
	if err != nil {
		return nil, err
	}
	s.store = store
	if err := s.setUp(ctx); err != nil {
		store.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) setUp(ctx context.Context) error {
	key, err := pki.LoadSecretKey(s.cfg.DataDir, s.cfg.SecretKey)
	if err != nil {
		return fmt.Errorf("loading secret key: %w", err)
	}
	sealer, err := pki.NewSealer(key)
	if err != nil {
		return err
	}
	if s.ca, err = pki.LoadOrCreateCA(ctx, s.store, sealer, s.now, pki.WithCertificateStore(s.store)); err != nil {
		return fmt.Errorf("loading CA: %w", err)
	}
	anchors := []*x509.Certificate{s.ca.Certificate()}
	for _, f := range s.cfg.TrustCA {
		data, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("--trust-ca: %w", err)
		}
		certs, err := pki.ParseCertificatesPEM(data)
		if err != nil {
			return fmt.Errorf("--trust-ca %s: %w", f, err)
		}
		anchors = append(anchors, certs...)
	}
	if err := s.setUpAdminKey(ctx); err != nil {
		return err
	}
	if !s.cfg.HTTP {
		if err := s.setUpTLS(); err != nil {
			return err
		}
	}
	s.metrics = newMetrics(s.store)

	verifierOpts := []identity.Option{identity.WithLogger(s.logger), identity.WithClock(s.now)}
	if s.cfg.ProxyCertHeader != "" {
		verifierOpts = append(verifierOpts, identity.WithProxyHeader(s.cfg.ProxyCertHeader))
	}
	verifier := identity.NewVerifier(anchors, verifierOpts...)
	binder := identity.NewBinder(s.store, s.logger, s.now)
	checkins := checkin.New(s.store, s.store, sealer, binder,
		checkin.WithLogger(s.logger), checkin.WithClock(s.now),
		checkin.WithObserver(s.metrics.observeCheckin))
	commands := queue.New(s.store, s.store, binder,
		queue.WithLogger(s.logger), queue.WithClock(s.now),
		queue.WithObserver(s.metrics.observeResult))
	admin := api.New(s.store, s.store, s.store, commands,
		api.WithLogger(s.logger), api.WithClock(s.now), api.WithMaxBody(s.cfg.MaxBody))

	mux := http.NewServeMux()
	device := verifier.Middleware(s.cfg.MaxBody)
	// Devices PUT (servers should accept POST too, Apple's check-in docs).
	for _, m := range []string{"PUT", "POST"} {
		mux.Handle(m+" /mdm/checkin", device(checkins.Handler()))
		mux.Handle(m+" /mdm/connect", device(commands.Handler()))
	}
	mux.Handle("/api/v1/", admin.Handler())
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.Handle("GET /metrics", s.metrics.handler())
	s.handler = s.metrics.instrument(mux, accessLog(s.logger, mux))
	return nil
}

func (s *Server) setUpAdminKey(ctx context.Context) error {
	if s.cfg.APIKey != "" {
		if err := s.store.CreateAPIKey(ctx, api.HashKey(s.cfg.APIKey), "--api-key", s.now()); err != nil {
			return fmt.Errorf("storing --api-key: %w", err)
		}
	}
	// The first start mints one key and shows it once; only its hash is
	// kept. A setting records that the key was minted, so a restart or a
	// second replica starting at the same moment does not show another.
	if _, err := s.store.Setting(ctx, "admin.first_key"); err == nil {
		return nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("reading admin key marker: %w", err)
	}
	key := api.NewKey()
	hash := api.HashKey(key)
	if err := s.store.CreateAPIKey(ctx, hash, "first start", s.now()); err != nil {
		return fmt.Errorf("storing admin key: %w", err)
	}
	stored, err := s.store.CreateSetting(ctx, "admin.first_key", hash)
	if err != nil {
		return fmt.Errorf("recording admin key: %w", err)
	}
	// Had another replica won, our key's hash stays stored, unseen by
	// anyone, and so harmless.
	if string(stored) == string(hash) {
		s.adminKey = key
	}
	return nil
}

func (s *Server) setUpTLS() error {
	var cert tls.Certificate
	var err error
	if s.cfg.TLSCert != "" {
		cert, err = pki.LoadKeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
	} else {
		cert, err = pki.LoadOrCreateServerCert(s.cfg.DataDir, s.tlsHosts(), s.ca, s.now)
	}
	if err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	s.tls = &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// Ask for, but do not demand or verify, a client certificate: the
		// identity middleware verifies device certificates itself, so a bad
		// one gets a 403 with a reason instead of a TLS alert, and admin
		// clients and browsers need none.
		ClientAuth: tls.RequestClientCert,
	}
	return nil
}

func (s *Server) tlsHosts() []string {
	hosts := []string{"localhost", "127.0.0.1"}
	if s.cfg.PublicURL != "" {
		if u, err := url.Parse(s.cfg.PublicURL); err == nil && u.Hostname() != "" {
			hosts = append(hosts, u.Hostname())
		}
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	return hosts
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		s.logger.ErrorContext(ctx, "health check", "err", err)
		http.Error(w, "database unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// Handler is the whole of bramley's HTTP surface.
func (s *Server) Handler() http.Handler { return s.handler }

// CA is bramley's device identity CA.
func (s *Server) CA() *pki.CA { return s.ca }

// AdminKey is the admin API key minted at this, the first, start; empty on
// later starts (only its hash is kept).
func (s *Server) AdminKey() string { return s.adminKey }

// TLSConfig is the TLS configuration served, nil with --http.
func (s *Server) TLSConfig() *tls.Config { return s.tls }

// PublicURL is the base URL devices use, given where ln listens.
func (s *Server) PublicURL(ln net.Listener) string { return s.cfg.publicURL(ln.Addr().String()) }

// Serve serves on ln until ctx ends, then shuts down gracefully: requests
// in flight get up to 15 seconds to finish.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	if s.tls != nil {
		srv.TLSConfig = s.tls
		ln = tls.NewListener(ln, s.tls)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close closes the database.
func (s *Server) Close() error { return s.store.Close() }
