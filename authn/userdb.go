package authn

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// UserDB is xpra's users table in a SQL database: sqlite (the sqlite
// module), PostgreSQL or MySQL/MariaDB (the sql and mysql modules). One
// table, one set of queries; only the placeholder style differs.
type UserDB struct {
	db      *sql.DB
	dialect string // "sqlite", "postgresql", "mysql"
	// Timeout bounds each query: a database that is down or slow fails
	// the login instead of holding it (0: 5 s).
	Timeout time.Duration
	// Name describes the database for errors and logs, without secrets.
	Name string
}

// NewUserDB is xpra's users table in db, for the packages that open
// databases of their own (authn/sqliteauth). dialect is "sqlite",
// "postgresql" or "mysql" (the placeholders its queries use); name
// describes db in errors and logs and must hold no secret.
func NewUserDB(db *sql.DB, dialect, name string) *UserDB {
	return &UserDB{db: db, dialect: dialect, Name: name}
}

// Schema is xpra's users table (sqlite_auth.py and sql_auth.py `create`),
// so that databases made by either tool work with both.
const Schema = `CREATE TABLE users (username VARCHAR(255) NOT NULL, password VARCHAR(255), uid VARCHAR(63), gid VARCHAR(63), displays VARCHAR(8191), env_options VARCHAR(8191), session_options VARCHAR(8191))`

// SQLiteSchema is Schema (the name older callers use).
const SQLiteSchema = Schema

// xpra's default queries (sqlauthbase.py), with its placeholders.
const (
	defaultPasswordQuery = "SELECT password FROM users WHERE username=(?)"
	defaultSessionsQuery = "SELECT uid, gid, displays, env_options, session_options FROM users WHERE username=(?) AND password=(?)"
)

// ErrUnavailable wraps a failure to reach the user database: the client
// is told the database is unavailable, not that its password is wrong.
var ErrUnavailable = errors.New("the user database is not available")

// User is one row of the users table.
type User struct {
	Username, Password, UID, GID, Displays, EnvOptions, SessionOptions string
}

// placeholders rewrites a query written with xpra's placeholders (`?`,
// `(?)` for sqlite; `%s` for sql and mysql) in the dialect's: `$1, $2...`
// for PostgreSQL, `?` for the others. Every value reaches the database as
// a parameter of a prepared statement, never as SQL text.
func (u *UserDB) placeholders(q string) string {
	var b strings.Builder
	n := 0
	for i := 0; i < len(q); i++ {
		ph := 0
		switch {
		case q[i] == '?':
			ph = 1
		case q[i] == '%' && i+1 < len(q) && q[i+1] == 's':
			ph = 2
		}
		if ph == 0 {
			b.WriteByte(q[i])
			continue
		}
		n++
		if u.dialect == "postgresql" {
			fmt.Fprintf(&b, "$%d", n)
		} else {
			b.WriteByte('?')
		}
		i += ph - 1
	}
	return b.String()
}

func (u *UserDB) ctx() (context.Context, context.CancelFunc) {
	t := u.Timeout
	if t <= 0 {
		t = 5 * time.Second
	}
	return context.WithTimeout(context.Background(), t)
}

// unavailable wraps a database error as ErrUnavailable.
func (u *UserDB) unavailable(what string, err error) error {
	return fmt.Errorf("authn: %s %s: %w: %w", u.Name, what, ErrUnavailable, err)
}

// Close releases the database.
func (u *UserDB) Close() error { return u.db.Close() }

// Create makes xpra's table; it fails if the table exists, as xpra's
// `create` does.
func (u *UserDB) Create() error {
	ctx, cancel := u.ctx()
	defer cancel()
	if _, err := u.db.ExecContext(ctx, Schema); err != nil {
		return fmt.Errorf("authn: %s create: %w", u.Name, err)
	}
	return nil
}

const insertUser = "INSERT INTO users(username, password, uid, gid, displays, env_options, session_options) VALUES(?, ?, ?, ?, ?, ?, ?)"

// Add inserts a row.
func (u *UserDB) Add(r User) error { return u.AddAll([]User{r}) }

