package server

import (
	"context"
	"fmt"
	"strings"

	"github.com/bramley-mdm/bramley/ade"
	"github.com/bramley-mdm/bramley/api"
	"github.com/bramley-mdm/bramley/checkin"
	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/identity"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/push"
	"github.com/bramley-mdm/bramley/queue"
	"github.com/bramley-mdm/bramley/scep"
	"github.com/bramley-mdm/bramley/storage/postgres"
	"github.com/bramley-mdm/bramley/storage/sqlite"
	"github.com/bramley-mdm/bramley/vpp"
)

// Store is the union of what bramley's parts need from storage; only the
// server names it. Both backends implement it.
type Store interface {
	checkin.Store
	checkin.BootstrapStore
	identity.Store
	queue.Store
	queue.DeviceInfoStore
	api.Store
	api.CommandStore
	api.KeyStore
	pki.SettingStore
	pki.CertificateStore
	pki.SettingWriter // ADE key pair rotation (adetokens.go)
	scep.ChallengeStore
	enroll.Store
	enroll.ADEDeviceFinder
	enroll.RenewalStore
	enroll.UserStore
	enroll.OTAStore // the portal's Profile Service payloads (portal.go)
	enroll.OTAStore
	push.Store
	push.CertStore
	ade.TokenStore
	ade.CursorStore
	ade.DeviceSink
	ade.DeviceLister
	ade.ProfileStore
	ade.AssignmentStore
	ade.Locker
	vpp.ServiceStore
	personStore // vppowner.go
	QueueDepth(ctx context.Context) (int64, error)
	Ping(ctx context.Context) error
	Close() error
}

func openStore(ctx context.Context, dsn string) (Store, error) {
	if path, ok := strings.CutPrefix(dsn, "sqlite:"); ok {
		s, err := sqlite.Open(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("opening SQLite database %s: %w", path, err)
		}
		return s, nil
	}
	s, err := postgres.Open(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("opening PostgreSQL database: %w", err)
	}
	return s, nil
}
