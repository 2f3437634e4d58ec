package sshd

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
)

// Host keys: the operator's files (--ssh-host-key), else an ed25519 and
// an RSA key generated once into the proxy's state directory and read
// from there ever after, so that the key a client recorded in its
// known_hosts is the same after a restart. The files are OpenSSH's
// format and names (ssh_host_ed25519_key, ssh_host_rsa_key), mode 0600.

// rsaBits is the size of a generated RSA host key (OpenSSH's default).
const rsaBits = 3072

// HostKeys loads the host keys from files, or, when there are none, from
// dir, generating those missing there.
func HostKeys(files []string, dir string) ([]ssh.Signer, error) {
	if len(files) > 0 {
		var out []ssh.Signer
		for _, f := range files {
			s, err := readKey(f)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}
	if dir == "" {
		return nil, errors.New("sshd: no host key files and no state directory to keep generated ones")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("sshd: host key directory: %w", err)
	}
	var out []ssh.Signer
	for _, k := range []struct {
		name string
		gen  func() (crypto.Signer, error)
	}{
		{"ssh_host_ed25519_key", func() (crypto.Signer, error) {
			_, priv, err := ed25519.GenerateKey(rand.Reader)
			return priv, err
		}},
		{"ssh_host_rsa_key", func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, rsaBits) }},
	} {
		path := filepath.Join(dir, k.name)
		s, err := readKey(path)
		if errors.Is(err, fs.ErrNotExist) {
			s, err = generateKey(path, k.gen)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func readKey(path string) (ssh.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sshd: host key: %w", err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("sshd: host key %s: %w", path, err)
	}
	return s, nil
}

// generateKey writes a new key to path (through a temporary file and a
// link, so that two processes starting at once agree on one key) and
// returns the one path holds.
func generateKey(path string, gen func() (crypto.Signer, error)) (ssh.Signer, error) {
	key, err := gen()
	if err != nil {
		return nil, fmt.Errorf("sshd: generate %s: %w", path, err)
	}
	block, err := ssh.MarshalPrivateKey(key, "xpraproxy host key")
	if err != nil {
		return nil, fmt.Errorf("sshd: encode %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".hostkey-*")
	if err != nil {
		return nil, fmt.Errorf("sshd: write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(pem.EncodeToMemory(block)); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("sshd: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("sshd: write %s: %w", path, err)
	}
	// Link, not rename: a key another process wrote first stays.
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("sshd: write %s: %w", path, err)
	}
	return readKey(path)
}
