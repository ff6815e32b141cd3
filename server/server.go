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
	"strings"
	"sync"
	"time"

	"github.com/bramley-mdm/bramley/ade"
	"github.com/bramley-mdm/bramley/api"
	"github.com/bramley-mdm/bramley/checkin"
	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/identity"
	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/push"
	"github.com/bramley-mdm/bramley/queue"
	"github.com/bramley-mdm/bramley/scep"
	"github.com/bramley-mdm/bramley/storage"
	"github.com/bramley-mdm/bramley/vpp"
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

	providers *push.Providers
	pushCerts *push.Manager
	pusher    *push.Service
	renewals  *enroll.RenewalService
	// ade imports ADE server tokens and syncs their devices (ade.go).
	ade *ade.Service
	// vpp is Apps and Books: content tokens, people, assignment plans (vpp.go).
	vpp     *vpp.Service
	vppOpts []vpp.Option
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
	// Identities issued by a CA that was rotated out or replaced still
	// verify until their devices renew onto the current one.
	previous, err := pki.PreviousCAs(ctx, s.store)
	if err != nil {
		return fmt.Errorf("loading previous CAs: %w", err)
	}
	anchors := append([]*x509.Certificate{s.ca.Root()}, previous...)
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
		if err := s.setUpTLS(previous); err != nil {
			return err
		}
	}
	s.metrics = newMetrics(s.store)

	if err := s.setUpPush(ctx, sealer); err != nil {
		return err
	}
	// Automated Device Enrollment: server tokens and device sync (ade.go).
	if err := s.setUpADE(ctx, sealer); err != nil {
		return err
	}
	signer, err := pki.LoadOrCreateSigner(ctx, s.store, sealer, s.ca)
	if err != nil {
		return err
	}
	serverID, err := s.store.CreateSetting(ctx, "server.id", []byte(mdm.NewUUID()))
	if err != nil {
		return fmt.Errorf("reading server ID: %w", err)
	}
	base := s.cfg.publicURL(s.cfg.Listen)

	// Devices present their identity without the intermediate that issued it.
	verifierOpts := []identity.Option{identity.WithLogger(s.logger), identity.WithClock(s.now),
		identity.WithIntermediates(s.ca.Certificate())}
	if s.cfg.ProxyCertHeader != "" {
		verifierOpts = append(verifierOpts, identity.WithProxyHeader(s.cfg.ProxyCertHeader))
	}
	verifier := identity.NewVerifier(anchors, verifierOpts...)
	binder := identity.NewBinder(s.store, s.logger, s.now)
	commands := queue.New(s.store, s.store, binder,
		queue.WithLogger(s.logger), queue.WithClock(s.now),
		queue.WithObserver(s.metrics.observeResult), queue.WithEnqueueHook(s.pusher.Notify))
	checkins := checkin.New(s.store, s.store, sealer, binder,
		checkin.WithLogger(s.logger), checkin.WithClock(s.now),
		checkin.WithObserver(s.metrics.observeCheckin),
		s.networkUsers(), // Mac network users (netusers.go)
		checkin.WithEvents(s.withVPPCheckin(awaitConfiguration(commands, s.store, s.logger, s.now)))) // ADE: adeenroll.go; VPP: vppowner.go
	scepService := scep.New(s.ca, s.store,
		scep.WithLogger(s.logger), scep.WithClock(s.now), scep.WithLifetime(s.cfg.IdentityLifetime),
		scep.WithRenewals(s.store), scep.WithMaxBody(s.cfg.MaxBody), scep.WithObserver(s.metrics.observeSCEP),
		scep.WithPreviousCAs(previous))
	enrollment := enroll.New(s.store, s.ca, signer, s.topic, enroll.Config{
		PublicURL: base,
		// Stable for this server (its database), so a newer profile
		// replaces the installed one.
		Identifier:       "com.bramley-mdm.enrollment." + strings.ToLower(string(serverID)),
		Organization:     s.cfg.Organization,
		SignMessage:      s.cfg.SignMessage,
		Identity:         s.cfg.Identity,
		IdentityLifetime: s.cfg.IdentityLifetime,
	}, enroll.WithLogger(s.logger), enroll.WithClock(s.now), enroll.WithCertificateStore(s.store))
	// Apps and Books (vpp.go).
	if err := s.setUpVPP(sealer, commands, string(serverID), base); err != nil {
		return err
	}
	if err := s.setUpRenewals(enrollment, commands); err != nil {
		return fmt.Errorf("setting up identity renewal: %w", err)
	}
	adeEnroll, err := s.adeEnrollHandler(enrollment) // adeenroll.go
	if err != nil {
		return err
	}
	// Local accounts and --enroll-auth (users.go).
	// Local accounts, then the directory when one is configured.
	users := s.signInUsers()
	withAccounts, enrollHandler := s.setUpAccounts(enrollment, users)
	admin := api.New(s.store, s.store, s.store, commands,
		api.WithLogger(s.logger), api.WithClock(s.now), api.WithMaxBody(s.cfg.MaxBody),
		api.WithEnrollment(enrollment), api.WithPush(s.pushCerts, s.pusher), api.WithRenewals(s.renewals), withAccounts,
		api.WithADE(s.ade, s.ade), api.WithADEProfiles(s.ade, s.ade), api.WithVPP(s.vpp))

	mux := http.NewServeMux()
	device := verifier.Middleware(s.cfg.MaxBody)
	// Devices PUT (servers should accept POST too, Apple's check-in docs).
	for _, m := range []string{"PUT", "POST"} {
		mux.Handle(m+" /mdm/checkin", device(checkins.Handler()))
		mux.Handle(m+" /mdm/connect", device(commands.Handler()))
	}
	mux.Handle("GET /scep", scepService.Handler())
	mux.Handle("POST /scep", scepService.Handler())
	mux.Handle("GET /enroll", enrollHandler)
	ota, err := s.setUpOTA(mux, enrollment, previous, users) // ota.go
	if err != nil {
		return err
	}
	mux.Handle("GET /ade/enroll", adeEnroll)
	mux.Handle("POST /ade/enroll", adeEnroll)
	mux.Handle("/api/v1/", admin.Handler())
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.Handle("GET /metrics", s.metrics.handler())
	// Enrollment portal (/portal/): portal.go.
	portal, err := s.portalHandler(ctx, sealer, users, ota)
	if err != nil {
		return err
	}
	mux.Handle("/portal/", portal)
	// End of the portal.
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

