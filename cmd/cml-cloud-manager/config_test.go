package main

import (
	"bufio"
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"
)

// mapLookup reads variables from m, as the tests' environment.
func mapLookup(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func mustLoad(t *testing.T, vars map[string]string) Config {
	t.Helper()
	cfg, err := LoadConfig(mapLookup(vars))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	return cfg
}

// configErrorVars returns the variables named by a *ConfigError.
func configErrorVars(t *testing.T, err error) []string {
	t.Helper()
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T) is not a *ConfigError", err, err)
	}
	return ce.Vars()
}

func TestLoadConfigDefaults(t *testing.T) {
	cfg := mustLoad(t, nil)
	want := Config{
		Environment:         "development",
		LogLevel:            "info",
		LogFormat:           "text",
		HTTPAddr:            "127.0.0.1:8080",
		PublicURL:           "http://127.0.0.1:8080",
		HTTPShutdownTimeout: 20 * time.Second,
		DatabaseURL:         "postgres://postgres@127.0.0.1:5432/cml_cloud_manager?sslmode=disable",
		DatabaseMaxConns:    20,
		MigrateOnStart:      true,
		RunAPI:              true,
		RunProjections:      true,
		Cloud:               "simulated",
		AWSRegions:          StringList{"us-east-1"},
		AWS:                 AWSConfig{MaxAttempts: 3, MaxBackoff: 5 * time.Second},
		CML: CMLConfig{Username: "admin", RequestTimeout: 15 * time.Second,
			EndpointTemplate: "https://{public_ip}"},
		Jobs: JobsConfig{Run: true, CloudWorkers: 20, CMLWorkers: 10, FleetWorkers: 4, CMLConcurrency: 32,
			CallTimeout: 30 * time.Second, RefreshThrottle: 30 * time.Second, AutoImportInterval: time.Hour},
		Simulator: SimulatorConfig{SeedWorkers: 4},
		Worker: WorkerDefaults{
			AMIName:      "cisco-cml2.9-lablet-v0.1.7",
			InstanceType: "m5zn.metal",
		},
		Idle: IdleDefaults{DetectionEnabled: true, Timeout: 60 * time.Minute, Snooze: 60 * time.Minute},
		Intervals: PollIntervals{
			FleetReconcile: 60 * time.Second,
			FleetMetrics:   300 * time.Second,
			LabsSync:       1800 * time.Second,
			IdleCheck:      300 * time.Second,
		},
		EventStoreReadTimeout: 10 * time.Second,
		TelemetryRetention:    720 * time.Hour,
		Auth: AuthConfig{
			Mode: "local", TokenTTL: 15 * time.Minute, IdleTimeout: 30 * time.Minute, MaxLifetime: 12 * time.Hour,
			Warning: 5 * time.Minute, LoginRateLimit: "10/15m", OIDCAudience: "cml-cloud-manager",
			OIDCScopes: StringList{"openid", "profile", "email"}, OIDCRolesClaim: StringList{"realm_access.roles", "roles"},
			OIDCSigningAlgs: StringList{"RS256", "ES256", "EdDSA"}, OIDCRefreshLeeway: time.Minute,
		},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("defaults:\n got %+v\nwant %+v", cfg, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if got := cfg.EventStoreKind(); got != EventStorePostgres {
		t.Fatalf("EventStoreKind=%q, want postgres", got)
	}
}

func TestLoadConfigEmptyMeansDefault(t *testing.T) {
	cfg := mustLoad(t, map[string]string{"LOG_LEVEL": "", "IDLE_TIMEOUT": "", "RUN_API": ""})
	if cfg.LogLevel != "info" || cfg.Idle.Timeout != time.Hour || !cfg.RunAPI {
		t.Fatalf("empty values did not fall back to defaults: %+v", cfg)
	}
}

func TestLoadConfigEveryVariable(t *testing.T) {
	tests := []struct {
		name  string // the variable
		value string
		got   func(Config) any
		want  any
	}{
		{"ENVIRONMENT", "production", func(c Config) any { return c.Environment }, "production"},
		{"LOG_LEVEL", "debug", func(c Config) any { return c.LogLevel }, "debug"},
		{"LOG_FORMAT", "json", func(c Config) any { return c.LogFormat }, "json"},
		{"HTTP_ADDR", ":9090", func(c Config) any { return c.HTTPAddr }, ":9090"},
		{"PUBLIC_URL", "https://cml.example.com", func(c Config) any { return c.PublicURL }, "https://cml.example.com"},
		{"HTTP_SHUTDOWN_TIMEOUT", "45s", func(c Config) any { return c.HTTPShutdownTimeout }, 45 * time.Second},
		{"DATABASE_URL", "postgres://app:pw@db:5432/cmlcm", func(c Config) any { return c.DatabaseURL }, "postgres://app:pw@db:5432/cmlcm"},
		{"DATABASE_MAX_CONNS", "7", func(c Config) any { return c.DatabaseMaxConns }, int32(7)},
		{"EVENTSTORE_URL", "esdb://esdb:2113?tls=false", func(c Config) any { return c.EventStoreURL }, "esdb://esdb:2113?tls=false"},
		{"MIGRATE_ON_START", "false", func(c Config) any { return c.MigrateOnStart }, false},
		{"RUN_API", "false", func(c Config) any { return c.RunAPI }, false},
		{"RUN_PROJECTIONS", "0", func(c Config) any { return c.RunProjections }, false},
		{"CLOUD", "aws", func(c Config) any { return c.Cloud }, "aws"},
		{"AWS_REGIONS", " us-east-1, eu-west-1 ,", func(c Config) any { return c.AWSRegions }, StringList{"us-east-1", "eu-west-1"}},
		{"AWS_ENDPOINT_URL", "http://127.0.0.1:4566", func(c Config) any { return c.AWS.EndpointURL }, "http://127.0.0.1:4566"},
		{"AWS_MAX_ATTEMPTS", "5", func(c Config) any { return c.AWS.MaxAttempts }, 5},
		{"AWS_MAX_BACKOFF", "2s", func(c Config) any { return c.AWS.MaxBackoff }, 2 * time.Second},
		{"AWS_IMAGE_OWNERS", "self,123456789012", func(c Config) any { return c.AWS.ImageOwners }, StringList{"self", "123456789012"}},
		{"CML_USERNAME", "svc", func(c Config) any { return c.CML.Username }, "svc"},
		{"CML_PASSWORD", "pw", func(c Config) any { return c.CML.Password }, "pw"},
		{"CML_TLS_VERIFY", "true", func(c Config) any { return c.CML.TLSVerify }, true},
		{"CML_CA_FILE", "/etc/cml/ca.pem", func(c Config) any { return c.CML.CAFile }, "/etc/cml/ca.pem"},
		{"CML_REQUEST_TIMEOUT", "20s", func(c Config) any { return c.CML.RequestTimeout }, 20 * time.Second},
		{"CML_ENDPOINT_TEMPLATE", "https://{private_ip}:8443", func(c Config) any { return c.CML.EndpointTemplate }, "https://{private_ip}:8443"},
		{"CML_ACTIVITY_EXCLUDED_USER_IDS", "a,b", func(c Config) any { return c.CML.ActivityExcludedUserIDs }, StringList{"a", "b"}},
		{"CML_ACTIVITY_EXCLUDED_USER_PATTERN", "^svc-", func(c Config) any { return c.CML.ActivityExcludedUserPattern }, "^svc-"},
		{"RUN_JOBS", "false", func(c Config) any { return c.Jobs.Run }, false},
		{"JOBS_CLOUD_WORKERS", "5", func(c Config) any { return c.Jobs.CloudWorkers }, 5},
		{"JOBS_CML_WORKERS", "6", func(c Config) any { return c.Jobs.CMLWorkers }, 6},
		{"JOBS_FLEET_WORKERS", "2", func(c Config) any { return c.Jobs.FleetWorkers }, 2},
		{"JOBS_CML_CONCURRENCY", "64", func(c Config) any { return c.Jobs.CMLConcurrency }, 64},
		{"JOBS_CALL_TIMEOUT", "10s", func(c Config) any { return c.Jobs.CallTimeout }, 10 * time.Second},
		{"REFRESH_THROTTLE", "1m", func(c Config) any { return c.Jobs.RefreshThrottle }, time.Minute},
		{"AUTO_IMPORT_ENABLED", "true", func(c Config) any { return c.Jobs.AutoImport }, true},
		{"AUTO_IMPORT_REGION", "us-east-1", func(c Config) any { return c.Jobs.AutoImportRegion }, "us-east-1"},
		{"AUTO_IMPORT_AMI_NAME_PATTERN", "cisco-cml2.9-*", func(c Config) any { return c.Jobs.AutoImportAMIPattern }, "cisco-cml2.9-*"},
		{"AUTO_IMPORT_INTERVAL", "30m", func(c Config) any { return c.Jobs.AutoImportInterval }, 30 * time.Minute},
		{"SIMULATOR_ADDR", "127.0.0.1:4566", func(c Config) any { return c.Simulator.Addr }, "127.0.0.1:4566"},
		{"SIMULATOR_CML_ADDR", "127.0.0.1:4567", func(c Config) any { return c.Simulator.CMLAddr }, "127.0.0.1:4567"},
		{"SIMULATOR_SEED_WORKERS", "0", func(c Config) any { return c.Simulator.SeedWorkers }, 0},
		{"WORKER_AMI_IDS", "us-east-1=ami-0123456789abcdef0, eu-west-1 = ami-01234567", func(c Config) any { return c.Worker.AMIIDs },
			StringMap{"us-east-1": "ami-0123456789abcdef0", "eu-west-1": "ami-01234567"}},
		{"WORKER_AMI_NAME", "cisco-cml2.8-*", func(c Config) any { return c.Worker.AMIName }, "cisco-cml2.8-*"},
		{"WORKER_INSTANCE_TYPE", "c5.metal", func(c Config) any { return c.Worker.InstanceType }, "c5.metal"},
		{"WORKER_SUBNET_ID", "subnet-0abc1234", func(c Config) any { return c.Worker.SubnetID }, "subnet-0abc1234"},
		{"WORKER_SECURITY_GROUP_IDS", "sg-0abc1234,sg-0def5678", func(c Config) any { return c.Worker.SecurityGroupIDs }, StringList{"sg-0abc1234", "sg-0def5678"}},
		{"WORKER_KEY_NAME", "lab-key", func(c Config) any { return c.Worker.KeyName }, "lab-key"},
		{"WORKER_DEFAULT_TAGS", "team=netops,cost-center=42,empty=", func(c Config) any { return c.Worker.DefaultTags },
			StringMap{"team": "netops", "cost-center": "42", "empty": ""}},
		{"IDLE_DETECTION_ENABLED", "false", func(c Config) any { return c.Idle.DetectionEnabled }, false},
		{"IDLE_TIMEOUT", "90m", func(c Config) any { return c.Idle.Timeout }, 90 * time.Minute},
		{"IDLE_SNOOZE", "2h", func(c Config) any { return c.Idle.Snooze }, 2 * time.Hour},
		{"FLEET_RECONCILE_INTERVAL", "30s", func(c Config) any { return c.Intervals.FleetReconcile }, 30 * time.Second},
		{"FLEET_METRICS_INTERVAL", "10m", func(c Config) any { return c.Intervals.FleetMetrics }, 10 * time.Minute},
		{"LABS_SYNC_INTERVAL", "1h", func(c Config) any { return c.Intervals.LabsSync }, time.Hour},
		{"IDLE_CHECK_INTERVAL", "2m30s", func(c Config) any { return c.Intervals.IdleCheck }, 150 * time.Second},
		{"EVENTSTORE_READ_TIMEOUT", "3s", func(c Config) any { return c.EventStoreReadTimeout }, 3 * time.Second},
		{"TELEMETRY_RETENTION", "168h", func(c Config) any { return c.TelemetryRetention }, 168 * time.Hour},
		{"REDIS_URL", "redis://127.0.0.1:6379/2", func(c Config) any { return c.RedisURL }, "redis://127.0.0.1:6379/2"},
		{"SECRETS_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", func(c Config) any { return c.SecretsKey }, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="},
		{"AUTH_MODE", "oidc", func(c Config) any { return c.Auth.Mode }, "oidc"},
		{"AUTH_ACCOUNTS_FILE", "/etc/cmlcm/accounts.json", func(c Config) any { return c.Auth.AccountsFile }, "/etc/cmlcm/accounts.json"},
		{"AUTH_SIGNING_KEY_FILE", "/etc/cmlcm/jwt.pem", func(c Config) any { return c.Auth.SigningKeyFile }, "/etc/cmlcm/jwt.pem"},
		{"AUTH_TOKEN_TTL", "5m", func(c Config) any { return c.Auth.TokenTTL }, 5 * time.Minute},
		{"SESSION_IDLE_TIMEOUT", "20m", func(c Config) any { return c.Auth.IdleTimeout }, 20 * time.Minute},
		{"SESSION_MAX_LIFETIME", "8h", func(c Config) any { return c.Auth.MaxLifetime }, 8 * time.Hour},
		{"SESSION_WARNING", "2m", func(c Config) any { return c.Auth.Warning }, 2 * time.Minute},
		{"LOGIN_RATE_LIMIT", "5/10m", func(c Config) any { return c.Auth.LoginRateLimit }, "5/10m"},
		{"OIDC_ISSUER_URL", "https://sso.example.com/realms/cml", func(c Config) any { return c.Auth.OIDCIssuerURL }, "https://sso.example.com/realms/cml"},
		{"OIDC_CLIENT_ID", "cmlcm", func(c Config) any { return c.Auth.OIDCClientID }, "cmlcm"},
		{"OIDC_CLIENT_SECRET", "s3cret", func(c Config) any { return c.Auth.OIDCClientSecret }, "s3cret"},
		{"OIDC_AUDIENCE", "api", func(c Config) any { return c.Auth.OIDCAudience }, "api"},
		{"OIDC_SCOPES", "openid,email", func(c Config) any { return c.Auth.OIDCScopes }, StringList{"openid", "email"}},
		{"OIDC_ROLES_CLAIM", "groups", func(c Config) any { return c.Auth.OIDCRolesClaim }, StringList{"groups"}},
		{"OIDC_POST_LOGOUT_REDIRECT_URL", "https://cml.example.com/bye", func(c Config) any { return c.Auth.OIDCPostLogoutRedirectURL }, "https://cml.example.com/bye"},
		{"OIDC_SIGNING_ALGS", "RS256", func(c Config) any { return c.Auth.OIDCSigningAlgs }, StringList{"RS256"}},
		{"OIDC_REFRESH_LEEWAY", "30s", func(c Config) any { return c.Auth.OIDCRefreshLeeway }, 30 * time.Second},
	}

	// The table must cover every variable Config declares.
	params, err := env.GetFieldParams(&Config{})
	if err != nil {
		t.Fatal(err)
	}
	var declared, tested []string
	for _, p := range params {
		declared = append(declared, p.Key)
	}
	for _, tt := range tests {
		tested = append(tested, tt.name)
	}
	slices.Sort(declared)
	slices.Sort(tested)
	if !slices.Equal(declared, tested) {
		t.Fatalf("table covers %v,\nConfig declares %v", tested, declared)
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustLoad(t, map[string]string{tt.name: tt.value})
			if got := tt.got(cfg); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("%s=%q: got %#v, want %#v", tt.name, tt.value, got, tt.want)
			}
		})
	}
}

