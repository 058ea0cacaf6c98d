package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/caarlos0/env/v11"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/joho/godotenv"
	"github.com/redis/go-redis/v9"

	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sealing"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sessions"
)

// Accepted values of the enumerated variables.
const (
	EnvDevelopment = "development"
	EnvProduction  = "production"

	CloudSimulated = "simulated"
	CloudAWS       = "aws"

	AuthLocal = "local"
	AuthOIDC  = "oidc"

	// EventStorePostgres and EventStoreESDB are the values of
	// Config.EventStoreKind.
	EventStorePostgres = "postgres"
	EventStoreESDB     = "esdb"
)

var (
	environments = []string{EnvDevelopment, EnvProduction}
	logLevels    = []string{"debug", "info", "warn", "error"}
	logFormats   = []string{"text", "json"}
	clouds       = []string{CloudSimulated, CloudAWS}
	authModes    = []string{AuthLocal, AuthOIDC}
	// esdbSchemes are the connection-string schemes of EventStoreDB/KurrentDB.
	esdbSchemes = []string{"esdb", "esdb+discover", "kurrentdb", "kurrentdb+discover"}
)

// Config is the whole configuration of the service, read from environment
// variables (see .env.example for each one's meaning). The worker, idle and
// interval groups are the environment defaults of runtime settings: a value
// an admin saves in the UI wins over them, an unsaved one never does.
type Config struct {
	Environment string `env:"ENVIRONMENT" envDefault:"development"`
	LogLevel    string `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat   string `env:"LOG_FORMAT" envDefault:"text"`

	HTTPAddr            string        `env:"HTTP_ADDR" envDefault:"127.0.0.1:8080"`
	PublicURL           string        `env:"PUBLIC_URL" envDefault:"http://127.0.0.1:8080"`
	HTTPShutdownTimeout time.Duration `env:"HTTP_SHUTDOWN_TIMEOUT" envDefault:"20s"`

	DatabaseURL      string `env:"DATABASE_URL" envDefault:"postgres://postgres@127.0.0.1:5432/cml_cloud_manager?sslmode=disable"`
	DatabaseMaxConns int32  `env:"DATABASE_MAX_CONNS" envDefault:"20"`
	// EventStoreURL empty selects the Postgres event store in DatabaseURL.
	EventStoreURL         string        `env:"EVENTSTORE_URL"`
	EventStoreReadTimeout time.Duration `env:"EVENTSTORE_READ_TIMEOUT" envDefault:"10s"`
	// TelemetryRetention is how long telemetry events (metrics samples, lab
	// observations) are kept: $maxAge on EventStoreDB, a pruning job on
	// Postgres. 0 keeps them forever.
	TelemetryRetention time.Duration `env:"TELEMETRY_RETENTION" envDefault:"720h"`
	// RedisURL, when set, keeps sessions, sign-in states and the login
	// limiter in Redis instead of Postgres.
	RedisURL string `env:"REDIS_URL"`
	// SecretsKey (base64, 32 bytes) seals secrets that pass through the
	// event log or the session store: licence tokens, OIDC tokens.
	SecretsKey string `env:"SECRETS_KEY"`

	// One binary, roles by flags.
	MigrateOnStart bool `env:"MIGRATE_ON_START" envDefault:"true"`
	RunAPI         bool `env:"RUN_API" envDefault:"true"`
	RunProjections bool `env:"RUN_PROJECTIONS" envDefault:"true"`

	Cloud      string     `env:"CLOUD" envDefault:"simulated"`
	AWSRegions StringList `env:"AWS_REGIONS" envDefault:"us-east-1"`
	AWS        AWSConfig
	CML        CMLConfig
	Jobs       JobsConfig
	Simulator  SimulatorConfig

	Worker    WorkerDefaults
	Idle      IdleDefaults
	Intervals PollIntervals

	Auth AuthConfig
}

// AWSConfig tunes the EC2 and CloudWatch adapter (CLOUD=aws). Credentials
// come from the SDK's standard chain (environment, shared config and
// profile, web identity, instance role).
type AWSConfig struct {
	// EndpointURL points every client at another endpoint (a LocalStack,
	// or the `simulator` command's address).
	EndpointURL string        `env:"AWS_ENDPOINT_URL"`
	MaxAttempts int           `env:"AWS_MAX_ATTEMPTS" envDefault:"3"`
	MaxBackoff  time.Duration `env:"AWS_MAX_BACKOFF" envDefault:"5s"`
	// ImageOwners limits AMI name look-ups to these owners (account ids,
	// "self", "amazon"); empty means any owner visible to the account.
	ImageOwners StringList `env:"AWS_IMAGE_OWNERS"`
}

// CMLConfig configures the CML controllers' REST client.
type CMLConfig struct {
	Username string `env:"CML_USERNAME" envDefault:"admin"`
	Password string `env:"CML_PASSWORD"`
	// TLSVerify is off by default: CML ships a self-signed certificate.
	TLSVerify      bool          `env:"CML_TLS_VERIFY" envDefault:"false"`
	CAFile         string        `env:"CML_CA_FILE"`
	RequestTimeout time.Duration `env:"CML_REQUEST_TIMEOUT" envDefault:"15s"`
	// EndpointTemplate renders a worker's controller URL from its instance:
	// {public_ip}, {private_ip}, {instance_id}.
	EndpointTemplate string `env:"CML_ENDPOINT_TEMPLATE" envDefault:"https://{public_ip}"`
	// ActivityExcludedUserIDs and ActivityExcludedUserPattern name CML
	// users whose telemetry events are not activity (the manager's own API
	// user is excluded by itself).
	ActivityExcludedUserIDs     StringList `env:"CML_ACTIVITY_EXCLUDED_USER_IDS"`
	ActivityExcludedUserPattern string     `env:"CML_ACTIVITY_EXCLUDED_USER_PATTERN"`
}

// JobsConfig configures the background jobs (River).
type JobsConfig struct {
	// Run runs the job workers, the reactor and (on the elected leader)
	// the periodic jobs here; false makes an instance that only enqueues.
	Run             bool          `env:"RUN_JOBS" envDefault:"true"`
	CloudWorkers    int           `env:"JOBS_CLOUD_WORKERS" envDefault:"20"`
	CMLWorkers      int           `env:"JOBS_CML_WORKERS" envDefault:"10"`
	FleetWorkers    int           `env:"JOBS_FLEET_WORKERS" envDefault:"4"`
	CMLConcurrency  int           `env:"JOBS_CML_CONCURRENCY" envDefault:"32"`
	CallTimeout     time.Duration `env:"JOBS_CALL_TIMEOUT" envDefault:"30s"`
	RefreshThrottle time.Duration `env:"REFRESH_THROTTLE" envDefault:"30s"`

	AutoImport           bool          `env:"AUTO_IMPORT_ENABLED" envDefault:"false"`
	AutoImportRegion     string        `env:"AUTO_IMPORT_REGION"`
	AutoImportAMIPattern string        `env:"AUTO_IMPORT_AMI_NAME_PATTERN"`
	AutoImportInterval   time.Duration `env:"AUTO_IMPORT_INTERVAL" envDefault:"1h"`
}

// SimulatorConfig configures the built-in cloud simulator (CLOUD=simulated
// and the `simulator` command).
type SimulatorConfig struct {
	// Addr and CMLAddr are its loopback listeners; empty picks free ports
	// in serve, and 127.0.0.1:4566 / :4567 in the `simulator` command.
	Addr    string `env:"SIMULATOR_ADDR"`
	CMLAddr string `env:"SIMULATOR_CML_ADDR"`
	// SeedWorkers is how many workers serve creates (half launched by the
	// product, half imported) when the event log has none; 0 seeds nothing.
	SeedWorkers int `env:"SIMULATOR_SEED_WORKERS" envDefault:"4"`
}

// AuthConfig configures sign-in and sessions (DESIGN.md section 9).
type AuthConfig struct {
	Mode           string        `env:"AUTH_MODE" envDefault:"local"`
	AccountsFile   string        `env:"AUTH_ACCOUNTS_FILE"`
	SigningKeyFile string        `env:"AUTH_SIGNING_KEY_FILE"`
	TokenTTL       time.Duration `env:"AUTH_TOKEN_TTL" envDefault:"15m"`
	IdleTimeout    time.Duration `env:"SESSION_IDLE_TIMEOUT" envDefault:"30m"`
	MaxLifetime    time.Duration `env:"SESSION_MAX_LIFETIME" envDefault:"12h"`
	Warning        time.Duration `env:"SESSION_WARNING" envDefault:"5m"`
	LoginRateLimit string        `env:"LOGIN_RATE_LIMIT" envDefault:"10/15m"`

	OIDCIssuerURL             string        `env:"OIDC_ISSUER_URL"`
	OIDCClientID              string        `env:"OIDC_CLIENT_ID"`
	OIDCClientSecret          string        `env:"OIDC_CLIENT_SECRET"`
	OIDCAudience              string        `env:"OIDC_AUDIENCE" envDefault:"cml-cloud-manager"`
	OIDCScopes                StringList    `env:"OIDC_SCOPES" envDefault:"openid,profile,email"`
	OIDCRolesClaim            StringList    `env:"OIDC_ROLES_CLAIM" envDefault:"realm_access.roles,roles"`
	OIDCPostLogoutRedirectURL string        `env:"OIDC_POST_LOGOUT_REDIRECT_URL"`
	OIDCSigningAlgs           StringList    `env:"OIDC_SIGNING_ALGS" envDefault:"RS256,ES256,EdDSA"`
	OIDCRefreshLeeway         time.Duration `env:"OIDC_REFRESH_LEEWAY" envDefault:"1m"`
}

// WorkerDefaults are the provisioning defaults for new workers.
type WorkerDefaults struct {
	// AMIIDs maps a region to the AMI to boot there; it wins over AMIName.
	AMIIDs           StringMap  `env:"WORKER_AMI_IDS"`
	AMIName          string     `env:"WORKER_AMI_NAME" envDefault:"cisco-cml2.9-lablet-v0.1.7"`
	InstanceType     string     `env:"WORKER_INSTANCE_TYPE" envDefault:"m5zn.metal"`
	SubnetID         string     `env:"WORKER_SUBNET_ID"`
	SecurityGroupIDs StringList `env:"WORKER_SECURITY_GROUP_IDS"`
	KeyName          string     `env:"WORKER_KEY_NAME"`
	DefaultTags      StringMap  `env:"WORKER_DEFAULT_TAGS"`
}

// IdleDefaults configure idle detection and auto-stop.
type IdleDefaults struct {
	DetectionEnabled bool          `env:"IDLE_DETECTION_ENABLED" envDefault:"true"`
	Timeout          time.Duration `env:"IDLE_TIMEOUT" envDefault:"60m"`
	Snooze           time.Duration `env:"IDLE_SNOOZE" envDefault:"60m"`
}

// PollIntervals are the periods of the periodic jobs.
type PollIntervals struct {
	FleetReconcile time.Duration `env:"FLEET_RECONCILE_INTERVAL" envDefault:"60s"`
	FleetMetrics   time.Duration `env:"FLEET_METRICS_INTERVAL" envDefault:"300s"`
	LabsSync       time.Duration `env:"LABS_SYNC_INTERVAL" envDefault:"1800s"`
	IdleCheck      time.Duration `env:"IDLE_CHECK_INTERVAL" envDefault:"300s"`
}

// StringList is a comma-separated list. Items are trimmed and empty items
// dropped, so "a, b," is [a b].
type StringList []string

// UnmarshalText implements encoding.TextUnmarshaler.
func (l *StringList) UnmarshalText(b []byte) error {
	var out StringList
	for item := range strings.SplitSeq(string(b), ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	*l = out
	return nil
}

// StringMap is a comma-separated list of key=value pairs. Keys and values
// are trimmed; a pair without "=", an empty key or a repeated key is an
// error.
type StringMap map[string]string

// UnmarshalText implements encoding.TextUnmarshaler.
func (m *StringMap) UnmarshalText(b []byte) error {
	out := StringMap{}
	for pair := range strings.SplitSeq(string(b), ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case !ok:
			return fmt.Errorf("%q is not key=value", strings.TrimSpace(pair))
		case k == "":
			return fmt.Errorf("%q has an empty key", strings.TrimSpace(pair))
		}
		if _, dup := out[k]; dup {
			return fmt.Errorf("key %q appears twice", k)
		}
		out[k] = v
	}
	*m = out
	return nil
}

// VarProblem is one thing wrong with one variable.
type VarProblem struct {
	Var     string
	Message string
}

// ConfigError lists every configuration problem found, in the order the
// variables are declared.
type ConfigError struct {
	Problems []VarProblem
}

// Error implements error: one line per problem.
func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString("invalid configuration:")
	for _, p := range e.Problems {
		fmt.Fprintf(&b, "\n  %s: %s", p.Var, p.Message)
	}
	return b.String()
}

// Vars returns the names of the variables with problems.
func (e *ConfigError) Vars() []string {
	out := make([]string, 0, len(e.Problems))
	for _, p := range e.Problems {
		out = append(out, p.Var)
	}
	return out
}

// LoadConfig reads the configuration through lookup (os.LookupEnv, or a map
// in tests), applying defaults; an empty value means the default. It
// reports every value that cannot be parsed as a *ConfigError; it does not
// Validate.
func LoadConfig(lookup func(string) (string, bool)) (Config, error) {
	var cfg Config
	params, err := env.GetFieldParams(&cfg)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	environ := make(map[string]string, len(params))
	for _, p := range params {
		if v, ok := lookup(p.Key); ok {
			environ[p.Key] = v
		}
	}
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: environ}); err != nil {
		return cfg, parseProblems(err, environ)
	}
	return cfg, nil
}

// LoadValidConfig loads and validates the configuration and returns every
// problem of both steps at once. A variable that failed to parse is not
// validated again.
func LoadValidConfig(lookup func(string) (string, bool)) (Config, error) {
	cfg, err := LoadConfig(lookup)
	var parseErr *ConfigError
	if err != nil && !errors.As(err, &parseErr) {
		return cfg, err
	}
	verr := cfg.Validate()
	if parseErr == nil {
		return cfg, verr
	}
	var valErr *ConfigError
	if errors.As(verr, &valErr) {
		failed := parseErr.Vars()
		for _, p := range valErr.Problems {
			if !slices.Contains(failed, p.Var) {
				parseErr.Problems = append(parseErr.Problems, p)
			}
		}
		sortProblems(parseErr.Problems)
	}
	return cfg, parseErr
}

// parseProblems turns env's errors, which name struct fields, into problems
// that name variables.
func parseProblems(err error, environ map[string]string) error {
	keys := fieldKeys(reflect.TypeFor[Config]())
	var errs []error
	var agg env.AggregateError
	if errors.As(err, &agg) {
		errs = agg.Errors
	} else {
		errs = []error{err}
	}
	out := &ConfigError{}
	for _, e := range errs {
		var pe env.ParseError
		if !errors.As(e, &pe) {
			return fmt.Errorf("config: %w", err) // a programming error, not bad input
		}
		// Defaults always parse (a test proves it), so a failing field is one
		// whose variable is set. Field names are unique (another test), the
		// filter only guards against a future clash.
		var vars []string
		for _, k := range keys[pe.Name] {
			if _, set := environ[k]; set {
				vars = append(vars, k)
			}
		}
		if len(vars) == 0 {
			vars = keys[pe.Name]
		}
		out.Problems = append(out.Problems, VarProblem{
			Var:     strings.Join(vars, " or "),
			Message: parseMessage(pe, environ[vars[0]]),
		})
	}
	sortProblems(out.Problems)
	return out
}

func parseMessage(pe env.ParseError, raw string) string {
	switch {
	case pe.Type == reflect.TypeFor[time.Duration]():
		return fmt.Sprintf("%q is not a duration; write it like 90s, 5m or 1h30m", raw)
	case pe.Type.Kind() == reflect.Bool:
		return fmt.Sprintf("%q is not a boolean; use true or false", raw)
	case pe.Type.Kind() >= reflect.Int && pe.Type.Kind() <= reflect.Uint64:
		return fmt.Sprintf("%q is not a whole number in the range of %s", raw, pe.Type)
	}
	return pe.Err.Error()
}

// fieldKeys maps each leaf field name of t to its variable names.
func fieldKeys(t reflect.Type) map[string][]string {
	out := map[string][]string{}
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for f := range t.Fields() {
			key, _, _ := strings.Cut(f.Tag.Get("env"), ",")
			switch {
			case key != "":
				out[f.Name] = append(out[f.Name], key)
			case f.Type.Kind() == reflect.Struct:
				walk(f.Type)
			}
		}
	}
	walk(t)
	return out
}

// varOrder is the declaration index of each variable, for stable reports.
var varOrder = func() map[string]int {
	params, err := env.GetFieldParams(&Config{})
	if err != nil {
		panic(err)
	}
	m := make(map[string]int, len(params))
	for i, p := range params {
		m[p.Key] = i
	}
	return m
}()

func sortProblems(ps []VarProblem) {
	slices.SortStableFunc(ps, func(a, b VarProblem) int {
		ia, oka := varOrder[a.Var]
		ib, okb := varOrder[b.Var]
		switch {
		case !oka && !okb:
			return 0
		case !oka:
			return 1
		case !okb:
			return -1
		}
		return ia - ib
	})
}

// Formats of AWS identifiers.
var (
	regionRE        = regexp.MustCompile(`^[a-z]{2}(-gov)?-[a-z]+-\d$`)
	amiRE           = regexp.MustCompile(`^ami-[0-9a-f]{8,17}$`)
	subnetRE        = regexp.MustCompile(`^subnet-[0-9a-f]{8,17}$`)
	securityGroupRE = regexp.MustCompile(`^sg-[0-9a-f]{8,17}$`)
	instanceTypeRE  = regexp.MustCompile(`^[a-z][a-z0-9-]*\.[a-z0-9-]+$`)
)

// reservedTagKeys are set by the service itself on every worker instance.
var reservedTagKeys = []string{"Name", "ManagedBy", "cml-cloud-manager/worker-id"}

// Validate checks every variable and returns all problems at once as a
// *ConfigError, or nil.
func (c Config) Validate() error {
	var ps []VarProblem
	add := func(v, format string, args ...any) {
		ps = append(ps, VarProblem{Var: v, Message: fmt.Sprintf(format, args...)})
	}
	oneOf := func(v, value string, allowed []string) {
		if !slices.Contains(allowed, value) {
			add(v, "%q is not one of %s", value, strings.Join(allowed, ", "))
		}
	}
	positive := func(v string, d time.Duration) {
		if d <= 0 {
			add(v, "must be positive, got %v", d)
		}
	}

	oneOf("ENVIRONMENT", c.Environment, environments)
	oneOf("LOG_LEVEL", c.LogLevel, logLevels)
	oneOf("LOG_FORMAT", c.LogFormat, logFormats)

	if msg := checkListenAddr(c.HTTPAddr); msg != "" {
		add("HTTP_ADDR", "%s", msg)
	}
	if msg := checkPublicURL(c.PublicURL); msg != "" {
		add("PUBLIC_URL", "%s", msg)
	} else if c.Production() && !strings.HasPrefix(c.PublicURL, "https://") {
		add("PUBLIC_URL", "must be an https URL when ENVIRONMENT=production")
	}
	positive("HTTP_SHUTDOWN_TIMEOUT", c.HTTPShutdownTimeout)

	if pc, err := pgxpool.ParseConfig(c.DatabaseURL); err != nil {
		add("DATABASE_URL", "not a Postgres connection string: %v", err)
	} else if pc.ConnConfig.Database == "" {
		add("DATABASE_URL", "names no database")
	}
	if c.DatabaseMaxConns < 1 {
		add("DATABASE_MAX_CONNS", "must be at least 1, got %d", c.DatabaseMaxConns)
	}
	if msg := checkEventStoreURL(c.EventStoreURL); msg != "" {
		add("EVENTSTORE_URL", "%s", msg)
	}

	oneOf("CLOUD", c.Cloud, clouds)
	if len(c.AWSRegions) == 0 {
		add("AWS_REGIONS", "must name at least one region")
	}
	seen := map[string]bool{}
	for _, r := range c.AWSRegions {
		if !regionRE.MatchString(r) {
			add("AWS_REGIONS", "%q does not look like an AWS region (like us-east-1)", r)
		}
		if seen[r] {
			add("AWS_REGIONS", "%q is listed twice", r)
		}
		seen[r] = true
	}

	if c.Production() && c.Cloud == CloudSimulated {
		add("CLOUD", "must be aws when ENVIRONMENT=production (the simulator is for development)")
	}
	if c.AWS.EndpointURL != "" {
		if msg := checkPublicURL(c.AWS.EndpointURL); msg != "" {
			add("AWS_ENDPOINT_URL", "%s", msg)
		}
	}
	if c.AWS.MaxAttempts < 1 || c.AWS.MaxAttempts > 20 {
		add("AWS_MAX_ATTEMPTS", "must be between 1 and 20, got %d", c.AWS.MaxAttempts)
	}
	positive("AWS_MAX_BACKOFF", c.AWS.MaxBackoff)
	if c.Cloud == CloudAWS && c.CML.Password == "" {
		add("CML_PASSWORD", "is required when CLOUD=aws (the password of CML_USERNAME on every controller)")
	}
	if c.CML.Username == "" {
		add("CML_USERNAME", "must not be empty")
	}
	positive("CML_REQUEST_TIMEOUT", c.CML.RequestTimeout)
	if msg := checkEndpointTemplate(c.CML.EndpointTemplate); msg != "" {
		add("CML_ENDPOINT_TEMPLATE", "%s", msg)
	}
	if c.CML.ActivityExcludedUserPattern != "" {
		if _, err := regexp.Compile(c.CML.ActivityExcludedUserPattern); err != nil {
			add("CML_ACTIVITY_EXCLUDED_USER_PATTERN", "not a regular expression: %v", err)
		}
	}
	j := c.Jobs
	for v, n := range map[string]int{"JOBS_CLOUD_WORKERS": j.CloudWorkers, "JOBS_CML_WORKERS": j.CMLWorkers,
		"JOBS_FLEET_WORKERS": j.FleetWorkers, "JOBS_CML_CONCURRENCY": j.CMLConcurrency} {
		if n < 1 || n > 1000 {
			add(v, "must be between 1 and 1000, got %d", n)
		}
	}
	positive("JOBS_CALL_TIMEOUT", j.CallTimeout)
	positive("REFRESH_THROTTLE", j.RefreshThrottle)
	positive("AUTO_IMPORT_INTERVAL", j.AutoImportInterval)
	if j.AutoImport {
		if !slices.Contains(c.AWSRegions, j.AutoImportRegion) {
			add("AUTO_IMPORT_REGION", "must be one of AWS_REGIONS when AUTO_IMPORT_ENABLED=true")
		}
		if j.AutoImportAMIPattern == "" {
			add("AUTO_IMPORT_AMI_NAME_PATTERN", "is required when AUTO_IMPORT_ENABLED=true (a glob such as cisco-cml2.9-*)")
		}
	}
	for v, addr := range map[string]string{"SIMULATOR_ADDR": c.Simulator.Addr, "SIMULATOR_CML_ADDR": c.Simulator.CMLAddr} {
		if addr == "" {
			continue
		}
		if msg := checkListenAddr(addr); msg != "" {
			add(v, "%s", msg)
		} else if host, _, _ := net.SplitHostPort(addr); !isLoopback(host) {
			add(v, "must be a loopback address: the simulator never listens beyond this machine")
		}
	}
	if c.Simulator.SeedWorkers < 0 || c.Simulator.SeedWorkers > 1000 {
		add("SIMULATOR_SEED_WORKERS", "must be between 0 and 1000, got %d", c.Simulator.SeedWorkers)
	}

	w := c.Worker
	for _, region := range slices.Sorted(maps.Keys(w.AMIIDs)) {
		if !regionRE.MatchString(region) {
			add("WORKER_AMI_IDS", "%q does not look like an AWS region (like us-east-1)", region)
		}
		if ami := w.AMIIDs[region]; !amiRE.MatchString(ami) {
			add("WORKER_AMI_IDS", "%q (for %s) does not look like an AMI id (ami- and 8 to 17 hex digits)", ami, region)
		}
	}
	if n := utf8.RuneCountInString(w.AMIName); n > 128 {
		add("WORKER_AMI_NAME", "longer than 128 characters")
	}
	if !instanceTypeRE.MatchString(w.InstanceType) {
		add("WORKER_INSTANCE_TYPE", "%q does not look like an EC2 instance type (like m5zn.metal)", w.InstanceType)
	}
	if w.SubnetID != "" && !subnetRE.MatchString(w.SubnetID) {
		add("WORKER_SUBNET_ID", "%q does not look like a subnet id (subnet- and 8 to 17 hex digits)", w.SubnetID)
	}
	for _, sg := range w.SecurityGroupIDs {
		if !securityGroupRE.MatchString(sg) {
			add("WORKER_SECURITY_GROUP_IDS", "%q does not look like a security group id (sg- and 8 to 17 hex digits)", sg)
		}
	}
	if len(w.KeyName) > 255 || !printableASCII(w.KeyName) {
		add("WORKER_KEY_NAME", "must be at most 255 printable ASCII characters")
	}
	for _, k := range slices.Sorted(maps.Keys(w.DefaultTags)) {
		switch {
		case utf8.RuneCountInString(k) > 128:
			add("WORKER_DEFAULT_TAGS", "tag key %.20q... is longer than 128 characters", k)
		case strings.HasPrefix(strings.ToLower(k), "aws:"):
			add("WORKER_DEFAULT_TAGS", "tag key %q uses the reserved aws: prefix", k)
		case slices.Contains(reservedTagKeys, k):
			add("WORKER_DEFAULT_TAGS", "tag key %q is set by the service itself", k)
		}
		if utf8.RuneCountInString(w.DefaultTags[k]) > 256 {
			add("WORKER_DEFAULT_TAGS", "value of tag %q is longer than 256 characters", k)
		}
	}

	positive("IDLE_TIMEOUT", c.Idle.Timeout)
	positive("IDLE_SNOOZE", c.Idle.Snooze)
	positive("FLEET_RECONCILE_INTERVAL", c.Intervals.FleetReconcile)
	positive("FLEET_METRICS_INTERVAL", c.Intervals.FleetMetrics)
	positive("LABS_SYNC_INTERVAL", c.Intervals.LabsSync)
	positive("IDLE_CHECK_INTERVAL", c.Intervals.IdleCheck)

	if c.EventStoreReadTimeout <= 0 {
		add("EVENTSTORE_READ_TIMEOUT", "must be positive, got %v", c.EventStoreReadTimeout)
	}
	if c.TelemetryRetention < 0 {
		add("TELEMETRY_RETENTION", "must not be negative (0 keeps telemetry forever)")
	}
	if c.RedisURL != "" {
		if _, err := redis.ParseURL(c.RedisURL); err != nil {
			add("REDIS_URL", "not a Redis URL: %v", err)
		}
	}
	if c.SecretsKey != "" {
		if _, err := sealing.ParseKey(c.SecretsKey); err != nil {
			add("SECRETS_KEY", "%v (generate one with: openssl rand -base64 32)", err)
		}
	} else if c.Production() {
		add("SECRETS_KEY", "is required in production (openssl rand -base64 32)")
	}

	a := c.Auth
	oneOf("AUTH_MODE", a.Mode, authModes)
	for v, d := range map[string]time.Duration{"AUTH_TOKEN_TTL": a.TokenTTL, "SESSION_IDLE_TIMEOUT": a.IdleTimeout,
		"SESSION_MAX_LIFETIME": a.MaxLifetime, "SESSION_WARNING": a.Warning, "OIDC_REFRESH_LEEWAY": a.OIDCRefreshLeeway} {
		positive(v, d)
	}
	if a.TokenTTL > 0 && (a.TokenTTL < time.Minute || a.TokenTTL > 24*time.Hour) {
		add("AUTH_TOKEN_TTL", "must be between 1m and 24h, got %v", a.TokenTTL)
	}
	if a.IdleTimeout > 0 && a.MaxLifetime > 0 && a.IdleTimeout > a.MaxLifetime {
		add("SESSION_IDLE_TIMEOUT", "is longer than SESSION_MAX_LIFETIME")
	}
	if _, err := sessions.ParseLimit(a.LoginRateLimit); err != nil {
		add("LOGIN_RATE_LIMIT", "%v", err)
	}
	if a.Mode == AuthLocal && c.Production() {
		if a.AccountsFile == "" {
			add("AUTH_ACCOUNTS_FILE", "is required in production: the development accounts are refused")
		}
		if a.SigningKeyFile == "" {
			add("AUTH_SIGNING_KEY_FILE", "is required in production: a key generated at start dies with the process")
		}
	}
	if a.Mode == AuthOIDC {
		if msg := checkPublicURL(a.OIDCIssuerURL); a.OIDCIssuerURL == "" || msg != "" {
			add("OIDC_ISSUER_URL", "must be the provider's issuer URL when AUTH_MODE=oidc")
		}
		if a.OIDCClientID == "" {
			add("OIDC_CLIENT_ID", "is required when AUTH_MODE=oidc")
		}
		if a.OIDCClientSecret == "" {
			add("OIDC_CLIENT_SECRET", "is required when AUTH_MODE=oidc")
		}
	}
	if a.OIDCPostLogoutRedirectURL != "" {
		if msg := checkPublicURL(a.OIDCPostLogoutRedirectURL); msg != "" {
			add("OIDC_POST_LOGOUT_REDIRECT_URL", "%s", msg)
		}
	}
	for _, alg := range a.OIDCSigningAlgs {
		if strings.EqualFold(alg, "none") || strings.HasPrefix(strings.ToUpper(alg), "HS") {
			add("OIDC_SIGNING_ALGS", "%q is not allowed: only asymmetric algorithms", alg)
		}
	}

	if len(ps) == 0 {
		return nil
	}
	sortProblems(ps)
	return &ConfigError{Problems: ps}
}

// SettingsDefaults are the environment's values of the runtime settings:
// what applies until an admin saves another value (DESIGN.md section 12).
func (c Config) SettingsDefaults() settings.Values {
	secs := func(d time.Duration) int64 { return int64(d / time.Second) }
	return settings.Values{
		AMIIDs: maps.Clone(map[string]string(c.Worker.AMIIDs)), AMIName: c.Worker.AMIName,
		InstanceType: c.Worker.InstanceType, SubnetID: c.Worker.SubnetID,
		SecurityGroupIDs: slices.Clone([]string(c.Worker.SecurityGroupIDs)), KeyName: c.Worker.KeyName,
		DefaultTags:          maps.Clone(map[string]string(c.Worker.DefaultTags)),
		IdleDetectionEnabled: c.Idle.DetectionEnabled, IdleTimeoutSeconds: secs(c.Idle.Timeout),
		IdleSnoozeSeconds: secs(c.Idle.Snooze), FleetReconcileSeconds: secs(c.Intervals.FleetReconcile),
		FleetMetricsSeconds: secs(c.Intervals.FleetMetrics), LabsSyncSeconds: secs(c.Intervals.LabsSync),
		IdleCheckSeconds: secs(c.Intervals.IdleCheck),
	}
}

// Production reports whether ENVIRONMENT=production.
func (c Config) Production() bool { return c.Environment == EnvProduction }

// EventStoreKind is EventStorePostgres when EVENTSTORE_URL is empty and
// EventStoreESDB otherwise.
func (c Config) EventStoreKind() string {
	if c.EventStoreURL == "" {
		return EventStorePostgres
	}
	return EventStoreESDB
}

// Redacted returns a copy whose connection strings hide their passwords.
func (c Config) Redacted() Config {
	c.DatabaseURL = redactConn(c.DatabaseURL)
	c.EventStoreURL = redactConn(c.EventStoreURL)
	return c
}

// LogValue implements slog.LogValuer: the configuration without secrets.
// Fields are listed explicitly, so a new secret is never logged by accident.
func (c Config) LogValue() slog.Value {
	r := c.Redacted()
	return slog.GroupValue(
		slog.String("environment", r.Environment),
		slog.String("log_level", r.LogLevel),
		slog.String("log_format", r.LogFormat),
		slog.String("http_addr", r.HTTPAddr),
		slog.String("public_url", r.PublicURL),
		slog.Duration("http_shutdown_timeout", r.HTTPShutdownTimeout),
		slog.String("database_url", r.DatabaseURL),
		slog.Int("database_max_conns", int(r.DatabaseMaxConns)),
		slog.String("eventstore", r.EventStoreKind()),
		slog.String("eventstore_url", r.EventStoreURL),
		slog.Bool("migrate_on_start", r.MigrateOnStart),
		slog.Bool("run_api", r.RunAPI),
		slog.Bool("run_projections", r.RunProjections),
		slog.String("cloud", r.Cloud),
		slog.Any("aws_regions", []string(r.AWSRegions)),
		slog.Group("aws",
			slog.String("endpoint_url", r.AWS.EndpointURL),
			slog.Int("max_attempts", r.AWS.MaxAttempts),
			slog.Duration("max_backoff", r.AWS.MaxBackoff),
			slog.Any("image_owners", []string(r.AWS.ImageOwners)),
		),
		slog.Group("cml",
			slog.String("username", r.CML.Username),
			slog.Bool("password_set", r.CML.Password != ""),
			slog.Bool("tls_verify", r.CML.TLSVerify),
			slog.String("ca_file", r.CML.CAFile),
			slog.Duration("request_timeout", r.CML.RequestTimeout),
			slog.String("endpoint_template", r.CML.EndpointTemplate),
		),
		slog.Group("jobs",
			slog.Bool("run", r.Jobs.Run),
			slog.Int("cloud_workers", r.Jobs.CloudWorkers),
			slog.Int("cml_workers", r.Jobs.CMLWorkers),
			slog.Int("fleet_workers", r.Jobs.FleetWorkers),
			slog.Int("cml_concurrency", r.Jobs.CMLConcurrency),
			slog.Duration("call_timeout", r.Jobs.CallTimeout),
			slog.Duration("refresh_throttle", r.Jobs.RefreshThrottle),
			slog.Bool("auto_import", r.Jobs.AutoImport),
			slog.String("auto_import_region", r.Jobs.AutoImportRegion),
			slog.String("auto_import_ami_name_pattern", r.Jobs.AutoImportAMIPattern),
		),
		slog.Group("worker",
			slog.Any("ami_ids", map[string]string(r.Worker.AMIIDs)),
			slog.String("ami_name", r.Worker.AMIName),
			slog.String("instance_type", r.Worker.InstanceType),
			slog.String("subnet_id", r.Worker.SubnetID),
			slog.Any("security_group_ids", []string(r.Worker.SecurityGroupIDs)),
			slog.String("key_name", r.Worker.KeyName),
			slog.Any("default_tags", map[string]string(r.Worker.DefaultTags)),
		),
		slog.Group("idle",
			slog.Bool("detection_enabled", r.Idle.DetectionEnabled),
			slog.Duration("timeout", r.Idle.Timeout),
			slog.Duration("snooze", r.Idle.Snooze),
		),
		slog.Group("intervals",
			slog.Duration("fleet_reconcile", r.Intervals.FleetReconcile),
			slog.Duration("fleet_metrics", r.Intervals.FleetMetrics),
			slog.Duration("labs_sync", r.Intervals.LabsSync),
			slog.Duration("idle_check", r.Intervals.IdleCheck),
		),
		slog.Duration("eventstore_read_timeout", r.EventStoreReadTimeout),
		slog.Duration("telemetry_retention", r.TelemetryRetention),
		slog.String("redis", redactConn(r.RedisURL)),
		slog.Bool("secrets_key_set", r.SecretsKey != ""),
		slog.Group("auth",
			slog.String("mode", r.Auth.Mode),
			slog.String("accounts_file", r.Auth.AccountsFile),
			slog.String("signing_key_file", r.Auth.SigningKeyFile),
			slog.Duration("token_ttl", r.Auth.TokenTTL),
			slog.Duration("session_idle_timeout", r.Auth.IdleTimeout),
			slog.Duration("session_max_lifetime", r.Auth.MaxLifetime),
			slog.String("login_rate_limit", r.Auth.LoginRateLimit),
			slog.String("oidc_issuer_url", r.Auth.OIDCIssuerURL),
			slog.String("oidc_client_id", r.Auth.OIDCClientID),
			slog.Bool("oidc_client_secret_set", r.Auth.OIDCClientSecret != ""),
		),
	)
}

// urlPasswordRE finds the password of scheme://user:password@ even where
// net/url cannot parse the URL (EventStoreDB's multi-host form).
var urlPasswordRE = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):[^@/]*@`)

