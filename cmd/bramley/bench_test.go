package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/storage/storagetest"
)

// benchJSON is what bench --json prints.
type benchJSON struct {
	Phases []struct {
		Name       string  `json:"name"`
		Ops        int     `json:"ops"`
		Seconds    float64 `json:"seconds"`
		OpsPerSec  float64 `json:"ops_per_sec"`
		P50        float64 `json:"p50_ms"`
		P95        float64 `json:"p95_ms"`
		P99        float64 `json:"p99_ms"`
		Errors     int     `json:"errors"`
		FirstError string  `json:"first_error"`
	} `json:"phases"`
	PeakRSS int64 `json:"peak_rss_bytes"`
}

// runBenchJSON runs bench with args and --json and checks every phase ran
// the operations expected, without error.
func runBenchJSON(t *testing.T, getenv func(string) string, args []string, want map[string]int) benchJSON {
	t.Helper()
	out, err := bramley(t, getenv, append([]string{"bench", "--json"}, args...)...)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out)
	}
	var rep benchJSON
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("bench --json printed no JSON: %v\n%s", err, out)
	}
	var names []string
	for _, p := range rep.Phases {
		names = append(names, p.Name)
		if p.Ops != want[p.Name] || p.Errors != 0 {
			t.Errorf("phase %s: %d ops, %d errors (%s); want %d ops, no error", p.Name, p.Ops, p.Errors, p.FirstError, want[p.Name])
		}
		if p.Seconds <= 0 || p.OpsPerSec <= 0 {
			t.Errorf("phase %s: %v seconds, %v ops/s; want both positive", p.Name, p.Seconds, p.OpsPerSec)
		}
		if !(0 < p.P50 && p.P50 <= p.P95 && p.P95 <= p.P99) {
			t.Errorf("phase %s: percentiles %v, %v, %v ms; want 0 < p50 ≤ p95 ≤ p99", p.Name, p.P50, p.P95, p.P99)
		}
	}
	if got := strings.Join(names, ","); got != "scep,enroll,idle,commands" {
		t.Errorf("phases %s; want scep,enroll,idle,commands", got)
	}
	return rep
}

// TestBench runs bench in-process on SQLite: 20 devices through every
// phase, the counts exact and nothing failing.
func TestBench(t *testing.T) {
	rep := runBenchJSON(t, envOf(nil),
		[]string{"--devices", "20", "--concurrency", "4", "--rounds", "2", "--commands", "2"},
		map[string]int{"scep": 20, "enroll": 20, "idle": 40, "commands": 40})
	if runtime.GOOS == "linux" && rep.PeakRSS <= 0 {
		t.Errorf("peak_rss_bytes %d; want the process's VmHWM", rep.PeakRSS)
	}
}

// TestBenchPostgres is TestBench on PostgreSQL, in a schema of its own.
func TestBenchPostgres(t *testing.T) {
	dsn := storagetest.PostgresURL(t)
	runBenchJSON(t, envOf(nil),
		[]string{"--db", dsn, "--devices", "20", "--concurrency", "4", "--rounds", "2", "--commands", "2"},
		map[string]int{"scep": 20, "enroll": 20, "idle": 40, "commands": 40})
}

// TestBenchServer drives a running bramley: commands go no_push and the
// devices connect at once; no RSS is reported, the server being elsewhere.
func TestBenchServer(t *testing.T) {
	env, _ := startSimServer(t)
	server := env["BRAMLEY_SERVER"]
	delete(env, "BRAMLEY_SERVER") // bench's --server is a flag only
	rep := runBenchJSON(t, envOf(env),
		[]string{"--server", server, "--devices", "5", "--concurrency", "2", "--rounds", "1", "--commands", "3"},
		map[string]int{"scep": 5, "enroll": 5, "idle": 5, "commands": 15})
	if rep.PeakRSS != 0 {
		t.Errorf("peak_rss_bytes %d for an outside server; want none", rep.PeakRSS)
	}
}

