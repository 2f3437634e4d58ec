package sshd

import (
	"slices"
	"strings"
	"testing"
)

// The commands xpra's clients send, as 3.1.3 and 6.5 send them, and
// what xpra's own SSH server answers.
func TestParseExec(t *testing.T) {
	for _, tc := range []struct {
		cmd              string
		proxy            bool
		display, sockdir string
		status           uint32
	}{
		// 3.1.3 (paramiko_run_remote_xpra): which, then the command.
		{cmd: "which $XDG_RUNTIME_DIR/xpra/run-xpra"},
		{cmd: "$XDG_RUNTIME_DIR/xpra/run-xpra _proxy", proxy: true},
		{cmd: `xpra _proxy "--socket-dir=/tmp/x y"`, proxy: true, sockdir: "/tmp/x y"},
		{cmd: `xpra _proxy "--socket-dir=/run/xpra" :100`, proxy: true, sockdir: "/run/xpra", display: ":100"},
		// 6.x: its probes, then the quoted program.
		{cmd: "echo %OS%"}, {cmd: "echo $OSTYPE"}, {cmd: "command"}, {cmd: "command -v xpra"},
		{cmd: "command -v /usr/bin/bash", status: 1},
		{cmd: `"xpra" _proxy`, proxy: true},
		{cmd: `"/usr/local/bin/xpra" '_proxy' ':7'`, proxy: true, display: ":7"},
		// The system ssh client's one-liner.
		{cmd: `sh -c ': run-xpra _proxy;xpra initenv;if [ -x $XDG_RUNTIME_DIR/xpra/run-xpra ]; then $XDG_RUNTIME_DIR/xpra/run-xpra _proxy :10; elif type "xpra" > /dev/null 2>&1; then xpra _proxy :10; else echo "no run-xpra command found"; exit 1; fi'`,
			proxy: true, display: ":10"},
		{cmd: `'if type "xpra" > /dev/null 2>&1; then xpra _proxy; fi'`, proxy: true},
		// Everything else.
		{cmd: "ver", status: 1},
		{cmd: "xpra _proxy_start --start=xterm", status: 1},
		{cmd: "xpra shadow :0", status: 1},
		{cmd: "bash -i", status: 1},
		{cmd: "", status: 1},
		{cmd: `xpra "_proxy`, status: 1},
		{cmd: strings.Repeat("x", maxCommand+1), status: 1},
		{cmd: `sh -c 'if type "xpra" >/dev/null; then rm -rf /; fi'`, status: 1},
	} {
		e := ParseExec(tc.cmd)
		if e.Proxy != tc.proxy || e.Display != tc.display || e.SocketDir != tc.sockdir || e.Status != tc.status {
			t.Errorf("%.60q: %+v", tc.cmd, e)
		}
		if e.Status != 0 && e.Stderr == "" {
			t.Errorf("%.60q refused without a message", tc.cmd)
		}
	}
}

func TestSplitWords(t *testing.T) {
	for in, want := range map[string][]string{
		`a b  c`:                {"a", "b", "c"},
		`"a b" 'c d' e\ f`:      {"a b", "c d", "e f"},
		`"x\"y\$z\n"`:           {`x"y$z\n`},
		`'' ""`:                 {"", ""},
		`"--socket-dir=/a b"`:   {"--socket-dir=/a b"},
		"a\tb\nc":               {"a", "b", "c"},
		`$XDG_RUNTIME_DIR/xpra`: {"$XDG_RUNTIME_DIR/xpra"},
	} {
		got, err := splitWords(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{`"a`, `'a`, `a "b`} {
		if _, err := splitWords(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// Any command line gets an answer, never a panic: a proxy or an exit
// status with its message, bounded by the input.
func FuzzParseExec(f *testing.F) {
	for _, s := range []string{"which xpra", `"xpra" _proxy :1`, "echo $OSTYPE", `sh -c 'if [ -x a ]; then a/xpra _proxy; fi'`, `'`, `\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cmd string) {
		e := ParseExec(cmd)
		if e.Proxy && (e.Status != 0 || e.Stdout != "" || e.Stderr != "") {
			t.Fatalf("%q: proxy with output %+v", cmd, e)
		}
		if !e.Proxy && e.Status != 0 && e.Stderr == "" {
			t.Fatalf("%q: refused silently", cmd)
		}
		if len(e.Display)+len(e.SocketDir) > len(cmd) || len(e.Stderr) > len(cmd)+512 {
			t.Fatalf("%q: answer larger than the command: %+v", cmd, e)
		}
	})
}