// AddAll inserts many rows in one transaction (for tools that provision
// thousands of users).
func (u *UserDB) AddAll(users []User) error {
	ctx, cancel := u.ctx()
	defer cancel()
	tx, err := u.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("authn: %s: %w", u.Name, err)
	}
	stmt, err := tx.PrepareContext(ctx, u.placeholders(insertUser))
	if err != nil {
		tx.Rollback()
		return fmt.Errorf("authn: %s: %w", u.Name, err)
	}
	defer stmt.Close()
	for _, r := range users {
		if _, err := stmt.ExecContext(ctx, r.Username, r.Password, r.UID, r.GID, r.Displays, r.EnvOptions, r.SessionOptions); err != nil {
			tx.Rollback()
			return fmt.Errorf("authn: %s add %s: %w", u.Name, r.Username, err)
		}
	}
	return tx.Commit()
}

// Remove deletes a user's rows, or only the row with that password
// (given as stored: a hash for hashed rows).
func (u *UserDB) Remove(username string, password *string) (int64, error) {
	ctx, cancel := u.ctx()
	defer cancel()
	var (
		res sql.Result
		err error
	)
	if password == nil {
		res, err = u.db.ExecContext(ctx, u.placeholders("DELETE FROM users WHERE username=(?)"), username)
	} else {
		res, err = u.db.ExecContext(ctx, u.placeholders("DELETE FROM users WHERE username=(?) AND password=(?)"), username, *password)
	}
	if err != nil {
		return 0, fmt.Errorf("authn: %s remove %s: %w", u.Name, username, err)
	}
	return res.RowsAffected()
}