// TestBenchTable: without --json, a table of the phases, what each
// operation is, and the peak RSS; a CPU profile of each phase.
func TestBenchTable(t *testing.T) {
	dir := t.TempDir()
	out, err := bramley(t, envOf(nil), "bench", "--devices", "3", "--concurrency", "2", "--rounds", "1", "--commands", "1",
		"--cpu-profile", filepath.Join(dir, "cpu.pprof"))
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out)
	}
	for _, phase := range []string{"scep", "enroll", "idle", "commands"} {
		if fi, err := os.Stat(filepath.Join(dir, "cpu."+phase+".pprof")); err != nil || fi.Size() == 0 {
			t.Errorf("no CPU profile of the %s phase: %v", phase, err)
		}
	}
	for _, re := range []string{
		`(?m)^\s*phase\s+ops\s+seconds\s+ops/s\s+p50 ms\s+p95 ms\s+p99 ms\s+errors\s*$`,
		`(?m)^\s*scep\s+3\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+0\s*$`,
		`(?m)^\s*enroll\s+3\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+0\s*$`,
		`(?m)^\s*idle\s+3\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+0\s*$`,
		`(?m)^\s*commands\s+3\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+0\s*$`,
		`commands\s+one command, from its enqueue`,
		`server: in-process at https://127\.0\.0\.1:\d+ on SQLite`,
		`peak RSS: [\d.]+ MiB \(this process: client, server and fake APNs together\)`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output does not match %s:\n%s", re, out)
		}
	}
}

// TestBenchRefuses: flags out of bounds, and servers elsewhere, are
// refused before anything runs.
func TestBenchRefuses(t *testing.T) {
	caFile := writeFile(t, t.TempDir(), "ca.pem", nil)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"another machine", []string{"--server", "https://mdm.example.com:8443", "--api-key", testAPIKey, "--ca-file", caFile}, nil, "only drives a server on this machine"},
		{"another machine by address", []string{"--server", "https://192.0.2.7:8443"}, map[string]string{"BRAMLEY_API_KEY": testAPIKey, "BRAMLEY_CA_FILE": caFile}, "only drives a server on this machine"},
		{"server without key", []string{"--server", "https://127.0.0.1:8443"}, nil, "--server needs --api-key"},
		{"db with server", []string{"--server", "https://127.0.0.1:8443", "--db", "postgres://localhost/x"}, nil, "--db is for the in-process server"},
		{"key without server", []string{"--api-key", testAPIKey}, nil, "go with --server"},
		{"no devices", []string{"--devices", "0"}, nil, "--devices 0"},
		{"too many devices", []string{"--devices", "10001"}, nil, "--devices 10001"},
		{"too much concurrency", []string{"--concurrency", "1000"}, nil, "--concurrency 1000"},
		{"negative rounds", []string{"--rounds", "-1"}, nil, "--rounds -1"},
		{"too many commands", []string{"--commands", "101"}, nil, "--commands 101"},
		{"too long", []string{"--timeout", "3h"}, nil, "--timeout 3h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := bramley(t, envOf(tt.env), append([]string{"bench"}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("bench %s: %v; want an error saying %q", strings.Join(tt.args, " "), err, tt.want)
			}
			if out != "" {
				t.Errorf("printed %q before refusing", out)
			}
		})
	}
}

// TestPercentile: nearest rank, a sample that occurred.
func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var out []time.Duration
		for _, n := range ns {
			out = append(out, time.Duration(n)*time.Millisecond)
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name    string
		samples []time.Duration
		p       int
		want    float64
	}{
		{"none", nil, 99, 0},
		{"one", ms(7), 50, 7},
		{"one at p99", ms(7), 99, 7},
		{"median of four is the second", ms(1, 2, 3, 4), 50, 2},
		{"p95 of four is the last", ms(1, 2, 3, 4), 95, 4},
		{"p50 of 1..100", ms(hundred...), 50, 50},
		{"p95 of 1..100", ms(hundred...), 95, 95},
		{"p99 of 1..100", ms(hundred...), 99, 99},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.samples, tt.p); got != tt.want {
				t.Errorf("percentile(p%d) = %v; want %v", tt.p, got, tt.want)
			}
		})
	}
}
