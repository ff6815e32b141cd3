package server

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"time"

	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/queue"
	"github.com/bramley-mdm/bramley/storage"
)

// adeEnrollHandler serves /ade/enroll, where a device in Setup Assistant
// fetches its enrollment profile with its MachineInfo signed by its Apple
// identity (enroll.ADEHandler). The Apple device CA is built in;
// --apple-device-ca adds others.
func (s *Server) adeEnrollHandler(enrollment *enroll.Service) (http.Handler, error) {
	var extra []*x509.Certificate
	if s.cfg.AppleDeviceCA != "" {
		data, err := os.ReadFile(s.cfg.AppleDeviceCA)
		if err != nil {
			return nil, fmt.Errorf("--apple-device-ca: %w", err)
		}
		if extra, err = pki.ParseCertificatesPEM(data); err != nil {
			return nil, fmt.Errorf("--apple-device-ca %s: %w", s.cfg.AppleDeviceCA, err)
		}
	}
	verifier := pki.NewAppleDeviceVerifier(extra, s.now)
	return enrollment.ADEHandler(s.store, verifier, s.cfg.MaxBody), nil
}

// queueReader lists an enrollment's unanswered commands.
type queueReader interface {
	Queue(ctx context.Context, enrollmentID string, now time.Time) ([]storage.QueueItem, error)
}

// deviceConfiguredPriority puts DeviceConfigured after every command an
// operator can queue: the API keeps priorities in 32 bits, and of equal
// priorities the older goes first.
const deviceConfiguredPriority = math.MinInt32

// awaitConfiguration is the check-in hook of Setup Assistant's "await
// device configured": when a device channel's TokenUpdate says
// AwaitingConfiguration, the device waits in Setup Assistant until it
// gets DeviceConfigured, so bramley queues it behind whatever the
// operator queued for this moment, and the enqueue pushes. A failure is
// logged: the check-in itself was stored.
//
// A device may send that TokenUpdate more than once while it waits; one
// DeviceConfigured in its queue is enough.
func awaitConfiguration(commands *queue.Service, queued queueReader, logger *slog.Logger, now func() time.Time) func(ctx context.Context, msg mdm.CheckinMessage) {
	return func(ctx context.Context, msg mdm.CheckinMessage) {
		tu, ok := msg.(*mdm.TokenUpdate)
		if !ok || !tu.AwaitingConfiguration {
			return
		}
		e := msg.Identifiers()
		if _, user := mdm.SplitID(e.ID()); user != "" {
			return // DeviceConfigured is for the device channel only
		}
		items, err := queued.Queue(ctx, e.ID(), now())
		if err != nil {
			logger.ErrorContext(ctx, "reading queue before DeviceConfigured", "enrollment_id", e.ID(), "err", err)
			return
		}
		for _, it := range items {
			if it.RequestType == "DeviceConfigured" {
				return
			}
		}
		cmd, err := mdm.NewCommand("", "DeviceConfigured", nil)
		if err == nil {
			err = commands.Enqueue(ctx, cmd, []string{e.ID()}, queue.EnqueueOptions{Priority: deviceConfiguredPriority})
		}
		if err != nil {
			logger.ErrorContext(ctx, "queueing DeviceConfigured", "enrollment_id", e.ID(), "err", err)
			return
		}
		logger.InfoContext(ctx, "DeviceConfigured queued", "enrollment_id", e.ID(), "command_uuid", cmd.CommandUUID)
	}
}
