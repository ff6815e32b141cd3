package pki

import (
	"context"

	"github.com/bramley-mdm/bramley/storage"
)

// SettingStore keeps small named values shared by every replica: the CA's
// certificate and sealed key live here.
type SettingStore interface {
	// Setting returns the named value; storage.ErrNotFound when absent.
	Setting(ctx context.Context, name string) ([]byte, error)
	// CreateSetting stores the value unless the name exists, and returns
	// the value stored under the name afterwards — so replicas starting at
	// once agree on one winner.
	CreateSetting(ctx context.Context, name string, value []byte) ([]byte, error)
}

// CertificateStore records the certificates bramley issues.
type CertificateStore interface {
	// RecordCertificate stores an issued certificate. Idempotent by serial.
	RecordCertificate(ctx context.Context, c storage.Certificate) error
}
