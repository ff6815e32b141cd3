package pki

import (
	"bytes"
	"context"
	"sync"

	"github.com/bramley-mdm/bramley/storage"
)

// memSettings is an in-memory SettingStore with the create-unless-exists
// semantics the real backends give.
type memSettings struct {
	mu sync.Mutex
	m  map[string][]byte
}

func newMemSettings() *memSettings { return &memSettings{m: make(map[string][]byte)} }

func (s *memSettings) Setting(_ context.Context, name string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[name]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return bytes.Clone(v), nil
}

func (s *memSettings) CreateSetting(_ context.Context, name string, value []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.m[name]; ok {
		return bytes.Clone(v), nil
	}
	s.m[name] = bytes.Clone(value)
	return bytes.Clone(value), nil
}

// memCerts is an in-memory CertificateStore.
type memCerts struct {
	mu    sync.Mutex
	certs map[string]storage.Certificate
	err   error
}

func (s *memCerts) RecordCertificate(_ context.Context, c storage.Certificate) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if s.certs == nil {
		s.certs = make(map[string]storage.Certificate)
	}
	if _, ok := s.certs[c.Serial]; !ok {
		s.certs[c.Serial] = c
	}
	return nil
}
