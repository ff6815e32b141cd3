package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/sim"
)

// Bounds of `bramley sim`: it makes traffic for the operator's own test
// server, so how much and for how long are capped.
const (
	simMaxDevices  = 1000
	simMaxDuration = 24 * time.Hour
	simMinPoll     = 100 * time.Millisecond
	// simEnrollers is how many devices enroll at once.
	simEnrollers = 8
)

func simCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var (
		devices int
		route   string
		runFor  time.Duration
		token   string
		poll    time.Duration
		notNow  float64
	)
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Enroll simulated devices in a bramley on this machine and keep them answering",
		Long: `Enroll simulated devices in a bramley running on this machine, the way real
ones enroll: each downloads the enrollment profile with a token, checks its
signature, gets its identity over SCEP and checks in (Authenticate,
TokenUpdate). Then they stay connected until --for has passed, polling every
--poll (no push from Apple can reach a simulated device) and answering
commands with the results real devices send, now and then NotNow.

The token comes from --token, or is minted through the admin API with
--api-key for exactly --devices enrollments. Only a server on this machine
(localhost, 127.0.0.0/8, ::1) is accepted: sim generates traffic, and is
for your own test servers.`,
		Example: `  bramley sim --server https://127.0.0.1:8443 --ca-file ca.pem --api-key "$KEY" --devices 20 --for 5m`,
		Args:    cobra.NoArgs,
	}
	cf := addClientFlags(cmd)
	f := cmd.Flags()
	f.IntVar(&devices, "devices", 1, fmt.Sprintf("how many devices to enroll (1 to %d)", simMaxDevices))
	f.StringVar(&route, "route", "direct", "how the devices enroll: direct (an enrollment link); ota and ade are not in this build yet")
	f.DurationVar(&runFor, "for", time.Minute, "how long the devices stay connected after enrolling (at most 24h)")
	f.StringVar(&token, "token", "", "an enrollment token with uses enough for --devices (default: mint one with --api-key)")
	f.DurationVar(&poll, "poll", 30*time.Second, "how often each device connects to fetch commands (at least 100ms)")
	f.Float64Var(&notNow, "not-now", 0.05, "fraction of deferrable commands answered NotNow (0 to 1)")
	// Here the key is needed only to mint a token.
	f.Lookup("api-key").Usage = "admin API key, to mint the enrollment token when --token is not given (prefer the variable: flags show in the process list)"
	withEnvUsageFor(cmd, clientEnv...)

	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := applyEnvFor(cmd, getenv, clientEnv...); err != nil {
			return err
		}
		switch route {
		case "direct":
		case "ota", "ade":
			return fmt.Errorf("--route %s: not supported by this build yet (direct is)", route)
		default:
			return fmt.Errorf("--route %q: want direct, ota or ade", route)
		}
		switch {
		case devices < 1 || devices > simMaxDevices:
			return fmt.Errorf("--devices %d: between 1 and %d", devices, simMaxDevices)
		case runFor <= 0 || runFor > simMaxDuration:
			return fmt.Errorf("--for %s: more than 0 and at most %s", runFor, simMaxDuration)
		case poll < simMinPoll:
			return fmt.Errorf("--poll %s: at least %s", poll, simMinPoll)
		case notNow < 0 || notNow > 1:
			return fmt.Errorf("--not-now %v: between 0 and 1", notNow)
		}
		server, err := loopbackServer(cf.server)
		if err != nil {
			return err
		}
		var extra []*x509.Certificate
		if cf.caFile != "" {
			data, err := os.ReadFile(cf.caFile)
			if err != nil {
				return fmt.Errorf("--ca-file: %w", err)
			}
			if extra, err = pki.ParseCertificatesPEM(data); err != nil {
				return fmt.Errorf("--ca-file %s: %w", cf.caFile, err)
			}
		}
		ctx := cmd.Context()

		link, source := "", "the token given"
		if token != "" {
			link = strings.TrimRight(cf.server, "/") + "/enroll?token=" + url.QueryEscape(token)
		} else {
			if cf.apiKey == "" {
				return errors.New("give an enrollment token (--token) or an admin API key to mint one (--api-key or BRAMLEY_API_KEY)")
			}
			client, err := cf.client()
			if err != nil {
				return err
			}
			var tok tokenAnswer
			if _, err := client.do(ctx, http.MethodPost, "/enrollment-tokens", nil, tokenRequest{
				MaxUses: devices, ExpiresIn: "1h", Label: "bramley sim",
			}, &tok); err != nil {
				return fmt.Errorf("minting an enrollment token: %w", err)
			}
			if tok.URL == "" {
				return errors.New("minting an enrollment token: the answer has no URL")
			}
			link, source = tok.URL, fmt.Sprintf("a token minted for %d enrollments", devices)
		}

		opts := []sim.EnrollOption{
			sim.WithExtraRoots(extra...),
			sim.WithURLCheck(server.check),
			sim.WithDeviceOptions(sim.WithNotNow(notNow)),
		}
		fmt.Fprintf(stdout, "Enrolling %d simulated device(s) at %s by direct enrollment, with %s…\n", devices, server.base, source)
		started := time.Now()
		enrolled, errs := enrollAll(ctx, link, devices, opts)
		fmt.Fprintf(stdout, "Enrolled %d of %d in %s.\n", len(enrolled), devices, time.Since(started).Round(time.Millisecond))
		if len(enrolled) == 0 {
			return fmt.Errorf("no device enrolled: %w", errs[0])
		}
		for _, err := range firstN(errs, 5) {
			fmt.Fprintf(stdout, "  failed: %v\n", err)
		}

		fleet, err := sim.NewFleet(enrolled, sim.WithPoll(poll))
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Devices connect every %s (nothing can push to them); running for %s — Ctrl-C stops sooner.\n", poll, runFor)
		runCtx, cancel := context.WithTimeout(ctx, runFor)
		defer cancel()
		started = time.Now()
		if err := fleet.Run(runCtx); err != nil {
			return err
		}
		printSimSummary(stdout, fleet.Stats(), time.Since(started))
		if len(errs) > 0 {
			return fmt.Errorf("%d of %d devices failed to enroll", len(errs), devices)
		}
		return nil
	}
	return cmd
}

