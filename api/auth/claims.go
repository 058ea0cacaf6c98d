package auth

import (
	"strings"

	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
)

// DefaultRolesClaims are the claim paths searched for role names: Keycloak's
// realm roles, then a top-level "roles".
var DefaultRolesClaims = []string{"realm_access.roles", "roles"}

// identityFromClaims maps token claims to an identity: sub, then
// preferred_username (else sub), name, email, department, and the roles at
// the first of rolePaths that is present. Role names go through
// rbac.ParseRole: unknown names (offline_access, default-roles-...) and
// "system" are dropped.
func identityFromClaims(claims map[string]any, rolePaths []string) identity {
	str := func(k string) string {
		s, _ := claims[k].(string)
		return s
	}
	id := identity{
		Subject:    str("sub"),
		Username:   str("preferred_username"),
		Name:       str("name"),
		Email:      str("email"),
		Department: str("department"),
	}
	if id.Username == "" {
		id.Username = id.Subject
	}
	id.Roles, _ = rolesFromClaims(claims, rolePaths)
	return id
}

// rolesFromClaims returns the roles at the first of rolePaths present in
// claims; found is false when none is.
func rolesFromClaims(claims map[string]any, rolePaths []string) (roles []rbac.Role, found bool) {
	for _, path := range rolePaths {
		if names, ok := claimStrings(claims, path); ok {
			return parseRoles(names), true
		}
	}
	return parseRoles(nil), false
}

// claimStrings follows a dot-separated path through nested objects and
// returns the strings found at its end: a list of strings (other items are
// skipped) or one string. ok is false when the path does not exist or ends
// at something else.
func claimStrings(claims map[string]any, path string) ([]string, bool) {
	var cur any = claims
	for part := range strings.SplitSeq(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	switch v := cur.(type) {
	case string:
		return []string{v}, true
	case []any:
		out := make([]string, 0, len(v))
		for _, item := range v {
			if s, ok := item.(string); ok {
				out = append(out, s)
			}
		}
		return out, true
	case []string:
		return v, true
	}
	return nil, false
}
