package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/bramley-mdm/bramley/appletest"
	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/sim"
)

const (
	demoTopic = "com.apple.mgmt.External.bramley-demo"
	// demoWait bounds each wait for the devices; the whole demo takes a
	// few seconds.
	demoWait = 30 * time.Second
)

func demoCommand(stdout, stderr io.Writer) *cobra.Command {
	var verbose bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Watch bramley enroll and manage a few simulated devices, start to finish",
		Long: `Run a whole MDM round trip on this machine in a few seconds: start bramley
with a temporary database, with a local fake of Apple's push service, enroll
simulated devices by every route this build supports, send them commands,
and say in words what happened at each step. Everything is deleted at the end.`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().BoolVar(&verbose, "verbose", false, "show the server's log on stderr")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var logTo io.Writer
		if verbose {
			logTo = stderr
		}
		return runDemo(cmd.Context(), stdout, logTo)
	}
	return cmd
}

// demoDevice is one simulated device of the demo and what it is.
type demoDevice struct {
	name, modelName, productName, model, osVersion, build string
}

var demoDevices = []demoDevice{
	{"Ada's iPhone", "iPhone", "iPhone14,5", "MN9H2LL/A", "17.5.1", "21F90"},
	{"Grace's iPad", "iPad", "iPad13,18", "MK2K3LL/A", "17.5.1", "21F90"},
	{"Lab MacBook Air", "MacBook Air", "Mac14,2", "Mac14,2", "14.5", "23F79"},
}

// apply makes a sim.Device play this device.
func (dd demoDevice) apply(d *sim.Device) {
	d.DeviceName, d.ModelName, d.ProductName, d.Model = dd.name, dd.modelName, dd.productName, dd.model
	d.OSVersion, d.BuildVersion = dd.osVersion, dd.build
}

// runDemo is `bramley demo`. The server's log goes to logTo, or to a file
// in the temporary directory, which is kept (and named) if the demo fails.
func runDemo(ctx context.Context, out io.Writer, logTo io.Writer) error {
	dir, err := os.MkdirTemp("", "bramley-demo-")
	if err != nil {
		return err
	}
	var logFile *os.File
	if logTo == nil {
		if logFile, err = os.OpenFile(filepath.Join(dir, "bramley.log"), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600); err != nil {
			os.RemoveAll(dir)
			return err
		}
		logTo = logFile
	}
	d := &demo{out: out, dir: dir}
	err = d.start(ctx, slog.New(slog.NewTextHandler(&lockedWriter{w: logTo}, nil)))
	if err == nil {
		err = d.run(ctx)
	}
	d.stop()
	if logFile != nil {
		logFile.Close()
	}
	if err != nil {
		if logFile != nil {
			return fmt.Errorf("%w\n(the server's log is in %s)", err, logFile.Name())
		}
		os.RemoveAll(dir)
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	d.say("7. Stopped bramley and the fake APNs, and deleted the temporary directory.\n")
	d.say("\nThat is the round trip every managed device makes. To run bramley for real: bramley serve\n")
	d.say("(it prints an enrollment URL and an admin API key); bramley sim points simulated devices at it.\n")
	return nil
}

// demo is a running demo: a server, the fake APNs, and the devices.
type demo struct {
	out  io.Writer
	dir  string
	apns *appletest.APNs
	srv  *server.Server
	api  *apiClient

	stopServer func() error
	devices    []*sim.Device
	names      map[*sim.Device]demoDevice
}

func (d *demo) say(format string, args ...any) { fmt.Fprintf(d.out, format, args...) }

// start runs the fake APNs and bramley, pointed at it, on 127.0.0.1.
func (d *demo) start(ctx context.Context, logger *slog.Logger) error {
	apns, err := appletest.StartAPNs()
	if err != nil {
		return fmt.Errorf("starting the fake APNs: %w", err)
	}
	d.apns = apns
	apnsCA := filepath.Join(d.dir, "apns-ca.pem")
	if err := os.WriteFile(apnsCA, apns.CACertificatePEM(), 0o600); err != nil {
		return err
	}
	cfg := server.DefaultConfig()
	cfg.DataDir = filepath.Join(d.dir, "data")
	cfg.Listen = "127.0.0.1:0"
	cfg.APNsURL, cfg.APNsCA = apns.URL(), apnsCA
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	cfg.PublicURL = server.PublicURLFor(cfg, ln.Addr().String())
	srv, err := server.New(ctx, cfg, logger)
	if err != nil {
		ln.Close()
		return err
	}
	d.srv = srv
	serveCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(serveCtx, ln) }()
	d.stopServer = func() error {
		cancel()
		err := <-done
		return errors.Join(err, srv.Close())
	}

	roots := x509.NewCertPool()
	roots.AddCert(srv.CA().Certificate())
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	d.api = &apiClient{base: srv.PublicURL(), key: srv.AdminKey(), http: &http.Client{Timeout: clientTimeout, Transport: transport}}
	d.say("1. Started bramley at %s with an empty SQLite database in %s.\n", srv.PublicURL(), d.dir)
	d.say("   Apple's push service (APNs) is played by a local fake at %s.\n", apns.URL())
	return nil
}

