package authn

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"text/tabwriter"

	_ "github.com/mattn/go-sqlite3" // the sqlite driver
)

// SQLiteSchema is xpra's users table (sqlite_auth.py `create`), so that
// databases made by either tool work with both.
const SQLiteSchema = `CREATE TABLE users (username VARCHAR(255) NOT NULL, password VARCHAR(255), uid VARCHAR(63), gid VARCHAR(63), displays VARCHAR(8191), env_options VARCHAR(8191), session_options VARCHAR(8191))`

const (
	defaultPasswordQuery = "SELECT password FROM users WHERE username=(?)"
	defaultSessionsQuery = "SELECT uid, gid, displays, env_options, session_options FROM users WHERE username=(?) AND password=(?)"
)

// SQLite is a user database in xpra's sqlite format. Passwords are stored
// in plain text, as xpra stores them: the hmac challenge needs them.
type SQLite struct {
	Path string
	db   *sql.DB
}

// OpenSQLite opens an existing database; it does not create the file.
func OpenSQLite(path string) (*SQLite, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("authn: sqlite database: %w", err)
	}
	return openSQLite(path)
}

func openSQLite(path string) (*SQLite, error) {
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000")
	if err != nil {
		return nil, fmt.Errorf("authn: sqlite %s: %w", path, err)
	}
	return &SQLite{Path: path, db: db}, nil
}

// CreateSQLite makes a new database file with xpra's table; it fails if
// the table exists, as xpra's `create` does.
func CreateSQLite(path string) (*SQLite, error) {
	s, err := openSQLite(path)
	if err != nil {
		return nil, err
	}
	if _, err := s.db.Exec(SQLiteSchema); err != nil {
		s.Close()
		return nil, fmt.Errorf("authn: sqlite create %s: %w", path, err)
	}
	return s, nil
}

// Close releases the database.
func (s *SQLite) Close() error { return s.db.Close() }

// User is one row of the users table.
type User struct {
	Username, Password, UID, GID, Displays, EnvOptions, SessionOptions string
}

// Add inserts a row.
func (s *SQLite) Add(u User) error {
	_, err := s.db.Exec("INSERT INTO users(username, password, uid, gid, displays, env_options, session_options) VALUES(?, ?, ?, ?, ?, ?, ?)",
		u.Username, u.Password, u.UID, u.GID, u.Displays, u.EnvOptions, u.SessionOptions)
	if err != nil {
		return fmt.Errorf("authn: sqlite add %s: %w", u.Username, err)
	}
	return nil
}

// Remove deletes a user's rows, or only the row with that password.
func (s *SQLite) Remove(username string, password *string) (int64, error) {
	var (
		res sql.Result
		err error
	)
	if password == nil {
		res, err = s.db.Exec("DELETE FROM users WHERE username=(?)", username)
	} else {
		res, err = s.db.Exec("DELETE FROM users WHERE username=(?) AND password=(?)", username, *password)
	}
	if err != nil {
		return 0, fmt.Errorf("authn: sqlite remove %s: %w", username, err)
	}
	return res.RowsAffected()
}

// Users lists every row.
func (s *SQLite) Users() ([]User, error) {
	rows, err := s.db.Query("SELECT username, password, uid, gid, displays, env_options, session_options FROM users")
	if err != nil {
		return nil, fmt.Errorf("authn: sqlite list: %w", err)
	}
	defer rows.Close()
	var out []User
	for rows.Next() {
		var f [7]sql.NullString
		if err := rows.Scan(&f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6]); err != nil {
			return nil, err
		}
		out = append(out, User{f[0].String, f[1].String, f[2].String, f[3].String, f[4].String, f[5].String, f[6].String})
	}
	return out, rows.Err()
}

// WriteTable prints the users as `list` does, passwords included: the
// admin command is run by whoever may read the file anyway.
func WriteTable(w *tabwriter.Writer, users []User) {
	fmt.Fprintln(w, "username\tpassword\tuid\tgid\tdisplays\tenv_options\tsession_options")
	for _, u := range users {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", u.Username, u.Password, u.UID, u.GID, u.Displays, u.EnvOptions, u.SessionOptions)
	}
	w.Flush()
}

