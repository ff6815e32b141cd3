package storagetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/storage"
)

func testEnqueue(t *testing.T, s Store) {
	ctx := t.Context()
	enrollDevice(t, s, t0, "D1", "U")
	enrollDevice(t, s, t0, "D2")
	cmd := command("C1", 3, t0)
	cmd.ExpiresAt = at(time.Hour)

	// All or nothing: one unknown enrollment and nothing is queued.
	wantErr(t, s.Enqueue(ctx, cmd, []string{"D1", "NOPE"}), storage.ErrNotFound, "Enqueue to an unknown enrollment")
	equal(t, queueUUIDs(t, s, "D1", t0), []string{}, "queue after a refused Enqueue")
	_, err := s.Command(ctx, "C1", t0)
	wantErr(t, err, storage.ErrNotFound, "Command after a refused Enqueue")

	enqueue(t, s, cmd, "D1", "D2", "D1:U", "D1")
	taken := command("C1", 0, t0)
	taken.Raw = []byte("another")
	wantErr(t, s.Enqueue(ctx, taken, []string{"D2"}), storage.ErrConflict, "Enqueue of a taken CommandUUID")

	c, err := s.Command(ctx, "C1", t0)
	must(t, err, "Command")
	pending := func(id string) storage.CommandTarget {
		return storage.CommandTarget{EnrollmentID: id, Status: storage.StatusPending, UpdatedAt: t0}
	}
	equal(t, *c, storage.Command{
		UUID: "C1", RequestType: "ProfileList", Priority: 3, ExpiresAt: at(time.Hour), CreatedAt: t0,
		Raw: cmd.Raw, Targets: []storage.CommandTarget{pending("D1"), pending("D1:U"), pending("D2")},
	}, "queued command")
	_, err = s.Command(ctx, "NOPE", t0)
	wantErr(t, err, storage.ErrNotFound, "Command of an unknown UUID")

	if err := s.Enqueue(ctx, storage.NewCommand{UUID: "EMPTY", RequestType: "ProfileList", CreatedAt: t0}, []string{"D1"}); err == nil {
		t.Error("Enqueue accepted a command without its plist")
	}
	if err := s.Enqueue(ctx, command("NOBODY", 0, t0), nil); err == nil {
		t.Error("Enqueue accepted a command for nobody")
	}
}

func testNextCommandOrder(t *testing.T, s Store) {
	ctx := t.Context()
	enrollDevice(t, s, t0, "D")
	enqueue(t, s, command("A", 0, t0), "D")
	// Older by its clock but queued later: queue order decides.
	enqueue(t, s, command("B", 0, at(-time.Hour)), "D")
	enqueue(t, s, command("C", 5, t0), "D")
	enqueue(t, s, command("LOW", -1, t0), "D")
	expired := command("EXPIRED", 20, t0)
	expired.ExpiresAt = at(30 * time.Minute)
	enqueue(t, s, expired, "D")
	urgent := command("URGENT", 10, t0)
	urgent.ExpiresAt = at(2 * time.Hour)
	enqueue(t, s, urgent, "D")

	now := at(time.Hour)
	var got []string
	for range 10 {
		cmd, err := s.NextCommand(ctx, "D", false, now)
		must(t, err, "NextCommand")
		if cmd == nil {
			break
		}
		equal(t, *cmd, mdm.Command{CommandUUID: cmd.CommandUUID, RequestType: "ProfileList",
			Raw: []byte("<plist>" + cmd.CommandUUID + "</plist>")}, "command delivered")
		got = append(got, cmd.CommandUUID)
		answer(t, s, "D", cmd.CommandUUID, mdm.StatusAcknowledged, now)
	}
	equal(t, got, []string{"URGENT", "C", "A", "B", "LOW"}, "delivery order")
}

