package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/micromdm/plist"
	"github.com/smallstep/scep"
	"github.com/smallstep/scep/x509util"
	"github.com/spf13/cobra"

	"github.com/bramley-mdm/bramley/api"
	"github.com/bramley-mdm/bramley/appletest"
	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/profile"
	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/sim"
)

// Bounds of `bramley bench`: it makes load, so how much and for how long
// are capped, as bramley sim's are.
const (
	benchMaxDevices     = sim.MaxFleet
	benchMaxConcurrency = 256
	benchMaxRounds      = 100
	benchMaxCommands    = 100
	benchMaxTimeout     = 2 * time.Hour
	// benchKeys is how many RSA keys the devices share (sim.KeyPool), so
	// that the client spends seconds, not minutes, making keys.
	benchKeys = 8
	// benchPushWait bounds how long a device waits for the push of its
	// commands; past it, they count as errors.
	benchPushWait = 30 * time.Second
	benchTopic    = "com.apple.mgmt.External.bramley-bench"
	maxSCEPAnswer = 1 << 20
)

// benchOptions are bench's flags.
type benchOptions struct {
	devices, concurrency, rounds, commands int
	db                                     string
	json                                   bool
	timeout                                time.Duration
	cpuProfile                             string
}

func benchCommand(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	o := benchOptions{devices: 100, concurrency: 16, rounds: 3, commands: 2, timeout: 30 * time.Minute}
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure how fast bramley enrolls and manages simulated devices",
		Long: `Measure bramley under load from simulated devices, phase by phase:

  scep      one PKIOperation (PKCSReq → CertRep) per device, with the one-time
            challenge of an enrollment profile downloaded beforehand (untimed)
  enroll    Authenticate + TokenUpdate per device, with its new identity
            (its first connection, so a TLS handshake with it included)
  idle      --rounds rounds of one Idle connect per device, nothing queued
  commands  --commands commands per device, each timed from its enqueue
            (POST /api/v1/devices/{id}/commands) to the server's answer to
            its acknowledgement; the device connects when pushed

For each phase it prints the operations that succeeded, seconds, their rate,
their 50th, 95th and 99th percentile latency (nearest rank, no
interpolation) and the errors, with the first one's text. Requests are
made --concurrency at a time.

Without --server, bench starts bramley in this process on a temporary SQLite
database, or on --db (an empty PostgreSQL database or schema, which keeps
what bench put in it), with a local fake of APNs delivering the pushes,
and reports the process's peak RSS: client and server share the process
and its CPUs. With --server it drives a running bramley on
this machine (only there: bench makes load); commands are queued with
no_push and each device connects right away, and the devices stay enrolled.
--server is a flag only: a BRAMLEY_SERVER exported for the admin commands
does not turn bench against a running server.`,
		Example: `  bramley bench --devices 2000 --concurrency 32 --rounds 5 --commands 3
  bramley bench --db 'postgres://bramley@127.0.0.1/bench?sslmode=disable' --json
  bramley bench --server https://127.0.0.1:8443 --ca-file ca.pem --api-key "$KEY"`,
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	f.IntVar(&o.devices, "devices", o.devices, fmt.Sprintf("how many devices (1 to %d)", benchMaxDevices))
	f.IntVar(&o.concurrency, "concurrency", o.concurrency, fmt.Sprintf("requests in flight at once (1 to %d)", benchMaxConcurrency))
	f.IntVar(&o.rounds, "rounds", o.rounds, fmt.Sprintf("Idle connects per device in the idle phase (0 to %d; 0 skips it)", benchMaxRounds))
	f.IntVar(&o.commands, "commands", o.commands, fmt.Sprintf("commands per device in the commands phase (0 to %d; 0 skips it)", benchMaxCommands))
	f.BoolVar(&o.json, "json", false, "print the results as JSON")
	f.DurationVar(&o.timeout, "timeout", o.timeout, "stop after this long, whatever is left (at most 2h)")
	f.StringVar(&o.cpuProfile, "cpu-profile", "", "write a CPU profile (pprof) of each phase, named after this file with the phase's name before its extension (cpu.pprof: cpu.scep.pprof, …); in-process it covers the server too")
	// No environment twin: serve's BRAMLEY_DB names a database to keep,
	// which bench would fill with devices.
	f.StringVar(&o.db, "db", "", "database of the in-process server: a postgres:// URL of an empty database or schema (default: SQLite in a temporary directory)")
	f.StringVar(&cf.server, "server", "", "base URL of a bramley running on this machine to drive (default: start one in this process)")
	f.StringVar(&cf.apiKey, "api-key", "", "admin API key of --server (prefer the variable: flags show in the process list)")
	f.StringVar(&cf.caFile, "ca-file", "", "PEM file of the CA of --server's HTTPS certificate, such as bramley ca export writes")
	withEnvUsageFor(cmd, "api-key", "ca-file")

	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := applyEnvFor(cmd, getenv, "api-key", "ca-file"); err != nil {
			return err
		}
		if err := o.validate(); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
		defer cancel()
		var target *benchTarget
		var err error
		if cf.server == "" {
			if f.Changed("api-key") || f.Changed("ca-file") {
				return errors.New("--api-key and --ca-file go with --server; without it bench starts its own server")
			}
			target, err = startBenchServer(ctx, o.db, stderr)
		} else {
			if o.db != "" {
				return errors.New("--db is for the in-process server; the one at --server has its own database")
			}
			target, err = dialBenchServer(&cf, o.concurrency)
		}
		if err != nil {
			return err
		}
		rep, benchErr := runBench(ctx, o, target, stderr)
		if target.inProcess {
			rep.PeakRSS = peakRSS()
		}
		if err := target.close(); err != nil {
			benchErr = errors.Join(benchErr, fmt.Errorf("stopping the server: %w", err))
		}
		if len(rep.Phases) > 0 {
			var err error
			if o.json {
				err = printBenchJSON(stdout, rep)
			} else {
				err = printBenchTable(stdout, o, target, rep)
			}
			if err != nil {
				return err
			}
		}
		if benchErr != nil {
			return benchErr
		}
		if n := rep.errors(); n > 0 {
			return fmt.Errorf("%d operations failed", n)
		}
		return nil
	}
	return cmd
}

