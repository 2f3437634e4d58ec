package main

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/relay"
)

func noEnv(string) string { return "" }

// The table is the only place an option is described: README's list, the
// help and the parser's defaults all come from it.
func TestOptionTable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(readme), "<!-- options: begin -->\n")
	block, _, found := strings.Cut(rest, "<!-- options: end -->")
	if !found || block != optionsMarkdown() {
		t.Errorf("README's option list differs from the table: replace it with `xpraproxy help --markdown`")
	}
	help := helpText()
	seen := map[string]bool{}
	for _, opt := range proxyOptionTable() {
		for _, n := range opt.names {
			if seen[n] || xpraIgnored[n] {
				t.Errorf("--%s is in the table twice or also ignored", n)
			}
			seen[n] = true
			if !strings.Contains(help, "--"+n+"=") {
				t.Errorf("help does not list --%s", n)
			}
		}
		if opt.help == "" || opt.arg == "" {
			t.Errorf("--%s has no help or value shape", opt.names[0])
		}
	}

	// The defaults are what the proxy had before the table (behaviour
	// unchanged), and giving a default explicitly changes nothing.
	def, err := parseProxyArgsEnv(nil, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	// The sessions' values are relay.DefaultLimits (TestDefaultLimits).
	want := &proxyOptions{lim: def.lim, maxTotal: 1 << 30, readSize: 32 << 10, gcPercent: defaultGCPercent, burstGC: defaultBurstGCPercent, workers: "uid",
		video: "auto", poolProbe: 5 * time.Second, workerIdle: 60 * time.Second, drainTimeout: time.Hour,
		maxConns: -1, maxLogins: -1, maxPerSource: 16, throttle: true, sshUpgrade: true,
		registryInterval: 2 * time.Second, registryExpiry: 15 * time.Second, logFormat: "text"}
	if !reflect.DeepEqual(def, want) {
		t.Errorf("defaults:\n%+v\nwant\n%+v", def, want)
	}
	for _, opt := range proxyOptionTable() {
		if opt.def == "" {
			continue
		}
		o, err := parseProxyArgsEnv([]string{"--" + opt.names[0] + "=" + opt.def}, noEnv)
		if err != nil || !reflect.DeepEqual(o, def) {
			t.Errorf("--%s=%s (its default) gives %+v, %v", opt.names[0], opt.def, o, err)
		}
	}

	// xpra's environment variables set what the command line does not.
	env := map[string]string{"XPRA_CHALLENGE_TIMEOUT": "7", "XPRA_PROXY_MAX_CONCURRENT_CONNECTIONS": "200", "XPRA_PROXY_PING_INTERVAL": "2"}
	o, err := parseProxyArgsEnv([]string{"--proxy-ping=9"}, func(k string) string { return env[k] })
	if err != nil || o.lim.ChallengeTimeout != 7*time.Second || o.maxLogins != 200 || o.lim.PingInterval != 9*time.Second {
		t.Errorf("env: %+v %v", o, err)
	}
	if o.limits().ChallengeTimeout != 7*time.Second {
		t.Errorf("--challenge-timeout does not reach the sessions: %v", o.limits().ChallengeTimeout)
	}
	if _, err := parseProxyArgsEnv(nil, func(k string) string { return map[string]string{"XPRA_MAX_PACKET_SIZE": "big"}[k] }); err == nil ||
		!strings.Contains(err.Error(), "XPRA_MAX_PACKET_SIZE") {
		t.Errorf("a bad environment value: %v", err)
	}
	for _, bad := range [][]string{{"--max-connections=-3"}, {"--proxy-workers=thread"}, {"--proxy-video-encoders=x"},
		{"--max-packet-size=lots"}, {"--metrics=nohost"}, {"--gc-percent=x"}, {"--loops"}, {"--read-size=1K"}, {"--read-size=2M"}} {
		if _, err := parseProxyArgsEnv(bad, noEnv); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if o, err := parseProxyArgsEnv([]string{"--read-size=64K"}, noEnv); err != nil || o.readSize != 64<<10 || workerConfig(o, o.limits(), nil, "").ReadSize != 64<<10 {
		t.Errorf("--read-size=64K does not reach the loops and the workers: %+v %v", o, err)
	}
	if o, err := parseProxyArgsEnv([]string{"--daemon", "--login-throttle=no", "--max-connections=auto", "--proxy-start-commands=xterm, xclock,"}, noEnv); err != nil ||
		!o.daemon || o.throttle || o.maxConns != -1 || strings.Join(o.lim.StartCommands, " ") != "xterm xclock" {
		t.Errorf("flags and lists: %+v %v", o, err)
	}
}

// relay.DefaultLimits is what the option table's defaults give: a proxy
// started without options and a Limits made in code agree (the values
// live in the table and in relay once each, never in this test).
func TestDefaultLimits(t *testing.T) {
	o, err := parseProxyArgsEnv(nil, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	got, want := o.limits(), relay.DefaultLimits()
	// No option sets it: the bytes a client may send while its server is
	// dialed.
	got.ConnectBuffer = want.ConnectBuffer
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the option table's defaults give\n%+v\nrelay.DefaultLimits() is\n%+v", got, want)
	}
	if n := got.Normalized(); !reflect.DeepEqual(n, got) {
		t.Errorf("the defaults are not normalised: %+v", n)
	}
}