// stop stops whatever start started.
func (d *demo) stop() {
	if d.stopServer != nil {
		_ = d.stopServer()
		d.stopServer = nil
	}
	if d.apns != nil {
		d.apns.Close()
		d.apns = nil
	}
}

func (d *demo) run(ctx context.Context) error {
	// Push certificate: its topic is what enrolled devices listen on.
	certPEM, keyPEM := d.apns.PushCertificate(demoTopic)
	var info struct {
		Topic string `json:"topic"`
	}
	if _, err := d.api.do(ctx, http.MethodPut, "/push-certificates", nil, map[string]string{
		"certificate": string(certPEM), "private_key": string(keyPEM),
	}, &info); err != nil {
		return fmt.Errorf("uploading the push certificate: %w", err)
	}
	d.say("2. Uploaded an Apple push certificate (topic %s) through the admin API.\n", info.Topic)
	d.say("   Devices that enroll are told to listen for pushes on that topic.\n")

	var tok tokenAnswer
	if _, err := d.api.do(ctx, http.MethodPost, "/enrollment-tokens", nil, tokenRequest{
		MaxUses: len(demoDevices), ExpiresIn: "10m", Label: "bramley demo",
	}, &tok); err != nil {
		return fmt.Errorf("minting an enrollment token: %w", err)
	}
	d.say("3. Minted an enrollment token good for %d enrollments. A person would open its link on the device:\n", len(demoDevices))
	d.say("   %s\n", shortLink(tok.URL))

	if err := d.enroll(ctx, tok.URL); err != nil {
		return err
	}
	return d.manage(ctx)
}

// enroll enrolls each demo device by the direct route.
func (d *demo) enroll(ctx context.Context, link string) error {
	d.say("4. Enrolling %d devices by direct enrollment, the route a person takes by opening the link\n", len(demoDevices))
	d.say("   (over-the-air and Automated Device Enrollment are not in this build yet):\n")
	d.names = make(map[*sim.Device]demoDevice)
	ca := d.srv.CA().Certificate()
	for _, dd := range demoDevices {
		dev, err := sim.EnrollDirect(ctx, link, sim.WithProfileRoots(ca), sim.WithDeviceOptions(dd.apply))
		if err != nil {
			return fmt.Errorf("enrolling %s: %w", dd.name, err)
		}
		d.devices = append(d.devices, dev)
		d.names[dev] = dd
		d.say("   - %s (%s %s, serial %s):\n", dd.name, article(dd.modelName), dd.modelName, dev.SerialNumber)
		d.say("       downloaded the profile and verified its signature against bramley's CA,\n")
		d.say("       got its identity certificate through SCEP (CN=%s),\n", dev.Certificate().Subject.CommonName)
		d.say("       checked in with it: Authenticate, then TokenUpdate with its push token.\n")
	}
	return nil
}

// answer is one command a device answered.
type answer struct {
	dev         *sim.Device
	requestType string
	status      string
}