func redactConn(s string) string {
	if s == "" {
		return ""
	}
	return urlPasswordRE.ReplaceAllString(pgdb.Redact(s), "${1}:xxxxx@")
}

func checkListenAddr(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("%q is not host:port (%v)", addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Sprintf("%q has no valid port number", addr)
	}
	return ""
}

func checkPublicURL(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Sprintf("not a URL: %v", err)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Sprintf("%q must be an absolute http or https URL", s)
	case u.Host == "":
		return fmt.Sprintf("%q has no host", s)
	case u.User != nil:
		return "must not contain credentials"
	case u.RawQuery != "" || u.Fragment != "":
		return fmt.Sprintf("%q must not have a query or fragment", s)
	}
	return ""
}

func checkEventStoreURL(s string) string {
	if s == "" {
		return ""
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || !slices.Contains(esdbSchemes, strings.ToLower(scheme)) {
		return fmt.Sprintf("must be empty (Postgres event store) or an EventStoreDB URL with scheme %s", strings.Join(esdbSchemes, ", "))
	}
	authority := rest
	if i := strings.IndexAny(authority, "/?"); i >= 0 {
		authority = authority[:i]
	}
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		authority = authority[i+1:]
	}
	if authority == "" {
		return "names no host"
	}
	return ""
}

