package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/micromdm/plist"

	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/profile"
	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/sim"
	"github.com/bramley-mdm/bramley/storage/storagetest"
)

// TestReplicasShareOnePostgreSQL is the scale-out test of the README's
// "Running more than one replica": two servers, each with its own data
// directory and URL, on one PostgreSQL schema and one secret key. Devices
// enroll through either, commands are queued through both while the
// devices connect to whichever replica they pick each time, and every
// command is delivered exactly once and answered. One-time token uses and
// SCEP challenges cannot be spent on both replicas.
func TestReplicasShareOnePostgreSQL(t *testing.T) {
	dsn := storagetest.PostgresURL(t)
	secret := base64.StdEncoding.EncodeToString(randomBytes(t, 32))
	apiKey := fmt.Sprintf("replica-test-%x", randomBytes(t, 16))
	dirA, dirB := t.TempDir(), t.TempDir()
	replica := func(dir string) *env {
		e := start(t, dsn, func(c *server.Config) {
			c.DataDir = dir
			c.SecretKey = secret
			c.APIKey = apiKey
			c.PushTopic = testTopic
		})
		// Only the first start shows a minted key; both accept --api-key.
		e.apiKey = apiKey
		return e
	}
	a := replica(dirA) // creates the CA, keys and first admin key
	b := replica(dirB) // must load them

	if !a.srv.CA().Root().Equal(b.srv.CA().Root()) {
		t.Fatal("the replicas have different CAs")
	}
	if a.srv.AdminKey() == "" || b.srv.AdminKey() != "" {
		t.Fatalf("admin key shown by A %t, by B %t; want A only", a.srv.AdminKey() != "", b.srv.AdminKey() != "")
	}
	if a.url == b.url {
		t.Fatalf("both replicas at %s", a.url)
	}
	for _, dir := range []string{dirA, dirB} {
		// The secret key comes from the configuration, never a file.
		if _, err := os.Stat(filepath.Join(dir, pki.SecretKeyFile)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s: secret key file: %v", dir, err)
		}
	}

	t.Run("commands", func(t *testing.T) { replicaCommands(t, a, b) })
	t.Run("token_use", func(t *testing.T) { replicaTokenUse(t, a, b) })
	t.Run("scep_challenge", func(t *testing.T) { replicaChallenge(t, a, b) })
}

// twin is one simulated device as seen through each replica: the same
// identity, UDID and push token, bound to replica 0 or 1.
type twin [2]*sim.Device