// manage queues commands, lets the pushes wake the devices, and shows
// what they answered.
func (d *demo) manage(ctx context.Context) error {
	var mu sync.Mutex
	var answers []answer
	fleet, err := sim.NewFleet(d.devices, sim.WithHandled(func(dev *sim.Device, h sim.Handled) {
		mu.Lock()
		defer mu.Unlock()
		answers = append(answers, answer{dev, h.RequestType, h.Status})
	}))
	if err != nil {
		return err
	}
	d.apns.OnPush(fleet.Push)
	fleetCtx, stopFleet := context.WithCancel(ctx)
	fleetDone := make(chan error, 1)
	go func() { fleetDone <- fleet.Run(fleetCtx) }()
	defer func() {
		stopFleet()
		<-fleetDone
	}()

	// Each device connects once as it starts, finding nothing; waiting for
	// that makes sure what follows is the pushes' doing.
	if err := waitFor(ctx, func() bool { return fleet.Stats().Sessions >= len(d.devices) }); err != nil {
		return fmt.Errorf("the devices did not connect: %w", err)
	}

	type queued struct{ info, apps string }
	cmds := make(map[*sim.Device]queued)
	for _, dev := range d.devices {
		var q queued
		for _, c := range []struct {
			uuid *string
			body map[string]any
		}{
			{&q.info, map[string]any{"request_type": "DeviceInformation", "queries": []string{"DeviceName", "ProductName", "OSVersion", "BuildVersion"}}},
			{&q.apps, map[string]any{"request_type": "InstalledApplicationList"}},
		} {
			var created struct {
				CommandUUID string `json:"command_uuid"`
			}
			if _, err := d.api.do(ctx, http.MethodPost, "/devices/"+url.PathEscape(dev.UDID)+"/commands", nil, c.body, &created); err != nil {
				return fmt.Errorf("queueing %s for %s: %w", c.body["request_type"], d.names[dev].name, err)
			}
			*c.uuid = created.CommandUUID
		}
		cmds[dev] = q
	}
	d.say("5. Queued DeviceInformation and InstalledApplicationList for each device. For each command bramley\n")
	d.say("   sent the device a push through APNs; woken, the device connected and answered:\n")

	results := make(map[string]map[string]any)
	for _, dev := range d.devices {
		for _, uuid := range []string{cmds[dev].info, cmds[dev].apps} {
			res, err := d.waitAnswered(ctx, uuid)
			if err != nil {
				return fmt.Errorf("%s: %w", d.names[dev].name, err)
			}
			results[uuid] = res
		}
	}
	pushes := make(map[string]int)
	for _, n := range d.apns.Received() {
		if n.Status == http.StatusOK {
			pushes[string(n.Token)]++
		}
	}
	mu.Lock()
	for _, dev := range d.devices {
		var parts []string
		for _, a := range answers {
			if a.dev == dev {
				parts = append(parts, fmt.Sprintf("%s (%s)", a.requestType, a.status))
			}
		}
		d.say("   - %s, woken by %s, answered %s.\n", d.names[dev].name, plural(pushes[string(dev.Token)], "push", "pushes"), strings.Join(parts, " and "))
	}
	mu.Unlock()

	d.say("6. What came back, read through the admin API (GET /api/v1/commands/{uuid}):\n")
	for _, dev := range d.devices {
		dd := d.names[dev]
		qr, _ := results[cmds[dev].info]["QueryResponses"].(map[string]any)
		apps, _ := results[cmds[dev].apps]["InstalledApplicationList"].([]any)
		var appNames []string
		for _, a := range apps {
			if m, ok := a.(map[string]any); ok {
				appNames = append(appNames, fmt.Sprint(m["Name"]))
			}
		}
		d.say("   - %v (%v) runs %s %v (%v) and has %s: %s.\n",
			qr["DeviceName"], qr["ProductName"], osName(dd.modelName), qr["OSVersion"], qr["BuildVersion"],
			plural(len(apps), "app", "apps"), strings.Join(appNames, ", "))
	}
	return nil
}

// waitAnswered waits until the command's one target has a final status
// and returns the device's result.
func (d *demo) waitAnswered(ctx context.Context, uuid string) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, demoWait)
	defer cancel()
	for {
		var view struct {
			RequestType string `json:"request_type"`
			Targets     []struct {
				Status string         `json:"status"`
				Result map[string]any `json:"result"`
			} `json:"targets"`
		}
		if _, err := d.api.do(ctx, http.MethodGet, "/commands/"+url.PathEscape(uuid), nil, nil, &view); err != nil {
			return nil, err
		}
		if len(view.Targets) == 1 {
			switch t := view.Targets[0]; t.Status {
			case "Acknowledged":
				return t.Result, nil
			case "Error", "CommandFormatError":
				return nil, fmt.Errorf("%s answered %s: %v", view.RequestType, t.Status, t.Result)
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no answer to %s within %s", view.RequestType, demoWait)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitFor polls cond until it holds, for at most demoWait.
func waitFor(ctx context.Context, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, demoWait)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

func osName(modelName string) string {
	switch {
	case strings.HasPrefix(modelName, "iPad"):
		return "iPadOS"
	case strings.HasPrefix(modelName, "iPhone"):
		return "iOS"
	}
	return "macOS"
}

func article(word string) string {
	if strings.ContainsRune("AEIOUaeiou", rune(word[0])) {
		return "an"
	}
	return "a"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// shortLink shows an enrollment link with its token cut short: enough to
// recognise, and the demo's token dies with it anyway.
func shortLink(link string) string {
	i := strings.Index(link, "token=")
	if i < 0 || len(link) < i+len("token=")+8 {
		return link
	}
	return link[:i+len("token=")+8] + "…"
}

// lockedWriter serialises writes of the server's goroutines to one writer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