// checkEndpointTemplate accepts an http(s) URL template naming at least one
// of the instance placeholders.
func checkEndpointTemplate(t string) string {
	if !strings.Contains(t, "{public_ip}") && !strings.Contains(t, "{private_ip}") && !strings.Contains(t, "{instance_id}") {
		return fmt.Sprintf("%q names none of {public_ip}, {private_ip}, {instance_id}", t)
	}
	sample := strings.NewReplacer("{public_ip}", "192.0.2.1", "{private_ip}", "10.0.0.1", "{instance_id}", "i-0123456789abcdef0").Replace(t)
	if msg := checkPublicURL(sample); msg != "" {
		return fmt.Sprintf("%q does not make a URL: %s", t, msg)
	}
	return ""
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// EnvLookup returns the lookup function the commands read configuration
// through: the process environment, then the variables of the dotenv file
// at path when it exists. Real environment variables win. The file is not
// read at all when the real environment says ENVIRONMENT=production, so a
// stray .env cannot leak into a production deployment. loaded reports
// whether the file was read.
func EnvLookup(path string, osLookup func(string) (string, bool)) (lookup func(string) (string, bool), loaded bool, err error) {
	if path == "" {
		return osLookup, false, nil
	}
	if v, _ := osLookup("ENVIRONMENT"); v == EnvProduction {
		return osLookup, false, nil
	}
	file, err := godotenv.Read(path)
	if errors.Is(err, fs.ErrNotExist) {
		return osLookup, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", path, err)
	}
	return func(k string) (string, bool) {
		if v, ok := osLookup(k); ok {
			return v, true
		}
		v, ok := file[k]
		return v, ok
	}, true, nil
}
