package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"time"

	socks5 "github.com/armon/go-socks5"
)

// RFC 1929 constants.
const (
	userPassVersion = 1
	userPassSuccess = 0
	// Any other status is a failure; the server then closes the connection.
	userPassFailure = 1
	// maxUserPassLen is the largest UNAME or PASSWD (one length byte).
	maxUserPassLen = 255
)

// Why a username/password login ended without a session.
var (
	errWrongPassword = errors.New("wrong user name or password")
	errLoginLimited  = errors.New("too many failed logins from this source; refused without checking the password")
	errLoginBusy     = errors.New("no password check could start before the handshake deadline")
)

// logins authenticates RFC 1929 username/password logins. A password check
// is a bcrypt comparison, tens of milliseconds of CPU by design, so a flood
// of wrong passwords is a cheap way to starve every other login. logins
// bounds that two ways: checks run under a fixed concurrency (a login waits
// for a slot until its handshake deadline), and a source that fails too
// often is refused without a check until its limit refills.
type logins struct {
	creds   socks5.CredentialStore
	limiter *failureLimiter
	// checks holds one token per password check running.
	checks    chan struct{}
	perMinute int
	log       *slog.Logger
	obs       Observer
}

func newLogins(cfg Config, creds socks5.CredentialStore, log *slog.Logger, obs Observer) *logins {
	n := cfg.AuthConcurrency
	if n == 0 {
		n = runtime.GOMAXPROCS(0)
	}
	return &logins{
		creds:     creds,
		limiter:   newFailureLimiter(cfg.AuthFailuresPerMinute, cfg.AuthFailureBurst, time.Now),
		checks:    make(chan struct{}, n),
		perMinute: cfg.AuthFailuresPerMinute,
		log:       log,
		obs:       obs,
	}
}

// authenticate runs the negotiated method's subnegotiation.
func (ss *session) authenticate(ctx context.Context, method uint8) (*socks5.AuthContext, error) {
	s := ss.srv
	if method != methodUserPass {
		auth, err := s.methods[method].Authenticate(ss.br, ss.conn)
		s.obs.Authenticated(methodName(method), err == nil)
		return auth, err
	}
	ctx, cancel := context.WithDeadline(ctx, ss.start.Add(s.cfg().HandshakeTimeout))
	defer cancel()
	user, err := s.logins.login(ctx, ss.br, ss.conn, ss.client)
	if err != nil {
		return nil, err
	}
	return &socks5.AuthContext{Method: methodUserPass, Payload: map[string]string{"Username": user}}, nil
}

// authFailureReason names a failed authentication for HandshakeFailed.
func authFailureReason(err error) string {
	if errors.Is(err, errLoginBusy) {
		return "auth_busy"
	}
	return handshakeReason(err, "auth_failed")
}

// login selects username/password, reads the client's credentials from r
// and answers on w. It returns the user name when the password is right.
// The password is only ever passed to the credential store.
func (l *logins) login(ctx context.Context, r *bufio.Reader, w io.Writer, client netip.AddrPort) (string, error) {
	if _, err := w.Write([]byte{socksVersion, methodUserPass}); err != nil {
		return "", fmt.Errorf("select username/password: %w", err)
	}
	user, pass, err := readUserPass(r)
	if err != nil {
		return "", err
	}
	allowed, logRefused := l.limiter.reserve(client.Addr())
	if !allowed {
		l.obs.LoginRateLimited()
		if logRefused > 0 {
			l.log.Warn("login refused: too many failures", "client", client, "user", user,
				"refused", logRefused, "auth_failures_per_minute", l.perMinute)
		}
		return "", l.answer(w, userPassFailure, errLoginLimited)
	}
	valid, err := l.check(ctx, user, pass)
	if err != nil {
		// No verdict: the source did not fail, so it keeps its token.
		l.limiter.refund(client.Addr())
		return "", err
	}
	l.obs.Authenticated(methodName(methodUserPass), valid)
	if !valid {
		l.log.Warn("login failed", "client", client, "user", user)
		return "", l.answer(w, userPassFailure, errWrongPassword)
	}
	l.limiter.refund(client.Addr())
	return user, l.answer(w, userPassSuccess, nil)
}

// check asks the credential store, once a check slot is free.
func (l *logins) check(ctx context.Context, user, pass string) (bool, error) {
	select {
	case l.checks <- struct{}{}:
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return false, errLoginBusy
		}
		// The session was aborted (shutdown): its connection is closed.
		return false, fmt.Errorf("wait for a password check: %w", net.ErrClosed)
	}
	defer func() { <-l.checks }()
	return l.creds.Valid(user, pass), nil
}

// answer writes the RFC 1929 status and returns verdict, or the write's
// error when there is no verdict to return.
func (l *logins) answer(w io.Writer, status byte, verdict error) error {
	if _, err := w.Write([]byte{userPassVersion, status}); err != nil && verdict == nil {
		return fmt.Errorf("write login status: %w", err)
	}
	return verdict
}

// readUserPass reads an RFC 1929 username/password request:
//
//	+----+------+----------+------+----------+
//	|VER | ULEN |  UNAME   | PLEN |  PASSWD  |
//	+----+------+----------+------+----------+
//	| 1  |  1   | 1 to 255 |  1   | 1 to 255 |
//	+----+------+----------+------+----------+
//
// Empty names and passwords are read (they never match a user) so that
// they are answered and counted like any other wrong password.
func readUserPass(r *bufio.Reader) (user, pass string, err error) {
	var buf [1 + 1 + maxUserPassLen + 1 + maxUserPassLen]byte
	if _, err := io.ReadFull(r, buf[:2]); err != nil {
		return "", "", fmt.Errorf("read login: %w", err)
	}
	if buf[0] != userPassVersion {
		return "", "", fmt.Errorf("read login: version %d, want %d (RFC 1929)", buf[0], userPassVersion)
	}
	ulen := int(buf[1])
	name := buf[2 : 2+ulen+1] // the name and PLEN
	if _, err := io.ReadFull(r, name); err != nil {
		return "", "", fmt.Errorf("read login: %w", err)
	}
	plen := int(name[ulen])
	password := buf[2+ulen+1 : 2+ulen+1+plen]
	if _, err := io.ReadFull(r, password); err != nil {
		return "", "", fmt.Errorf("read login: %w", err)
	}
	return string(name[:ulen]), string(password), nil
}