func testNextCommandDelivery(t *testing.T, s Store) {
	enrollDevice(t, s, t0, "D1")
	enrollDevice(t, s, t0, "D2")
	equal(t, next(t, s, "D1", false, t0), "", "next command of an empty queue")
	equal(t, next(t, s, "UNKNOWN", false, t0), "", "next command of an unknown enrollment")

	enqueue(t, s, command("X", 0, t0), "D2")
	equal(t, next(t, s, "D1", false, t0), "", "next command of another enrollment's command")
	equal(t, next(t, s, "D2", false, at(time.Minute)), "X", "first delivery")
	equal(t, target(t, s, "X", "D2", at(time.Minute)).DeliveredAt, at(time.Minute), "delivered at")

	// Sent again until answered, but first delivered once.
	equal(t, next(t, s, "D2", false, at(2*time.Minute)), "X", "second delivery")
	tg := target(t, s, "X", "D2", at(2*time.Minute))
	equal(t, tg.DeliveredAt, at(time.Minute), "delivered at after a second delivery")
	equal(t, tg.Status, storage.StatusPending, "status after delivery")
}

func testNextCommandNotNow(t *testing.T, s Store) {
	enrollDevice(t, s, t0, "D")
	enqueue(t, s, command("A", 0, t0), "D")
	enqueue(t, s, command("B", 0, t0), "D")
	enqueue(t, s, command("C", 0, t0), "D")
	enqueue(t, s, command("LOW", -1, t0), "D")

	equal(t, next(t, s, "D", false, t0), "A", "first command")
	answer(t, s, "D", "A", mdm.StatusNotNow, t0)
	equal(t, target(t, s, "A", "D", t0).Status, mdm.StatusNotNow, "status after NotNow")
	equal(t, next(t, s, "D", true, t0), "B", "next command skipping NotNow")
	// When the device is ready again, the NotNow'd command is first again.
	equal(t, next(t, s, "D", false, t0), "A", "next command with NotNow")
	answer(t, s, "D", "A", mdm.StatusAcknowledged, t0)
	equal(t, next(t, s, "D", false, t0), "B", "next command after A")
	answer(t, s, "D", "B", mdm.StatusNotNow, t0)
	equal(t, next(t, s, "D", true, t0), "C", "next command skipping B")
	answer(t, s, "D", "C", mdm.StatusNotNow, t0)
	equal(t, next(t, s, "D", true, t0), "LOW", "next command skipping B and C")
	answer(t, s, "D", "LOW", mdm.StatusNotNow, t0)
	equal(t, next(t, s, "D", true, t0), "", "next command skipping all, NotNow'd")
	equal(t, next(t, s, "D", false, t0), "B", "next command with all NotNow'd")

	// Priority orders Pending and NotNow entries together.
	enrollDevice(t, s, t0, "E")
	enqueue(t, s, command("E-LOW", 0, t0), "E")
	enqueue(t, s, command("E-HIGH", 5, t0), "E")
	equal(t, next(t, s, "E", false, t0), "E-HIGH", "first command")
	answer(t, s, "E", "E-HIGH", mdm.StatusNotNow, t0)
	equal(t, next(t, s, "E", false, t0), "E-HIGH", "NotNow'd command of higher priority")
	equal(t, next(t, s, "E", true, t0), "E-LOW", "next command skipping NotNow")
}

func testNextCommandExpiry(t *testing.T, s Store) {
	enrollDevice(t, s, t0, "D")
	cmd := command("X", 0, t0)
	cmd.ExpiresAt = at(time.Hour)
	enqueue(t, s, cmd, "D")

	equal(t, next(t, s, "D", false, at(59*time.Minute)), "X", "next command before expiry")
	equal(t, target(t, s, "X", "D", at(59*time.Minute)).Status, storage.StatusPending, "status before expiry")
	equal(t, next(t, s, "D", false, at(time.Hour)), "", "next command at expiry")
	equal(t, target(t, s, "X", "D", at(time.Hour)).Status, storage.StatusExpired, "status at expiry")

	// A command the device put off with NotNow expires all the same.
	later := command("LATER", 0, t0)
	later.ExpiresAt = at(2 * time.Hour)
	enqueue(t, s, later, "D")
	equal(t, next(t, s, "D", false, at(time.Hour)), "LATER", "next command")
	answer(t, s, "D", "LATER", mdm.StatusNotNow, at(time.Hour))
	equal(t, target(t, s, "LATER", "D", at(time.Hour)).Status, mdm.StatusNotNow, "NotNow before expiry")
	equal(t, target(t, s, "LATER", "D", at(2*time.Hour)).Status, storage.StatusExpired, "NotNow at expiry")
	equal(t, queueUUIDs(t, s, "D", at(2*time.Hour)), []string{"X", "LATER"}, "queue holds expired entries")
	equal(t, next(t, s, "D", false, at(2*time.Hour)), "", "next command after everything expired")

	enqueue(t, s, command("FOREVER", 0, t0), "D")
	equal(t, next(t, s, "D", false, at(1000*time.Hour)), "FOREVER", "next command without expiry")
}