func (o *benchOptions) validate() error {
	switch {
	case o.devices < 1 || o.devices > benchMaxDevices:
		return fmt.Errorf("--devices %d: between 1 and %d", o.devices, benchMaxDevices)
	case o.concurrency < 1 || o.concurrency > benchMaxConcurrency:
		return fmt.Errorf("--concurrency %d: between 1 and %d", o.concurrency, benchMaxConcurrency)
	case o.rounds < 0 || o.rounds > benchMaxRounds:
		return fmt.Errorf("--rounds %d: between 0 and %d", o.rounds, benchMaxRounds)
	case o.commands < 0 || o.commands > benchMaxCommands:
		return fmt.Errorf("--commands %d: between 0 and %d", o.commands, benchMaxCommands)
	case o.timeout <= 0 || o.timeout > benchMaxTimeout:
		return fmt.Errorf("--timeout %s: more than 0 and at most %s", o.timeout, benchMaxTimeout)
	}
	return nil
}

// benchTarget is the server bench drives.
type benchTarget struct {
	server *simServer
	api    *apiClient
	// roots are trusted for the server's TLS besides those the profile
	// installs.
	roots []*x509.Certificate
	// apns, in-process only, delivers the pushes; without it commands are
	// queued no_push.
	apns      *appletest.APNs
	inProcess bool
	about     string
	close     func() error
}

// startBenchServer starts bramley in this process on 127.0.0.1, on a
// temporary SQLite database or db, with a fake APNs and a push certificate
// for it. Only the server's errors reach stderr: an access log would cost
// more than some of the requests measured.
func startBenchServer(ctx context.Context, db string, stderr io.Writer) (*benchTarget, error) {
	var cleanups []func() error
	t := &benchTarget{inProcess: true}
	t.close = func() error {
		var errs []error
		for _, c := range slices.Backward(cleanups) {
			errs = append(errs, c())
		}
		cleanups = nil
		return errors.Join(errs...)
	}
	fail := func(err error) (*benchTarget, error) {
		_ = t.close()
		return nil, err
	}
	dir, err := os.MkdirTemp("", "bramley-bench-")
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, func() error { return os.RemoveAll(dir) })
	apns, err := appletest.StartAPNs()
	if err != nil {
		return fail(fmt.Errorf("starting the fake APNs: %w", err))
	}
	t.apns = apns
	cleanups = append(cleanups, func() error { apns.Close(); return nil })
	apnsCA := filepath.Join(dir, "apns-ca.pem")
	if err := os.WriteFile(apnsCA, apns.CACertificatePEM(), 0o600); err != nil {
		return fail(err)
	}

	cfg := server.DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.DB = db
	cfg.Listen = "127.0.0.1:0"
	cfg.APNsURL, cfg.APNsCA = apns.URL(), apnsCA
	// A key of its own: on a database used before, the first start's key
	// is not shown again.
	cfg.APIKey = api.NewKey()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fail(fmt.Errorf("listening: %w", err))
	}
	cfg.PublicURL = server.PublicURLFor(cfg, ln.Addr().String())
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: stderr}, &slog.HandlerOptions{Level: slog.LevelError}))
	srv, err := server.New(ctx, cfg, logger)
	if err != nil {
		ln.Close()
		return fail(err)
	}
	serveCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(serveCtx, ln) }()
	cleanups = append(cleanups, func() error {
		cancel()
		err := <-done
		return errors.Join(err, srv.Close())
	})

	if t.server, err = loopbackServer(srv.PublicURL()); err != nil {
		return fail(err)
	}
	t.roots = []*x509.Certificate{srv.CA().Certificate()}
	roots := x509.NewCertPool()
	roots.AddCert(srv.CA().Certificate())
	t.api = &apiClient{base: srv.PublicURL(), key: cfg.APIKey, http: benchHTTPClient(roots)}
	certPEM, keyPEM := apns.PushCertificate(benchTopic)
	if _, err := t.api.do(ctx, http.MethodPut, "/push-certificates", nil, map[string]string{
		"certificate": string(certPEM), "private_key": string(keyPEM),
	}, nil); err != nil {
		return fail(fmt.Errorf("uploading the push certificate: %w", err))
	}
	t.about = "in-process at " + srv.PublicURL() + " on SQLite in a temporary directory"
	if db != "" {
		t.about = "in-process at " + srv.PublicURL() + " on " + redactDB(db)
	}
	t.about += ", pushes through a local fake APNs"
	return t, nil
}

