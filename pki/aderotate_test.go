package pki

import (
	"context"
	"testing"
	"time"
)

func TestRotateADEKeyPair(t *testing.T) {
	ctx := context.Background()
	store, sealer := newMemCAStore(), testSealer(t)
	now := time.Now()

	if cert, key, err := PreviousADEKeyPair(ctx, store, sealer); cert != nil || key != nil || err != nil {
		t.Fatalf("previous before any rotation: %v %v %v", cert, key, err)
	}
	// Rotating before the first key pair makes it, with no previous.
	first, err := RotateADEKeyPair(ctx, store, sealer, now)
	if err != nil {
		t.Fatal(err)
	}
	if cert, _, _ := PreviousADEKeyPair(ctx, store, sealer); cert != nil {
		t.Error("a first key pair left a previous one")
	}
	current, oldKey, err := LoadOrCreateADEKeyPair(ctx, store, sealer, now)
	if err != nil || !current.Equal(first) {
		t.Fatalf("current after first rotation: %v", err)
	}

	second, err := RotateADEKeyPair(ctx, store, sealer, now)
	if err != nil {
		t.Fatal(err)
	}
	if second.Equal(first) {
		t.Fatal("rotation kept the certificate")
	}
	current, _, err = LoadOrCreateADEKeyPair(ctx, store, sealer, now)
	if err != nil || !current.Equal(second) {
		t.Fatalf("current after rotation is not the new certificate: %v", err)
	}
	prevCert, prevKey, err := PreviousADEKeyPair(ctx, store, sealer)
	if err != nil || prevCert == nil || !prevCert.Equal(first) || !prevKey.Equal(oldKey) {
		t.Fatalf("previous after rotation: %v", err)
	}

	// Forgetting another certificate's pair keeps this one.
	if err := ForgetPreviousADEKeyPair(ctx, store, second); err != nil {
		t.Fatal(err)
	}
	if cert, _, _ := PreviousADEKeyPair(ctx, store, sealer); cert == nil {
		t.Fatal("forgetting another certificate dropped the previous key pair")
	}
	if err := ForgetPreviousADEKeyPair(ctx, store, first); err != nil {
		t.Fatal(err)
	}
	if cert, key, err := PreviousADEKeyPair(ctx, store, sealer); cert != nil || key != nil || err != nil {
		t.Fatalf("previous after forgetting: %v %v %v", cert, key, err)
	}
	if err := ForgetPreviousADEKeyPair(ctx, store, first); err != nil {
		t.Fatalf("forgetting twice: %v", err)
	}
}

func TestRotateADEKeyPairRefusesAnotherSecretKey(t *testing.T) {
	ctx := context.Background()
	store := newMemCAStore()
	if _, _, err := LoadOrCreateADEKeyPair(ctx, store, testSealer(t), time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := RotateADEKeyPair(ctx, store, testSealer(t), time.Now()); err == nil {
		t.Fatal("rotated with a secret key that does not open the current key")
	}
}