func testStoreResult(t *testing.T, s Store) {
	ctx := t.Context()
	enrollDevice(t, s, t0, "D1")
	enrollDevice(t, s, t0, "D2")
	cmd := command("C", 0, t0)
	cmd.RequestType = "DeviceInformation"
	enqueue(t, s, cmd, "D1")
	enqueue(t, s, command("O", 0, t0), "D2")

	_, err := s.StoreResult(ctx, "D1", resultMsg("D1", "NOPE", mdm.StatusAcknowledged), at(30*time.Second))
	wantErr(t, err, storage.ErrNotFound, "result for an unknown command")
	// The device was seen all the same.
	equal(t, device(t, s, "D1").LastSeen, at(30*time.Second), "device last seen after an unknown result")
	equal(t, enrollment(t, s, "D1").LastSeen, at(30*time.Second), "enrollment last seen after an unknown result")
	_, err = s.StoreResult(ctx, "D1", resultMsg("D1", "O", mdm.StatusAcknowledged), t0)
	wantErr(t, err, storage.ErrNotFound, "result for another enrollment's command")
	equal(t, target(t, s, "O", "D2", t0).Status, storage.StatusPending, "other enrollment's command")

	equal(t, next(t, s, "D1", false, at(time.Minute)), "C", "next command")
	res := resultMsg("D1", "C", mdm.StatusAcknowledged)
	rt, err := s.StoreResult(ctx, "D1", res, at(2*time.Minute))
	must(t, err, "StoreResult")
	equal(t, rt, "DeviceInformation", "request type")
	want := storage.CommandTarget{
		EnrollmentID: "D1", Status: mdm.StatusAcknowledged, DeliveredAt: at(time.Minute),
		UpdatedAt: at(2 * time.Minute), Result: res.Raw,
	}
	equal(t, target(t, s, "C", "D1", at(2*time.Minute)), want, "answered target")
	equal(t, device(t, s, "D1").LastSeen, at(2*time.Minute), "device last seen")
	equal(t, enrollment(t, s, "D1").LastSeen, at(2*time.Minute), "enrollment last seen")

	// Devices repeat results after a lost response; the first answer stands.
	for _, status := range []string{mdm.StatusAcknowledged, mdm.StatusError, mdm.StatusNotNow} {
		rt, err := s.StoreResult(ctx, "D1", resultMsg("D1", "C", status), at(3*time.Minute))
		must(t, err, "repeated StoreResult %s", status)
		equal(t, rt, "DeviceInformation", "request type of a repeat")
		equal(t, target(t, s, "C", "D1", at(3*time.Minute)), want, "target after a repeated %s", status)
	}
	equal(t, next(t, s, "D1", false, at(3*time.Minute)), "", "next command after the answer")
}

func testStoreResultStatuses(t *testing.T, s Store) {
	ctx := t.Context()
	enrollDevice(t, s, t0, "D")
	for _, uuid := range []string{"ERR", "FMT", "NN", "CX", "UNSENT"} {
		enqueue(t, s, command(uuid, 0, t0), "D")
	}
	status := func(uuid string) string { return target(t, s, uuid, "D", t0).Status }

	answer(t, s, "D", "ERR", mdm.StatusError, t0)
	equal(t, status("ERR"), mdm.StatusError, "after Error")
	answer(t, s, "D", "FMT", mdm.StatusCommandFormatError, t0)
	equal(t, status("FMT"), mdm.StatusCommandFormatError, "after CommandFormatError")

	answer(t, s, "D", "NN", mdm.StatusNotNow, at(time.Minute))
	answer(t, s, "D", "NN", mdm.StatusNotNow, at(2*time.Minute))
	tg := target(t, s, "NN", "D", t0)
	equal(t, []any{tg.Status, tg.UpdatedAt}, []any{mdm.StatusNotNow, at(2 * time.Minute)}, "after two NotNow")
	answer(t, s, "D", "NN", mdm.StatusAcknowledged, at(3*time.Minute))
	equal(t, status("NN"), mdm.StatusAcknowledged, "Acknowledged after NotNow")

	// Cancelled before delivery, yet the device answered (a race with
	// the cancel): NotNow leaves it cancelled, a final answer is recorded.
	n, err := s.CancelCommand(ctx, "CX", t0)
	must(t, err, "CancelCommand")
	equal(t, n, 1, "cancelled")
	answer(t, s, "D", "CX", mdm.StatusNotNow, t0)
	equal(t, status("CX"), storage.StatusCancelled, "NotNow after Cancelled")
	answer(t, s, "D", "CX", mdm.StatusAcknowledged, t0)
	equal(t, status("CX"), mdm.StatusAcknowledged, "Acknowledged after Cancelled")

	// An answer is proof of delivery.
	answer(t, s, "D", "UNSENT", mdm.StatusAcknowledged, at(time.Hour))
	equal(t, target(t, s, "UNSENT", "D", t0).DeliveredAt, at(time.Hour), "delivered at of a command answered unseen")
}

