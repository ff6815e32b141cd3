package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/micromdm/plist"
)

const checkinType = "application/x-apple-aspen-mdm-checkin"

// TestCheckinMessages covers the check-in messages beyond enrollment, on
// every database: bootstrap token escrow, declarative management and
// GetToken as a server that offers neither, CheckOut and re-enrollment.
func TestCheckinMessages(t *testing.T) {
	for name, db := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := start(t, db(t), nil)
			ctx := context.Background()
			dev := e.device()
			if err := dev.Enroll(ctx); err != nil {
				t.Fatal(err)
			}
			send := func(msg map[string]any) ([]byte, error) {
				msg["UDID"] = dev.UDID
				return dev.Send(ctx, "/mdm/checkin", checkinType, plistDict(t, msg))
			}

			// Bootstrap token: nothing escrowed, then escrowed, read back, deleted.
			var got struct{ BootstrapToken []byte }
			out, err := send(map[string]any{"MessageType": "GetBootstrapToken"})
			if err != nil || plist.Unmarshal(out, &got) != nil || got.BootstrapToken != nil {
				t.Fatalf("GetBootstrapToken before escrow: %v %q", err, out)
			}
			token := []byte("bootstrap-token-secret-bytes")
			if _, err := send(map[string]any{"MessageType": "SetBootstrapToken", "BootstrapToken": token}); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(e.deviceJSON(dev.UDID), `"bootstrap_token_escrowed":true`) {
				t.Fatalf("device does not show the escrowed token: %s", e.deviceJSON(dev.UDID))
			}
			if strings.Contains(e.deviceJSON(dev.UDID), "bootstrap-token-secret") {
				t.Fatal("the API shows the bootstrap token's value")
			}
			out, err = send(map[string]any{"MessageType": "GetBootstrapToken"})
			if err != nil || plist.Unmarshal(out, &got) != nil || !bytes.Equal(got.BootstrapToken, token) {
				t.Fatalf("GetBootstrapToken: %v %q", err, out)
			}
			if _, err := send(map[string]any{"MessageType": "SetBootstrapToken"}); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(e.deviceJSON(dev.UDID), `"bootstrap_token_escrowed":false`) {
				t.Fatal("an empty SetBootstrapToken did not delete the token")
			}

			// Declarative management: valid, empty answers.
			out, err = send(map[string]any{"MessageType": "DeclarativeManagement", "Endpoint": "tokens"})
			var tokens struct {
				SyncTokens struct{ DeclarationsToken string }
			}
			if err != nil || json.Unmarshal(out, &tokens) != nil || tokens.SyncTokens.DeclarationsToken == "" {
				t.Fatalf("DeclarativeManagement tokens: %v %q", err, out)
			}
			out, err = send(map[string]any{"MessageType": "DeclarativeManagement", "Endpoint": "declaration-items"})
			var items struct {
				Declarations      map[string][]any
				DeclarationsToken string
			}
			if err != nil || json.Unmarshal(out, &items) != nil || items.DeclarationsToken != tokens.SyncTokens.DeclarationsToken || len(items.Declarations) != 4 {
				t.Fatalf("DeclarativeManagement declaration-items: %v %q", err, out)
			}
			if _, err := send(map[string]any{"MessageType": "DeclarativeManagement", "Endpoint": "declaration/configuration/x"}); !isStatus(err, http.StatusNotFound) {
				t.Fatalf("unknown declaration: %v, want 404", err)
			}
			if _, err := send(map[string]any{"MessageType": "GetToken", "TokenServiceType": "com.apple.maid"}); !isStatus(err, http.StatusBadRequest) {
				t.Fatalf("GetToken: %v, want 400", err)
			}

			// CheckOut ends the enrollment; the device may then come back
			// with a new certificate, which an enrolled device may not.
			if err := dev.CheckOut(ctx); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(e.deviceJSON(dev.UDID), `"enrolled":false`) {
				t.Fatalf("checked-out device still enrolled: %s", e.deviceJSON(dev.UDID))
			}
			again := e.device()
			again.UDID = dev.UDID
			if err := again.Enroll(ctx); err != nil {
				t.Fatalf("re-enrolling after CheckOut: %v", err)
			}
			if err := dev.TokenUpdate(ctx); !isStatus(err, http.StatusForbidden) {
				t.Fatalf("the old certificate after re-enrollment: %v, want 403", err)
			}
			third := e.device()
			third.UDID = dev.UDID
			if err := third.Authenticate(ctx); !isStatus(err, http.StatusForbidden) {
				t.Fatalf("a third certificate while enrolled: %v, want 403", err)
			}
		})
	}
}

// TestMetricsAndHealth reads /healthz and /metrics after some traffic.
func TestMetricsAndHealth(t *testing.T) {
	e := start(t, "", nil)
	ctx := context.Background()
	dev := e.device()
	if err := dev.Enroll(ctx); err != nil {
		t.Fatal(err)
	}
	e.enqueue(dev.UDID, map[string]any{"request_type": "SecurityInfo"})
	if _, err := dev.Send(ctx, "/mdm/checkin", checkinType, []byte("junk")); !isStatus(err, http.StatusBadRequest) {
		t.Fatal(err)
	}
	get := func(path string) string {
		resp, err := e.http.Get(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
		return string(b)
	}
	if h := get("/healthz"); strings.TrimSpace(h) != "ok" {
		t.Fatalf("healthz = %q", h)
	}
	m := get("/metrics")
	for _, want := range []string{
		`bramley_checkins_total{code="200",message_type="Authenticate"} 1`,
		`bramley_checkins_total{code="200",message_type="TokenUpdate"} 1`,
		`bramley_checkins_total{code="400",message_type="malformed"} 1`,
		`bramley_queue_depth 1`,
		`bramley_http_requests_total{code="201",route="/api/v1/"}`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if _, err := dev.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	m = get("/metrics")
	for _, want := range []string{`bramley_command_results_total{status="Acknowledged"} 1`, `bramley_queue_depth 0`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func isStatus(err error, code int) bool { return statusOf(err) == code }
