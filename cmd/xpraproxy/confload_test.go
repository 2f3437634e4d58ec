package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// writeConf writes files (path relative to dir → text) and returns dir.
func writeConf(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		p := filepath.Join(dir, name)
		if strings.HasSuffix(name, "/") { // a directory
			p += "/"
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(name, "/") {
			continue
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// origins maps each option to where its (last) value came from.
func origins(p *provenance) map[string]string {
	m := map[string]string{}
	for _, s := range p.settings {
		m[s.name] = s.from
	}
	return m
}

// Every level, and the order of files within the system directory: each
// option below is last set on a higher level than the one before.
func TestConfLevels(t *testing.T) {
	dir := writeConf(t, map[string]string{
		"etc/xpraproxy.conf": "login-timeout = 1\nchallenge-timeout = 1\nconnect-timeout = 1\nmax-session-buffer = 1K\n" +
			"stall-timeout = 1\nproxy-ping = 1\nidle-timeout = 1\n",
		"etc/conf.d/10-a.conf":        "challenge-timeout = 2\nconnect-timeout = 2\nmax-session-buffer = 2K\nstall-timeout = 2\nproxy-ping = 2\nidle-timeout = 2\n",
		"etc/conf.d/20-b.conf":        "connect-timeout = 3\nmax-session-buffer = 3K\nstall-timeout = 3\nproxy-ping = 3\nidle-timeout = 3\n",
		"etc/conf.d/30-off.conf.save": "bogus line\n",
		"etc/conf.d/.40-hidden.conf":  "bogus line\n",
		"etc/conf.d/50-dir.conf/":     "",
		"c1.conf":                     "max-session-buffer = 4K\nstall-timeout = 4\nproxy-ping = 4\nidle-timeout = 4\n",
		"c2.conf":                     "stall-timeout = 5\nproxy-ping = 5\nidle-timeout = 5\n",
	})
	env := map[string]string{"XPRA_PROXY_PING_INTERVAL": "6"}
	args := []string{"--config=" + dir + "/c1.conf", "--config", dir + "/c2.conf", "--idle-timeout=7"}
	o, prov, err := loadProxyOptions(args, func(k string) string { return env[k] }, dir+"/etc")
	if err != nil {
		t.Fatal(err)
	}
	got := []time.Duration{o.lim.LoginTimeout, o.lim.ChallengeTimeout, o.lim.ConnectTimeout, time.Duration(o.lim.MaxSessionBuffer >> 10),
		o.lim.StallTimeout, o.lim.PingInterval, o.lim.IdleTimeout}
	for i, g := range got {
		want := time.Duration(i+1) * time.Second
		if i == 3 {
			want = 4
		}
		if g != want {
			t.Errorf("option %d: %v, want %v", i, g, want)
		}
	}
	from := origins(prov)
	for name, want := range map[string]string{
		"login-timeout": dir + "/etc/xpraproxy.conf:1", "challenge-timeout": dir + "/etc/conf.d/10-a.conf:1",
		"connect-timeout": dir + "/etc/conf.d/20-b.conf:1", "max-session-buffer": dir + "/c1.conf:1",
		"stall-timeout": dir + "/c2.conf:1", "proxy-ping": "environment XPRA_PROXY_PING_INTERVAL",
		"idle-timeout": "command line", "max-packet-size": "default",
	} {
		if from[name] != want {
			t.Errorf("%s from %q, want %q", name, from[name], want)
		}
	}
	wantFiles := []string{dir + "/etc/xpraproxy.conf", dir + "/etc/conf.d/10-a.conf", dir + "/etc/conf.d/20-b.conf", dir + "/c1.conf", dir + "/c2.conf"}
	if !reflect.DeepEqual(prov.files, wantFiles) {
		t.Errorf("files %v", prov.files)
	}
	// No system directory at all (a fresh machine) is no error, and a
	// --config directory reads like xpra's own.
	if _, prov, err := loadProxyOptions([]string{"--config=" + dir + "/etc"}, noEnv, dir+"/absent"); err != nil || len(prov.files) != 3 {
		t.Errorf("--config=DIR: %v %v", prov, err)
	}
	if _, _, err := loadProxyOptions([]string{"--config=" + dir + "/absent.conf"}, noEnv, ""); err == nil {
		t.Error("a missing --config file is no error")
	}
}

// A repeatable option given on a later level replaces the earlier
// level's values; within one level (one file) they accumulate.
func TestConfListReplacement(t *testing.T) {
	dir := writeConf(t, map[string]string{
		"etc/xpraproxy.conf": "bind-tcp = 127.0.0.1:1\nbind-tcp = 127.0.0.1:2\nbind-unix = /tmp/s\ntcp-auth = allow\n" +
			"pool = a:random:tcp://h:1/\nsocket-dirs = /a\nsocket-dirs = /b\nssl-cert = /one.pem\nssl-cert = /two.pem\n",
		"c1.conf":  "bind-tcp = 127.0.0.1:3\nsocket-dirs = /c\n",
		"c2.conf":  "bind-unix =\npool =\n",
		"etc/conf": "",
	})
	binds := func(o *proxyOptions) (s []string) {
		for _, b := range o.binds {
			s = append(s, b.network+":"+b.address)
		}
		return s
	}
	o, _, err := loadProxyOptions(nil, noEnv, dir+"/etc")
	if err != nil {
		t.Fatal(err)
	}
	if got := binds(o); !reflect.DeepEqual(got, []string{"tcp:127.0.0.1:1", "tcp:127.0.0.1:2", "unix:/tmp/s"}) ||
		!reflect.DeepEqual(o.socketDirs, []string{"/a", "/b"}) || o.sslCert != "/two.pem" || len(o.tcpAuth) != 1 || len(o.pools) != 1 {
		t.Errorf("one level accumulates: %v %v %q %v %v", got, o.socketDirs, o.sslCert, o.tcpAuth, o.pools)
	}
	o, _, err = loadProxyOptions([]string{"--config=" + dir + "/c1.conf", "--tcp-auth=none", "--tcp-auth=reject"}, noEnv, dir+"/etc")
	if err != nil {
		t.Fatal(err)
	}
	if got := binds(o); !reflect.DeepEqual(got, []string{"unix:/tmp/s", "tcp:127.0.0.1:3"}) || !reflect.DeepEqual(o.socketDirs, []string{"/c"}) ||
		len(o.tcpAuth) != 2 || o.tcpAuth[0].Name != "none" || o.tcpAuth[1].Name != "reject" || len(o.pools) != 1 {
		t.Errorf("later levels replace: %v %v %v %v", got, o.socketDirs, o.tcpAuth, o.pools)
	}
	// "key =" on a later level: none of the earlier level's values.
	o, prov, err := loadProxyOptions([]string{"--config=" + dir + "/c2.conf"}, noEnv, dir+"/etc")
	if err != nil {
		t.Fatal(err)
	}
	if got := binds(o); !reflect.DeepEqual(got, []string{"tcp:127.0.0.1:1", "tcp:127.0.0.1:2"}) || len(o.pools) != 0 {
		t.Errorf("an empty value clears: %v %v", got, o.pools)
	}
	out := showconfig(o, prov)
	for _, want := range []string{"bind-unix =  # not set\n", "ssl-cert = /two.pem  # " + dir + "/etc/xpraproxy.conf:9\n",
		"bind-tcp = 127.0.0.1:1  # " + dir + "/etc/xpraproxy.conf:1\nbind-tcp = 127.0.0.1:2  # " + dir + "/etc/xpraproxy.conf:2\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("showconfig lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "/one.pem") {
		t.Errorf("showconfig shows a value that was replaced within its file:\n%s", out)
	}
}

// A typo names the file, the line and the nearest option.
func TestConfTypo(t *testing.T) {
	dir := writeConf(t, map[string]string{
		"typo.conf":  "# a comment\n\nbind-tpc = 0.0.0.0:14501\n",
		"xpra.conf":  "clipbaord = yes\n",
		"nest.conf":  "config = other.conf\n",
		"value.conf": "tcp-auth = allow\nidle-timeout = soon\n",
	})
	for file, want := range map[string]string{
		"typo.conf":  dir + `/typo.conf:3: unknown option "bind-tpc" (did you mean bind-tcp?)`,
		"xpra.conf":  dir + `/xpra.conf:1: unknown option "clipbaord" (did you mean clipboard?)`,
		"nest.conf":  dir + "/nest.conf:1: config is a command-line option",
		"value.conf": dir + `/value.conf:2: --idle-timeout: "soon" is not a number of seconds`,
	} {
		o, _, err := loadProxyOptions([]string{"--config=" + dir + "/" + file}, noEnv, "")
		if err == nil || !strings.HasPrefix(err.Error(), want) || o != nil {
			t.Errorf("%s: %v, want %q and no options", file, err, want)
		}
	}
}

// The seed's examples (xpra's proxy documentation) written as conf files
// give the same proxy as their command lines: showconfig's values agree.
func TestConfSeedExamples(t *testing.T) {
	for _, c := range []struct {
		file string
		args []string
	}{
		{"seed-allow.conf", []string{":20", "--tcp-auth=allow", "--bind-tcp=0.0.0.0:14501"}},
		{"seed-sqlite.conf", []string{":100", "--bind-tcp=0.0.0.0:14501,auth=sqlite:filename=./xpra-auth.sdb", "--socket-dir=/tmp"}},
	} {
		show := func(args ...string) (values, all string) {
			var out, errb bytes.Buffer
			if code := showconfigMain(args, noEnv, "", &out, &errb); code != 0 {
				t.Fatalf("%v: %d %s", args, code, errb.String())
			}
			var b strings.Builder
			for _, l := range strings.Split(out.String(), "\n") {
				if v, _, _ := strings.Cut(l, "  # "); !strings.HasPrefix(l, "#") {
					b.WriteString(v + "\n")
				}
			}
			return b.String(), out.String()
		}
		cmdline, _ := show(c.args...)
		conf, all := show(c.args[0], "--config=testdata/conf/"+c.file)
		if cmdline != conf {
			t.Errorf("%s: the conf file gives\n%s\nthe command line\n%s", c.file, conf, cmdline)
		}
		if !strings.Contains(all, "bind-tcp = 0.0.0.0:14501") || !strings.Contains(all, "# testdata/conf/"+c.file+":") {
			t.Errorf("%s: showconfig\n%s", c.file, all)
		}
	}
}

// xpra's own configuration, Debian's 3.1.3 and the 6.x build's, reads as
// a --config directory: its options the proxy lacks are ignored, each
// listed once, and the ones it has take effect.
func TestConfXpraFiles(t *testing.T) {
	for _, etc := range xpraSites(t) {
		o, prov, err := loadProxyOptions([]string{"--config=" + etc}, noEnv, "")
		if err != nil {
			t.Errorf("%s: %v", etc, err)
			continue
		}
		keys := prov.ignoredKeys()
		seen := map[string]bool{}
		for _, k := range keys {
			if seen[k] {
				t.Errorf("%s: %s ignored twice", etc, k)
			}
			seen[k] = true
		}
		for _, k := range []string{"clipboard", "key-shortcut", "start-env", "xvfb", "mdns", "bind"} {
			if !seen[k] {
				t.Errorf("%s: %s not in the ignored list %v", etc, k, keys)
			}
		}
		if len(prov.files) < 10 || prov.files[0] != etc+"/xpra.conf" {
			t.Errorf("%s: read %v", etc, prov.files)
		}
		// 65_proxy.conf: proxy-start-sessions = True; 10_network.conf lists socket-dirs.
		if !o.lim.StartSessions || origins(prov)["proxy-start-sessions"] != etc+"/conf.d/65_proxy.conf:5" {
			t.Errorf("%s: proxy-start-sessions %v from %s", etc, o.lim.StartSessions, origins(prov)["proxy-start-sessions"])
		}
		if len(o.socketDirs) < 2 || o.socketDirs[len(o.socketDirs)-1] != "~/.xpra" {
			t.Errorf("%s: socket-dirs %v", etc, o.socketDirs)
		}
		// The file alone: only comments.
		if _, prov, err := loadProxyOptions([]string{"--config=" + etc + "/xpra.conf"}, noEnv, ""); err != nil || len(prov.ignored) != 0 {
			t.Errorf("%s/xpra.conf: %v %v", etc, prov, err)
		}
	}
}

// showconfig never prints a secret; paths stay readable.
func TestShowconfigRedacts(t *testing.T) {
	dir := writeConf(t, map[string]string{"s.conf": "tcp-auth = password,value=S3CRET-A\n" +
		"bind-tcp = 127.0.0.1:1,auth=password:value=S3CRET-B\n" +
		"auth = sql,uri=postgresql://xpra:S3CRET-C@dbhost/xpra,passwords=hashed,password_query=SELECT 1\n" +
		"session-registry = postgresql://reg:S3CRET-D@dbhost/reg\n" +
		"pool = farm:random:tcp://u:S3CRET-E@s1:10100/,tcp://u:S3CRET-F@s2:10100/\n" +
		"ssl-key = /etc/xpraproxy/key.pem\n" +
		"unix-auth = env,name=SOMEVAR\n"})
	var out, errb bytes.Buffer
	if code := showconfigMain([]string{"--config=" + dir + "/s.conf", "--ws-auth=password,value=S3CRET-G:x"}, noEnv, "", &out, &errb); code != 0 {
		t.Fatal(errb.String())
	}
	text := out.String()
	if strings.Contains(text, "S3CRET") {
		t.Errorf("a secret in showconfig:\n%s", text)
	}
	for _, want := range []string{"ssl-key = /etc/xpraproxy/key.pem", "uri=postgresql://xpra:***@dbhost/xpra,passwords=hashed,password_query=SELECT 1",
		"session-registry = postgresql://reg:***@dbhost/reg", "tcp://u:***@s1:10100/,tcp://u:***@s2:10100/", "tcp-auth = password,value=***",
		"bind-tcp = 127.0.0.1:1,auth=password:value=***", "unix-auth = env,name=SOMEVAR", "ws-auth = password,value=***"} {
		if !strings.Contains(text, want) {
			t.Errorf("showconfig lacks %q:\n%s", want, text)
		}
	}
	// An error is redacted the same way.
	out.Reset()
	errb.Reset()
	if code := showconfigMain([]string{"--bind-tcp=127.0.0.1:1,foo=x,auth=password:value=S3CRET-H"}, noEnv, "", &out, &errb); code != 2 ||
		strings.Contains(errb.String(), "S3CRET") || !strings.Contains(errb.String(), "unknown bind option") {
		t.Errorf("error: %d %q", code, errb.String())
	}
}

// Loading is a pure function: called again with the same arguments it
// gives the same options; a broken file gives an error and no options.
func TestConfReload(t *testing.T) {
	dir := writeConf(t, map[string]string{"etc/xpraproxy.conf": "bind-tcp = 127.0.0.1:1\nidle-timeout = 9\n", "c.conf": "pool = a:random:tcp://h:1/\n"})
	args := []string{":7", "--config=" + dir + "/c.conf", "--tcp-auth=allow"}
	o1, p1, err := loadProxyOptions(args, noEnv, dir+"/etc")
	if err != nil {
		t.Fatal(err)
	}
	o2, p2, err := loadProxyOptions(args, noEnv, dir+"/etc")
	if err != nil || !reflect.DeepEqual(o1, o2) || !reflect.DeepEqual(p1, p2) {
		t.Fatalf("a second load differs: %v\n%+v\n%+v", err, o1, o2)
	}
	if err := os.WriteFile(dir+"/etc/xpraproxy.conf", []byte("bind-tcp = 127.0.0.1:2\nidle-timout = 9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o3, p3, err := loadProxyOptions(args, noEnv, dir+"/etc")
	if err == nil || o3 != nil || p3 != nil || !strings.Contains(err.Error(), "xpraproxy.conf:2") {
		t.Errorf("a broken file: %v %v", o3, err)
	}
	if o1.binds[0].address != "127.0.0.1:1" || o1.lim.IdleTimeout != 9*time.Second || len(o1.pools) != 1 {
		t.Errorf("the first load changed: %+v", o1)
	}
}

// The system directory is /etc/xpraproxy unless XPRAPROXY_CONF_DIR says.
func TestSystemConfDir(t *testing.T) {
	if d := systemConfDir(noEnv); d != "/etc/xpraproxy" {
		t.Errorf("default %q", d)
	}
	if d := systemConfDir(func(k string) string { return map[string]string{"XPRAPROXY_CONF_DIR": "/opt/x"}[k] }); d != "/opt/x" {
		t.Errorf("XPRAPROXY_CONF_DIR gives %q", d)
	}
}

// `xpraproxy help` says how files and levels work, the replacement rule
// included.
func TestHelpConf(t *testing.T) {
	h := helpText()
	for _, want := range []string{"showconfig", "--config=FILE|DIR", "/etc/xpraproxy/xpraproxy.conf", "REPLACES the earlier level's values",
		"within one level its values accumulate", "XPRAPROXY_CONF_DIR"} {
		if !strings.Contains(h, want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

// The real proxy started on xpra's own configuration serves, and logs the
// xpra keys it ignores once, on one line.
func TestConfIgnoredLoggedOnce(t *testing.T) {
	etc := ""
	for _, e := range xpraSites(t) {
		etc = e
	}
	port := freePort()
	sock := filepath.Join(env.dir, fmt.Sprintf("confsock-%d", port))
	os.MkdirAll(sock, 0o777)
	os.Chmod(sock, 0o777)
	// xpra's log-file means a file in its log-dir: give the proxy stderr.
	cmd := asUser(env.bin, "proxy", freeDisplay(), "--config="+etc, "--config="+etc, "--log-file=",
		fmt.Sprintf("--bind-tcp=127.0.0.1:%d", port), "--tcp-auth=none", "--socket-dir="+sock)
	var (
		raw bytes.Buffer
		mu  sync.Mutex
	)
	cmd.Stdout = syncBuf{&mu, &raw}
	cmd.Stderr = cmd.Stdout
	text := func() string { mu.Lock(); defer mu.Unlock(); return raw.String() }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; !strings.Contains(text(), "xpraproxy ready"); i++ {
		if i > 100 {
			t.Fatalf("not ready:\n%s", text())
		}
		time.Sleep(100 * time.Millisecond)
	}
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	out := text()
	if n := strings.Count(out, "have no meaning for a proxy; ignored"); n != 1 {
		t.Errorf("the ignored keys are logged %d times:\n%s", n, out)
	}
	for _, k := range []string{" clipboard ", " key-shortcut ", " start-env "} {
		if strings.Count(out, k) != 1 {
			t.Errorf("%q is not listed once:\n%s", k, out)
		}
	}
}
