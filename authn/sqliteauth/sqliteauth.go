// Package sqliteauth is xpra's sqlite authentication module
// (--auth=sqlite,filename=...) and the sqlite database `xpraproxy sqlite`
// edits: xpra's users table (authn.UserDB) in a file, through the C
// sqlite library (mattn/go-sqlite3, cgo). It is a package of its own so
// that authn and the session core build without cgo: importing it
// (cmd/xpraproxy does) registers the module and the sql module's
// sqlite:/// URIs with authn, as a database/sql driver registers itself.
package sqliteauth

import (
	"database/sql"
	"fmt"
	"os"
	"strings"
	"sync"

	_ "github.com/mattn/go-sqlite3" // the sqlite driver

	"github.com/xpraproxy/xpraproxy/authn"
)

func init() {
	authn.Register("sqlite", newModule)
	authn.RegisterDatabase("sqlite", openURI)
}

// maxConns bounds the connections to one sqlite database.
const maxConns = 4

// Open opens an existing xpra sqlite database; it does not create the
// file.
func Open(path string) (*authn.UserDB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("authn: sqlite database: %w", err)
	}
	return open(path)
}

func open(path string) (*authn.UserDB, error) {
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000")
	if err != nil {
		return nil, fmt.Errorf("authn: sqlite %s: %w", path, err)
	}
	// sqlite serialises writers and a lookup takes microseconds: a few
	// connections serve any login rate, while one per concurrent login
	// (database/sql's default) costs a page cache and an OS thread each
	// in C, which the process keeps after the burst.
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	return authn.NewUserDB(db, "sqlite", "sqlite "+path), nil
}

// Create makes a new database file with xpra's table; it fails if the
// table exists, as xpra's `create` does.
func Create(path string) (*authn.UserDB, error) {
	u, err := open(path)
	if err != nil {
		return nil, err
	}
	if err := u.Create(); err != nil {
		u.Close()
		return nil, err
	}
	return u, nil
}

// openURI opens the sql module's sqlite:///PATH (SQLAlchemy's form; a
// dialect+driver scheme such as sqlite+pysqlite too).
func openURI(uri string) (*authn.UserDB, error) {
	_, rest, _ := strings.Cut(uri, ":")
	return Open(strings.TrimPrefix(rest, "//"))
}

// module is --tcp-auth=sqlite,filename=... The database is opened on
// first use and kept open (database/sql pools its connections), so a
// proxy can start before the file exists and a login costs no file open.
type module struct {
	name                 string
	path                 string
	passwordQ, sessionsQ string

	mu sync.Mutex
	db *authn.UserDB
}

func newModule(spec authn.Spec, env authn.Env) (authn.Module, error) {
	if err := spec.CheckOptions("filename", "password_query", "sessions_query"); err != nil {
		return nil, err
	}
	path := spec.Options["filename"]
	if path == "" {
		path = "sqlite.sdb"
	}
	if err := authn.CheckQueries("sqlite", spec.Options["password_query"], spec.Options["sessions_query"]); err != nil {
		return nil, err
	}
	return &module{name: spec.Name, path: env.Resolve(path), passwordQ: spec.Options["password_query"], sessionsQ: spec.Options["sessions_query"]}, nil
}

func (m *module) Name() string  { return m.name }
func (*module) Challenge() bool { return true }

func (m *module) open() (*authn.UserDB, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.db == nil {
		db, err := Open(m.path)
		if err != nil {
			return nil, fmt.Errorf("authn: sqlauth cannot find the database file: %w", err)
		}
		m.db = db
	}
	return m.db, nil
}

// Identify is authn.Identifier: the user's row, no password checked.
func (m *module) Identify(username string) (*authn.Identity, error) {
	db, err := m.open()
	if err != nil {
		return nil, err
	}
	return db.Identify(username, m.passwordQ, m.sessionsQ)
}

// EncryptionKey is the user's clear password (authn.KeyModule).
func (m *module) EncryptionKey(username string) ([]byte, error) {
	db, err := m.open()
	if err != nil {
		return nil, err
	}
	return db.Password(username, m.passwordQ)
}

func (m *module) Authenticate(r authn.Request) (*authn.Identity, error) {
	db, err := m.open()
	if err != nil {
		return nil, err
	}
	return db.Lookup(r.Username, r.Verify, nil, m.passwordQ, m.sessionsQ)
}
