package api

import (
	"context"
	"time"

	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/queue"
	"github.com/bramley-mdm/bramley/storage"
)

// Store is what the admin API reads.
type Store interface {
	// Devices lists devices matching the filter, ordered by ID.
	Devices(ctx context.Context, f storage.DeviceFilter) ([]storage.Device, error)
	// Device returns one device by device ID; storage.ErrNotFound when unknown.
	Device(ctx context.Context, deviceID string) (*storage.Device, error)
	// Enrollment returns one enrollment (device or user channel) by
	// enrollment ID; storage.ErrNotFound when unknown.
	Enrollment(ctx context.Context, enrollmentID string) (*storage.Enrollment, error)
	// Enrollments lists a device's channels, device channel first.
	Enrollments(ctx context.Context, deviceID string) ([]storage.Enrollment, error)
}

// CommandStore reads and cancels commands.
type CommandStore interface {
	// Command returns a command and its state on every target;
	// storage.ErrNotFound when unknown. Pending targets past the command's
	// expiry read as storage.StatusExpired.
	Command(ctx context.Context, uuid string, now time.Time) (*storage.Command, error)
	// Queue lists the enrollment's unanswered commands in delivery order
	// (Pending and NotNow, expired ones marked Expired).
	Queue(ctx context.Context, enrollmentID string, now time.Time) ([]storage.QueueItem, error)
	// CancelCommand cancels the command on every target that has not yet
	// been delivered and not answered, and returns how many it cancelled.
	// storage.ErrNotFound when the command is unknown.
	CancelCommand(ctx context.Context, uuid string, now time.Time) (int, error)
}

// KeyStore keeps admin API keys, hashed.
type KeyStore interface {
	// APIKeyExists reports whether a key with this SHA-256 hash exists.
	APIKeyExists(ctx context.Context, hash []byte) (bool, error)
	// CreateAPIKey stores a key's hash. Idempotent.
	CreateAPIKey(ctx context.Context, hash []byte, label string, now time.Time) error
}

// Enqueuer queues commands.
type Enqueuer interface {
	Enqueue(ctx context.Context, cmd *mdm.Command, enrollmentIDs []string, opts queue.EnqueueOptions) error
}