// Users lists every row.
func (u *UserDB) Users() ([]User, error) {
	ctx, cancel := u.ctx()
	defer cancel()
	rows, err := u.db.QueryContext(ctx, "SELECT username, password, uid, gid, displays, env_options, session_options FROM users")
	if err != nil {
		return nil, fmt.Errorf("authn: %s list: %w", u.Name, err)
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
// admin command is run by whoever may read the database anyway.
func WriteTable(w *tabwriter.Writer, users []User) {
	fmt.Fprintln(w, "username\tpassword\tuid\tgid\tdisplays\tenv_options\tsession_options")
	for _, u := range users {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", u.Username, u.Password, u.UID, u.GID, u.Displays, u.EnvOptions, u.SessionOptions)
	}
	w.Flush()
}

// Hashed passwords. xpra stores passwords in clear because its hmac
// challenge needs them; a row may instead hold a bcrypt hash (bcrypt, not
// argon2id: a login storm on a public port must not cost 64 MB per
// verification). A hash can only be checked against the password itself,
// so modules with passwords=hashed challenge with xor, which clients send
// only over TLS or to a local host (as for pam).

// HashPassword is the bcrypt hash the admin commands store by default.
func HashPassword(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("authn: hash: %w", err)
	}
	return string(h), nil
}

// IsHash reports whether a stored password is a bcrypt hash.
func IsHash(stored string) bool {
	return len(stored) == 60 && (strings.HasPrefix(stored, "$2a$") || strings.HasPrefix(stored, "$2b$") || strings.HasPrefix(stored, "$2y$"))
}

// matchStored reports whether password matches a stored value: a hash,
// or xpra's cleartext compared in constant time.
func matchStored(stored string, password []byte) bool {
	if IsHash(stored) {
		return bcrypt.CompareHashAndPassword([]byte(stored), password) == nil
	}
	return subtle.ConstantTimeCompare([]byte(stored), password) == 1
}

// Lookup authenticates username: every row's password is a candidate, and
// the first that verifies selects the row the sessions come from. verify
// checks an hmac response against a cleartext candidate; password, when
// not nil, is the client's password itself (xor), which also matches
// hashed rows.
func (u *UserDB) Lookup(username string, verify func([]byte) bool, password []byte, passwordQuery, sessionsQuery string) (*Identity, error) {
	return u.lookup(username, verify, password, false, passwordQuery, sessionsQuery)
}

// Identify is Lookup for a user whose login another way proved (an SSH
// key): the sessions of the user's first row, no password checked.
func (u *UserDB) Identify(username, passwordQuery, sessionsQuery string) (*Identity, error) {
	return u.lookup(username, nil, nil, true, passwordQuery, sessionsQuery)
}

// lookup is Lookup; with proved, the first row is the user's.
func (u *UserDB) lookup(username string, verify func([]byte) bool, password []byte, proved bool, passwordQuery, sessionsQuery string) (*Identity, error) {
	if passwordQuery == "" {
		passwordQuery = defaultPasswordQuery
	}
	if sessionsQuery == "" {
		sessionsQuery = defaultSessionsQuery
	}
	ctx, cancel := u.ctx()
	defer cancel()
	rows, err := u.db.QueryContext(ctx, u.placeholders(passwordQuery), username)
	if err != nil {
		return nil, u.unavailable("password query", err)
	}
	var used *string
	hashes := 0
	for rows.Next() {
		var pw sql.NullString
		if err := rows.Scan(&pw); err != nil {
			rows.Close()
			return nil, u.unavailable("password query", err)
		}
		if !pw.Valid {
			continue
		}
		ok := false
		switch {
		case proved:
			ok = true
		case password != nil:
			ok = matchStored(pw.String, password)
		case IsHash(pw.String):
			hashes++
		case verify != nil:
			ok = verify([]byte(pw.String))
		}
		if ok {
			p := pw.String
			used = &p
			break
		}
	}
	rerr := rows.Err()
	rows.Close()
	if rerr != nil {
		return nil, u.unavailable("password query", rerr)
	}
	if used == nil {
		if hashes > 0 {
			// Not a Refusal: the client must not learn that the user exists.
			return nil, fmt.Errorf("%w: the stored password is a hash, which needs passwords=hashed (xor over TLS)", ErrAuthFailed)
		}
		return nil, ErrAuthFailed
	}
	var f [5]sql.NullString
	err = u.db.QueryRowContext(ctx, u.placeholders(sessionsQuery), username, *used).Scan(&f[0], &f[1], &f[2], &f[3], &f[4])
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrAuthFailed
	}
	if err != nil {
		return nil, u.unavailable("sessions query", err)
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

// Password is the first clear password among username's rows: xpra's
// get_password, which keys an encrypted link when no key file is given.
// nil when the user has none (no row, or only hashes).
func (u *UserDB) Password(username, passwordQuery string) ([]byte, error) {
	if passwordQuery == "" {
		passwordQuery = defaultPasswordQuery
	}
	ctx, cancel := u.ctx()
	defer cancel()
	rows, err := u.db.QueryContext(ctx, u.placeholders(passwordQuery), username)
	if err != nil {
		return nil, u.unavailable("password query", err)
	}
	defer rows.Close()
	for rows.Next() {
		var pw sql.NullString
		if err := rows.Scan(&pw); err != nil {
			return nil, u.unavailable("password query", err)
		}
		if pw.Valid && pw.String != "" && !IsHash(pw.String) {
			return []byte(pw.String), nil
		}
	}
	if err := rows.Err(); err != nil {
		return nil, u.unavailable("password query", err)
	}
	return nil, nil
}

// CheckQueries refuses module queries that are not SELECT statements
// (a module's password_query and sessions_query options).
func CheckQueries(module string, queries ...string) error {
	for _, q := range queries {
		if q != "" && !strings.HasPrefix(strings.ToUpper(strings.TrimSpace(q)), "SELECT") {
			return fmt.Errorf("authn: %s: queries must be SELECT statements", module)
		}
	}
	return nil
}

// RemoveMatching deletes the user's rows whose password matches password
// (a cleartext row equal to it, or a hash of it).
func (u *UserDB) RemoveMatching(username, password string) (int64, error) {
	ctx, cancel := u.ctx()
	defer cancel()
	rows, err := u.db.QueryContext(ctx, u.placeholders(defaultPasswordQuery), username)
	if err != nil {
		return 0, fmt.Errorf("authn: %s remove %s: %w", u.Name, username, err)
	}
	var stored []string
	for rows.Next() {
		var pw sql.NullString
		if rows.Scan(&pw) == nil && pw.Valid && matchStored(pw.String, []byte(password)) {
			stored = append(stored, pw.String)
		}
	}
	rows.Close()
	var n int64
	for _, s := range stored {
		m, err := u.Remove(username, &s)
		if err != nil {
			return n, err
		}
		n += m
	}
	return n, nil
}