// enrollAll enrolls n devices through link, a few at a time. It stops
// starting new ones when ctx ends.
func enrollAll(ctx context.Context, link string, n int, opts []sim.EnrollOption) ([]*sim.Device, []error) {
	var (
		mu   sync.Mutex
		devs []*sim.Device
		errs []error
		wg   sync.WaitGroup
	)
	work := make(chan int)
	for range min(n, simEnrollers) {
		wg.Go(func() {
			for i := range work {
				name := fmt.Sprintf("Simulated iPhone %d", i+1)
				named := sim.WithDeviceOptions(func(d *sim.Device) { d.DeviceName = name })
				d, err := sim.EnrollDirect(ctx, link, slices.Concat(opts, []sim.EnrollOption{named})...)
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", name, withTrustHint(err)))
				} else {
					devs = append(devs, d)
				}
				mu.Unlock()
			}
		})
	}
feed:
	for i := range n {
		select {
		case work <- i:
		case <-ctx.Done():
			mu.Lock()
			errs = append(errs, fmt.Errorf("stopped before enrolling device %d: %w", i+1, ctx.Err()))
			mu.Unlock()
			break feed
		}
	}
	close(work)
	wg.Wait()
	return devs, errs
}

// withTrustHint says what to do when the server's certificate is not
// trusted, the usual first stumble against a bramley with its own CA.
func withTrustHint(err error) error {
	var unknown x509.UnknownAuthorityError
	if errors.As(err, &unknown) {
		return fmt.Errorf("%w\n(pass bramley's CA with --ca-file or BRAMLEY_CA_FILE; `bramley ca export` writes it)", err)
	}
	return err
}

func firstN(errs []error, n int) []error { return errs[:min(len(errs), n)] }

func printSimSummary(w io.Writer, s sim.Stats, ran time.Duration) {
	fmt.Fprintf(w, "\nSummary after %s:\n", ran.Round(time.Millisecond))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  devices enrolled\t%d\n", s.Devices)
	fmt.Fprintf(tw, "  sessions\t%d\n", s.Sessions)
	fmt.Fprintf(tw, "  commands answered\t%d\n", s.Commands())
	for _, t := range s.RequestTypes() {
		for _, status := range []string{"Acknowledged", "Error", "CommandFormatError", "NotNow"} {
			if n := s.Answered[t][status]; n > 0 {
				fmt.Fprintf(tw, "    %s\t%s %d\n", t, status, n)
			}
		}
	}
	fmt.Fprintf(tw, "  errors\t%d\n", s.Errors)
	tw.Flush()
	for _, e := range s.ErrorSamples {
		fmt.Fprintf(w, "    %s\n", e)
	}
}

// simServer is the one server sim talks to.
type simServer struct {
	base string
	port string
}

// loopbackServer accepts --server only when it names this machine: sim
// makes traffic, and is for the operator's own test servers.
func loopbackServer(raw string) (*simServer, error) {
	u, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("--server %q: want the server's base URL, such as https://127.0.0.1:8443", raw)
	}
	if !isLoopback(u.Hostname()) {
		return nil, fmt.Errorf("--server %s: bramley sim only talks to a server on this machine (localhost, 127.0.0.0/8 or ::1): it generates traffic, and is for your own test servers", u.Host)
	}
	return &simServer{base: u.Scheme + "://" + u.Host, port: effectivePort(u)}, nil
}

// check refuses any URL a device would use that leaves the server given:
// another machine, or another port on this one. Host names may differ
// (localhost and 127.0.0.1 are the same server).
func (s *simServer) check(u *url.URL) error {
	if !isLoopback(u.Hostname()) || effectivePort(u) != s.port {
		return fmt.Errorf("not the server given (%s): bramley sim talks to that server only", s.base)
	}
	return nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func effectivePort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "http" {
		return "80"
	}
	return "443"
}