func replicaCommands(t *testing.T, replicas ...*env) {
	const (
		devices   = 40
		perDevice = 5
	)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	commands := []map[string]any{
		{"request_type": "ProfileList"},
		{"request_type": "SecurityInfo"},
		{"request_type": "DeviceInformation", "queries": []string{"DeviceName", "OSVersion"}},
		{"request_type": "CertificateList"},
		{"request_type": "InstalledApplicationList"},
	}

	var (
		mu   sync.Mutex
		errs []error
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, err)
		cancel()
	}
	checkErrs := func(what string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if len(errs) > 0 {
			t.Fatalf("%s: %d errors, first: %v", what, len(errs), errors.Join(errs[:min(len(errs), 5)]...))
		}
	}

	// Identities from the shared CA, half issued by each replica's copy.
	twins := make([]twin, devices)
	for i := range twins {
		issuer := replicas[i%2]
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := issuer.srv.CA().IssueClient(ctx, &key.PublicKey, pkix.Name{CommonName: "replica sim device"}, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		for r, e := range replicas {
			twins[i][r] = sim.New(e.url, cert, key, sim.WithRootCAs(e.roots), sim.WithTopic(testTopic))
		}
		first, second := twins[i][0], twins[i][1]
		second.UDID, second.SerialNumber, second.Token, second.PushMagic = first.UDID, first.SerialNumber, first.Token, first.PushMagic
	}

	// Half enroll through A, half through B, all at once.
	var wg sync.WaitGroup
	for i, tw := range twins {
		wg.Go(func() {
			if err := tw[i%2].Enroll(ctx); err != nil {
				fail(fmt.Errorf("device %d enrolling through replica %d: %w", i, i%2, err))
			}
		})
	}
	wg.Wait()
	checkErrs("enrolling")

	// Queue through both replicas from several goroutines while every
	// device keeps connecting to a replica picked at random.
	type job struct{ device, n int }
	jobs := make(chan job)
	var (
		queued    = map[string]string{} // command UUID → UDID
		delivered = map[string]map[string][]string{}
		served    [2]int // commands delivered by each replica
	)
	enqueued := make(chan struct{})
	var enqueuers sync.WaitGroup
	for range 8 {
		enqueuers.Go(func() {
			for j := range jobs {
				e := replicas[(j.device+j.n)%2]
				udid := twins[j.device][0].UDID
				uuid, err := replicaEnqueue(ctx, e, udid, commands[j.n%len(commands)])
				if err != nil {
					fail(fmt.Errorf("enqueue through %s: %w", e.url, err))
					continue
				}
				mu.Lock()
				queued[uuid] = udid
				mu.Unlock()
			}
		})
	}
	go func() {
		defer close(enqueued)
		defer enqueuers.Wait()
		defer close(jobs)
		for n := range perDevice {
			for d := range twins {
				select {
				case jobs <- job{d, n}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	for _, tw := range twins {
		udid := tw[0].UDID
		wg.Go(func() {
			// One session at a time, as a device runs them. A session that
			// began after the last enqueue and found nothing means the
			// device's queue is empty.
			for ctx.Err() == nil {
				last := false
				select {
				case <-enqueued:
					last = true
				default:
				}
				r := mrand.IntN(2)
				handled, err := tw[r].Connect(ctx)
				mu.Lock()
				if delivered[udid] == nil {
					delivered[udid] = map[string][]string{}
				}
				for _, h := range handled {
					delivered[udid][h.CommandUUID] = append(delivered[udid][h.CommandUUID], h.Status)
				}
				served[r] += len(handled)
				mu.Unlock()
				if err != nil {
					fail(fmt.Errorf("device %s connecting to replica %d: %w", udid, r, err))
					return
				}
				if len(handled) == 0 {
					if last {
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	<-enqueued
	checkErrs("queueing and connecting")

	if len(queued) != devices*perDevice {
		t.Fatalf("%d commands queued, want %d", len(queued), devices*perDevice)
	}
	if served[0] == 0 || served[1] == 0 {
		t.Fatalf("commands delivered by each replica: %v; want both to serve", served)
	}
	t.Logf("%d commands for %d devices, delivered %d by A and %d by B", len(queued), devices, served[0], served[1])
	for uuid, udid := range queued {
		if got := delivered[udid][uuid]; !slices.Equal(got, []string{"Acknowledged"}) {
			t.Errorf("command %s to %s: delivered and answered %v, want once, Acknowledged", uuid, udid, got)
		}
	}
	for udid, cmds := range delivered {
		for uuid := range cmds {
			if queued[uuid] != udid {
				t.Errorf("device %s was sent command %s, which was not queued for it", udid, uuid)
			}
		}
	}
	for uuid, udid := range queued {
		for _, e := range replicas {
			cmd := e.command(uuid)
			if len(cmd.Targets) != 1 || cmd.Targets[0].EnrollmentID != udid || cmd.Targets[0].Status != "Acknowledged" {
				t.Errorf("GET %s/api/v1/commands/%s = %+v, want Acknowledged by %s", e.url, uuid, cmd, udid)
			}
		}
	}
	for _, e := range replicas {
		for _, tw := range twins {
			var q struct {
				Queue []json.RawMessage `json:"queue"`
			}
			if code := e.api("GET", "/api/v1/devices/"+tw[0].UDID+"/queue", nil, &q); code != http.StatusOK || len(q.Queue) != 0 {
				t.Errorf("%s: queue of %s: %d, %d entries", e.url, tw[0].UDID, code, len(q.Queue))
			}
		}
		if m := replicaGet(t, e, "/metrics"); !strings.Contains(m, "\nbramley_queue_depth 0\n") {
			t.Errorf("%s: metrics lack bramley_queue_depth 0", e.url)
		}
	}
}

// replicaEnqueue queues one command through e's API; unlike env.enqueue it
// runs off the test goroutine and reports instead of failing.
func replicaEnqueue(ctx context.Context, e *env, udid string, command map[string]any) (string, error) {
	body, err := json.Marshal(command)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", e.url+"/api/v1/devices/"+udid+"/commands", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+e.apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, data)
	}
	var out struct {
		CommandUUID string `json:"command_uuid"`
	}
	if err := json.Unmarshal(data, &out); err != nil || out.CommandUUID == "" {
		return "", fmt.Errorf("answer %q: %v", data, err)
	}
	return out.CommandUUID, nil
}

func replicaGet(t *testing.T, e *env, path string) string {
	t.Helper()
	resp, err := e.http.Get(e.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s%s: %d", e.url, path, resp.StatusCode)
	}
	return string(b)
}

// mintToken mints a one-use enrollment token on e and returns its path
// and query, to be opened on any replica.
func mintToken(t *testing.T, e *env) string {
	t.Helper()
	var tok struct{ URL string }
	if code := e.api("POST", "/api/v1/enrollment-tokens", map[string]any{"max_uses": 1, "expires_in": "1h"}, &tok); code != http.StatusCreated {
		t.Fatalf("mint token on %s: %d", e.url, code)
	}
	rest, ok := strings.CutPrefix(tok.URL, e.url)
	if !ok {
		t.Fatalf("token URL %s is not under %s", tok.URL, e.url)
	}
	return rest
}

// replicaTokenUse opens each one-use token on both replicas at once:
// exactly one download succeeds.
func replicaTokenUse(t *testing.T, replicas ...*env) {
	for i := range 10 {
		path := mintToken(t, replicas[i%2])
		codes := make([]int, len(replicas))
		var wg sync.WaitGroup
		for r, e := range replicas {
			wg.Go(func() {
				resp, err := e.http.Get(e.url + path)
				if err != nil {
					t.Errorf("GET %s%s: %v", e.url, path, err)
					return
				}
				defer resp.Body.Close()
				_, _ = io.Copy(io.Discard, resp.Body)
				codes[r] = resp.StatusCode
			})
		}
		wg.Wait()
		sorted := slices.Sorted(slices.Values(codes))
		if !slices.Equal(sorted, []int{http.StatusOK, http.StatusGone}) {
			t.Errorf("token %d opened on both replicas at once: %v, want one 200 and one 410", i, codes)
		}
	}
}

// replicaChallenge spends one SCEP challenge with Debian's scepclient on
// both replicas at once: exactly one certificate is issued. The replica
// that refused then issues one for a fresh challenge, so its refusal was
// the spent challenge's.
func replicaChallenge(t *testing.T, replicas ...*env) {
	if _, err := exec.LookPath("scepclient"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("scepclient (Debian package scep) is not installed")
		}
		t.Skip("scepclient not installed")
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pki.EncodeCertificatePEM(replicas[0].srv.CA().Root()), 0o600); err != nil {
		t.Fatal(err)
	}
	// scep runs scepclient against e in a directory of its own, where it
	// writes the certificate to client.pem.
	scep := func(e *env, challenge, cn string) (bool, string) {
		dir := t.TempDir()
		cmd := exec.Command("scepclient", "-server-url", e.url+"/scep", "-private-key", filepath.Join(dir, "device.key"),
			"-challenge", challenge, "-cn", cn, "-keySize", "2048")
		cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+caFile)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err == nil {
			_, err = os.Stat(filepath.Join(dir, "client.pem"))
		}
		return err == nil, string(out)
	}

	challenge, cn := replicaSCEPChallenge(t, replicas[0])
	issued := make([]bool, len(replicas))
	outs := make([]string, len(replicas))
	var wg sync.WaitGroup
	for r, e := range replicas {
		wg.Go(func() { issued[r], outs[r] = scep(e, challenge, cn) })
	}
	wg.Wait()
	winner := slices.Index(issued, true)
	if winner < 0 || slices.Contains(issued[winner+1:], true) {
		t.Fatalf("one challenge on both replicas: issued %v, want exactly one:\nA: %s\nB: %s", issued, outs[0], outs[1])
	}
	loser := replicas[1-winner]
	challenge, cn = replicaSCEPChallenge(t, replicas[winner])
	if ok, out := scep(loser, challenge, cn); !ok {
		t.Fatalf("%s refused a fresh challenge too:\n%s", loser.url, out)
	}
}

// replicaSCEPChallenge downloads an enrollment profile from e and returns
// its SCEP challenge and subject common name.
func replicaSCEPChallenge(t *testing.T, e *env) (challenge, cn string) {
	t.Helper()
	resp, err := e.http.Get(e.url + mintToken(t, e))
	if err != nil {
		t.Fatal(err)
	}
	signed, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("profile download: %d %q", resp.StatusCode, signed)
	}
	content, _, err := profile.Verify(signed, e.roots)
	if err != nil {
		t.Fatal(err)
	}
	var p enrollmentProfile
	if err := plist.Unmarshal(content, &p); err != nil {
		t.Fatal(err)
	}
	sc := p.payload(t, "com.apple.security.scep")["PayloadContent"].(map[string]any)
	challenge, _ = sc["Challenge"].(string)
	cn = sc["Subject"].([]any)[0].([]any)[0].([]any)[1].(string)
	if challenge == "" || cn == "" {
		t.Fatalf("SCEP payload = %v", sc)
	}
	return challenge, cn
}
