package route

import (
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/xpraproxy/xpraproxy/internal/disconnect"
)

func notFound(format string, args ...any) error {
	return &disconnect.Error{Stage: disconnect.Session, Reason: "session not found error", Message: fmt.Sprintf(format, args...)}
}

// Session is one local xpra session found in a socket directory.
type Session struct {
	Display string // ":173"
	Path    string // the unix socket
}

// ExpandDir expands xpra's socket-dir variables ($UID, $GID, $USER,
// $USERNAME, $HOME, ~, $XDG_RUNTIME_DIR) for the account u.
func ExpandDir(dir string, u *user.User) string {
	if u == nil {
		return os.ExpandEnv(dir)
	}
	if strings.HasPrefix(dir, "~/") || dir == "~" {
		dir = u.HomeDir + strings.TrimPrefix(dir, "~")
	}
	return os.Expand(dir, func(v string) string {
		switch v {
		case "UID":
			return u.Uid
		case "GID":
			return u.Gid
		case "USER", "USERNAME":
			return u.Username
		case "HOME":
			return u.HomeDir
		case "XDG_RUNTIME_DIR":
			return "/run/user/" + u.Uid
		}
		return os.Getenv(v)
	})
}

// SocketHostname is the prefix xpra puts on socket names:
// $XPRA_SOCKET_HOSTNAME, else the host name.
func SocketHostname() string {
	if h := os.Getenv("XPRA_SOCKET_HOSTNAME"); h != "" {
		return h
	}
	h, _ := os.Hostname()
	return h
}

// LocalSessions finds the LIVE sessions in dirs the way `xpra list` does:
// sockets named <hostname>-<name> (xpra 3.1) or <N>/socket (xpra ≥ 5),
// owned by uid unless uid is 0, that accept a connection within timeout.
func LocalSessions(dirs []string, hostname string, uid int, timeout time.Duration) []Session {
	var out []Session
	seen := map[string]bool{}
	prefix := hostname + "-"
	add := func(display, path string) {
		if seen[display] {
			return
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode()&os.ModeSocket == 0 {
			return
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && uid > 0 && int(st.Uid) != uid {
			return
		}
		if !live(path, timeout) {
			return
		}
		seen[display] = true
		out = append(out, Session{Display: display, Path: path})
	}
	visited := map[string]bool{}
	for _, dir := range dirs {
		real, err := filepath.EvalSymlinks(dir)
		if err != nil || visited[real] {
			continue
		}
		visited[real] = true
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			name := e.Name()
			switch {
			case strings.HasPrefix(name, prefix) && isNumber(strings.TrimPrefix(name, prefix)):
				// Displays are numbers; the proxy's own worker sockets
				// (<host>-proxy-worker-PID) live beside them.
				add(":"+strings.TrimPrefix(name, prefix), filepath.Join(dir, name))
			case e.IsDir() && isNumber(name):
				add(":"+name, filepath.Join(dir, name, "socket"))
			}
		}
	}
	slices.SortFunc(out, func(a, b Session) int { return strings.Compare(a.Display, b.Display) })
	return out
}

func isNumber(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// live reports whether a unix socket accepts connections (xpra's LIVE).
func live(path string, timeout time.Duration) bool {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// FindSocket returns the socket path of local display ":N" in dirs.
func FindSocket(dirs []string, hostname, display string) (string, error) {
	name := strings.TrimPrefix(display, ":")
	for _, dir := range dirs {
		for _, p := range []string{filepath.Join(dir, hostname+"-"+name), filepath.Join(dir, name, "socket")} {
			if fi, err := os.Stat(p); err == nil && fi.Mode()&os.ModeSocket != 0 {
				return p, nil
			}
		}
	}
	return "", notFound("display %s not found", display)
}
