package ade

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Sealer encrypts the token secrets at rest; *pki.Sealer implements it.
type Sealer interface {
	Seal(plaintext []byte) ([]byte, error)
	Open(sealed []byte) ([]byte, error)
}

// KeyPair returns the certificate Apple encrypts server tokens to and its
// key, creating them on first use (pki.LoadOrCreateADEKeyPair).
type KeyPair func(ctx context.Context) (*x509.Certificate, crypto.PrivateKey, error)

// DeviceStore is where the syncer's devices go and are listed from.
type DeviceStore interface {
	DeviceSink
	DeviceLister
}

// ErrTokenExpired: the uploaded server token is past its expiry.
var ErrTokenExpired = errors.New("the ADE server token has expired: download a new one from Apple Business Manager")

// Service imports server tokens and keeps each one's devices in step with
// Apple's: the part of ADE the admin API drives. One Client per token is
// kept in memory, replaced when the token is renewed.
type Service struct {
	keyPair    KeyPair
	tokens     TokenStore
	cursors    CursorStore
	devices    DeviceStore
	sealer     Sealer
	syncer     *Syncer
	now        func() time.Time
	logger     *slog.Logger
	clientOpts []ClientOption
	// profiles, rules and enrollURL: WithProfiles (assign.go).
	profiles  ProfileStore
	rules     AssignmentStore
	enrollURL string
	// locker keeps periodic runs to one replica (run.go).
	locker Locker
	// rotation replaces the token key pair (keyrotation.go).
	rotation KeyRotation

	mu      sync.Mutex
	clients map[string]*tokenClient
	// syncing keeps two syncs of one token on this replica apart.
	syncing map[string]*sync.Mutex
	// notBefore holds tokens Apple asked to wait (run.go).
	notBefore map[string]time.Time
}

// tokenClient is the client of one token, for the sealed secrets it was
// made from.
type tokenClient struct {
	sealed string
	client *Client
}

// ServiceOption configures a Service.
type ServiceOption func(*Service)

// WithServiceClock sets the clock that judges token expiry and stamps
// stored tokens.
func WithServiceClock(now func() time.Time) ServiceOption { return func(s *Service) { s.now = now } }

// WithServiceLogger sets the logger.
func WithServiceLogger(l *slog.Logger) ServiceOption { return func(s *Service) { s.logger = l } }

// WithClientOptions configures every Client the service makes (the URL of
// --ade-url, its CA, timeouts).
func WithClientOptions(opts ...ClientOption) ServiceOption {
	return func(s *Service) { s.clientOpts = append(s.clientOpts, opts...) }
}

// WithSyncerOptions configures the syncer.
func WithSyncerOptions(opts ...SyncerOption) ServiceOption {
	return func(s *Service) { s.syncer = NewSyncer(s.cursors, s.devices, opts...) }
}

// NewService returns the ADE service.
func NewService(keyPair KeyPair, tokens TokenStore, cursors CursorStore, devices DeviceStore, sealer Sealer, opts ...ServiceOption) *Service {
	s := &Service{
		keyPair: keyPair, tokens: tokens, cursors: cursors, devices: devices, sealer: sealer,
		now:     time.Now,
		logger:  slog.New(slog.DiscardHandler),
		clients: make(map[string]*tokenClient),
		syncing: make(map[string]*sync.Mutex),

		notBefore: make(map[string]time.Time),
	}
	s.syncer = NewSyncer(cursors, devices)
	for _, o := range opts {
		o(s)
	}
	return s
}

