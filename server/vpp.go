package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/bramley-mdm/bramley/directory"
	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/queue"
	"github.com/bramley-mdm/bramley/storage"
	"github.com/bramley-mdm/bramley/vpp"
)

// vppSweepInterval is how often pending assignments are checked with
// Apple: its events take minutes, and Apple asks for polls no more often
// than every 30 s per event.
const vppSweepInterval = 5 * time.Minute

// WithVPPOptions adds options to the Apps and Books clients (tests use it
// to poll events without Apple's 30 s waits).
func WithVPPOptions(opts ...vpp.Option) Option {
	return func(s *Server) { s.vppOpts = append(s.vppOpts, opts...) }
}

// setUpVPP builds Apps and Books: content tokens sealed with the server's
// key, people and assignment plans, carried out on the devices of the
// plan's person (device_owners) when they check in and after each sweep.
func (s *Server) setUpVPP(sealer *pki.Sealer, commands *queue.Service, serverID, base string) error {
	// One poll (Apple's 30 s minimum) per event in a request, within the
	// server's 60 s write timeout: what is still pending then is left to
	// the sweep (assignments) or a repeated, idempotent request (users).
	opts := []vpp.Option{vpp.WithMDMInfo(vpp.MDMInfo{ID: serverID, Name: "bramley", Metadata: base}),
		vpp.WithPollInterval(30*time.Second, 1)}
	if s.cfg.VPPURL != "" {
		opts = append(opts, vpp.WithURL(s.cfg.VPPURL))
	}
	if s.cfg.VPPCA != "" {
		data, err := os.ReadFile(s.cfg.VPPCA)
		if err != nil {
			return fmt.Errorf("--vpp-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return fmt.Errorf("--vpp-ca %s: no PEM certificate", s.cfg.VPPCA)
		}
		opts = append(opts, vpp.WithRootCAs(pool))
	}
	svcOpts := []vpp.ServiceOption{
		vpp.WithServiceClientOptions(append(opts, s.vppOpts...)...),
		vpp.WithServiceLogger(s.logger), vpp.WithServiceClock(s.now),
		vpp.WithUserCheck(s.vppUserCheck()),
		vpp.WithDeviceLookup(func(ctx context.Context, deviceID string) (string, error) {
			d, err := s.store.Device(ctx, deviceID)
			if err != nil {
				return "", err
			}
			return d.SerialNumber, nil
		}),
	}
	if s.cfg.LDAP.URL != "" {
		// Without a directory, assigning to a group is a 400.
		svcOpts = append(svcOpts, vpp.WithGroupMembers(vppGroupMembers(directory.NewLDAP(s.cfg.LDAP, directory.WithLogger(s.logger)))))
	}
	s.vpp = vpp.NewService(s.store, sealer, vppInstaller{commands}, svcOpts...)
	s.registerVPPMetrics() // vppowner.go
	return nil
}

// vppUserCheck says who may be registered with Apps and Books: whoever
// may sign in (signInUsers), a local account or, with --ldap-url, a
// directory user.
func (s *Server) vppUserCheck() func(ctx context.Context, username string) error {
	local := func(ctx context.Context, username string) error {
		_, err := s.store.UserByName(ctx, username)
		return err
	}
	if s.cfg.LDAP.URL == "" {
		return local
	}
	return checkVPPUser(local, directory.NewLDAP(s.cfg.LDAP, directory.WithLogger(s.logger)).Exists)
}

// checkVPPUser asks the local accounts, then the directory: an error
// wrapping storage.ErrNotFound when neither knows username.
func checkVPPUser(local func(ctx context.Context, username string) error,
	dir func(ctx context.Context, username string) (bool, error)) func(ctx context.Context, username string) error {
	return func(ctx context.Context, username string) error {
		err := local(ctx, username)
		if !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		ok, err := dir(ctx, username)
		if err != nil {
			return fmt.Errorf("looking up %q in the directory: %w", username, err)
		}
		if !ok {
			return fmt.Errorf("user %q: %w", username, storage.ErrNotFound)
		}
		return nil
	}
}

// groupDirectory lists the usernames of a group's members
// (*directory.LDAP).
type groupDirectory interface {
	Members(ctx context.Context, groupDN string) ([]string, error)
}

// vppGroupMembers lists a group's members for Apps and Books: a group
// the directory does not have is storage.ErrNotFound.
func vppGroupMembers(dir groupDirectory) func(ctx context.Context, groupDN string) ([]string, error) {
	return func(ctx context.Context, groupDN string) ([]string, error) {
		names, err := dir.Members(ctx, groupDN)
		if errors.Is(err, directory.ErrNoSuchGroup) {
			return nil, fmt.Errorf("group %q: %w", groupDN, storage.ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("listing members of %q in the directory: %w", groupDN, err)
		}
		return names, nil
	}
}

// vppCheckin sends a device, when its device channel (re)registers, the
// items assigned to its owner that it has not had yet.
func (s *Server) vppCheckin(ctx context.Context, msg mdm.CheckinMessage) {
	if s.vpp == nil || msg.Type() != mdm.MessageTokenUpdate {
		return
	}
	id := msg.Identifiers()
	if id.DeviceID() == "" || id.UserID != "" || id.EnrollmentUserID != "" {
		return
	}
	if err := s.vpp.Deliver(ctx, id.DeviceID()); err != nil {
		s.logger.ErrorContext(ctx, "delivering assigned apps", "enrollment_id", id.DeviceID(), "err", err)
	}
}

// runVPPSweep finishes pending assignments and delivers them until ctx
// ends.
func (s *Server) runVPPSweep(ctx context.Context) {
	t := time.NewTicker(vppSweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.warnExpiringTokens(ctx)
			if _, err := s.vpp.Sync(ctx); err != nil && !errors.Is(err, vpp.ErrNoToken) {
				s.logger.Warn("Apps and Books sweep", "err", err)
			}
		}
	}
}

// vppInstaller queues the install commands (application.install.yaml,
// media.install.yaml) of assigned items.
type vppInstaller struct{ commands *queue.Service }

func (i vppInstaller) Install(ctx context.Context, deviceID, commandUUID string, p vpp.Plan) error {
	adamID, err := strconv.ParseInt(p.AdamID, 10, 64)
	if err != nil {
		return fmt.Errorf("adam ID %q is not a number", p.AdamID)
	}
	var cmd *mdm.Command
	switch p.Kind {
	case vpp.KindBook:
		cmd, err = mdm.NewCommand(commandUUID, "InstallMedia", map[string]any{
			"iTunesStoreID": adamID, "MediaType": "Book",
		})
	default:
		// PurchaseMethod 1: the licence assigned through Apps and Books,
		// no App Store sign-in. ManagementFlags 1: removed with the MDM
		// profile.
		cmd, err = mdm.NewCommand(commandUUID, "InstallApplication", map[string]any{
			"iTunesStoreID":    adamID,
			"ManagementFlags":  1,
			"InstallAsManaged": true,
			"Options":          map[string]any{"PurchaseMethod": 1},
		})
	}
	if err != nil {
		return err
	}
	return i.commands.Enqueue(ctx, cmd, []string{deviceID}, queue.EnqueueOptions{})
}
