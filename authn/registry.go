package authn

import (
	"fmt"
	"sort"
	"strings"
	"sync"
)

// The registry of modules, as database/sql's of drivers: the modules that
// need cgo (pam: libpam; sqlite: the C sqlite library) live in their own
// packages (authn/pam, authn/sqliteauth), which call Register from their
// init, so that authn, and the session core that imports it, build with
// CGO_ENABLED=0. A binary has the modules of the packages it imports
// (cmd/xpraproxy imports all of them). The maps are the only mutable
// state of authn: filled by init functions, read at configuration time,
// guarded by a mutex because nothing orders a late Register against New.
var registry = struct {
	sync.RWMutex
	modules   map[string]Constructor
	databases map[string]DatabaseOpener
}{
	modules:   map[string]Constructor{},
	databases: map[string]DatabaseOpener{},
}

// builtin are the modules without cgo, one line each.
var builtin = map[string]Constructor{
	"allow":     newAllow,
	"none":      newNone,
	"reject":    newReject,
	"fail":      newFail,
	"password":  newPassword,
	"env":       newEnvModule,
	"file":      newFile,
	"multifile": newMultifile,
	"sql":       newSQL,
	"mysql":     newSQL,
	"exec":      newExec,
	"ldap":      newLDAP,
	"ldap3":     newLDAP,
	"hosts":     newHosts,
	"peercred":  newPeercred,
}

// init fills the registry with builtin here rather than in its literal:
// the sql module's constructor reads the registry (RegisterDatabase).
func init() {
	for name, c := range builtin {
		Register(name, c)
	}
}

// Constructor builds a module from its spec, checking its options
// (Spec.CheckOptions); relative filenames resolve with Env.Resolve.
type Constructor func(Spec, Env) (Module, error)

// Register makes a module available to New under name (as xpra spells it
// in --auth=NAME). It is meant for init functions and panics when name is
// taken or c is nil, as sql.Register does: two modules of one name are a
// programming error, not a configuration one.
func Register(name string, c Constructor) {
	registry.Lock()
	defer registry.Unlock()
	if c == nil {
		panic("authn: Register of module " + name + " with a nil constructor")
	}
	if _, dup := registry.modules[name]; dup {
		panic("authn: Register called twice for module " + name)
	}
	registry.modules[name] = c
}

// DatabaseOpener opens the user database a URI of its scheme names (the
// whole URI, as --auth=sql,uri=... gives it).
type DatabaseOpener func(uri string) (*UserDB, error)

// RegisterDatabase makes OpenSQL (the sql module, `xpraproxy sql`) open
// URIs of scheme with open: authn/sqliteauth registers "sqlite", whose
// driver needs cgo. It panics when scheme is taken, as Register does.
func RegisterDatabase(scheme string, open DatabaseOpener) {
	registry.Lock()
	defer registry.Unlock()
	if open == nil {
		panic("authn: RegisterDatabase of " + scheme + " with a nil opener")
	}
	if _, dup := registry.databases[scheme]; dup {
		panic("authn: RegisterDatabase called twice for " + scheme)
	}
	registry.databases[scheme] = open
}

// Modules lists the registered module names, sorted.
func Modules() []string {
	registry.RLock()
	defer registry.RUnlock()
	names := make([]string, 0, len(registry.modules))
	for n := range registry.modules {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// cgoModules are the modules that live in packages of their own, so that
// an error can say which import a binary lacks.
var cgoModules = map[string]string{
	"pam":    "github.com/xpraproxy/xpraproxy/authn/pam",
	"sqlite": "github.com/xpraproxy/xpraproxy/authn/sqliteauth",
}

// New builds the module a spec names, checking its options.
func New(spec Spec, env Env) (Module, error) {
	registry.RLock()
	c, ok := registry.modules[spec.Name]
	registry.RUnlock()
	if !ok {
		if pkg, known := cgoModules[spec.Name]; known {
			return nil, fmt.Errorf("authn: authentication module %q is not in this program (it needs cgo; a program that offers it imports %s)", spec.Name, pkg)
		}
		return nil, fmt.Errorf("authn: unknown authentication module %q (known: %s)", spec.Name, strings.Join(Modules(), ", "))
	}
	return c(spec, env)
}

// openDatabase opens a URI of a registered scheme; ok is false when no
// package registered it.
func openDatabase(scheme, uri string) (db *UserDB, ok bool, err error) {
	registry.RLock()
	open, ok := registry.databases[scheme]
	registry.RUnlock()
	if !ok {
		return nil, false, nil
	}
	db, err = open(uri)
	return db, true, err
}