func testCancelCommand(t *testing.T, s Store) {
	ctx := t.Context()
	_, err := s.CancelCommand(ctx, "NOPE", t0)
	wantErr(t, err, storage.ErrNotFound, "CancelCommand of an unknown command")

	for _, id := range []string{"SENT", "NOTNOW", "ANSWERED", "WAITING"} {
		enrollDevice(t, s, t0, id)
	}
	enqueue(t, s, command("X", 0, t0), "SENT", "NOTNOW", "ANSWERED", "WAITING")
	equal(t, next(t, s, "SENT", false, t0), "X", "delivery")
	equal(t, next(t, s, "NOTNOW", false, t0), "X", "delivery")
	answer(t, s, "NOTNOW", "X", mdm.StatusNotNow, t0)
	answer(t, s, "ANSWERED", "X", mdm.StatusAcknowledged, t0)

	n, err := s.CancelCommand(ctx, "X", at(time.Hour))
	must(t, err, "CancelCommand")
	equal(t, n, 1, "cancelled targets")
	c, err := s.Command(ctx, "X", at(time.Hour))
	must(t, err, "Command")
	got := map[string]string{}
	for _, tg := range c.Targets {
		got[tg.EnrollmentID] = tg.Status
	}
	equal(t, got, map[string]string{
		"SENT": storage.StatusPending, "NOTNOW": mdm.StatusNotNow,
		"ANSWERED": mdm.StatusAcknowledged, "WAITING": storage.StatusCancelled,
	}, "statuses after cancel")
	equal(t, target(t, s, "X", "WAITING", t0).UpdatedAt, at(time.Hour), "updated at of the cancelled target")
	equal(t, next(t, s, "WAITING", false, at(time.Hour)), "", "next command after cancel")
	equal(t, queueUUIDs(t, s, "WAITING", at(time.Hour)), []string{}, "queue after cancel")

	n, err = s.CancelCommand(ctx, "X", at(2*time.Hour))
	must(t, err, "repeated CancelCommand")
	equal(t, n, 0, "cancelled by a repeat")
}

func testQueue(t *testing.T, s Store) {
	ctx := t.Context()
	enrollDevice(t, s, t0, "D")
	enqueue(t, s, command("A", 0, t0), "D")
	enqueue(t, s, command("B", 5, at(time.Second)), "D")
	soon := command("SOON", 0, t0)
	soon.ExpiresAt = at(10 * time.Minute)
	enqueue(t, s, soon, "D")
	enqueue(t, s, command("DONE", 9, t0), "D")
	enqueue(t, s, command("CANCELLED", 9, t0), "D")
	answer(t, s, "D", "DONE", mdm.StatusAcknowledged, t0)
	_, err := s.CancelCommand(ctx, "CANCELLED", t0)
	must(t, err, "CancelCommand")
	equal(t, next(t, s, "D", false, at(time.Minute)), "B", "next command")
	answer(t, s, "D", "B", mdm.StatusNotNow, at(time.Minute))

	items, err := s.Queue(ctx, "D", at(time.Hour))
	must(t, err, "Queue")
	equal(t, items, []storage.QueueItem{
		{CommandUUID: "B", RequestType: "ProfileList", Status: mdm.StatusNotNow, Priority: 5,
			CreatedAt: at(time.Second), DeliveredAt: at(time.Minute)},
		{CommandUUID: "A", RequestType: "ProfileList", Status: storage.StatusPending, CreatedAt: t0},
		{CommandUUID: "SOON", RequestType: "ProfileList", Status: storage.StatusExpired,
			ExpiresAt: at(10 * time.Minute), CreatedAt: t0},
	}, "queue")
	items, err = s.Queue(ctx, "D", at(5*time.Minute))
	must(t, err, "Queue")
	equal(t, items[2].Status, storage.StatusPending, "status before expiry")

	items, err = s.Queue(ctx, "UNKNOWN", t0)
	must(t, err, "Queue of an unknown enrollment")
	equal(t, len(items), 0, "queue of an unknown enrollment")
}

