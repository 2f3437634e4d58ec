package authn

import (
	"fmt"
	"os/user"
	"strconv"
)

// ResolveIDs turns the uid and gid a module gives (numbers, names or "")
// into numeric ids, as xpra's parse_session_data does: "" means nobody;
// a group "nobody" that does not exist (Debian calls it nogroup) falls back
// to nogroup, then to the user's primary group.
func ResolveIDs(uid, gid string) (int, int, error) {
	if uid == "" {
		uid = "nobody"
	}
	u, err := lookupUser(uid)
	if err != nil {
		return 0, 0, err
	}
	if gid == "" {
		gid = "nobody"
	}
	g, err := lookupGroup(gid)
	if err != nil && (gid == "nobody" || gid == "nogroup") {
		for _, alt := range []string{"nogroup", "nobody"} {
			if g, err = lookupGroup(alt); err == nil {
				break
			}
		}
		if err != nil && u.Gid != "" {
			g, err = strconv.Atoi(u.Gid)
		}
	}
	if err != nil {
		return 0, 0, fmt.Errorf("authn: cannot find gid of %q: %w", gid, err)
	}
	n, _ := strconv.Atoi(u.Uid)
	return n, g, nil
}

func lookupUser(s string) (*user.User, error) {
	if _, err := strconv.Atoi(s); err == nil {
		if u, err := user.LookupId(s); err == nil {
			return u, nil
		}
		return &user.User{Uid: s}, nil // a uid without a passwd entry is still a uid
	}
	u, err := user.Lookup(s)
	if err != nil {
		return nil, fmt.Errorf("authn: cannot find uid of %q: %w", s, err)
	}
	return u, nil
}

func lookupGroup(s string) (int, error) {
	if n, err := strconv.Atoi(s); err == nil {
		return n, nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}

// Account is who a relay runs as when the proxy is root.
type Account struct {
	UID, GID int
	Groups   []int // supplementary groups, gid included
	Name     string
}

// ResolveAccount finds the account a logged-in identity relays as, as
// xpra's authenticators do: the module's uid/gid (sqlite and multifile
// rows, uid=/gid= options); else, for modules that check local accounts,
// the password database entry of the username; else nobody/nogroup.
func ResolveAccount(id *Identity) (Account, error) {
	uid, gid := id.UID, id.GID
	if uid == "" && gid == "" && !id.Explicit && id.Username != "" {
		if u, err := user.Lookup(id.Username); err == nil {
			uid, gid = u.Uid, u.Gid
		}
	}
	u, g, err := ResolveIDs(uid, gid)
	if err != nil {
		return Account{}, err
	}
	a := Account{UID: u, GID: g, Groups: []int{g}}
	if pw, err := user.LookupId(strconv.Itoa(u)); err == nil {
		a.Name = pw.Username
		if ids, err := pw.GroupIds(); err == nil {
			for _, s := range ids {
				if n, err := strconv.Atoi(s); err == nil && n != g && n != 0 {
					a.Groups = append(a.Groups, n)
				}
			}
		}
	}
	return a, nil
}

// Root reports whether the account would relay with root privileges.
func (a Account) Root() bool { return a.UID == 0 || a.GID == 0 }
