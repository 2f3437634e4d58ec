package route

import (
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseTarget(t *testing.T) {
	for in, want := range map[string]Target{
		"tcp://127.0.0.1:10100/":     {Network: "tcp", Address: "127.0.0.1:10100", Scheme: "tcp"},
		"tcp://u:p%40ss@host:10101/": {Network: "tcp", Address: "host:10101", Username: "u", Password: "p@ss", Scheme: "tcp"},
		"tcp:10.0.0.5:10100":         {Network: "tcp", Address: "10.0.0.5:10100", Scheme: "tcp"},
		"tcp/host:9":                 {Network: "tcp", Address: "host:9", Scheme: "tcp"},
		"tcp://host/":                {Network: "tcp", Address: "host:14500", Scheme: "tcp"},
		":100":                       {Network: "unix", Display: ":100", Scheme: "socket"},
		"100":                        {Network: "unix", Display: ":100", Scheme: "socket"},
		"socket:///run/xpra/h-100":   {Network: "unix", Address: "/run/xpra/h-100", Scheme: "socket"},
		"socket:/tmp/s":              {Network: "unix", Address: "/tmp/s", Scheme: "socket"},
		"quic://u:p@host:10000/":     {Network: "udp", Address: "host:10000", Username: "u", Password: "p", Scheme: "quic"},
	} {
		got, err := ParseTarget(in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if want.Display == "" {
			got.Display = "" // the entry as written; not compared here
		}
		if got != want {
			t.Errorf("%q: %+v, want %+v", in, got, want)
		}
	}
	for _, bad := range []string{"", "ftp://x/", "tcp://:80/", "tcp://h:99999/", ":abc", "socket:relative"} {
		if _, err := ParseTarget(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if s := (Target{Network: "tcp", Scheme: "tcp", Address: "h:1", Username: "u", Password: "secret"}).String(); strings.Contains(s, "secret") {
		t.Errorf("String shows the password: %s", s)
	}
}

func TestChooseDisplay(t *testing.T) {
	two := []string{":100", ":101", ":20", ":proxy-5"}
	if _, err := ChooseDisplay(two, "", ":20"); err == nil || !strings.Contains(err.Error(), "please specify a display, more than one is available: :100, :101") {
		t.Errorf("two sessions, none named: %v", err)
	}
	if d, err := ChooseDisplay(two, "101", ":20"); err != nil || d != ":101" {
		t.Errorf("/101: %s %v", d, err)
	}
	if _, err := ChooseDisplay(two, ":99", ":20"); err == nil || !strings.Contains(err.Error(), "':99' not found") {
		t.Errorf(":99: %v", err)
	}
	if d, err := ChooseDisplay([]string{":100", ":proxy-1"}, "", ""); err != nil || d != ":100" {
		t.Errorf("one: %s %v", d, err)
	}
	if _, err := ChooseDisplay(nil, "", ""); err == nil || !strings.Contains(err.Error(), "no displays found") {
		t.Errorf("none: %v", err)
	}
	tcp := []string{"tcp://127.0.0.1:10100/", "tcp://127.0.0.1:10101/"}
	if d, err := ChooseDisplay(tcp, "tcp:127.0.0.1:10101", ""); err != nil || d != tcp[1] {
		t.Errorf("tcp by address: %s %v", d, err)
	}
}

func TestLocalSessions(t *testing.T) {
	dir := t.TempDir()
	host := "testhost"
	listen := func(name string) net.Listener {
		l, err := net.Listen("unix", filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	listen(host + "-100")
	listen(host + "-proxy-7")
	dead := listen(host + "-101")
	dead.(*net.UnixListener).SetUnlinkOnClose(false)
	dead.Close() // socket file stays, nobody listens: DEAD
	os.Mkdir(filepath.Join(dir, "102"), 0o700)
	listen("102/socket")
	listen("otherhost-103")
	os.WriteFile(filepath.Join(dir, host+"-104"), nil, 0o600) // not a socket
	got := LocalSessions([]string{dir, dir, filepath.Join(dir, "missing")}, host, os.Getuid(), time.Second)
	var names []string
	for _, s := range got {
		names = append(names, s.Display)
	}
	// host-proxy-7 is a proxy's own socket (a worker's), not a session.
	if strings.Join(names, ",") != ":100,:102" {
		t.Errorf("found %v", names)
	}
	if d, err := ChooseDisplay(names, "", ""); err == nil {
		t.Errorf("two live sessions, chose %s", d)
	}
	if p, err := FindSocket([]string{dir}, host, ":102"); err != nil || !strings.HasSuffix(p, "102/socket") {
		t.Errorf("FindSocket: %s %v", p, err)
	}
	// Another uid's sockets are not this user's sessions.
	if os.Getuid() != 0 {
		return
	}
	if got := LocalSessions([]string{dir}, host, 4242, time.Second); len(got) != 0 {
		t.Errorf("uid 4242 sees %v", got)
	}
}

func TestExpandDir(t *testing.T) {
	u := &user.User{Uid: "1234", Gid: "1234", Username: "joe", HomeDir: "/home/joe"}
	if got := ExpandDir("/run/user/$UID/xpra", u); got != "/run/user/1234/xpra" {
		t.Error(got)
	}
	if got := ExpandDir("~/.xpra", u); got != "/home/joe/.xpra" {
		t.Error(got)
	}
	if got := ExpandDir("$XDG_RUNTIME_DIR/xpra:$USER", u); got != "/run/user/1234/xpra:joe" {
		t.Error(got)
	}
}

func TestRedactDisplay(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"tcp://backuser:SECRETPW@host:10000/", "tcp://backuser:***@host:10000/"},
		{"ssl://:SECRETPW@host/", "ssl://:***@host/"},
		{"wss://u:p@ss:w0rd@host:443/x", "wss://u:***@host:443/x"},
		{"tcp://host:10000/", "tcp://host:10000/"},
		{"tcp://user@host:10000/", "tcp://user@host:10000/"},
		{"tcp://h:1/?password=SECRETPW&a=b", "tcp://h:1/?password=***&a=b"},
		{":100", ":100"},
		{"socket:///run/xpra/x", "socket:///run/xpra/x"},
	} {
		got := RedactDisplay(tc.in)
		if got != tc.want {
			t.Errorf("RedactDisplay(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if strings.Contains(got, "SECRETPW") || strings.Contains(got, "ss:w0rd") {
			t.Errorf("secret left in %q", got)
		}
	}
}
