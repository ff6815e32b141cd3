package pki

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// SecretKeySize is the size of the key that seals secrets at rest: AES-256.
const SecretKeySize = 32

// SecretKeyFile is the name of the secret key file in the data directory.
const SecretKeyFile = "secret.key"

// LoadSecretKey returns the key that seals secrets at rest. envValue, the
// BRAMLEY_SECRET_KEY variable, wins when set: base64 of 32 bytes, for
// replicas that share a database but no disk. Otherwise the key is read from
// <dataDir>/secret.key, which is created with 32 random bytes on first start.
// A key file readable by group or others is refused rather than used: it
// guards the CA's private key.
func LoadSecretKey(dataDir, envValue string) ([]byte, error) {
	if envValue != "" {
		key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(envValue))
		if err == nil && len(key) != SecretKeySize {
			err = fmt.Errorf("got %d bytes", len(key))
		}
		if err != nil {
			return nil, fmt.Errorf("BRAMLEY_SECRET_KEY must be base64 of %d bytes: %w", SecretKeySize, err)
		}
		return key, nil
	}
	path := filepath.Join(dataDir, SecretKeyFile)
	key, err := readSecretKeyFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createSecretKeyFile(path); err != nil {
			return nil, err
		}
		key, err = readSecretKeyFile(path)
	}
	return key, err
}

func readSecretKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening secret key: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("opening secret key: %w", err)
	}
	// Windows has no Unix permission bits to judge.
	if runtime.GOOS != "windows" && info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secret key %s is accessible by group or others (mode %#o): run chmod 600 on it", path, info.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, 1024))
	if err != nil {
		return nil, fmt.Errorf("reading secret key %s: %w", path, err)
	}
	key, err := decodeSecretKey(b)
	if err != nil {
		return nil, fmt.Errorf("secret key %s: %w", path, err)
	}
	return key, nil
}

// decodeSecretKey accepts the raw 32 bytes bramley writes, or base64 of
// them, so an operator can move the BRAMLEY_SECRET_KEY value into a file.
func decodeSecretKey(b []byte) ([]byte, error) {
	if len(b) == SecretKeySize {
		return bytes.Clone(b), nil
	}
	key, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(b)))
	if err != nil || len(key) != SecretKeySize {
		return nil, fmt.Errorf("must be %d bytes, or base64 of %d bytes", SecretKeySize, SecretKeySize)
	}
	return key, nil
}

// createSecretKeyFile writes a new key without ever replacing one: the key
// is written to a temporary file and linked into place, so two processes
// starting at once never see a half-written key and the loser of the race
// keeps the winner's.
func createSecretKeyFile(path string) error {
	key := make([]byte, SecretKeySize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("generating secret key: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating data directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".secret.key-*")
	if err != nil {
		return fmt.Errorf("creating secret key: %w", err)
	}
	defer os.Remove(tmp.Name())
	// CreateTemp already uses 0600; Chmod makes it independent of that detail.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("creating secret key: %w", err)
	}
	if _, err := tmp.Write(key); err != nil {
		tmp.Close()
		return fmt.Errorf("writing secret key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing secret key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing secret key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("installing secret key: %w", err)
	}
	return nil
}

// sealVersion prefixes every sealed value so the scheme can change later
// while old values stay readable.
const sealVersion byte = 1

// Sealer encrypts secrets at rest (CA and push keys, Apple tokens, bootstrap
// tokens) with AES-256-GCM. It is safe for concurrent use.
type Sealer struct {
	aead cipher.AEAD
}

// NewSealer returns a Sealer using key, which must be 32 bytes.
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) != SecretKeySize {
		return nil, fmt.Errorf("secret key must be %d bytes, got %d", SecretKeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("creating cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("creating cipher: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plaintext as version byte ‖ random nonce ‖ ciphertext and
// tag. A random 96-bit nonce is safe for far more values than bramley seals.
func (s *Sealer) Seal(plaintext []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(plaintext)+s.aead.Overhead())
	out[0] = sealVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("generating nonce: %w", err)
	}
	// The version byte is authenticated too, so it cannot be swapped.
	return s.aead.Seal(out, out[1:], plaintext, out[:1]), nil
}

// ErrUnseal means a sealed value could not be opened: it was altered, or it
// was sealed with another key.
var ErrUnseal = errors.New("sealed value does not open: altered, or sealed with another secret key")

// Open decrypts a value made by Seal.
func (s *Sealer) Open(sealed []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	if len(sealed) < 1+ns+s.aead.Overhead() {
		return nil, ErrUnseal
	}
	if sealed[0] != sealVersion {
		return nil, fmt.Errorf("sealed value has unknown version %d", sealed[0])
	}
	plaintext, err := s.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], sealed[:1])
	if err != nil {
		return nil, ErrUnseal
	}
	return plaintext, nil
}
