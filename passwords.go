package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Limits on the parameters a stored hash may ask for, so a corrupt or hostile
// row cannot make one login allocate gigabytes.
const (
	maxHashMemoryKiB = 1 << 20
	maxHashTime      = 64
)

// argonParams are the cost parameters of an Argon2id hash.
type argonParams struct {
	memoryKiB uint32
	time      uint32
	threads   uint8
}

// newHashParams are OWASP's recommendation for Argon2id (m=19 MiB, t=2, p=1).
var newHashParams = argonParams{memoryKiB: 19456, time: 2, threads: 1}

// passwords hashes and verifies passwords. Argon2id is memory-hard by
// design, so a burst of logins could exhaust memory; the semaphore allows one
// hash per CPU at a time and the rest wait their turn.
type passwords struct {
	sem       chan struct{}
	dummyHash string // verified when the user does not exist, to take the same time
}

func newPasswords() (*passwords, error) {
	p := &passwords{sem: make(chan struct{}, runtime.NumCPU())}
	dummy := make([]byte, 16)
	if _, err := rand.Read(dummy); err != nil {
		return nil, err
	}
	hash, err := p.hash(context.Background(), string(dummy))
	if err != nil {
		return nil, err
	}
	p.dummyHash = hash
	return p, nil
}

func (p *passwords) acquire(ctx context.Context) error {
	select {
	case p.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// hash returns the PHC string of a new Argon2id hash of password.
func (p *passwords) hash(ctx context.Context, password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	if err := p.acquire(ctx); err != nil {
		return "", err
	}
	defer func() { <-p.sem }()
	prm := newHashParams
	key := argon2.IDKey([]byte(password), salt, prm.time, prm.memoryKiB, prm.threads, 32)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, prm.memoryKiB, prm.time, prm.threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// verify tells whether password matches a PHC Argon2id hash, using the
// parameters the hash carries (the original service used m=65536,t=3,p=4).
// A hash it cannot read never matches.
func (p *passwords) verify(ctx context.Context, password, encoded string) (bool, error) {
	prm, salt, want, ok := parsePHC(encoded)
	if !ok {
		return false, nil
	}
	if err := p.acquire(ctx); err != nil {
		return false, err
	}
	defer func() { <-p.sem }()
	got := argon2.IDKey([]byte(password), salt, prm.time, prm.memoryKiB, prm.threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// currentHash tells whether encoded was made with today's parameters.
// Others (the original service's, m=65536,t=3,p=4) take longer to verify
// than the dummy hash of a name that does not exist, which tells the name
// exists; they are replaced at the owner's next login.
func currentHash(encoded string) bool {
	prm, _, _, ok := parsePHC(encoded)
	return ok && prm == newHashParams
}

// upgradeHash replaces u's hash with one of today's parameters. The login
// goes ahead if that fails: the old hash still works.
func (s *server) upgradeHash(ctx context.Context, u user, password string) {
	hash, err := s.passwords.hash(ctx, password)
	if err == nil {
		err = s.store.ReplacePasswordHash(ctx, u.ID, u.PasswordHash, hash)
	}
	if err != nil {
		s.log.Warn("upgrade password hash", "user", u.Username, "error", err)
	}
}

// parsePHC reads $argon2id$v=19$m=...,t=...,p=...$salt$hash.
func parsePHC(encoded string) (prm argonParams, salt, key []byte, ok bool) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return prm, nil, nil, false
	}
	var m, t, threads uint64
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return prm, nil, nil, false
		}
		switch k {
		case "m":
			m = n
		case "t":
			t = n
		case "p":
			threads = n
		default:
			return prm, nil, nil, false
		}
	}
	if m < 8 || m > maxHashMemoryKiB || t < 1 || t > maxHashTime || threads < 1 || threads > 255 {
		return prm, nil, nil, false
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(strings.TrimRight(parts[4], "="))
	key, err2 := b64.DecodeString(strings.TrimRight(parts[5], "="))
	if err1 != nil || err2 != nil || len(salt) < 8 || len(key) < 16 || len(key) > 1024 {
		return prm, nil, nil, false
	}
	return argonParams{memoryKiB: uint32(m), time: uint32(t), threads: uint8(threads)}, salt, key, true
}