func TestDefaultsParse(t *testing.T) {
	// parseProblems relies on this: a field can only fail when its variable
	// is set, never through its default.
	params, err := env.GetFieldParams(&Config{})
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	for _, p := range params {
		if p.HasDefaultValue {
			vars[p.Key] = p.DefaultValue
		}
	}
	if _, err := LoadConfig(mapLookup(vars)); err != nil {
		t.Fatalf("defaults set explicitly do not parse: %v", err)
	}
}

func TestTypedFieldNamesUnique(t *testing.T) {
	// env reports parse errors by field name; parseProblems maps the name
	// back to the variable, which is only exact while names are unique.
	for name, keys := range fieldKeys(reflect.TypeFor[Config]()) {
		if len(keys) > 1 {
			t.Errorf("field name %s is used by %v; give the fields distinct names", name, keys)
		}
	}
}

func TestLoadConfigParseErrors(t *testing.T) {
	_, err := LoadConfig(mapLookup(map[string]string{
		"HTTP_SHUTDOWN_TIMEOUT": "20",
		"DATABASE_MAX_CONNS":    "many",
		"RUN_API":               "yes please",
		"WORKER_DEFAULT_TAGS":   "team",
		"WORKER_AMI_IDS":        "us-east-1=ami-01234567,us-east-1=ami-89abcdef",
		"IDLE_TIMEOUT":          "soon",
	}))
	got := configErrorVars(t, err)
	want := []string{"HTTP_SHUTDOWN_TIMEOUT", "DATABASE_MAX_CONNS", "RUN_API", "WORKER_AMI_IDS", "WORKER_DEFAULT_TAGS", "IDLE_TIMEOUT"}
	if !slices.Equal(got, want) {
		t.Fatalf("problems name %v, want %v (in declaration order)\n%v", got, want, err)
	}
	for _, s := range []string{`"20" is not a duration`, `"many" is not a whole number`, `"yes please" is not a boolean`, `"team" is not key=value`, `key "us-east-1" appears twice`} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error lacks %q:\n%v", s, err)
		}
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	cfg := mustLoad(t, map[string]string{
		"ENVIRONMENT":                        "staging",
		"LOG_LEVEL":                          "verbose",
		"LOG_FORMAT":                         "xml",
		"HTTP_ADDR":                          "localhost",
		"PUBLIC_URL":                         "ftp://example.com",
		"HTTP_SHUTDOWN_TIMEOUT":              "-1s",
		"DATABASE_URL":                       "postgres://db:notaport/x",
		"DATABASE_MAX_CONNS":                 "0",
		"EVENTSTORE_URL":                     "mongodb://db",
		"CLOUD":                              "azure",
		"AWS_REGIONS":                        "us-east-1,moon-base-1,us-east-1",
		"WORKER_AMI_IDS":                     "us-east-1=ami-xyz,mars=ami-01234567",
		"WORKER_AMI_NAME":                    strings.Repeat("n", 129),
		"WORKER_INSTANCE_TYPE":               "huge",
		"WORKER_SUBNET_ID":                   "sub-123",
		"WORKER_SECURITY_GROUP_IDS":          "sg-01234567,default",
		"WORKER_KEY_NAME":                    "key\x01",
		"WORKER_DEFAULT_TAGS":                "aws:owner=x,Name=y,ManagedBy=z",
		"IDLE_TIMEOUT":                       "0s",
		"IDLE_SNOOZE":                        "-5m",
		"FLEET_RECONCILE_INTERVAL":           "0s",
		"FLEET_METRICS_INTERVAL":             "-1s",
		"LABS_SYNC_INTERVAL":                 "0s",
		"IDLE_CHECK_INTERVAL":                "0s",
		"AUTH_MODE":                          "ldap",
		"AWS_ENDPOINT_URL":                   "localhost:4566",
		"AWS_MAX_ATTEMPTS":                   "0",
		"CML_USERNAME":                       "",
		"CML_REQUEST_TIMEOUT":                "0s",
		"CML_ENDPOINT_TEMPLATE":              "https://cml.example.com",
		"CML_ACTIVITY_EXCLUDED_USER_PATTERN": "(",
		"JOBS_CML_WORKERS":                   "0",
		"JOBS_CALL_TIMEOUT":                  "-1s",
		"AUTO_IMPORT_ENABLED":                "true",
		"SIMULATOR_ADDR":                     "0.0.0.0:4566",
		"SIMULATOR_SEED_WORKERS":             "-1",
	})
	err := cfg.Validate()
	got := configErrorVars(t, err)
	for _, v := range []string{
		"ENVIRONMENT", "LOG_LEVEL", "LOG_FORMAT", "HTTP_ADDR", "PUBLIC_URL", "HTTP_SHUTDOWN_TIMEOUT",
		"DATABASE_URL", "DATABASE_MAX_CONNS", "EVENTSTORE_URL", "CLOUD", "AWS_REGIONS",
		"WORKER_AMI_IDS", "WORKER_AMI_NAME", "WORKER_INSTANCE_TYPE", "WORKER_SUBNET_ID",
		"WORKER_SECURITY_GROUP_IDS", "WORKER_KEY_NAME", "WORKER_DEFAULT_TAGS",
		"IDLE_TIMEOUT", "IDLE_SNOOZE", "FLEET_RECONCILE_INTERVAL", "FLEET_METRICS_INTERVAL",
		"LABS_SYNC_INTERVAL", "IDLE_CHECK_INTERVAL", "AUTH_MODE",
		"AWS_ENDPOINT_URL", "AWS_MAX_ATTEMPTS", "CML_REQUEST_TIMEOUT", "CML_ENDPOINT_TEMPLATE",
		"CML_ACTIVITY_EXCLUDED_USER_PATTERN", "JOBS_CML_WORKERS", "JOBS_CALL_TIMEOUT", "AUTO_IMPORT_REGION",
		"AUTO_IMPORT_AMI_NAME_PATTERN", "SIMULATOR_ADDR", "SIMULATOR_SEED_WORKERS",
	} {
		if !slices.Contains(got, v) {
			t.Errorf("no problem reported for %s", v)
		}
	}
	msg := err.Error()
	for _, s := range []string{
		`"moon-base-1" does not look like an AWS region`,
		`"us-east-1" is listed twice`,
		`"ami-xyz" (for us-east-1)`,
		`"mars" does not look like an AWS region`,
		`"default" does not look like a security group id`,
		`tag key "aws:owner" uses the reserved aws: prefix`,
		`tag key "Name" is set by the service itself`,
		`tag key "ManagedBy" is set by the service itself`,
	} {
		if !strings.Contains(msg, s) {
			t.Errorf("error lacks %q", s)
		}
	}
	if t.Failed() {
		t.Log(err)
	}
}

