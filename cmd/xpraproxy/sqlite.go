package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/authn/sqliteauth"
)

const (
	sqliteUsage = "usage: xpraproxy sqlite FILE create | add USER PASSWORD [UID GID DISPLAYS ENV_OPTIONS SESSION_OPTIONS] | remove USER [PASSWORD] | list | authenticate USER PASSWORD\n"
	sqlUsage    = "usage: xpraproxy sql [--cleartext] URI create | add USER PASSWORD [UID GID DISPLAYS ENV_OPTIONS SESSION_OPTIONS] | remove USER [PASSWORD] | list | authenticate USER PASSWORD\n" +
		"  URI: postgresql://USER:PASS@HOST[:PORT]/DB or mysql://USER:PASS@HOST[:PORT]/DB; add stores a bcrypt hash\n" +
		"  (log in through a module with passwords=hashed) unless --cleartext (xpra's own modules and hmac need it)\n"
)

// sqliteMain is xpra's sqlite_auth.py command line: same arguments, same
// table, so databases made by either tool work with both.
func sqliteMain(args []string, stdout, stderr io.Writer) int {
	if len(args) < 2 {
		fmt.Fprint(stderr, sqliteUsage)
		return 1
	}
	file := args[0]
	open := func(create bool) (*authn.UserDB, error) {
		if create {
			return sqliteauth.Create(file)
		}
		return sqliteauth.Open(file)
	}
	return userDBMain("sqlite", open, args[1:], false, stdout, stderr)
}

// sqlMain is xpra's sql_auth.py command line on PostgreSQL or MySQL; it
// stores hashed passwords unless told --cleartext.
func sqlMain(args []string, stdout, stderr io.Writer) int {
	cleartext := false
	if len(args) > 0 && args[0] == "--cleartext" {
		cleartext, args = true, args[1:]
	}
	if len(args) < 2 {
		fmt.Fprint(stderr, sqlUsage)
		return 1
	}
	uri := args[0]
	open := func(create bool) (*authn.UserDB, error) {
		db, err := authn.OpenSQL(uri, 2, 10*time.Second)
		if err == nil && create {
			if err = db.Create(); err != nil {
				db.Close()
			}
		}
		return db, err
	}
	return userDBMain("sql", open, args[1:], !cleartext, stdout, stderr)
}

// userDBMain runs one admin command on a user database.
func userDBMain(name string, open func(create bool) (*authn.UserDB, error), args []string, hash bool, stdout, stderr io.Writer) int {
	cmd, rest := args[0], args[1:]
	usage := sqliteUsage
	if name == "sql" {
		usage = sqlUsage
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "xpraproxy %s: %v\n", name, err)
		return 1
	}
	run := func(f func(db *authn.UserDB) error) int {
		db, err := open(false)
		if err != nil {
			return fail(err)
		}
		defer db.Close()
		if err := f(db); err != nil {
			return fail(err)
		}
		return 0
	}
	switch cmd {
	case "create":
		if len(rest) != 0 {
			break
		}
		db, err := open(true)
		if err != nil {
			return fail(err)
		}
		db.Close()
		return 0
	case "add":
		if len(rest) < 2 || len(rest) > 7 {
			break
		}
		u := authn.User{Username: rest[0], Password: rest[1], UID: strconv.Itoa(os.Getuid()), GID: strconv.Itoa(os.Getgid())}
		fields := []*string{&u.UID, &u.GID, &u.Displays, &u.EnvOptions, &u.SessionOptions}
		for i, v := range rest[2:] {
			*fields[i] = v
		}
		if hash {
			h, err := authn.HashPassword(u.Password)
			if err != nil {
				return fail(err)
			}
			u.Password = h
		}
		return run(func(db *authn.UserDB) error { return db.Add(u) })
	case "remove":
		if len(rest) < 1 || len(rest) > 2 {
			break
		}
		return run(func(db *authn.UserDB) error {
			if len(rest) == 2 {
				_, err := db.RemoveMatching(rest[0], rest[1])
				return err
			}
			_, err := db.Remove(rest[0], nil)
			return err
		})
	case "list":
		if len(rest) != 0 {
			break
		}
		return run(func(db *authn.UserDB) error {
			users, err := db.Users()
			if err != nil {
				return err
			}
			if len(users) == 0 {
				fmt.Fprintln(stdout, "no rows found")
				return nil
			}
			authn.WriteTable(tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0), users)
			return nil
		})
	case "authenticate":
		if len(rest) != 2 {
			break
		}
		db, err := open(false)
		if err != nil {
			return fail(err)
		}
		defer db.Close()
		id, err := db.Lookup(rest[0], nil, []byte(rest[1]), "", "")
		if errors.Is(err, authn.ErrAuthFailed) {
			fmt.Fprintln(stdout, "authentication failed")
			return 1
		}
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "success, found sessions: (%q, %q, %q, %v, %v)\n", id.UID, id.GID, id.Displays, id.Env, id.SessionOptions)
		return 0
	}
	fmt.Fprint(stderr, usage)
	return 1
}
