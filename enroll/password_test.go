package enroll

import (
	"strings"
	"testing"
)

// cheap keeps the tests fast; the format and the checks are the same.
var cheap = HashParams{Memory: 64, Time: 1, Threads: 1}

func TestHashPassword(t *testing.T) {
	const pw = "correct horse battery staple"
	h := HashPassword(pw, cheap)
	if h == pw || strings.Contains(h, pw) {
		t.Fatalf("hash %q carries the password", h)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("hash %q is not an argon2id PHC string", h)
	}
	if HashPassword(pw, cheap) == h {
		t.Fatal("two hashes of one password are equal: no fresh salt")
	}
	for _, tc := range []struct {
		name, password string
		want           bool
	}{
		{"right", pw, true},
		{"wrong", "correct horse battery stapler", false},
		{"case", "Correct horse battery staple", false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := verifyPassword(h, tc.password)
			if err != nil || ok != tc.want {
				t.Fatalf("verifyPassword = %v, %v; want %v", ok, err, tc.want)
			}
		})
	}
	// The default parameters, once, so their cost is what is documented.
	def := HashPassword(pw, DefaultHashParams())
	if !strings.HasPrefix(def, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("default hash %q", def)
	}
	if ok, err := verifyPassword(def, pw); !ok || err != nil {
		t.Fatalf("default hash does not verify: %v %v", ok, err)
	}
}

func TestParsePHC(t *testing.T) {
	good := "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
	h, err := parsePHC(good)
	if err != nil {
		t.Fatal(err)
	}
	if h.params != (HashParams{Memory: 19456, Time: 2, Threads: 1}) || string(h.salt) != "saltsaltsaltsalt" || len(h.key) != 32 {
		t.Fatalf("parsed %+v", h)
	}
	for _, tc := range []struct{ name, hash string }{
		{"empty", ""},
		{"bcrypt", "$2a$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"},
		{"argon2i", strings.Replace(good, "argon2id", "argon2i", 1)},
		{"old version", strings.Replace(good, "v=19", "v=16", 1)},
		{"params out of order", strings.Replace(good, "m=19456,t=2,p=1", "t=2,m=19456,p=1", 1)},
		{"param missing", strings.Replace(good, "m=19456,t=2,p=1", "m=19456,t=2", 1)},
		{"param repeated", strings.Replace(good, "m=19456,t=2,p=1", "m=19456,t=2,p=1,p=1", 1)},
		{"zero time", strings.Replace(good, "t=2", "t=0", 1)},
		{"huge memory", strings.Replace(good, "m=19456", "m=4194304", 1)},
		{"memory below 8p", strings.Replace(good, "m=19456,t=2,p=1", "m=8,t=2,p=2", 1)},
		{"padded salt", strings.Replace(good, "c2FsdHNhbHRzYWx0c2FsdA", "c2FsdHNhbHRzYWx0c2FsdA==", 1)},
		{"short salt", strings.Replace(good, "c2FsdHNhbHRzYWx0c2FsdA", "c2FsdA", 1)},
		{"short key", strings.Replace(good, "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g", "aGFzaA", 1)},
		{"trailing field", good + "$x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parsePHC(tc.hash); err == nil {
				t.Fatalf("parsePHC(%q) accepted it", tc.hash)
			}
			if ok, err := verifyPassword(tc.hash, "anything at all"); ok || err == nil {
				t.Fatalf("verifyPassword against %q = %v, %v", tc.hash, ok, err)
			}
		})
	}
}

func FuzzParsePHC(f *testing.F) {
	f.Add(HashPassword("seed password", cheap))
	f.Add("$argon2id$v=19$m=8,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := parsePHC(s)
		if err != nil {
			return
		}
		if h.params.Memory > maxMemory || h.params.Time == 0 || h.params.Time > maxTime ||
			h.params.Threads == 0 || h.params.Threads > maxThreads || len(h.key) < 16 {
			t.Fatalf("parsePHC(%q) accepted out-of-bounds %+v", s, h.params)
		}
	})
}

func TestValidateUsername(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"alice", true},
		{"Zoë Ångström", true},
		{strings.Repeat("é", 64), true},
		{"", false},
		{strings.Repeat("x", 65), false},
		{"a\x00b", false},
		{"a\nb", false},
		{"a\u0085b", false},
		{"a:b", false},
		{"\xff", false},
	} {
		if err := ValidateUsername(tc.name); (err == nil) != tc.ok {
			t.Errorf("ValidateUsername(%q) = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}
