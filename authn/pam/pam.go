// Package pam is xpra's pam authentication module (--auth=pam): the
// username and password checked by a PAM service through libpam. It is a
// package of its own because libpam needs cgo: importing it (cmd/xpraproxy
// does) registers the module with authn, as a database/sql driver
// registers itself, and the session core builds without it.
package pam

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	libpam "github.com/msteinert/pam/v2"

	"github.com/xpraproxy/xpraproxy/authn"
)

func init() { authn.Register("pam", newPAM) }

// pamModule checks the username and password with a PAM service, as
// xpra's pam module (default service "login"), then the account (expired
// or locked accounts are refused with PAM's reason). The account's uid and
// gid come from the password database.
type pamModule struct {
	service      string
	checkAccount bool
}

func newPAM(spec authn.Spec, _ authn.Env) (authn.Module, error) {
	if err := spec.CheckOptions("service", "check-account"); err != nil {
		return nil, err
	}
	m := pamModule{service: spec.Options["service"], checkAccount: true}
	if m.service == "" {
		m.service = "login"
	}
	if v, ok := spec.Options["check-account"]; ok {
		m.checkAccount = v != "0" && !strings.EqualFold(v, "false") && !strings.EqualFold(v, "no")
	}
	return m, nil
}

func (m pamModule) Name() string         { return "pam" }
func (m pamModule) Challenge() bool      { return true }
func (m pamModule) NeedsCleartext() bool { return true }

func (m pamModule) Authenticate(req authn.Request) (*authn.Identity, error) {
	if req.Password == nil || req.Username == "" {
		return nil, authn.ErrAuthFailed
	}
	password := string(req.Password)
	t, err := libpam.StartFunc(m.service, req.Username, func(s libpam.Style, msg string) (string, error) {
		switch s {
		case libpam.PromptEchoOff:
			return password, nil
		case libpam.PromptEchoOn:
			return req.Username, nil
		}
		return "", nil
	})
	if err != nil {
		return nil, fmt.Errorf("authn/pam: service %q: %w", m.service, err)
	}
	defer t.End()
	if err := t.Authenticate(libpam.DisallowNullAuthtok); err != nil {
		// A locked account fails here like a wrong password; say which
		// when the shadow file (root only) tells.
		if shadowState(req.Username) == "locked" {
			return nil, &authn.Refusal{Reason: "account locked"}
		}
		return nil, authn.ErrAuthFailed
	}
	if m.checkAccount {
		if err := t.AcctMgmt(libpam.DisallowNullAuthtok); err != nil {
			// Debian's common-account turns pam_unix's ACCT_EXPIRED into
			// pam_deny's AUTH_ERR: the shadow entry gives the reason.
			switch {
			case errors.Is(err, libpam.ErrAcctExpired) || shadowState(req.Username) == "expired":
				return nil, &authn.Refusal{Reason: "account expired"}
			case errors.Is(err, libpam.ErrNewAuthtokReqd):
				return nil, &authn.Refusal{Reason: "password expired"}
			}
			return nil, &authn.Refusal{Reason: "account refused by PAM"}
		}
	}
	return &authn.Identity{Username: req.Username}, nil
}

// shadowState reads the account's /etc/shadow entry: "locked" (the hash
// starts with "!"), "expired" (expiry date passed), or "".
func shadowState(name string) string {
	data, err := os.ReadFile("/etc/shadow")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 8 || f[0] != name {
			continue
		}
		if strings.HasPrefix(f[1], "!") {
			return "locked"
		}
		if days, err := strconv.Atoi(f[7]); err == nil && days >= 0 && int64(days) <= time.Now().Unix()/86400 {
			return "expired"
		}
	}
	return ""
}
