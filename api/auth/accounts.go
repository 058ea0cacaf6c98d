package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
)

// Account is a local account.
type Account struct {
	// Username signs in; it is also the subject of the account's tokens.
	// Matched case-insensitively.
	Username string
	// PasswordHash is a bcrypt hash.
	PasswordHash []byte
	// Roles are the account's roles (never "system").
	Roles []rbac.Role
	// Department scopes what a manager sees.
	Department string
	// Name and Email describe the person.
	Name  string
	Email string
}

func (acc Account) identity() identity {
	return identity{
		Subject: acc.Username, Username: acc.Username, Name: acc.Name, Email: acc.Email,
		Department: acc.Department, Roles: acc.Roles,
	}
}

// accountsFile is the JSON accounts file:
//
//	{"accounts": [{"username": "alice", "password_hash": "$2a$10$...",
//	  "roles": ["manager"], "department": "eng", "name": "Alice", "email": "alice@example.com"}]}
type accountsFile struct {
	Accounts []accountEntry `json:"accounts"`
}

type accountEntry struct {
	Username     string   `json:"username"`
	PasswordHash string   `json:"password_hash"`
	Roles        []string `json:"roles"`
	Department   string   `json:"department"`
	Name         string   `json:"name"`
	Email        string   `json:"email"`
}

// maxAccountsFile bounds the accounts file we read.
const maxAccountsFile = 4 << 20

// LoadAccounts reads and validates a JSON accounts file (AUTH_ACCOUNTS_FILE):
//
//	{"accounts": [
//	  {"username": "alice", "password_hash": "$2y$10$...", "roles": ["manager"],
//	   "department": "engineering", "name": "Alice Example", "email": "alice@example.com"}
//	]}
//
// Every account needs a username (1 to 64 letters, digits and . _ @ -,
// unique ignoring case), a bcrypt password_hash, and roles among admin,
// manager, user, auditor and integrator (an empty list is allowed: signed
// in, but allowed nothing; "system" is refused). department, name and email
// are optional. Unknown fields are errors, and all problems are reported at
// once. A hash can be made with
//
//	htpasswd -nbBC 12 alice 'the password' | cut -d: -f2
func LoadAccounts(path string) ([]Account, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("accounts file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxAccountsFile+1))
	if err != nil {
		return nil, fmt.Errorf("accounts file %s: %w", path, err)
	}
	if len(data) > maxAccountsFile {
		return nil, fmt.Errorf("accounts file %s is larger than %d bytes", path, maxAccountsFile)
	}
	accounts, err := parseAccounts(data)
	if err != nil {
		return nil, fmt.Errorf("accounts file %s: %w", path, err)
	}
	return accounts, nil
}

// parseAccounts decodes and validates an accounts file.
func parseAccounts(data []byte) ([]Account, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var file accountsFile
	if err := dec.Decode(&file); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("decode: trailing data after the JSON object")
	}
	if len(file.Accounts) == 0 {
		return nil, errors.New("no accounts")
	}
	var errs []error
	seen := map[string]bool{}
	out := make([]Account, 0, len(file.Accounts))
	for i, e := range file.Accounts {
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("account %d (%q): %s", i+1, e.Username, fmt.Sprintf(format, args...)))
		}
		if !validUsername(e.Username) {
			bad("username must be 1 to 64 letters, digits, '.', '_', '@' or '-'")
		} else if key := strings.ToLower(e.Username); seen[key] {
			bad("username appears twice (user names are matched ignoring case)")
		} else {
			seen[key] = true
		}
		if _, err := bcrypt.Cost([]byte(e.PasswordHash)); err != nil {
			bad("password_hash is not a bcrypt hash")
		}
		roles := make([]rbac.Role, 0, len(e.Roles))
		for _, name := range e.Roles {
			r, ok := rbac.ParseRole(name)
			switch {
			case rbac.Role(strings.ToLower(strings.TrimSpace(name))) == rbac.RoleSystem:
				bad("the system role cannot be granted to an account")
			case !ok:
				bad("unknown role %q (want admin, manager, user, auditor or integrator)", name)
			case !slices.Contains(roles, r):
				roles = append(roles, r)
			}
		}
		if len(e.Name) > 128 || len(e.Department) > 128 {
			bad("name and department are limited to 128 bytes")
		}
		if e.Email != "" && (len(e.Email) > 254 || !strings.Contains(e.Email, "@") || strings.ContainsAny(e.Email, " \t\r\n")) {
			bad("email %q is not an address", e.Email)
		}
		out = append(out, Account{
			Username: e.Username, PasswordHash: []byte(e.PasswordHash), Roles: roles,
			Department: e.Department, Name: e.Name, Email: e.Email,
		})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

func validUsername(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '@', c == '-':
		default:
			return false
		}
	}
	return true
}

// DevPassword is the password of every development account.
const DevPassword = "test"

// devAccounts are the accounts of local mode without an accounts file. The
// password hash is made at start (cheaply: these are not secrets).
func devAccounts() ([]Account, error) {
	hash, err := bcrypt.GenerateFromPassword([]byte(DevPassword), bcrypt.MinCost)
	if err != nil {
		return nil, fmt.Errorf("hash the development password: %w", err)
	}
	mk := func(username, name, department string, roles ...rbac.Role) Account {
		return Account{
			Username: username, PasswordHash: hash, Roles: roles, Department: department,
			Name: name, Email: username + "@example.com",
		}
	}
	return []Account{
		mk("admin", "Development Admin", "platform", rbac.RoleAdmin),
		mk("manager", "Development Manager", "engineering", rbac.RoleManager),
		mk("user", "Development User", "engineering", rbac.RoleUser),
		mk("auditor", "Development Auditor", "compliance", rbac.RoleAuditor),
		mk("integrator", "Development Integrator", "", rbac.RoleIntegrator),
	}, nil
}
