package pki

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealer(t *testing.T) {
	key := bytes.Repeat([]byte{7}, SecretKeySize)
	s, err := NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	plaintext := []byte("the CA's private key")
	sealed, err := s.Seal(plaintext)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, plaintext) {
		t.Fatal("sealed value contains the plaintext")
	}
	got, err := s.Open(sealed)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !bytes.Equal(got, plaintext) {
		t.Fatalf("Open = %q, want %q", got, plaintext)
	}
	again, _ := s.Seal(plaintext)
	if bytes.Equal(again, sealed) {
		t.Error("two seals of one plaintext are equal: nonce not random")
	}

	t.Run("empty plaintext", func(t *testing.T) {
		sealed, err := s.Seal(nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := s.Open(sealed); err != nil || len(got) != 0 {
			t.Fatalf("Open = %q, %v", got, err)
		}
	})
	t.Run("every byte tampered", func(t *testing.T) {
		for i := range sealed {
			bad := bytes.Clone(sealed)
			bad[i] ^= 0x01
			if _, err := s.Open(bad); err == nil {
				t.Errorf("Open accepted a value with byte %d changed", i)
			}
		}
	})
	t.Run("truncated", func(t *testing.T) {
		for _, n := range []int{0, 1, 13, len(sealed) - 1} {
			if _, err := s.Open(sealed[:n]); err == nil {
				t.Errorf("Open accepted %d of %d bytes", n, len(sealed))
			}
		}
	})
	t.Run("other key", func(t *testing.T) {
		other, _ := NewSealer(bytes.Repeat([]byte{8}, SecretKeySize))
		if _, err := other.Open(sealed); !errors.Is(err, ErrUnseal) {
			t.Errorf("Open with another key: %v, want ErrUnseal", err)
		}
	})
	t.Run("bad key size", func(t *testing.T) {
		if _, err := NewSealer(make([]byte, 16)); err == nil {
			t.Error("NewSealer accepted a 16-byte key")
		}
	})
}

func TestLoadSecretKeyFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data") // not yet created
	key, err := LoadSecretKey(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != SecretKeySize {
		t.Fatalf("key is %d bytes", len(key))
	}
	path := filepath.Join(dir, SecretKeyFile)
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode %#o, want 0600", perm)
	}
	again, err := LoadSecretKey(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, key) {
		t.Error("second load returned a different key")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("data directory holds %d entries, want only the key", len(entries))
	}

	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	_, err = LoadSecretKey(dir, "")
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("group-readable key: err = %v, want a chmod hint", err)
	}
}

func TestLoadSecretKeyFileBase64(t *testing.T) {
	dir := t.TempDir()
	want := bytes.Repeat([]byte{3}, SecretKeySize)
	content := base64.StdEncoding.EncodeToString(want) + "\n"
	if err := os.WriteFile(filepath.Join(dir, SecretKeyFile), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadSecretKey(dir, "")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("LoadSecretKey = %x, %v; want %x", got, err, want)
	}
}

func TestLoadSecretKeyEnv(t *testing.T) {
	want := bytes.Repeat([]byte{5}, SecretKeySize)
	tests := []struct {
		name    string
		env     string
		wantErr bool
	}{
		{"base64 of 32 bytes", base64.StdEncoding.EncodeToString(want), false},
		{"surrounding whitespace", " " + base64.StdEncoding.EncodeToString(want) + "\n", false},
		{"16 bytes", base64.StdEncoding.EncodeToString(want[:16]), true},
		{"not base64", "not-a-key!", true},
		{"32 characters are not 32 bytes", strings.Repeat("a", 32), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			got, err := LoadSecretKey(dir, tt.env)
			if tt.wantErr {
				if err == nil {
					t.Fatal("want an error")
				}
				return
			}
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("LoadSecretKey = %x, %v; want %x", got, err, want)
			}
			if _, err := os.Stat(filepath.Join(dir, SecretKeyFile)); !os.IsNotExist(err) {
				t.Error("a key file was created although the environment gave the key")
			}
		})
	}
}
