package proxy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

// writeUsersFile writes content to a users file in a fresh directory.
func writeUsersFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

// withLast replaces the last character of a hash.
func withLast(hash string, c byte) string { return hash[:len(hash)-1] + string(c) }

func TestLoadUsersChecksEveryHash(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	require.NoError(t, err)
	good := string(hash) // "$2a$04$" + 53 characters
	body := good[7:]
	bob := "bob:" + good + "\n"
	tests := []struct {
		name string
		hash string
		// lockout: bcrypt itself takes the hash and then matches no
		// password, which is why the file must be refused.
		lockout bool
		want    string
	}{
		{"cut short by one", good[:59], true, "line 2: user \"alice\": bcrypt hash is 59 characters, want 60"},
		{"one too many", good + "A", false, "line 2: user \"alice\": bcrypt hash is 61 characters, want 60"},
		{"cut in the prefix", good[:5], false, "line 2: user \"alice\": bcrypt hash is 5 characters"},
		{"last character with its unused bits set", withLast(good, bcryptAlphabet[strings.IndexByte(bcryptAlphabet, good[59])+1]), true, "which no bcrypt hash does"},
		{"outside the alphabet", good[:30] + "+" + good[31:], false, "'+' at character 31, outside bcrypt's base64 alphabet"},
		{"a space inside", good[:30] + " " + good[31:], false, "' ' at character 31"},
		{"version 2x", "$2x$04$" + body, false, "version \"$2x$\" is not $2a$, $2b$ or $2y$"},
		{"version 2 without minor", "$2$04$" + body + "A", false, "version \"$2$0\" is not"},
		{"cost below bcrypt's", "$2a$03$" + body, false, "cost \"03\": want 4 to 31"},
		{"cost above bcrypt's", "$2a$32$" + body, false, "cost \"32\": want 4 to 31"},
		{"cost not a number", "$2a$1x$" + body, false, "cost \"1x\": want 4 to 31"},
		{"cost of three digits", "$2a$100" + body, false, "cost \"10\" is not two digits"},
		{"clear text password", "s3cret", false, "password is not a bcrypt hash"},
		{"an MD5 crypt hash", "$1$salt$qJH7.N4xYta3aEG/dfqo/0", false, "password is not a bcrypt hash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.lockout {
				_, err := bcrypt.Cost([]byte(tt.hash))
				require.NoError(t, err, "bcrypt takes this hash")
				require.Error(t, bcrypt.CompareHashAndPassword([]byte(tt.hash), []byte("s3cret")), "and matches no password")
			}
			path := writeUsersFile(t, bob+"alice:"+tt.hash+"\n")
			_, err := LoadUsers(path)
			require.ErrorContains(t, err, tt.want)
			assert.ErrorContains(t, err, path, "the error names the file")
		})
	}
}

func TestLoadUsersAcceptsEveryBcryptVersion(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	require.NoError(t, err)
	body := string(hash)[4:] // "04$..."
	for _, version := range []string{"$2a$", "$2b$", "$2y$"} {
		t.Run(version, func(t *testing.T) {
			u, err := LoadUsers(writeUsersFile(t, "alice:"+version+body+"\n"))
			require.NoError(t, err)
			assert.True(t, u.Valid("alice", "s3cret"))
			assert.False(t, u.Valid("alice", "s3cre"))
		})
	}
}

// TestReloadKeepsUsersWhenALineIsBad is issue 10's case 10: a hash cut
// short in the users file is refused on reload, so the users already
// loaded stay in force.
func TestReloadKeepsUsersWhenALineIsBad(t *testing.T) {
	line, err := HashPassword("alice", []byte("s3cret"))
	require.NoError(t, err)
	path := writeUsersFile(t, line+"\n")
	first, err := LoadUsers(path)
	require.NoError(t, err)
	users := NewReloadableUsers(first)

	// The operator edits the file and loses the hash's last character.
	require.NoError(t, os.WriteFile(path, []byte(line[:len(line)-1]+"\n"), 0o600))
	_, err = LoadUsers(path)
	require.ErrorContains(t, err, "line 1: user \"alice\": bcrypt hash is 59 characters")
	assert.True(t, users.Valid("alice", "s3cret"), "the users loaded before stay")
}

// TestUnknownUserCostsAsMuchAsTheDearestUser: the hash an unknown user is
// checked against has the highest cost of the file, so that timing tells
// no user name from another.
func TestUnknownUserCostsAsMuchAsTheDearestUser(t *testing.T) {
	cheap, err := bcrypt.GenerateFromPassword([]byte("a"), bcrypt.MinCost)
	require.NoError(t, err)
	dearer, err := bcrypt.GenerateFromPassword([]byte("b"), bcrypt.MinCost+2)
	require.NoError(t, err)
	u, err := LoadUsers(writeUsersFile(t, "alice:"+string(cheap)+"\nbob:"+string(dearer)+"\n"))
	require.NoError(t, err)
	cost, err := bcrypt.Cost(u.dummy)
	require.NoError(t, err)
	assert.Equal(t, bcrypt.MinCost+2, cost)
}
