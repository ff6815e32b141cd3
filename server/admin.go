package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/bramley-mdm/bramley/pki"
)

// ErrNoData means an admin command was pointed at a data directory with no
// server data in it: no SQLite database, or no secret key.
var ErrNoData = errors.New("no bramley data")

// OpenStore opens the database cfg names by the code path New uses, for
// admin commands (`bramley ca …`) that work on a server's data without
// serving. Unlike New it creates nothing: a SQLite database that does not
// exist yet is ErrNoData, so that a mistyped --data is reported rather than
// filled with an empty database. The caller closes the Store.
func OpenStore(ctx context.Context, cfg Config) (Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dsn := cfg.dbDSN()
	if path, ok := strings.CutPrefix(dsn, "sqlite:"); ok {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: no database at %s (has bramley serve run with this --data or --db?)", ErrNoData, path)
		} else if err != nil {
			return nil, fmt.Errorf("opening SQLite database: %w", err)
		}
	}
	return openStore(ctx, dsn)
}

// OpenSealer returns the Sealer of secrets at rest that New uses: from
// cfg.SecretKey, or DataDir/secret.key. Unlike New it creates no key file:
// a missing one is ErrNoData, since a new key would open nothing sealed.
func OpenSealer(cfg Config) (*pki.Sealer, error) {
	if cfg.SecretKey == "" {
		path := filepath.Join(cfg.DataDir, pki.SecretKeyFile)
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: no secret key at %s (give the server's with --secret-key or BRAMLEY_SECRET_KEY)", ErrNoData, path)
		}
	}
	return loadSealer(cfg)
}

// InitData opens the database and the secret key as the first start of
// `bramley serve` would, creating the data directory, the database and the
// key file when they do not exist yet: for admin commands that may set a
// server up before it first starts (`bramley ca import`).
func InitData(ctx context.Context, cfg Config) (Store, *pki.Sealer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("creating data directory: %w", err)
	}
	sealer, err := loadSealer(cfg)
	if err != nil {
		return nil, nil, err
	}
	store, err := openStore(ctx, cfg.dbDSN())
	if err != nil {
		return nil, nil, err
	}
	return store, sealer, nil
}

func loadSealer(cfg Config) (*pki.Sealer, error) {
	key, err := pki.LoadSecretKey(cfg.DataDir, cfg.SecretKey)
	if err != nil {
		return nil, fmt.Errorf("loading secret key: %w", err)
	}
	return pki.NewSealer(key)
}