// dialBenchServer checks --server names this machine and sets up the admin
// client for it.
func dialBenchServer(cf *clientFlags, concurrency int) (*benchTarget, error) {
	u, err := url.Parse(strings.TrimRight(cf.server, "/"))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("--server %q: want the server's base URL, such as https://127.0.0.1:8443", cf.server)
	}
	if !isLoopback(u.Hostname()) {
		return nil, fmt.Errorf("--server %s: bramley bench only drives a server on this machine (localhost, 127.0.0.0/8 or ::1): it makes load, and is for your own test servers", u.Host)
	}
	if cf.apiKey == "" || cf.caFile == "" {
		return nil, errors.New("--server needs --api-key (or BRAMLEY_API_KEY) and --ca-file (or BRAMLEY_CA_FILE)")
	}
	srv, err := loopbackServer(cf.server)
	if err != nil {
		return nil, err
	}
	client, err := cf.client()
	if err != nil {
		return nil, err
	}
	tr := client.http.Transport.(*http.Transport)
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = concurrency, concurrency
	data, err := os.ReadFile(cf.caFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	roots, err := pki.ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("--ca-file %s: %w", cf.caFile, err)
	}
	return &benchTarget{
		server: srv, api: client, roots: roots,
		about: srv.base + ", commands queued no_push (devices connect at once)",
		close: func() error { client.http.CloseIdleConnections(); return nil },
	}, nil
}

// benchHTTPClient is the client of the admin API, profile downloads and
// SCEP: connections kept for every worker, so that those requests do not
// each pay a TLS handshake.
func benchHTTPClient(roots *x509.CertPool) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig.RootCAs = roots
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = benchMaxConcurrency, benchMaxConcurrency
	return &http.Client{Timeout: clientTimeout, Transport: tr}
}

func redactDB(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	return dsn
}

// benchReport is what bench measured; --json prints it.
type benchReport struct {
	Phases []phaseResult `json:"phases"`
	// PeakRSS is the process's peak resident set (VmHWM), in-process only.
	PeakRSS  int64         `json:"peak_rss_bytes,omitempty"`
	prepared time.Duration // token, profiles and SCEP requests, untimed
}

func (r *benchReport) errors() int {
	n := 0
	for _, p := range r.Phases {
		n += p.Errors
	}
	return n
}

