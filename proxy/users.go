package proxy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"

	socks5 "github.com/armon/go-socks5"
	"golang.org/x/crypto/bcrypt"
)

// maxUsersFileSize bounds what LoadUsers reads; a users file is a handful
// of lines, so anything this large is a mistake.
const maxUsersFileSize = 4 << 20

// Users is a credential store of bcrypt password hashes, for RFC 1929
// username/password authentication. Passwords are never held in clear.
type Users struct {
	hashes map[string][]byte
	// dummy is compared against when the user is unknown, so that an unknown
	// user costs the same bcrypt time as a wrong password and user names
	// cannot be probed by timing. It hashes random bytes nobody knows.
	dummy []byte
}

var _ socks5.CredentialStore = (*Users)(nil)

// LoadUsers reads a users file: one "name:bcrypt-hash" per line (the format
// of `htpasswd -B`, and of `fwproxy -hash-password`); blank lines and lines
// starting with # are ignored.
func LoadUsers(path string) (*Users, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load users: %w", err)
	}
	defer f.Close()
	u, err := ParseUsers(io.LimitReader(f, maxUsersFileSize))
	if err != nil {
		return nil, fmt.Errorf("load users %s: %w", path, err)
	}
	return u, nil
}

// ParseUsers parses the users file format of LoadUsers.
func ParseUsers(r io.Reader) (*Users, error) {
	u := &Users{hashes: make(map[string][]byte)}
	// The dummy hash costs what the dearest user's does, so that no user
	// name answers faster than another.
	cost := bcrypt.MinCost
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		name, hash, ok := strings.Cut(text, ":")
		switch {
		case !ok:
			return nil, fmt.Errorf("line %d: want name:bcrypt-hash", line)
		case name == "" || len(name) > 255:
			return nil, fmt.Errorf("line %d: user name must be 1 to 255 bytes (RFC 1929)", line)
		case u.hashes[name] != nil:
			return nil, fmt.Errorf("line %d: user %q listed twice", line, name)
		}
		if err := checkBcryptHash(hash); err != nil {
			return nil, fmt.Errorf("line %d: user %q: %w", line, name, err)
		}
		u.hashes[name] = []byte(hash)
		c, _ := bcrypt.Cost([]byte(hash)) // checked above
		cost = max(cost, c)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(u.hashes) == 0 {
		return nil, fmt.Errorf("no users")
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	dummy, err := bcrypt.GenerateFromPassword(secret, cost)
	if err != nil {
		return nil, err
	}
	u.dummy = dummy
	return u, nil
}

// The modular crypt format of a bcrypt hash, "$2b$10$" then 22 characters
// of salt and 31 of hash in bcrypt's own base64 alphabet.
const (
	bcryptHashLen     = 60
	bcryptPrefixLen   = 7
	bcryptAlphabet    = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	bcryptVersionHelp = "$2a$, $2b$ or $2y$"
)

// checkBcryptHash reports why hash cannot be a bcrypt hash that some
// password matches. The bcrypt package itself accepts a hash cut short by
// one character, or with a wrong last character, and then matches no
// password: loading such a file would lock the user out, so it is refused
// here, with what is wrong.
func checkBcryptHash(hash string) error {
	if !strings.HasPrefix(hash, "$2") {
		return fmt.Errorf("password is not a bcrypt hash (want %s...; make one with fwproxy -hash-password)", bcryptVersionHelp)
	}
	if len(hash) < 4 || hash[3] != '$' || !strings.ContainsRune("aby", rune(hash[2])) {
		return fmt.Errorf("bcrypt hash version %.4q is not %s", hash, bcryptVersionHelp)
	}
	if len(hash) != bcryptHashLen {
		return fmt.Errorf("bcrypt hash is %d characters, want %d (cut short or run into the next line?)", len(hash), bcryptHashLen)
	}
	if hash[6] != '$' {
		return fmt.Errorf("bcrypt hash cost %q is not two digits", hash[4:6])
	}
	if _, err := bcrypt.Cost([]byte(hash)); err != nil {
		return fmt.Errorf("bcrypt hash cost %q: want %d to %d", hash[4:6], bcrypt.MinCost, bcrypt.MaxCost)
	}
	for i := bcryptPrefixLen; i < len(hash); i++ {
		if strings.IndexByte(bcryptAlphabet, hash[i]) < 0 {
			return fmt.Errorf("bcrypt hash has %q at character %d, outside bcrypt's base64 alphabet", hash[i], i+1)
		}
	}
	// 23 bytes of hash take 31 characters, the last of which carries 2
	// bits that are always 0; the bcrypt package compares the characters,
	// so with any other last character no password matches.
	if strings.IndexByte(bcryptAlphabet, hash[len(hash)-1])%4 != 0 {
		return fmt.Errorf("bcrypt hash ends in %q, which no bcrypt hash does", hash[len(hash)-1])
	}
	return nil
}

// Valid reports whether password is user's password.
func (u *Users) Valid(user, password string) bool {
	hash, ok := u.hashes[user]
	if !ok {
		hash = u.dummy
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	return ok && err == nil
}

// Len returns the number of users.
func (u *Users) Len() int { return len(u.hashes) }

// HashPassword returns a users-file line for name and password.
func HashPassword(name string, password []byte) (string, error) {
	if name == "" || len(name) > 255 || strings.ContainsAny(name, ":\n") {
		return "", fmt.Errorf("hash password: user name must be 1 to 255 bytes without ':' or newline")
	}
	if len(password) == 0 || len(password) > 72 || bytes.ContainsRune(password, '\n') {
		// bcrypt ignores bytes past 72; refuse rather than store a hash that
		// accepts a shorter password than the one chosen.
		return "", fmt.Errorf("hash password: password must be 1 to 72 bytes")
	}
	h, err := bcrypt.GenerateFromPassword(password, bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return name + ":" + string(h), nil
}

// ReloadableUsers is a credential store whose users can be replaced while
// the server runs (the daemon reloads its users file on SIGHUP). Sessions
// authenticate against whichever set is current when they ask.
type ReloadableUsers struct {
	cur atomic.Pointer[Users]
}

var _ socks5.CredentialStore = (*ReloadableUsers)(nil)

// NewReloadableUsers starts with u.
func NewReloadableUsers(u *Users) *ReloadableUsers {
	r := &ReloadableUsers{}
	r.cur.Store(u)
	return r
}

// Replace makes u the current users.
func (r *ReloadableUsers) Replace(u *Users) { r.cur.Store(u) }

// Valid implements socks5.CredentialStore.
func (r *ReloadableUsers) Valid(user, password string) bool {
	return r.cur.Load().Valid(user, password)
}

// Len returns the number of current users.
func (r *ReloadableUsers) Len() int { return r.cur.Load().Len() }
