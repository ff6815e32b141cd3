package server_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/bramley-mdm/bramley/server"
	"github.com/bramley-mdm/bramley/sim"
)

// TestDeviceLifecycle enrolls a simulated device over real HTTPS with
// mutual TLS, sends it commands through the admin API and reads the results
// back, on every database.
func TestDeviceLifecycle(t *testing.T) {
	for name, db := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := start(t, db(t), nil)
			ctx := context.Background()
			dev := e.device()
			if err := dev.Enroll(ctx); err != nil {
				t.Fatalf("enroll: %v", err)
			}

			var list struct {
				Devices []struct {
					ID           string `json:"id"`
					SerialNumber string `json:"serial_number"`
					Enrolled     bool   `json:"enrolled"`
				} `json:"devices"`
			}
			if code := e.api("GET", "/api/v1/devices?serial_number="+dev.SerialNumber, nil, &list); code != http.StatusOK {
				t.Fatalf("list devices: %d", code)
			}
			if len(list.Devices) != 1 || list.Devices[0].ID != dev.UDID || !list.Devices[0].Enrolled {
				t.Fatalf("devices = %+v, want the one enrolled device %s", list.Devices, dev.UDID)
			}

			uuid := e.enqueue(dev.UDID, map[string]any{"request_type": "DeviceInformation", "queries": []string{"DeviceName", "OSVersion"}})
			var queue struct {
				Queue []struct {
					CommandUUID string `json:"command_uuid"`
				} `json:"queue"`
			}
			if e.api("GET", "/api/v1/devices/"+dev.UDID+"/queue", nil, &queue); len(queue.Queue) != 1 || queue.Queue[0].CommandUUID != uuid {
				t.Fatalf("queue = %+v, want %s", queue, uuid)
			}

			handled, err := dev.Connect(ctx)
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			if len(handled) != 1 || handled[0].CommandUUID != uuid || handled[0].Status != "Acknowledged" {
				t.Fatalf("handled = %+v", handled)
			}
			cmd := e.command(uuid)
			if len(cmd.Targets) != 1 || cmd.Targets[0].Status != "Acknowledged" {
				t.Fatalf("command = %+v", cmd)
			}
			qr, _ := cmd.Targets[0].Result["QueryResponses"].(map[string]any)
			if qr["DeviceName"] != dev.DeviceName || qr["OSVersion"] != dev.OSVersion {
				t.Fatalf("result QueryResponses = %v", qr)
			}
			if e.api("GET", "/api/v1/devices/"+dev.UDID+"/queue", nil, &queue); len(queue.Queue) != 0 {
				t.Fatalf("queue after acknowledge = %+v, want empty", queue)
			}
			// A second session finds nothing to do: a zero-byte 200.
			if handled, err := dev.Connect(ctx); err != nil || len(handled) != 0 {
				t.Fatalf("idle connect: %v, %+v", err, handled)
			}
		})
	}
}

// TestQueueOrderAndNotNow checks priority-then-age delivery, NotNow holding
// a command for a later session, and cancellation before delivery.
func TestQueueOrderAndNotNow(t *testing.T) {
	for name, db := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := start(t, db(t), nil)
			ctx := context.Background()
			dev := e.device(sim.WithNotNow(1)) // NotNow to everything that may be deferred
			if err := dev.Enroll(ctx); err != nil {
				t.Fatal(err)
			}
			low := e.enqueue(dev.UDID, map[string]any{"request_type": "SecurityInfo"})
			high := e.enqueue(dev.UDID, map[string]any{"request_type": "ProfileList", "priority": 10})
			restart := e.enqueue(dev.UDID, map[string]any{"request_type": "RestartDevice"})
			cancelled := e.enqueue(dev.UDID, map[string]any{"request_type": "ProfileList", "priority": -5})
			var del struct {
				Cancelled int `json:"cancelled"`
			}
			if code := e.api("DELETE", "/api/v1/commands/"+cancelled, nil, &del); code != http.StatusOK || del.Cancelled != 1 {
				t.Fatalf("cancel: %d %+v", code, del)
			}

			handled, err := dev.Connect(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// ProfileList never answers NotNow; SecurityInfo does here, and
			// once it has, this session skips NotNow'd commands.
			got := []string{}
			for _, h := range handled {
				got = append(got, h.CommandUUID+"="+h.Status)
			}
			want := []string{high + "=Acknowledged", low + "=NotNow", restart + "=NotNow"}
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Fatalf("session 1 = %v, want %v", got, want)
			}
			if st := e.command(cancelled).Targets[0].Status; st != "Cancelled" {
				t.Fatalf("cancelled command status = %s", st)
			}
			// Unlocked, the device comes back by itself; the NotNow'd
			// commands are offered again, in order.
			dev.SetNotNow(0)
			handled, err = dev.Connect(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(handled) != 2 || handled[0].CommandUUID != low || handled[1].CommandUUID != restart {
				t.Fatalf("session 2 = %+v", handled)
			}
			if code := e.api("DELETE", "/api/v1/commands/"+high, nil, nil); code != http.StatusConflict {
				t.Fatalf("cancelling an answered command: %d, want 409", code)
			}
		})
	}
}

