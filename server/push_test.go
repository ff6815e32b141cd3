package server_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/appletest"
	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/sim"
)

// TestPushWakesDevice is the push acceptance test: upload a push
// certificate, enroll a simulated device, queue a command; the push reaches
// the fake APNs over HTTP/2 with the device's token, topic and PushMagic,
// and the device, woken, connects and acknowledges.
func TestPushWakesDevice(t *testing.T) {
	for name, db := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			apns := appletest.NewAPNs(t)
			caFile := filepath.Join(t.TempDir(), "apns-ca.pem")
			if err := os.WriteFile(caFile, apns.CACertificatePEM(), 0o600); err != nil {
				t.Fatal(err)
			}
			e := start(t, db(t), func(c *server.Config) { c.APNsURL = apns.URL(); c.APNsCA = caFile })

			certPEM, keyPEM := apns.PushCertificate(testTopic)
			var info struct {
				Topic    string `json:"topic"`
				DaysLeft int    `json:"days_left"`
			}
			if code := e.api("PUT", "/api/v1/push-certificates", map[string]any{
				"certificate": string(certPEM), "private_key": string(keyPEM),
			}, &info); code != http.StatusOK || info.Topic != testTopic {
				t.Fatalf("upload: %d %+v", code, info)
			}

			dev := e.device(sim.WithTopic(testTopic))
			if err := dev.Enroll(context.Background()); err != nil {
				t.Fatal(err)
			}
			acked := make(chan []sim.Handled, 1)
			var once sync.Once
			apns.OnPush(func(token []byte, magic string) {
				if !bytes.Equal(token, dev.Token) || magic != dev.PushMagic {
					return
				}
				once.Do(func() {
					handled, err := dev.Connect(context.Background())
					if err != nil {
						t.Errorf("woken device: %v", err)
					}
					acked <- handled
				})
			})
			uuid := e.enqueue(dev.UDID, map[string]any{"request_type": "ProfileList"})
			select {
			case handled := <-acked:
				if len(handled) != 1 || handled[0].CommandUUID != uuid || handled[0].Status != "Acknowledged" {
					t.Fatalf("woken device handled %+v", handled)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("no push reached the device")
			}
			got := apns.Received()
			if len(got) == 0 {
				t.Fatal("fake APNs received nothing")
			}
			n := got[0]
			if n.ProtoMajor != 2 || n.CertTopic != testTopic || n.Header.Get("apns-topic") != testTopic ||
				n.Header.Get("apns-push-type") != "mdm" || string(n.Body) != `{"mdm":"`+dev.PushMagic+`"}` {
				t.Fatalf("push = %+v %s", n, n.Body)
			}
			if cmd := e.command(uuid); cmd.Targets[0].Status != "Acknowledged" {
				t.Fatalf("command = %+v", cmd)
			}

			// A certificate for another topic while devices use this one:
			// refused with the reason, unless forced.
			otherCert, otherKey := apns.PushCertificate("com.apple.mgmt.External.other-org")
			var refusal struct{ Error string }
			if code := e.api("PUT", "/api/v1/push-certificates", map[string]any{
				"certificate": string(otherCert), "private_key": string(otherKey),
			}, &refusal); code != http.StatusConflict || !strings.Contains(refusal.Error, "re-enroll") {
				t.Fatalf("topic change: %d %q", code, refusal.Error)
			}
			var list struct {
				Certs []struct {
					Topic       string `json:"topic"`
					Enrollments int    `json:"enrollments"`
				} `json:"push_certificates"`
			}
			if e.api("GET", "/api/v1/push-certificates", nil, &list); len(list.Certs) != 1 || list.Certs[0].Enrollments != 1 {
				t.Fatalf("push certificates = %+v", list)
			}

			// On demand, and a token APNs calls unregistered is not pushed again.
			apns.FailToken(hex.EncodeToString(dev.Token), http.StatusGone, "Unregistered")
			var res struct {
				Results []struct {
					Status int    `json:"status"`
					Reason string `json:"reason"`
				} `json:"results"`
			}
			if code := e.api("POST", "/api/v1/devices/"+dev.UDID+"/push", nil, &res); code != http.StatusOK || len(res.Results) != 1 || res.Results[0].Status != http.StatusGone {
				t.Fatalf("push on demand: %d %+v", code, res)
			}
			before := len(apns.Received())
			e.api("POST", "/api/v1/devices/"+dev.UDID+"/push", nil, &res)
			if len(apns.Received()) != before {
				t.Fatal("an unregistered token was pushed again")
			}
			// Until its next TokenUpdate.
			if err := dev.TokenUpdate(context.Background()); err != nil {
				t.Fatal(err)
			}
			e.api("POST", "/api/v1/devices/"+dev.UDID+"/push", nil, &res)
			if len(apns.Received()) != before+1 {
				t.Fatal("a TokenUpdate did not make the device pushable again")
			}
		})
	}
}