func TestValidateAccepts(t *testing.T) {
	tests := map[string]map[string]string{
		"GovRegionAndPattern": {"AWS_REGIONS": "us-gov-west-1,ap-southeast-4,cn-north-1", "WORKER_AMI_NAME": "cisco-cml2.*"},
		"EmptyOptionalIDs":    {"WORKER_SUBNET_ID": "", "WORKER_SECURITY_GROUP_IDS": "", "WORKER_KEY_NAME": ""},
		"ESDB":                {"EVENTSTORE_URL": "esdb://admin:changeit@node1:2113,node2:2113?tls=true"},
		"ESDBDiscover":        {"EVENTSTORE_URL": "esdb+discover://cluster.example.com:2113"},
		"KurrentDB":           {"EVENTSTORE_URL": "kurrentdb://localhost:2113?tls=false"},
		"KeywordValueDSN":     {"DATABASE_URL": "host=127.0.0.1 user=postgres dbname=cmlcm sslmode=disable"},
		"AnyInterface":        {"HTTP_ADDR": ":8080"},
		"InstanceTypes":       {"WORKER_INSTANCE_TYPE": "c7i.metal-24xl"},
		"ProductionHTTPS": {"ENVIRONMENT": "production", "PUBLIC_URL": "https://cml.example.com/manager",
			"CLOUD": "aws", "CML_PASSWORD": "pw",
			"SECRETS_KEY": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "AUTH_ACCOUNTS_FILE": "/etc/cmlcm/accounts.json",
			"AUTH_SIGNING_KEY_FILE": "/etc/cmlcm/jwt.pem"},
		"OIDC": {"AUTH_MODE": "oidc", "OIDC_ISSUER_URL": "https://sso.example.com/realms/cml", "OIDC_CLIENT_ID": "cmlcm",
			"OIDC_CLIENT_SECRET": "s3cret"},
		"Redis":      {"REDIS_URL": "redis://127.0.0.1:6379/0"},
		"AutoImport": {"AUTO_IMPORT_ENABLED": "true", "AUTO_IMPORT_REGION": "us-east-1", "AUTO_IMPORT_AMI_NAME_PATTERN": "cisco-*"},
		"Simulator":  {"SIMULATOR_ADDR": "127.0.0.1:4566", "SIMULATOR_CML_ADDR": "[::1]:4567"},
		"AWS":        {"CLOUD": "aws", "CML_PASSWORD": "pw", "AWS_ENDPOINT_URL": "http://127.0.0.1:4566", "CML_ENDPOINT_TEMPLATE": "https://{private_ip}"},
		"LongHexIDs": {"WORKER_AMI_IDS": "eu-central-1=ami-0123456789abcdef0", "WORKER_SUBNET_ID": "subnet-0123456789abcdef0", "WORKER_SECURITY_GROUP_IDS": "sg-0123456789abcdef0"},
	}
	for name, vars := range tests {
		t.Run(name, func(t *testing.T) {
			if err := mustLoad(t, vars).Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
	if got := mustLoad(t, tests["ESDB"]).EventStoreKind(); got != EventStoreESDB {
		t.Fatalf("EventStoreKind=%q, want esdb", got)
	}
}

func TestValidateProduction(t *testing.T) {
	err := mustLoad(t, map[string]string{"ENVIRONMENT": "production"}).Validate()
	want := []string{"PUBLIC_URL", "SECRETS_KEY", "CLOUD", "AUTH_ACCOUNTS_FILE", "AUTH_SIGNING_KEY_FILE"}
	if got := configErrorVars(t, err); !slices.Equal(got, want) {
		t.Fatalf("production with the defaults: problems %v, want %v", got, want)
	}
	err = mustLoad(t, map[string]string{"CLOUD": "aws"}).Validate()
	if got := configErrorVars(t, err); !slices.Equal(got, []string{"CML_PASSWORD"}) {
		t.Fatalf("CLOUD=aws without CML_PASSWORD: problems %v", got)
	}
}

func TestValidateAuth(t *testing.T) {
	err := mustLoad(t, map[string]string{
		"AUTH_MODE": "oidc", "OIDC_SIGNING_ALGS": "RS256,HS256,none", "AUTH_TOKEN_TTL": "10s",
		"SESSION_IDLE_TIMEOUT": "24h", "LOGIN_RATE_LIMIT": "lots", "REDIS_URL": "http://x", "SECRETS_KEY": "c2hvcnQ=",
	}).Validate()
	want := []string{"REDIS_URL", "SECRETS_KEY", "AUTH_TOKEN_TTL", "SESSION_IDLE_TIMEOUT", "LOGIN_RATE_LIMIT",
		"OIDC_ISSUER_URL", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET", "OIDC_SIGNING_ALGS"}
	got := configErrorVars(t, err)
	for _, v := range want {
		if !slices.Contains(got, v) {
			t.Errorf("no problem reported for %s: %v", v, err)
		}
	}
}

func TestLoadValidConfigMergesProblems(t *testing.T) {
	_, err := LoadValidConfig(mapLookup(map[string]string{
		"LOG_LEVEL":    "loud",
		"IDLE_TIMEOUT": "forever", // fails to parse; must not also be reported as "must be positive"
		"CLOUD":        "gcp",
	}))
	got := configErrorVars(t, err)
	if want := []string{"LOG_LEVEL", "CLOUD", "IDLE_TIMEOUT"}; !slices.Equal(got, want) {
		t.Fatalf("problems name %v, want %v\n%v", got, want, err)
	}
	if _, err := LoadValidConfig(mapLookup(nil)); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}

func TestConfigLogValueHidesPasswords(t *testing.T) {
	cfg := mustLoad(t, map[string]string{
		"DATABASE_URL":   "postgres://app:hunter2@db:5432/cmlcm?sslmode=require",
		"EVENTSTORE_URL": "esdb://admin:changeit@node1:2113,node2:2113?tls=true",
	})
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", slog.Any("config", cfg))
	out := buf.String()
	for _, secret := range []string{"hunter2", "changeit"} {
		if strings.Contains(out, secret) {
			t.Fatalf("log contains %q: %s", secret, out)
		}
	}
	for _, s := range []string{"app:xxxxx@db", "admin:xxxxx@node1", `"mode":"local"`} {
		if !strings.Contains(out, s) {
			t.Fatalf("log lacks %q: %s", s, out)
		}
	}
	r := cfg.Redacted()
	if strings.Contains(r.DatabaseURL, "hunter2") || strings.Contains(r.EventStoreURL, "changeit") {
		t.Fatalf("Redacted: %s %s", r.DatabaseURL, r.EventStoreURL)
	}
	if cfg.DatabaseURL != "postgres://app:hunter2@db:5432/cmlcm?sslmode=require" {
		t.Fatal("Redacted changed the original")
	}
	if got := redactConn("host=db user=app password=hunter2 dbname=x"); strings.Contains(got, "hunter2") {
		t.Fatalf("keyword/value DSN not redacted: %s", got)
	}
}

func TestEnvLookup(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ".env")
	if err := os.WriteFile(path, []byte("# dev settings\nLOG_LEVEL=debug\nCLOUD=aws\nexport AUTH_MODE=\"oidc\"\n"+
		"OIDC_ISSUER_URL=https://sso.example.com/realms/cml\nOIDC_CLIENT_ID=cmlcm\nOIDC_CLIENT_SECRET=s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	osEnv := map[string]string{"CLOUD": "simulated"}

	t.Run("EnvironmentWins", func(t *testing.T) {
		lookup, loaded, err := EnvLookup(path, mapLookup(osEnv))
		if err != nil || !loaded {
			t.Fatalf("loaded=%v err=%v", loaded, err)
		}
		cfg, err := LoadValidConfig(lookup)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.LogLevel != "debug" || cfg.Cloud != "simulated" || cfg.Auth.Mode != "oidc" {
			t.Fatalf("got LOG_LEVEL=%s CLOUD=%s AUTH_MODE=%s", cfg.LogLevel, cfg.Cloud, cfg.Auth.Mode)
		}
	})
	t.Run("MissingFile", func(t *testing.T) {
		_, loaded, err := EnvLookup(filepath.Join(dir, "absent.env"), mapLookup(osEnv))
		if err != nil || loaded {
			t.Fatalf("loaded=%v err=%v", loaded, err)
		}
	})
	t.Run("SkippedInProduction", func(t *testing.T) {
		lookup, loaded, err := EnvLookup(path, mapLookup(map[string]string{"ENVIRONMENT": "production"}))
		if err != nil || loaded {
			t.Fatalf("loaded=%v err=%v", loaded, err)
		}
		if _, ok := lookup("LOG_LEVEL"); ok {
			t.Fatal("production read .env")
		}
	})
	t.Run("Disabled", func(t *testing.T) {
		_, loaded, err := EnvLookup("", mapLookup(osEnv))
		if err != nil || loaded {
			t.Fatalf("loaded=%v err=%v", loaded, err)
		}
	})
}

// TestEnvExampleDocumentsEveryVariable keeps .env.example in step with
// Config: every variable appears there as "# NAME=default".
func TestEnvExampleDocumentsEveryVariable(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "..", ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	line := regexp.MustCompile(`^#?\s*([A-Z][A-Z0-9_]*)=(.*)$`)
	documented := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := line.FindStringSubmatch(sc.Text()); m != nil {
			documented[m[1]] = m[2]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	params, err := env.GetFieldParams(&Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range params {
		got, ok := documented[p.Key]
		switch {
		case !ok:
			t.Errorf(".env.example does not document %s", p.Key)
		case got != p.DefaultValue:
			t.Errorf(".env.example shows %s=%q, but the default is %q", p.Key, got, p.DefaultValue)
		}
	}
}
