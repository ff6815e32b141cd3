package enroll

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// HashParams are argon2id's cost parameters (RFC 9106).
type HashParams struct {
	Memory  uint32 // KiB
	Time    uint32 // passes
	Threads uint8
}

// DefaultHashParams returns OWASP's argon2id baseline (19 MiB, 2 passes,
// one lane): a few tens of milliseconds on one core of a small server, and
// 19 MiB per hash in flight. One lane because a 2-core server answering
// several sign-ins at once gains nothing from splitting one hash across
// cores; Accounts also caps how many hashes run at once (maxHashing), so
// memory stays bounded under a flood of sign-ins.
func DefaultHashParams() HashParams { return HashParams{Memory: 19 * 1024, Time: 2, Threads: 1} }

const (
	saltLen = 16
	keyLen  = 32
	// Bounds on what a stored hash may ask for, so a corrupted or planted
	// row cannot make one verification take gigabytes or minutes.
	maxMemory  = 1 << 20 // 1 GiB
	maxTime    = 16
	maxThreads = 16
)

// errBadHash means a stored password hash is not one this code reads.
var errBadHash = errors.New("malformed argon2id password hash")

// HashPassword hashes password with argon2id and a fresh random salt, in
// the PHC string format: $argon2id$v=19$m=19456,t=2,p=1$salt$hash.
func HashPassword(password string, p HashParams) string {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, keyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
}

// phc is a parsed argon2id PHC string.
type phc struct {
	params    HashParams
	salt, key []byte
}

// parsePHC reads an argon2id PHC string as HashPassword writes it, with
// the parameters within bounds.
func parsePHC(s string) (*phc, error) {
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return nil, errBadHash
	}
	var h phc
	seen := 0
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if !ok || err != nil || n == 0 {
			return nil, errBadHash
		}
		switch {
		case k == "m" && seen == 0 && n <= maxMemory:
			h.params.Memory = uint32(n)
		case k == "t" && seen == 1 && n <= maxTime:
			h.params.Time = uint32(n)
		case k == "p" && seen == 2 && n <= maxThreads:
			h.params.Threads = uint8(n)
		default:
			return nil, errBadHash
		}
		seen++
	}
	if seen != 3 || h.params.Memory < 8*uint32(h.params.Threads) {
		return nil, errBadHash
	}
	var err error
	if h.salt, err = base64.RawStdEncoding.Strict().DecodeString(parts[4]); err != nil || len(h.salt) < 8 || len(h.salt) > 64 {
		return nil, errBadHash
	}
	if h.key, err = base64.RawStdEncoding.Strict().DecodeString(parts[5]); err != nil || len(h.key) < 16 || len(h.key) > 64 {
		return nil, errBadHash
	}
	return &h, nil
}

// verifyPassword reports whether password matches the PHC hash. The
// comparison is constant-time; an unreadable hash is an error.
func verifyPassword(hash, password string) (bool, error) {
	h, err := parsePHC(hash)
	if err != nil {
		return false, err
	}
	key := argon2.IDKey([]byte(password), h.salt, h.params.Time, h.params.Memory, h.params.Threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(key, h.key) == 1, nil
}