// TestCheckinRefusals covers hostile device input: each gets a clear 4xx,
// never 401 (which unenrolls a device), and changes nothing.
func TestCheckinRefusals(t *testing.T) {
	e := start(t, "", func(c *server.Config) { c.MaxBody = 8192 })
	ctx := context.Background()
	dev := e.device()
	if err := dev.Enroll(ctx); err != nil {
		t.Fatal(err)
	}
	before := e.deviceJSON(dev.UDID)

	impostor := e.device()
	impostor.UDID = dev.UDID
	impostor.Topic = "com.apple.mgmt.External.impostor"

	foreign := foreignDevice(t, e)
	foreign.UDID = dev.UDID

	noCert := sim.New(e.url, dev.Certificate(), nil, sim.WithRootCAs(e.roots), sim.WithoutIdentity())

	const checkinType = "application/x-apple-aspen-mdm-checkin"
	cases := []struct {
		name string
		send func() error
		want int
	}{
		{"not a plist", func() error {
			_, err := dev.Send(ctx, "/mdm/checkin", checkinType, []byte("hello"))
			return err
		}, http.StatusBadRequest},
		{"plist array", func() error {
			_, err := dev.Send(ctx, "/mdm/checkin", checkinType, []byte(plistArray))
			return err
		}, http.StatusBadRequest},
		{"unknown MessageType", func() error {
			_, err := dev.Send(ctx, "/mdm/checkin", checkinType, plistDict(t, map[string]any{"MessageType": "Bogus", "UDID": dev.UDID}))
			return err
		}, http.StatusBadRequest},
		{"TokenUpdate without Token", func() error {
			_, err := dev.Send(ctx, "/mdm/checkin", checkinType, plistDict(t, map[string]any{"MessageType": "TokenUpdate", "UDID": dev.UDID, "Topic": dev.Topic, "PushMagic": "x"}))
			return err
		}, http.StatusBadRequest},
		{"connect result without Status", func() error {
			_, err := dev.Send(ctx, "/mdm/connect", "application/x-apple-aspen-mdm", plistDict(t, map[string]any{"UDID": dev.UDID}))
			return err
		}, http.StatusBadRequest},
		{"body over the cap", func() error {
			_, err := dev.Send(ctx, "/mdm/checkin", checkinType, plistDict(t, map[string]any{"MessageType": "TokenUpdate", "UDID": dev.UDID, "Pad": strings.Repeat("x", 9000)}))
			return err
		}, http.StatusRequestEntityTooLarge},
		{"no client certificate", func() error { return noCert.TokenUpdate(ctx) }, http.StatusBadRequest},
		{"certificate from another CA", func() error { return foreign.TokenUpdate(ctx) }, http.StatusForbidden},
		{"another bramley certificate posing as the device", func() error { return impostor.TokenUpdate(ctx) }, http.StatusForbidden},
		{"impostor connect", func() error { _, err := impostor.Connect(ctx); return err }, http.StatusForbidden},
		{"impostor re-Authenticate", func() error { return impostor.Authenticate(ctx) }, http.StatusForbidden},
		{"UserAuthenticate is declined", func() error {
			_, err := dev.Send(ctx, "/mdm/checkin", checkinType, plistDict(t, map[string]any{"MessageType": "UserAuthenticate", "UDID": dev.UDID, "UserID": "A1B2"}))
			return err
		}, http.StatusGone},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			err := tc.send()
			var se *sim.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want status %d", err, tc.want)
			}
			if se.Status != tc.want {
				t.Fatalf("status = %d (%s), want %d", se.Status, se.Body, tc.want)
			}
		})
	}
	if after := e.deviceJSON(dev.UDID); after != before {
		t.Fatalf("device changed by refused requests:\nbefore %s\nafter  %s", before, after)
	}
	var list struct {
		Devices []any `json:"devices"`
	}
	if e.api("GET", "/api/v1/devices", nil, &list); len(list.Devices) != 1 {
		t.Fatalf("%d devices after refused requests, want 1", len(list.Devices))
	}
	if strings.Contains(e.logs.String(), "http_status=401") {
		t.Fatal("a device request was answered 401")
	}
}
