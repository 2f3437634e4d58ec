package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/loop"
	"github.com/xpraproxy/xpraproxy/relay"
)

// listenersFor builds the listeners o names, each with its sessions'
// config (base with the listener's authentication modules): at start and
// at each reload, so everything a listener needs is made here or is in
// base. Files, databases and certificates are read now: a failure is an
// error before anything serves.
func listenersFor(o *proxyOptions, base relay.Config, ctl *control, log *slog.Logger) ([]loop.Listener, error) {
	cwd, _ := os.Getwd()
	env := authn.Env{Getenv: os.Getenv, Dir: cwd}
	modules := func(specs []authn.Spec) ([]authn.Module, error) {
		var out []authn.Module
		for _, s := range specs {
			m, err := authn.New(s, env)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		}
		return out, nil
	}
	var tlsCfg *tls.Config
	if o.sslCert != "" {
		key := o.sslKey
		if key == "" {
			key = o.sslCert // xpra accepts one PEM file with both
		}
		cert, err := tls.LoadX509KeyPair(o.sslCert, key)
		if err != nil {
			return nil, fmt.Errorf("--ssl-cert/--ssl-key: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	var listeners []loop.Listener
	add := func(b bind) error {
		specs := b.auth
		if len(specs) == 0 {
			switch {
			case len(o.kindAuth[b.kind]) > 0:
				specs = o.kindAuth[b.kind]
			case b.network == "tcp" || b.network == "udp":
				specs = o.tcpAuth
			default:
				specs = o.unixAuth
			}
		}
		if (b.kind == "ssl" || b.kind == "wss" || b.kind == "quic") && tlsCfg == nil {
			return fmt.Errorf("--bind-%s needs --ssl-cert", b.kind)
		}
		if len(specs) == 0 {
			specs = o.auth
		}
		mods, err := modules(specs)
		if err != nil {
			return err
		}
		if os.Geteuid() == 0 {
			for _, s := range specs {
				if s.Name == "file" || s.Name == "env" || s.Name == "exec" {
					log.Warn("this authentication module gives every username the same password; as root, each username runs as its own account",
						"module", s.Name)
				}
			}
		}
		cfg := base
		cfg.Modules = mods
		// A QUIC connection is always encrypted (TLS 1.3).
		cfg.Encrypted = b.network == "unix" || b.network == "udp"
		cfg.Local = b.network == "unix"
		cfg.Control = ctl
		if len(mods) == 0 {
			log.Warn("no authentication module: every client will be refused (use auth=none to allow everyone)",
				"listener", b.network+"://"+b.address)
		}
		names := make([]string, len(specs))
		for i, s := range specs {
			names[i] = s.String()
		}
		log.Info("listening", "listener", b.kind+"://"+b.address, "auth", strings.Join(names, " "),
			"tls", tlsCfg != nil && b.network != "unix", "html", o.html, "inherited", b.ln != nil)
		l := loop.Listener{Network: b.network, Address: b.address, Kind: b.kind, Config: &cfg, Inherited: b.ln}
		if b.network == "tcp" || b.network == "udp" {
			l.TLS, l.HTML = tlsCfg, o.html
		}
		listeners = append(listeners, l)
		return nil
	}
	// The proxy's own socket, so that `xpra list` shows it. Its mode is
	// 0600: only this user reaches it, so it needs no password unless
	// --unix-auth/--auth say otherwise. After an upgrade it is among the
	// sockets handed over: that one serves, as the own socket.
	own := bind{network: "unix", kind: "unix", address: filepath.Join(ctl.sockDir, ctl.hostname+"-"+strings.TrimPrefix(o.display, ":"))}
	if len(o.unixAuth) == 0 && len(o.auth) == 0 {
		own.auth = []authn.Spec{{Name: "none", Options: map[string]string{}}}
	}
	for _, b := range o.binds {
		if b.ln != nil && b.network == "unix" && len(b.auth) == 0 && sameAddress(own, b.network, b.address) {
			own.ln = b.ln
			continue
		}
		if err := add(b); err != nil {
			return nil, err
		}
	}
	if err := add(own); err != nil {
		return nil, err
	}
	return listeners, nil
}
