package sshd

import (
	"errors"
	"path"
	"strings"
)

// The exec requests of xpra's SSH clients, answered as xpra's own SSH
// server answers them (3.1 xpra/server/ssh.py, 6.x the same file): the
// probes find "xpra", `xpra _proxy [--socket-dir=DIR] [DISPLAY]` (or the
// shell one-liner of the system ssh client that runs it) starts the
// xpra stream, anything else is refused with exit status 1. Nothing is
// ever executed.

// maxCommand bounds an exec request's command line: xpra's longest, the
// shell one-liner, is a few hundred bytes.
const maxCommand = 8 << 10

// Exec is the answer to one exec request.
type Exec struct {
	// Proxy: the channel carries xpra from now on.
	Proxy bool
	// Display and SocketDir are what `xpra _proxy` was given ("": none).
	Display, SocketDir string
	// Otherwise the command's output and exit status.
	Stdout, Stderr string
	Status         uint32
}

// ParseExec answers an exec request's command line.
func ParseExec(command string) Exec {
	if len(command) > maxCommand {
		return refuse("command too long")
	}
	cmd, err := splitWords(command)
	if err != nil || len(cmd) == 0 {
		return refuse("cannot parse the command")
	}
	switch {
	case cmd[0] == "command" && len(cmd) == 1:
		// 6.x asks whether `command -v` exists.
		return Exec{Stdout: "\r\n"}
	case len(cmd) == 2 && (cmd[0] == "which" || cmd[0] == "type"),
		len(cmd) == 3 && cmd[0] == "command" && cmd[1] == "-v":
		prog := cmd[len(cmd)-1]
		if isXpra(prog) {
			// Nothing runs; the answer is that xpra exists.
			return Exec{Stdout: "xpra\r\n"}
		}
		return Exec{Stderr: "type: '" + prog + "': not found\r\n", Status: 1}
	case cmd[0] == "echo" && len(cmd) == 2:
		// 6.x detects the platform with `echo %OS%` and `echo $OSTYPE`.
		out := ""
		if cmd[1] == "$OSTYPE" {
			out = "linux"
		}
		return Exec{Stdout: out + "\r\n"}
	case cmd[0] == "ver" && len(cmd) == 1:
		return Exec{Stderr: "ver: not found\r\n", Status: 1}
	case isXpra(cmd[0]) && len(cmd) >= 2:
		return proxyCommand(cmd[1:])
	}
	if parts := shellStanza(cmd); parts != nil {
		return proxyCommand(parts[1:])
	}
	return refuse("unsupported command, this is an xpra proxy: only `xpra _proxy` runs here")
}

func refuse(why string) Exec {
	return Exec{Stderr: "xpraproxy: " + why + "\r\n", Status: 1}
}

// isXpra: a program name that is xpra's (xpra, run-xpra, a path to one).
func isXpra(prog string) bool {
	return strings.HasSuffix(path.Base(prog), "xpra")
}

// proxyCommand reads xpra's subcommand and its arguments.
func proxyCommand(args []string) Exec {
	sub := strings.TrimRight(strings.Trim(args[0], `"'`), ";")
	switch {
	case sub == "_proxy":
	case strings.HasPrefix(sub, "_proxy_"):
		return refuse("starting sessions over ssh (" + sub + ") is not supported: start them with the proxy's --proxy-start-sessions over tcp")
	default:
		return refuse("unsupported xpra subcommand " + sub)
	}
	e := Exec{Proxy: true}
	for _, a := range args[1:] {
		a = strings.TrimRight(a, ";")
		if dir, ok := strings.CutPrefix(a, "--socket-dir="); ok {
			e.SocketDir = dir
		} else if !strings.HasPrefix(a, "--") && a != "" {
			e.Display = a
		}
	}
	return e
}

// shellStanza finds the `xpra _proxy` command in the shell one-liner of
// the system ssh client (`sh -c 'if ...; then xpra _proxy; elif ...'`),
// as xpra's server does: the words of the first "then" command whose
// subcommand is _proxy; nil for none.
func shellStanza(cmd []string) []string {
	var line string
	switch {
	case len(cmd) == 1:
		line = cmd[0]
	case len(cmd) == 3 && cmd[0] == "sh" && cmd[1] == "-c":
		line = cmd[2]
	default:
		return nil
	}
	for _, s := range strings.Split(line, "if ") {
		if !hasAnyPrefix(s, `type "xpra"`, `which "xpra"`, `command -v "xpra"`, "[ -x ") {
			continue
		}
		_, then, ok := strings.Cut(s, "then ")
		if !ok {
			continue
		}
		then, _, _ = strings.Cut(then, ";")
		parts, err := splitWords(then)
		if err == nil && len(parts) >= 2 && isXpra(parts[0]) && parts[1] == "_proxy" {
			return parts
		}
	}
	return nil
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

var errQuote = errors.New("sshd: unterminated quote")

// splitWords splits a command line as a POSIX shell (and Python's
// shlex.split, which xpra uses) splits words: blanks separate, single
// quotes are literal, double quotes keep blanks and take backslash
// escapes of \ " $ and `, a backslash outside quotes escapes the next
// character. Nothing is expanded.
func splitWords(s string) ([]string, error) {
	var (
		words []string
		cur   strings.Builder
		in    bool // a word has begun (even an empty quoted one)
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, errQuote
			}
			cur.WriteString(s[i+1 : i+1+end])
			i += 1 + end
			in = true
		case c == '"':
			in = true
			closed := false
			for i++; i < len(s); i++ {
				if s[i] == '"' {
					closed = true
					break
				}
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\\\"$`", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if !closed {
				return nil, errQuote
			}
		case c == '\\':
			if i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			}
			in = true
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}
