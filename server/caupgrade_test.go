package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/sim"
)

// TestCAUpgradeFromRootOnly starts bramley on a database from before the
// intermediate CA: a root alone in ca.cert and ca.key, which issued device
// identities itself. The server makes an intermediate under that root and
// issues from it, and a device holding an identity from the root still
// checks in.
func TestCAUpgradeFromRootOnly(t *testing.T) {
	for name, db := range backends(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			dir, dsn := t.TempDir(), db(t)
			cfg := server.DefaultConfig()
			cfg.DataDir, cfg.DB = dir, dsn
			store, sealer, err := server.InitData(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			rootKey, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				t.Fatal(err)
			}
			tmpl := &x509.Certificate{
				SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bramley device CA"},
				NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0),
				KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
				BasicConstraintsValid: true, IsCA: true,
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, rootKey.Public(), rootKey)
			if err != nil {
				t.Fatal(err)
			}
			root, _ := x509.ParseCertificate(der)
			keyDER, _ := x509.MarshalPKCS8PrivateKey(rootKey)
			sealed, err := sealer.Seal(keyDER)
			if err != nil {
				t.Fatal(err)
			}
			for name, v := range map[string][]byte{pki.SettingCACert: pki.EncodeCertificatePEM(root), pki.SettingCAKey: sealed} {
				if _, err := store.CreateSetting(ctx, name, v); err != nil {
					t.Fatal(err)
				}
			}
			old, err := pki.NewCAFromKeyPair(root, rootKey, time.Now, pki.WithCertificateStore(store))
			if err != nil {
				t.Fatal(err)
			}
			devKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			oldID, err := old.IssueClient(ctx, &devKey.PublicKey, pkix.Name{CommonName: "identity from the root"}, 24*time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			store.Close()

			e := start(t, dsn, func(c *server.Config) { c.DataDir = dir })
			ca := e.srv.CA()
			if !ca.Root().Equal(root) {
				t.Fatal("the server replaced the existing root")
			}
			if ca.Certificate().Equal(root) || ca.Certificate().CheckSignatureFrom(root) != nil {
				t.Fatal("no intermediate under the existing root")
			}

			// The HTTPS chain served is leaf and intermediate, under the root.
			u, err := url.Parse(e.url)
			if err != nil {
				t.Fatal(err)
			}
			conn, err := tls.Dial("tcp", u.Host, tlsClient(e.roots))
			if err != nil {
				t.Fatal(err)
			}
			peer := conn.ConnectionState().PeerCertificates
			conn.Close()
			if len(peer) != 2 || !peer[1].Equal(ca.Certificate()) {
				t.Errorf("served chain of %d certificates, want the leaf and the intermediate", len(peer))
			}

			dev := sim.New(e.url, oldID, devKey, sim.WithRootCAs(e.roots))
			if err := dev.Enroll(ctx); err != nil {
				t.Fatalf("a device with an identity from the root: %v", err)
			}
			if err := e.device().Enroll(ctx); err != nil {
				t.Fatalf("a device with an identity from the intermediate: %v", err)
			}
		})
	}
}