// setUpPush loads the push certificates and builds the push service.
func (s *Server) setUpPush(ctx context.Context, sealer *pki.Sealer) error {
	var opts []push.ProviderOption
	if s.cfg.APNsURL != "" {
		opts = append(opts, push.WithURL(s.cfg.APNsURL))
	}
	if s.cfg.APNsCA != "" {
		data, err := os.ReadFile(s.cfg.APNsCA)
		if err != nil {
			return fmt.Errorf("--apns-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return fmt.Errorf("--apns-ca %s: no PEM certificate", s.cfg.APNsCA)
		}
		opts = append(opts, push.WithRootCAs(pool))
	}
	s.providers = push.NewProviders()
	s.pushCerts = push.NewManager(s.store, sealer, s.providers, push.WithProviderOptions(opts...),
		push.WithManagerLogger(s.logger), push.WithManagerClock(s.now))
	if err := s.pushCerts.Load(ctx); err != nil {
		return fmt.Errorf("loading push certificates: %w", err)
	}
	pm := push.NewMetrics(s.providers, s.now)
	if err := s.metrics.registry.Register(pm); err != nil {
		return fmt.Errorf("registering push metrics: %w", err)
	}
	var err error
	s.pusher, err = push.New(s.store, s.providers, push.WithLogger(s.logger), push.WithClock(s.now), push.WithObserver(pm.Observe))
	return err
}

// topic is the APNs topic new enrollments use: the newest push
// certificate's, or --push-topic before any is uploaded.
func (s *Server) topic(ctx context.Context) (string, error) {
	topic, err := s.pushCerts.Topic(ctx)
	switch {
	case err == nil:
		return topic, nil
	case !errors.Is(err, push.ErrNoCertificate):
		return "", err
	case s.cfg.PushTopic != "":
		return s.cfg.PushTopic, nil
	}
	return "", enroll.ErrNoTopic
}

func (s *Server) setUpTLS(previousCAs []*x509.Certificate) error {
	var cert tls.Certificate
	var err error
	if s.cfg.TLSCert != "" {
		cert, err = pki.LoadKeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
	} else {
		cert, err = pki.LoadOrCreateServerCert(s.cfg.DataDir, s.tlsHosts(), s.ca, s.now, previousCAs...)
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

// PublicURL is the base URL devices use.
func (s *Server) PublicURL() string { return s.cfg.publicURL(s.cfg.Listen) }

// PublicURLFor derives the base URL devices use from the address bramley
// actually listens on, for when --public-url is not given.
func PublicURLFor(cfg Config, listenAddr string) string { return cfg.publicURL(listenAddr) }

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
	background := s.startBackground(ctx)
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
	background.Wait()
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// startBackground runs the work that goes on between requests until ctx
// ends: re-pushing enrollments with pending commands, picking up push
// certificates another replica uploaded, and renewing device identities.
func (s *Server) startBackground(ctx context.Context) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.pusher.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			s.logger.Error("push scheduler stopped", "err", err)
		}
	})
	wg.Go(func() {
		if err := s.renewals.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			s.logger.Error("identity renewal stopped", "err", err)
		}
	})
	wg.Go(func() { s.runVPPSweep(ctx) })
	wg.Go(func() { s.runADE(ctx) }) // periodic ADE sync and profile assignment (ade.go)
	wg.Go(func() {
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := s.pushCerts.Load(ctx); err != nil {
					s.logger.Warn("reloading push certificates", "err", err)
				}
			}
		}
	})
	return &wg
}

// Close waits for pushes in flight and closes the database.
func (s *Server) Close() error {
	s.pusher.Wait()
	s.providers.Close()
	return s.store.Close()
}
