// Package readsecret is an app-side helper for Go: read a secret the way Swarm and
// devsecrets deliver it. Copy it into your application. ReadSecret("db_password") returns
// the bytes of $DB_PASSWORD_FILE if that variable is set, else of /run/secrets/db_password.
// The same code runs unchanged on a laptop (`devsecrets up`, `devsecrets run`) and on a swarm.
package readsecret

import (
	"os"
	"regexp"
	"strings"
)

var notAlnum = regexp.MustCompile(`[^A-Za-z0-9]`)

// FileVariable gives the *_FILE variable for a secret: db_password -> DB_PASSWORD_FILE.
func FileVariable(name string) string {
	return strings.ToUpper(notAlnum.ReplaceAllString(name, "_")) + "_FILE"
}

// ReadSecret returns the secret's bytes, exactly as stored (a trailing newline is kept).
func ReadSecret(name string) ([]byte, error) {
	path := os.Getenv(FileVariable(name))
	if path == "" {
		path = "/run/secrets/" + name
	}
	return os.ReadFile(path)
}
