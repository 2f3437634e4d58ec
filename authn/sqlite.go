package authn

import (
	"database/sql"
	"fmt"
	"os"
	"sync"

	_ "github.com/mattn/go-sqlite3" // the sqlite driver
)

// sqliteConns bounds the connections to one sqlite database.
const sqliteConns = 4

// OpenSQLite opens an existing xpra sqlite database; it does not create
// the file.
func OpenSQLite(path string) (*UserDB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("authn: sqlite database: %w", err)
	}
	return openSQLite(path)
}

func openSQLite(path string) (*UserDB, error) {
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000")
	if err != nil {
		return nil, fmt.Errorf("authn: sqlite %s: %w", path, err)
	}
	// sqlite serialises writers and a lookup takes microseconds: a few
	// connections serve any login rate, while one per concurrent login
	// (database/sql's default) costs a page cache and an OS thread each
	// in C, which the process keeps after the burst.
	db.SetMaxOpenConns(sqliteConns)
	db.SetMaxIdleConns(sqliteConns)
	return &UserDB{db: db, dialect: "sqlite", Name: "sqlite " + path}, nil
}

// CreateSQLite makes a new database file with xpra's table; it fails if
// the table exists, as xpra's `create` does.
func CreateSQLite(path string) (*UserDB, error) {
	u, err := openSQLite(path)
	if err != nil {
		return nil, err
	}
	if err := u.Create(); err != nil {
		u.Close()
		return nil, err
	}
	return u, nil
}

// sqliteModule is --tcp-auth=sqlite,filename=... The database is opened
// on first use and kept open (database/sql pools its connections), so a
// proxy can start before the file exists and a login costs no file open.
type sqliteModule struct {
	name                 string
	path                 string
	passwordQ, sessionsQ string

	mu sync.Mutex
	db *UserDB
}

func newSQLite(spec Spec, env Env) (Module, error) {
	if err := checkOptions(spec, "filename", "password_query", "sessions_query"); err != nil {
		return nil, err
	}
	path := spec.Options["filename"]
	if path == "" {
		path = "sqlite.sdb"
	}
	if err := checkQueries("sqlite", spec.Options["password_query"], spec.Options["sessions_query"]); err != nil {
		return nil, err
	}
	return &sqliteModule{name: spec.Name, path: resolve(env, path), passwordQ: spec.Options["password_query"], sessionsQ: spec.Options["sessions_query"]}, nil
}

func (m *sqliteModule) Name() string  { return m.name }
func (*sqliteModule) Challenge() bool { return true }

func (m *sqliteModule) open() (*UserDB, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.db == nil {
		db, err := OpenSQLite(m.path)
		if err != nil {
			return nil, fmt.Errorf("authn: sqlauth cannot find the database file: %w", err)
		}
		m.db = db
	}
	return m.db, nil
}

func (m *sqliteModule) Authenticate(r Request) (*Identity, error) {
	db, err := m.open()
	if err != nil {
		return nil, err
	}
	return db.Lookup(r.Username, r.Verify, nil, m.passwordQ, m.sessionsQ)
}
