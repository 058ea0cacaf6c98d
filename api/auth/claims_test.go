package auth

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
)

func TestIdentityFromClaims(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		claims string
		paths  []string
		want   identity
	}{
		{
			name:   "keycloak realm roles",
			claims: `{"sub":"s1","preferred_username":"ada","name":"Ada","email":"a@x","department":"ops","realm_access":{"roles":["admin","offline_access","uma_authorization","default-roles-cml-cloud-manager"]}}`,
			paths:  DefaultRolesClaims,
			want:   identity{Subject: "s1", Username: "ada", Name: "Ada", Email: "a@x", Department: "ops", Roles: []rbac.Role{rbac.RoleAdmin}},
		},
		{
			name:   "top-level roles when realm_access is absent",
			claims: `{"sub":"s2","roles":["Manager"," user "]}`,
			paths:  DefaultRolesClaims,
			want:   identity{Subject: "s2", Username: "s2", Roles: []rbac.Role{rbac.RoleManager, rbac.RoleUser}},
		},
		{
			name:   "the first present path wins, even when empty",
			claims: `{"sub":"s3","realm_access":{"roles":[]},"roles":["admin"]}`,
			paths:  DefaultRolesClaims,
			want:   identity{Subject: "s3", Username: "s3", Roles: []rbac.Role{}},
		},
		{
			name:   "a configured client-roles path",
			claims: `{"sub":"s4","resource_access":{"cml-cloud-manager":{"roles":["auditor"]}},"roles":["admin"]}`,
			paths:  []string{"resource_access.cml-cloud-manager.roles"},
			want:   identity{Subject: "s4", Username: "s4", Roles: []rbac.Role{rbac.RoleAuditor}},
		},
		{
			name:   "a single string",
			claims: `{"sub":"s5","roles":"integrator"}`,
			paths:  DefaultRolesClaims,
			want:   identity{Subject: "s5", Username: "s5", Roles: []rbac.Role{rbac.RoleIntegrator}},
		},
		{
			name:   "system is never taken from a token",
			claims: `{"sub":"s6","realm_access":{"roles":["system","SYSTEM","admin"]}}`,
			paths:  DefaultRolesClaims,
			want:   identity{Subject: "s6", Username: "s6", Roles: []rbac.Role{rbac.RoleAdmin}},
		},
		{
			name:   "wrong shapes are ignored",
			claims: `{"sub":"s7","realm_access":["admin"],"roles":{"admin":true}}`,
			paths:  DefaultRolesClaims,
			want:   identity{Subject: "s7", Username: "s7", Roles: []rbac.Role{}},
		},
	}
	for _, tt := range tests {
		var claims map[string]any
		require.NoError(t, json.Unmarshal([]byte(tt.claims), &claims))
		require.Equal(t, tt.want, identityFromClaims(claims, tt.paths), tt.name)
	}
}
