package authn

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// The sql and mysql modules: xpra's users table in PostgreSQL (through
// pgx's pool) or MySQL/MariaDB (go-sql-driver), named by a URI as xpra's
// sql module takes it (SQLAlchemy's form: postgresql://user:pass@host/db,
// postgresql+psycopg2://..., mysql://user:pass@host/db, sqlite:///path).

// DefaultMaxConnections bounds the connections one module keeps open.
const DefaultMaxConnections = 8

// OpenSQL opens the user database a URI names; it does not connect until
// the first query, so a proxy starts while its database is down.
func OpenSQL(uri string, maxConns int, timeout time.Duration) (*UserDB, error) {
	if maxConns <= 0 {
		maxConns = DefaultMaxConnections
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("authn: sql: invalid uri: %w", err)
	}
	scheme, _, _ := strings.Cut(u.Scheme, "+") // SQLAlchemy's dialect+driver
	name := scheme + " " + u.Redacted()
	var db *sql.DB
	dialect := scheme
	switch scheme {
	case "postgresql", "postgres":
		dialect = "postgresql"
		u.Scheme = "postgresql"
		cfg, err := pgxpool.ParseConfig(u.String())
		if err != nil {
			return nil, fmt.Errorf("authn: sql %s: %w", name, err)
		}
		cfg.MaxConns = int32(maxConns)
		cfg.ConnConfig.ConnectTimeout = timeout
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			return nil, fmt.Errorf("authn: sql %s: %w", name, err)
		}
		db = stdlib.OpenDBFromPool(pool)
	case "mysql", "mariadb":
		dialect = "mysql"
		cfg, err := mysqlConfig(u, timeout)
		if err != nil {
			return nil, fmt.Errorf("authn: sql %s: %w", name, err)
		}
		conn, err := mysql.NewConnector(cfg)
		if err != nil {
			return nil, fmt.Errorf("authn: sql %s: %w", name, err)
		}
		db = sql.OpenDB(conn)
	default:
		// sqlite:/// and any other scheme a package registered.
		if db, ok, err := openDatabase(scheme, uri); ok {
			return db, err
		}
		if scheme == "sqlite" {
			return nil, fmt.Errorf("authn: sql: sqlite:/// databases are not in this program (they need cgo; a program that offers them imports %s)", cgoModules["sqlite"])
		}
		return nil, fmt.Errorf("authn: sql: unsupported database %q (postgresql://, mysql://, sqlite:///)", u.Scheme)
	}
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return &UserDB{db: db, dialect: dialect, Timeout: timeout, Name: name}, nil
}

// mysqlConfig reads mysql://user:pass@host[:port]/db?unix_socket=PATH
// (xpra's mysql module: database "xpra" unless named).
func mysqlConfig(u *url.URL, timeout time.Duration) (*mysql.Config, error) {
	cfg := mysql.NewConfig()
	cfg.User = u.User.Username()
	cfg.Passwd, _ = u.User.Password()
	cfg.DBName = strings.TrimPrefix(u.Path, "/")
	if cfg.DBName == "" {
		cfg.DBName = "xpra"
	}
	if sock := u.Query().Get("unix_socket"); sock != "" {
		cfg.Net, cfg.Addr = "unix", sock
	} else {
		host, port := u.Hostname(), u.Port()
		if host == "" {
			host = "127.0.0.1"
		}
		if port == "" {
			port = "3306"
		}
		cfg.Net, cfg.Addr = "tcp", net.JoinHostPort(host, port)
	}
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = timeout, timeout, timeout
	return cfg, nil
}

// sqlModule is --tcp-auth=sql,uri=... and --tcp-auth=mysql,uri=...
type sqlModule struct {
	name                 string
	db                   *UserDB
	passwordQ, sessionsQ string
	hashed               bool
}

func newSQL(spec Spec, _ Env) (Module, error) {
	if err := spec.CheckOptions("uri", "password_query", "sessions_query", "passwords", "max_connections", "timeout"); err != nil {
		return nil, err
	}
	uri := spec.Options["uri"]
	if uri == "" {
		return nil, fmt.Errorf("authn: %s: missing uri= (for example postgresql://user:pass@host/xpra)", spec.Name)
	}
	if spec.Name == "mysql" && !strings.HasPrefix(uri, "mysql") && !strings.HasPrefix(uri, "mariadb") {
		return nil, fmt.Errorf("authn: mysql: the uri must be mysql://user:pass@host/db")
	}
	if err := CheckQueries(spec.Name, spec.Options["password_query"], spec.Options["sessions_query"]); err != nil {
		return nil, err
	}
	m := &sqlModule{name: spec.Name, passwordQ: spec.Options["password_query"], sessionsQ: spec.Options["sessions_query"]}
	switch spec.Options["passwords"] {
	case "", "cleartext":
	case "hashed":
		m.hashed = true
	default:
		return nil, fmt.Errorf("authn: %s: passwords=%q is not cleartext or hashed", spec.Name, spec.Options["passwords"])
	}
	maxConns := DefaultMaxConnections
	if v := spec.Options["max_connections"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("authn: %s: max_connections=%q is not a positive number", spec.Name, v)
		}
		maxConns = n
	}
	timeout := 5 * time.Second
	if v := spec.Options["timeout"]; v != "" {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("authn: %s: timeout=%q is not a number of seconds", spec.Name, v)
		}
		timeout = time.Duration(n * float64(time.Second))
	}
	db, err := OpenSQL(uri, maxConns, timeout)
	if err != nil {
		return nil, err
	}
	m.db = db
	return m, nil
}

func (m *sqlModule) Name() string { return m.name }

// Close releases the module's database connections: a reload replaces
// the module and closes the old one once no login can still be using it.
func (m *sqlModule) Close() error  { return m.db.Close() }
func (*sqlModule) Challenge() bool { return true }

// NeedsCleartext: with hashed passwords the client must send its
// password itself (xor), as for pam.
func (m *sqlModule) NeedsCleartext() bool { return m.hashed }

// Identify is authn.Identifier: the user's row, no password checked.
func (m *sqlModule) Identify(username string) (*Identity, error) {
	return m.db.Identify(username, m.passwordQ, m.sessionsQ)
}

// EncryptionKey is the user's clear password (KeyModule).
func (m *sqlModule) EncryptionKey(username string) ([]byte, error) {
	return m.db.Password(username, m.passwordQ)
}

func (m *sqlModule) Authenticate(r Request) (*Identity, error) {
	if m.hashed {
		if r.Password == nil {
			return nil, ErrAuthFailed
		}
		return m.db.Lookup(r.Username, nil, r.Password, m.passwordQ, m.sessionsQ)
	}
	return m.db.Lookup(r.Username, r.Verify, nil, m.passwordQ, m.sessionsQ)
}
