package auth

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
)

// TestKeycloakRealmExport keeps deploy/keycloak in step with this package:
// the roles, the callback route, the audience and the accounts it
// documents.
func TestKeycloakRealmExport(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../deploy/keycloak/realm-cml-cloud-manager.json")
	require.NoError(t, err)
	var realm struct {
		Realm string `json:"realm"`
		Roles struct {
			Realm []struct {
				Name      string `json:"name"`
				Composite bool   `json:"composite"`
			} `json:"realm"`
		} `json:"roles"`
		Groups []struct {
			Path       string   `json:"path"`
			RealmRoles []string `json:"realmRoles"`
		} `json:"groups"`
		Users []struct {
			Username               string              `json:"username"`
			Groups                 []string            `json:"groups"`
			RealmRoles             []string            `json:"realmRoles"`
			ServiceAccountClientID string              `json:"serviceAccountClientId"`
			Attributes             map[string][]string `json:"attributes"`
			Credentials            []struct {
				Type, Value string
				Temporary   bool
			} `json:"credentials"`
		} `json:"users"`
		Clients []struct {
			ClientID               string            `json:"clientId"`
			PublicClient           bool              `json:"publicClient"`
			StandardFlowEnabled    bool              `json:"standardFlowEnabled"`
			ImplicitFlowEnabled    bool              `json:"implicitFlowEnabled"`
			DirectAccessGrants     bool              `json:"directAccessGrantsEnabled"`
			ServiceAccountsEnabled bool              `json:"serviceAccountsEnabled"`
			RedirectURIs           []string          `json:"redirectUris"`
			Attributes             map[string]string `json:"attributes"`
			ProtocolMappers        []struct {
				ProtocolMapper string            `json:"protocolMapper"`
				Config         map[string]string `json:"config"`
			} `json:"protocolMappers"`
		} `json:"clients"`
	}
	require.NoError(t, json.Unmarshal(raw, &realm))
	require.Equal(t, "cml-cloud-manager", realm.Realm)

	var roles []rbac.Role
	for _, r := range realm.Roles.Realm {
		require.False(t, r.Composite, "no composites: admins get manager and user through their group")
		roles = append(roles, rbac.Role(r.Name))
	}
	require.ElementsMatch(t, rbac.ExternalRoles, roles)

	groupRoles := map[string][]string{}
	for _, g := range realm.Groups {
		groupRoles[g.Path] = g.RealmRoles
	}
	rolesOf := map[string][]string{}
	for _, u := range realm.Users {
		var rs []string
		rs = append(rs, u.RealmRoles...)
		for _, g := range u.Groups {
			rs = append(rs, groupRoles[g]...)
		}
		slices.Sort(rs)
		rolesOf[u.Username] = rs
		if u.ServiceAccountClientID == "" {
			require.Len(t, u.Credentials, 1, u.Username)
			require.Equal(t, "test", u.Credentials[0].Value, u.Username)
			require.False(t, u.Credentials[0].Temporary, u.Username)
		}
	}
	require.Equal(t, []string{"admin", "manager", "user"}, rolesOf["admin"])
	require.Equal(t, []string{"manager"}, rolesOf["manager"])
	require.Equal(t, []string{"user"}, rolesOf["user"])
	require.Equal(t, []string{"auditor"}, rolesOf["auditor"])
	require.Equal(t, []string{"integrator"}, rolesOf["service-account-cml-cloud-manager-integrator"])

	clients := map[string]int{}
	for i, c := range realm.Clients {
		clients[c.ClientID] = i
		require.False(t, c.PublicClient, c.ClientID)
		require.False(t, c.ImplicitFlowEnabled, c.ClientID)
		require.False(t, c.DirectAccessGrants, c.ClientID, "no password grant")
		audience := false
		for _, m := range c.ProtocolMappers {
			if m.ProtocolMapper == "oidc-audience-mapper" {
				audience = m.Config["included.custom.audience"] == Audience && m.Config["access.token.claim"] == "true" &&
					m.Config["id.token.claim"] == "false"
			}
		}
		require.True(t, audience, "%s: access tokens carry the %q audience, ID tokens do not", c.ClientID, Audience)
	}
	web := realm.Clients[clients["cml-cloud-manager-web"]]
	require.True(t, web.StandardFlowEnabled)
	require.False(t, web.ServiceAccountsEnabled)
	require.Equal(t, "S256", web.Attributes["pkce.code.challenge.method"])
	require.Equal(t, []string{"http://127.0.0.1:8080/api/auth/callback"}, web.RedirectURIs)
	require.True(t, strings.HasSuffix(web.RedirectURIs[0], newHarness(t, ModeLocal, harnessConfig{}).auth.callbackPath))
	require.Equal(t, "http://127.0.0.1:8080/", web.Attributes["post.logout.redirect.uris"])
	integrator := realm.Clients[clients["cml-cloud-manager-integrator"]]
	require.True(t, integrator.ServiceAccountsEnabled)
	require.False(t, integrator.StandardFlowEnabled)
}