func testQueueDepth(t *testing.T, s Store) {
	ctx := t.Context()
	depth := func() int64 {
		t.Helper()
		n, err := s.QueueDepth(ctx)
		must(t, err, "QueueDepth")
		return n
	}
	equal(t, depth(), 0, "depth of an empty queue")
	enrollDevice(t, s, t0, "D1")
	enrollDevice(t, s, t0, "D2")
	// QueueDepth has no clock of its own: expiry is relative to now.
	now := time.Now()
	enqueue(t, s, command("A", 0, t0), "D1", "D2")
	equal(t, depth(), 2, "depth after a command for two")
	gone := command("GONE", 0, t0)
	gone.ExpiresAt = now.Add(-time.Hour)
	enqueue(t, s, gone, "D1")
	equal(t, depth(), 2, "depth after an expired command")
	later := command("LATER", 0, t0)
	later.ExpiresAt = now.Add(time.Hour)
	enqueue(t, s, later, "D1")
	equal(t, depth(), 3, "depth after a command that expires later")
	answer(t, s, "D1", "A", mdm.StatusAcknowledged, t0)
	equal(t, depth(), 2, "depth after an answer")
	answer(t, s, "D2", "A", mdm.StatusNotNow, t0)
	equal(t, depth(), 2, "depth after NotNow")
	enqueue(t, s, command("CX", 0, t0), "D2")
	_, err := s.CancelCommand(ctx, "CX", t0)
	must(t, err, "CancelCommand")
	equal(t, depth(), 2, "depth after a cancel")
}

// testConcurrentQueues runs several devices' sessions at once, as a server
// does, to catch lock errors (SQLITE_BUSY, deadlocks) and lost updates.
func testConcurrentQueues(t *testing.T, s Store) {
	const devices, commands = 6, 15
	ctx := t.Context()
	for i := range devices {
		enrollDevice(t, s, t0, fmt.Sprintf("D%d", i))
	}
	var wg sync.WaitGroup
	errs := make(chan error, devices*2)
	for i := range devices {
		id := fmt.Sprintf("D%d", i)
		wg.Go(func() {
			for j := range commands {
				if err := s.Enqueue(ctx, command(fmt.Sprintf("%s-%d", id, j), 0, t0), []string{id}); err != nil {
					errs <- err
					return
				}
			}
		})
		wg.Go(func() { errs <- drain(ctx, s, id, devices*commands) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for i := range devices {
		id := fmt.Sprintf("D%d", i)
		// The drainer may have finished before the last enqueues.
		if err := drain(ctx, s, id, commands); err != nil {
			t.Fatal(err)
		}
		for j := range commands {
			uuid := fmt.Sprintf("%s-%d", id, j)
			equal(t, target(t, s, uuid, id, t0).Status, mdm.StatusAcknowledged, "status of %s", uuid)
		}
	}
}

// drain answers the enrollment's commands until its queue is empty.
func drain(ctx context.Context, s Store, id string, limit int) error {
	for range limit + 1 {
		cmd, err := s.NextCommand(ctx, id, false, t0)
		if err != nil || cmd == nil {
			return err
		}
		if _, err := s.StoreResult(ctx, id, resultMsg(id, cmd.CommandUUID, mdm.StatusAcknowledged), t0); err != nil {
			return err
		}
	}
	return fmt.Errorf("queue of %s did not drain", id)
}
