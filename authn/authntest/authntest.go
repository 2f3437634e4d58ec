// Package authntest starts the real components the authentication tests
// use: local accounts (useradd, chpasswd) and an OpenLDAP slapd on
// loopback.
package authntest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/internal/selfsigned"
)

// LocalUser creates (or resets: unlocked, not expired) a local account
// with a password. It needs root.
func LocalUser(t testing.TB, name, password string) {
	t.Helper()
	if _, err := exec.Command("id", name).Output(); err != nil {
		if out, err := exec.Command("useradd", "-M", "-s", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
			t.Fatalf("useradd %s: %v %s", name, err, out)
		}
	}
	cmd := exec.Command("chpasswd")
	cmd.Stdin = strings.NewReader(name + ":" + password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chpasswd: %v %s", err, out)
	}
	exec.Command("chage", "-E", "-1", name).Run()
	exec.Command("usermod", "-U", name).Run()
}

// Slapd runs a real OpenLDAP server on a free loopback port with one
// user, "cn=alice, o=DOMAIN" (password "wonderland"): the DN xpra's
// default username_format "cn=%username, o=%domain" gives, DOMAIN being
// authn.Domain(). It returns the port.
func Slapd(t testing.TB, domain string) int {
	t.Helper()
	port, _ := startSlapd(t, domain, false)
	return port
}

// SlapdTLS is Slapd serving ldaps:// with a self-signed certificate for
// 127.0.0.1; it returns the port and the certificate's PEM file (the CA to
// trust).
func SlapdTLS(t testing.TB, domain string) (int, string) {
	t.Helper()
	return startSlapd(t, domain, true)
}

func startSlapd(t testing.TB, domain string, withTLS bool) (int, string) {
	t.Helper()
	for _, bin := range []string{"/usr/sbin/slapd", "/usr/sbin/slapadd"} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s is missing: the README's test command installs slapd", bin)
		}
	}
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "db"), 0o700)
	conf := fmt.Sprintf(`include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile %[1]s/slapd.pid
database mdb
maxsize 10485760
suffix "o=%[2]s"
rootdn "cn=admin,o=%[2]s"
rootpw admin-secret
directory %[1]s/db
`, dir, domain)
	certFile := ""
	if withTLS {
		var keyFile string
		var err error
		if certFile, keyFile, err = selfsigned.Write(dir); err != nil {
			t.Fatal(err)
		}
		conf = fmt.Sprintf("TLSCertificateFile %s\nTLSCertificateKeyFile %s\n", certFile, keyFile) + conf
	}
	os.WriteFile(filepath.Join(dir, "slapd.conf"), []byte(conf), 0o600)
	ldif := fmt.Sprintf(`dn: o=%[1]s
objectClass: organization
o: %[1]s

dn: cn=alice,o=%[1]s
objectClass: inetOrgPerson
uid: alice
cn: alice
sn: Liddell
userPassword: wonderland
`, domain)
	os.WriteFile(filepath.Join(dir, "data.ldif"), []byte(ldif), 0o600)
	if out, err := exec.Command("/usr/sbin/slapadd", "-f", filepath.Join(dir, "slapd.conf"), "-l", filepath.Join(dir, "data.ldif")).CombinedOutput(); err != nil {
		t.Fatalf("slapadd: %v %s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	scheme := "ldap"
	if withTLS {
		scheme = "ldaps"
	}
	cmd := exec.Command("/usr/sbin/slapd", "-f", filepath.Join(dir, "slapd.conf"), "-h", fmt.Sprintf("%s://127.0.0.1:%d/", scheme, port), "-d", "0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return port, certFile
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("slapd did not start")
	return 0, ""
}
