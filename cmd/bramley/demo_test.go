package main

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDemo runs `bramley demo` as a newcomer would: it exits cleanly, says
// what happened at each step, keeps the server's log off the screen unless
// asked, and leaves nothing behind.
func TestDemo(t *testing.T) {
	for _, verbose := range []bool{false, true} {
		name := "quiet"
		args := []string{"demo"}
		if verbose {
			name, args = "verbose", append(args, "--verbose")
		}
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var stdout, stderr syncBuffer
			if err := run(ctx, args, envOf(nil), &stdout, &stderr); err != nil {
				t.Fatalf("demo: %v\n%s", err, stdout.String())
			}
			out := stdout.String()
			for _, want := range []string{
				"1. Started bramley at https://127.0.0.1:",
				"2. Uploaded an Apple push certificate (topic com.apple.mgmt.External.bramley-demo)",
				"3. Minted an enrollment token good for 3 enrollments",
				"4. Enrolling 3 devices by direct enrollment",
				"- Ada's iPhone (an iPhone, serial ",
				"- Grace's iPad (an iPad, serial ",
				"- Lab MacBook Air (a MacBook Air, serial ",
				"downloaded the profile and verified its signature against bramley's CA",
				"got its identity certificate through SCEP (CN=bramley ",
				"checked in with it: Authenticate, then TokenUpdate",
				"5. Queued DeviceInformation and InstalledApplicationList for each device",
				"answered DeviceInformation (Acknowledged) and InstalledApplicationList (Acknowledged)",
				"- Ada's iPhone (iPhone14,5) runs iOS 17.5.1 (21F90) and has 2 apps: Safari, Notes Pro.",
				"- Grace's iPad (iPad13,18) runs iPadOS 17.5.1",
				"- Lab MacBook Air (Mac14,2) runs macOS 14.5 (23F79)",
				"7. Stopped bramley and the fake APNs, and deleted the temporary directory.",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			if n := strings.Count(out, "woken by "); n != 3 {
				t.Errorf("%d devices said to be woken, want 3:\n%s", n, out)
			}
			dir := regexp.MustCompile(`SQLite database in (\S+)\.\n`).FindStringSubmatch(out)
			if dir == nil {
				t.Fatalf("no temporary directory named:\n%s", out)
			}
			if _, err := os.Stat(dir[1]); !os.IsNotExist(err) {
				t.Errorf("%s is still there (%v)", dir[1], err)
			}
			logs := stderr.String()
			if verbose != strings.Contains(logs, "enrollment profile served") {
				t.Errorf("verbose=%v, stderr:\n%s", verbose, logs)
			}
			if !verbose && strings.Contains(out, "level=") {
				t.Errorf("server log on stdout:\n%s", out)
			}
		})
	}
}