// phaseResult is one phase's numbers. Ops counts the operations that
// succeeded; the rate and latencies are theirs.
type phaseResult struct {
	Name       string  `json:"name"`
	Ops        int     `json:"ops"`
	Seconds    float64 `json:"seconds"`
	OpsPerSec  float64 `json:"ops_per_sec"`
	P50        float64 `json:"p50_ms"`
	P95        float64 `json:"p95_ms"`
	P99        float64 `json:"p99_ms"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
}

// recorder collects a phase's latencies and errors from its workers.
type recorder struct {
	mu      sync.Mutex
	samples []time.Duration
	errors  int
	first   error
}

func (r *recorder) ok(d time.Duration) {
	r.mu.Lock()
	r.samples = append(r.samples, d)
	r.mu.Unlock()
}

func (r *recorder) fail(err error) {
	r.mu.Lock()
	r.errors++
	if r.first == nil {
		r.first = err
	}
	r.mu.Unlock()
}

func (r *recorder) result(name string, elapsed time.Duration) phaseResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	sorted := slices.Clone(r.samples)
	slices.Sort(sorted)
	p := phaseResult{
		Name: name, Ops: len(sorted), Seconds: elapsed.Seconds(), Errors: r.errors,
		P50: percentile(sorted, 50), P95: percentile(sorted, 95), P99: percentile(sorted, 99),
	}
	if p.Seconds > 0 {
		p.OpsPerSec = float64(p.Ops) / p.Seconds
	}
	if r.first != nil {
		p.FirstError = r.first.Error()
	}
	return p
}

// percentile is the nearest-rank percentile of sorted samples, in
// milliseconds: the smallest sample at or above which lie no more than
// 100-p percent of them. No interpolation, so it is a latency some
// operation actually had.
func percentile(sorted []time.Duration, p int) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := (p*len(sorted) + 99) / 100 // ⌈p·n/100⌉
	return float64(sorted[max(rank, 1)-1]) / float64(time.Millisecond)
}

// each runs fn(i) for every i in [0, n) on up to workers goroutines, and
// starts no more once ctx ends.
func each(ctx context.Context, n, workers int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, workers) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(i)
			}
		})
	}
	wg.Wait()
}

// benchDevice is one device through the phases.
type benchDevice struct {
	name    string
	payload profile.SCEPContent
	base    string // the MDM payload's, without /mdm/connect
	topic   string
	sign    bool

	key    *rsa.PrivateKey
	signer *x509.Certificate
	req    *scep.PKIMessage // the PKCSReq, built before the clock starts

	tried    bool
	latency  time.Duration
	answer   []byte
	err      error
	dev      *sim.Device
	enrolled bool
}

// bench is one run.
type bench struct {
	o        benchOptions
	t        *benchTarget
	progress io.Writer
	devs     []*benchDevice
	caCerts  []*x509.Certificate // SCEP's recipients
	roots    *x509.CertPool      // the devices' TLS trust
}

// runBench prepares the devices and runs the phases. The report holds
// every phase run, also when an error stopped the rest.
func runBench(ctx context.Context, o benchOptions, t *benchTarget, progress io.Writer) (*benchReport, error) {
	b := &bench{o: o, t: t, progress: progress}
	rep := &benchReport{}
	started := time.Now()
	if err := b.prepare(ctx); err != nil {
		return rep, fmt.Errorf("preparing: %w", err)
	}
	rep.prepared = time.Since(started)
	fmt.Fprintf(progress, "bench: prepared %d devices in %s (untimed)\n", len(b.devs), rep.prepared.Round(time.Millisecond))

	phases := []struct {
		name string
		run  func(context.Context) phaseResult
		skip bool
	}{
		{"scep", b.scepPhase, false},
		{"enroll", b.enrollPhase, false},
		{"idle", b.idlePhase, o.rounds == 0},
		{"commands", b.commandsPhase, o.commands == 0},
	}
	for _, ph := range phases {
		if ph.skip {
			continue
		}
		stop, err := startProfile(o.cpuProfile, ph.name)
		if err != nil {
			return rep, err
		}
		res := ph.run(ctx)
		if err := stop(); err != nil {
			return rep, err
		}
		rep.Phases = append(rep.Phases, res)
		fmt.Fprintf(progress, "bench: %s: %d ops in %.2fs, %d errors\n", res.Name, res.Ops, res.Seconds, res.Errors)
		if err := ctx.Err(); err != nil {
			return rep, fmt.Errorf("stopped in the %s phase: %w", ph.name, err)
		}
	}
	return rep, nil
}

// startProfile starts the CPU profile of a phase, when asked for, and
// returns what stops it.
func startProfile(file, phase string) (stop func() error, err error) {
	if file == "" {
		return func() error { return nil }, nil
	}
	ext := filepath.Ext(file)
	f, err := os.Create(strings.TrimSuffix(file, ext) + "." + phase + ext)
	if err != nil {
		return nil, fmt.Errorf("--cpu-profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpu-profile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// prepare mints a token for every device, downloads a profile per device
// (each carries a one-time SCEP challenge), fetches the SCEP CA and
// builds every PKCSReq, so that the scep phase times the server alone.
func (b *bench) prepare(ctx context.Context) error {
	n := b.o.devices
	var tok tokenAnswer
	if _, err := b.t.api.do(ctx, http.MethodPost, "/enrollment-tokens", nil, tokenRequest{
		MaxUses: n, ExpiresIn: "1h", Label: "bramley bench",
	}, &tok); err != nil {
		return fmt.Errorf("minting an enrollment token: %w", err)
	}
	if err := b.vet(tok.URL, "the enrollment URL"); err != nil {
		return err
	}

	b.devs = make([]*benchDevice, n)
	var roots []*x509.Certificate
	errs := make([]error, n)
	var once sync.Once
	each(ctx, n, b.o.concurrency, func(i int) {
		d, installed, err := b.fetchProfile(ctx, tok.URL)
		if err != nil {
			errs[i] = fmt.Errorf("device %d: %w", i+1, err)
			return
		}
		d.name = fmt.Sprintf("Bench iPhone %d", i+1)
		b.devs[i] = d
		once.Do(func() { roots = installed })
	})
	if err := firstError(ctx, errs); err != nil {
		return err
	}
	pool := x509.NewCertPool()
	for _, c := range slices.Concat(roots, b.t.roots) {
		pool.AddCert(c)
	}
	b.roots = pool

	first := b.devs[0].payload
	var err error
	if b.caCerts, err = b.getCACert(ctx, first); err != nil {
		return err
	}
	bits := first.Keysize
	if bits == 0 {
		bits = 1024 // Apple's default, which bramley refuses
	}
	keys, err := sim.NewKeyPool(bits, min(n, benchKeys))
	if err != nil {
		return err
	}
	each(ctx, n, runtime.GOMAXPROCS(0), func(i int) {
		d := b.devs[i]
		key, err := keys.Key(d.payload.Keysize)
		if err == nil {
			d.key = key
			d.req, d.signer, err = pkcsReq(d.payload, key, b.caCerts)
		}
		errs[i] = err
	})
	return firstError(ctx, errs)
}

func firstError(ctx context.Context, errs []error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// vet refuses any URL that leaves the server given.
func (b *bench) vet(raw, what string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("%s %q is not an http(s) URL", what, raw)
	}
	if !isLoopback(u.Hostname()) || effectivePort(u) != b.t.server.port {
		return fmt.Errorf("%s leaves the server given (%s): bramley bench talks to that server only", what, b.t.server.base)
	}
	return nil
}

// fetchProfile downloads one enrollment profile, verifies its signature
// against the roots it carries — this is a benchmark, not a trust test —
// and reads what a device needs of it.
func (b *bench) fetchProfile(ctx context.Context, link string) (*benchDevice, []*x509.Certificate, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, link, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := b.t.api.http.Do(req)
	if err != nil {
		// The link's token is a secret: the error names the page without it.
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, nil, fmt.Errorf("downloading the enrollment profile from %s: %w", b.t.server.base+"/enroll", err)
	}
	defer resp.Body.Close()
	signed, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, nil, fmt.Errorf("downloading the enrollment profile: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("downloading the enrollment profile: %w", answerError(resp.StatusCode, signed))
	}
	unverified, err := profile.Parse(signed)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the enrollment profile: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range profileRoots(unverified) {
		pool.AddCert(c)
	}
	content, _, err := profile.Verify(signed, pool)
	if err != nil {
		return nil, nil, fmt.Errorf("the enrollment profile's signature: %w", err)
	}
	p, err := profile.Parse(content)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the enrollment profile: %w", err)
	}
	d := &benchDevice{}
	var mdmPayload *profile.MDM
	for _, pl := range p.PayloadContent {
		switch pl := pl.(type) {
		case *profile.SCEP:
			d.payload = pl.PayloadContent
		case *profile.MDM:
			mdmPayload = pl
		}
	}
	if mdmPayload == nil || d.payload.URL == "" {
		return nil, nil, errors.New("the enrollment profile lacks its SCEP or MDM payload")
	}
	base, ok := strings.CutSuffix(mdmPayload.ServerURL, "/mdm/connect")
	if !ok || (mdmPayload.CheckInURL != "" && mdmPayload.CheckInURL != base+"/mdm/checkin") {
		return nil, nil, fmt.Errorf("the profile's ServerURL %q and CheckInURL %q are not bramley's", mdmPayload.ServerURL, mdmPayload.CheckInURL)
	}
	for _, u := range []string{d.payload.URL, mdmPayload.ServerURL} {
		if err := b.vet(u, "the profile's URL "+u); err != nil {
			return nil, nil, err
		}
	}
	d.base, d.topic, d.sign = base, mdmPayload.Topic, mdmPayload.SignMessage
	return d, profileRoots(p), nil
}

// profileRoots returns the certificates a profile installs as roots.
func profileRoots(p *profile.Profile) []*x509.Certificate {
	var out []*x509.Certificate
	for _, pl := range p.PayloadContent {
		switch pl := pl.(type) {
		case *profile.Root:
			if c, err := pl.Certificate(); err == nil {
				out = append(out, c)
			}
		case *profile.PEM:
			if certs, err := pl.Certificates(); err == nil {
				out = append(out, certs...)
			}
		}
	}
	return out
}

// getCACert fetches the SCEP recipients once: every device would, but it
// is not what the scep phase measures.
func (b *bench) getCACert(ctx context.Context, sc profile.SCEPContent) ([]*x509.Certificate, error) {
	u, err := url.Parse(sc.URL)
	if err != nil {
		return nil, fmt.Errorf("SCEP URL: %w", err)
	}
	q := u.Query()
	q.Set("operation", "GetCACert")
	q.Set("message", sc.Name)
	u.RawQuery = q.Encode()
	body, contentType, err := b.scepDo(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("SCEP GetCACert: %w", err)
	}
	media, _, _ := mime.ParseMediaType(contentType)
	switch media {
	case "application/x-x509-ca-cert":
		c, err := x509.ParseCertificate(body)
		if err != nil {
			return nil, fmt.Errorf("SCEP GetCACert: %w", err)
		}
		return []*x509.Certificate{c}, nil
	case "application/x-x509-ca-ra-cert":
		certs, err := scep.CACerts(body)
		if err != nil || len(certs) == 0 {
			return nil, fmt.Errorf("SCEP GetCACert: no certificate in the answer (%v)", err)
		}
		return certs, nil
	}
	return nil, fmt.Errorf("SCEP GetCACert: answer of type %q", contentType)
}

func (b *bench) scepDo(ctx context.Context, method, target string, body []byte) ([]byte, string, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, r)
	if err != nil {
		return nil, "", err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-pki-message")
	}
	resp, err := b.t.api.http.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxSCEPAnswer))
	if err != nil {
		return nil, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", answerError(resp.StatusCode, answer)
	}
	return answer, resp.Header.Get("Content-Type"), nil
}

// pkcsReq builds the PKCSReq a device sends for the SCEP payload: a CSR
// with its challenge and subject, signed by a throwaway self-signed
// certificate of the same key (RFC 8894 section 2.3).
func pkcsReq(sc profile.SCEPContent, key *rsa.PrivateKey, recipients []*x509.Certificate) (*scep.PKIMessage, *x509.Certificate, error) {
	subject, err := benchSubject(sc.Subject)
	if err != nil {
		return nil, nil, err
	}
	csrDER, err := x509util.CreateCertificateRequest(rand.Reader, &x509util.CertificateRequest{
		CertificateRequest: x509.CertificateRequest{RawSubject: subject, SignatureAlgorithm: x509.SHA256WithRSA},
		ChallengePassword:  sc.Challenge,
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating the CSR: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, nil, fmt.Errorf("creating the CSR: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial, RawSubject: subject,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating the SCEP signer certificate: %w", err)
	}
	signer, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	msg, err := scep.NewCSRRequest(csr, &scep.PKIMessage{
		MessageType: scep.PKCSReq, Recipients: recipients, SignerKey: key, SignerCert: signer,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("building the SCEP request: %w", err)
	}
	return msg, signer, nil
}

// benchSubject encodes a SCEP payload's Subject as a DER Name, in order.
// bramley's profiles name attributes by these short names only.
func benchSubject(subject [][][]string) ([]byte, error) {
	oids := map[string]asn1.ObjectIdentifier{
		"C": {2, 5, 4, 6}, "L": {2, 5, 4, 7}, "ST": {2, 5, 4, 8},
		"O": {2, 5, 4, 10}, "OU": {2, 5, 4, 11}, "CN": {2, 5, 4, 3},
	}
	var seq pkix.RDNSequence
	for _, rdn := range subject {
		var set pkix.RelativeDistinguishedNameSET
		for _, pair := range rdn {
			if len(pair) != 2 || oids[strings.ToUpper(pair[0])] == nil {
				return nil, fmt.Errorf("the SCEP payload's Subject has an attribute bench does not know: %q", pair)
			}
			set = append(set, pkix.AttributeTypeAndValue{Type: oids[strings.ToUpper(pair[0])], Value: pair[1]})
		}
		seq = append(seq, set)
	}
	return asn1.Marshal(seq)
}

// certRep checks and decrypts a CertRep as the device would, and returns
// the identity issued.
func certRep(answer []byte, req *scep.PKIMessage, caCerts []*x509.Certificate, signer *x509.Certificate, key *rsa.PrivateKey) (*x509.Certificate, error) {
	rep, err := scep.ParsePKIMessage(answer, scep.WithCACerts(caCerts))
	if err != nil {
		return nil, fmt.Errorf("SCEP CertRep does not verify with the CA certificate: %w", err)
	}
	switch {
	case rep.MessageType != scep.CertRep:
		return nil, fmt.Errorf("SCEP answered a %s, not a CertRep", rep.MessageType)
	case rep.TransactionID != req.TransactionID:
		return nil, errors.New("SCEP CertRep answers another transaction")
	case rep.CertRepMessage == nil || !bytes.Equal(rep.RecipientNonce, req.SenderNonce):
		return nil, errors.New("SCEP CertRep does not echo the request's nonce")
	case rep.PKIStatus == scep.FAILURE:
		return nil, fmt.Errorf("SCEP refused the request: failInfo %s", rep.FailInfo)
	case rep.PKIStatus != scep.SUCCESS:
		return nil, fmt.Errorf("SCEP answered pkiStatus %q", rep.PKIStatus)
	}
	if err := rep.DecryptPKIEnvelope(signer, key); err != nil {
		return nil, fmt.Errorf("decrypting the SCEP CertRep: %w", err)
	}
	if rep.Certificate == nil {
		return nil, errors.New("SCEP CertRep carries no certificate")
	}
	return rep.Certificate, nil
}

// scepPhase sends every PKCSReq. The clock runs for the requests only:
// checking and decrypting the CertReps is the device's work, done after.
func (b *bench) scepPhase(ctx context.Context) phaseResult {
	started := time.Now()
	each(ctx, len(b.devs), b.o.concurrency, func(i int) {
		d := b.devs[i]
		u, err := url.Parse(d.payload.URL)
		if err != nil {
			d.tried, d.err = true, err
			return
		}
		q := u.Query()
		q.Set("operation", "PKIOperation")
		u.RawQuery = q.Encode()
		t0 := time.Now()
		d.answer, _, d.err = b.scepDo(ctx, http.MethodPost, u.String(), d.req.Raw)
		d.latency, d.tried = time.Since(t0), true
	})
	elapsed := time.Since(started)

	// Not cut short by ctx: every answer received is checked.
	each(context.WithoutCancel(ctx), len(b.devs), runtime.GOMAXPROCS(0), func(i int) {
		d := b.devs[i]
		if !d.tried || d.err != nil {
			return
		}
		cert, err := certRep(d.answer, d.req, b.caCerts, d.signer, d.key)
		if err != nil {
			d.err = err
			return
		}
		opts := []sim.Option{sim.WithRootCAs(b.roots), sim.WithTopic(d.topic)}
		if d.sign {
			opts = append(opts, sim.WithMdmSignature())
		}
		d.dev = sim.New(d.base, cert, d.key, opts...)
		d.dev.DeviceName = d.name
	})
	var rec recorder
	for _, d := range b.devs {
		switch {
		case !d.tried:
		case d.err != nil:
			rec.fail(fmt.Errorf("%s: %w", d.name, d.err))
		default:
			rec.ok(d.latency)
		}
	}
	return rec.result("scep", elapsed)
}

// devices returns the devices that have an identity (and, with enrolled,
// that have checked in with it too).
func (b *bench) devices(enrolled bool) []*benchDevice {
	var out []*benchDevice
	for _, d := range b.devs {
		if d.dev != nil && (!enrolled || d.enrolled) {
			out = append(out, d)
		}
	}
	return out
}

func (b *bench) enrollPhase(ctx context.Context) phaseResult {
	devs := b.devices(false)
	var rec recorder
	started := time.Now()
	each(ctx, len(devs), b.o.concurrency, func(i int) {
		d := devs[i]
		t0 := time.Now()
		if err := d.dev.Enroll(ctx); err != nil {
			rec.fail(fmt.Errorf("%s: %w", d.name, err))
			return
		}
		rec.ok(time.Since(t0))
		d.enrolled = true
	})
	return rec.result("enroll", time.Since(started))
}

// idlePhase runs the rounds one after the other: a device has one session
// at a time.
func (b *bench) idlePhase(ctx context.Context) phaseResult {
	devs := b.devices(true)
	var rec recorder
	started := time.Now()
	for range b.o.rounds {
		each(ctx, len(devs), b.o.concurrency, func(i int) {
			d := devs[i]
			t0 := time.Now()
			if _, err := d.dev.Connect(ctx); err != nil {
				rec.fail(fmt.Errorf("%s: %w", d.name, err))
				return
			}
			rec.ok(time.Since(t0))
		})
	}
	return rec.result("idle", time.Since(started))
}

// benchCommandBodies are the commands queued, in turn: answered with
// results shaped like a real device's.
var benchCommandBodies = []map[string]any{
	{"request_type": "DeviceInformation", "queries": []string{"DeviceName", "OSVersion", "BuildVersion", "BatteryLevel"}},
	{"request_type": "SecurityInfo"},
	{"request_type": "InstalledApplicationList"},
}

func (b *bench) commandsPhase(ctx context.Context) phaseResult {
	devs := b.devices(true)
	wakes := make(map[string]chan struct{}, len(devs))
	if b.t.apns != nil {
		for _, d := range devs {
			wakes[hex.EncodeToString(d.dev.Token)] = make(chan struct{}, 1)
		}
		b.t.apns.OnPush(func(token []byte, pushMagic string) {
			if ch, ok := wakes[hex.EncodeToString(token)]; ok {
				select {
				case ch <- struct{}{}:
				default: // pushes coalesce, as APNs's do
				}
			}
		})
	}
	var rec recorder
	started := time.Now()
	each(ctx, len(devs), b.o.concurrency, func(i int) {
		d := devs[i]
		b.commandsFor(ctx, d, wakes[hex.EncodeToString(d.dev.Token)], &rec)
	})
	return rec.result("commands", time.Since(started))
}

// commandsFor queues the device's commands, waits for the push (when wake
// is not nil), then connects and answers until the queue is empty. Each
// command is timed from its enqueue to the answer to its acknowledgement.
func (b *bench) commandsFor(ctx context.Context, d *benchDevice, wake chan struct{}, rec *recorder) {
	type pending struct {
		uuid    string
		started time.Time
		done    bool
	}
	cmds := make([]*pending, 0, b.o.commands)
	for j := range b.o.commands {
		body := b.commandBody(j)
		var created struct {
			CommandUUID string `json:"command_uuid"`
		}
		t0 := time.Now()
		if _, err := b.t.api.do(ctx, http.MethodPost, "/devices/"+url.PathEscape(d.dev.UDID)+"/commands", nil, body, &created); err != nil {
			rec.fail(fmt.Errorf("%s: queueing %s: %w", d.name, body["request_type"], err))
			continue
		}
		cmds = append(cmds, &pending{uuid: created.CommandUUID, started: t0})
	}
	if len(cmds) == 0 {
		return
	}
	failRest := func(err error) {
		for _, c := range cmds {
			if !c.done {
				c.done = true
				rec.fail(fmt.Errorf("%s: command %s: %w", d.name, c.uuid, err))
			}
		}
	}
	if wake != nil {
		timer := time.NewTimer(benchPushWait)
		select {
		case <-wake:
		case <-timer.C:
			// Counted as failed; the device connects anyway, to leave the
			// queue empty.
			failRest(fmt.Errorf("no push within %s", benchPushWait))
		case <-ctx.Done():
			failRest(ctx.Err())
		}
		timer.Stop()
	}

	report := map[string]any{"UDID": d.dev.UDID, "Status": mdm.StatusIdle}
	var acking *pending
	for range 2*len(cmds) + 10 {
		body, err := plist.Marshal(report)
		if err != nil {
			failRest(err)
			return
		}
		resp, err := d.dev.Send(ctx, "/mdm/connect", "application/x-apple-aspen-mdm; charset=UTF-8", body)
		if err != nil {
			failRest(err)
			return
		}
		if acking != nil && !acking.done {
			acking.done = true
			rec.ok(time.Since(acking.started))
		}
		if len(resp) == 0 {
			failRest(errors.New("not delivered"))
			return
		}
		var cmd struct {
			CommandUUID string
			Command     struct{ RequestType string }
		}
		if err := plist.Unmarshal(resp, &cmd); err != nil {
			failRest(fmt.Errorf("decoding a command: %w", err))
			return
		}
		acking = nil
		for _, c := range cmds {
			if c.uuid == cmd.CommandUUID {
				acking = c
			}
		}
		report = benchAnswer(d.dev, cmd.CommandUUID, cmd.Command.RequestType)
	}
	failRest(errors.New("the server kept sending commands"))
}

func (b *bench) commandBody(j int) map[string]any {
	body := make(map[string]any)
	for k, v := range benchCommandBodies[j%len(benchCommandBodies)] {
		body[k] = v
	}
	if b.t.apns == nil {
		body["no_push"] = true
	}
	return body
}

// benchAnswer acknowledges a command with the keys a real device's result
// has (see sim's answers and the captures in mdm/testdata).
func benchAnswer(d *sim.Device, uuid, requestType string) map[string]any {
	res := map[string]any{"UDID": d.UDID, "CommandUUID": uuid, "Status": mdm.StatusAcknowledged}
	switch requestType {
	case "DeviceInformation":
		res["QueryResponses"] = map[string]any{
			"DeviceName": d.DeviceName, "OSVersion": d.OSVersion, "BuildVersion": d.BuildVersion, "BatteryLevel": 0.87,
		}
	case "SecurityInfo":
		res["SecurityInfo"] = map[string]any{
			"HardwareEncryptionCaps": 3, "PasscodePresent": true, "PasscodeCompliant": true,
			"PasscodeCompliantWithProfiles": true, "PasscodeLockGracePeriodEnforced": 0,
		}
	case "InstalledApplicationList":
		res["InstalledApplicationList"] = []any{
			map[string]any{"Identifier": "com.apple.mobilesafari", "Name": "Safari", "ShortVersion": d.OSVersion, "Version": "8619.2.8", "BundleSize": 14000000},
			map[string]any{"Identifier": "com.example.notes", "Name": "Notes Pro", "ShortVersion": "4.2", "Version": "420", "BundleSize": 52000000},
		}
	}
	return res
}

// peakRSS is this process's peak resident set size (VmHWM), in bytes; 0
// where /proc does not say.
func peakRSS() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			fields := strings.Fields(v) // "123456 kB"
			if len(fields) == 2 && fields[1] == "kB" {
				if n, err := strconv.ParseInt(fields[0], 10, 64); err == nil {
					return n << 10
				}
			}
		}
	}
	return 0
}

func printBenchJSON(w io.Writer, rep *benchReport) error {
	data, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	return writeLine(w, data)
}

// benchOps says what one operation of each phase is.
var benchOps = map[string]string{
	"scep":     "one PKIOperation PKCSReq → CertRep (challenge from a profile downloaded beforehand)",
	"enroll":   "Authenticate + TokenUpdate of one device, its first connection (TLS handshake included)",
	"idle":     "one Idle connect, nothing queued",
	"commands": "one command, from its enqueue through the API to the answer to its acknowledgement",
}

func printBenchTable(w io.Writer, o benchOptions, t *benchTarget, rep *benchReport) error {
	fmt.Fprintf(w, "bramley bench: --devices %d --concurrency %d --rounds %d --commands %d\n",
		o.devices, o.concurrency, o.rounds, o.commands)
	fmt.Fprintf(w, "server: %s\n", t.about)
	fmt.Fprintf(w, "prepared in %s (token, profiles, SCEP requests; untimed); GOMAXPROCS %d\n\n",
		rep.prepared.Round(time.Millisecond), runtime.GOMAXPROCS(0))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	// Names padded here: AlignRight would right-align them too.
	fmt.Fprintf(tw, "%-8s\tops\tseconds\tops/s\tp50 ms\tp95 ms\tp99 ms\terrors\t\n", "phase")
	for _, p := range rep.Phases {
		fmt.Fprintf(tw, "%-8s\t%d\t%.2f\t%.1f\t%.1f\t%.1f\t%.1f\t%d\t\n",
			p.Name, p.Ops, p.Seconds, p.OpsPerSec, p.P50, p.P95, p.P99, p.Errors)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	for _, p := range rep.Phases {
		fmt.Fprintf(w, "  %-8s  %s\n", p.Name, benchOps[p.Name])
	}
	for _, p := range rep.Phases {
		if p.FirstError != "" {
			fmt.Fprintf(w, "first %s error: %s\n", p.Name, p.FirstError)
		}
	}
	if rep.PeakRSS > 0 {
		fmt.Fprintf(w, "peak RSS: %.1f MiB (this process: client, server and fake APNs together)\n", float64(rep.PeakRSS)/(1<<20))
	}
	_, err := fmt.Fprintln(w)
	return err
}