// Lookup authenticates username: every row's password is a candidate, and
// the first that verifies selects the row the sessions come from.
func (s *SQLite) Lookup(username string, verify func([]byte) bool, passwordQuery, sessionsQuery string) (*Identity, error) {
	if passwordQuery == "" {
		passwordQuery = defaultPasswordQuery
	}
	if sessionsQuery == "" {
		sessionsQuery = defaultSessionsQuery
	}
	rows, err := s.db.Query(passwordQuery, username)
	if err != nil {
		return nil, fmt.Errorf("authn: sqlite password query: %w", err)
	}
	var used *string
	for rows.Next() {
		var pw sql.NullString
		if err := rows.Scan(&pw); err != nil {
			rows.Close()
			return nil, err
		}
		if pw.Valid && verify != nil && verify([]byte(pw.String)) {
			p := pw.String
			used = &p
			break
		}
	}
	rows.Close()
	if used == nil {
		return nil, ErrAuthFailed
	}
	var f [5]sql.NullString
	err = s.db.QueryRow(sessionsQuery, username, *used).Scan(&f[0], &f[1], &f[2], &f[3], &f[4])
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrAuthFailed
	}
	if err != nil {
		return nil, fmt.Errorf("authn: sqlite sessions query: %w", err)
	}
	return &Identity{
		Username:       username,
		UID:            f[0].String,
		GID:            f[1].String,
		Displays:       splitDisplays(f[2].String),
		Explicit:       true,
		Env:            ParseOptions(f[3].String),
		SessionOptions: ParseOptions(f[4].String),
	}, nil
}

// sqliteModule is --tcp-auth=sqlite,filename=... The database is opened
// on first use and kept open (database/sql pools its connections), so a
// proxy can start before the file exists and a login costs no file open.
type sqliteModule struct {
	name                 string
	path                 string
	passwordQ, sessionsQ string

	mu sync.Mutex
	db *SQLite
}

func newSQLite(spec Spec, env Env) (Module, error) {
	if err := checkOptions(spec, "filename", "password_query", "sessions_query"); err != nil {
		return nil, err
	}
	path := spec.Options["filename"]
	if path == "" {
		path = "sqlite.sdb"
	}
	for _, q := range []string{spec.Options["password_query"], spec.Options["sessions_query"]} {
		if q != "" && !strings.HasPrefix(strings.ToUpper(strings.TrimSpace(q)), "SELECT") {
			return nil, fmt.Errorf("authn: sqlite: queries must be SELECT statements")
		}
	}
	return &sqliteModule{name: spec.Name, path: resolve(env, path), passwordQ: spec.Options["password_query"], sessionsQ: spec.Options["sessions_query"]}, nil
}

func (m *sqliteModule) Name() string  { return m.name }
func (*sqliteModule) Challenge() bool { return true }

func (m *sqliteModule) open() (*SQLite, error) {
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
	return db.Lookup(r.Username, r.Verify, m.passwordQ, m.sessionsQ)
}

// AddAll inserts many rows in one transaction (for tools that provision
// thousands of users).
func (s *SQLite) AddAll(users []User) error {
	tx, err := s.db.Begin()
	if err != nil {
		return fmt.Errorf("authn: sqlite: %w", err)
	}
	stmt, err := tx.Prepare("INSERT INTO users(username, password, uid, gid, displays, env_options, session_options) VALUES(?, ?, ?, ?, ?, ?, ?)")
	if err != nil {
		tx.Rollback()
		return fmt.Errorf("authn: sqlite: %w", err)
	}
	defer stmt.Close()
	for _, u := range users {
		if _, err := stmt.Exec(u.Username, u.Password, u.UID, u.GID, u.Displays, u.EnvOptions, u.SessionOptions); err != nil {
			tx.Rollback()
			return fmt.Errorf("authn: sqlite add %s: %w", u.Username, err)
		}
	}
	return tx.Commit()
}
