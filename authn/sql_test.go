package authn

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/internal/dbtest"
)

// The sql and mysql modules against real servers: xpra's table and
// queries, cleartext rows through the hmac challenge, hashed rows through
// passwords=hashed, custom queries with xpra's %s placeholders, and a
// database that goes away and comes back.
func TestSQLModules(t *testing.T) {
	servers := map[string]func(testing.TB) *dbtest.Server{"postgresql": dbtest.Postgres, "mariadb": dbtest.MariaDB}
	var wg sync.WaitGroup
	started := map[string]*dbtest.Server{}
	var mu sync.Mutex
	for name, start := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := start(t)
			mu.Lock()
			started[name] = s
			mu.Unlock()
		}()
	}
	wg.Wait()
	for name, srv := range started {
		t.Run(name, func(t *testing.T) {
			db, err := OpenSQL(srv.URI, 2, 3*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if strings.Contains(db.Name, strings.Split(strings.Split(srv.URI, ":")[2], "@")[0]) {
				t.Errorf("the database's name shows its password: %s", db.Name)
			}
			if err := db.Create(); err != nil {
				t.Fatal(err)
			}
			if err := db.Create(); err == nil {
				t.Error("create twice succeeded (xpra's create fails)")
			}
			hash, err := HashPassword("hashedpw")
			if err != nil || !IsHash(hash) {
				t.Fatalf("hash %q: %v", hash, err)
			}
			if err := db.AddAll([]User{
				{Username: "moo", Password: "cow", UID: "1000", GID: "1000", Displays: "tcp://h:1/, :10", SessionOptions: "compression=0"},
				{Username: "hashed", Password: hash, Displays: ":11"},
				{Username: "quote'user", Password: "x'; DROP TABLE users; --", Displays: ":12"},
			}); err != nil {
				t.Fatal(err)
			}
			modules := []string{"sql"}
			if name == "mariadb" {
				modules = append(modules, "mysql")
			}
			for _, mod := range modules {
				m, err := New(Spec{Name: mod, Options: map[string]string{"uri": srv.URI}}, Env{})
				if err != nil {
					t.Fatal(err)
				}
				id, err := m.Authenticate(Request{Username: "moo", Verify: verifierFor("cow")})
				if err != nil || len(id.Displays) != 2 || id.Displays[0] != "tcp://h:1/" || id.UID != "1000" || len(id.SessionOptions) != 1 {
					t.Fatalf("%s moo: %+v %v", mod, id, err)
				}
				if _, err := m.Authenticate(Request{Username: "moo", Verify: verifierFor("bull")}); !errors.Is(err, ErrAuthFailed) {
					t.Errorf("%s: wrong password: %v", mod, err)
				}
				if _, err := m.Authenticate(Request{Username: "hashed", Verify: verifierFor(hash)}); !errors.Is(err, ErrAuthFailed) {
					t.Errorf("%s: an hmac of the stored hash logged in: %v", mod, err)
				}
				if id, err := m.Authenticate(Request{Username: "quote'user", Verify: verifierFor("x'; DROP TABLE users; --")}); err != nil || id.Displays[0] != ":12" {
					t.Errorf("%s: quotes in values: %+v %v", mod, id, err)
				}
			}
			hm, err := New(Spec{Name: "sql", Options: map[string]string{"uri": srv.URI, "passwords": "hashed"}}, Env{})
			if err != nil {
				t.Fatal(err)
			}
			if !NeedsCleartext(hm) {
				t.Error("passwords=hashed does not ask for the cleartext (xor)")
			}
			for _, tc := range []struct {
				user, pw string
				ok       bool
			}{{"hashed", "hashedpw", true}, {"hashed", "nope", false}, {"moo", "cow", true}, {"moo", "co", false}, {"ghost", "x", false}} {
				_, err := hm.Authenticate(Request{Username: tc.user, Password: []byte(tc.pw)})
				if (err == nil) != tc.ok {
					t.Errorf("hashed module, %s/%s: %v", tc.user, tc.pw, err)
				}
			}
			// xpra's option names and placeholders.
			cm, err := New(Spec{Name: "sql", Options: map[string]string{"uri": srv.URI,
				"password_query": "SELECT password FROM users WHERE username=%s AND displays LIKE '%%10%%'",
				"sessions_query": "SELECT uid, gid, ':99', env_options, session_options FROM users WHERE username=%s AND password=%s"}}, Env{})
			if err == nil {
				id, err := cm.Authenticate(Request{Username: "moo", Verify: verifierFor("cow")})
				if err != nil || id.Displays[0] != ":99" {
					t.Errorf("custom queries: %+v %v", id, err)
				}
			} else {
				t.Fatal(err)
			}
			if _, err := New(Spec{Name: "sql", Options: map[string]string{"uri": srv.URI, "password_query": "DELETE FROM users"}}, Env{}); err == nil {
				t.Error("a DELETE query was accepted")
			}
			if n, err := db.RemoveMatching("hashed", "hashedpw"); err != nil || n != 1 {
				t.Errorf("remove by password: %d %v", n, err)
			}
			users, err := db.Users()
			if err != nil || len(users) != 2 {
				t.Errorf("list: %v %v", users, err)
			}

			// The database goes away: logins fail with ErrUnavailable
			// within the module's timeout, and work again when it is back.
			m, _ := New(Spec{Name: "sql", Options: map[string]string{"uri": srv.URI, "timeout": "2"}}, Env{})
			srv.Stop()
			start := time.Now()
			_, err = m.Authenticate(Request{Username: "moo", Verify: verifierFor("cow")})
			if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrAuthFailed) || time.Since(start) > 5*time.Second {
				t.Errorf("database down: %v after %v", err, time.Since(start))
			}
			if strings.Contains(err.Error(), "cow") {
				t.Errorf("the error shows a password: %v", err)
			}
			srv.Start()
			deadline := time.Now().Add(20 * time.Second)
			for {
				_, err = m.Authenticate(Request{Username: "moo", Verify: verifierFor("cow")})
				if err == nil || time.Now().After(deadline) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if err != nil {
				t.Errorf("after the database came back: %v", err)
			}
		})
	}
}
