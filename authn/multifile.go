package authn

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
)

// multifile reads username|password|uid|gid|displays|env|session lines,
// '#' comments and blank lines ignored; the first line of a user wins.
type multifile struct {
	name string
	path string
}

func newMultifile(spec Spec, env Env) (Module, error) {
	if err := spec.CheckOptions("filename"); err != nil {
		return nil, err
	}
	path := env.Resolve(spec.Options["filename"])
	if path == "" {
		return nil, fmt.Errorf("authn: the multifile module needs filename=")
	}
	return multifile{spec.Name, path}, nil
}

func (m multifile) Name() string  { return m.name }
func (multifile) Challenge() bool { return true }

// Identify is Identifier: the user's line, no password checked.
func (m multifile) Identify(username string) (*Identity, error) {
	return m.Authenticate(Request{Username: username, Verify: func([]byte) bool { return true }})
}

func (m multifile) Authenticate(r Request) (*Identity, error) {
	data, err := os.ReadFile(m.path)
	if err != nil {
		return nil, fmt.Errorf("authn: multifile: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "|")
		if len(f) < 2 || f[0] != r.Username {
			continue
		}
		if r.Verify == nil || !r.Verify([]byte(f[1])) {
			return nil, ErrAuthFailed
		}
		id := &Identity{Username: f[0], Explicit: true}
		if len(f) >= 5 {
			id.UID, id.GID = f[2], f[3]
			id.Displays = splitDisplays(f[4])
		}
		if len(f) >= 6 {
			id.Env = ParseOptions(f[5])
		}
		if len(f) >= 7 {
			id.SessionOptions = ParseOptions(f[6])
		}
		return id, nil
	}
	return nil, ErrAuthFailed
}

// splitDisplays splits a CSV displays column, dropping empty entries (as
// xpra ≥ 6 does; 3.1 kept an empty string that matched nothing).
func splitDisplays(s string) []string {
	var out []string
	for _, d := range strings.Split(s, ",") {
		if d = strings.TrimSpace(d); d != "" {
			out = append(out, d)
		}
	}
	return out
}