// CertificatePEM returns the certificate an administrator uploads to the
// MDM server in Apple Business Manager.
func (s *Service) CertificatePEM(ctx context.Context) ([]byte, error) {
	cert, _, err := s.keyPair(ctx)
	if err != nil {
		return nil, fmt.Errorf("loading ADE token key pair: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), nil
}

// Import decrypts a server token (.p7m) as Apple Business Manager gives
// it, and stores it with its secrets sealed; a renewed token of a stored
// MDM server replaces it and keeps its ID. The errors of ParseServerToken
// and ErrTokenExpired are the uploader's to fix. Apple's /account names
// the token when it answers; when it does not, the token is stored
// unnamed, and the error shows at the first sync.
func (s *Service) Import(ctx context.Context, p7m []byte) (Token, error) {
	st, cert, err := s.decrypt(ctx, p7m) // keyrotation.go
	if err != nil {
		return Token{}, err
	}
	now := s.now()
	if st.Expired(now) {
		return Token{}, fmt.Errorf("%w (it expired at %s)", ErrTokenExpired, st.AccessTokenExpiry.UTC().Format(time.RFC3339))
	}
	plain, err := json.Marshal(sealedToken{ServerToken: st, CertSHA256: certFingerprint(cert)})
	if err != nil {
		return Token{}, fmt.Errorf("encoding ADE token: %w", err)
	}
	sealed, err := s.sealer.Seal(plain)
	if err != nil {
		return Token{}, fmt.Errorf("sealing ADE token: %w", err)
	}
	tok := Token{ID: rand.Text(), ConsumerKey: st.ConsumerKey, AccessTokenExpiry: st.AccessTokenExpiry.UTC(),
		CreatedAt: now, UpdatedAt: now, Sealed: sealed}
	if client, err := NewClient(st, s.clientOpts...); err != nil {
		return Token{}, fmt.Errorf("ADE client: %w", err)
	} else if acct, err := client.Account(ctx); err != nil {
		s.logger.Warn("ADE token imported, but Apple's /account failed", "consumer_key", st.ConsumerKey, "err", err)
	} else {
		tok.ServerName = acct.ServerName
	}
	stored, err := s.tokens.PutToken(ctx, tok)
	if err != nil {
		return Token{}, err
	}
	s.logger.Info("ADE token imported", "token_id", stored.ID, "consumer_key", stored.ConsumerKey,
		"server_name", stored.ServerName, "access_token_expiry", stored.AccessTokenExpiry)
	if current, _, err := s.keyPair(ctx); err == nil && current.Equal(cert) {
		s.forgetPreviousIfDone(ctx, cert)
	}
	return stored, nil
}

// Tokens lists the stored tokens.
func (s *Service) Tokens(ctx context.Context) ([]Token, error) { return s.tokens.Tokens(ctx) }

// Sync brings the token's devices up to date now, then applies the
// assignment rules to new and unassigned devices. An unknown id is
// storage.ErrNotFound; Apple's refusals wrap an *Error and its sentinel
// (ErrTermsNotSigned …). Syncs of one token on this replica run one
// after the other.
func (s *Service) Sync(ctx context.Context, id string) (SyncResult, error) {
	s.mu.Lock()
	lock, ok := s.syncing[id]
	if !ok {
		lock = new(sync.Mutex)
		s.syncing[id] = lock
	}
	s.mu.Unlock()
	lock.Lock()
	defer lock.Unlock()
	client, err := s.client(ctx, id)
	if err != nil {
		return SyncResult{}, err
	}
	res, err := s.syncer.Sync(ctx, id, client)
	if err != nil {
		return res, err
	}
	// The assignment rules follow every sync (assign.go).
	return res, s.assignNew(ctx, id)
}

// SyncAll syncs every token, logging each failure, and returns the first.
func (s *Service) SyncAll(ctx context.Context) error {
	tokens, err := s.tokens.Tokens(ctx)
	if err != nil {
		return err
	}
	var first error
	for _, t := range tokens {
		if t.AccessTokenExpiry.Before(s.now()) {
			continue // Apple would refuse it; an admin must upload a new one
		}
		if _, err := s.Sync(ctx, t.ID); err != nil {
			s.logger.Warn("ADE sync failed", "token_id", t.ID, "err", err)
			if first == nil {
				first = err
			}
		}
	}
	return first
}

// Devices lists the devices known for the token, or for all when
// tokenID is "".
func (s *Service) Devices(ctx context.Context, tokenID string) ([]DeviceRecord, error) {
	return s.devices.ADEDevices(ctx, tokenID)
}

// client returns the token's client, making a new one when the token's
// sealed secrets changed (a renewal, perhaps by another replica).
func (s *Service) client(ctx context.Context, id string) (*Client, error) {
	tok, err := s.tokens.Token(ctx, id)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if tc, ok := s.clients[id]; ok && tc.sealed == string(tok.Sealed) {
		return tc.client, nil
	}
	plain, err := s.sealer.Open(tok.Sealed)
	if err != nil {
		return nil, fmt.Errorf("opening ADE token %s (is this the secret key it was sealed with?): %w", id, err)
	}
	var st ServerToken
	if err := json.Unmarshal(plain, &st); err != nil {
		return nil, fmt.Errorf("decoding ADE token %s: %w", id, err)
	}
	client, err := NewClient(&st, s.clientOpts...)
	if err != nil {
		return nil, fmt.Errorf("ADE client for token %s: %w", id, err)
	}
	s.clients[id] = &tokenClient{sealed: string(tok.Sealed), client: client}
	return client, nil
}
