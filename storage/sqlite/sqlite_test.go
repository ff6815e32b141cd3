package sqlite

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/bramley-mdm/bramley/api"
	"github.com/bramley-mdm/bramley/checkin"
	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/identity"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/push"
	"github.com/bramley-mdm/bramley/queue"
	"github.com/bramley-mdm/bramley/scep"
	"github.com/bramley-mdm/bramley/storage/storagetest"
)

// The interfaces live with their consumers; asserting them here rather than
// in the package keeps the backend free of imports of its consumers.
var (
	_ checkin.Store          = (*Store)(nil)
	_ checkin.BootstrapStore = (*Store)(nil)
	_ identity.Store         = (*Store)(nil)
	_ queue.Store            = (*Store)(nil)
	_ queue.DeviceInfoStore  = (*Store)(nil)
	_ api.Store              = (*Store)(nil)
	_ api.CommandStore       = (*Store)(nil)
	_ api.KeyStore           = (*Store)(nil)
	_ pki.SettingStore       = (*Store)(nil)
	_ pki.CertificateStore   = (*Store)(nil)
	_ enroll.Store           = (*Store)(nil)
	_ scep.ChallengeStore    = (*Store)(nil)
	_ scep.RenewalStore      = (*Store)(nil)
	_ push.Store             = (*Store)(nil)
	_ push.CertStore         = (*Store)(nil)
	_ pki.SettingWriter      = (*Store)(nil)
	_ storagetest.Store      = (*Store)(nil)
)

func openTest(tb testing.TB) *Store {
	tb.Helper()
	s, err := Open(context.Background(), filepath.Join(tb.TempDir(), "bramley.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
	})
	return s
}

func TestStore(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storagetest.Store { return openTest(t) })
}

func BenchmarkStore(b *testing.B) {
	storagetest.Benchmark(b, func(b *testing.B) storagetest.Store { return openTest(b) })
}
