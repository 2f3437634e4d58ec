package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/crypto/ssh"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/loop"
	"github.com/xpraproxy/xpraproxy/relay"
	"github.com/xpraproxy/xpraproxy/sshd"
)

// stateDir is where the proxy keeps what it generates for itself (the
// SSH host keys): /var/lib/xpraproxy as root, else the user's config
// directory beside the embedded default's user database.
func stateDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/xpraproxy"
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "xpraproxy")
}

// sshHostKeys loads the host keys once per configuration.
type sshHostKeys struct {
	files  []string
	keys   []ssh.Signer
	err    error
	loaded bool
}

func (h *sshHostKeys) get() ([]ssh.Signer, error) {
	if !h.loaded {
		h.loaded = true
		h.keys, h.err = sshd.HostKeys(h.files, stateDir())
	}
	return h.keys, h.err
}

// sshServer is a listener's SSH transport: its logins through mods (the
// listener's, or --ssh-auth's), failures counted by the login throttle.
func sshServer(keys []ssh.Signer, mods []authn.Module, throttle *relay.Throttle, authorizedKeys string, log *slog.Logger) *sshd.Server {
	return &sshd.Server{Signers: keys, Modules: mods, Throttle: throttle, AuthorizedKeys: authorizedKeys, Log: log}
}

// listenerModules are a listener's modules, its SSH logins' included.
func listenerModules(l loop.Listener) []authn.Module {
	mods := l.Config.Modules
	if s, ok := l.SSH.(*sshd.Server); ok {
		mods = append(slices.Clip(mods), s.Modules...)
	}
	return mods
}
