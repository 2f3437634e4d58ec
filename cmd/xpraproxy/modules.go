package main

// The authentication modules that need cgo live outside authn so that the
// session core builds without it; importing them here registers them with
// authn (as database/sql drivers register themselves), so that this
// program has every module xpra has. sqliteauth also opens the sql
// module's sqlite:/// URIs.
import (
	_ "github.com/xpraproxy/xpraproxy/authn/pam"
	_ "github.com/xpraproxy/xpraproxy/authn/sqliteauth"
)
