package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"

	"github.com/xpraproxy/xpraproxy/authn"
)

const sqliteUsage = "usage: xpraproxy sqlite FILE create | add USER PASSWORD [UID GID DISPLAYS ENV_OPTIONS SESSION_OPTIONS] | remove USER [PASSWORD] | list | authenticate USER PASSWORD\n"

// sqliteMain is xpra's sqlite_auth.py command line: same arguments, same
// table, so databases made by either tool work with both.
func sqliteMain(args []string, stdout, stderr io.Writer) int {
	if len(args) < 2 {
		fmt.Fprint(stderr, sqliteUsage)
		return 1
	}
	file, cmd, rest := args[0], args[1], args[2:]
	fail := func(err error) int {
		fmt.Fprintln(stderr, "xpraproxy sqlite:", err)
		return 1
	}
	// run opens the existing database for one command.
	run := func(f func(db *authn.SQLite) int) int {
		db, err := authn.OpenSQLite(file)
		if err != nil {
			return fail(err)
		}
		defer db.Close()
		return f(db)
	}
	switch cmd {
	case "create":
		if len(rest) != 0 {
			break
		}
		db, err := authn.CreateSQLite(file)
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
		return run(func(db *authn.SQLite) int {
			if err := db.Add(u); err != nil {
				return fail(err)
			}
			return 0
		})
	case "remove":
		if len(rest) < 1 || len(rest) > 2 {
			break
		}
		var pw *string
		if len(rest) == 2 {
			pw = &rest[1]
		}
		return run(func(db *authn.SQLite) int {
			if _, err := db.Remove(rest[0], pw); err != nil {
				return fail(err)
			}
			return 0
		})
	case "list":
		if len(rest) != 0 {
			break
		}
		return run(func(db *authn.SQLite) int {
			users, err := db.Users()
			if err != nil {
				return fail(err)
			}
			if len(users) == 0 {
				fmt.Fprintln(stdout, "no rows found")
				return 0
			}
			authn.WriteTable(tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0), users)
			return 0
		})
	case "authenticate":
		if len(rest) != 2 {
			break
		}
		pw := rest[1]
		return run(func(db *authn.SQLite) int {
			id, err := db.Lookup(rest[0], func(c []byte) bool { return string(c) == pw }, "", "")
			if errors.Is(err, authn.ErrAuthFailed) {
				fmt.Fprintln(stdout, "authentication failed")
				return 1
			}
			if err != nil {
				return fail(err)
			}
			fmt.Fprintf(stdout, "success, found sessions: (%q, %q, %q, %v, %v)\n", id.UID, id.GID, id.Displays, id.Env, id.SessionOptions)
			return 0
		})
	}
	fmt.Fprint(stderr, sqliteUsage)
	return 1
}
